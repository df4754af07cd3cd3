//! The link against a real peer: a loopback TCP socket, the protocol's `Responder` and
//! `ServerSession` on the other end (real crypto, real framing), in-memory stores on both sides.
//! Each test scripts what the peer does after the handshake.

use crate::{connect, Endpoint, Event, Link, LinkError, LiveConfig, LiveWait, Timeouts};
use outpost_protocol::batch::codec::{self, Limits as BatchLimits};
use outpost_protocol::batch::{BatchHeader, Compression};
use outpost_protocol::channel::{Channel, ChannelError, Limits};
use outpost_protocol::handshake::{
    Ephemeral, Gatekeeper, HandshakeError, InitiatorConfig, Keypair, PublicKey, Purpose, Refusal,
    Responder, ResponderConfig, TokenId,
};
use outpost_protocol::message::{Covered, ErrorCode, Message, PeerRole, SessionId};
use outpost_protocol::session::{
    ClientConfig, ClientSession, ClientStore, CommitRecord, PushOrigins, ServerConfig,
    ServerSession, ServerStore, StagedBatch,
};
use outpost_protocol::{SeqRange, SiteId, VersionVector, PROTOCOL_VERSION};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const HUB: SiteId = SiteId([0xaa; 16]);
const DEVICE: SiteId = SiteId([0x11; 16]);
const OTHER: SiteId = SiteId([0x22; 16]);

fn hub_key() -> Keypair {
    Keypair::from_secret(&[2; 32]).unwrap()
}

fn device_key() -> Keypair {
    Keypair::from_secret(&[1; 32]).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A batch of `origin`; the device's own are signed with its key (the hub checks that).
fn batch(origin: SiteId, seq: u64) -> Vec<u8> {
    let mut bytes = codec::encode(
        origin,
        SeqRange::new(seq, seq).unwrap(),
        vec![],
        &[],
        Compression::None,
    );
    if origin == DEVICE {
        outpost_protocol::batch::signature::sign(&mut bytes, &device_key()).unwrap();
    }
    bytes
}

/// Admits the device's key, or refuses everyone with `refusal`.
struct Gate {
    device: PublicKey,
    refusal: Option<Refusal>,
}

impl Gatekeeper for Gate {
    fn authorize(&mut self, key: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        match self.refusal {
            Some(r) => Err(r),
            None if *key == self.device => Ok(()),
            None => Err(Refusal::UnknownKey),
        }
    }
    fn last_counter(&mut self, _: &PublicKey) -> Result<Option<u64>, Refusal> {
        Ok(None)
    }
    fn record_counter(&mut self, _: &PublicKey, _: u64) -> Result<(), Refusal> {
        Ok(())
    }
    fn enrollment_token(&mut self, _: &TokenId) -> Result<[u8; 32], Refusal> {
        Err(Refusal::UnknownToken)
    }
    fn check_enrollment(&mut self, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Err(Refusal::UnknownToken)
    }
    fn admit(&mut self, _: &TokenId, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Err(Refusal::UnknownToken)
    }
}

/// The server's store: the batches it holds, served to whoever lacks them.
#[derive(Default)]
struct Held(Vec<Vec<u8>>);

fn header(b: &[u8]) -> BatchHeader {
    codec::decode_header(b, &BatchLimits::default()).unwrap()
}

impl ServerStore for Held {
    type Error = String;
    type PullPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        let mut v = VersionVector::new();
        for b in &self.0 {
            let h = header(b);
            let _ = v.advance(h.origin.into(), h.range);
        }
        Ok(v)
    }
    fn committed(&mut self, _: &SessionId) -> Result<Option<CommitRecord>, String> {
        Ok(None)
    }
    fn commit(&mut self, _: &SessionId, _: &CommitRecord, _: &[StagedBatch]) -> Result<(), String> {
        Ok(())
    }
    fn batches_for(
        &mut self,
        vector: &VersionVector,
        exclude: &SiteId,
        _regain: &[outpost_protocol::message::Regain],
        _grant: &outpost_protocol::scope::Scopes,
    ) -> Result<VecDeque<Vec<u8>>, String> {
        Ok(self
            .0
            .iter()
            .filter(|b| {
                let h = header(b);
                h.origin != *exclude && h.range.hi > vector.get(&h.stream_id())
            })
            .cloned()
            .collect())
    }
    fn next_batch(&mut self, plan: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        Ok(plan.pop_front())
    }
}

/// The client's store: nothing to push; pulled batches counted into its vector.
#[derive(Default)]
struct Pulled {
    vector: VersionVector,
    batches: usize,
}

impl ClientStore for Pulled {
    type Error = String;
    type ExportPlan = ();

    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(self.vector.clone())
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
        let _ = self.vector.advance(h.origin.into(), h.range);
        self.batches += 1;
        Ok(())
    }
}

fn client(live: bool) -> ClientSession<Pulled> {
    ClientSession::new(ClientConfig {
        site: DEVICE,
        role: PeerRole::Device,
        fingerprint: [0; 32],
        wall_clock_ms: now_ms(),
        session: SessionId([5; 16]),
        live,
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    })
}

/// The hub's end of one accepted connection, after its handshake.
struct HubEnd {
    stream: TcpStream,
    channel: Channel,
    pending: Vec<u8>,
    start: Instant,
    session: ServerSession<Held>,
    store: Held,
}

impl HubEnd {
    /// Accepts one connection and answers its handshake (refusing with `refusal`, or with a
    /// key other than the one the device pinned when `wrong_key`). `None` when it refused.
    fn accept(listener: &TcpListener, refusal: Option<Refusal>, wrong_key: bool) -> Option<HubEnd> {
        let (mut stream, _) = listener.accept().unwrap();
        let identity = if wrong_key {
            Keypair::from_secret(&[9; 32]).unwrap()
        } else {
            hub_key()
        };
        let mut responder = Responder::new(
            ResponderConfig {
                identity,
                site: HUB,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            },
            Ephemeral::from_seed([4; 32]),
            Limits::default(),
            0,
        );
        let mut gate = Gate {
            device: *device_key().public(),
            refusal,
        };
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).unwrap();
            let mut input = &buf[..n];
            let r = responder.receive(&mut input, 1, &mut gate);
            stream.write_all(&responder.take_outgoing()).unwrap();
            match r {
                Ok(Some(channel)) => {
                    let session = ServerSession::new(ServerConfig {
                        site: HUB,
                        role: PeerRole::Hub,
                        fingerprint: None,
                        peer_site: DEVICE,
                        peer_key: *device_key().public(),
                        peer_pushes: PushOrigins::Own,
                        peer_grant: outpost_protocol::scope::Scopes::All,
                        wall_clock_ms: now_ms(),
                        max_clock_ahead_ms: outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS,
                        stage_ttl_ms: 60_000,
                        max_staged_bytes: 1 << 20,
                        batch_limits: BatchLimits::default(),
                    });
                    return Some(HubEnd {
                        stream,
                        channel,
                        pending: input.to_vec(),
                        start: Instant::now(),
                        session,
                        store: Held(vec![batch(OTHER, 1)]),
                    });
                }
                Ok(None) => {}
                Err(_) => return None,
            }
        }
    }

    fn send(&mut self, m: &Message) {
        self.channel.send(&m.encode()).unwrap();
        let out = self.channel.take_outgoing();
        self.stream.write_all(&out).unwrap();
    }

    /// The next message, or `None` after `wait` without one.
    fn recv(&mut self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 65536];
        loop {
            if !self.pending.is_empty() {
                let mut input = &self.pending[..];
                let now = self.start.elapsed().as_millis() as u64;
                let r = self.channel.receive(&mut input, now).unwrap();
                let used = self.pending.len() - input.len();
                self.pending.drain(..used);
                if let Some(bytes) = r {
                    return Some(Message::decode(&bytes, 1 << 20).unwrap());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) => panic!("hub read: {e}"),
            }
        }
    }

    /// Serves the session until the device's pull ended (its `PullDone` sent) or it said `Bye`.
    fn serve_pull(&mut self) {
        loop {
            let m = self
                .recv(Duration::from_secs(10))
                .expect("the device went quiet");
            self.session.handle(m, now_ms(), &mut self.store).unwrap();
            let mut pull_done = false;
            while let Some(out) = self.session.poll(&mut self.store).unwrap() {
                pull_done |= matches!(out, Message::PullDone { .. });
                self.send(&out);
            }
            if pull_done || self.session.is_done() {
                return;
            }
        }
    }

    /// Answers what arrives (pings included) for `wait`; the messages received.
    fn serve_for(&mut self, wait: Duration) -> Vec<Message> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        while let Some(m) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            seen.push(m.clone());
            if self.session.handle(m, now_ms(), &mut self.store).is_err() {
                break;
            }
            while let Some(out) = self.session.poll(&mut self.store).unwrap() {
                self.send(&out);
            }
        }
        seen
    }
}

/// A hub on a loopback port running `script` on its accepted connection.
fn hub<T: Send + 'static>(
    refusal: Option<Refusal>,
    wrong_key: bool,
    script: impl FnOnce(Option<HubEnd>) -> T + Send + 'static,
) -> (String, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || script(HubEnd::accept(&listener, refusal, wrong_key)));
    (address, handle)
}

fn open(address: &str) -> Result<Link<TcpStream>, LinkError> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(5),
    };
    let (stream, address) = connect(&[address.to_string()], timeouts).unwrap();
    Link::open(
        stream,
        Endpoint {
            peer: "hub aaaa".into(),
            address,
        },
        &InitiatorConfig {
            identity: device_key(),
            site: DEVICE,
            counter: 1,
            responder_key: *hub_key().public(),
            responder_site: HUB,
            purpose: Purpose::Session,
            version: PROTOCOL_VERSION,
        },
        Ephemeral::from_seed([3; 32]),
        timeouts.io,
    )
}

const FAST: LiveConfig = LiveConfig {
    poll: Duration::from_millis(20),
    keepalive: Duration::from_millis(200),
    silence: Duration::from_millis(700),
};

#[test]
fn a_session_runs_to_its_end_over_the_link() {
    let (address, hub) = hub(None, false, |end| {
        let mut end = end.unwrap();
        end.serve_pull();
        end.serve_for(Duration::from_secs(5));
        end.session.is_done()
    });
    let mut link = open(&address).unwrap();
    let (mut client, mut store) = (client(false), Pulled::default());
    let mut after = 0;
    link.drive(&mut client, &mut store, |_| after += 1).unwrap();
    assert!(client.is_done());
    assert_eq!(store.batches, 1, "the hub's batch was pulled");
    assert!(after >= 2, "after ran for each message handled ({after})");
    link.close();
    assert!(hub.join().unwrap(), "the hub saw the Bye");
}

#[test]
fn a_peer_without_the_pinned_key_is_unanswered_and_a_refusal_stays_typed() {
    let (address, hub1) = hub(None, true, |end| end.is_none());
    let e = open(&address).unwrap_err();
    assert!(matches!(e, LinkError::Unanswered { .. }), "{e:?}");
    assert!(e.to_string().starts_with("key mismatch"), "{e}");
    assert!(hub1.join().unwrap());

    let (address, hub2) = hub(Some(Refusal::Revoked), false, |end| end.is_none());
    let e = open(&address).unwrap_err();
    assert!(
        matches!(
            &e,
            LinkError::Handshake {
                error: HandshakeError::Refused(Refusal::Revoked),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("refused by hub aaaa"), "{e}");
    assert!(hub2.join().unwrap());
}

#[test]
fn the_live_wait_pulls_on_notify_answers_pings_and_keeps_the_link_alive() {
    let (address, hub) = hub(None, false, |end| {
        let mut end = end.unwrap();
        end.serve_pull();
        // Idle past the device's keepalive: its ping is answered by the session.
        let idle = end.serve_for(Duration::from_millis(350));
        // New changes: Notify, then serve the pull it asks for.
        end.store.0.push(batch(OTHER, 2));
        end.session.notify();
        while let Some(m) = end.session.poll(&mut end.store).unwrap() {
            end.send(&m);
        }
        end.serve_pull();
        end.send(&Message::Ping { nonce: 77 });
        let rest = end.serve_for(Duration::from_secs(5));
        (idle, rest)
    });
    let mut link = open(&address).unwrap();
    let (mut client, mut store) = (client(true), Pulled::default());
    link.drive(&mut client, &mut store, |_| {}).unwrap();
    assert!(client.is_live());
    assert_eq!(store.batches, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut wait = LiveWait::new(FAST, deadline);
    let mut polls = 0;
    while store.batches < 2 {
        match wait.next(&mut link, &mut client, &mut store).unwrap() {
            Event::Poll => polls += 1,
            Event::Received => {}
            other => panic!(
                "{other:?} before the notified pull ({} batches)",
                store.batches
            ),
        }
    }
    assert!(polls >= 10, "the caller polled between pulls ({polls})");
    // A little longer, for the hub's ping.
    let mut wait = LiveWait::new(FAST, Instant::now() + Duration::from_millis(300));
    while wait.next(&mut link, &mut client, &mut store).unwrap() != Event::Deadline {}
    link.send(&Message::Bye).unwrap();
    link.close();
    let (idle, rest) = hub.join().unwrap();
    assert!(
        idle.iter().any(|m| matches!(m, Message::Ping { nonce: 1 })),
        "keepalive ping: {idle:?}"
    );
    assert!(
        rest.iter()
            .any(|m| matches!(m, Message::Pong { nonce: 77 })),
        "the hub's ping answered: {rest:?}"
    );
}

#[test]
fn a_silent_peer_is_dropped_after_the_silence_limit() {
    let (address, hub) = hub(None, false, |end| {
        let mut end = end.unwrap();
        end.serve_pull();
        // Stops answering (a stopped process: the socket stays open, nothing is read).
        std::thread::sleep(Duration::from_secs(3));
        end
    });
    let mut link = open(&address).unwrap();
    let (mut client, mut store) = (client(true), Pulled::default());
    link.drive(&mut client, &mut store, |_| {}).unwrap();
    let started = Instant::now();
    let mut wait = LiveWait::new(FAST, Instant::now() + Duration::from_secs(10));
    let e = loop {
        match wait.next(&mut link, &mut client, &mut store) {
            Ok(Event::Poll) => {}
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    let took = started.elapsed();
    assert!(matches!(e, LinkError::Silent { .. }), "{e:?}");
    assert!(e.to_string().contains("stopped answering"), "{e}");
    assert!(took >= FAST.silence && took < FAST.silence * 2, "{took:?}");
    drop(hub.join().unwrap());
}

#[test]
fn the_deadline_ends_the_wait_and_the_peers_error_keeps_its_code() {
    let (address, hub) = hub(None, false, |end| {
        let mut end = end.unwrap();
        end.serve_pull();
        end.serve_for(Duration::from_millis(400));
        end.send(&Message::Error {
            code: ErrorCode::Unauthorized,
            message: "revoked meanwhile".into(),
        });
        end.serve_for(Duration::from_secs(2));
    });
    let mut link = open(&address).unwrap();
    let (mut client, mut store) = (client(true), Pulled::default());
    link.drive(&mut client, &mut store, |_| {}).unwrap();
    let mut wait = LiveWait::new(FAST, Instant::now() + Duration::from_millis(150));
    let started = Instant::now();
    while wait.next(&mut link, &mut client, &mut store).unwrap() != Event::Deadline {}
    assert!(started.elapsed() < Duration::from_millis(400));

    let mut wait = LiveWait::new(FAST, Instant::now() + Duration::from_secs(5));
    let e = loop {
        if let Err(e) = wait.next(&mut link, &mut client, &mut store) {
            break e;
        }
    };
    assert!(
        matches!(
            &e,
            LinkError::Peer {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{e:?}"
    );
    link.close();
    hub.join().unwrap();
}

/// A raw peer after the handshake: `script` gets the hub's channel and stream.
fn raw_hub(
    script: impl FnOnce(&mut Channel, &mut TcpStream) + Send + 'static,
) -> (String, JoinHandle<()>) {
    hub(None, false, move |end| {
        let mut end = end.unwrap();
        script(&mut end.channel, &mut end.stream);
    })
}

fn sealed(channel: &mut Channel, m: &Message) -> Vec<u8> {
    channel.send(&m.encode()).unwrap();
    channel.take_outgoing()
}

#[test]
fn a_stream_cut_inside_a_frame_is_a_cut_and_a_close_between_messages_is_not() {
    let (address, hub) = raw_hub(|channel, stream| {
        let frame = sealed(channel, &Message::Ping { nonce: 1 });
        stream.write_all(&frame[..frame.len() / 2]).unwrap();
    });
    let mut link = open(&address).unwrap();
    let e = link.recv().unwrap_err();
    assert!(
        matches!(
            &e,
            LinkError::Cut {
                error: ChannelError::Frame(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("the connection was cut"), "{e}");
    hub.join().unwrap();

    let (address, hub) = raw_hub(|channel, stream| {
        let frame = sealed(channel, &Message::Ping { nonce: 1 });
        stream.write_all(&frame).unwrap();
    });
    let mut link = open(&address).unwrap();
    assert_eq!(link.recv().unwrap(), Message::Ping { nonce: 1 });
    let e = link.recv().unwrap_err();
    assert!(matches!(e, LinkError::Closed { .. }), "{e:?}");
    hub.join().unwrap();
}

#[test]
fn a_message_arriving_in_pieces_across_short_waits_is_received_whole() {
    let (address, hub) = raw_hub(|channel, stream| {
        let frame = sealed(channel, &Message::Ping { nonce: 9 });
        stream.write_all(&frame[..5]).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        stream.write_all(&frame[5..]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    let mut link = open(&address).unwrap();
    let mut waits = 0;
    let got = loop {
        waits += 1;
        if let Some(m) = link.recv_within(Duration::from_millis(30)).unwrap() {
            break m;
        }
    };
    assert_eq!(got, Message::Ping { nonce: 9 });
    assert!(waits >= 3, "{waits}");
    let started = Instant::now();
    assert_eq!(link.recv_within(Duration::from_millis(50)).unwrap(), None);
    assert!(started.elapsed() < Duration::from_millis(250));
    hub.join().unwrap();
}

#[test]
fn a_message_still_arriving_keeps_a_live_link_alive_past_the_silence_limit() {
    let (address, hub) = hub(None, false, |end| {
        let mut end = end.unwrap();
        end.serve_pull();
        let frame = sealed(&mut end.channel, &Message::Ping { nonce: 5 });
        // 7 pieces 150 ms apart: about 1 s for one message, above the 700 ms silence limit.
        for piece in frame.chunks(frame.len().div_ceil(7)) {
            std::thread::sleep(Duration::from_millis(150));
            end.stream.write_all(piece).unwrap();
        }
        end.serve_for(Duration::from_millis(500))
    });
    let mut link = open(&address).unwrap();
    let (mut client, mut store) = (client(true), Pulled::default());
    link.drive(&mut client, &mut store, |_| {}).unwrap();
    let mut wait = LiveWait::new(FAST, Instant::now() + Duration::from_secs(5));
    let started = Instant::now();
    loop {
        match wait.next(&mut link, &mut client, &mut store).unwrap() {
            Event::Poll => {}
            Event::Received => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() > FAST.silence, "{:?}", started.elapsed());
    // Until the hub, done, closes.
    loop {
        match wait.next(&mut link, &mut client, &mut store) {
            Ok(Event::Poll | Event::Received) => {}
            Err(LinkError::Closed { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    let seen = hub.join().unwrap();
    assert!(
        seen.iter().any(|m| matches!(m, Message::Pong { nonce: 5 })),
        "{seen:?}"
    );
}

/// What the device saw before the busy notice existed: a hub that closes at once for load was
/// a "key mismatch". Now the notice, at once or after message 1 was read, is `Busy`.
#[test]
fn a_busy_notice_is_busy_not_a_key_mismatch() {
    use outpost_protocol::handshake::BUSY_NOTICE;
    for read_first in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let hub = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            if read_first {
                let mut msg1 = [0u8; 191];
                s.read_exact(&mut msg1).unwrap();
            }
            s.write_all(&BUSY_NOTICE).unwrap();
        });
        let e = open(&address).unwrap_err();
        assert!(matches!(e, LinkError::Busy { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("hub aaaa") && text.contains("busy (too many connections"),
            "{text}"
        );
        assert!(text.ends_with("retry later"), "{text}");
        hub.join().unwrap();
    }
}
