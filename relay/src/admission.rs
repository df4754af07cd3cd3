//! Admission to a sync port: which connections get a slot while strangers flood it.
//!
//! A serving box keeps two pools, so that connections nobody has authenticated can never take
//! the places of enrolled devices:
//! - **pending**: accepted, the handshake not finished. At most [`Limits::max_pending`] in all
//!   and [`Limits::pending_per_address`] per address ([`address_key`]: an IPv4 address, or an
//!   IPv6 /64, the block one host usually holds). They are held by [`Pending`].
//! - **sessions**: the handshake proved an enrolled key. At most [`Limits::max_sessions`] in all
//!   and [`Limits::sessions_per_key`] per key, and no cap per address: a whole clinic may reach
//!   the cloud from one NAT address. They are held by `listener::LiveSessions`.
//!
//! A newcomer over a pending cap takes the place of the oldest pending connection that has not
//! even delivered its first handshake message (of its own address when that address is over
//! its cap, else of the address holding the most pending connections): an idle or trickling
//! connection loses its place to any fresh one, so a device behind the flooding address still
//! gets in, and a flood from one address never holds more than its share. A pending connection
//! whose first message arrived is being checked (milliseconds) and keeps its place. When no
//! place can be taken the newcomer is refused. Either way the loser is sent the busy notice
//! (`outpost_protocol::handshake::BUSY_NOTICE`) before its connection closes, so a device
//! reports "busy, retry later", not a key mismatch.
//!
//! The whole handshake must also finish within [`Limits::handshake`] of the accept (a deadline,
//! not a per-read timeout), which the fronts enforce on their streams.
//!
//! Refusals are logged in aggregate ([`RefusalLog`]): a flood must not flood the log.

use outpost_protocol::handshake::HANDSHAKE_MAX_FRAME;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The limits of a serving port (docs/hub.md, "Connection limits"; the cloud's in
/// docs/cloud.md).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections still handshaking, in all.
    pub max_pending: usize,
    /// Connections still handshaking from one address (IPv4, or IPv6 /64).
    pub pending_per_address: usize,
    /// Authenticated sessions, in all.
    pub max_sessions: usize,
    /// Authenticated sessions of one device key.
    pub sessions_per_key: usize,
    /// Time from accept until the handshake proved the peer: the whole handshake.
    pub handshake: Duration,
    /// Longest silence from the peer once authenticated.
    pub idle: Duration,
}

impl Limits {
    /// A hub's (a Pi-class box on a clinic LAN): the default.
    pub const HUB: Limits = Limits {
        max_pending: 32,
        pending_per_address: 8,
        max_sessions: 256,
        sessions_per_key: 4,
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };

    /// The cloud's sync port (on the internet; clinics behind NAT, hubs).
    pub const CLOUD: Limits = Limits {
        max_pending: 256,
        pending_per_address: 16,
        max_sessions: 1024,
        sessions_per_key: 4,
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::HUB
    }
}

/// Why a connection was refused (or lost its place) for load: sent to the peer as the busy
/// notice, logged in aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Busy {
    /// Its address already has this many connections handshaking, none of them idle enough to
    /// give way.
    Address {
        /// [`Limits::pending_per_address`].
        limit: usize,
    },
    /// This many connections are handshaking, none of them idle enough to give way.
    Pending {
        /// [`Limits::max_pending`].
        limit: usize,
    },
    /// A newer connection took its place before it sent its first handshake message.
    Evicted,
    /// This many sessions are open.
    Sessions {
        /// [`Limits::max_sessions`].
        limit: usize,
    },
    /// Its key already has this many sessions open.
    Key {
        /// [`Limits::sessions_per_key`].
        limit: usize,
    },
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Busy::Address { limit } => write!(
                f,
                "busy: {limit} connections from this address are already handshaking"
            ),
            Busy::Pending { limit } => {
                write!(f, "busy: {limit} connections are already handshaking")
            }
            Busy::Evicted => f.write_str(
                "busy: a newer connection took this one's place before it sent its first handshake message",
            ),
            Busy::Sessions { limit } => write!(f, "busy: {limit} sessions are already open"),
            Busy::Key { limit } => {
                write!(f, "busy: this key already has {limit} sessions open")
            }
        }
    }
}

impl std::error::Error for Busy {}

impl Busy {
    /// The `Busy` inside an I/O error made of one (how a stream reports it), if any.
    pub fn of_io(e: &std::io::Error) -> Option<Busy> {
        e.get_ref()?.downcast_ref::<Busy>().copied()
    }

    /// This refusal as an I/O error (`ConnectionRefused`), for a stream to return.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, self)
    }
}

/// What counts as one address for the per-address cap: an IPv4 address (also IPv4-mapped IPv6),
/// or the /64 of an IPv6 address (a host may pick any address in its /64).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Ends a pending connection that lost its place: sends the busy notice, then closes it.
pub type Evict = Box<dyn FnOnce() + Send>;

struct Entry {
    addr: IpAddr,
    /// Set when it loses its place.
    evicted: Arc<AtomicBool>,
    /// Its first handshake message arrived: it is being checked and keeps its place.
    checking: bool,
    evict: Evict,
}

#[derive(Default)]
struct PendingState {
    next: u64,
    /// By arrival order: the first is the oldest.
    entries: BTreeMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

impl PendingState {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&entry.addr) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&entry.addr);
            }
        }
        Some(entry)
    }

    /// The oldest entry of `addr` that has not delivered its first message.
    fn oldest_idle(&self, addr: IpAddr) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| e.addr == addr && !e.checking)
            .map(|(id, _)| *id)
    }

    /// The address holding the most pending connections.
    fn heaviest(&self) -> Option<IpAddr> {
        self.per_address
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(a, _)| *a)
    }
}

/// The connections of a port that have not finished their handshake (see the module doc).
pub struct Pending {
    limits: Limits,
    state: Mutex<PendingState>,
    log: RefusalLog,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("limits", &self.limits)
            .field("open", &self.count())
            .finish()
    }
}

impl Pending {
    /// An empty pool under `limits`.
    pub fn new(limits: Limits) -> Arc<Pending> {
        Arc::new(Pending {
            limits,
            state: Mutex::default(),
            log: RefusalLog::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PendingState> {
        // Every update is a few map operations that cannot panic half-way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections are handshaking.
    pub fn count(&self) -> usize {
        self.lock().entries.len()
    }

    /// A connection from `peer` was accepted: its place in the pool, possibly taken from an
    /// idle older connection (whose `evict` then runs, on this thread), or why it is refused (the
    /// caller sends it the busy notice and closes it). `evict` ends this connection should it
    /// lose its place later.
    pub fn arrive(self: &Arc<Self>, peer: SocketAddr, evict: Evict) -> Result<Arrival, Busy> {
        let addr = address_key(peer.ip());
        let evicted = Arc::new(AtomicBool::new(false));
        let (id, victim) = {
            let mut state = self.lock();
            let from_addr = state.per_address.get(&addr).copied().unwrap_or(0);
            let victim = if from_addr >= self.limits.pending_per_address {
                match state.oldest_idle(addr) {
                    Some(id) => Some(id),
                    None => {
                        drop(state);
                        let busy = Busy::Address {
                            limit: self.limits.pending_per_address,
                        };
                        self.log.refused(peer, busy);
                        return Err(busy);
                    }
                }
            } else if state.entries.len() >= self.limits.max_pending {
                match state.heaviest().and_then(|a| state.oldest_idle(a)) {
                    Some(id) => Some(id),
                    None => {
                        drop(state);
                        let busy = Busy::Pending {
                            limit: self.limits.max_pending,
                        };
                        self.log.refused(peer, busy);
                        return Err(busy);
                    }
                }
            } else {
                None
            };
            let victim = victim.and_then(|id| state.remove(id));
            if let Some(v) = &victim {
                v.evicted.store(true, Ordering::SeqCst);
            }
            let id = state.next;
            state.next += 1;
            state.entries.insert(
                id,
                Entry {
                    addr,
                    evicted: evicted.clone(),
                    checking: false,
                    evict,
                },
            );
            *state.per_address.entry(addr).or_insert(0) += 1;
            (id, victim)
        };
        if let Some(victim) = victim {
            self.log
                .refused(SocketAddr::new(victim.addr, 0), Busy::Evicted);
            (victim.evict)();
        }
        Ok(Arrival {
            pending: self.clone(),
            id,
            evicted,
        })
    }
}

/// One pending connection's place; dropping it (the handshake ended either way) frees it.
pub struct Arrival {
    pending: Arc<Pending>,
    id: u64,
    evicted: Arc<AtomicBool>,
}

/// Tells, from elsewhere, whether a connection lost its place ([`Arrival::watch`]).
#[derive(Clone, Debug)]
pub struct EvictionWatch(Arc<AtomicBool>);

impl EvictionWatch {
    /// True once the connection lost its place to a newer one.
    pub fn evicted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arrival").field("id", &self.id).finish()
    }
}

impl Arrival {
    /// The connection's first handshake message arrived whole: from now on it keeps its place
    /// until the handshake ends. `false` when it already lost its place (it is being closed).
    pub fn first_message(&self) -> bool {
        let mut state = self.pending.lock();
        match state.entries.get_mut(&self.id) {
            Some(e) => {
                e.checking = true;
                true
            }
            None => false,
        }
    }

    /// True when the connection lost its place to a newer one.
    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// A handle telling whether this connection lost its place, also after the arrival is gone.
    pub fn watch(&self) -> EvictionWatch {
        EvictionWatch(self.evicted.clone())
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.pending.lock().remove(self.id);
    }
}

/// Follows the first handshake frame as its bytes arrive, to tell when it is whole.
#[derive(Debug, Default)]
pub struct FirstFrame {
    prefix: [u8; 2],
    received: usize,
    whole: bool,
}

impl FirstFrame {
    /// Counts `bytes`; true exactly once, when they complete the first frame (a length prefix
    /// above the handshake's largest frame never completes: the relay refuses it at once).
    pub fn add(&mut self, bytes: &[u8]) -> bool {
        if self.whole {
            return false;
        }
        let take = 2usize.saturating_sub(self.received).min(bytes.len());
        if take > 0 {
            self.prefix[self.received..self.received + take].copy_from_slice(&bytes[..take]);
        }
        self.received = self.received.saturating_add(bytes.len());
        if self.received < 2 {
            return false;
        }
        let len = usize::from(u16::from_be_bytes(self.prefix));
        if len == 0 || len > HANDSHAKE_MAX_FRAME || self.received < 2 + len {
            return false;
        }
        self.whole = true;
        true
    }
}

/// How often refusals are summed up in the log.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Logs refusals for load: the first of a window with its peer and reason, the others summed
/// up when the next window starts, so a flood costs a log line every `LOG_WINDOW` (10 s).
#[derive(Debug, Default)]
pub struct RefusalLog {
    state: Mutex<Option<(Instant, u64)>>,
}

impl RefusalLog {
    /// Notes that `peer` was refused (or evicted) because of `busy`.
    pub fn refused(&self, peer: SocketAddr, busy: Busy) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match &mut *state {
            Some((start, count)) if now.duration_since(*start) < LOG_WINDOW => *count += 1,
            other => {
                if let Some((_, count)) = other {
                    if *count > 0 {
                        log::warn!(
                            "refused {count} more connection(s) for load in the last {} s",
                            LOG_WINDOW.as_secs()
                        );
                    }
                }
                *other = Some((now, 0));
                let who = if peer.port() == 0 {
                    peer.ip().to_string()
                } else {
                    peer.to_string()
                };
                log::warn!("peer={who} refused: {busy} (further refusals are counted)");
            }
        }
    }
}

#[cfg(test)]
mod tests;
