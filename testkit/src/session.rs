//! One device session over TCP, driven as a blocking loop: the protocol's `ClientSession` over
//! the channel [`connect`] opened. [`sync`] pushes what the peer lacks and pulls; [`sync_cut`]
//! drops the connection after some pulled chunks (a pull cut midway); [`live_until`] stays
//! connected and pulls again on each `Notify`; [`exchange`] is the push/pull round the hub
//! tests share.

use crate::device::Device;
use crate::dial::{connect, HubInfo};
use crate::error::SyncError;
use crate::peer::Peer;
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::handshake::Purpose;
use outpost_protocol::message::{Message, PeerRole, SessionId};
use outpost_protocol::session::{ClientConfig, ClientSession, ClientStore};
use outpost_protocol::SiteId;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The session id of a device's `n`th session: `n` and the device's site, so two devices never
/// share one (the peer keys commit records by session id).
pub fn session_id(n: u64, site: SiteId) -> SessionId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8..].copy_from_slice(&site.0[..8]);
    SessionId(id)
}

/// The settings every test device's sessions use: the device role, a fixed schema fingerprint
/// and wall clock, three push attempts.
pub fn client_config(site: SiteId, session: SessionId, live: bool) -> ClientConfig {
    ClientConfig {
        site,
        role: PeerRole::Device,
        fingerprint: [9; 32],
        wall_clock_ms: 1_800_000_000_000,
        session,
        live,
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    }
}

/// What a completed session reports.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Changes applied (as `ClientSession::applied` counts them).
    pub applied: u64,
    /// The role the peer announced in its hello.
    pub server_role: Option<PeerRole>,
}

/// Session `n` of `dev` with `hub` to its end, or until `stop_after_chunks` pulled chunks were
/// handled (then the connection is dropped as a cut would drop it).
pub fn run<D: Peer + ClientStore>(
    hub: &HubInfo,
    dev: &mut D,
    n: u64,
    stop_after_chunks: Option<usize>,
) -> Result<Outcome, SyncError> {
    run_as(hub, dev, n, stop_after_chunks, PeerRole::Device)
}

/// [`run`] with the client announcing `role`: as a hub, it sends the server the control
/// entries it lacks (`ClientStore::control_for`) before its push.
pub fn run_as<D: Peer + ClientStore>(
    hub: &HubInfo,
    dev: &mut D,
    n: u64,
    stop_after_chunks: Option<usize>,
    role: PeerRole,
) -> Result<Outcome, SyncError> {
    let (mut ch, mut s) = connect(hub, dev, Purpose::Session)?;
    let mut config = client_config(dev.site(), session_id(n, dev.site()), false);
    config.role = role;
    let mut client = ClientSession::new(config);
    let outcome = |client: &ClientSession<D>| Outcome {
        applied: client.applied(),
        server_role: client.server_hello().map(|h| h.role),
    };
    let mut chunks = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(m) = client.poll(dev)? {
            ch.send(&m.encode())?;
            // Flush per message: the channel bounds the bytes queued in flight.
            s.write_all(&ch.take_outgoing())?;
        }
        s.write_all(&ch.take_outgoing())?;
        if client.is_done() {
            return Ok(outcome(&client));
        }
        let got = s.read(&mut buf)?;
        if got == 0 {
            return Err(SyncError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut input = &buf[..got];
        while let Some(bytes) = ch.receive(&mut input, 2)? {
            let msg = Message::decode(&bytes, usize::MAX)?;
            if matches!(msg, Message::Chunk { .. }) {
                chunks += 1;
            }
            client.handle(msg, dev)?;
            if Some(chunks) == stop_after_chunks {
                return Ok(outcome(&client));
            }
        }
    }
}

/// Session `n` of `dev`: push what the peer lacks, then pull. The number of changes applied.
pub fn sync<D: Peer + ClientStore>(hub: &HubInfo, dev: &mut D, n: u64) -> Result<u64, SyncError> {
    run(hub, dev, n, None).map(|o| o.applied)
}

/// Session `n` of `dev`, its connection dropped once `chunks` pulled batches were applied.
pub fn sync_cut<D: Peer + ClientStore>(
    hub: &HubInfo,
    dev: &mut D,
    n: u64,
    chunks: usize,
) -> Result<u64, SyncError> {
    run(hub, dev, n, Some(chunks)).map(|o| o.applied)
}

/// A live session (session `n`): syncs, stays connected, and pulls again on each `Notify`, until
/// `done` holds for the device (returns true) or `wait` passes (returns false). Counts the
/// notifies seen. Panics when the session fails.
pub fn live_until(
    hub: &HubInfo,
    dev: &mut Device,
    n: u64,
    wait: Duration,
    done: impl Fn(&Device) -> bool,
) -> (bool, u32) {
    let (mut ch, mut s) = connect(hub, dev, Purpose::Session).expect("a live session's handshake");
    // Reads time out at once so the deadline and `done` are checked while the peer is silent.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut client = ClientSession::new(client_config(dev.site, session_id(n, dev.site), true));
    let deadline = Instant::now() + wait;
    let mut notifies = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(m) = client.poll(dev).unwrap() {
            ch.send(&m.encode()).unwrap();
        }
        s.write_all(&ch.take_outgoing()).unwrap();
        if done(dev) {
            return (true, notifies);
        }
        if Instant::now() > deadline {
            return (false, notifies);
        }
        let got = match s.read(&mut buf) {
            Ok(0) => panic!("the peer closed the live session"),
            Ok(got) => got,
            Err(_) => continue, // our own 100 ms poll
        };
        let mut input = &buf[..got];
        while let Some(bytes) = ch.receive(&mut input, 2).unwrap() {
            let msg = Message::decode(&bytes, usize::MAX).unwrap();
            if matches!(msg, Message::Notify) {
                notifies += 1;
            }
            client.handle(msg, dev).unwrap();
        }
    }
}

/// The push/pull round every hub layer test runs: `a` and `b` each write batches and sync
/// twice; each must end with every batch of the other exactly once and none of its own.
pub fn exchange(hub: &HubInfo, a: &mut Device, b: &mut Device) {
    a.write(5);
    b.write(3);
    for round in 0..2 {
        sync(hub, a, 100 + round).expect("a syncs");
        sync(hub, b, 200 + round).expect("b syncs");
    }
    sync(hub, a, 102).expect("a syncs");
    assert_eq!(
        a.acked_up_to(),
        5,
        "the hub acknowledged all of a's batches"
    );
    assert_eq!(b.acked_up_to(), 3);
    assert_eq!(
        b.applied_seqs(a.site),
        (1..=5).collect::<Vec<_>>(),
        "b got a's batches once"
    );
    assert_eq!(
        a.applied_seqs(b.site),
        (1..=3).collect::<Vec<_>>(),
        "a got b's batches once"
    );
    assert!(a.applied_seqs(a.site).is_empty() && b.applied_seqs(b.site).is_empty());
}
