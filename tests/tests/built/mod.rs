//! What the device-level end-to-end tests share: the release-built hub, extension and `outpost`
//! command (built once per test process; a no-op when the suite's build stage already ran), a
//! scratch directory on tmpfs, a free loopback port, and a proxy that cuts connections.
#![allow(dead_code)] // each test file uses part of this

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Paths of the release artifacts the tests run.
pub struct Built {
    /// `outpost-hub`.
    pub hub: PathBuf,
    /// `liboutpost.so`.
    pub ext: PathBuf,
    /// `outpost` (the device command).
    pub cli: PathBuf,
}

/// Builds the hub, the extension and the CLI (release), once per test process.
pub fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let status = Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["build", "--release", "-p", "outpost-hub", "-p", "outpost"])
            // The cloud too (tests/tests/cloudrun uses it): building a different set of packages
            // unifies shared crates' features differently and rebuilds them, and the extension,
            // at every test process (uplink.rs builds hub + cloud + extension: the same set).
            .args(["-p", "outpost-cli", "-p", "outpost-cloud"])
            .status()
            .expect("cargo build");
        assert!(
            status.success(),
            "building the hub, extension and CLI failed"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let b = Built {
            hub: target.join("release/outpost-hub"),
            ext: target.join("release/liboutpost.so"),
            cli: target.join("release/outpost"),
        };
        assert!(b.hub.exists() && b.ext.exists() && b.cli.exists());
        b
    })
}

/// A scratch directory, on tmpfs when there is one (the tests fsync a lot).
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback TCP proxy that forwards at most `budget` bytes (both directions together) of each
/// connection, then closes both sides.
pub struct Proxy {
    pub port: u16,
    /// Bytes each new connection may forward (read when it is accepted).
    pub budget: Arc<AtomicUsize>,
    /// Bytes the latest connection forwarded so far.
    pub forwarded: Arc<Mutex<usize>>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `target` on 127.0.0.1.
    pub fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let budget = Arc::new(AtomicUsize::new(usize::MAX));
        let forwarded = Arc::new(Mutex::new(0));
        let (b, f) = (budget.clone(), forwarded.clone());
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
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
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
        }
    }
}
