//! Running a blocking handler (the relay: Noise, SQLite commits with fsync) on connections of
//! the hub's async stack.
//!
//! The stack runs on one single-threaded executor; a handler that blocked it, even for one
//! fsync, would stall every connection, ARP, DHCP renewals and TCP timers. So [`Bridge`] gives
//! each connection a thread: the async side pumps bytes between the socket and two bounded
//! channels (full duplex), and the thread sees a [`BridgedConn`], an ordinary
//! `std::io::Read + Write` with read/write timeouts, exactly like a `TcpStream`. The relay code
//! is then the same over std sockets and over embassy-net.
//!
//! Ending: the handler returning (or its thread ending in any way) closes the connection after
//! its last bytes are sent; the peer closing gives the handler end-of-stream on read; a
//! [`Closer`] (for revocation) ends both directions from any thread.
//!
//! Admission ([`Bridge::admitting`]): each accepted connection first takes a place among the
//! pending ones (`outpost_relay::admission::Pending`, on the executor, before any thread is
//! started); one turned away, or whose place a newer connection takes while it is idle, is sent
//! the busy notice and reset at once, so it frees its socket for the next connection.

use super::tcp::{ConnHandler, SocketError};
use async_channel::{Receiver, Sender};
use embassy_futures::select::{select, Either};
use embassy_time::with_timeout;
use embedded_io_async::{Error as _, Read, Write};
use outpost_protocol::handshake::{PublicKey, BUSY_NOTICE};
use outpost_relay::admission::{Arrival, Busy, FirstFrame, Pending};
use outpost_relay::listener::{Limits, LiveSessions};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest chunk carried by one channel message.
const CHUNK: usize = 8 * 1024;
/// Chunks in flight per direction (so at most 64 KiB is buffered each way).
const DEPTH: usize = 8;

/// A blocking connection handler, run on a thread of its own for each connection.
pub trait BlockingHandler: Send + Sync + 'static {
    /// Why a connection ended in error.
    type Error: fmt::Display + Send + 'static;

    /// Serves one connection until it ends. An error is logged with the peer's address.
    fn handle(&self, conn: &mut BridgedConn) -> Result<(), Self::Error>;
}

impl<F, E> BlockingHandler for F
where
    F: Fn(&mut BridgedConn) -> Result<(), E> + Send + Sync + 'static,
    E: fmt::Display + Send + 'static,
{
    type Error = E;

    fn handle(&self, conn: &mut BridgedConn) -> Result<(), E> {
        self(conn)
    }
}

/// Why a bridged connection ended in error.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeError<E> {
    /// The handler's own error.
    Handler(E),
    /// The handler's thread could not be started.
    Spawn(io::Error),
    /// The handler's thread panicked.
    Panicked,
    /// The socket failed under the pump.
    Socket(SocketError),
    /// Turned away for load (told so with the busy notice).
    Busy(Busy),
}

impl<E: fmt::Display> fmt::Display for BridgeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Handler(e) => e.fmt(f),
            BridgeError::Spawn(e) => write!(f, "cannot start the connection's thread: {e}"),
            BridgeError::Panicked => f.write_str("connection handler panicked"),
            BridgeError::Socket(e) => e.fmt(f),
            BridgeError::Busy(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BridgeError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the handler's and the socket's texts are this one's.
            BridgeError::Handler(e) => e.source(),
            BridgeError::Spawn(e) => Some(e),
            BridgeError::Panicked => None,
            BridgeError::Socket(e) => e.source(),
            BridgeError::Busy(e) => Some(e),
        }
    }
}

/// A [`ConnHandler`] that runs a [`BlockingHandler`] on a thread per connection.
#[derive(Debug)]
pub struct Bridge<H> {
    handler: Arc<H>,
    pending: Option<Arc<Pending>>,
}

impl<H: BlockingHandler> Bridge<H> {
    /// Wraps `handler`; every accepted connection gets a thread.
    pub fn new(handler: H) -> Self {
        Bridge {
            handler: Arc::new(handler),
            pending: None,
        }
    }

    /// Wraps `handler` behind admission: pending connections within `limits` (see the module
    /// doc). The handler's [`BridgedConn::serve_as_session`] then counts the first handshake
    /// message and moves the connection to the sessions.
    pub fn admitting(handler: H, limits: Limits) -> Self {
        Bridge {
            handler: Arc::new(handler),
            pending: Some(Pending::new(limits)),
        }
    }
}

impl<H: BlockingHandler> ConnHandler for Bridge<H> {
    type Error = BridgeError<H::Error>;

    async fn handle<R: Read, W: Write>(
        &self,
        rx: &mut R,
        tx: &mut W,
        peer: SocketAddr,
    ) -> Result<(), Self::Error> {
        let (mut conn, pipe) = pair(peer);
        if let Some(pending) = &self.pending {
            let notice = conn.tx.clone();
            let closer = conn.closer();
            // Runs on the executor when a newer connection takes this one's place: its thread
            // waits for bytes and has written nothing, so the notice is the only thing sent.
            let evict = Box::new(move || {
                let _ = notice.try_send(BUSY_NOTICE.to_vec());
                closer.close();
            });
            match pending.arrive(peer, evict) {
                Ok(arrival) => conn.arrival = Some(arrival),
                Err(busy) => {
                    // Logged in aggregate by the pool.
                    let _ = with_timeout(REFUSAL_WAIT, async {
                        let _ = tx.write_all(&BUSY_NOTICE).await;
                        let _ = tx.flush().await;
                    })
                    .await;
                    return Err(BridgeError::Busy(busy));
                }
            }
        }
        let evicted = conn.arrival.as_ref().map(Arrival::watch);
        let (done_tx, done_rx) = async_channel::bounded::<Result<(), H::Error>>(1);
        let handler = self.handler.clone();
        std::thread::Builder::new()
            .name(format!("conn {peer}"))
            .spawn(move || {
                let result = handler.handle(&mut conn);
                drop(conn); // closes both channels: the async side sends what is queued, then FIN
                let _ = done_tx.send_blocking(result);
            })
            .map_err(BridgeError::Spawn)?;
        let pumped = pipe.pump(rx, tx).await;
        // The handler cannot block on the channels any more (both are closed), so this wait is
        // short.
        let handled = match done_rx.recv().await {
            Ok(r) => r.map_err(BridgeError::Handler),
            Err(_) => Err(BridgeError::Panicked),
        };
        if evicted.is_some_and(|w| w.evicted()) {
            // The notice was flushed by the pump: reset now, the slot is wanted.
            return Err(BridgeError::Busy(Busy::Evicted));
        }
        handled.and(pumped.map_err(BridgeError::Socket))
    }

    fn is_refusal(&self, error: &Self::Error) -> bool {
        matches!(error, BridgeError::Busy(_))
    }
}

/// How long a connection turned away for load may take to receive the busy notice.
const REFUSAL_WAIT: embassy_time::Duration = embassy_time::Duration::from_secs(1);

/// A new bridged connection to `peer`: the blocking end, for a thread, and the async end, to
/// [`Pipe::pump`] against the socket on the executor. Accepted connections ([`Bridge`]) and
/// outgoing ones ([`super::dial`]) are bridged the same way.
pub(crate) fn pair(peer: SocketAddr) -> (BridgedConn, Pipe) {
    let (to_thread, thread_in) = async_channel::bounded::<Vec<u8>>(DEPTH);
    let (thread_out, from_thread) = async_channel::bounded::<Vec<u8>>(DEPTH);
    let conn = BridgedConn {
        rx: thread_in,
        tx: thread_out,
        chunk: Vec::new(),
        pos: 0,
        peer,
        read_timeout: None,
        write_timeout: None,
        session: None,
        arrival: None,
        first: FirstFrame::default(),
    };
    (
        conn,
        Pipe {
            to_thread,
            from_thread,
            peer,
        },
    )
}

/// The executor's end of a [`BridgedConn`].
#[derive(Debug)]
pub(crate) struct Pipe {
    to_thread: Sender<Vec<u8>>,
    from_thread: Receiver<Vec<u8>>,
    peer: SocketAddr,
}

impl Pipe {
    /// Pumps bytes both ways between the socket halves and the blocking end until the blocking
    /// end is dropped or closed (its queued bytes are written and flushed first) or a write to
    /// the socket fails. The peer's FIN gives the blocking end end-of-stream but does not end
    /// the pump (the blocking side may still write). Returns with both channels closed.
    pub(crate) async fn pump<R: Read, W: Write>(
        self,
        rx: &mut R,
        tx: &mut W,
    ) -> Result<(), SocketError> {
        let Pipe {
            to_thread,
            from_thread,
            peer,
        } = self;
        let inbound = async {
            let mut buf = vec![0; CHUNK];
            loop {
                match rx.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if to_thread.send(buf[..n].to_vec()).await.is_err() {
                            break; // the handler is gone or the connection was closed
                        }
                    }
                    Err(e) => {
                        log::debug!("peer={peer} read failed: {e:?}");
                        break;
                    }
                }
            }
            // End of stream for the handler; keep waiting for its side to finish.
            to_thread.close();
            core::future::pending::<()>().await
        };
        let outbound = async {
            let mut failed = None;
            while let Ok(chunk) = from_thread.recv().await {
                if let Err(e) = tx.write_all(&chunk).await {
                    failed = Some(e.kind());
                    break;
                }
            }
            // The handler's further writes now fail with BrokenPipe.
            from_thread.close();
            match failed {
                Some(kind) => Err(SocketError::Write(kind)),
                None => tx.flush().await.map_err(|e| SocketError::Flush(e.kind())),
            }
        };
        let pumped = match select(inbound, outbound).await {
            Either::First(()) => unreachable!("the inbound pump never finishes first"),
            Either::Second(r) => r,
        };
        to_thread.close();
        pumped
    }
}

/// Ends a bridged connection from another thread (both directions), like
/// `TcpStream::shutdown(Both)`: the handler's reads return end-of-stream, its writes fail, and
/// the socket is closed.
#[derive(Clone, Debug)]
pub struct Closer {
    rx: Receiver<Vec<u8>>,
    tx: Sender<Vec<u8>>,
}

impl Closer {
    /// Closes the connection.
    pub fn close(&self) {
        self.rx.close();
        self.tx.close();
    }
}

/// One connection of the hub's stack as a blocking stream, on its handler's thread.
#[derive(Debug)]
pub struct BridgedConn {
    rx: Receiver<Vec<u8>>,
    tx: Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    peer: SocketAddr,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    session: Option<SessionLimits>,
    /// Its place among the pending connections ([`Bridge::admitting`]), until authenticated.
    arrival: Option<Arrival>,
    /// The first handshake frame as far as it arrived.
    first: FirstFrame,
}

/// The std server's connection rules applied to a bridged connection (see
/// [`BridgedConn::serve_as_session`]).
#[derive(Debug)]
struct SessionLimits {
    limits: Limits,
    handshake_deadline: Option<Instant>,
    live: Arc<LiveSessions>,
    live_id: Option<u64>,
    tick: Option<Duration>,
    last_rx: Instant,
}

impl BridgedConn {
    /// Applies the std server's rules from now on, as `outpost_relay::listener::Conn` does: the whole handshake
    /// within `limits.handshake`, then at most `limits.idle` of silence; once the relay reports
    /// the peer's key ([`outpost_relay::Stream::authenticated`]), the session is registered in
    /// `live` so revoking the device ends it. Reads and writes then ignore
    /// [`Self::set_read_timeout`] / [`Self::set_write_timeout`].
    pub fn serve_as_session(&mut self, limits: Limits, live: Arc<LiveSessions>) {
        self.session = Some(SessionLimits {
            limits,
            handshake_deadline: Some(Instant::now() + limits.handshake),
            live,
            live_id: None,
            tick: None,
            last_rx: Instant::now(),
        });
    }

    /// The read timeout now, or the error to return at once (handshake time is up).
    fn read_wait(&self) -> io::Result<Option<Duration>> {
        let Some(s) = &self.session else {
            return Ok(self.read_timeout);
        };
        match s.handshake_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "handshake not finished in time",
                    ));
                }
                Ok(Some(left))
            }
            None => {
                let left = s
                    .limits
                    .idle
                    .saturating_sub(s.last_rx.elapsed())
                    .max(Duration::from_millis(1));
                Ok(Some(s.tick.map_or(left, |t| t.min(left))))
            }
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Longest wait in one `read` before it fails with `TimedOut` (`None`: no limit), like
    /// `TcpStream::set_read_timeout`.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Longest wait in one `write` for room to send (`None`: no limit).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// A handle that ends this connection from another thread.
    pub fn closer(&self) -> Closer {
        Closer {
            rx: self.rx.clone(),
            tx: self.tx.clone(),
        }
    }
}

/// Awaits `future` on the calling thread, failing with `TimedOut` after `timeout`.
pub(crate) fn block_with_timeout<T>(
    future: impl std::future::Future<Output = T>,
    timeout: Option<Duration>,
) -> io::Result<T> {
    let Some(timeout) = timeout else {
        return Ok(async_io::block_on(future));
    };
    let timer = async_io::Timer::after(timeout);
    match async_io::block_on(select(future, timer)) {
        Either::First(value) => Ok(value),
        Either::Second(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}

impl io::Read for BridgedConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.chunk.len() {
            let wait = self.read_wait()?;
            match block_with_timeout(self.rx.recv(), wait) {
                Ok(Ok(chunk)) => {
                    if let Some(arrival) = &self.arrival {
                        if self.first.add(&chunk) && !arrival.first_message() {
                            // It lost its place while the message arrived: it is being closed.
                            return Ok(0);
                        }
                    }
                    self.chunk = chunk;
                    self.pos = 0;
                    if let Some(s) = &mut self.session {
                        s.last_rx = Instant::now();
                    }
                }
                Ok(Err(_)) => return Ok(0), // the peer closed, or the connection was ended
                Err(e) => {
                    return Err(match &self.session {
                        // A tick passed in a live session: periodic work, not an error.
                        Some(s)
                            if s.handshake_deadline.is_none()
                                && s.tick.is_some()
                                && s.last_rx.elapsed() < s.limits.idle =>
                        {
                            io::ErrorKind::WouldBlock.into()
                        }
                        Some(_) => io::Error::new(io::ErrorKind::TimedOut, "peer silent too long"),
                        None => e,
                    });
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl io::Write for BridgedConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(CHUNK);
        let wait = match &self.session {
            Some(s) => Some(s.limits.idle),
            None => self.write_timeout,
        };
        match block_with_timeout(self.tx.send(buf[..n].to_vec()), wait)? {
            Ok(()) => Ok(n),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection closed",
            )),
        }
    }

    /// Bytes written are already queued for the socket; the connection's close sends them all.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl outpost_relay::Stream for BridgedConn {
    fn authenticated(&mut self, key: &PublicKey) -> io::Result<()> {
        let closer = self.closer();
        self.arrival = None;
        if let Some(s) = &mut self.session {
            let close = Box::new(move || closer.close());
            let id = s
                .live
                .admit(key.as_bytes().to_vec(), close, &s.limits)
                .map_err(Busy::into_io)?;
            s.live_id = Some(id);
            s.handshake_deadline = None;
            s.last_rx = Instant::now();
        }
        Ok(())
    }

    fn set_tick(&mut self, tick: Duration) {
        if let Some(s) = &mut self.session {
            s.tick = Some(tick);
        }
    }
}

impl Drop for BridgedConn {
    fn drop(&mut self) {
        if let Some(s) = &mut self.session {
            if let Some(id) = s.live_id.take() {
                s.live.remove(id);
            }
        }
        // A Closer may still hold clones: close explicitly so the async side ends now.
        self.rx.close();
        self.tx.close();
    }
}
