//! TCP to a peer, the Noise handshake, and the encrypted message channel, over blocking std
//! sockets with connect, read and write timeouts. The protocol crate does the work (sans-I/O
//! `Initiator` and `Channel`); this file only moves bytes and reads the monotonic clock.

use super::SyncError;
use outpost_protocol::channel::{Channel, Limits};
use outpost_protocol::handshake::{
    Ephemeral, HandshakeError, Initiator, InitiatorConfig, Keypair, PublicKey, Purpose,
};
use outpost_protocol::message::Message;
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long to wait: per address for a connection, and for each read or write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            io: Duration::from_secs(30),
        }
    }
}

/// Connects to the first address that accepts; `Err` lists every address tried and why.
pub(crate) fn connect(
    addresses: &[String],
    t: Timeouts,
) -> Result<(TcpStream, String), Vec<(String, String)>> {
    let mut tried = Vec::new();
    for a in addresses {
        let resolved = match a.to_socket_addrs() {
            Ok(r) => r.collect::<Vec<_>>(),
            Err(e) => {
                tried.push((a.clone(), format!("cannot resolve: {e}")));
                continue;
            }
        };
        if resolved.is_empty() {
            tried.push((a.clone(), "resolves to no address".into()));
        }
        for sa in resolved {
            match TcpStream::connect_timeout(&sa, t.connect) {
                Ok(s) => {
                    let ok = s.set_read_timeout(Some(t.io)).is_ok()
                        && s.set_write_timeout(Some(t.io)).is_ok()
                        && s.set_nodelay(true).is_ok();
                    if ok {
                        return Ok((s, a.clone()));
                    }
                    tried.push((a.clone(), "cannot set socket timeouts".into()));
                }
                Err(e) => tried.push((a.clone(), describe(&e))),
            }
        }
    }
    Err(tried)
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".into(),
        _ => e.to_string(),
    }
}

/// An open, authenticated connection: sends and receives whole session messages.
pub(crate) struct Link {
    stream: TcpStream,
    channel: Channel,
    start: Instant,
    pending: Vec<u8>,
    peer: String,
    max_message: usize,
}

/// What the handshake needs besides the stream.
pub(crate) struct Hello<'a> {
    pub identity: &'a Keypair,
    pub site: SiteId,
    pub counter: u64,
    pub peer_key: PublicKey,
    pub peer_site: SiteId,
    pub purpose: Purpose,
    /// How errors name the peer.
    pub peer: String,
    pub address: String,
}

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

fn io_err(peer: &str, e: std::io::Error) -> SyncError {
    SyncError::Connection {
        peer: peer.to_string(),
        detail: match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                "the peer stopped answering (timed out)".into()
            }
            _ => e.to_string(),
        },
    }
}

/// Runs the handshake on `stream` (message 1 is sent here: the counter must be committed).
pub(crate) fn handshake(mut stream: TcpStream, h: Hello) -> Result<Link, SyncError> {
    let start = Instant::now();
    let limits = Limits::default();
    let config = InitiatorConfig {
        identity: h.identity.clone(),
        site: h.site,
        counter: h.counter,
        responder_key: h.peer_key,
        responder_site: h.peer_site,
        purpose: h.purpose,
        version: PROTOCOL_VERSION,
    };
    let ephemeral = Ephemeral::from_os()
        .map_err(|e| SyncError::Argument(format!("no randomness for the handshake: {e}")))?;
    let mut init = Initiator::start(&config, ephemeral, limits, 0).map_err(SyncError::Handshake)?;
    stream
        .write_all(&init.take_outgoing())
        .map_err(|e| io_err(&h.peer, e))?;
    let mut buf = [0u8; 1024];
    let mut received = 0usize;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) if received == 0 => {
                // A responder that cannot read message 1 (it lacks the pinned key) closes
                // without a word; every other refusal is answered (an unknown token too, keyed
                // with a random psk). So this is the wrong peer, or a cut.
                return Err(SyncError::Unanswered {
                    peer: h.peer,
                    address: h.address,
                });
            }
            Ok(0) => {
                return Err(SyncError::Connection {
                    peer: h.peer,
                    detail: "closed in the middle of the handshake".into(),
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Closed with message 1 partly unread: the same silent refusal.
            Err(e) if received == 0 && e.kind() == ErrorKind::ConnectionReset => {
                return Err(SyncError::Unanswered {
                    peer: h.peer,
                    address: h.address,
                })
            }
            Err(e) => return Err(io_err(&h.peer, e)),
        };
        received += n;
        let mut input = &buf[..n];
        match init.receive(&mut input, now_ms(start)) {
            Ok(Some(mut channel)) => {
                // Enrollment: message 3 (the token proof) is the channel's first frame.
                let out = channel.take_outgoing();
                if !out.is_empty() {
                    stream.write_all(&out).map_err(|e| io_err(&h.peer, e))?;
                }
                return Ok(Link {
                    stream,
                    channel,
                    start,
                    pending: input.to_vec(),
                    peer: h.peer,
                    max_message: limits.max_message,
                });
            }
            Ok(None) => {}
            Err(HandshakeError::KeyMismatch) => {
                return Err(SyncError::KeyMismatch {
                    peer: h.peer,
                    address: h.address,
                })
            }
            Err(HandshakeError::Refused(refusal)) => {
                return Err(SyncError::Refused {
                    peer: h.peer,
                    refusal,
                })
            }
            Err(HandshakeError::EnrollmentRefused) => {
                return Err(SyncError::EnrollmentRefused { expired_at: None })
            }
            Err(e) => return Err(SyncError::Handshake(e)),
        }
    }
}

impl Link {
    /// Seals and sends one message.
    pub(crate) fn send(&mut self, msg: &Message) -> Result<(), SyncError> {
        self.channel
            .send(&msg.encode())
            .map_err(SyncError::Channel)?;
        let out = self.channel.take_outgoing();
        self.stream
            .write_all(&out)
            .map_err(|e| io_err(&self.peer, e))
    }

    /// Waits for the next whole message.
    pub(crate) fn recv(&mut self) -> Result<Message, SyncError> {
        self.recv_inner(false)
            .and_then(|m| m.ok_or_else(|| io_err(&self.peer, ErrorKind::TimedOut.into())))
    }

    /// Waits at most `wait` (rounded up to 1 ms) for the next whole message: `None` when none
    /// completed in time. Bytes of a message partly received stay buffered for the next call.
    /// The read timeout is restored to `io` afterwards.
    pub(crate) fn recv_within(
        &mut self,
        wait: Duration,
        io: Duration,
    ) -> Result<Option<Message>, SyncError> {
        let wait = wait.max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(|e| io_err(&self.peer, e))?;
        let r = self.recv_inner(true);
        let restored = self.stream.set_read_timeout(Some(io));
        let m = r?;
        restored.map_err(|e| io_err(&self.peer, e))?;
        Ok(m)
    }

    /// One message; with `timeout_is_none`, a read timeout returns `Ok(None)`.
    fn recv_inner(&mut self, timeout_is_none: bool) -> Result<Option<Message>, SyncError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !self.pending.is_empty() {
                let mut input = &self.pending[..];
                let r = self.channel.receive(&mut input, now_ms(self.start));
                let used = self.pending.len() - input.len();
                self.pending.drain(..used);
                match r.map_err(SyncError::Channel)? {
                    Some(bytes) => {
                        return Message::decode(&bytes, self.max_message)
                            .map(Some)
                            .map_err(SyncError::Message)
                    }
                    None => debug_assert!(self.pending.is_empty()),
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    let detail = match self.channel.finish() {
                        Err(e) => format!("the connection was cut: {e}"),
                        Ok(()) => "the peer closed the connection".into(),
                    };
                    return Err(SyncError::Connection {
                        peer: self.peer.clone(),
                        detail,
                    });
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if timeout_is_none
                        && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(io_err(&self.peer, e)),
            }
        }
    }

    /// Closes the connection (both directions).
    pub(crate) fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
