//! The std-socket front of a serving box (the hub with `--net std:`, the cloud): a TCP listener,
//! one thread per connection, and the limits that keep a small box alive under a misbehaving
//! LAN: a cap on simultaneous connections, a deadline for the whole handshake (not per read: a
//! peer dribbling one byte at a time still runs out), and an idle timeout once a session is up.
//!
//! What runs on a connection is a [`Handler`]; the boxes' is the relay
//! ([`crate::serve_connection`]). [`Conn`] is the stream as a handler sees it: `Read + Write`
//! with the deadlines applied, and [`Conn::authenticated`] to register the peer's key once the
//! handshake proved it, so that revoking the device ends the session
//! ([`LiveSessions::end_revoked`]). Sessions of the hub's own stack register in the same
//! [`LiveSessions`].

use crate::allowlist::{Allowlist, AllowlistError};
use crate::stream::Stream;
use outpost_protocol::handshake::PublicKey;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits of the connection layer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Time from accept until [`Conn::authenticated`]: the whole handshake.
    pub handshake: Duration,
    /// Longest silence from the peer once authenticated.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

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
    pub fn register(&self, key: Vec<u8>, close: SessionCloser) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (key, close));
        id
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

    /// Ends the handshake phase: from now on the idle timeout applies, and `device_key`'s
    /// revocation ends this connection.
    pub fn authenticated(&mut self, device_key: &[u8]) -> io::Result<()> {
        self.handshake_deadline = None;
        let clone = self.stream.try_clone()?;
        let close = Box::new(move || {
            let _ = clone.shutdown(Shutdown::Both);
        });
        self.live_id = Some(self.live.register(device_key.to_vec(), close));
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

/// Accepts connections forever, each on its own thread running `handler`.
pub fn serve<H: Handler>(
    listener: TcpListener,
    limits: Limits,
    live: Arc<LiveSessions>,
    handler: Arc<H>,
) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
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
        if open.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
            open.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "peer={peer} refused: {} connections already open",
                limits.max_connections
            );
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            peer,
            limits,
            handshake_deadline: Some(Instant::now() + limits.handshake),
            live: live.clone(),
            live_id: None,
            tick: None,
            last_rx: Instant::now(),
        };
        let handler = handler.clone();
        let open_in = open.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn {peer}"))
            .spawn(move || {
                log::debug!("peer={peer} connected");
                match handler.handle(&mut conn) {
                    Ok(()) => log::debug!("peer={peer} closed"),
                    Err(e) => log::warn!("peer={peer} session ended: {e}"),
                }
                drop(conn);
                open_in.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::SeqCst);
            log::error!("peer={peer} refused: cannot start a thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
