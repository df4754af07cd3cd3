//! Loopback ports: one nothing listens on, and waiting until a process listens on one.

use crate::wait::wait_until;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits (up to 20 s) until something accepts connections on 127.0.0.1:`port`; `what` names
/// it in the failure.
pub fn wait_port(port: u16, what: &str) {
    wait_until(
        &format!("{what} to listen on 127.0.0.1:{port}"),
        Duration::from_secs(20),
        Duration::from_millis(20),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}
