//! The byte stream a [`crate::Link`] runs over: any blocking `Read + Write` whose reads can be
//! bounded in time. The OS's TCP sockets are one; the hub's own network stack hands its
//! uplink another (a connection bridged from its executor thread), implemented there.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A blocking byte stream to the peer.
///
/// A read that waited for the timeout set last must fail with `ErrorKind::TimedOut` or
/// `ErrorKind::WouldBlock` (what std sockets do); the link treats both as "nothing yet".
pub trait Wire: Read + Write {
    /// The longest wait of one `read` (never zero: callers pass at least 1 ms).
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;

    /// Ends the connection in both directions now. The default does nothing: dropping the
    /// stream closes it.
    fn shutdown(&mut self) {}
}

impl Wire for TcpStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        TcpStream::set_read_timeout(self, Some(timeout))
    }

    fn shutdown(&mut self) {
        // Already closed by the peer, or never connected: nothing left to end.
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
}

impl<W: Wire + ?Sized> Wire for Box<W> {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }

    fn shutdown(&mut self) {
        (**self).shutdown()
    }
}
