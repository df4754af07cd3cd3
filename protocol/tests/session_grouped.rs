//! A client store that applies pulled chunks in groups (`ClientStore::flush`): everything is
//! applied when the pull ends, the vector is never read while chunks are kept, and a cut with
//! chunks kept resumes from the last flushed group, nothing lost, nothing applied twice.

mod session_support;

use outpost_protocol::batch::BatchHeader;
use outpost_protocol::id_range::{IdRange, IdRequest};
use outpost_protocol::message::{Covered, Message};
use outpost_protocol::session::{ClientSession, ClientStore, ServerSession};
use outpost_protocol::{SiteId, VersionVector};
use session_support::*;
use std::collections::VecDeque;

const OTHER: SiteId = SiteId([0x22; 16]);
const THIRD: SiteId = SiteId([0x33; 16]);

/// `Device` (the durable database) behind a buffer of up to `group` chunks, applied together
/// at a flush; reading the vector or the id requests with chunks kept is an error, as it would
/// make the server send them again.
struct Grouping {
    db: Device,
    group: usize,
    kept: Vec<BatchHeader>,
    /// The size of each group applied, in order.
    flushed: Vec<usize>,
}

impl Grouping {
    fn new(db: Device, group: usize) -> Grouping {
        Grouping {
            db,
            group,
            kept: vec![],
            flushed: vec![],
        }
    }

    /// The session was cut: the buffer is gone with the process, the database stays.
    fn cut(self) -> Device {
        self.db
    }

    fn must_be_flushed(&self, what: &str) -> Result<(), String> {
        if self.kept.is_empty() {
            Ok(())
        } else {
            Err(format!("{what} read with {} chunks kept", self.kept.len()))
        }
    }
}

impl ClientStore for Grouping {
    type Error = String;
    type ExportPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        self.must_be_flushed("vector")?;
        self.db.vector().map_err(|e| e.to_string())
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<VecDeque<Vec<u8>>, String> {
        self.db.plan_export(server).map_err(|e| e.to_string())
    }
    fn next_export(&mut self, plan: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        self.db.next_export(plan).map_err(|e| e.to_string())
    }
    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), String> {
        self.db.acknowledged(covered).map_err(|e| e.to_string())
    }
    fn apply_chunk(&mut self, h: &BatchHeader, _batch: &[u8]) -> Result<(), String> {
        self.kept.push(h.clone());
        if self.kept.len() >= self.group {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), String> {
        if self.kept.is_empty() {
            return Ok(());
        }
        // One transaction: all of the group's advances, or none.
        let mut vector = self.db.vector.clone();
        for h in &self.kept {
            vector
                .advance(h.origin.into(), h.range)
                .map_err(|e| e.to_string())?;
        }
        self.db.vector = vector;
        self.flushed.push(self.kept.len());
        self.db
            .applied
            .extend(self.kept.drain(..).map(|h| (h.origin, h.range)));
        Ok(())
    }
    fn pull_size(&mut self, batches: u64, bytes: u64) -> Result<(), String> {
        self.db.pull_size(batches, bytes).map_err(|e| e.to_string())
    }
    fn id_requests(&mut self) -> Result<Vec<IdRequest>, String> {
        self.must_be_flushed("id requests")?;
        self.db.id_requests().map_err(|e| e.to_string())
    }
    fn ids_granted(&mut self, r: &IdRequest, ranges: &[IdRange]) -> Result<(), String> {
        self.db.ids_granted(r, ranges).map_err(|e| e.to_string())
    }
}

/// Single-seq batches `1..=n` of `origin`.
fn chain(origin: SiteId, n: u64) -> Vec<Vec<u8>> {
    (1..=n).map(|s| batch(origin, s, s)).collect()
}

fn chunks(t: &Transcript) -> usize {
    t.to_client
        .iter()
        .filter(|m| matches!(m, Message::Chunk { .. }))
        .count()
}

#[test]
fn the_chunks_kept_are_applied_when_the_pull_is_done() {
    // Hello, PullSize, 5 chunks, PullDone.
    let held = chain(OTHER, 5);
    // Everything but the PullDone: groups of 2 were applied as they filled, one chunk is kept.
    let mut sstore = MemServer::holding(held.clone());
    let mut store = Grouping::new(Device::holding(DEVICE, vec![]), 2);
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    let (t, r) = run(&mut client, &mut store, &mut server, &mut sstore, 7);
    r.unwrap();
    assert_eq!(chunks(&t), 5);
    assert_eq!(client.applied(), 5, "handed to the store");
    assert_eq!(store.flushed, [2, 2]);
    assert_eq!(store.kept.len(), 1);
    assert_eq!(store.db.vector.get(&OTHER.into()), 4);
    // The whole session: the PullDone flushes the last chunk before the Bye.
    let mut sstore = MemServer::holding(held);
    let mut store = Grouping::new(Device::holding(DEVICE, vec![]), 2);
    let mut client = ClientSession::new(client_config(2));
    let mut server = ServerSession::new(server_config());
    let (t, r) = run_to_end(&mut client, &mut store, &mut server, &mut sstore);
    r.unwrap();
    assert!(matches!(t.to_client.last(), Some(Message::PullDone { .. })));
    assert_eq!(t.to_server.last(), Some(&Message::Bye));
    assert!(client.is_done());
    assert_eq!(store.flushed, [2, 2, 1]);
    assert!(store.kept.is_empty());
    assert_eq!(store.db.vector.get(&OTHER.into()), 5);
    // A group larger than the pull: one transaction for all of it, at the PullDone.
    let mut sstore = MemServer::holding(chain(OTHER, 5));
    let mut store = Grouping::new(Device::holding(DEVICE, vec![]), 16);
    let mut client = ClientSession::new(client_config(3));
    let mut server = ServerSession::new(server_config());
    let (_, r) = run_to_end(&mut client, &mut store, &mut server, &mut sstore);
    r.unwrap();
    assert_eq!(store.flushed, [5]);
}

#[test]
fn id_requests_are_read_after_the_flush() {
    let mut sstore = MemServer::holding(chain(OTHER, 3));
    let mut db = Device::holding(DEVICE, vec![]);
    db.pending.push(id_request(1, "invoice", 10));
    let mut store = Grouping::new(db, 16);
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    let (t, r) = run_to_end(&mut client, &mut store, &mut server, &mut sstore);
    r.unwrap();
    assert!(t
        .to_server
        .iter()
        .any(|m| matches!(m, Message::IdRequest(_))));
    assert_eq!(store.flushed, [3]);
    assert_eq!(store.db.blocks.len(), 1);
    assert!(client.is_done());
}

#[test]
fn a_live_re_pull_asks_with_a_vector_covering_every_chunk_received() {
    let mut sstore = MemServer::holding(chain(OTHER, 3));
    let mut store = Grouping::new(Device::holding(DEVICE, vec![]), 16);
    let mut cfg = client_config(1);
    cfg.live = true;
    let mut client = ClientSession::new(cfg);
    let mut server = ServerSession::new(server_config());
    let (_, r) = run_to_end(&mut client, &mut store, &mut server, &mut sstore);
    r.unwrap();
    assert!(client.is_live());
    assert_eq!(store.flushed, [3], "flushed at the first PullDone");
    // News on the server: it notifies, the client pulls again.
    sstore.batches.push(batch(OTHER, 4, 4));
    sstore.batches.push(batch(THIRD, 1, 2));
    server.notify();
    let (t, r) = run_to_end(&mut client, &mut store, &mut server, &mut sstore);
    r.unwrap();
    let Some(Message::Pull { vector }) = t.to_server.first() else {
        panic!("a pull after the notify: {:?}", t.to_server)
    };
    assert_eq!(
        vector.get(&OTHER.into()),
        3,
        "the first pull's chunks are covered"
    );
    assert_eq!(chunks(&t), 2, "only the news");
    assert_eq!(store.flushed, [3, 2]);
    assert_eq!(store.db.vector.get(&OTHER.into()), 4);
    assert_eq!(store.db.vector.get(&THIRD.into()), 2);
    assert!(client.is_live());
}

#[test]
fn a_cut_with_chunks_kept_resumes_from_the_last_flushed_group() {
    // Two origins, 11 chunks, groups of 3: a cut after any message of the first session.
    let mut held = chain(OTHER, 6);
    held.extend(chain(THIRD, 5));
    let messages = {
        let mut sstore = MemServer::holding(held.clone());
        let mut store = Grouping::new(Device::holding(DEVICE, vec![]), 3);
        let mut client = ClientSession::new(client_config(1));
        let mut server = ServerSession::new(server_config());
        let (t, r) = run_to_end(&mut client, &mut store, &mut server, &mut sstore);
        r.unwrap();
        t.to_client.len()
    };
    assert_eq!(messages, 14, "hello, size, 11 chunks, done");
    for cut in 0..=messages {
        let mut sstore = MemServer::holding(held.clone());
        let mut store = Grouping::new(Device::holding(DEVICE, vec![]), 3);
        let mut client = ClientSession::new(client_config(1));
        let mut server = ServerSession::new(server_config());
        let (first, r) = run(&mut client, &mut store, &mut server, &mut sstore, cut);
        r.unwrap();
        let received = chunks(&first);
        let flushed: usize = store.flushed.iter().sum();
        let kept = store.kept.len();
        if cut < messages {
            // Cut before the PullDone: whole groups were applied, the rest was kept.
            assert_eq!(flushed, received / 3 * 3, "cut {cut}");
            assert_eq!(kept, received % 3, "cut {cut}");
        } else {
            assert_eq!((flushed, kept), (11, 0));
        }
        // The process goes with its buffer; the next session resumes from the database.
        let db = store.cut();
        assert_eq!(db.applied.len(), flushed, "cut {cut}");
        let mut store = Grouping::new(db, 3);
        let mut client = ClientSession::new(client_config(2));
        let mut server = ServerSession::new(server_config());
        let (second, r) = run_to_end(&mut client, &mut store, &mut server, &mut sstore);
        r.unwrap();
        assert_eq!(
            chunks(&second),
            11 - flushed,
            "cut {cut}: the kept chunks again, nothing applied before"
        );
        assert_eq!(store.db.vector.get(&OTHER.into()), 6, "cut {cut}");
        assert_eq!(store.db.vector.get(&THIRD.into()), 5, "cut {cut}");
        let mut applied: Vec<_> = store.db.applied.iter().map(|(o, r)| (*o, r.lo)).collect();
        assert_eq!(applied.len(), 11, "cut {cut}: each chunk applied once");
        applied.sort();
        applied.dedup();
        assert_eq!(applied.len(), 11, "cut {cut}");
    }
}
