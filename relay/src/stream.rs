//! Driving a [`Relay`] over a blocking byte stream: a `TcpStream` through
//! [`crate::listener::Conn`], or the hub's own stack through its bridged connections, so the same
//! code runs over std sockets and over embassy-net.
//!
//! The driver is the relay's only contact with the outside: it reads the stream, reads the clocks
//! ([`Serving::now`]) and the system's random source, and hands all of it to the machine.

use crate::admission::Busy;
use crate::connection::{ConnectionError, Event, Relay};
use crate::serving::Serving;
use outpost_protocol::handshake::{Ephemeral, PublicKey, BUSY_NOTICE};
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// How often an idle connection checks for news to notify (live mode). A check is one atomic
/// load, so a short tick costs an idle live connection 20 timed-out reads a second; it bounds how
/// long a commit waits before the other live peers are told (a blocked socket read cannot be
/// woken by another thread's commit without a second descriptor to poll).
pub const NOTIFY_TICK: Duration = Duration::from_millis(50);

/// Bytes read from the stream at a time. Each connection's thread keeps its buffer for the
/// connection's life, an idle live session included, so it is small: 16 KiB reads cost a bulk
/// push a few more calls per 64 KiB frame, and save every live session 48 KiB
/// (docs/performance.md, "Hub memory per live session").
const READ_BUF: usize = 16 * 1024;

/// Something a relay can run over: a blocking byte stream that can register its peer's key for
/// revocation.
pub trait Stream: Read + Write {
    /// The peer proved `key`: from now on, revoking it must end this stream. An error holding a
    /// [`Busy`] ([`Busy::into_io`]) refuses the session for load: the peer is sent the busy
    /// notice instead of the handshake's reply.
    fn authenticated(&mut self, key: &PublicKey) -> std::io::Result<()>;

    /// Asks reads to return `WouldBlock` every `tick` without data (for live-mode notifications).
    /// A stream that cannot does nothing here: its clients then learn of news at their next pull.
    fn set_tick(&mut self, _tick: Duration) {}
}

/// Writes everything the relay has to send, a window at a time.
fn send_output(relay: &mut Relay, stream: &mut dyn Stream) -> Result<(), ConnectionError> {
    loop {
        let (bytes, failed) = match relay.output() {
            Ok(b) => (b, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        if !bytes.is_empty() {
            stream
                .write_all(&bytes)
                .and_then(|()| stream.flush())
                .map_err(ConnectionError::Write)?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if bytes.is_empty() {
            return Ok(());
        }
    }
}

/// Serves one accepted connection of `serving` over `stream` until either side ends: a fresh
/// [`Relay`] (seeded from the system's random source), run by [`serve_stream`].
pub fn serve_connection(
    serving: &Arc<Serving>,
    stream: &mut dyn Stream,
) -> Result<(), ConnectionError> {
    let ephemeral = Ephemeral::from_os().map_err(ConnectionError::Seed)?;
    let mut relay = Relay::new(serving.clone(), ephemeral, serving.now())?;
    serve_stream(&mut relay, serving, stream)
}

/// Runs `relay` (a relay of `serving`) over `stream` until either side ends, then, if the peer
/// was authenticated and registered, records it in the allowlist ([`Relay::record_peer`]).
pub fn serve_stream(
    relay: &mut Relay,
    serving: &Serving,
    stream: &mut dyn Stream,
) -> Result<(), ConnectionError> {
    let mut buf = vec![0u8; READ_BUF];
    let mut authenticated = false;
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
            Err(e) => break Err(ConnectionError::Read(e)),
        };
        let event = relay.receive(&buf[..n], serving.now());
        // The session's slot is claimed before the handshake's reply goes out, so a peer
        // refused for load gets the busy notice instead of the reply.
        if let Ok(Event::Authenticated(k)) = &event {
            if let Err(e) = stream.authenticated(k) {
                if Busy::of_io(&e).is_some() {
                    let _ = stream.write_all(&BUSY_NOTICE).and_then(|()| stream.flush());
                }
                return Err(ConnectionError::Register(e));
            }
            stream.set_tick(NOTIFY_TICK);
            authenticated = true;
        }
        if let Err(e) = send_output(relay, stream) {
            break Err(e);
        }
        match event {
            Ok(Event::Continue) | Ok(Event::Authenticated(_)) => {}
            Ok(Event::Close) => break Ok(()),
            Err(e) => break Err(e),
        }
        if relay.is_closed() {
            break Ok(());
        }
    };
    if authenticated {
        relay.record_peer(serving.now());
    }
    result
}
