//! An in-memory device: the protocol's `ClientStore` over the device's own encoded batches, with
//! everything a session did to it kept for the tests to count exactly (each batch applied, each
//! range the peer acknowledged, each pull size announced, each id block granted), and the key a
//! handshake needs. The hub, the relay or the session machine is the system under test; this is
//! the peer a real device would be, without a database in the way.

use crate::batch::{batch, header, vector_of};
use outpost_protocol::batch::BatchHeader;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::id_range::{IdRange, IdRequest};
use outpost_protocol::message::Covered;
use outpost_protocol::session::ClientStore;
use outpost_protocol::vector::VectorGap;
use outpost_protocol::{SeqRange, SiteId, VersionVector};
use std::collections::VecDeque;

/// What the dialer needs of a device: its static key, its site id, and a fresh handshake counter
/// for each handshake (a counter is never offered twice).
pub trait Peer {
    /// The device's static key.
    fn keypair(&self) -> &Keypair;
    /// The device's site id.
    fn site(&self) -> SiteId;
    /// A counter above every one offered before.
    fn next_counter(&mut self) -> u64;
}

/// A device database in memory.
pub struct Device {
    /// Its static key (generated).
    pub keypair: Keypair,
    /// Its site id.
    pub site: SiteId,
    /// The last handshake counter offered.
    pub counter: u64,
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
    /// Id reservations not granted yet.
    pub pending: Vec<IdRequest>,
    /// Granted id blocks, per sequence.
    pub blocks: Vec<(String, IdRange)>,
    /// Every pull size announced: (batches, bytes).
    pub pull_sizes: Vec<(u64, u64)>,
}

impl Device {
    /// A device with site id `[n; 16]` and a fresh key, holding nothing.
    pub fn new(n: u8) -> Device {
        Device::holding(SiteId([n; 16]), Vec::new())
    }

    /// A device at `site` already holding `own` (its vector covers them).
    pub fn holding(site: SiteId, own: Vec<Vec<u8>>) -> Device {
        let vector = vector_of(&own);
        Device {
            keypair: Keypair::generate().expect("a device key from the OS's randomness"),
            site,
            counter: 0,
            written: vector.get(&site),
            own,
            vector,
            applied: Vec::new(),
            acked: Vec::new(),
            pending: Vec::new(),
            blocks: Vec::new(),
            pull_sizes: Vec::new(),
        }
    }

    /// Writes one batch of its own covering `lo..=hi` (which must follow what it wrote).
    pub fn write_range(&mut self, lo: u64, hi: u64) {
        self.own.push(batch(self.site, lo, hi));
        self.vector
            .advance(self.site, SeqRange::new(lo, hi).expect("a written range"))
            .expect("written ranges follow each other");
        self.written = self.written.max(hi);
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

impl Peer for Device {
    fn keypair(&self) -> &Keypair {
        &self.keypair
    }
    fn site(&self) -> SiteId {
        self.site
    }
    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// Applying a batch fails only when it leaves a gap in the vector.
impl ClientStore for Device {
    type Error = VectorGap;
    type ExportPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, VectorGap> {
        Ok(self.vector.clone())
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<VecDeque<Vec<u8>>, VectorGap> {
        let have = server.get(&self.site);
        Ok(self
            .own
            .iter()
            .filter(|b| header(b).range.hi > have)
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
        self.vector.advance(h.origin, h.range)?;
        self.applied.push((h.origin, h.range));
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
