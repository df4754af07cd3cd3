//! Live mode (`live_seconds`) against a hub that stops answering: a process stopped or hung
//! with its socket open, a cable pulled without a reset. The hub here is this test's own, on a
//! loopback port, speaking the real protocol (the `Responder` and `ServerSession` of
//! `outpost-protocol`, real crypto); after the live session's pull it goes silent.
//!
//! Before the sync client and the hub's uplink shared one live wait (`outpost-link`), a
//! device's live wait pinged such a hub every 20 s and waited for its whole window (here 60 s),
//! reporting nothing; now it gives the link up once nothing arrived for the keepalive interval
//! plus the I/O timeout, and says so in `live_error`.

mod common;
use common::load;
use common::scripted_hub::{now_ms, Conn, HUB, TOKEN};
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::{Hello, Message, PeerRole, SessionId};
use outpost_protocol::session::{
    CommitRecord, PushOrigins, ServerConfig, ServerSession, ServerStore, StagedBatch,
};
use outpost_protocol::{SiteId, VersionVector, PROTOCOL_VERSION};
use rusqlite::Connection;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Empty;

impl ServerStore for Empty {
    type Error = String;
    type PullPlan = ();

    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(VersionVector::new())
    }
    fn committed(&mut self, _: &SessionId) -> Result<Option<CommitRecord>, String> {
        Ok(None)
    }
    fn commit(&mut self, _: &SessionId, _: &CommitRecord, _: &[StagedBatch]) -> Result<(), String> {
        Ok(())
    }
    fn batches_for(
        &mut self,
        _: &VersionVector,
        _: &SiteId,
        _regain: &[outpost_protocol::message::Regain],
        _grant: &outpost_protocol::scope::Scopes,
    ) -> Result<(), String> {
        Ok(())
    }
    fn next_batch(&mut self, _: &mut ()) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

/// Serves a session on `conn` from an empty store: to its end, or with `live`, until the
/// device's pull is done.
fn serve(conn: &mut Conn, live: bool) {
    let mut session = ServerSession::new(ServerConfig {
        site: HUB,
        role: PeerRole::Hub,
        fingerprint: None,
        peer_site: conn.peer,
        peer_key: conn.peer_key,
        peer_pushes: PushOrigins::Own,
        peer_grant: outpost_protocol::scope::Scopes::All,
        wall_clock_ms: now_ms(),
        max_clock_ahead_ms: outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS,
        stage_ttl_ms: 60_000,
        max_staged_bytes: 1 << 20,
        batch_limits: BatchLimits::default(),
    });
    while let Some(m) = conn.recv() {
        session.handle(m, 1, &mut Empty).unwrap();
        let mut pull_done = false;
        while let Some(out) = session.poll(&mut Empty).unwrap() {
            pull_done |= matches!(out, Message::PullDone { .. });
            conn.send(&out);
        }
        if session.is_done() || (live && pull_done) {
            return;
        }
    }
}

#[test]
fn a_live_sync_with_a_hub_that_stops_answering_ends_with_live_error() {
    let hub = Keypair::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let code = EnrollCode {
        hub_key: hub.public().as_bytes().to_vec(),
        hub_site: HUB,
        addresses: vec![listener.local_addr().unwrap().to_string()],
        token: TOKEN,
        expires_at: u64::MAX,
        cloud: None,
    }
    .encode();
    let (done, finished) = mpsc::channel::<()>();
    let hub_thread = std::thread::spawn(move || {
        // Enrollment: the token proof, then the confirming hello.
        let mut enroll = Conn::accept(&listener, &hub);
        let Some(Message::Hello(_)) = enroll.recv() else {
            panic!("no hello at enrollment")
        };
        enroll.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            site: HUB,
            role: PeerRole::Hub,
            fingerprint: [0; 32],
            wall_clock_ms: now_ms(),
            vector: VersionVector::new(),
            session: SessionId::default(),
            control: outpost_protocol::ControlVector::new(),
            drains: Vec::new(),
            regain: Vec::new(),
            keys: Vec::new(),
        }));
        while enroll.recv().is_some() {}
        // The sync, then the live session, which goes silent after its pull: the socket stays
        // open and nothing is read or answered (pings included) until the test ends.
        serve(&mut Conn::accept(&listener, &hub), false);
        let mut live = Conn::accept(&listener, &hub);
        serve(&mut live, true);
        let _ = finished.recv_timeout(Duration::from_secs(90));
        drop(live);
    });

    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("device.db")).unwrap();
    load(&c);
    c.execute_batch(
        "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
         SELECT outpost_track('patients');
         INSERT INTO patients VALUES ('p1', 'Asha');",
    )
    .unwrap();
    let enrolled: String = c
        .query_row("SELECT outpost_enroll(?1)", [&code], |r| r.get(0))
        .unwrap();
    assert!(enrolled.contains("\"role\":\"hub\""), "{enrolled}");

    let started = Instant::now();
    let out: String = c
        .query_row(
            "SELECT outpost_sync('hub', '{\"live_seconds\": 60, \"timeout_ms\": 1000}')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let took = started.elapsed();
    let _ = done.send(());
    hub_thread.join().unwrap();
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    let error = out["live_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(error.contains("stopped answering"), "{error}");
    // Keepalive 20 s + the 1 s I/O timeout, far inside the 60 s window.
    let live_ms = out["live_ms"].as_u64().unwrap();
    assert!((20_000..30_000).contains(&live_ms), "{out}");
    assert!(took < Duration::from_secs(35), "{took:?}");
}
