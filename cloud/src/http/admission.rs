//! Who gets a REST connection: strangers are held to a few connections per address, and
//! connections that have shown a valid API token move to slots of their own, so one address
//! flooding the port cannot keep out a client with the token (issue 17, finding 2).
//!
//! A connection is admitted at accept as *unauthenticated*: at most
//! [`Limits::unauthenticated_per_address`] per address and [`Limits::unauthenticated`] in all;
//! past either it is closed at once (answering would cost a TLS handshake, which is what a flood
//! wants us to spend). Its first request with a valid token moves it to the *authenticated*
//! slots ([`Limits::authenticated`] in all; past that the request is answered 503 with
//! `Retry-After`). The token ships inside every app, so authenticated slots are bounded too.
//!
//! An address is an IPv4 address, or an IPv6 /64 (one host usually has a whole /64).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

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

#[derive(Debug, Default)]
struct Counts {
    per_address: HashMap<AddressKey, usize>,
    unauthenticated: usize,
    authenticated: usize,
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

    /// Admits a new connection from `ip` as unauthenticated, or says why not.
    pub fn arrive(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let key = key(ip);
        let mut c = self.counts();
        if c.unauthenticated >= self.limits.unauthenticated {
            return Err(Refused::Full {
                limit: self.limits.unauthenticated,
            });
        }
        let here = c.per_address.entry(key).or_insert(0);
        if *here >= self.limits.unauthenticated_per_address {
            return Err(Refused::AddressFull {
                limit: self.limits.unauthenticated_per_address,
            });
        }
        *here += 1;
        c.unauthenticated += 1;
        Ok(Ticket {
            admission: self.clone(),
            key,
            authenticated: false,
        })
    }

    /// (unauthenticated, authenticated) connections open now.
    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let c = self.counts();
        (c.unauthenticated, c.authenticated)
    }

    fn leave_unauthenticated(c: &mut Counts, key: AddressKey) {
        c.unauthenticated -= 1;
        if let Some(n) = c.per_address.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&key);
            }
        }
    }
}

/// One admitted connection's slot; given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    key: AddressKey,
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
        Admission::leave_unauthenticated(&mut c, self.key);
        c.authenticated += 1;
        self.authenticated = true;
        Ok(())
    }

    /// Whether the connection has shown a valid token.
    #[cfg(test)]
    fn is_authenticated(&self) -> bool {
        self.authenticated
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        if self.authenticated {
            c.authenticated -= 1;
        } else {
            Admission::leave_unauthenticated(&mut c, self.key);
        }
    }
}

/// `ip` as the address it is counted under, for logs (`2001:db8:1:2::/64`).
pub fn counted_as(ip: IpAddr) -> String {
    match key(ip) {
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

    #[test]
    fn one_address_cannot_take_every_unauthenticated_slot() {
        let a = Admission::new(SMALL);
        let _t1 = a.arrive(ip("10.0.0.1")).unwrap();
        let _t2 = a.arrive(ip("10.0.0.1")).unwrap();
        assert_eq!(
            a.arrive(ip("10.0.0.1")).unwrap_err(),
            Refused::AddressFull { limit: 2 }
        );
        // The same host through an IPv4-mapped IPv6 address counts as the same address.
        assert!(a.arrive(ip("::ffff:10.0.0.1")).is_err());
        let _t3 = a.arrive(ip("10.0.0.2")).unwrap();
        assert_eq!(
            a.arrive(ip("10.0.0.3")).unwrap_err(),
            Refused::Full { limit: 3 }
        );
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_prefix() {
        let a = Admission::new(SMALL);
        let _t1 = a.arrive(ip("2001:db8:0:1::1")).unwrap();
        let _t2 = a.arrive(ip("2001:db8:0:1::2")).unwrap();
        assert!(a.arrive(ip("2001:db8:0:1:ffff::3")).is_err());
        assert!(a.arrive(ip("2001:db8:0:2::1")).is_ok());
        assert_eq!(counted_as(ip("2001:db8:0:1::9")), "2001:db8:0:1::/64");
    }

    #[test]
    fn a_token_moves_the_connection_out_of_its_address_slots() {
        let a = Admission::new(SMALL);
        let mut t1 = a.arrive(ip("10.0.0.1")).unwrap();
        let _t2 = a.arrive(ip("10.0.0.1")).unwrap();
        t1.authenticate().unwrap();
        assert!(t1.is_authenticated());
        assert_eq!(a.open(), (1, 1));
        // Its unauthenticated slot is free again for the address.
        let mut t3 = a.arrive(ip("10.0.0.1")).unwrap();
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
    }
}
