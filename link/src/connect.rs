//! TCP over the OS's sockets to the first address of a peer that accepts, with connect, read
//! and write timeouts; every address tried is kept with what happened, so an unreachable peer
//! is reported with each of them ([`crate::LinkError::Unreachable`]).

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long to wait: per address for a connection, and for each read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Per resolved address, to connect.
    pub connect: Duration,
    /// Per read or write: the peer must answer within this.
    pub io: Duration,
}

impl Default for Timeouts {
    /// 5 s to connect, 30 s per read or write.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            io: Duration::from_secs(30),
        }
    }
}

/// Why one address gave no connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The name did not resolve.
    Resolve(io::Error),
    /// The name resolved to no address.
    NoAddress,
    /// Connected, but the socket refused its timeouts.
    Socket(io::Error),
    /// The connection failed (refused, timed out, no route, ...).
    Connect(io::Error),
    /// Asked on the LAN (DNS-SD), no peer with the pinned site id answered.
    NotDiscovered,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Resolve(e) => write!(f, "cannot resolve: {e}"),
            ConnectFailure::NoAddress => f.write_str("resolves to no address"),
            ConnectFailure::Socket(_) => f.write_str("cannot set socket timeouts"),
            ConnectFailure::Connect(e) => match e.kind() {
                ErrorKind::ConnectionRefused => f.write_str("connection refused"),
                ErrorKind::TimedOut | ErrorKind::WouldBlock => f.write_str("timed out"),
                _ => write!(f, "{e}"),
            },
            ConnectFailure::NotDiscovered => f.write_str("no hub with this site id answered"),
        }
    }
}

impl std::error::Error for ConnectFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectFailure::Resolve(e) | ConnectFailure::Socket(e) | ConnectFailure::Connect(e) => {
                Some(e)
            }
            ConnectFailure::NoAddress | ConnectFailure::NotDiscovered => None,
        }
    }
}

/// One address tried, and what happened: shown as `10.0.0.2:7420 (connection refused)`.
#[derive(Debug)]
pub struct Attempt {
    /// The address as given (`host:port`), or where else was looked (`LAN (mDNS)`).
    pub address: String,
    /// What happened.
    pub failure: ConnectFailure,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.failure)
    }
}

/// Connects to the first of `addresses` (`host:port`, names resolved by the OS) that accepts,
/// with `timeouts.io` as its read and write timeout and Nagle off (session messages are small
/// and answered at once). Returns the stream and the address used, or every attempt.
pub fn connect(
    addresses: &[String],
    timeouts: Timeouts,
) -> Result<(TcpStream, String), Vec<Attempt>> {
    let mut tried = Vec::new();
    for address in addresses {
        match connect_one(address, timeouts, &mut tried) {
            Some(stream) => return Ok((stream, address.clone())),
            None => continue,
        }
    }
    Err(tried)
}

/// One address: each address it resolves to, in order; failures go to `tried`.
fn connect_one(address: &str, t: Timeouts, tried: &mut Vec<Attempt>) -> Option<TcpStream> {
    let mut failed = |failure| {
        tried.push(Attempt {
            address: address.to_string(),
            failure,
        })
    };
    let resolved: Vec<_> = match address.to_socket_addrs() {
        Ok(r) => r.collect(),
        Err(e) => {
            failed(ConnectFailure::Resolve(e));
            return None;
        }
    };
    if resolved.is_empty() {
        failed(ConnectFailure::NoAddress);
    }
    for sa in resolved {
        match TcpStream::connect_timeout(&sa, t.connect) {
            Ok(s) => {
                let set = s
                    .set_read_timeout(Some(t.io))
                    .and_then(|()| s.set_write_timeout(Some(t.io)))
                    .and_then(|()| s.set_nodelay(true));
                match set {
                    Ok(()) => return Some(s),
                    Err(e) => failed(ConnectFailure::Socket(e)),
                }
            }
            Err(e) => failed(ConnectFailure::Connect(e)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn closed_port() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap().to_string();
        drop(l);
        a
    }

    #[test]
    fn the_first_address_that_accepts_is_used_and_the_others_are_reported() {
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let open_at = open.local_addr().unwrap().to_string();
        let closed = closed_port();
        let (_, used) = connect(&[closed.clone(), open_at.clone()], Timeouts::default()).unwrap();
        assert_eq!(used, open_at);

        // (An address without a port fails to resolve without asking any DNS server.)
        let tried =
            connect(&[closed.clone(), "127.0.0.1".into()], Timeouts::default()).unwrap_err();
        let text: Vec<String> = tried.iter().map(|a| a.to_string()).collect();
        assert_eq!(text[0], format!("{closed} (connection refused)"));
        assert!(text[1].starts_with("127.0.0.1 (cannot resolve"), "{text:?}");
    }
}
