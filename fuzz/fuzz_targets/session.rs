//! The session state machines on both sides: any sequence of messages (each a 2-byte length then
//! its bytes; the first input byte picks the side) never panics, and a server never stores a
//! batch it did not verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::codec::Limits;
use outpost_protocol::batch::BatchHeader;
use outpost_protocol::message::{Covered, Message, PeerRole, SessionId};
use outpost_protocol::session::{
    ClientConfig, ClientSession, ClientStore, CommitRecord, PushOrigins, ServerConfig,
    ServerSession, ServerStore, StagedBatch,
};
use outpost_protocol::{SiteId, VersionVector};
use std::collections::VecDeque;

#[derive(Default)]
struct Server(Vec<Vec<u8>>, Vec<(SessionId, CommitRecord)>);

impl ServerStore for Server {
    type Error = &'static str;
    type PullPlan = VecDeque<Vec<u8>>;
    fn vector(&mut self) -> Result<VersionVector, &'static str> {
        Ok(VersionVector::new())
    }
    fn committed(&mut self, s: &SessionId) -> Result<Option<CommitRecord>, &'static str> {
        Ok(self.1.iter().find(|(k, _)| k == s).map(|(_, r)| r.clone()))
    }
    fn commit(
        &mut self,
        s: &SessionId,
        r: &CommitRecord,
        b: &[StagedBatch],
    ) -> Result<(), &'static str> {
        for x in b {
            outpost_protocol::batch::codec::verify(&x.bytes, &Limits::default()).unwrap();
            self.0.push(x.bytes.clone());
        }
        self.1.push((*s, r.clone()));
        Ok(())
    }
    fn batches_for(
        &mut self,
        _: &VersionVector,
        _: &SiteId,
        _regain: &[outpost_protocol::message::Regain],
        _grant: &outpost_protocol::scope::Scopes,
    ) -> Result<VecDeque<Vec<u8>>, &'static str> {
        Ok(self.0.iter().cloned().collect())
    }
    fn next_batch(&mut self, p: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, &'static str> {
        Ok(p.pop_front())
    }
}

#[derive(Default)]
struct Client(VersionVector);

impl ClientStore for Client {
    type Error = String;
    type ExportPlan = ();
    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(self.0.clone())
    }
    fn plan_export(&mut self, _: &VersionVector) -> Result<(), String> {
        Ok(())
    }
    fn next_export(&mut self, _: &mut ()) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn acknowledged(&mut self, _: &[Covered]) -> Result<(), String> {
        Ok(())
    }
    fn apply_chunk(&mut self, h: &BatchHeader, _: &[u8]) -> Result<(), String> {
        self.0
            .advance(h.stream_id(), h.range)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn messages(mut data: &[u8]) -> impl Iterator<Item = Message> + '_ {
    std::iter::from_fn(move || loop {
        if data.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([data[0], data[1]]) as usize;
        let body = data.get(2..2 + len)?;
        data = &data[2 + len..];
        if let Ok(m) = Message::decode(body, 1 << 20) {
            return Some(m);
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&side, data)) = data.split_first() else {
        return;
    };
    let device = SiteId([0x11; 16]);
    if side & 1 == 0 {
        let mut store = Server::default();
        let mut s = ServerSession::<Server>::new(ServerConfig {
            site: SiteId([0xaa; 16]),
            role: PeerRole::Hub,
            fingerprint: None,
            peer_site: device,
            peer_key: outpost_protocol::handshake::Keypair::from_secret(&[1; 32])
                .expect("a valid scalar")
                .public()
                .clone(),
            peer_pushes: PushOrigins::Relayed,
            peer_grant: outpost_protocol::scope::Scopes::All,
            wall_clock_ms: 0,
            max_clock_ahead_ms: outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS,
            stage_ttl_ms: 1_000,
            max_staged_bytes: 1 << 20,
            batch_limits: Limits::default(),
        });
        for (i, m) in messages(data).enumerate() {
            if s.handle(m, i as u64 * 100, &mut store).is_err() {
                break;
            }
            while let Ok(Some(_)) = s.poll(&mut store) {}
        }
    } else {
        let mut store = Client::default();
        let mut c = ClientSession::<Client>::new(ClientConfig {
            site: device,
            role: PeerRole::Device,
            fingerprint: [0; 32],
            wall_clock_ms: 0,
            session: SessionId([1; 16]),
            live: side & 2 != 0,
            max_push_attempts: 3,
            batch_limits: Limits::default(),
        });
        while let Ok(Some(_)) = c.poll(&mut store) {}
        for m in messages(data) {
            if c.handle(m, &mut store).is_err() {
                break;
            }
            while let Ok(Some(_)) = c.poll(&mut store) {}
        }
    }
});
