//! [`Link`]: an authenticated, encrypted connection to a peer over a blocking [`Wire`], carrying
//! whole session messages.
//!
//! The protocol crate does the work (the sans-I/O `Initiator` and `Channel`); this file moves
//! bytes, reads the monotonic clock for the channel's deadlines, and turns what the stream does
//! into [`LinkError`]s: a close before any reply to message 1 is [`LinkError::Unanswered`] (a
//! responder that cannot read it says nothing), a close inside a frame or a chunked message is
//! [`LinkError::Cut`], a close between messages [`LinkError::Closed`]. The peer's busy notice
//! (`handshake::BUSY_NOTICE`, sent instead of the reply to message 1, or, after an enrollment's
//! message 3, instead of the first message) is [`LinkError::Busy`].

use crate::error::{Endpoint, LinkError};
use crate::wire::Wire;
use outpost_protocol::channel::{Channel, Limits};
use outpost_protocol::handshake::{
    Ephemeral, HandshakeError, Initiator, InitiatorConfig, BUSY_NOTICE,
};
use outpost_protocol::message::Message;
use outpost_protocol::session::{ClientSession, ClientStore, SessionError};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

/// Bytes read from the stream at once after the handshake (a frame is at most 64 KiB).
const READ_BUF: usize = 64 * 1024;
/// The handshake's reply is one small frame.
const HANDSHAKE_BUF: usize = 1024;

/// An open, authenticated connection: sends and receives whole session messages.
pub struct Link<W: Wire> {
    wire: W,
    channel: Channel,
    /// The origin of the channel's milliseconds.
    start: Instant,
    /// Bytes read but not yet fed to the channel.
    pending: Vec<u8>,
    buf: Vec<u8>,
    max_message: usize,
    /// Per read: the peer must answer within this.
    io: Duration,
    /// The read timeout the wire has now (set only when it changes).
    read_timeout: Duration,
    /// When bytes last arrived (a message in progress counts: the peer is alive).
    heard: Instant,
    /// No message has arrived yet: the peer's busy notice may still come instead of one (an
    /// enrollment is admitted before the session's slot is, see [`LinkError::Busy`]).
    first: bool,
    at: Endpoint,
}

impl<W: Wire> std::fmt::Debug for Link<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("at", &self.at)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<W: Wire> Link<W> {
    /// Runs the initiator's handshake on `wire`, whose reads and writes already time out after
    /// `io` (message 1 is sent here: the caller has persisted `config.counter`). `ephemeral`
    /// is this handshake's fresh randomness. In enrollment, message 3 (the token proof) is sent
    /// too, as the channel's first frame.
    pub fn open(
        mut wire: W,
        at: Endpoint,
        config: &InitiatorConfig,
        ephemeral: Ephemeral,
        io: Duration,
    ) -> Result<Link<W>, LinkError> {
        let start = Instant::now();
        let limits = Limits::default();
        let mut init = Initiator::start(config, ephemeral, limits, 0).map_err(|error| {
            LinkError::Handshake {
                at: at.clone(),
                error,
            }
        })?;
        wire.write_all(&init.take_outgoing())
            .map_err(|e| LinkError::io(&at, e))?;
        let mut buf = [0u8; HANDSHAKE_BUF];
        let mut received = 0usize;
        loop {
            let n = match wire.read(&mut buf) {
                // A responder that cannot read message 1 (it lacks the pinned key) closes
                // without a word; every other refusal is answered (an unknown token too, keyed
                // with a random psk). So this is the wrong peer, or a cut.
                Ok(0) if received == 0 => return Err(LinkError::Unanswered { at }),
                Ok(0) => return Err(LinkError::HandshakeCut { at }),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Closed with message 1 partly unread: the same silent refusal.
                Err(e) if received == 0 && e.kind() == ErrorKind::ConnectionReset => {
                    return Err(LinkError::Unanswered { at })
                }
                Err(e) => return Err(LinkError::io(&at, e)),
            };
            received += n;
            let mut input = &buf[..n];
            match init.receive(&mut input, elapsed_ms(start)) {
                Ok(Some(mut channel)) => {
                    let out = channel.take_outgoing();
                    if !out.is_empty() {
                        wire.write_all(&out).map_err(|e| LinkError::io(&at, e))?;
                    }
                    return Ok(Link {
                        wire,
                        channel,
                        start,
                        pending: input.to_vec(),
                        buf: vec![0u8; READ_BUF],
                        max_message: limits.max_message,
                        io,
                        read_timeout: io,
                        heard: Instant::now(),
                        first: true,
                        at,
                    });
                }
                Ok(None) => {}
                Err(HandshakeError::Busy) => return Err(LinkError::Busy { at }),
                Err(error) => return Err(LinkError::Handshake { at, error }),
            }
        }
    }

    /// The peer, as errors name it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.at
    }

    /// When bytes from the peer last arrived (the handshake's reply at first), whether or not
    /// they completed a message.
    pub fn last_heard(&self) -> Instant {
        self.heard
    }

    /// Seals and sends one message.
    pub fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        self.channel
            .send(&msg.encode())
            .map_err(|error| LinkError::Channel {
                at: self.at.clone(),
                error,
            })?;
        let out = self.channel.take_outgoing();
        self.wire
            .write_all(&out)
            .map_err(|e| LinkError::io(&self.at, e))
    }

    /// Waits for the next whole message; the peer must keep sending: each read waits at most
    /// the `io` timeout, then [`LinkError::TimedOut`].
    pub fn recv(&mut self) -> Result<Message, LinkError> {
        self.set_read_timeout(self.io)?;
        loop {
            if let Some(m) = self.decode_pending()? {
                return Ok(m);
            }
            match self.read() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(LinkError::TimedOut {
                        at: self.at.clone(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits at most `wait` (at least 1 ms) for the next whole message: `None` when none
    /// completed in time. Bytes of a message partly received stay buffered for the next call.
    pub fn recv_within(&mut self, wait: Duration) -> Result<Option<Message>, LinkError> {
        let wait = wait.max(Duration::from_millis(1));
        let deadline = Instant::now() + wait;
        // The first read waits `wait` itself: a caller polling at a steady interval changes
        // the socket's timeout once, not at every call.
        let mut timeout = wait;
        loop {
            if let Some(m) = self.decode_pending()? {
                return Ok(Some(m));
            }
            self.set_read_timeout(timeout)?;
            if !self.read()? {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.decode_pending();
            }
            timeout = left.max(Duration::from_millis(1));
        }
    }

    /// Sends everything `client` has to say now.
    pub fn send_queued<C: ClientStore>(
        &mut self,
        client: &mut ClientSession<C>,
        store: &mut C,
    ) -> Result<(), LinkError> {
        while let Some(m) = client
            .poll(store)
            .map_err(|e| LinkError::session(&self.at, e))?
        {
            if let Err(e) = self.send(&m) {
                return Err(self.refusal_behind(e, client, store));
            }
        }
        Ok(())
    }

    /// A server that refuses a message (a push outside the grant, a version it does not know)
    /// sends its error and closes, and a client still streaming its push then fails to write:
    /// the error already received says why, so it is reported rather than the broken pipe.
    fn refusal_behind<C: ClientStore>(
        &mut self,
        lost: LinkError,
        client: &mut ClientSession<C>,
        store: &mut C,
    ) -> LinkError {
        if !lost.is_lost_connection() {
            return lost;
        }
        match self.recv_within(Duration::from_millis(200)) {
            Ok(Some(m @ Message::Error { .. })) => match client.handle(m, store) {
                Err(e) => LinkError::session(&self.at, e),
                Ok(()) => lost,
            },
            _ => lost,
        }
    }

    /// Runs `client` until its session ends, or, in live mode, until it waits for `Notify`
    /// (its first pull and the id requests after it complete). `after` runs after each message
    /// handled, also when handling it failed (the store may have kept part of it).
    pub fn drive<C: ClientStore>(
        &mut self,
        client: &mut ClientSession<C>,
        store: &mut C,
        mut after: impl FnMut(&mut C),
    ) -> Result<(), LinkError> {
        loop {
            self.send_queued(client, store)?;
            if client.is_done() || client.is_live() {
                return Ok(());
            }
            let msg = self.recv()?;
            let handled = client.handle(msg, store);
            after(store);
            handled.map_err(|e| LinkError::session(&self.at, e))?;
        }
    }

    /// Tells the peer why this side ends the session (best effort: the connection may be gone
    /// already). Nothing is sent for the peer's own error.
    pub fn report(&mut self, error: &SessionError) {
        if let Some(m) = error.to_message() {
            // The session ends either way; a peer that cannot hear it sees the close.
            let _ = self.send(&m);
        }
    }

    /// Closes the connection (both directions).
    pub fn close(mut self) {
        self.wire.shutdown();
    }

    /// The next message from the bytes already read, if they complete one.
    fn decode_pending(&mut self) -> Result<Option<Message>, LinkError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        if self.first {
            // The notice is 8 plain bytes; a sealed frame is never shorter than its tag, so
            // a frame with this length prefix cannot be a real message.
            let n = self.pending.len().min(BUSY_NOTICE.len());
            if self.pending[..n] == BUSY_NOTICE[..n] {
                if n < BUSY_NOTICE.len() {
                    return Ok(None);
                }
                return Err(LinkError::Busy {
                    at: self.at.clone(),
                });
            }
        }
        let mut input = &self.pending[..];
        let r = self.channel.receive(&mut input, elapsed_ms(self.start));
        let used = self.pending.len() - input.len();
        self.pending.drain(..used);
        let bytes = r.map_err(|error| LinkError::Channel {
            at: self.at.clone(),
            error,
        })?;
        if bytes.is_some() {
            self.first = false;
        }
        match bytes {
            Some(bytes) => Message::decode(&bytes, self.max_message)
                .map(Some)
                .map_err(|error| LinkError::Message {
                    at: self.at.clone(),
                    error,
                }),
            None => Ok(None),
        }
    }

    /// One read into `pending`: `false` when it timed out. The end of the stream is an error:
    /// [`LinkError::Cut`] inside a frame or chunked message, else [`LinkError::Closed`].
    fn read(&mut self) -> Result<bool, LinkError> {
        loop {
            match self.wire.read(&mut self.buf) {
                Ok(0) => {
                    return Err(match self.channel.finish() {
                        Err(error) => LinkError::Cut {
                            at: self.at.clone(),
                            error,
                        },
                        Ok(()) => LinkError::Closed {
                            at: self.at.clone(),
                        },
                    })
                }
                Ok(n) => {
                    self.pending.extend_from_slice(&self.buf[..n]);
                    self.heard = Instant::now();
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(false)
                }
                Err(e) => return Err(LinkError::io(&self.at, e)),
            }
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), LinkError> {
        if timeout != self.read_timeout {
            self.wire
                .set_read_timeout(timeout)
                .map_err(|e| LinkError::io(&self.at, e))?;
            self.read_timeout = timeout;
        }
        Ok(())
    }
}

/// Milliseconds since `start`: the channel's clock.
fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}
