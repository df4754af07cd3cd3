//! The std-socket front of a serving box (the hub with `--net std:`, the cloud): a TCP listener,
//! one thread per admitted connection, and the limits that keep a small box alive under a
//! hostile LAN: admission ([`crate::admission`]: pending connections capped per address and in
//! all, authenticated sessions per key and in all, a busy notice for whoever is turned away), a
//! deadline for the whole handshake (not per read: a peer dribbling one byte at a time still
//! runs out), and an idle timeout once a session is up.
//!
//! What runs on a connection is a [`Handler`]; the boxes' is the relay
//! ([`crate::serve_connection`]). [`Conn`] is the stream as a handler sees it: `Read + Write`
//! with the deadlines applied, and [`Conn::authenticated`] to move the peer from the pending
//! pool to the sessions once the handshake proved its key, so that revoking the device ends the
//! session ([`LiveSessions::end_revoked`]). Sessions of the hub's own stack register in the same
//! [`LiveSessions`].

use crate::admission::{Arrival, Busy, FirstFrame, Pending};
use crate::allowlist::{Allowlist, AllowlistError};
use crate::stream::Stream;
use outpost_protocol::handshake::{PublicKey, BUSY_NOTICE};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::admission::Limits;

/// What runs on each accepted connection, on its own thread.
pub trait Handler: Send + Sync + 'static {
    /// Why a connection ended in error.
    type Error: fmt::Display;

    /// Serves one connection until it ends. An error is logged with the peer's address.
    fn handle(&self, conn: &mut Conn) -> Result<(), Self::Error>;
}

impl<F, E> Handler for F
where
    F: Fn(&mut Conn) -> Result<(), E> + Send + Sync + 'static,
    E: fmt::Display,
{
    type Error = E;

    fn handle(&self, conn: &mut Conn) -> Result<(), E> {
        self(conn)
    }
}

/// Ends one live session from another thread (shuts its socket, closes its bridge).
pub type SessionCloser = Box<dyn Fn() + Send>;

/// The sessions that proved a device key, so revocation can end them: std connections
/// ([`Conn`]) and the hub stack's bridged ones (`net::bridge::BridgedConn`) register here alike.
#[derive(Default)]
pub struct LiveSessions {
    next: AtomicU64,
    by_id: Mutex<HashMap<u64, (Vec<u8>, SessionCloser)>>,
}

impl std::fmt::Debug for LiveSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSessions")
            .field("open", &self.count())
            .finish()
    }
}

impl LiveSessions {
    /// Registers a session of `key` that `close` ends; returns its id for [`Self::remove`].
    /// No limit applies (see [`Self::admit`]).
    pub fn register(&self, key: Vec<u8>, close: SessionCloser) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (key, close));
        id
    }

    /// [`Self::register`] within `limits`: refused when [`Limits::max_sessions`] sessions are
    /// open, or [`Limits::sessions_per_key`] of `key`'s.
    pub fn admit(&self, key: Vec<u8>, close: SessionCloser, limits: &Limits) -> Result<u64, Busy> {
        let mut sessions = self.lock();
        if sessions.len() >= limits.max_sessions {
            return Err(Busy::Sessions {
                limit: limits.max_sessions,
            });
        }
        let of_key = sessions.values().filter(|(k, _)| *k == key).count();
        if of_key >= limits.sessions_per_key {
            return Err(Busy::Key {
                limit: limits.sessions_per_key,
            });
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        sessions.insert(id, (key, close));
        Ok(id)
    }

    /// Forgets a session (it ended).
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Vec<u8>, SessionCloser)>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many authenticated sessions are open.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Ends every session whose key `still_allowed` rejects. Returns how many were ended.
    pub fn end_revoked(&self, mut still_allowed: impl FnMut(&[u8]) -> bool) -> usize {
        let mut ended = 0;
        for (key, close) in self.lock().values() {
            if !still_allowed(key) {
                close();
                ended += 1;
            }
        }
        ended
    }
}

/// One accepted connection, as a handler sees it.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    handshake_deadline: Option<Instant>,
    live: Arc<LiveSessions>,
    live_id: Option<u64>,
    /// Its place in the pending pool, until the handshake ends.
    arrival: Option<Arrival>,
    /// The first handshake frame as far as it arrived: its length prefix and the bytes read.
    first: FirstFrame,
    /// When set (after the handshake), a read returns `WouldBlock` after this long without data,
    /// so the handler can do periodic work (live-mode notifications); the idle timeout still
    /// counts from the last byte received.
    tick: Option<Duration>,
    last_rx: Instant,
}

impl Conn {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Ends the handshake phase: the connection leaves the pending pool and becomes a session
    /// of `device_key` (whose revocation ends it), with the idle timeout from now on. Refused
    /// with a [`Busy`] inside the error ([`Busy::of_io`]) when the sessions are full: the caller
    /// sends the busy notice and closes.
    pub fn authenticated(&mut self, device_key: &[u8]) -> io::Result<()> {
        self.arrival = None;
        let clone = self.stream.try_clone()?;
        let close = Box::new(move || {
            let _ = clone.shutdown(Shutdown::Both);
        });
        let id = self
            .live
            .admit(device_key.to_vec(), close, &self.limits)
            .map_err(Busy::into_io)?;
        self.live_id = Some(id);
        self.handshake_deadline = None;
        Ok(())
    }

    /// Makes reads return [`io::ErrorKind::WouldBlock`] every `tick` without data (see
    /// [`Conn::read`]); `None` blocks until data or the idle timeout.
    pub fn set_tick(&mut self, tick: Option<Duration>) {
        self.tick = tick;
    }

    fn arm(&mut self) -> io::Result<()> {
        let timeout = match self.handshake_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "handshake not finished in time",
                    ));
                }
                left
            }
            None => {
                let left = self
                    .limits
                    .idle
                    .saturating_sub(self.last_rx.elapsed())
                    .max(Duration::from_millis(1));
                self.tick.map_or(left, |t| t.min(left))
            }
        };
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(self.limits.idle))
    }
}

impl Read for Conn {
    /// Reads under the connection's deadlines: the whole-handshake deadline, then the idle
    /// timeout (`TimedOut` once it passed with no byte received). With a tick set, a read that
    /// waited a tick without data returns `WouldBlock` while the idle timeout has not passed.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        match self.stream.read(buf) {
            Ok(n) => {
                self.last_rx = Instant::now();
                if let Some(arrival) = &self.arrival {
                    if self.first.add(&buf[..n]) && !arrival.first_message() {
                        // It lost its place while the message arrived: it is being closed.
                        return Ok(0);
                    }
                }
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if self.handshake_deadline.is_none()
                    && self.tick.is_some()
                    && self.last_rx.elapsed() < self.limits.idle
                {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer silent too long",
                    ))
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Stream for Conn {
    fn authenticated(&mut self, key: &PublicKey) -> io::Result<()> {
        Conn::authenticated(self, key.as_bytes())
    }

    fn set_tick(&mut self, tick: Duration) {
        Conn::set_tick(self, Some(tick));
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(id) = self.live_id.take() {
            self.live.remove(id);
        }
    }
}

/// Every `period`, ends the live sessions whose key `still_allowed` now rejects (a `revoke` run
/// by another process shows up here through the allowlist file).
pub fn watch_revocations(
    live: Arc<LiveSessions>,
    period: Duration,
    mut still_allowed: impl FnMut(&[u8]) -> bool + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("revocations".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            let ended = live.end_revoked(&mut still_allowed);
            if ended > 0 {
                log::info!("ended {ended} session(s) of revoked devices");
            }
        })
}

/// [`watch_revocations`] against an allowlist (its own connection): a key revoked or no longer
/// enrolled ends its sessions; a lookup that fails keeps them and is logged (a busy or damaged
/// file must not cut every device off).
pub fn watch_allowlist(
    live: Arc<LiveSessions>,
    period: Duration,
    allowlist: Allowlist,
) -> io::Result<std::thread::JoinHandle<()>> {
    watch_revocations(live, period, move |k| match allowlist.authorize(k) {
        Ok(_) => true,
        Err(AllowlistError::Revoked | AllowlistError::NotEnrolled) => false,
        Err(e) => {
            log::warn!("revocation check: {e}");
            true
        }
    })
}

/// Tells a connection turned away for load that the port is busy, and closes it: the busy
/// notice, then FIN. What the peer already sent is read and dropped first, so that the close
/// does not reset the connection before the peer reads the notice.
pub fn send_busy(stream: &TcpStream) {
    let mut s = stream;
    let _ = stream.set_nonblocking(true);
    let _ = s.write_all(&BUSY_NOTICE);
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 512];
    for _ in 0..8 {
        if !matches!(s.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Read);
}

/// Accepts connections forever, each admitted one on its own thread running `handler`
/// (admission: [`crate::admission`]; pending connections beyond `limits` are turned away with
/// the busy notice, on this thread, without a thread of their own).
pub fn serve<H: Handler>(
    listener: TcpListener,
    limits: Limits,
    live: Arc<LiveSessions>,
    handler: Arc<H>,
) -> io::Result<()> {
    let pending = Pending::new(limits);
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or a reset before accept: keep serving the others.
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let evictable = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("peer={peer} refused: {e}");
                send_busy(&stream);
                continue;
            }
        };
        // Runs on this thread when a newer connection takes this one's place: the connection's
        // own thread is blocked in a read (it has written nothing yet) and sees the close.
        let evict = Box::new(move || {
            let _ = (&evictable).write_all(&BUSY_NOTICE);
            let _ = evictable.shutdown(Shutdown::Both);
        });
        let arrival = match pending.arrive(peer, evict) {
            Ok(a) => a,
            Err(_) => {
                // Logged in aggregate by the pool.
                send_busy(&stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            peer,
            limits,
            handshake_deadline: Some(Instant::now() + limits.handshake),
            live: live.clone(),
            live_id: None,
            arrival: Some(arrival),
            first: FirstFrame::default(),
            tick: None,
            last_rx: Instant::now(),
        };
        let handler = handler.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn {peer}"))
            .spawn(move || {
                log::debug!("peer={peer} connected");
                match handler.handle(&mut conn) {
                    Ok(()) => log::debug!("peer={peer} closed"),
                    Err(e) => log::warn!("peer={peer} session ended: {e}"),
                }
            });
        if let Err(e) = spawned {
            log::error!("peer={peer} refused: cannot start a thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
