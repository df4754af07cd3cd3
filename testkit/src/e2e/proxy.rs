//! A loopback TCP proxy that cuts connections: it forwards at most a byte budget of each
//! connection (both directions together), then closes both sides, so a test can cut a session
//! at any byte offset. It can also pace what it forwards (bytes per second, each direction), so
//! a transfer takes about as long on a fast machine as a test needs to watch it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A loopback TCP proxy that forwards at most `budget` bytes (both directions together) of each
/// connection, then closes both sides.
pub struct Proxy {
    /// The loopback port it listens on.
    pub port: u16,
    /// Bytes each new connection may forward (read when it is accepted).
    pub budget: Arc<AtomicUsize>,
    /// Bytes the latest connection forwarded so far.
    pub forwarded: Arc<Mutex<usize>>,
    /// Bytes per second each direction forwards at most (0: as fast as it comes).
    pub pace: Arc<AtomicUsize>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `target` on 127.0.0.1.
    pub fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let budget = Arc::new(AtomicUsize::new(usize::MAX));
        let forwarded = Arc::new(Mutex::new(0));
        let pace = Arc::new(AtomicUsize::new(0));
        let (b, f, p) = (budget.clone(), forwarded.clone(), pace.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let left = Arc::new(Mutex::new(b.load(Ordering::SeqCst)));
                *f.lock().unwrap() = 0;
                let ends = [client.try_clone().unwrap(), server.try_clone().unwrap()];
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let left = left.clone();
                    let ends = [ends[0].try_clone().unwrap(), ends[1].try_clone().unwrap()];
                    let (f, p) = (f.clone(), p.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        let (started, mut sent) = (std::time::Instant::now(), 0usize);
                        loop {
                            let k = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => k,
                            };
                            let (take, cut) = {
                                let mut l = left.lock().unwrap();
                                let take = k.min(*l);
                                *l -= take;
                                *f.lock().unwrap() += take;
                                (take, *l == 0)
                            };
                            if to.write_all(&buf[..take]).is_err() {
                                break;
                            }
                            sent += take;
                            let pace = p.load(Ordering::SeqCst);
                            if pace > 0 {
                                let due =
                                    std::time::Duration::from_secs_f64(sent as f64 / pace as f64);
                                if let Some(wait) = due.checked_sub(started.elapsed()) {
                                    std::thread::sleep(wait);
                                }
                            }
                            if cut {
                                for e in &ends {
                                    let _ = e.shutdown(Shutdown::Both);
                                }
                                return;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Proxy {
            port,
            budget,
            forwarded,
            pace,
        }
    }
}
