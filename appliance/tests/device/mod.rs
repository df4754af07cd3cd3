//! The device side of the hub tests: the protocol's initiator and client session over TCP, with
//! a device database kept in memory (its own batches, its vector, what it applied). The hub is
//! the system under test; this is the peer a real device would be.
#![allow(dead_code)]

use outpost_protocol::batch::codec::{self, Limits as BatchLimits};
use outpost_protocol::batch::{BatchHeader, Compression, TableSchema};
use outpost_protocol::channel::{Channel, Limits as ChannelLimits};
use outpost_protocol::handshake::{
    Ephemeral, Initiator, InitiatorConfig, Keypair, PublicKey, Purpose,
};
use outpost_protocol::message::{Covered, Message, PeerRole, SessionId};
use outpost_protocol::session::{ClientConfig, ClientSession, ClientStore, SessionError};
use outpost_protocol::{SeqRange, SiteId, VersionVector, PROTOCOL_VERSION};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An encoded batch of `origin` for `lo..=hi` (an empty body: the hub never reads bodies, and a
/// per-range table name makes every batch's bytes distinct).
pub fn batch(origin: SiteId, lo: u64, hi: u64) -> Vec<u8> {
    let table = TableSchema {
        name: format!("t{lo}_{hi}"),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
    };
    codec::encode(
        origin,
        SeqRange::new(lo, hi).unwrap(),
        vec![table],
        &[],
        Compression::None,
    )
}

pub fn header(b: &[u8]) -> BatchHeader {
    codec::decode_header(b, &BatchLimits::default()).unwrap()
}

/// A device database in memory: its own batches, what it applied, what the hub acknowledged.
pub struct Device {
    pub keypair: Keypair,
    pub site: SiteId,
    pub counter: u64,
    pub own: Vec<Vec<u8>>,
    pub vector: VersionVector,
    pub applied: Vec<(SiteId, SeqRange)>,
    pub acked: Vec<Covered>,
}

impl Device {
    pub fn new(n: u8) -> Device {
        let site = SiteId([n; 16]);
        Device {
            keypair: Keypair::generate().unwrap(),
            site,
            counter: 0,
            own: Vec::new(),
            vector: VersionVector::new(),
            applied: Vec::new(),
            acked: Vec::new(),
        }
    }

    pub fn write(&mut self, lo: u64, hi: u64) {
        self.own.push(batch(self.site, lo, hi));
        self.vector
            .advance(self.site, SeqRange::new(lo, hi).unwrap())
            .unwrap();
    }
}

impl ClientStore for Device {
    type Error = String;
    type ExportPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(self.vector.clone())
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<VecDeque<Vec<u8>>, String> {
        let have = server.get(&self.site);
        Ok(self
            .own
            .iter()
            .filter(|b| header(b).range.lo > have)
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
    fn apply_chunk(&mut self, h: &BatchHeader, _b: &[u8]) -> Result<(), String> {
        self.vector
            .advance(h.origin, h.range)
            .map_err(|e| e.to_string())?;
        self.applied.push((h.origin, h.range));
        Ok(())
    }
}

pub struct HubInfo {
    pub addr: SocketAddr,
    pub key: PublicKey,
    pub site: SiteId,
}

pub fn connect(hub: &HubInfo, dev: &mut Device, purpose: Purpose) -> (Channel, TcpStream) {
    dev.counter += 1;
    let mut s = TcpStream::connect(hub.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let config = InitiatorConfig {
        identity: dev.keypair.clone(),
        site: dev.site,
        counter: dev.counter,
        responder_key: hub.key,
        responder_site: hub.site,
        purpose,
        version: PROTOCOL_VERSION,
    };
    let mut init = Initiator::start(
        &config,
        Ephemeral::from_os().unwrap(),
        ChannelLimits::default(),
        0,
    )
    .unwrap();
    s.write_all(&init.take_outgoing()).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "hub closed during the handshake");
        let mut input = &buf[..n];
        if let Some(mut ch) = init.receive(&mut input, 1).unwrap() {
            assert!(input.is_empty());
            s.write_all(&ch.take_outgoing()).unwrap();
            return (ch, s);
        }
    }
}

/// One sync session; `stop_after_chunks` drops the connection after that many pulled batches.
pub fn sync(
    hub: &HubInfo,
    dev: &mut Device,
    session: u8,
    stop_after_chunks: Option<usize>,
) -> Result<u64, SessionError> {
    let (mut ch, mut s) = connect(hub, dev, Purpose::Session);
    let mut client = ClientSession::new(ClientConfig {
        site: dev.site,
        role: PeerRole::Device,
        fingerprint: [9; 32],
        wall_clock_ms: 1_800_000_000_000,
        session: SessionId([session; 16]),
        live: false,
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    });
    let mut chunks = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(m) = client.poll(dev)? {
            ch.send(&m.encode()).unwrap();
        }
        s.write_all(&ch.take_outgoing()).unwrap();
        if client.is_done() {
            return Ok(client.applied());
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "hub closed the session");
        let mut input = &buf[..n];
        while let Some(bytes) = ch.receive(&mut input, 2).unwrap() {
            let msg = Message::decode(&bytes, usize::MAX).unwrap();
            if matches!(msg, Message::Chunk { .. }) {
                chunks += 1;
            }
            client.handle(msg, dev)?;
            if Some(chunks) == stop_after_chunks {
                return Ok(client.applied());
            }
        }
    }
}

/// A live session: syncs, stays connected, and pulls again on each `Notify`, until `done` holds
/// for the device (returns true) or `wait` passes (returns false). Counts the notifies seen.
pub fn live_until(
    hub: &HubInfo,
    dev: &mut Device,
    session: u8,
    wait: Duration,
    done: impl Fn(&Device) -> bool,
) -> (bool, u32) {
    let (mut ch, mut s) = connect(hub, dev, Purpose::Session);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut client = ClientSession::new(ClientConfig {
        site: dev.site,
        role: PeerRole::Device,
        fingerprint: [9; 32],
        wall_clock_ms: 1_800_000_000_000,
        session: SessionId([session; 16]),
        live: true,
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    });
    let deadline = std::time::Instant::now() + wait;
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
        if std::time::Instant::now() > deadline {
            return (false, notifies);
        }
        let n = match s.read(&mut buf) {
            Ok(0) => panic!("hub closed the live session"),
            Ok(n) => n,
            Err(_) => continue, // our own 100 ms poll
        };
        let mut input = &buf[..n];
        while let Some(bytes) = ch.receive(&mut input, 2).unwrap() {
            let msg = Message::decode(&bytes, usize::MAX).unwrap();
            if matches!(msg, Message::Notify) {
                notifies += 1;
            }
            client.handle(msg, dev).unwrap();
        }
    }
}
