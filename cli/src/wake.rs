//! What wakes the worker besides its timer: local commits and network changes.
//!
//! - **Commits**, from any process: `PRAGMA data_version` on a connection of the worker's own
//!   changes when another connection commits; the worker then checks whether an own change was
//!   issued (`outpost_db_version()` grew), so its own sync's commits (pulled chunks) do not wake
//!   it again.
//! - **Network**: a netlink socket subscribed to IPv4/IPv6 address and route changes
//!   (`RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE`); where
//!   netlink is unavailable, `/proc/net/route` and `/proc/net/if_inet6` are compared every 5 s.

use rusqlite::Connection;
use std::time::{Duration, Instant};

/// Watches one database for commits by other connections.
pub struct Commits {
    conn: Connection,
    data_version: i64,
    issued: i64,
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

fn issued(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT outpost_db_version()", [], |r| r.get(0))
}

impl Commits {
    pub fn new(conn: Connection) -> rusqlite::Result<Commits> {
        Ok(Commits {
            data_version: data_version(&conn)?,
            issued: issued(&conn)?,
            conn,
        })
    }

    /// True when an own change was issued since the last call that returned true. A read that
    /// fails (the file busy in rollback-journal mode while another process commits) counts as
    /// no change yet: the next tick reads again, since the baseline is kept.
    pub fn new_local_change(&mut self) -> bool {
        let Ok(v) = data_version(&self.conn) else {
            return false;
        };
        if v == self.data_version {
            return false;
        }
        let Ok(i) = issued(&self.conn) else {
            return false;
        };
        self.data_version = v;
        let grew = i > self.issued;
        self.issued = i;
        grew
    }
}

/// Address and route changes.
pub enum Network {
    Netlink(libc::c_int),
    Polling { last: String, next: Instant },
}

const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

fn proc_net() -> String {
    ["/proc/net/route", "/proc/net/if_inet6"]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

impl Network {
    /// Netlink if the kernel allows it, else polling.
    pub fn open() -> Network {
        match netlink() {
            Ok(fd) => Network::Netlink(fd),
            Err(e) => {
                eprintln!(
                    "network changes: netlink unavailable ({e}); polling /proc/net every 5 s"
                );
                Network::Polling {
                    last: proc_net(),
                    next: Instant::now() + Duration::from_secs(5),
                }
            }
        }
    }

    /// True when addresses or routes changed since the last call (never blocks).
    pub fn changed(&mut self) -> bool {
        match self {
            Network::Netlink(fd) => {
                let mut any = false;
                let mut buf = [0u8; 8192];
                loop {
                    // SAFETY: fd is our non-blocking socket; buf is a writable buffer of its length.
                    let n = unsafe {
                        libc::recv(*fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                    };
                    if n <= 0 {
                        return any;
                    }
                    any = true;
                }
            }
            Network::Polling { last, next } => {
                if Instant::now() < *next {
                    return false;
                }
                *next = Instant::now() + Duration::from_secs(5);
                let now = proc_net();
                let changed = now != *last;
                *last = now;
                changed
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Network::Netlink(fd) = self {
            // SAFETY: we own fd and close it once.
            unsafe { libc::close(*fd) };
        }
    }
}

fn netlink() -> std::io::Result<libc::c_int> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups =
        RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;
    // SAFETY: addr is a valid sockaddr_nl of the given length.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the socket we just opened.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_testkit::netns::{in_netns, sh, Netns};
    use outpost_testkit::require::{is_root, require};

    #[test]
    fn an_address_added_in_the_workers_namespace_wakes_it() {
        if !require(
            "wake::network",
            "needs root (a network namespace)",
            is_root(),
        ) {
            return;
        }
        let ns = Netns::new("wake");
        let name = ns.0.clone();
        // The watcher opens its socket inside the namespace, as the worker does in its own.
        let (quiet, woke) = in_netns(&ns.0, move || {
            let mut network = Network::open();
            assert!(matches!(network, Network::Netlink(_)), "netlink available");
            let quiet = network.changed();
            sh(&[
                "ip",
                "-n",
                &name,
                "addr",
                "add",
                "10.99.0.1/24",
                "dev",
                "lo",
            ]);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut woke = false;
            while !woke && Instant::now() < deadline {
                woke = network.changed();
                std::thread::sleep(Duration::from_millis(20));
            }
            (quiet, woke)
        });
        assert!(!quiet, "nothing changed yet");
        assert!(woke, "an address change is seen within 5 s");
    }

    #[test]
    fn another_connections_tracked_commit_wakes_the_worker_and_a_pulled_one_does_not() {
        crate::engine::register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch(
            "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT);
             SELECT outpost_track('notes');
             CREATE TABLE scratch(x);",
        )
        .unwrap();
        let mut commits = Commits::new(Connection::open(&path).unwrap()).unwrap();
        assert!(!commits.new_local_change());
        // A commit that issues no own change (an untracked table, as a pulled batch issues
        // none either) does not wake it.
        app.execute("INSERT INTO scratch VALUES (1)", []).unwrap();
        assert!(!commits.new_local_change());
        app.execute("INSERT INTO notes VALUES ('n1', 'hello')", [])
            .unwrap();
        assert!(commits.new_local_change());
        assert!(!commits.new_local_change(), "once per change");
    }
}
