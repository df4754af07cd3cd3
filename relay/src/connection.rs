//! One connection's relay: the Noise responder, then the protocol's `ServerSession` over the
//! mailbox, as a state machine independent of the socket.
//!
//! [`Relay`] never touches a socket, never reads a clock and never draws randomness: its driver
//! feeds it the bytes that arrive ([`Relay::receive`]) with the [`Time`] they arrived at, sends
//! what [`Relay::output`] returns, calls [`Relay::tick`] while the peer is silent, and closes when
//! it says so; the handshake's randomness is handed to [`Relay::new`]. It does do storage I/O,
//! through connections it borrows from its [`Serving`]'s pools for one step at a time (so an
//! idle live session holds none): an allowlist connection answers admission
//! ([`AllowlistGate`]) for the handshake and records the peer when it leaves
//! ([`Relay::record_peer`]); a mailbox connection backs each message of the session (pushes are
//! committed, fsynced, before their ack) and each window of a pull. `crate::stream` drives it
//! over any blocking stream.
//!
//! **Memory held for the peer.** What a connection holds of its peer's pushes (the message being
//! received, the batches staged until `Commit`) is counted against the process's
//! [`crate::staging::StagingBudget`] after every read; when it is full the peer gets
//! `Error(Busy)` (retry later), or `Error(TooLarge)` when its push alone exceeds the budget. A
//! refused peer is usually still writing its push, so the relay then reads and discards what it
//! sends until it closes (at most [`DRAIN_MS`] and 64 MiB): closing at once, with its bytes
//! unread, would reset the connection and the peer would see a reset instead of the reason.

use crate::allowlist::{AllowlistError, Device, Role};
use crate::gate::AllowlistGate;
use crate::serving::{Serving, Time};
use crate::staging::{Reservation, StagingFull};
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::channel::{Channel, ChannelError, Peer};
use outpost_protocol::frame::MAX_PLAINTEXT_LEN;
use outpost_protocol::handshake::{
    Ephemeral, HandshakeError, KeyError, PublicKey, Responder, ResponderConfig,
};
use outpost_protocol::message::{ErrorCode, Message, MessageError, PeerRole};
use outpost_protocol::scope::Scopes;
use outpost_protocol::session::{PushOrigins, ServerConfig, ServerSession, SessionError};
use outpost_protocol::{SiteId, VersionVector, PROTOCOL_VERSION};
use std::fmt;
use std::io;
use std::sync::Arc;

/// Why a connection ended in error (its driver logs it with the peer's address).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The allowlist could not be opened for the connection.
    Allowlist(AllowlistError),
    /// The mailbox could not be opened for the admitted peer.
    Mailbox(MailboxError),
    /// The system's random source failed while seeding the handshake.
    Seed(KeyError),
    /// The handshake failed, or the peer was refused.
    Handshake(HandshakeError),
    /// The secure channel failed: a damaged or forged frame, a deadline, a stream cut mid-frame.
    Channel(ChannelError),
    /// The peer sent a message that does not decode (it was told so before the close).
    BadMessage(MessageError),
    /// The session failed: the peer broke the protocol, or the mailbox failed.
    Session(SessionError),
    /// Reading from the stream failed (the peer reset, or was silent too long).
    Read(io::Error),
    /// Writing to the stream failed.
    Write(io::Error),
    /// The stream could not register the authenticated peer for revocation.
    Register(io::Error),
    /// A push was refused for memory: the process's staging budget is full (the peer was told
    /// `Busy`), or the push alone exceeds it (told `TooLarge`).
    Staging(StagingFull),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Allowlist(e) => write!(f, "opening the allowlist: {e}"),
            ConnectionError::Mailbox(e) => write!(f, "opening the mailbox: {e}"),
            ConnectionError::Seed(e) => write!(f, "seeding the handshake: {e}"),
            ConnectionError::Handshake(e) => write!(f, "handshake: {e}"),
            ConnectionError::Channel(e) => write!(f, "channel: {e}"),
            ConnectionError::BadMessage(e) => write!(f, "bad message: {e}"),
            ConnectionError::Session(e) => write!(f, "session: {e}"),
            ConnectionError::Read(e) => write!(f, "reading: {e}"),
            ConnectionError::Write(e) => write!(f, "writing: {e}"),
            ConnectionError::Register(e) => {
                write!(f, "registering the session for revocation: {e}")
            }
            ConnectionError::Staging(e) => write!(f, "push refused: {e}"),
        }
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(match self {
            ConnectionError::Allowlist(e) => e,
            ConnectionError::Mailbox(e) => e,
            ConnectionError::Seed(e) => e,
            ConnectionError::Handshake(e) => e,
            ConnectionError::Channel(e) => e,
            ConnectionError::BadMessage(e) => e,
            ConnectionError::Session(e) => e,
            ConnectionError::Read(e) | ConnectionError::Write(e) | ConnectionError::Register(e) => {
                e
            }
            ConnectionError::Staging(e) => e,
        })
    }
}

/// Staged (pushed, not yet committed) batches expire after this long.
const STAGE_TTL_MS: u64 = 10 * 60 * 1000;
/// Largest total of staged batch bytes per connection (they are held in memory until commit).
const MAX_STAGED_BYTES: usize = 64 << 20;
/// Control entries one session may hand the mailbox (16 messages of the protocol's 1,024): a
/// hub's stream grows by one entry per device it admits, so this leaves room for thousands of
/// devices per session while bounding the decoding a peer can cause (8 MiB of entries).
const MAX_CONTROL_ENTRIES: usize = 16 * 1024;
/// Sealed bytes produced per [`Relay::output`] call at most (plus one message): a pull streams
/// through this window instead of being sealed whole.
const OUTPUT_WINDOW: usize = 1 << 20;
/// How long a relay that refused a push keeps reading (and discarding) what the peer still
/// sends, so the peer reads the refusal rather than a reset. Nothing read is kept; a device
/// pushes at most 16 MiB per session, which a slow Wi-Fi link sends within this.
pub const DRAIN_MS: u64 = 60_000;
/// The most a relay reads and discards after refusing a push: what the peer could have staged.
const DRAIN_BYTES: usize = MAX_STAGED_BYTES;

struct Open {
    serving: Arc<Serving>,
    channel: Channel,
    session: ServerSession<Mailbox>,
    /// This connection's share of the staging budget: what it holds of the peer's pushes.
    staging: Reservation,
    /// Close once the pending output is sent.
    closing: bool,
    /// The process's commit count when the client's last pull was planned.
    pulled_at: u64,
    /// The process's control change count when the client last got control entries.
    control_at: u64,
    /// The last thing sent was `PullDone` and the client said nothing since: it is waiting
    /// (live mode), so a `Notify` is welcome (never while it pushes: it would be unexpected).
    idle_after_pull: bool,
    /// What the peer is known to cover: its hello and pull vectors, merged with what each
    /// completed pull sent it (for the status page's "pending" per device).
    seen: VersionVector,
    /// Control entries the peer sent in this session (bounded by [`MAX_CONTROL_ENTRIES`]).
    control_entries: usize,
}

enum State {
    Handshake(Box<Responder>),
    Open(Box<Open>),
    /// A push was refused and the peer told why; what it still sends is discarded until it
    /// closes or the deadline (monotonic ms) passes, then the relay ends with `why`.
    Draining {
        until_ms: u64,
        left: usize,
        why: Option<ConnectionError>,
    },
    Closed,
}

/// One connection's relay.
pub struct Relay {
    serving: Arc<Serving>,
    /// Admission, during the handshake only (its allowlist connection goes back to the pool).
    gate: Option<AllowlistGate>,
    state: State,
    out: Vec<u8>,
    /// The peer's key, once the handshake proved it.
    peer_key: Option<PublicKey>,
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
    /// A relay for a new connection accepted at `now`, waiting for the first handshake
    /// message; `ephemeral` seeds the handshake (fresh randomness for every connection). Takes
    /// an allowlist connection for the handshake.
    pub fn new(
        serving: Arc<Serving>,
        ephemeral: Ephemeral,
        now: Time,
    ) -> Result<Relay, ConnectionError> {
        let allowlist = serving
            .take_allowlist()
            .map_err(ConnectionError::Allowlist)?;
        // A two-part code's admission is judged by this box's key directory (`minters.rs`).
        let own = serving.identity().site;
        let lookup = serving.clone();
        let gate = AllowlistGate::new(allowlist, now.unix_secs()).with_admissions(
            own,
            Box::new(move |site| {
                let mut mailbox = lookup.take_mailbox().ok()?;
                let found = crate::minters::minter(&mut mailbox, own, site);
                lookup.give_mailbox(mailbox);
                found.unwrap_or_else(|e| {
                    log::warn!("reading the key directory for a code's minter: {e}");
                    None
                })
            }),
        );
        let responder = Responder::new(
            ResponderConfig {
                identity: serving.keypair().clone(),
                site: serving.identity().site,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            },
            ephemeral,
            serving.limits(),
            now.monotonic_ms,
        );
        Ok(Relay {
            serving,
            gate: Some(gate),
            state: State::Handshake(Box::new(responder)),
            out: Vec::new(),
            peer_key: None,
            peer_site: None,
            seen: VersionVector::new(),
        })
    }

    /// What the peer the handshake just authenticated may push: only a hub enrolled with the
    /// cloud relays other origins; every other peer pushes its own changes only.
    fn peer_pushes(&self, peer: &Peer) -> Result<(PushOrigins, Option<Device>), AllowlistError> {
        // The gate lives as long as the handshake; without it, the narrowest rule.
        let Some(gate) = &self.gate else {
            return Ok((PushOrigins::Own, None));
        };
        let enrolled = gate.allowlist().authorize(peer.key.as_bytes())?;
        Ok((
            match (self.serving.role(), enrolled.role) {
                (PeerRole::Cloud, Role::Hub) => PushOrigins::Relayed,
                _ => PushOrigins::Own,
            },
            Some(enrolled),
        ))
    }

    /// Writes this box's Key and Grant entries for the admitted peer unless its stream already
    /// says so: before the session's first message, so a hub's own entries that follow its
    /// hello find it certified. A hub binds devices only. A failure is logged, not fatal: the
    /// entries are written at the peer's next session (meanwhile what it relays is refused as
    /// `KeyUnknown`, retry later).
    fn certify(&self, peer: &Peer, enrolled: Option<&Device>) {
        let Some(enrolled) = enrolled else {
            return;
        };
        let role = match (self.serving.role(), enrolled.role) {
            (_, Role::Device) => PeerRole::Device,
            (PeerRole::Cloud, Role::Hub) => PeerRole::Hub,
            _ => return,
        };
        let r = self.serving.take_mailbox().and_then(|mut m| {
            let r = m
                .certify(peer.site, &peer.key, role, false)
                .and_then(|key| {
                    let grant = &enrolled.grant;
                    Ok(m.grant_scopes(peer.site, &grant.scopes, grant.enroll)?
                        .or(key))
                });
            if r.is_ok() {
                self.serving.give_mailbox(m);
            }
            r
        });
        match r {
            Ok(Some(seq)) => {
                log::info!(
                    "control: entry {seq}: site={} key={} as {}",
                    peer.site,
                    peer.key.fingerprint(),
                    match role {
                        PeerRole::Hub => "hub",
                        _ => "device",
                    }
                );
                // News for the box's own uplink too: a hub's live uplink session ends and the
                // next one takes the entry to the cloud (which answers with the new device's
                // key envelope in a sealed tenant) without waiting for the live window's end.
                self.serving.note_commit();
            }
            Ok(None) => {}
            Err(e) => log::warn!("control: certifying site={}: {e}", peer.site),
        }
    }

    /// The scopes `site` is granted, as this relay's directory says (docs/design.md section 10):
    /// the streams a session serves it and a device's pushes may hold. A peer without a grant
    /// entry holds every scope (the default grant, `*`); a directory that cannot be read grants
    /// the unscoped stream only, so a failure never widens what is served.
    fn peer_grant(&self, site: &SiteId) -> Scopes {
        let read = self.serving.take_mailbox().and_then(|mut m| {
            let scopes = grant_in(&mut m, site)?;
            self.serving.give_mailbox(m);
            Ok(scopes)
        });
        read.unwrap_or_else(|e| {
            log::warn!(
                "control: reading the grant of site={site}: {e}; serving unscoped tables only"
            );
            Scopes::Only(Default::default())
        })
    }

    /// Ends the relay, keeping what it learnt of the peer's vector.
    fn close(&mut self) {
        self.end_handshake();
        if let State::Open(open) = std::mem::replace(&mut self.state, State::Closed) {
            self.seen = open.seen;
        }
    }

    /// The handshake is over: its allowlist connection goes back to the pool.
    fn end_handshake(&mut self) {
        if let Some(gate) = self.gate.take() {
            self.serving.give_allowlist(gate.into_allowlist());
        }
    }

    /// A push was refused (`why`): the peer was told; discard what it still sends until it
    /// closes, for at most [`DRAIN_MS`] from `now` and [`DRAIN_BYTES`].
    fn drain(&mut self, why: ConnectionError, now: u64) {
        self.close();
        self.state = State::Draining {
            until_ms: now.saturating_add(DRAIN_MS),
            left: DRAIN_BYTES,
            why: Some(why),
        };
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
    pub fn output(&mut self) -> Result<Vec<u8>, ConnectionError> {
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
            State::Draining { .. } | State::Closed => {}
        }
        Ok(out)
    }

    /// Periodic work while the peer is silent: in live mode, queues a `Notify` when other
    /// connections committed since this client's last pull. Send [`Relay::output`] after.
    pub fn tick(&mut self) {
        if let State::Open(open) = &mut self.state {
            let control = open.serving.control_changes();
            if open.idle_after_pull && control != open.control_at && !open.closing {
                // Entries written while the peer stays connected (a revocation, a grant): sent
                // now, not at its next session. Failing that, they go at the next change or
                // session; the connection goes on.
                open.control_at = control;
                match open.serving.take_mailbox() {
                    Ok(mut mailbox) => {
                        match open.session.send_control(&mut mailbox) {
                            Ok(n) if n > 0 => log::info!("sent {n} new control entries"),
                            Ok(_) => {}
                            Err(e) => log::warn!("sending new control entries: {e}"),
                        }
                        // A regrant takes effect in this session: a widened grant is pulled at
                        // once (the notify below), a narrowed one is no longer served.
                        let site = open.channel.peer().site;
                        match grant_in(&mut mailbox, &site) {
                            Ok(grant) => {
                                let shown = grant.to_string();
                                if open.session.set_peer_grant(grant) {
                                    log::info!("peer site={site} regranted: {shown}");
                                    // As if another connection committed: the peer is told to
                                    // pull (a widened grant has streams it lacks).
                                    open.pulled_at = open.pulled_at.wrapping_sub(1);
                                }
                            }
                            Err(e) => log::warn!("reading the grant of site={site}: {e}"),
                        }
                        open.serving.give_mailbox(mailbox);
                    }
                    Err(e) => log::warn!("sending new control entries: {e}"),
                }
            }
            let commits = open.serving.commits();
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

    /// Consumes `input`, received at `time` (everything; bytes past a completed handshake go to
    /// the channel).
    pub fn receive(&mut self, mut input: &[u8], time: Time) -> Result<Event, ConnectionError> {
        let now = time.monotonic_ms;
        let mut event = Event::Continue;
        loop {
            match &mut self.state {
                State::Closed => return Ok(Event::Close),
                State::Draining {
                    until_ms,
                    left,
                    why,
                } => {
                    if now <= *until_ms && input.len() <= *left {
                        *left -= input.len();
                        return Ok(Event::Continue);
                    }
                    let why = why.take();
                    self.state = State::Closed;
                    return why.map_or(Ok(Event::Close), Err);
                }
                State::Handshake(responder) => {
                    let Some(gate) = self.gate.as_mut() else {
                        // The gate lives exactly as long as the handshake state.
                        self.state = State::Closed;
                        return Ok(Event::Close);
                    };
                    gate.set_now(time.unix_secs());
                    match responder.receive(&mut input, now, gate) {
                        Ok(None) => return Ok(event),
                        Ok(Some(channel)) => {
                            self.out.extend(responder.take_outgoing());
                            let (peer_pushes, enrolled) = match self.peer_pushes(channel.peer()) {
                                Ok(p) => p,
                                Err(e) => {
                                    self.state = State::Closed;
                                    return Err(ConnectionError::Allowlist(e));
                                }
                            };
                            self.certify(channel.peer(), enrolled.as_ref());
                            self.end_handshake();
                            let staging = self.serving.staging().reserve();
                            let session = ServerSession::new(ServerConfig {
                                site: self.serving.identity().site,
                                role: self.serving.role(),
                                // The relay is schema-free: it never checks configurations.
                                fingerprint: None,
                                peer_site: channel.peer().site,
                                peer_key: channel.peer().key,
                                peer_pushes,
                                peer_grant: self.peer_grant(&channel.peer().site),
                                // Trusted time, or 0: a hub's own clock is no time source.
                                wall_clock_ms: self.serving.hello_clock_ms(time.unix_ms),
                                max_clock_ahead_ms: outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS,
                                stage_ttl_ms: STAGE_TTL_MS,
                                // A push larger than the whole budget could never be staged:
                                // the session refuses it as too large rather than busy.
                                max_staged_bytes: MAX_STAGED_BYTES
                                    .min(self.serving.staging().limit()),
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
                            self.peer_key = Some(peer.key);
                            self.peer_site = Some(peer.site);
                            self.state = State::Open(Box::new(Open {
                                serving: self.serving.clone(),
                                channel,
                                session,
                                staging,
                                closing: false,
                                pulled_at: 0,
                                // What the hello brings covers every change before this one.
                                control_at: self.serving.control_changes(),
                                idle_after_pull: false,
                                seen: VersionVector::new(),
                                control_entries: 0,
                            }));
                        }
                        Err(e) => {
                            // The responder may hold a refusal the peer can authenticate.
                            self.out.extend(responder.take_outgoing());
                            self.close();
                            return Err(ConnectionError::Handshake(e));
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
                            if e.is_refused_push() {
                                self.drain(e, now);
                                Ok(event)
                            } else {
                                self.close();
                                Err(e)
                            }
                        }
                    };
                }
            }
        }
    }

    /// The peer ended the stream.
    pub fn finish(&mut self) -> Result<(), ConnectionError> {
        if let State::Draining { why, .. } = &mut self.state {
            let why = why.take();
            self.state = State::Closed;
            return why.map_or(Ok(()), Err);
        }
        if let State::Open(open) = &mut self.state {
            let r = open.channel.finish().map_err(ConnectionError::Channel);
            if r.is_ok() && !open.session.is_done() && open.session.peer_hello().is_some() {
                log::debug!("peer ended the stream without Bye");
            }
            self.close();
            return r;
        }
        self.close();
        Ok(())
    }

    /// Records in the allowlist that the authenticated peer had a session ending at `now`, and
    /// the vector it is known to cover (for the status's "pending"). Failures are logged, not
    /// returned: they lose bookkeeping only, never data. Does nothing before authentication.
    pub fn record_peer(&mut self, now: Time) {
        let Some(key) = self.peer_key else {
            return;
        };
        let allowlist = match self.serving.take_allowlist() {
            Ok(a) => a,
            Err(e) => {
                log::warn!("recording last seen: {e}");
                return;
            }
        };
        let mut ok = true;
        if let Err(e) = allowlist.touch(key.as_bytes(), now.unix_secs()) {
            log::warn!("recording last seen: {e}");
            ok = false;
        }
        if let Some(site) = self.peer_site {
            let vector = match &self.state {
                State::Open(open) => &open.seen,
                _ => &self.seen,
            };
            if let Err(e) = allowlist.record_vector(&site, vector) {
                log::warn!("recording the device's vector: {e}");
                ok = false;
            }
        }
        if ok {
            self.serving.give_allowlist(allowlist);
        }
    }
}

impl ConnectionError {
    /// A push refused for size or memory: the peer was told, and is probably still sending it.
    fn is_refused_push(&self) -> bool {
        matches!(
            self,
            ConnectionError::Staging(_) | ConnectionError::Session(SessionError::TooLarge { .. })
        )
    }
}

impl Open {
    /// Decodes and handles every whole message in `input`. A session error queues its `Error`
    /// message (when it has one) and marks the relay closing; a channel error closes at once
    /// without a word to the peer (docs/design.md section 7).
    fn receive(&mut self, input: &mut &[u8], now: u64) -> Result<(), ConnectionError> {
        let mut mailbox = None;
        let r = self.receive_with(input, now, &mut mailbox);
        // A mailbox connection whose last use failed is dropped, not reused.
        if let (Some(m), Ok(())) = (mailbox, &r) {
            self.serving.give_mailbox(m);
        }
        r
    }

    /// [`Open::receive`], taking a mailbox connection into `mailbox` when a message needs one.
    fn receive_with(
        &mut self,
        input: &mut &[u8],
        now: u64,
        mailbox: &mut Option<Mailbox>,
    ) -> Result<(), ConnectionError> {
        while !input.is_empty() && !self.closing {
            let got = self
                .channel
                .receive(input, now)
                .map_err(ConnectionError::Channel)?;
            let Some(bytes) = got else {
                // A message still arriving: its parts are held from one read to the next.
                return self.hold(self.session.staged_bytes() + self.channel.receiving());
            };
            // A message of several frames was counted as it arrived; decoding copies its batch
            // out, so both copies are held until the raw one is dropped. (A one-frame message,
            // such as a `Commit`, is handled at once and counts for nothing.)
            if bytes.len() > MAX_PLAINTEXT_LEN {
                self.hold(self.session.staged_bytes() + 2 * bytes.len())?;
            }
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
                    return Err(ConnectionError::BadMessage(e));
                }
            };
            match &msg {
                // An id request follows the pull: the client is still caught up, so a commit
                // made meanwhile must still be notified.
                Message::Ping { .. } | Message::Pong { .. } | Message::IdRequest(_) => {}
                Message::Pull { vector } => {
                    self.pulled_at = self.serving.commits();
                    self.idle_after_pull = false;
                    self.seen.merge(vector);
                }
                Message::Hello(hello) => {
                    self.idle_after_pull = false;
                    self.seen.merge(&hello.vector);
                }
                _ => self.idle_after_pull = false,
            }
            drop(bytes);
            // A pushed batch stays in memory until `Commit`: count it before it is staged. Other
            // messages are handled at once and count for nothing (a `Commit` arriving while the
            // budget is full must still go through: it gives memory back).
            let pushed = match &msg {
                Message::Push { batch, .. } => batch.0.len(),
                _ => 0,
            };
            self.hold(self.session.staged_bytes() + pushed)?;
            if let Message::Control { entries } = &msg {
                self.control_entries += entries.len();
                if self.control_entries > MAX_CONTROL_ENTRIES {
                    // Entries are never a reason to fail a session: the rest of this one's are
                    // dropped unread, and the writer's stream brings them again.
                    log::warn!(
                        "peer sent more than {MAX_CONTROL_ENTRIES} control entries in one \
                         session: the rest dropped unread"
                    );
                    continue;
                }
            }
            let store = match mailbox {
                Some(m) => m,
                None => mailbox.insert(
                    self.serving
                        .take_mailbox()
                        .map_err(ConnectionError::Mailbox)?,
                ),
            };
            let handled = self.session.handle(msg, now, store);
            // The message is handled: what stays held is the session's staging (less than
            // what was reserved for the message, so this never grows).
            let _ = self.staging.resize(self.session.staged_bytes());
            if let Err(e) = handled {
                if let SessionError::ClockAhead { .. } = e {
                    // Nothing of the push is stored: the count is what status shows of it.
                    if let Err(m) = store.note_clock_ahead_refused() {
                        log::warn!("could not count a clock-ahead refusal: {m}");
                    }
                }
                self.fail(&e);
                return Err(ConnectionError::Session(e));
            }
            // Seal this message's answers before handling the next one, so an error in a
            // later message cannot discard them (the session drops its queue on error).
            self.seal(store)?;
            if self.session.is_done() {
                self.closing = true;
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: &SessionError) {
        if let Some(m) = e.to_message() {
            let _ = self.channel.send(&m.encode());
        }
        self.closing = true;
    }

    /// Holds `bytes` of the staging budget for the peer's pushes from now on; when the budget
    /// cannot give them, tells the peer ([`Open::refuse`]).
    fn hold(&mut self, bytes: usize) -> Result<(), ConnectionError> {
        self.staging.resize(bytes).map_err(|full| {
            self.refuse(full);
            ConnectionError::Staging(full)
        })
    }

    /// Tells the peer its push was refused for memory (busy, or too large for the budget).
    fn refuse(&mut self, full: StagingFull) {
        let code = if full.exceeds_budget() {
            ErrorCode::TooLarge
        } else {
            ErrorCode::Busy
        };
        let message = Message::Error {
            code,
            message: full.to_string(),
        };
        let _ = self.channel.send(&message.encode());
        self.closing = true;
    }

    /// Seals what the session has to say into the channel, until about [`OUTPUT_WINDOW`] bytes
    /// wait there.
    fn seal(&mut self, mailbox: &mut Mailbox) -> Result<(), ConnectionError> {
        while self.channel.queued() < OUTPUT_WINDOW && !self.closing {
            match self.session.poll(mailbox) {
                Ok(Some(m)) => {
                    match &m {
                        Message::Ack { .. } => self.serving.note_commit(),
                        Message::PullDone { vector } => {
                            self.idle_after_pull = true;
                            self.seen.merge(vector);
                        }
                        Message::IdGrant(g) if g.ranges.is_empty() => {
                            self.serving.note_id_shortfall();
                        }
                        _ => {}
                    }
                    self.channel
                        .send(&m.encode())
                        .map_err(ConnectionError::Channel)?
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(&e);
                    return Err(ConnectionError::Session(e));
                }
            }
        }
        Ok(())
    }

    /// [`Open::seal`] with a mailbox connection taken for the call (none when the session has
    /// nothing to say: an idle live session's ticks touch no pool), then hands the sealed bytes
    /// to `out` (also after an error: they may end with the `Error` message).
    fn pump(&mut self, out: &mut Vec<u8>) -> Result<(), ConnectionError> {
        let r = if self.session.has_output() && !self.closing {
            match self.serving.take_mailbox() {
                Ok(mut mailbox) => {
                    let r = self.seal(&mut mailbox);
                    if r.is_ok() {
                        self.serving.give_mailbox(mailbox);
                    }
                    r
                }
                Err(e) => {
                    self.closing = true;
                    Err(ConnectionError::Mailbox(e))
                }
            }
        } else {
            Ok(())
        };
        out.extend(self.channel.take_outgoing());
        r
    }
}

/// The scopes `site` is granted in `mailbox`'s directory (no grant entry: every scope).
fn grant_in(mailbox: &mut Mailbox, site: &SiteId) -> Result<Scopes, MailboxError> {
    Ok(mailbox
        .directory()?
        .grant_of(site)
        .map_or(Scopes::All, |g| g.scopes.clone()))
}
