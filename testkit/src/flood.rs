//! A stranger flooding a port from one address: [`Flood`] keeps a number of TCP connections
//! open from a chosen local address (`127.0.0.2` on loopback, so the device under test, on
//! `127.0.0.1`, is another address), some idle, some trickling a byte at a time, and re-opens
//! each one the server closes, as fast as it can. It stops when dropped.
//!
//! The trickled bytes start like a handshake's first frame (a length prefix of 189), so a
//! server that counts bytes toward a first message sees them progress and never finish.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the flood sends once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Nothing: holds the connection.
    Idle,
    /// One byte every [`TRICKLE`].
    Trickle,
}

/// How often a trickling connection sends its next byte.
pub const TRICKLE: Duration = Duration::from_millis(300);

/// A running flood (see the module doc). Dropping it closes every connection.
pub struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flood")
            .field("opened", &self.opened())
            .finish()
    }
}

/// A TCP connection to `to` from `from` (port chosen by the system): binds before it connects,
/// which std cannot. Waits at most `timeout` for the server's answer.
pub fn connect_from(from: Ipv4Addr, to: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // A connect that waits longer than this fails (SO_SNDTIMEO bounds connect(2) too).
    stream.set_write_timeout(Some(timeout))?;
    let local = sockaddr(SocketAddrV4::new(from, 0));
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes, alive for the call.
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sockaddr(to);
    // SAFETY: as above, for the remote address.
    if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

struct Slot {
    stream: TcpStream,
    style: Style,
    sent: usize,
    next: Instant,
}

impl Flood {
    /// Starts `connections` connections from `from` to `to`, every `trickle_every`th one
    /// trickling (0: none), spread over `threads` threads.
    pub fn start(
        from: Ipv4Addr,
        to: SocketAddr,
        connections: usize,
        trickle_every: usize,
        threads: usize,
    ) -> Flood {
        let SocketAddr::V4(to) = to else {
            panic!("the flood dials IPv4 only, not {to}")
        };
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let threads = threads.max(1);
        let handles = (0..threads)
            .map(|t| {
                let (stop, opened) = (stop.clone(), opened.clone());
                let share: Vec<Style> = (0..connections)
                    .filter(|i| i % threads == t)
                    .map(|i| {
                        if trickle_every > 0 && i % trickle_every == 0 {
                            Style::Trickle
                        } else {
                            Style::Idle
                        }
                    })
                    .collect();
                std::thread::spawn(move || run(from, to, share, &stop, &opened))
            })
            .collect();
        Flood {
            stop,
            opened,
            threads: handles,
        }
    }

    /// Connections opened so far (re-opens included).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The trickled bytes: a first frame's length prefix (189), then its body, never finished.
fn trickle_byte(n: usize) -> u8 {
    match n {
        0 => 0,
        1 => 189,
        _ => 0x5a,
    }
}

fn run(
    from: Ipv4Addr,
    to: SocketAddrV4,
    styles: Vec<Style>,
    stop: &AtomicBool,
    opened: &AtomicU64,
) {
    let mut slots: Vec<Option<Slot>> = styles.iter().map(|_| None).collect();
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::SeqCst) {
        for (slot, style) in slots.iter_mut().zip(&styles) {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let alive = match slot {
                None => false,
                Some(s) => match (&s.stream).read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true, // the busy notice: the close follows
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                },
            };
            if !alive {
                *slot = connect_from(from, to, Duration::from_millis(500))
                    .and_then(|stream| {
                        stream.set_nonblocking(true)?;
                        Ok(stream)
                    })
                    .ok()
                    .map(|stream| {
                        opened.fetch_add(1, Ordering::Relaxed);
                        Slot {
                            stream,
                            style: *style,
                            sent: 0,
                            next: Instant::now(),
                        }
                    });
                continue;
            }
            if let Some(s) = slot {
                if s.style == Style::Trickle && Instant::now() >= s.next {
                    let _ = (&s.stream).write(&[trickle_byte(s.sent)]);
                    s.sent += 1;
                    s.next = Instant::now() + TRICKLE;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
