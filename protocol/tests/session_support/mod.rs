//! In-memory stores and a message pump shared by the session tests.
#![allow(dead_code)]

use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{BatchHeader, Compression};
use outpost_protocol::id_range::{IdRange, IdRequest, RequestId};
use outpost_protocol::message::{Covered, Message, PeerRole, SessionId};
use outpost_protocol::session::{
    ClientConfig, ClientSession, ClientStore, CommitRecord, ServerConfig, ServerSession,
    ServerStore, SessionError, StagedBatch,
};
use outpost_protocol::{SeqRange, SiteId, VersionVector};
use std::collections::{HashMap, VecDeque};

pub const HUB: SiteId = SiteId([0xaa; 16]);
pub const DEVICE: SiteId = SiteId([0x11; 16]);
pub const FP: [u8; 32] = [7; 32];

/// A batch with an empty body (the session never reads bodies); `salt` varies the hash.
pub fn batch(origin: SiteId, lo: u64, hi: u64) -> Vec<u8> {
    codec::encode(
        origin,
        SeqRange::new(lo, hi).unwrap(),
        vec![],
        &[],
        Compression::None,
    )
}

pub fn header(bytes: &[u8]) -> BatchHeader {
    codec::decode_header(bytes, &Limits::default()).unwrap()
}

/// The server's mailbox in memory.
#[derive(Default)]
pub struct MemServer {
    pub batches: Vec<Vec<u8>>,
    pub sessions: HashMap<SessionId, CommitRecord>,
    pub commits: usize,
    /// Root allocation: the next number per sequence.
    pub next_id: HashMap<String, u64>,
    /// Grants recorded per (peer, request id).
    pub grants: HashMap<(SiteId, RequestId), Vec<IdRange>>,
    /// Numbers the server can still grant in all (`None`: unlimited).
    pub id_capacity: Option<u64>,
}

impl MemServer {
    pub fn holding(batches: Vec<Vec<u8>>) -> MemServer {
        MemServer {
            batches,
            ..MemServer::default()
        }
    }
}

pub fn vector_of(batches: &[Vec<u8>]) -> VersionVector {
    let mut hs: Vec<BatchHeader> = batches.iter().map(|b| header(b)).collect();
    hs.sort_by_key(|h| (h.origin, h.range.lo));
    let mut v = VersionVector::new();
    for h in hs {
        let _ = v.advance(h.origin, h.range);
    }
    v
}

impl ServerStore for MemServer {
    type Error = String;
    type PullPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(vector_of(&self.batches))
    }
    fn committed(&mut self, session: &SessionId) -> Result<Option<CommitRecord>, String> {
        Ok(self.sessions.get(session).cloned())
    }
    fn commit(
        &mut self,
        session: &SessionId,
        record: &CommitRecord,
        batches: &[StagedBatch],
    ) -> Result<(), String> {
        self.commits += 1;
        for b in batches {
            if !self.batches.contains(&b.bytes) {
                self.batches.push(b.bytes.clone());
            }
        }
        self.sessions.insert(*session, record.clone());
        Ok(())
    }
    fn batches_for(
        &mut self,
        vector: &VersionVector,
        exclude_origin: &SiteId,
    ) -> Result<VecDeque<Vec<u8>>, String> {
        let mut out: Vec<(BatchHeader, Vec<u8>)> = self
            .batches
            .iter()
            .map(|b| (header(b), b.clone()))
            .filter(|(h, _)| h.origin != *exclude_origin && h.range.hi > vector.get(&h.origin))
            .collect();
        out.sort_by_key(|(h, _)| (h.origin, h.range.lo));
        Ok(out.into_iter().map(|(_, b)| b).collect())
    }
    fn next_batch(&mut self, plan: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        Ok(plan.pop_front())
    }
    fn pull_size(&mut self, plan: &VecDeque<Vec<u8>>) -> Result<Option<(u64, u64)>, String> {
        Ok(Some((
            plan.len() as u64,
            plan.iter().map(|b| b.len() as u64).sum(),
        )))
    }
    fn grant_ids(&mut self, peer: &SiteId, r: &IdRequest) -> Result<Vec<IdRange>, String> {
        if let Some(g) = self.grants.get(&(*peer, r.request)) {
            return Ok(g.clone());
        }
        if self.id_capacity.is_some_and(|c| c < r.count) {
            return Ok(Vec::new());
        }
        if let Some(c) = &mut self.id_capacity {
            *c -= r.count;
        }
        let next = self.next_id.entry(r.sequence.clone()).or_insert(1);
        *next = (*next).max(r.above + 1);
        let range = IdRange {
            first: *next,
            last: *next + r.count - 1,
        };
        *next += r.count;
        self.grants.insert((*peer, r.request), vec![range]);
        Ok(vec![range])
    }
}

/// A device's database in memory: its own batches and what it applied.
pub struct MemClient {
    pub site: SiteId,
    pub own: Vec<Vec<u8>>,
    pub vector: VersionVector,
    pub applied: Vec<BatchHeader>,
    pub acked: Vec<Covered>,
    /// Id reservations not granted yet.
    pub pending: Vec<IdRequest>,
    /// Granted blocks, per sequence.
    pub blocks: Vec<(String, IdRange)>,
    /// Every `PullSize` announced.
    pub pull_sizes: Vec<(u64, u64)>,
}

impl MemClient {
    pub fn new(site: SiteId, own: Vec<Vec<u8>>) -> MemClient {
        let vector = vector_of(&own);
        MemClient {
            site,
            own,
            vector,
            applied: vec![],
            acked: vec![],
            pending: vec![],
            blocks: vec![],
            pull_sizes: vec![],
        }
    }
}

impl ClientStore for MemClient {
    type Error = String;
    type ExportPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(self.vector.clone())
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<VecDeque<Vec<u8>>, String> {
        Ok(self
            .own
            .iter()
            .filter(|b| header(b).range.hi > server.get(&self.site))
            .cloned()
            .collect())
    }
    fn next_export(&mut self, plan: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        Ok(plan.pop_front())
    }
    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), String> {
        self.acked.extend_from_slice(covered);
        Ok(())
    }
    fn apply_chunk(&mut self, h: &BatchHeader, _batch: &[u8]) -> Result<(), String> {
        self.vector
            .advance(h.origin, h.range)
            .map_err(|e| e.to_string())?;
        self.applied.push(h.clone());
        Ok(())
    }
    fn pull_size(&mut self, batches: u64, bytes: u64) -> Result<(), String> {
        self.pull_sizes.push((batches, bytes));
        Ok(())
    }
    fn id_requests(&mut self) -> Result<Vec<IdRequest>, String> {
        Ok(self.pending.clone())
    }
    fn ids_granted(&mut self, r: &IdRequest, ranges: &[IdRange]) -> Result<(), String> {
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

/// A reservation of `count` numbers of `sequence` under request id `[id; 16]`.
pub fn id_request(id: u8, sequence: &str, count: u64) -> IdRequest {
    IdRequest {
        request: RequestId([id; 16]),
        sequence: sequence.into(),
        count,
        above: 0,
    }
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        site: HUB,
        role: PeerRole::Hub,
        fingerprint: None,
        peer_site: DEVICE,
        wall_clock_ms: 1_000,
        stage_ttl_ms: 60_000,
        max_staged_bytes: 1 << 20,
        batch_limits: Limits::default(),
    }
}

pub fn client_config(session: u8) -> ClientConfig {
    ClientConfig {
        site: DEVICE,
        role: PeerRole::Device,
        fingerprint: FP,
        wall_clock_ms: 2_000,
        session: SessionId([session; 16]),
        live: false,
        max_push_attempts: 3,
        batch_limits: Limits::default(),
    }
}

/// Every message each side sent, in order.
#[derive(Default, Debug)]
pub struct Transcript {
    pub to_server: Vec<Message>,
    pub to_client: Vec<Message>,
}

/// Runs a session to its end (or `stop_after` messages to the client), in memory, with every
/// message through its wire encoding. Returns the transcript and the first error.
pub fn run<C: ClientStore>(
    client: &mut ClientSession<C>,
    cstore: &mut C,
    server: &mut ServerSession<MemServer>,
    sstore: &mut MemServer,
    stop_after: usize,
) -> (Transcript, Result<(), SessionError>) {
    let mut t = Transcript::default();
    loop {
        let mut progressed = false;
        while let Some(m) = match client.poll(cstore) {
            Ok(m) => m,
            Err(e) => return (t, Err(e)),
        } {
            progressed = true;
            let m = Message::decode(&m.encode(), usize::MAX).unwrap();
            t.to_server.push(m.clone());
            if let Err(e) = server.handle(m, 5_000, sstore) {
                return (t, Err(e));
            }
        }
        while let Some(m) = match server.poll(sstore) {
            Ok(m) => m,
            Err(e) => return (t, Err(e)),
        } {
            progressed = true;
            if t.to_client.len() == stop_after {
                return (t, Ok(()));
            }
            let m = Message::decode(&m.encode(), usize::MAX).unwrap();
            t.to_client.push(m.clone());
            if let Err(e) = client.handle(m, cstore) {
                return (t, Err(e));
            }
        }
        if !progressed {
            return (t, Ok(()));
        }
    }
}
