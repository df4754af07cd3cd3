//! Accepting TCP connections on the hub's stack and handing each to a [`ConnHandler`].
//!
//! smoltcp has no listen backlog: a listening socket takes exactly one connection. [`serve`]
//! therefore keeps `SLOTS` sockets listening on the port, each running an accept → handle →
//! close loop; `SLOTS` is the number of connections served at once, and a connection attempt
//! while all slots are busy is refused (RST) by the stack.
//!
//! A service may cap the connections of one address ([`TcpOptions::per_address`], counted from
//! accept to the socket's release, close included): one over the cap is answered with the
//! handler's [`ConnHandler::refuse`] and reset at once, so that it holds its socket for as
//! little as possible. A handler's own refusals for load ([`ConnHandler::is_refusal`]) are
//! reset the same way and not logged one by one.

use embassy_futures::join::join_array;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, Stack};
use embassy_time::{with_timeout, Duration, Timer};
use embedded_io_async::{ErrorKind, Read, Write};
use std::cell::RefCell;
use std::collections::HashMap;
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

    /// True when `error` is a refusal for load the handler already told the peer (and logs in
    /// aggregate): the connection is reset at once, without a log line.
    fn is_refusal(&self, _error: &Self::Error) -> bool {
        false
    }

    /// Tells a peer over [`TcpOptions::per_address`] that the service is busy (best effort: the
    /// connection is reset right after).
    async fn refuse<W: Write>(&self, _tx: &mut W) {}
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
    /// Connections of one address at once, close included (`usize::MAX`: no cap).
    pub per_address: usize,
    /// After the handler returned: how long the close may wait for the data to be acknowledged,
    /// and then for the peer's FIN.
    pub linger: (Duration, Duration),
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            rx_buffer: 16 * 1024,
            tx_buffer: 16 * 1024,
            timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(20),
            per_address: usize::MAX,
            linger: (Duration::from_secs(10), Duration::from_secs(2)),
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
    let by_address = RefCell::new(HashMap::new());
    let slots: [_; SLOTS] =
        core::array::from_fn(|slot| serve_slot(stack, port, options, handler, slot, &by_address));
    join_array(slots).await;
    unreachable!("serve_slot never returns")
}

async fn serve_slot<H: ConnHandler>(
    stack: Stack<'_>,
    port: u16,
    options: TcpOptions,
    handler: &H,
    slot: usize,
    by_address: &RefCell<HashMap<IpAddr, usize>>,
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
        // The executor is single-threaded: no other slot runs between these borrows.
        let open = {
            let mut map = by_address.borrow_mut();
            let n = map.entry(peer.ip()).or_insert(0);
            *n += 1;
            *n
        };
        if open > options.per_address {
            let (_, mut tx) = socket.split();
            let _ = with_timeout(Duration::from_millis(200), handler.refuse(&mut tx)).await;
            refused(&mut socket).await;
        } else {
            let result = {
                let (mut rx, mut tx) = socket.split();
                handler.handle(&mut rx, &mut tx, peer).await
            };
            match result {
                Err(e) if handler.is_refusal(&e) => refused(&mut socket).await,
                result => finish(&mut socket, peer, result, options.linger).await,
            }
        }
        let mut map = by_address.borrow_mut();
        if let Some(n) = map.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                map.remove(&peer.ip());
            }
        }
    }
}

/// Resets a connection turned away for load, now: its socket is wanted for the next one.
async fn refused(socket: &mut TcpSocket<'_>) {
    socket.abort();
    let _ = with_timeout(Duration::from_millis(200), socket.flush()).await;
}

/// Closes a connection whose handler returned `result`: gracefully after `Ok` (the data and
/// FIN go out, then the peer gets a moment to close its side, so the socket is not dropped,
/// and the peer reset, mid-close), by a reset after an error (which is logged).
pub(crate) async fn finish<E: fmt::Display>(
    socket: &mut TcpSocket<'_>,
    peer: SocketAddr,
    result: Result<(), E>,
    (flush, fin): (Duration, Duration),
) {
    match result {
        Ok(()) => {
            log::debug!("peer={peer} closed");
            socket.close();
            let _ = with_timeout(flush, socket.flush()).await;
            if with_timeout(fin, drain(socket)).await.is_err() {
                socket.abort();
                let _ = with_timeout(Duration::from_millis(200), socket.flush()).await;
            }
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
