//! Who gets a REST connection: strangers are held to a few connections per address, and
//! connections that have shown a valid API token move to slots of their own, so one address
//! flooding the port cannot keep out a client with the token (issue 17, finding 2).
//!
//! A connection is admitted at accept as *unauthenticated*: at most
//! [`Limits::unauthenticated_per_address`] per address and [`Limits::unauthenticated`] in all.
//! When one of these is full, the oldest unauthenticated connection it counts is closed to make
//! room if it has had [`EVICTABLE_AFTER`] to show a token and has not (a client with the token
//! shows it within a round trip or two of the handshake, a flood's connection never does), else
//! the new connection is closed at once (answering would cost a TLS handshake, which is what a
//! flood wants us to spend). So a flood keeps a newcomer out only by opening a slot's worth of
//! connections every [`EVICTABLE_AFTER`]. A connection's first request with a valid token moves
//! it to the *authenticated* slots ([`Limits::authenticated`] in all; past that the request is
//! answered 503 with `Retry-After`). The token ships inside every app, so those are bounded too.
//!
//! An address is an IPv4 address, or an IPv6 /64 (one host usually has a whole /64).

use super::deadline::Deadline;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an unauthenticated connection is safe from being closed to make room for a newer
/// one.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(2);

/// How many connections of each kind are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections without a valid token yet, from one address.
    pub unauthenticated_per_address: usize,
    /// Connections without a valid token yet, from everyone.
    pub unauthenticated: usize,
    /// Connections that have shown a valid token.
    pub authenticated: usize,
}

impl Limits {
    /// The cloud's limits (docs/rest-api.md).
    pub const DEFAULT: Limits = Limits {
        unauthenticated_per_address: 32,
        unauthenticated: 512,
        authenticated: 128,
    };
}

/// Why a connection was not admitted, or not moved to an authenticated slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address already has this many connections without a token.
    AddressFull {
        /// [`Limits::unauthenticated_per_address`].
        limit: usize,
    },
    /// This many connections without a token are open.
    Full {
        /// [`Limits::unauthenticated`].
        limit: usize,
    },
    /// This many connections with a token are open.
    AuthenticatedFull {
        /// [`Limits::authenticated`].
        limit: usize,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::AddressFull { limit } => write!(
                f,
                "busy: {limit} connections without a token are open from this address; retry"
            ),
            Refused::Full { limit } => {
                write!(
                    f,
                    "busy: {limit} connections without a token are open; retry"
                )
            }
            Refused::AuthenticatedFull { limit } => {
                write!(f, "busy: {limit} clients are connected; retry")
            }
        }
    }
}

impl std::error::Error for Refused {}

/// The key an address is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4([u8; 4]),
    /// The first 64 bits.
    V6Prefix(u64),
}

fn key(ip: IpAddr) -> AddressKey {
    match ip {
        IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => AddressKey::V4(v4.octets()),
            None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
        },
    }
}

/// An admitted connection that has not shown a token yet.
#[derive(Debug)]
struct Waiting {
    key: AddressKey,
    since: Instant,
    /// Expired at once to close it when it is evicted.
    deadline: Arc<Deadline>,
}

#[derive(Debug, Default)]
struct Counts {
    per_address: HashMap<AddressKey, usize>,
    unauthenticated: usize,
    authenticated: usize,
    /// The unauthenticated connections by ticket id.
    waiting: HashMap<u64, Waiting>,
    /// Ticket ids in order of arrival; ids no longer waiting are skipped and dropped lazily.
    order: VecDeque<u64>,
    next_id: u64,
}

impl Counts {
    /// The oldest waiting connection (of `key`, if given), if it may be evicted at `now`.
    fn evictable(&mut self, key: Option<AddressKey>, now: Instant) -> Option<u64> {
        while let Some(id) = self.order.front() {
            if self.waiting.contains_key(id) {
                break;
            }
            self.order.pop_front();
        }
        let waiting = &self.waiting;
        let id = *self.order.iter().find(|id| {
            waiting
                .get(id)
                .is_some_and(|w| key.is_none_or(|k| k == w.key))
        })?;
        let w = &self.waiting[&id];
        (now.duration_since(w.since) >= EVICTABLE_AFTER).then_some(id)
    }

    /// Stops counting waiting connection `id` (evicted, authenticated or gone).
    fn stop_waiting(&mut self, id: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&id)?;
        self.unauthenticated -= 1;
        if let Some(n) = self.per_address.get_mut(&w.key) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&w.key);
            }
        }
        // Keep the arrival order from growing with ids long gone.
        if self.order.len() > 2 * self.waiting.len() + 64 {
            let waiting = &self.waiting;
            self.order.retain(|id| waiting.contains_key(id));
        }
        Some(w)
    }
}

/// The REST listener's connection counts.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    counts: Mutex<Counts>,
}

impl Admission {
    /// No connection yet.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Counts are updated in single statements: a panic elsewhere leaves them consistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `ip` as unauthenticated, evicting an older one if its
    /// slots are full, or says why not. `deadline` is the new connection's: expired at once if
    /// it is evicted in turn.
    pub fn arrive(
        self: &Arc<Self>,
        ip: IpAddr,
        deadline: Arc<Deadline>,
    ) -> Result<Ticket, Refused> {
        self.arrive_at(ip, deadline, Instant::now())
    }

    fn arrive_at(
        self: &Arc<Self>,
        ip: IpAddr,
        deadline: Arc<Deadline>,
        now: Instant,
    ) -> Result<Ticket, Refused> {
        let key = key(ip);
        let mut c = self.counts();
        let limits = self.limits;
        if c.per_address.get(&key).copied().unwrap_or(0) >= limits.unauthenticated_per_address {
            let Some(old) = c.evictable(Some(key), now) else {
                return Err(Refused::AddressFull {
                    limit: limits.unauthenticated_per_address,
                });
            };
            evict(&mut c, old);
        }
        if c.unauthenticated >= limits.unauthenticated {
            let Some(old) = c.evictable(None, now) else {
                return Err(Refused::Full {
                    limit: limits.unauthenticated,
                });
            };
            evict(&mut c, old);
        }
        *c.per_address.entry(key).or_insert(0) += 1;
        c.unauthenticated += 1;
        let id = c.next_id;
        c.next_id += 1;
        c.waiting.insert(
            id,
            Waiting {
                key,
                since: now,
                deadline,
            },
        );
        c.order.push_back(id);
        Ok(Ticket {
            admission: self.clone(),
            id,
            authenticated: false,
        })
    }

    /// (unauthenticated, authenticated) connections open now.
    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let c = self.counts();
        (c.unauthenticated, c.authenticated)
    }
}

fn evict(c: &mut Counts, id: u64) {
    if let Some(w) = c.stop_waiting(id) {
        log::debug!(
            "https: closing a connection from {} that showed no token in {} s, to make room",
            counted_as_key(w.key),
            EVICTABLE_AFTER.as_secs()
        );
        w.deadline.evict();
    }
}

/// One admitted connection's slot; given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    authenticated: bool,
}

impl Ticket {
    /// Moves the connection to an authenticated slot (after a request with a valid token).
    /// Already authenticated: nothing to do.
    pub fn authenticate(&mut self) -> Result<(), Refused> {
        if self.authenticated {
            return Ok(());
        }
        let limits = self.admission.limits;
        let mut c = self.admission.counts();
        if c.authenticated >= limits.authenticated {
            return Err(Refused::AuthenticatedFull {
                limit: limits.authenticated,
            });
        }
        if c.stop_waiting(self.id).is_none() {
            // Evicted a moment ago: its connection is being closed.
            return Err(Refused::Full {
                limit: limits.unauthenticated,
            });
        }
        c.authenticated += 1;
        self.authenticated = true;
        Ok(())
    }

    /// Whether the connection has shown a valid token.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        if self.authenticated {
            c.authenticated -= 1;
        } else {
            // Nothing to give back if it was evicted.
            c.stop_waiting(self.id);
        }
    }
}

/// `ip` as the address it is counted under, for logs (`2001:db8:1:2::/64`).
pub fn counted_as(ip: IpAddr) -> String {
    counted_as_key(key(ip))
}

fn counted_as_key(key: AddressKey) -> String {
    match key {
        AddressKey::V4(o) => IpAddr::from(o).to_string(),
        AddressKey::V6Prefix(p) => format!("{}/64", Ipv6Addr::from(u128::from(p) << 64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        unauthenticated_per_address: 2,
        unauthenticated: 3,
        authenticated: 1,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    trait Arrive {
        fn arrive_now(&self, ip: IpAddr) -> Result<Ticket, Refused>;
    }

    impl Arrive for Arc<Admission> {
        fn arrive_now(&self, ip: IpAddr) -> Result<Ticket, Refused> {
            self.arrive(ip, Deadline::new())
        }
    }

    #[test]
    fn one_address_cannot_take_every_unauthenticated_slot() {
        let a = Admission::new(SMALL);
        let _t1 = a.arrive_now(ip("10.0.0.1")).unwrap();
        let _t2 = a.arrive_now(ip("10.0.0.1")).unwrap();
        assert_eq!(
            a.arrive_now(ip("10.0.0.1")).unwrap_err(),
            Refused::AddressFull { limit: 2 }
        );
        // The same host through an IPv4-mapped IPv6 address counts as the same address.
        assert!(a.arrive_now(ip("::ffff:10.0.0.1")).is_err());
        let _t3 = a.arrive_now(ip("10.0.0.2")).unwrap();
        assert_eq!(
            a.arrive_now(ip("10.0.0.3")).unwrap_err(),
            Refused::Full { limit: 3 }
        );
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_prefix() {
        let a = Admission::new(SMALL);
        let _t1 = a.arrive_now(ip("2001:db8:0:1::1")).unwrap();
        let _t2 = a.arrive_now(ip("2001:db8:0:1::2")).unwrap();
        assert!(a.arrive_now(ip("2001:db8:0:1:ffff::3")).is_err());
        assert!(a.arrive_now(ip("2001:db8:0:2::1")).is_ok());
        assert_eq!(counted_as(ip("2001:db8:0:1::9")), "2001:db8:0:1::/64");
    }

    #[test]
    fn a_token_moves_the_connection_out_of_its_address_slots() {
        let a = Admission::new(SMALL);
        let mut t1 = a.arrive_now(ip("10.0.0.1")).unwrap();
        let _t2 = a.arrive_now(ip("10.0.0.1")).unwrap();
        t1.authenticate().unwrap();
        assert!(t1.is_authenticated());
        assert_eq!(a.open(), (1, 1));
        // Its unauthenticated slot is free again for the address.
        let mut t3 = a.arrive_now(ip("10.0.0.1")).unwrap();
        assert_eq!(
            t3.authenticate().unwrap_err(),
            Refused::AuthenticatedFull { limit: 1 }
        );
        drop(t1);
        t3.authenticate().unwrap();
        drop(t3);
        drop(_t2);
        assert_eq!(a.open(), (0, 0));
        assert!(a.counts().per_address.is_empty());
        assert!(a.counts().waiting.is_empty());
    }

    #[test]
    fn a_full_address_or_listener_makes_room_by_closing_its_oldest_stranger() {
        use super::super::deadline::Phase;
        let a = Admission::new(SMALL);
        let t0 = Instant::now();
        let d1 = Deadline::new();
        let _t1 = a.arrive_at(ip("10.0.0.1"), d1.clone(), t0).unwrap();
        let _t2 = a.arrive_at(ip("10.0.0.1"), Deadline::new(), t0).unwrap();
        // Full address, but its strangers are still young: refused.
        let young = t0 + EVICTABLE_AFTER / 2;
        assert!(a.arrive_at(ip("10.0.0.1"), Deadline::new(), young).is_err());
        // Older than EVICTABLE_AFTER without a token: the oldest is closed for the newcomer.
        let later = t0 + EVICTABLE_AFTER;
        let d3 = Deadline::new();
        let _t3 = a.arrive_at(ip("10.0.0.1"), d3.clone(), later).unwrap();
        assert_eq!(d1.phase(), Phase::Evicted);
        assert_eq!(a.open(), (2, 0));
        // The whole listener full (3): the oldest stranger anywhere makes room.
        let _t4 = a.arrive_at(ip("10.0.0.2"), Deadline::new(), later).unwrap();
        let _t5 = a.arrive_at(ip("10.0.0.3"), Deadline::new(), later).unwrap();
        assert_eq!(a.open(), (3, 0));
        assert_ne!(d3.phase(), Phase::Evicted);
        // The evicted connection's ticket gives nothing back twice.
        drop(_t1);
        assert_eq!(a.open(), (3, 0));
        drop((_t2, _t3, _t4, _t5));
        assert_eq!(a.open(), (0, 0));
        assert!(a.counts().waiting.is_empty());
    }
}
