//! A scripted hub for the extension's tests, on a loopback port, speaking the real protocol (the
//! `Responder` and `ServerSession` of `outpost-protocol`, real Noise crypto) over a store in
//! memory: what it was pushed it holds and serves, and its hello's vector says so. The test
//! scripts each connection it accepts (enroll, sync, or a sync cut after the push was stored and
//! before the ack leaves), and sets the wall clock its hellos state (0: no trusted time). With
//! trusted time its session applies the time bound (docs/design.md section 10, "Time"), with the
//! highest clock it holds as the allowance; a refusal is sent to the device as a relay sends it.
//!
//! Like a real hub it writes a key directory entry (role Device, signed with its key) for every
//! device it enrols, and serves its control stream after each hello; a test can stop that
//! ([`Hub::set_certify`]), relay entries another writer signed ([`Hub::relay_control`]) and put
//! batches signed with any key in its store ([`Hub::inject`]). [`Hub::start_with_cloud`] prints
//! codes carrying a cloud anchor.

use super::Replica;
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::channel::{Channel, Limits};
use outpost_protocol::control;
use outpost_protocol::enroll_code::{CloudAnchor, EnrollCode};
use outpost_protocol::handshake::{
    Ephemeral, Gatekeeper, Keypair, PublicKey, Refusal, Responder, ResponderConfig, TokenId,
};
use outpost_protocol::message::{Hello, Message, PeerRole, SessionId};
use outpost_protocol::session::{
    CommitRecord, PushOrigins, ServerConfig, ServerSession, ServerStore, StagedBatch,
};
use outpost_protocol::{SiteId, VersionVector, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};

/// The scripted hub's site id.
pub const HUB: SiteId = SiteId([0x4b; 16]);
/// The enrolment token every scripted hub accepts.
pub const TOKEN: [u8; 32] = [7; 32];

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Admits every key, and enrolls with [`TOKEN`].
pub struct Open;

impl Gatekeeper for Open {
    fn authorize(&mut self, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
    fn last_counter(&mut self, _: &PublicKey) -> Result<Option<u64>, Refusal> {
        Ok(None)
    }
    fn record_counter(&mut self, _: &PublicKey, _: u64) -> Result<(), Refusal> {
        Ok(())
    }
    fn enrollment_token(&mut self, _: &TokenId) -> Result<[u8; 32], Refusal> {
        Ok(TOKEN)
    }
    fn check_enrollment(&mut self, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
    fn admit(&mut self, _: &TokenId, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Control entries as the hub serves them: (writer, seq, bytes).
type Entries = Vec<(SiteId, u64, Vec<u8>)>;

/// What the hub holds: every batch pushed to it, and its vector.
#[derive(Default)]
struct Held {
    batches: Vec<StagedBatch>,
    vector: VersionVector,
    commits: HashMap<[u8; 16], CommitRecord>,
    /// Every batch committed, shared with the test ([`Hub::pushed`]).
    pushed: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Control entries it serves: (writer, seq, bytes), its own and relayed ones.
    control: Arc<Mutex<Entries>>,
    /// Every drain a device's hello declared, in order, shared with the test
    /// ([`Hub::declared`]).
    declared: Arc<Mutex<Vec<(String, u64)>>>,
    /// Every own stream a device's pull asked back (`Hello::regain`), in order, shared with
    /// the test ([`Hub::regains`]).
    regains: Arc<Mutex<Vec<(String, u64)>>>,
}

/// What the hub serves of the control streams, shared with the test.
#[derive(Default)]
struct Directory {
    /// Write entries for the devices it enrols.
    certify: bool,
    /// Devices enrolled and not certified yet.
    uncertified: Vec<(SiteId, PublicKey)>,
}

impl ServerStore for Held {
    type Error = String;
    type PullPlan = Vec<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(self.vector.clone())
    }
    fn committed(&mut self, s: &SessionId) -> Result<Option<CommitRecord>, String> {
        Ok(self.commits.get(&s.0).cloned())
    }
    fn commit(&mut self, s: &SessionId, r: &CommitRecord, b: &[StagedBatch]) -> Result<(), String> {
        for batch in b {
            let (stream, range) = (batch.header.stream_id(), batch.header.range);
            if range.lo <= self.vector.get(&stream) + 1 {
                let top = self.vector.get(&stream).max(range.hi);
                self.vector.set(stream, top);
            }
            self.batches.push(batch.clone());
            self.pushed.lock().unwrap().push(batch.bytes.clone());
        }
        self.commits.insert(s.0, r.clone());
        Ok(())
    }
    fn batches_for(
        &mut self,
        v: &VersionVector,
        exclude: &SiteId,
        regain: &[outpost_protocol::message::Regain],
        grant: &outpost_protocol::scope::Scopes,
    ) -> Result<Vec<Vec<u8>>, String> {
        self.regains
            .lock()
            .unwrap()
            .extend(regain.iter().map(|r| (r.scope.clone(), r.since)));
        let mut plan: Vec<Vec<u8>> = self
            .batches
            .iter()
            .filter(|b| {
                let h = &b.header;
                // The device's own batches only of the streams it regains, above `since`.
                let since = match h.origin == *exclude {
                    false => Some(v.get(&h.stream_id())),
                    true => regain.iter().find(|r| r.scope == h.stream).map(|r| r.since),
                };
                since.is_some_and(|since| h.range.hi > since)
                    && (h.stream.is_empty() || grant.contains(&h.stream))
            })
            .map(|b| b.bytes.clone())
            .collect();
        plan.reverse();
        Ok(plan)
    }
    fn next_batch(&mut self, plan: &mut Vec<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        Ok(plan.pop())
    }
    /// The highest clock of any batch held: a device's push up to a second past it passes the
    /// time bound whatever the hub's trusted time (docs/design.md section 10, "Time").
    fn highest_admitted(&mut self) -> Result<outpost_protocol::Hlc, String> {
        Ok(self
            .batches
            .iter()
            .map(|b| b.header.max_hlc)
            .max()
            .unwrap_or_default())
    }
    fn control_vector(&mut self) -> Result<outpost_protocol::ControlVector, String> {
        let mut v = outpost_protocol::ControlVector::new();
        for (w, seq, _) in self.control.lock().unwrap().iter() {
            v.set(*w, v.get(w).max(*seq));
        }
        Ok(v)
    }
    fn drains_declared(
        &mut self,
        _: &SiteId,
        drains: &[outpost_protocol::message::Drain],
    ) -> Result<(), String> {
        let mut declared = self.declared.lock().unwrap();
        declared.extend(drains.iter().map(|d| (d.scope.clone(), d.last)));
        Ok(())
    }
    /// The scopes of the grant entry for `site` at `version` in the hub's control streams.
    fn grant_at(
        &mut self,
        site: &SiteId,
        version: u64,
    ) -> Result<Option<outpost_protocol::scope::Scopes>, String> {
        let control = self.control.lock().unwrap();
        Ok(control.iter().find_map(
            |(_, _, bytes)| match control::decode_entry(bytes).ok()?.item {
                control::ControlItem::Grant(g) if g.site == *site && g.version == version => {
                    Some(g.scopes)
                }
                _ => None,
            },
        ))
    }
    fn control_for(
        &mut self,
        peer: &outpost_protocol::ControlVector,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut out: Vec<_> = self
            .control
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, seq, _)| *seq > peer.get(w))
            .cloned()
            .collect();
        out.sort_by_key(|(w, seq, _)| (*w, *seq));
        Ok(out.into_iter().map(|(_, _, b)| b).collect())
    }
}

/// The next seq of `writer` in `control`.
fn next_seq(control: &[(SiteId, u64, Vec<u8>)], writer: SiteId) -> u64 {
    control.iter().filter(|(w, ..)| *w == writer).count() as u64 + 1
}

/// One connection of the hub, after its handshake.
pub struct Conn {
    stream: TcpStream,
    channel: Channel,
    pending: Vec<u8>,
    /// The device the handshake authenticated.
    pub peer: SiteId,
    /// Its static key (its batches must carry its signature).
    pub peer_key: PublicKey,
}

impl Conn {
    pub fn accept(listener: &TcpListener, hub: &Keypair) -> Conn {
        let (mut stream, _) = listener.accept().unwrap();
        let mut responder = Responder::new(
            ResponderConfig {
                identity: hub.clone(),
                site: HUB,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            },
            Ephemeral::from_seed([4; 32]),
            Limits::default(),
            0,
        );
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).unwrap();
            let mut input = &buf[..n];
            let r = responder.receive(&mut input, 1, &mut Open).unwrap();
            stream.write_all(&responder.take_outgoing()).unwrap();
            if let Some(channel) = r {
                let peer = channel.peer().site;
                let peer_key = channel.peer().key;
                return Conn {
                    stream,
                    channel,
                    pending: input.to_vec(),
                    peer,
                    peer_key,
                };
            }
        }
    }

    pub fn send(&mut self, m: &Message) {
        self.channel.send(&m.encode()).unwrap();
        let out = self.channel.take_outgoing();
        self.stream.write_all(&out).unwrap();
    }

    /// The next message; `None` when the device closed.
    pub fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 65536];
        loop {
            let mut input = &self.pending[..];
            let r = self.channel.receive(&mut input, 1).unwrap();
            let used = self.pending.len() - input.len();
            self.pending.drain(..used);
            if let Some(bytes) = r {
                return Some(Message::decode(&bytes, 1 << 24).unwrap());
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("hub read: {e}"),
            }
        }
    }

    /// Serves a session to its end; with `cut_before_ack`, hangs up once the push is stored,
    /// before the ack leaves.
    fn serve(&mut self, store: &mut Held, cut_before_ack: bool, clock_ms: u64) {
        let mut session = ServerSession::new(ServerConfig {
            site: HUB,
            role: PeerRole::Hub,
            fingerprint: None,
            peer_site: self.peer,
            peer_key: self.peer_key,
            peer_pushes: PushOrigins::Own,
            peer_grant: outpost_protocol::scope::Scopes::All,
            wall_clock_ms: clock_ms,
            max_clock_ahead_ms: outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS,
            stage_ttl_ms: 60_000,
            max_staged_bytes: 1 << 24,
            batch_limits: BatchLimits::default(),
        });
        while let Some(m) = self.recv() {
            if let Err(e) = session.handle(m, 1, store) {
                // Said as a relay says it (a push refused, say), then the session ends; after
                // the device's own error message there is nothing to say.
                if let Some(m) = e.to_message() {
                    self.send(&m);
                }
                return;
            }
            while let Some(out) = session.poll(store).unwrap() {
                if cut_before_ack && matches!(out, Message::Ack { .. }) {
                    return; // the push is committed in `store`; the device never hears it
                }
                self.send(&out);
            }
            if session.is_done() {
                return;
            }
        }
    }
}

/// What the hub does with the next connection.
enum Next {
    Enroll,
    Sync,
    SyncCutBeforeAck,
}

/// The scripted hub: each connection is handled as the test announced it.
pub struct Hub {
    /// Its enrolment code.
    pub code: String,
    /// What its hellos state as its wall clock: now plus this shift, or 0 (no trusted time).
    clock_shift_ms: Arc<Mutex<Option<i64>>>,
    pushed: Arc<Mutex<Vec<Vec<u8>>>>,
    regains: Arc<Mutex<Vec<(String, u64)>>>,
    declared: Arc<Mutex<Vec<(String, u64)>>>,
    next: mpsc::Sender<Next>,
    done: mpsc::Receiver<()>,
    keys: Keypair,
    control: Arc<Mutex<Entries>>,
    directory: Arc<Mutex<Directory>>,
    batches: mpsc::Sender<Vec<u8>>,
}

/// Writes the key entries of the devices enrolled and not certified yet, when certifying is on.
fn certify(directory: &Mutex<Directory>, control: &Mutex<Entries>, keys: &Keypair) {
    let mut d = directory.lock().unwrap();
    if !d.certify {
        return;
    }
    let mut c = control.lock().unwrap();
    for (site, key) in d.uncertified.drain(..) {
        let seq = next_seq(&c, HUB);
        let item = control::key_item(site, &key, PeerRole::Device, false);
        c.push((HUB, seq, control::encode_entry(HUB, seq, &item, keys)));
    }
}

/// What a hello states: now shifted, or 0.
fn stated(shift: &Mutex<Option<i64>>) -> u64 {
    match *shift.lock().unwrap() {
        Some(ms) => (now_ms() as i64 + ms) as u64,
        None => 0,
    }
}

impl Hub {
    /// Sets what the next hellos state: the true time shifted by `ms`, or with `None` 0, as a
    /// hub with no trusted time does. A started hub states the true time.
    pub fn set_clock_shift(&self, ms: Option<i64>) {
        *self.clock_shift_ms.lock().unwrap() = ms;
    }

    pub fn start() -> Hub {
        Hub::start_with_cloud(None)
    }

    /// A hub whose enrolment codes carry `cloud` as their cloud anchor.
    pub fn start_with_cloud(cloud: Option<CloudAnchor>) -> Hub {
        let clock_shift_ms = Arc::new(Mutex::new(Some(0)));
        let shift = clock_shift_ms.clone();
        let pushed = Arc::new(Mutex::new(Vec::new()));
        let held = pushed.clone();
        let declared = Arc::new(Mutex::new(Vec::new()));
        let hub_declared = declared.clone();
        let regains = Arc::new(Mutex::new(Vec::new()));
        let hub_regains = regains.clone();
        let keys = Keypair::generate().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let code = EnrollCode {
            hub_key: keys.public().as_bytes().to_vec(),
            hub_site: HUB,
            addresses: vec![listener.local_addr().unwrap().to_string()],
            token: TOKEN,
            expires_at: u64::MAX,
            cloud,
        }
        .encode();
        let (next, script) = mpsc::channel::<Next>();
        let (served, done) = mpsc::channel::<()>();
        let (batches, injected) = mpsc::channel::<Vec<u8>>();
        let control = Arc::new(Mutex::new(Vec::new()));
        let directory = Arc::new(Mutex::new(Directory {
            certify: true,
            uncertified: Vec::new(),
        }));
        let (hub_keys, hub_control, hub_directory) =
            (keys.clone(), control.clone(), directory.clone());
        std::thread::spawn(move || {
            let keys = hub_keys;
            let mut store = Held {
                pushed: held,
                control: hub_control,
                declared: hub_declared,
                regains: hub_regains,
                ..Held::default()
            };
            while let Ok(what) = script.recv() {
                let mut conn = Conn::accept(&listener, &keys);
                for batch in injected.try_iter() {
                    let header = outpost_testkit::batch::header(&batch);
                    let (stream, range) = (header.stream_id(), header.range);
                    if range.lo <= store.vector.get(&stream) + 1 {
                        let top = store.vector.get(&stream).max(range.hi);
                        store.vector.set(stream, top);
                    }
                    store.batches.push(StagedBatch {
                        header,
                        bytes: batch,
                    });
                }
                match what {
                    Next::Enroll => {
                        let Some(Message::Hello(_)) = conn.recv() else {
                            panic!("no hello at enrollment")
                        };
                        hub_directory
                            .lock()
                            .unwrap()
                            .uncertified
                            .push((conn.peer, conn.peer_key));
                        certify(&hub_directory, &store.control, &keys);
                        conn.send(&Message::Hello(Hello {
                            protocol_version: PROTOCOL_VERSION,
                            site: HUB,
                            role: PeerRole::Hub,
                            fingerprint: [0; 32],
                            wall_clock_ms: stated(&shift),
                            vector: store.vector.clone(),
                            session: SessionId::default(),
                            control: outpost_protocol::ControlVector::new(),
                            drains: Vec::new(),
                            regain: Vec::new(),
                            keys: Vec::new(),
                        }));
                        while conn.recv().is_some() {}
                    }
                    Next::Sync => conn.serve(&mut store, false, stated(&shift)),
                    Next::SyncCutBeforeAck => conn.serve(&mut store, true, stated(&shift)),
                }
                drop(conn);
                let _ = served.send(());
            }
        });
        Hub {
            code,
            clock_shift_ms,
            pushed,
            declared,
            regains,
            next,
            done,
            keys,
            control,
            directory,
            batches,
        }
    }

    /// Every own stream (scope, since) the devices' pulls asked back so far, in order.
    pub fn regains(&self) -> Vec<(String, u64)> {
        self.regains.lock().unwrap().clone()
    }

    /// Every drain (scope, last seq) the devices' hellos declared so far, in order.
    pub fn declared(&self) -> Vec<(String, u64)> {
        self.declared.lock().unwrap().clone()
    }

    /// Every batch pushed to the hub and committed so far, in the order committed.
    pub fn pushed(&self) -> Vec<Vec<u8>> {
        self.pushed.lock().unwrap().clone()
    }

    /// Whether the hub writes a key entry for each device it enrols (from now on); `true` at
    /// start. Turning it on certifies the devices enrolled meanwhile.
    pub fn set_certify(&self, on: bool) {
        self.directory.lock().unwrap().certify = on;
        certify(&self.directory, &self.control, &self.keys);
    }

    /// Serves `entry` (encoded and signed by its writer) in its control stream from the next
    /// session on.
    pub fn relay_control(&self, entry: Vec<u8>) {
        let e = control::decode_entry(&entry).expect("a control entry");
        self.control.lock().unwrap().push((e.writer, e.seq, entry));
    }

    /// Writes, in the hub's own stream, a key entry binding `site` to `key` (role Device).
    pub fn certify_key(&self, site: SiteId, key: &PublicKey) {
        let mut c = self.control.lock().unwrap();
        let seq = next_seq(&c, HUB);
        let item = control::key_item(site, key, PeerRole::Device, false);
        c.push((HUB, seq, control::encode_entry(HUB, seq, &item, &self.keys)));
    }

    /// Writes, in the hub's own stream, a grant of `scopes` (`["*"]`: every scope) to `site` at
    /// `version`, as a hub grants the devices it admitted (served from the next session on).
    pub fn grant(&self, site: SiteId, version: u64, scopes: &[&str]) {
        let scopes = outpost_protocol::scope::Scopes::parse(scopes.iter().copied()).unwrap();
        let mut c = self.control.lock().unwrap();
        let seq = next_seq(&c, HUB);
        let item = control::grant_item(site, version, scopes, false);
        c.push((HUB, seq, control::encode_entry(HUB, seq, &item, &self.keys)));
    }

    /// Puts `batch` (as made, whatever signs it) in the hub's store before its next connection.
    pub fn inject(&self, batch: Vec<u8>) {
        self.batches.send(batch).unwrap();
    }

    pub fn enroll(&self, r: &Replica) {
        self.next.send(Next::Enroll).unwrap();
        let out: String = r.one(&format!("SELECT outpost_enroll('{}')", self.code));
        assert!(out.contains("\"role\":\"hub\""), "{out}");
        self.done.recv().unwrap();
    }

    pub fn sync(&self, r: &Replica) -> serde_json::Value {
        self.next.send(Next::Sync).unwrap();
        let out: String = r.one("SELECT outpost_sync('hub', '{\"timeout_ms\": 5000}')");
        self.done.recv().unwrap();
        serde_json::from_str(&out).unwrap()
    }

    /// Serves the next connection as a sync, for a device in another process; [`Hub::served`]
    /// waits until that session ended.
    pub fn serve_sync(&self) {
        self.next.send(Next::Sync).unwrap();
    }

    /// Waits until the connection announced last was served.
    pub fn served(&self) {
        self.done.recv().unwrap();
    }

    /// A sync that may fail on the device's side: its result, or the error's text.
    pub fn try_sync(&self, r: &Replica) -> Result<serde_json::Value, String> {
        self.next.send(Next::Sync).unwrap();
        let out = r.conn.query_row(
            "SELECT outpost_sync('hub', '{\"timeout_ms\": 5000}')",
            [],
            |row| row.get::<_, String>(0),
        );
        self.done.recv().unwrap();
        out.map(|json| serde_json::from_str(&json).unwrap())
            .map_err(|e| e.to_string())
    }

    /// A sync the device must refuse: its error text.
    pub fn sync_failing(&self, r: &Replica) -> String {
        self.next.send(Next::Sync).unwrap();
        let e = r
            .conn
            .query_row(
                "SELECT outpost_sync('hub', '{\"timeout_ms\": 5000}')",
                [],
                |row| row.get::<_, String>(0),
            )
            .expect_err("the sync must fail");
        self.done.recv().unwrap();
        e.to_string()
    }

    /// A sync whose push the hub stores and then hangs up on: the device gets an error.
    pub fn sync_cut_before_ack(&self, r: &Replica) -> String {
        self.next.send(Next::SyncCutBeforeAck).unwrap();
        let e = r
            .conn
            .query_row(
                "SELECT outpost_sync('hub', '{\"timeout_ms\": 5000}')",
                [],
                |row| row.get::<_, String>(0),
            )
            .expect_err("a sync cut before its ack must fail");
        self.done.recv().unwrap();
        e.to_string()
    }
}
