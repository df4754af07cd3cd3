//! An in-memory device: the protocol's `ClientStore` over the device's own encoded batches
//! ([`MemStore`]), with everything a session did to it kept for the tests to count exactly (each
//! batch applied, each range the peer acknowledged, each pull size announced, each id block
//! granted), and the key a handshake needs ([`Device`]). The hub, the relay or the session
//! machine is the system under test; this is the peer a real device would be, without a database
//! in the way.

use crate::batch::{batch, header, scoped, vector_of};
use crate::peer::Keyed;
use outpost_protocol::batch::BatchHeader;
use outpost_protocol::control::{encode_entry, key_item};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::id_range::{IdRange, IdRequest};
use outpost_protocol::message::Covered;
use outpost_protocol::message::PeerRole;
use outpost_protocol::session::ClientStore;
use outpost_protocol::vector::VectorGap;
use outpost_protocol::{ControlVector, SeqRange, SiteId, StreamId, VersionVector};
use std::collections::VecDeque;

/// The protocol-level device: a key and a database in memory.
pub type Device = Keyed<MemStore>;

/// A device database in memory.
pub struct MemStore {
    /// Its site id (the device's).
    pub site: SiteId,
    /// Its own batches, in seq order.
    pub own: Vec<Vec<u8>>,
    /// The highest seq of its own written.
    pub written: u64,
    /// What it holds.
    pub vector: VersionVector,
    /// Every pulled batch applied, in order (duplicates kept: tests look for them).
    pub applied: Vec<(SiteId, SeqRange)>,
    /// Every range the peer acknowledged holding.
    pub acked: Vec<Covered>,
    /// The peer's coverage of this device's own seqs, as its last hello said (a push it made
    /// durable before a cut is covered here though its ack never arrived).
    pub peer_had: u64,
    /// Id reservations not granted yet.
    pub pending: Vec<IdRequest>,
    /// Granted id blocks, per sequence.
    pub blocks: Vec<(String, IdRange)>,
    /// Every pull size announced: (batches, bytes).
    pub pull_sizes: Vec<(u64, u64)>,
    /// Control entries it holds and offers a server that lacks them (as a hub does, when its
    /// session runs with the hub role): (writer, seq, encoded entry).
    pub control: Vec<(SiteId, u64, Vec<u8>)>,
    /// Every control entry the server sent, in order.
    pub control_received: Vec<Vec<u8>>,
}

impl Keyed<MemStore> {
    /// A device with site id `[n; 16]` and a fresh key, holding nothing.
    pub fn new(n: u8) -> Device {
        Device::holding(SiteId([n; 16]), Vec::new())
    }

    /// A device at `site` already holding `own` (its vector covers them).
    pub fn holding(site: SiteId, own: Vec<Vec<u8>>) -> Device {
        Keyed::with_store(site, MemStore::holding(site, own))
    }
}

impl MemStore {
    /// The store of a device at `site` already holding `own` (its vector covers them).
    pub fn holding(site: SiteId, own: Vec<Vec<u8>>) -> MemStore {
        let vector = vector_of(&own);
        MemStore {
            site,
            written: vector.get(&site.into()),
            own,
            vector,
            applied: Vec::new(),
            acked: Vec::new(),
            peer_had: 0,
            pending: Vec::new(),
            blocks: Vec::new(),
            pull_sizes: Vec::new(),
            control: Vec::new(),
            control_received: Vec::new(),
        }
    }

    /// Adds entry `seq` of this store's own control stream, a Key entry binding `site` (as a
    /// device) to the test key of `site`, signed with `writer_key` (the store's peer key when
    /// it plays a hub).
    pub fn bind_device(&mut self, writer_key: &Keypair, seq: u64, site: SiteId) {
        let item = key_item(
            site,
            crate::keys::site_keypair(site).public(),
            PeerRole::Device,
            false,
        );
        self.control.push((
            self.site,
            seq,
            encode_entry(self.site, seq, &item, writer_key),
        ));
    }

    /// Writes one batch of its own covering `lo..=hi` (which must follow what it wrote).
    pub fn write_range(&mut self, lo: u64, hi: u64) {
        self.own.push(batch(self.site, lo, hi));
        self.vector
            .advance(
                self.site.into(),
                SeqRange::new(lo, hi).expect("a written range"),
            )
            .expect("written ranges follow each other");
        self.written = self.written.max(hi);
    }

    /// Writes one batch of its own in the stream of `scope`, covering `lo..=hi` of that stream
    /// (which must follow what it wrote there).
    pub fn write_scoped(&mut self, scope: &str, lo: u64, hi: u64) {
        self.own.push(scoped(self.site, scope, lo, hi));
        self.vector
            .advance(
                StreamId::new(self.site, scope),
                SeqRange::new(lo, hi).expect("a written range"),
            )
            .expect("written ranges follow each other");
    }

    /// Writes `n` new batches of one seq each.
    pub fn write(&mut self, n: u64) {
        for _ in 0..n {
            let seq = self.written + 1;
            self.write_range(seq, seq);
        }
    }

    /// The highest seq of its own the peer acknowledged holding.
    pub fn acked_up_to(&self) -> u64 {
        self.acked
            .iter()
            .filter(|c| c.origin == self.site)
            .map(|c| c.range.hi)
            .max()
            .unwrap_or(0)
    }

    /// Every seq of `origin` applied, sorted (duplicates kept).
    pub fn applied_seqs(&self, origin: SiteId) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .applied
            .iter()
            .filter(|(o, _)| *o == origin)
            .flat_map(|(_, r)| r.lo..=r.hi)
            .collect();
        v.sort_unstable();
        v
    }
}

/// Applying a batch fails only when it leaves a gap in the vector.
impl ClientStore for MemStore {
    type Error = VectorGap;
    type ExportPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, VectorGap> {
        Ok(self.vector.clone())
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<VecDeque<Vec<u8>>, VectorGap> {
        self.peer_had = server.get(&self.site.into());
        // Per stream: what the server lacks of each.
        Ok(self
            .own
            .iter()
            .filter(|b| {
                let h = header(b);
                h.range.hi > server.get(&h.stream_id())
            })
            .cloned()
            .collect())
    }
    fn next_export(&mut self, plan: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, VectorGap> {
        Ok(plan.pop_front())
    }
    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), VectorGap> {
        self.acked.extend_from_slice(covered);
        Ok(())
    }
    fn apply_chunk(&mut self, h: &BatchHeader, _batch: &[u8]) -> Result<(), VectorGap> {
        self.vector.advance(h.stream_id(), h.range)?;
        self.applied.push((h.origin, h.range));
        Ok(())
    }
    fn control_for(&mut self, peer: &ControlVector) -> Result<Vec<Vec<u8>>, VectorGap> {
        Ok(self
            .control
            .iter()
            .filter(|(w, seq, _)| *seq > peer.get(w))
            .map(|(_, _, e)| e.clone())
            .collect())
    }
    fn control_received(&mut self, entries: Vec<Vec<u8>>) -> Result<(), VectorGap> {
        self.control_received.extend(entries);
        Ok(())
    }
    fn pull_size(&mut self, batches: u64, bytes: u64) -> Result<(), VectorGap> {
        self.pull_sizes.push((batches, bytes));
        Ok(())
    }
    fn id_requests(&mut self) -> Result<Vec<IdRequest>, VectorGap> {
        Ok(self.pending.clone())
    }
    fn ids_granted(&mut self, r: &IdRequest, ranges: &[IdRange]) -> Result<(), VectorGap> {
        let Some(at) = self.pending.iter().position(|p| p.request == r.request) else {
            return Ok(()); // already stored: a duplicate grant changes nothing
        };
        if ranges.is_empty() {
            return Ok(()); // not now: keep asking under the same id
        }
        self.pending.remove(at);
        self.blocks
            .extend(ranges.iter().map(|g| (r.sequence.clone(), *g)));
        Ok(())
    }
}
