//! Outgoing TCP connections on the hub's stack, for blocking threads (the uplink).
//!
//! A thread holds a [`Dialer`]; [`Dialer::connect`] sends a request over a channel to the
//! executor, where [`serve_dials`] keeps `SLOTS` outgoing sockets: each takes a request, opens
//! a [`TcpSocket`] to the address within the request's connect timeout, and hands the thread a
//! [`BridgedConn`] (the very bridge accepted connections use, [`super::bridge`]), then pumps
//! bytes until the thread drops the connection (which closes it gracefully: the queued bytes,
//! then FIN) or the peer goes away. `SLOTS` is the number of outgoing connections open at once;
//! further requests wait for a slot (within their connect timeout).
//!
//! The hub's stack resolves no names: an address is IPv4 and port (`203.0.113.7:7421`), and it
//! must be reachable from the hub's LAN (on its subnet or through its gateway, from DHCP or
//! `--gateway`).

use super::bridge::{self, block_with_timeout, BridgedConn};
use super::tcp::{finish, TcpOptions};
use async_channel::{Receiver, Sender};
use embassy_futures::join::join_array;
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_time::with_timeout;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Requests waiting for a slot at most (more make [`Dialer::connect`] wait or time out).
const QUEUE: usize = 4;

/// One connection request from a thread.
#[derive(Debug)]
pub struct DialRequest {
    to: SocketAddrV4,
    /// Past this instant the requester has given up: the request is dropped unanswered.
    deadline: Instant,
    reply: Sender<io::Result<BridgedConn>>,
}

/// The thread's end: opens connections on the hub's stack. Cloneable; usable from any thread
/// (not from the executor's: it blocks).
#[derive(Clone, Debug)]
pub struct Dialer {
    requests: Sender<DialRequest>,
}

/// The executor's end of a [`Dialer`], for [`serve_dials`].
#[derive(Debug)]
pub struct DialRequests(Receiver<DialRequest>);

/// A connected pair: hand the [`Dialer`] to threads and the [`DialRequests`] to
/// [`super::run_hub_with_dials`].
pub fn dialer() -> (Dialer, DialRequests) {
    let (requests, rx) = async_channel::bounded(QUEUE);
    (Dialer { requests }, DialRequests(rx))
}

/// Parses `IPv4:PORT` (no names: the hub's stack has no resolver).
pub fn parse_address(address: &str) -> io::Result<SocketAddrV4> {
    address.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{address:?}: the hub's own stack connects to IPv4:PORT addresses only (no name resolution)"
            ),
        )
    })
}

impl Dialer {
    /// Connects to `to` within `timeout` (waiting for the stack's address and a free slot
    /// included); the connection has no read or write timeout until set.
    pub fn connect(&self, to: SocketAddrV4, timeout: Duration) -> io::Result<BridgedConn> {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = async_channel::bounded(1);
        let request = DialRequest {
            to,
            deadline,
            reply,
        };
        let left = || deadline.saturating_duration_since(Instant::now());
        match block_with_timeout(self.requests.send(request), Some(left())) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the hub's network stack is not running",
                ))
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out (no free outgoing slot on the hub's stack)",
                ))
            }
        }
        // The executor answers by the deadline; a little slack for it to notice.
        match block_with_timeout(answer.recv(), Some(left() + Duration::from_millis(500))) {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out (the hub's stack has no address yet, or no answer)",
            )),
        }
    }
}

/// Serves connection requests forever with `SLOTS` outgoing connections at once.
pub async fn serve_dials<const SLOTS: usize>(
    stack: Stack<'_>,
    options: TcpOptions,
    requests: &DialRequests,
) -> ! {
    let slots: [_; SLOTS] = core::array::from_fn(|slot| dial_slot(stack, options, requests, slot));
    join_array(slots).await;
    unreachable!("dial_slot never returns")
}

async fn dial_slot(
    stack: Stack<'_>,
    options: TcpOptions,
    requests: &DialRequests,
    slot: usize,
) -> ! {
    let mut rx_buffer = vec![0; options.rx_buffer];
    let mut tx_buffer = vec![0; options.tx_buffer];
    loop {
        let Ok(request) = requests.0.recv().await else {
            // Every Dialer is gone: nothing will ever be asked.
            core::future::pending::<()>().await;
            continue;
        };
        let left = request.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            continue; // the requester gave up while the request waited
        }
        let to = request.to;
        let mut socket = TcpSocket::new(stack, &mut rx_buffer, &mut tx_buffer);
        socket.set_timeout(Some(options.timeout));
        socket.set_keep_alive(Some(options.keep_alive));
        let wait = embassy_time::Duration::from_micros(left.as_micros() as u64);
        let connected = match with_timeout(wait, socket.connect(to)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(match e {
                embassy_net::tcp::ConnectError::ConnectionReset => io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{to}: connection refused"),
                ),
                embassy_net::tcp::ConnectError::NoRoute => io::Error::new(
                    io::ErrorKind::HostUnreachable,
                    format!("{to}: no route from the hub's stack (no address or gateway?)"),
                ),
                other => io::Error::other(format!("{to}: connect failed: {other:?}")),
            }),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{to}: connect timed out"),
            )),
        };
        if let Err(e) = connected {
            log::debug!("dial slot={slot} {e}");
            socket.abort();
            let _ = with_timeout(embassy_time::Duration::from_secs(1), socket.flush()).await;
            let _ = request.reply.try_send(Err(e));
            continue;
        }
        let peer = SocketAddr::V4(to);
        log::debug!("dial slot={slot} peer={peer} connected");
        let (conn, pipe) = bridge::pair(peer);
        if request.reply.try_send(Ok(conn)).is_err() {
            // The requester gave up meanwhile; the connection (dropped with the message) ends.
            log::debug!("dial slot={slot} peer={peer} nobody waiting any more");
        }
        let result = {
            let (mut rx, mut tx) = socket.split();
            pipe.pump(&mut rx, &mut tx).await
        };
        finish(&mut socket, peer, result, options.linger).await;
    }
}
