//! The staging budget over real TCP, real crypto and a real mailbox file: pushes of several
//! connections share one budget; a push that does not fit while others are staged is refused
//! with `Error(Busy)` (the device reads the refusal, not a reset), nothing stored is lost or
//! altered, and the refused devices succeed when they retry.

use outpost_mailbox::Mailbox;
use outpost_protocol::handshake::{PublicKey, Purpose};
use outpost_protocol::message::{ErrorCode, Message};
use outpost_protocol::session::{ClientSession, SessionError};
use outpost_protocol::{Hlc, SiteId, VersionVector};
use outpost_relay::allowlist::{Role, DEFAULT_TOKEN_TTL_SECS};
use outpost_relay::identity::Identity;
use outpost_relay::{serve_connection, Serving, Stores, Stream};
use outpost_testkit::batch::text_rows;
use outpost_testkit::session::{client_config, session_id};
use outpost_testkit::{connect, enroll_token, sync, wait_until, Device, HubInfo, SyncError};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The budget under test: a few of the devices' pushes fit at once, not all.
const BUDGET: usize = 1 << 20;
/// Bytes of text in each device's push (in two batches).
const PUSH_TEXT: usize = 400 * 1024;

/// A plain TCP stream as the relay's driver wants it (no revocation, no live tick: this test
/// needs neither, and it keeps the test independent of the listener's admission rules).
struct Tcp(TcpStream);

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Stream for Tcp {
    fn authenticated(&mut self, _key: &PublicKey) -> io::Result<()> {
        Ok(())
    }
}

struct Hub {
    info: HubInfo,
    serving: Arc<Serving>,
    dir: tempfile::TempDir,
}

/// A relay with a staging budget of [`BUDGET`], one thread per connection.
fn start_hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = Identity::load_or_create(dir.path()).unwrap();
    let stores = Stores::files(
        identity,
        dir.path().join("mailbox.db"),
        dir.path().join("allowlist.db"),
    );
    let serving = Serving::with_staging_budget(
        stores,
        Default::default(),
        outpost_protocol::message::PeerRole::Hub,
        BUDGET,
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let info = HubInfo {
        addr: listener.local_addr().unwrap(),
        key: *serving.identity().public(),
        site: serving.identity().site,
    };
    let s = serving.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let s = s.clone();
            let mut stream = Tcp(stream.unwrap());
            std::thread::spawn(move || {
                let _ = serve_connection(&s, &mut stream);
            });
        }
    });
    Hub { info, serving, dir }
}

impl Hub {
    /// A device with site `[n; 16]` holding two batches of its own (about [`PUSH_TEXT`] bytes),
    /// enrolled.
    fn device(&self, n: u8) -> Device {
        let site = SiteId([n; 16]);
        let rows = |lo: u64| {
            (0..100u64).map(move |i| {
                let seq = lo + i;
                let text: String = (0..PUSH_TEXT / 200)
                    .map(|k| char::from(b'a' + ((seq as usize * 7 + k) % 26) as u8))
                    .collect();
                (seq as i64, Hlc::new(1_800_000_000_000 + seq, 0), text)
            })
        };
        let own = vec![
            text_rows(site, 1, 100, "notes", "body", rows(1)),
            text_rows(site, 101, 200, "notes", "body", rows(101)),
        ];
        self.enrolled(Device::holding(site, own))
    }

    /// `dev`, enrolled.
    fn enrolled(&self, mut dev: Device) -> Device {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = self
            .serving
            .stores()
            .allowlist()
            .unwrap()
            .issue_token(now, DEFAULT_TOKEN_TTL_SECS, Role::Device)
            .unwrap()
            .secret;
        enroll_token(&self.info, &mut dev, token);
        dev
    }

    /// Waits until the relays hold `bytes` of the budget.
    fn wait_held(&self, what: &str, ok: impl Fn(usize) -> bool) {
        let budget = self.serving.staging();
        wait_until(
            what,
            Duration::from_secs(10),
            Duration::from_millis(5),
            || ok(budget.held()),
        );
    }
}

/// A push in progress: hello answered, batches sent, the commit held back.
struct Pushing {
    stream: TcpStream,
    channel: outpost_protocol::channel::Channel,
    client: ClientSession<Device>,
    commit: Option<Message>,
    /// Bytes received and not yet decoded.
    pending: Vec<u8>,
}

impl Pushing {
    /// Session `n` of `dev`: hello, then every push, everything up to its `Commit`.
    fn start(hub: &Hub, dev: &mut Device, n: u64) -> Pushing {
        let (channel, stream) = connect(&hub.info, dev, Purpose::Session).unwrap();
        let client = ClientSession::new(client_config(dev.site, session_id(n, dev.site), false));
        let mut p = Pushing {
            stream,
            channel,
            client,
            commit: None,
            pending: Vec::new(),
        };
        p.send(dev); // hello
        let hello = p.recv(dev);
        p.client.handle(hello, dev).unwrap();
        p.send(dev); // the pushes, then the commit is held back
                     // The hub's entry certifying the device follows its hello: the push waits for it.
        while p.commit.is_none() {
            let next = p.next_message();
            p.client.handle(next, dev).unwrap();
            p.send(dev);
        }
        assert!(p.commit.is_some(), "the client got to its commit");
        p
    }

    /// Sends what the client has to say, holding back a `Commit`.
    fn send(&mut self, dev: &mut Device) {
        while let Some(m) = self.client.poll(dev).unwrap() {
            if matches!(m, Message::Commit { .. }) {
                self.commit = Some(m);
                break;
            }
            self.channel.send(&m.encode()).unwrap();
            self.stream
                .write_all(&self.channel.take_outgoing())
                .unwrap();
        }
    }

    /// The next message other than `Control` (the hub's entries follow its hello; the
    /// device's store takes them).
    fn recv(&mut self, dev: &mut Device) -> Message {
        loop {
            match self.next_message() {
                m @ Message::Control { .. } => self.client.handle(m, dev).unwrap(),
                m => return m,
            }
        }
    }

    /// The next message, whatever it is. Bytes read past a message are kept for the next one.
    fn next_message(&mut self) -> Message {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.pending.is_empty() {
                let n = self.stream.read(&mut buf).unwrap();
                assert!(n > 0, "the hub closed without a word");
                self.pending.extend_from_slice(&buf[..n]);
            }
            let mut input = &self.pending[..];
            let got = self.channel.receive(&mut input, 1).unwrap();
            let used = self.pending.len() - input.len();
            self.pending.drain(..used);
            if let Some(bytes) = got {
                return Message::decode(&bytes, usize::MAX).unwrap();
            }
        }
    }

    /// Sends the held-back commit and hands the ack to the client.
    fn commit(mut self, dev: &mut Device) {
        let commit = self.commit.take().unwrap();
        self.channel.send(&commit.encode()).unwrap();
        self.stream
            .write_all(&self.channel.take_outgoing())
            .unwrap();
        let ack = self.recv(dev);
        assert!(matches!(ack, Message::Ack { .. }), "{ack:?}");
        self.client.handle(ack, dev).unwrap();
    }
}

/// Every batch the mailbox holds equals, byte for byte, one the devices pushed, each once, and
/// every device's seqs are covered.
fn assert_holds_exactly(hub: &Hub, devices: &[Device]) {
    let mb = Mailbox::open(hub.dir.path().join("mailbox.db")).unwrap();
    mb.check().unwrap();
    let mut held: Vec<Vec<u8>> = mb
        .batches_for(
            &VersionVector::new(),
            None,
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap()
        .map(|b| b.unwrap().bytes)
        .collect();
    let mut pushed: Vec<Vec<u8>> = devices.iter().flat_map(|d| d.own.clone()).collect();
    held.sort();
    pushed.sort();
    assert!(held == pushed, "the mailbox holds exactly what was pushed");
    let vector = mb.vector().unwrap();
    for d in devices {
        assert_eq!(vector.get(&d.site.into()), 200, "{} covered", d.site);
    }
}

fn is_busy(e: &SyncError) -> bool {
    matches!(
        e,
        SyncError::Session(SessionError::Peer {
            code: ErrorCode::Busy,
            ..
        })
    )
}

#[test]
fn pushes_beyond_the_shared_budget_get_busy_and_succeed_on_retry() {
    let hub = start_hub();
    let mut devices: Vec<Device> = (1..=4).map(|n| hub.device(n)).collect();
    let push = devices[0].own.iter().map(Vec::len).sum::<usize>();
    assert!(
        2 * push <= BUDGET && 3 * push > BUDGET,
        "{push} bytes per push"
    );

    // Two pushes fit and stay staged (their commits held back).
    let first = Pushing::start(&hub, &mut devices[0], 1);
    hub.wait_held("the first push staged", |h| h >= push);
    let second = Pushing::start(&hub, &mut devices[1], 1);
    hub.wait_held("both pushes staged", |h| h >= 2 * push);

    // Two more do not: each is told the hub is busy, and reads it (no reset).
    for dev in &mut devices[2..] {
        let err = sync(&hub.info, dev, 1).unwrap_err();
        assert!(is_busy(&err), "expected busy, got: {err}");
        let SyncError::Session(SessionError::Peer { message, .. }) = &err else {
            unreachable!()
        };
        assert!(message.contains("retry"), "{message}");
        assert!(
            dev.acked.is_empty(),
            "nothing acknowledged to a refused push"
        );
    }
    assert!(hub.serving.staging().held() >= 2 * push);

    // The staged pushes commit as if nothing happened.
    let (a, rest) = devices.split_at_mut(1);
    first.commit(&mut a[0]);
    second.commit(&mut rest[0]);
    hub.wait_held("the budget given back", |h| h == 0);

    // The refused devices retry and get through.
    for (n, dev) in devices.iter_mut().enumerate() {
        sync(&hub.info, dev, 2).unwrap_or_else(|e| panic!("device {n} on retry: {e}"));
        assert_eq!(dev.acked_up_to(), 200, "device {n} acknowledged");
    }
    assert_holds_exactly(&hub, &devices);
}

#[test]
fn concurrent_pushers_all_get_through_retrying_on_busy() {
    let hub = Arc::new(start_hub());
    let devices: Vec<Device> = (1..=8).map(|n| hub.device(n)).collect();
    let pushers: Vec<_> = devices
        .into_iter()
        .map(|mut dev| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                let mut busy = 0;
                for n in 1.. {
                    match sync(&hub.info, &mut dev, n) {
                        Ok(_) => return (dev, busy),
                        Err(e) if is_busy(&e) && busy < 200 => {
                            busy += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("{}: {e}", dev.site),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    let mut devices = Vec::new();
    let mut busy = 0;
    for p in pushers {
        let (dev, b) = p.join().unwrap();
        assert_eq!(dev.acked_up_to(), 200);
        busy += b;
        devices.push(dev);
    }
    println!("busy answers: {busy}");
    hub.wait_held("the budget given back", |h| h == 0);
    assert_holds_exactly(&hub, &devices);
}

#[test]
fn a_push_larger_than_the_budget_is_told_too_large_while_still_sending() {
    let hub = start_hub();
    // 16 MiB in 32 batches: far more than the budget, and more than the kernel's socket buffers
    // hold, so the device is still writing when the hub refuses it.
    let site = SiteId([0x77; 16]);
    let own: Vec<Vec<u8>> = (0..32u64)
        .map(|b| {
            let lo = 1 + b * 8;
            let rows = (lo..lo + 8).map(|seq| {
                let text = "x".repeat(64 * 1024 - 64);
                (seq as i64, Hlc::new(1_800_000_000_000 + seq, 0), text)
            });
            text_rows(site, lo, lo + 7, "notes", "body", rows)
        })
        .collect();
    let mut dev = hub.enrolled(Device::holding(site, own));
    let err = sync(&hub.info, &mut dev, 1).unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Session(SessionError::Peer {
                code: ErrorCode::TooLarge,
                ..
            })
        ),
        "expected too large, got: {err}"
    );
    hub.wait_held("the budget given back", |h| h == 0);
}
