//! Where the uplink's byte streams come from: the OS's sockets ([`StdDial`], `--net std:`) or
//! the hub's own embassy-net stack (`--net packet:/tap:`, a connection bridged from its
//! executor thread). Either becomes an `outpost_link::Wire` for the link to the cloud.

use outpost_link::{ConnectFailure, Timeouts, Wire};
use std::time::Duration;

/// A connection bridged from the hub's own stack (`--net packet:/tap:`) is a link's byte
/// stream like a socket.
impl Wire for crate::net::bridge::BridgedConn {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        crate::net::bridge::BridgedConn::set_read_timeout(self, Some(timeout));
        Ok(())
    }
}

/// A byte stream to the cloud.
pub type CloudWire = Box<dyn Wire + Send>;

/// Opens byte streams to the cloud (over the OS's sockets, or some other stack).
pub trait Dial: Send + 'static {
    /// Connects to `address` (`host:port`) within `timeouts.connect`, with `timeouts.io` as
    /// read/write timeout.
    fn dial(&self, address: &str, timeouts: Timeouts) -> Result<CloudWire, ConnectFailure>;
}

/// [`Dial`] over the OS's TCP sockets.
#[derive(Debug, Default)]
pub struct StdDial;

impl Dial for StdDial {
    fn dial(&self, address: &str, timeouts: Timeouts) -> Result<CloudWire, ConnectFailure> {
        match outpost_link::connect(&[address.to_string()], timeouts) {
            Ok((stream, _)) => Ok(Box::new(stream)),
            // (Each address the name resolves to was tried: the last one's failure.)
            Err(mut tried) => Err(tried.pop().map_or(ConnectFailure::NoAddress, |a| a.failure)),
        }
    }
}

/// [`Dial`] over the hub's own stack (`--net packet:/tap:`): `IPv4:PORT` addresses only.
impl Dial for crate::net::dial::Dialer {
    fn dial(&self, address: &str, timeouts: Timeouts) -> Result<CloudWire, ConnectFailure> {
        let to = crate::net::dial::parse_address(address).map_err(ConnectFailure::Resolve)?;
        let mut conn = self
            .connect(to, timeouts.connect)
            .map_err(ConnectFailure::Connect)?;
        conn.set_read_timeout(Some(timeouts.io));
        conn.set_write_timeout(Some(timeouts.io));
        Ok(Box::new(conn))
    }
}
