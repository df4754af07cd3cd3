//! Accepting TCP connections on the hub's stack and handing each to a [`ConnHandler`].
//!
//! smoltcp has no listen backlog: a listening socket takes exactly one connection. [`serve`]
//! therefore keeps `SLOTS` sockets listening on the port, each running an accept → handle →
//! close loop; `SLOTS` is the number of connections served at once, and a connection attempt
//! while all slots are busy is refused (RST), like the std server's connection cap.

use embassy_futures::join::join_array;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, Stack};
use embassy_time::{with_timeout, Duration, Timer};
use embedded_io_async::{ErrorKind, Read, Write};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A socket operation of the hub's stack that failed, with the kind of failure (the stack's
/// errors carry nothing more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketError {
    /// Reading from the socket failed.
    Read(ErrorKind),
    /// Writing to the socket failed.
    Write(ErrorKind),
    /// Flushing the socket (waiting for the peer to acknowledge) failed.
    Flush(ErrorKind),
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::Read(k) => write!(f, "read failed: {k:?}"),
            SocketError::Write(k) => write!(f, "write failed: {k:?}"),
            SocketError::Flush(k) => write!(f, "flush failed: {k:?}"),
        }
    }
}

impl std::error::Error for SocketError {}

/// What runs on each accepted connection.
///
/// The connection comes as its two halves, so a handler can read and write at the same time
/// (a relay that streams a pull while the peer pushes must not wait on one to do the other).
/// Both are plain embedded-io-async streams: the same handler runs over anything else that
/// implements those traits.
#[allow(async_fn_in_trait)] // the executor is single-threaded: no Send bound is wanted
pub trait ConnHandler {
    /// Why a connection ended in error.
    type Error: fmt::Display;

    /// Serves one connection until it ends. Returning closes the connection gracefully (after
    /// the data written is acknowledged); an error is logged with the peer's address.
    async fn handle<R: Read, W: Write>(
        &self,
        rx: &mut R,
        tx: &mut W,
        peer: SocketAddr,
    ) -> Result<(), Self::Error>;
}

/// Socket options of a TCP service.
#[derive(Clone, Copy, Debug)]
pub struct TcpOptions {
    /// Receive buffer per connection (also the advertised window).
    pub rx_buffer: usize,
    /// Send buffer per connection.
    pub tx_buffer: usize,
    /// A connection whose peer stops acknowledging for this long is aborted.
    pub timeout: Duration,
    /// Keep-alive probes on idle connections, so a vanished tablet frees its slot.
    pub keep_alive: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            rx_buffer: 16 * 1024,
            tx_buffer: 16 * 1024,
            timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(20),
        }
    }
}

/// Serves `port` forever with `SLOTS` connections at once, each handled by `handler`.
pub async fn serve<H: ConnHandler, const SLOTS: usize>(
    stack: Stack<'_>,
    port: u16,
    options: TcpOptions,
    handler: &H,
) -> ! {
    let slots: [_; SLOTS] =
        core::array::from_fn(|slot| serve_slot(stack, port, options, handler, slot));
    join_array(slots).await;
    unreachable!("serve_slot never returns")
}

async fn serve_slot<H: ConnHandler>(
    stack: Stack<'_>,
    port: u16,
    options: TcpOptions,
    handler: &H,
    slot: usize,
) -> ! {
    let mut rx_buffer = vec![0; options.rx_buffer];
    let mut tx_buffer = vec![0; options.tx_buffer];
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx_buffer, &mut tx_buffer);
        if let Err(e) = socket.accept(port).await {
            log::warn!("port={port} slot={slot} accept failed: {e:?}");
            Timer::after_millis(100).await;
            continue;
        }
        socket.set_timeout(Some(options.timeout));
        socket.set_keep_alive(Some(options.keep_alive));
        let peer = match socket.remote_endpoint() {
            Some(e) => SocketAddr::new(ip_addr(e.addr), e.port),
            None => continue, // reset between accept and here
        };
        log::debug!("port={port} peer={peer} connected");
        let result = {
            let (mut rx, mut tx) = socket.split();
            handler.handle(&mut rx, &mut tx, peer).await
        };
        finish(&mut socket, peer, result).await;
    }
}

/// Closes a connection whose handler returned `result`: gracefully after `Ok` (the data and
/// FIN go out, then the peer gets a moment to close its side, so the socket is not dropped,
/// and the peer reset, mid-close), by a reset after an error (which is logged).
pub(crate) async fn finish<E: fmt::Display>(
    socket: &mut TcpSocket<'_>,
    peer: SocketAddr,
    result: Result<(), E>,
) {
    match result {
        Ok(()) => {
            log::debug!("peer={peer} closed");
            socket.close();
            let _ = with_timeout(Duration::from_secs(10), socket.flush()).await;
            let _ = with_timeout(Duration::from_secs(2), drain(socket)).await;
        }
        Err(e) => {
            log::warn!("peer={peer} connection ended: {e}");
            socket.abort();
            let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
        }
    }
}

/// Reads and discards until the peer's FIN (or an error).
async fn drain(socket: &mut TcpSocket<'_>) {
    let mut sink = [0u8; 512];
    while let Ok(n) = socket.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// embassy-net's address as std's.
pub fn ip_addr(addr: IpAddress) -> IpAddr {
    match addr {
        IpAddress::Ipv4(v4) => IpAddr::V4(v4),
    }
}
