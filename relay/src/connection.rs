//! The relay: what the hub runs on one connection, independent of the socket layer.
//!
//! [`Relay`] is sans-I/O: feed it the bytes that arrive ([`Relay::receive`]) with the time, send
//! what [`Relay::output`] returns, close when it says so. It runs the Noise responder
//! (`protocol::handshake`, admission answered by [`HubGate`] from the allowlist), then the session
//! over the open channel, backed by the mailbox. [`serve_stream`] drives it over any blocking
//! `Read + Write` (a `TcpStream` through [`crate::server::Conn`], or embassy-net through
//! `net::bridge::BridgedConn`), so the same code runs over std sockets and over embassy-net.

use crate::datadir::DataDir;
use crate::gate::HubGate;
use anyhow::{Context, Result};
use outpost_mailbox::Mailbox;
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::channel::{Channel, Limits as ChannelLimits};
use outpost_protocol::handshake::{Ephemeral, Keypair, PublicKey, Responder, ResponderConfig};
use outpost_protocol::message::{ErrorCode, Message, PeerRole};
use outpost_protocol::session::{ServerConfig, ServerSession};
use outpost_protocol::{SiteId, VersionVector, PROTOCOL_VERSION};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an idle connection checks for news to notify (live mode). A check is one atomic
/// load, so a short tick costs an idle live connection 20 timed-out reads a second; it bounds how
/// long a commit waits before the other live peers are told (a blocked socket read cannot be
/// woken by another thread's commit without a second descriptor to poll).
pub const NOTIFY_TICK: Duration = Duration::from_millis(50);

/// What the hub shares between connections.
#[derive(Debug)]
pub struct Hub {
    dir: DataDir,
    keypair: Keypair,
    limits: ChannelLimits,
    epoch: Instant,
    /// What this server says it is in its hello (the hub; the cloud reuses the relay).
    role: PeerRole,
    /// Bumped after every acknowledged commit: connections idle in live mode compare it with the
    /// value they last served and send `Notify` when it moved.
    commits: AtomicU64,
    /// Bumped after every empty `IdGrant` sent (a delegated pool could not cover a request and
    /// recorded the demand): the uplink reads the pool only when this moved.
    id_shortfalls: AtomicU64,
}

impl Hub {
    /// The hub over an opened data directory.
    pub fn new(dir: DataDir, limits: ChannelLimits) -> Result<Arc<Hub>> {
        Hub::with_role(dir, limits, PeerRole::Hub)
    }

    /// The same, announcing `role` in the session hello (the cloud's listener uses
    /// [`PeerRole::Cloud`]).
    pub fn with_role(dir: DataDir, limits: ChannelLimits, role: PeerRole) -> Result<Arc<Hub>> {
        let keypair = Keypair::from_secret(dir.identity.private_key())
            .with_context(|| format!("{}: identity key", dir.path.display()))?;
        Ok(Arc::new(Hub {
            dir,
            keypair,
            limits,
            epoch: Instant::now(),
            role,
            commits: AtomicU64::new(0),
            id_shortfalls: AtomicU64::new(0),
        }))
    }

    /// Milliseconds since the hub started: the relays' clock (monotonic).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The hub's static key pair (the relay's Noise `s`, and the uplink's as initiator).
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Commits acknowledged so far by this process (relays and uplink): a change means news.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Records a commit made outside the relay (the uplink storing what it pulled), so live
    /// devices are notified of it.
    pub fn note_commit(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }

    /// Empty id grants sent so far by this process's relays (each after the demand was
    /// recorded): a change means the id pool may want a refill.
    pub fn id_shortfalls(&self) -> u64 {
        self.id_shortfalls.load(Ordering::SeqCst)
    }
}

/// Staged (pushed, not yet committed) batches expire after this long.
const STAGE_TTL_MS: u64 = 10 * 60 * 1000;
/// Largest total of staged batch bytes per connection (they are held in memory until commit).
const MAX_STAGED_BYTES: usize = 64 << 20;
/// Sealed bytes produced per [`Relay::output`] call at most (plus one message): a pull streams
/// through this window instead of being sealed whole.
const OUTPUT_WINDOW: usize = 1 << 20;

struct Open {
    hub: Arc<Hub>,
    channel: Channel,
    session: ServerSession<Mailbox>,
    mailbox: Mailbox,
    /// Close once the pending output is sent.
    closing: bool,
    /// The hub's commit count when the client's last pull was planned.
    pulled_at: u64,
    /// The last thing sent was `PullDone` and the client said nothing since: it is waiting
    /// (live mode), so a `Notify` is welcome (never while it pushes: it would be unexpected).
    idle_after_pull: bool,
    /// What the peer is known to cover: its hello and pull vectors, merged with what each
    /// completed pull sent it (for the status page's "pending" per device).
    seen: VersionVector,
}

enum State {
    Handshake(Box<Responder>),
    Open(Box<Open>),
    Closed,
}

/// One connection's relay.
pub struct Relay {
    hub: Arc<Hub>,
    gate: HubGate,
    state: State,
    out: Vec<u8>,
    peer_site: Option<SiteId>,
    /// The peer's vector as known when the session closed (see [`Relay::peer_vector`]).
    seen: VersionVector,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

/// What a call to [`Relay::receive`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Nothing to report: send the outgoing bytes and keep reading.
    Continue,
    /// The handshake admitted this peer (register it for revocation).
    Authenticated(PublicKey),
    /// The relay is done: send the outgoing bytes, then close.
    Close,
}

impl Relay {
    /// A relay for a new connection, waiting for the first handshake message.
    pub fn new(hub: Arc<Hub>) -> Result<Relay> {
        let gate = HubGate::new(hub.dir.allowlist()?);
        let responder = Responder::new(
            ResponderConfig {
                identity: hub.keypair.clone(),
                site: hub.dir.identity.site,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            },
            Ephemeral::from_os().context("seeding the handshake")?,
            hub.limits,
            hub.now_ms(),
        );
        Ok(Relay {
            hub,
            gate,
            state: State::Handshake(Box::new(responder)),
            out: Vec::new(),
            peer_site: None,
            seen: VersionVector::new(),
        })
    }

    /// Ends the relay, keeping what it learnt of the peer's vector.
    fn close(&mut self) {
        if let State::Open(open) = std::mem::replace(&mut self.state, State::Closed) {
            self.seen = open.seen;
        }
    }

    /// The authenticated peer's site id and the vector it is known to cover (after its hello,
    /// its pulls and what they sent), or `None` before the handshake completed.
    pub fn peer_vector(&self) -> Option<(SiteId, &VersionVector)> {
        let site = self.peer_site?;
        Some(match &self.state {
            State::Open(open) => (site, &open.seen),
            _ => (site, &self.seen),
        })
    }

    /// Bytes to send now; call until it returns none (a pull is produced a window at a time).
    /// An error means: send nothing more, close.
    pub fn output(&mut self) -> Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.out);
        match &mut self.state {
            State::Handshake(r) => out.extend(r.take_outgoing()),
            State::Open(open) => {
                let r = open.pump(&mut out);
                if r.is_err() || (open.closing && out.is_empty()) {
                    self.close();
                }
                r?;
            }
            State::Closed => {}
        }
        Ok(out)
    }

    /// Periodic work while the peer is silent: in live mode, queues a `Notify` when other
    /// connections committed since this client's last pull. Send [`Relay::output`] after.
    pub fn tick(&mut self) {
        if let State::Open(open) = &mut self.state {
            let commits = open.hub.commits.load(Ordering::SeqCst);
            if open.idle_after_pull && commits != open.pulled_at && !open.closing {
                open.session.notify();
                open.idle_after_pull = false;
                open.pulled_at = commits;
            }
        }
    }

    /// True once the relay has nothing more to do: close after sending what `output` gave.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Consumes `input` (everything; bytes past a completed handshake go to the channel).
    pub fn receive(&mut self, mut input: &[u8]) -> Result<Event> {
        let now = self.hub.now_ms();
        let mut event = Event::Continue;
        loop {
            match &mut self.state {
                State::Closed => return Ok(Event::Close),
                State::Handshake(responder) => {
                    match responder.receive(&mut input, now, &mut self.gate) {
                        Ok(None) => return Ok(event),
                        Ok(Some(channel)) => {
                            self.out.extend(responder.take_outgoing());
                            let session = ServerSession::new(ServerConfig {
                                site: self.hub.dir.identity.site,
                                role: self.hub.role,
                                // The hub is schema-free: it never checks configurations.
                                fingerprint: None,
                                peer_site: channel.peer().site,
                                wall_clock_ms: wall_clock_ms(),
                                stage_ttl_ms: STAGE_TTL_MS,
                                max_staged_bytes: MAX_STAGED_BYTES,
                                batch_limits: BatchLimits::default(),
                            });
                            let peer = *channel.peer();
                            log::info!(
                                "peer site={} key={} {}",
                                peer.site,
                                peer.key.fingerprint(),
                                if peer.enrolled {
                                    "enrolled"
                                } else {
                                    "authenticated"
                                }
                            );
                            event = Event::Authenticated(peer.key);
                            self.peer_site = Some(peer.site);
                            self.state = State::Open(Box::new(Open {
                                hub: self.hub.clone(),
                                channel,
                                session,
                                mailbox: self.hub.dir.mailbox()?,
                                closing: false,
                                pulled_at: 0,
                                idle_after_pull: false,
                                seen: VersionVector::new(),
                            }));
                        }
                        Err(e) => {
                            // The responder may hold a refusal the peer can authenticate.
                            self.out.extend(responder.take_outgoing());
                            self.state = State::Closed;
                            return Err(anyhow::Error::new(e).context("handshake"));
                        }
                    }
                }
                State::Open(open) => {
                    return match open.receive(&mut input, now) {
                        // Closing: what follows a Bye or an error is ignored.
                        Ok(()) if open.closing => Ok(Event::Close),
                        Ok(()) => Ok(event),
                        Err(e) => {
                            self.out.extend(open.channel.take_outgoing());
                            self.close();
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    /// The peer ended the stream.
    pub fn finish(&mut self) -> Result<()> {
        if let State::Open(open) = &mut self.state {
            let r = open.channel.finish().context("channel");
            if r.is_ok() && !open.session.is_done() && open.session.peer_hello().is_some() {
                log::debug!("peer ended the stream without Bye");
            }
            self.close();
            return r;
        }
        self.state = State::Closed;
        Ok(())
    }

    /// The gatekeeper's allowlist (last seen, etc.).
    pub fn allowlist(&mut self) -> &mut crate::allowlist::Allowlist {
        self.gate.allowlist()
    }
}

impl Open {
    /// Decodes and handles every whole message in `input`. A session error queues its `Error`
    /// message (when it has one) and marks the relay closing; a channel error closes at once
    /// without a word to the peer (DESIGN.md section 7).
    fn receive(&mut self, input: &mut &[u8], now: u64) -> Result<()> {
        while !input.is_empty() && !self.closing {
            let Some(bytes) = self.channel.receive(input, now).context("channel")? else {
                return Ok(());
            };
            let msg = match Message::decode(&bytes, usize::MAX) {
                Ok(m) => m,
                Err(e) => {
                    let _ = self.channel.send(
                        &Message::Error {
                            code: ErrorCode::BadMessage,
                            message: format!("message refused: {e}"),
                        }
                        .encode(),
                    );
                    self.closing = true;
                    return Err(anyhow::Error::new(e).context("bad message"));
                }
            };
            match &msg {
                // An id request follows the pull: the client is still caught up, so a commit
                // made meanwhile must still be notified.
                Message::Ping { .. } | Message::Pong { .. } | Message::IdRequest(_) => {}
                Message::Pull { vector } => {
                    self.pulled_at = self.hub.commits.load(Ordering::SeqCst);
                    self.idle_after_pull = false;
                    self.seen.merge(vector);
                }
                Message::Hello(hello) => {
                    self.idle_after_pull = false;
                    self.seen.merge(&hello.vector);
                }
                _ => self.idle_after_pull = false,
            }
            if let Err(e) = self.session.handle(msg, now, &mut self.mailbox) {
                self.fail(&e);
                return Err(anyhow::Error::new(e).context("session"));
            }
            // Seal this message's answers before handling the next one, so an error in a
            // later message cannot discard them (the session drops its queue on error).
            self.seal()?;
            if self.session.is_done() {
                self.closing = true;
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: &outpost_protocol::session::SessionError) {
        if let Some(m) = e.to_message() {
            let _ = self.channel.send(&m.encode());
        }
        self.closing = true;
    }

    /// Seals what the session has to say into the channel, until about [`OUTPUT_WINDOW`] bytes
    /// wait there.
    fn seal(&mut self) -> Result<()> {
        while self.channel.queued() < OUTPUT_WINDOW && !self.closing {
            match self.session.poll(&mut self.mailbox) {
                Ok(Some(m)) => {
                    match &m {
                        Message::Ack { .. } => {
                            self.hub.commits.fetch_add(1, Ordering::SeqCst);
                        }
                        Message::PullDone { vector } => {
                            self.idle_after_pull = true;
                            self.seen.merge(vector);
                        }
                        Message::IdGrant(g) if g.ranges.is_empty() => {
                            self.hub.id_shortfalls.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                    self.channel.send(&m.encode()).context("channel")?
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(&e);
                    return Err(anyhow::Error::new(e).context("session"));
                }
            }
        }
        Ok(())
    }

    /// [`Open::seal`], then hands the sealed bytes to `out` (also after an error: they may end
    /// with the `Error` message).
    fn pump(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let r = self.seal();
        out.extend(self.channel.take_outgoing());
        r
    }
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Something a relay can run over: a blocking byte stream that can register its peer's key for
/// revocation.
pub trait Stream: Read + Write {
    /// The peer proved `key`: from now on, revoking it must end this stream.
    fn authenticated(&mut self, key: &PublicKey) -> std::io::Result<()>;

    /// Asks reads to return `WouldBlock` every `tick` without data (for live-mode notifications).
    /// A stream that cannot does nothing here: its clients then learn of news at their next pull.
    fn set_tick(&mut self, _tick: Duration) {}
}

impl Stream for crate::server::Conn {
    fn authenticated(&mut self, key: &PublicKey) -> std::io::Result<()> {
        crate::server::Conn::authenticated(self, key.as_bytes())
    }

    fn set_tick(&mut self, tick: Duration) {
        crate::server::Conn::set_tick(self, Some(tick));
    }
}

/// Writes everything the relay has to send, a window at a time.
fn send_output(relay: &mut Relay, stream: &mut dyn Stream) -> Result<()> {
    loop {
        let out = relay.output();
        let (bytes, failed) = match out {
            Ok(b) => (b, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        if !bytes.is_empty() {
            stream
                .write_all(&bytes)
                .and_then(|()| stream.flush())
                .context("writing")?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if bytes.is_empty() {
            return Ok(());
        }
    }
}

/// Runs `relay` over `stream` until either side ends.
pub fn serve_stream(relay: &mut Relay, stream: &mut dyn Stream) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut key: Option<PublicKey> = None;
    let result = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break relay.finish(),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                relay.tick();
                if let Err(e) = send_output(relay, stream) {
                    break Err(e);
                }
                continue;
            }
            Err(e) => break Err(anyhow::Error::new(e).context("reading")),
        };
        let event = relay.receive(&buf[..n]);
        if let Err(e) = send_output(relay, stream) {
            break Err(e);
        }
        match event {
            Ok(Event::Continue) => {}
            Ok(Event::Authenticated(k)) => {
                stream.authenticated(&k)?;
                stream.set_tick(NOTIFY_TICK);
                key = Some(k);
            }
            Ok(Event::Close) => break Ok(()),
            Err(e) => break Err(e),
        }
        if relay.is_closed() {
            break Ok(());
        }
    };
    if let Some(k) = key {
        let now = crate::datadir::unix_now();
        if let Err(e) = relay.allowlist().touch(k.as_bytes(), now) {
            log::warn!("recording last seen: {e}");
        }
        let seen = relay
            .peer_vector()
            .map(|(site, v)| (site, crate::status::encode_vector(v)));
        if let Some((site, vector)) = seen {
            if let Err(e) = crate::status::record_vector(relay.allowlist(), &site, &vector) {
                log::warn!("recording the device's vector: {e}");
            }
        }
    }
    result
}
