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
