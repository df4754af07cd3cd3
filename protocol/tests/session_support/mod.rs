//! The in-memory server store and a message pump shared by the session tests (the device side
//! is the testkit's `Device`).
#![allow(dead_code)]

use outpost_protocol::batch::codec::Limits;
use outpost_protocol::batch::BatchHeader;
use outpost_protocol::id_range::{IdRange, IdRequest, RequestId};
use outpost_protocol::message::{Message, PeerRole, SessionId};
use outpost_protocol::session::{
    ClientConfig, ClientSession, ClientStore, CommitRecord, PushOrigins, ServerConfig,
    ServerSession, ServerStore, SessionError, StagedBatch,
};
use outpost_protocol::{SiteId, VersionVector};
#[allow(unused_imports)] // each test file uses part of these
pub use outpost_testkit::batch::{batch, header, vector_of};
#[allow(unused_imports)]
pub use outpost_testkit::Device;
use std::collections::{HashMap, VecDeque};

pub const HUB: SiteId = SiteId([0xaa; 16]);
pub const DEVICE: SiteId = SiteId([0x11; 16]);
pub const FP: [u8; 32] = [7; 32];

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
    /// Every version of each site's grant it knows (its directory's `grant_at`).
    pub grant_versions: HashMap<(SiteId, u64), outpost_protocol::scope::Scopes>,
    /// The drains devices declared: (site, scope) → last seq.
    pub drains: HashMap<(SiteId, String), u64>,
    /// Key envelopes handed in the answer to every hello (a sealed tenant's).
    pub keys: Vec<outpost_protocol::message::SealedKeys>,
    /// Every scope's current key epoch (0: none published).
    pub current_epoch: u32,
    /// Origins a cloud retired (their keys known: the testkit's key of each site).
    pub retired: Vec<SiteId>,
}

impl MemServer {
    pub fn holding(batches: Vec<Vec<u8>>) -> MemServer {
        MemServer {
            batches,
            ..MemServer::default()
        }
    }
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
    fn grant_at(
        &mut self,
        site: &SiteId,
        version: u64,
    ) -> Result<Option<outpost_protocol::scope::Scopes>, String> {
        Ok(self.grant_versions.get(&(*site, version)).cloned())
    }
    fn drains_declared(
        &mut self,
        site: &SiteId,
        drains: &[outpost_protocol::message::Drain],
    ) -> Result<(), String> {
        for d in drains {
            self.drains.insert((*site, d.scope.clone()), d.last);
        }
        Ok(())
    }
    fn drain_of(&mut self, site: &SiteId, scope: &str) -> Result<Option<u64>, String> {
        Ok(self.drains.get(&(*site, scope.to_string())).copied())
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
        regain: &[outpost_protocol::message::Regain],
        grant: &outpost_protocol::scope::Scopes,
    ) -> Result<VecDeque<Vec<u8>>, String> {
        let mut out: Vec<(BatchHeader, Vec<u8>)> = self
            .batches
            .iter()
            .map(|b| (header(b), b.clone()))
            .filter(|(h, _)| {
                let since = match h.origin == *exclude_origin {
                    false => Some(vector.get(&h.stream_id())),
                    true => regain.iter().find(|r| r.scope == h.stream).map(|r| r.since),
                };
                since.is_some_and(|since| h.range.hi > since)
                    && (h.stream.is_empty() || grant.contains(&h.stream))
            })
            .collect();
        out.sort_by_key(|(h, _)| (h.stream_id(), h.range.lo));
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
    fn grant_ids(
        &mut self,
        peer: &SiteId,
        _metered: bool,
        r: &IdRequest,
    ) -> Result<Vec<IdRange>, String> {
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
    fn keys_for(
        &mut self,
        _hello: &outpost_protocol::message::Hello,
    ) -> Result<Vec<outpost_protocol::message::SealedKeys>, String> {
        Ok(self.keys.clone())
    }
    fn origin_key(
        &mut self,
        origin: &SiteId,
    ) -> Result<Option<outpost_protocol::handshake::PublicKey>, String> {
        Ok(self
            .retired
            .contains(origin)
            .then(|| *outpost_testkit::keys::site_keypair(*origin).public()))
    }

    fn retired_origin(&mut self, origin: &SiteId) -> Result<bool, String> {
        Ok(self.retired.contains(origin))
    }

    fn current_epoch(&mut self, _scope: &str) -> Result<u32, String> {
        Ok(self.current_epoch)
    }
    fn highest_admitted(&mut self) -> Result<outpost_protocol::Hlc, String> {
        Ok(self
            .batches
            .iter()
            .map(|b| header(b).max_hlc)
            .max()
            .unwrap_or_default())
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

/// The device's hello opening `session`, declaring `drains`, knowing nothing yet.
pub fn device_hello(session: SessionId, drains: Vec<outpost_protocol::message::Drain>) -> Message {
    Message::Hello(outpost_protocol::message::Hello {
        protocol_version: outpost_protocol::PROTOCOL_VERSION,
        site: DEVICE,
        role: PeerRole::Device,
        fingerprint: FP,
        wall_clock_ms: 0,
        vector: VersionVector::new(),
        session,
        control: outpost_protocol::ControlVector::new(),
        drains,
        regain: Vec::new(),
        keys: Vec::new(),
    })
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        site: HUB,
        role: PeerRole::Hub,
        fingerprint: None,
        peer_site: DEVICE,
        peer_key: *outpost_testkit::keys::site_keypair(DEVICE).public(),
        peer_pushes: PushOrigins::Own,
        peer_grant: outpost_protocol::scope::Scopes::All,
        wall_clock_ms: 1_000,
        max_clock_ahead_ms: outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS,
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

/// Runs a session to its end, in memory (see [`run`]).
pub fn run_to_end<C: ClientStore>(
    client: &mut ClientSession<C>,
    cstore: &mut C,
    server: &mut ServerSession<MemServer>,
    sstore: &mut MemServer,
) -> (Transcript, Result<(), SessionError>) {
    run(client, cstore, server, sstore, usize::MAX)
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
