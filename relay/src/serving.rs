//! What every connection of one serving process shares: the hub's device-facing server, or the
//! cloud's session listener.
//!
//! [`Stores`] is what a serving process serves from: its [`Identity`] and the paths of its
//! mailbox and allowlist files. Each box builds it from its own data directory (the hub's and the
//! cloud's lay their files out independently), so this crate owns no directory layout.
//! [`Serving`] adds the channel limits, the role announced in hellos, and two counters the
//! connections and the process's other threads watch: commits acknowledged (news for live peers)
//! and empty id grants (a delegated id pool that may want a refill). It also keeps the process's
//! monotonic epoch, from which [`Serving::now`] reads the time relays are driven with, the
//! [`StagingBudget`] all its connections' pushes share, and the pools of SQLite connections its
//! relays borrow a step at a time (`crate::pool`).

use crate::allowlist::{Allowlist, AllowlistError};
use crate::identity::Identity;
use crate::pool::Pool;
use crate::staging::{StagingBudget, DEFAULT_STAGING_BUDGET};
use outpost_mailbox::{ControlOwner, Mailbox, MailboxError};
use outpost_protocol::channel::Limits as ChannelLimits;
use outpost_protocol::control::Root;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::PeerRole;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a serving process serves from.
#[derive(Clone, Debug)]
pub struct Stores {
    /// Its identity (the Noise static key and the site id its hellos announce).
    pub identity: Identity,
    /// The mailbox file (`outpost_mailbox`).
    pub mailbox: PathBuf,
    /// The allowlist file ([`Allowlist`]).
    pub allowlist: PathBuf,
    /// Where the stores are instead of those files, when elsewhere: a cloud whose tenant is in
    /// PostgreSQL keeps both there, shared by every process serving it.
    pub elsewhere: Option<Arc<dyn OpenStores>>,
}

/// Opens a serving process's stores kept elsewhere than its files (the cloud's
/// `datadir.rs`, for a tenant in PostgreSQL).
pub trait OpenStores: std::fmt::Debug + Send + Sync {
    /// A new connection to the mailbox.
    fn mailbox(&self) -> Result<Mailbox, MailboxError>;
    /// A new connection to the allowlist.
    fn allowlist(&self) -> Result<Allowlist, AllowlistError>;
}

impl Stores {
    /// The stores in `mailbox` and `allowlist`, files.
    pub fn files(identity: Identity, mailbox: PathBuf, allowlist: PathBuf) -> Stores {
        Stores {
            identity,
            mailbox,
            allowlist,
            elsewhere: None,
        }
    }

    /// A new connection to the mailbox (one per thread).
    pub fn mailbox(&self) -> Result<Mailbox, MailboxError> {
        match &self.elsewhere {
            Some(e) => e.mailbox(),
            None => Mailbox::open(&self.mailbox),
        }
    }

    /// A new connection to the allowlist (one per thread).
    pub fn allowlist(&self) -> Result<Allowlist, AllowlistError> {
        match &self.elsewhere {
            Some(e) => e.allowlist(),
            None => Allowlist::open(&self.allowlist),
        }
    }
}

/// The time a relay is driven at, read by its driver: the deadlines run on the monotonic
/// clock, token expiry and the session's hello on the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    /// Milliseconds since the serving process started (monotonic).
    pub monotonic_ms: u64,
    /// Milliseconds since the Unix epoch (the wall clock; 0 if it is set before 1970).
    pub unix_ms: u64,
}

impl Time {
    /// The wall-clock time in whole seconds.
    pub fn unix_secs(&self) -> u64 {
        self.unix_ms / 1000
    }
}

/// Idle mailbox connections kept for the relays' next steps: enough for the sessions a
/// Pi-class hub serves at the same moment (two cores); more are opened when needed and closed
/// after.
const IDLE_MAILBOXES: usize = 4;
/// Idle allowlist connections kept (handshakes, and recording a peer when its session ends).
const IDLE_ALLOWLISTS: usize = 2;

/// What the connections of one serving process share.
#[derive(Debug)]
pub struct Serving {
    stores: Stores,
    mailboxes: Pool<Mailbox>,
    allowlists: Pool<Allowlist>,
    staging: Arc<StagingBudget>,
    limits: ChannelLimits,
    epoch: Instant,
    /// What this server says it is in its hellos (the hub, or the cloud).
    role: PeerRole,
    /// Bumped after every acknowledged commit: connections idle in live mode compare it with the
    /// value they last served and send `Notify` when it moved.
    commits: AtomicU64,
    /// Bumped when the mailbox's control streams grew (`watch_control`): connections idle in
    /// live mode then send their peer the entries it lacks.
    control_changes: AtomicU64,
    /// Bumped after every empty `IdGrant` sent (a delegated pool could not cover a request and
    /// recorded the demand): the hub's uplink reads the pool only when this moved.
    id_shortfalls: AtomicU64,
    /// The offset from this machine's wall clock to trusted time, once known: the cloud trusts
    /// its own clock; a hub trusts none until its uplink heard the cloud's (a Pi has no battery
    /// clock). Hellos state trusted time, or 0 without it.
    trusted: Mutex<Option<TrustedTime>>,
    /// The cloud this box uplinks to, once pinned (a hub's second root): its entries bind the
    /// keys of every other site.
    cloud_root: Mutex<Option<Root>>,
}

/// Where this box's trusted time comes from (docs/design.md section 10, "Time").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedTime {
    /// Trusted time minus this machine's wall clock, in milliseconds.
    pub offset_ms: i64,
    /// When it was learnt (unix seconds, trusted time).
    pub since: u64,
}

impl Serving {
    /// The shared state of a process serving from `stores`, announcing `role` in its hellos,
    /// staging pushes within [`DEFAULT_STAGING_BUDGET`].
    pub fn new(stores: Stores, limits: ChannelLimits, role: PeerRole) -> Arc<Serving> {
        Serving::with_staging_budget(stores, limits, role, DEFAULT_STAGING_BUDGET)
    }

    /// [`Serving::new`] with another staging budget: at most `staging_bytes` held for all
    /// connections' pushes before they commit (more gets `Busy`).
    pub fn with_staging_budget(
        stores: Stores,
        limits: ChannelLimits,
        role: PeerRole,
        staging_bytes: usize,
    ) -> Arc<Serving> {
        Arc::new(Serving {
            stores,
            mailboxes: Pool::new(IDLE_MAILBOXES),
            allowlists: Pool::new(IDLE_ALLOWLISTS),
            staging: StagingBudget::new(staging_bytes),
            limits,
            epoch: Instant::now(),
            role,
            commits: AtomicU64::new(0),
            control_changes: AtomicU64::new(0),
            id_shortfalls: AtomicU64::new(0),
            // The cloud is the time source; a hub learns trusted time from its uplink.
            trusted: Mutex::new((role == PeerRole::Cloud).then(|| TrustedTime {
                offset_ms: 0,
                since: unix_ms() / 1000,
            })),
            cloud_root: Mutex::new(None),
        })
    }

    /// Sets the cloud this box uplinks to (a hub, once its uplink is enrolled): a root of the
    /// key directory from now on, for every mailbox connection handed out after.
    pub fn set_cloud_root(&self, root: Option<Root>) {
        *self.cloud_root.lock().unwrap_or_else(|p| p.into_inner()) = root;
    }

    /// Who owns the mailbox's control streams: this box (its site and key, a root as what it
    /// is) and, for a hub with an enrolled uplink, the cloud. The cloud re-certifies the devices
    /// its hubs bind.
    pub fn control_owner(&self) -> ControlOwner {
        let cloud = *self.cloud_root.lock().unwrap_or_else(|p| p.into_inner());
        crate::certify::owner(self.identity(), self.role, cloud)
    }

    /// A mailbox connection with this box's control owner set (for work outside the relays:
    /// certifying peers at startup, the uplink).
    pub fn mailbox(&self) -> Result<Mailbox, MailboxError> {
        let mut mailbox = self.stores.mailbox()?;
        mailbox.set_control_owner(self.control_owner());
        Ok(mailbox)
    }

    /// This box's trusted time, if it has one.
    pub fn trusted_time(&self) -> Option<TrustedTime> {
        *self.trusted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records trusted time: the cloud's wall clock read `peer_unix_ms` when this machine's read
    /// `local_unix_ms` (the hub's uplink, at each hello from the cloud).
    pub fn trust_time(&self, peer_unix_ms: u64, local_unix_ms: u64) {
        let offset_ms = (i128::from(peer_unix_ms) - i128::from(local_unix_ms))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        *self.trusted.lock().unwrap_or_else(|p| p.into_inner()) = Some(TrustedTime {
            offset_ms,
            since: peer_unix_ms / 1000,
        });
    }

    /// Trusted time (unix ms) for this machine's wall reading `local_unix_ms`, or 0 when this box
    /// has none: what its hellos state.
    pub fn hello_clock_ms(&self, local_unix_ms: u64) -> u64 {
        self.trusted_time().map_or(0, |t| {
            (i128::from(local_unix_ms) + i128::from(t.offset_ms)).clamp(1, i128::from(u64::MAX))
                as u64
        })
    }

    /// Reads both clocks: what a driver hands its relay with each call.
    pub fn now(&self) -> Time {
        Time {
            monotonic_ms: self.epoch.elapsed().as_millis() as u64,
            unix_ms: unix_ms(),
        }
    }

    /// What the process serves from.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The process's identity.
    pub fn identity(&self) -> &Identity {
        &self.stores.identity
    }

    /// The static key pair (the relays' Noise `s`, and the hub uplink's as initiator).
    pub fn keypair(&self) -> &Keypair {
        self.stores.identity.keypair()
    }

    /// The memory budget all connections' staged pushes share.
    pub fn staging(&self) -> &Arc<StagingBudget> {
        &self.staging
    }

    /// A mailbox connection for one step of a relay: give it back with
    /// [`Serving::give_mailbox`] (or drop it after an error).
    pub(crate) fn take_mailbox(&self) -> Result<Mailbox, MailboxError> {
        let mut mailbox = self.mailboxes.take(|| self.stores.mailbox())?;
        // The roots may have changed since this connection was pooled (a hub pinned its cloud).
        mailbox.set_control_owner(self.control_owner());
        Ok(mailbox)
    }

    /// Returns a mailbox connection taken with [`Serving::take_mailbox`].
    pub(crate) fn give_mailbox(&self, mailbox: Mailbox) {
        self.mailboxes.give(mailbox)
    }

    /// An allowlist connection for a handshake or a peer's record: give it back with
    /// [`Serving::give_allowlist`] (or drop it after an error).
    pub(crate) fn take_allowlist(&self) -> Result<Allowlist, AllowlistError> {
        self.allowlists.take(|| self.stores.allowlist())
    }

    /// Returns an allowlist connection taken with [`Serving::take_allowlist`].
    pub(crate) fn give_allowlist(&self, allowlist: Allowlist) {
        self.allowlists.give(allowlist)
    }

    /// The limits every connection's channel runs under.
    pub fn limits(&self) -> ChannelLimits {
        self.limits
    }

    /// The role announced in hellos.
    pub fn role(&self) -> PeerRole {
        self.role
    }

    /// Commits acknowledged so far by this process (relays, and whatever reports its own with
    /// [`Serving::note_commit`]): a change means news.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Records a commit made outside the relays (the hub's uplink storing what it pulled, the
    /// cloud's own exports), so live peers are notified of it.
    pub fn note_commit(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times the control streams were seen to grow: a change means entries to send.
    pub fn control_changes(&self) -> u64 {
        self.control_changes.load(Ordering::SeqCst)
    }

    /// Watches the mailbox's control streams every `period`, on a thread of its own, and bumps
    /// [`Serving::control_changes`] when they grew: entries written by this process (an
    /// admission, a hub's entries) or by another (`revoke`, `grant`, `table` on the command
    /// line) then reach live peers within about `period`, not at their next session.
    pub fn watch_control(
        self: &Arc<Serving>,
        period: Duration,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let serving = Arc::clone(self);
        std::thread::Builder::new()
            .name("control-watch".into())
            .spawn(move || {
                // Seqs only grow: their sum moves exactly when an entry arrives. Read before the
                // first wait, so an entry written in that first period counts as a change.
                let held = || {
                    serving.take_mailbox().and_then(|mut m| {
                        let v = m.control_vector();
                        if v.is_ok() {
                            serving.give_mailbox(m);
                        }
                        v.map(|v| v.iter().map(|(_, n)| *n).sum::<u64>())
                    })
                };
                let mut last = held().ok();
                loop {
                    std::thread::sleep(period);
                    match held() {
                        Ok(total) => {
                            if last != Some(total) {
                                serving.control_changes.fetch_add(1, Ordering::SeqCst);
                            }
                            last = Some(total);
                        }
                        Err(e) => log::warn!("control watch: {e}"),
                    }
                }
            })
    }

    /// Empty id grants sent so far by this process's relays (each after the demand was
    /// recorded): a change means the id pool may want a refill.
    pub fn id_shortfalls(&self) -> u64 {
        self.id_shortfalls.load(Ordering::SeqCst)
    }

    /// Records an empty id grant sent by a relay.
    pub(crate) fn note_id_shortfall(&self) {
        self.id_shortfalls.fetch_add(1, Ordering::SeqCst);
    }
}

/// This machine's wall clock, unix milliseconds (0 before 1970).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(role: PeerRole) -> (tempfile::TempDir, Arc<Serving>) {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = Identity::load_or_create(dir.path()).unwrap();
        let stores = Stores::files(
            identity,
            dir.path().join("mailbox.db"),
            dir.path().join("allowlist.db"),
        );
        (dir, Serving::new(stores, ChannelLimits::default(), role))
    }

    #[test]
    fn a_hub_states_no_time_until_it_heard_the_clouds_and_the_cloud_states_its_own() {
        let (_d, hub) = serving(PeerRole::Hub);
        assert_eq!(hub.trusted_time(), None);
        assert_eq!(
            hub.hello_clock_ms(1_000_000),
            0,
            "a hub alone is no time source"
        );
        // The cloud's hello: its clock read 5 s more than the hub's.
        hub.trust_time(1_800_000_005_000, 1_800_000_000_000);
        assert_eq!(hub.trusted_time().unwrap().offset_ms, 5_000);
        assert_eq!(hub.hello_clock_ms(1_800_000_060_000), 1_800_000_065_000);
        let (_d, cloud) = serving(PeerRole::Cloud);
        assert_eq!(cloud.hello_clock_ms(1_800_000_000_000), 1_800_000_000_000);
    }
}
