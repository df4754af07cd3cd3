//! The uplink: the hub as a **client** of the cloud (docs/design.md section 6).
//!
//! `outpost-hub run --cloud CODE` stores the code (`outpost-cloud enroll-code --hub`) in the
//! allowlist's settings; from then on every `run` of that data directory keeps an uplink thread,
//! independent of the device-facing server:
//!
//! 1. **Enrollment**, once: the `IKpsk2` handshake with the code's one-time token, to the code's
//!    pinned key, with the hub's own identity key, then a session `Hello` whose answer confirms
//!    the cloud admitted the hub (exactly what a device does). The cloud's key, site id and
//!    addresses are then pinned (setting [`UPLINK_CLOUD`]). If the answer was lost after the
//!    cloud admitted the hub (the token is then used up), the next attempt finds the hub's key
//!    admitted through an ordinary session handshake and pins the cloud then.
//! 2. **Sessions**, whenever the cloud answers: an ordinary `ClientSession` (role hub) with the
//!    mailbox as the client store ([`outpost_mailbox::MailboxClient`]): push what the cloud's
//!    vector lacks, never the cloud's own origin and never what came from the cloud (its vector
//!    covers that), then pull what other clinics did into the mailbox, where local devices get
//!    it (live devices are notified). A push larger than the budget runs more sessions.
//! 3. **Live** ([`Config::live`], `--uplink-live-seconds`, 300 s by default): the last session
//!    of a round stays open after its pull, as a device's live session does. It waits, one short
//!    socket read at a time ([`LIVE_POLL`]), holding no SQLite transaction:
//!    - the cloud's `Notify`: pull at once; each pulled batch is stored in the mailbox and the
//!      hub's commit counter is bumped ([`Hub::note_commit`]), so the hub's own live devices are
//!      notified within the relay's tick;
//!    - a device's commit (the hub's commit counter moved) or an id demand the pool cannot
//!      cover: `Bye`, and the next session starts at once (the protocol has no push after a
//!      live pull: the next session's push sends them);
//!    - nothing sent for [`Config::keepalive`]: a `Ping`; nothing received for
//!      [`Config::silence`]: the link is dead, the round fails and the backoff takes over;
//!    - the window's end: `Bye` (inside a pull too: every batch received is stored already),
//!      and the next session starts at once.
//!
//!    The wait itself (reads, pings, the silence and the deadline) is `outpost_link`'s
//!    `LiveWait`, the same a device's live sync runs; this file adds the hub's news.
//! 4. **When** (between rounds): after a non-live success, again when a device commits
//!    (debounced by [`Config::debounce`]) or after [`Config::poll`] to fetch other clinics'
//!    changes; after a live session's end, at once. After a failure (no answer, a cut, a refusal,
//!    a silent live link), exponential backoff with jitter from [`Config::min`] to
//!    [`Config::max`] (`outpost_link::Backoff`), reset by the next success.
//!
//! 5. **Id pool** (`outpost_mailbox` `ids`): configuring the uplink switches the mailbox to
//!    delegated id mode; each session asks, after its pull, for the refills the pool needs (a
//!    sequence below a quarter of [`Config::id_block`] or below what devices asked for), and a
//!    device asking for more than the pool holds wakes the uplink at once.
//!
//! What the status shows ([`UplinkState`], in `uplink-state.json` next to the run state): the
//! cloud's address, the state (`never`, `connected`, `backing off`), since when the uplink is
//! live, the last success (a live session counts as one when it goes live, after each pull and
//! when the cloud answers a keep-alive ping, so at most [`Config::keepalive`] plus a ping ago),
//! the last error, and the cloud's last known vector (its hello, advanced by its acks and by what
//! the hub pulled from it), from which `status` computes the backlog.
//!
//! The byte stream comes from a [`Dial`]: [`StdDial`] uses the OS's sockets (`--net std:`);
//! with `--net packet:/tap:` the hub's own stack dials ([`crate::net::dial::Dialer`]: a TCP
//! connection opened on the executor, bridged to this thread). That stack resolves no names:
//! there, the cloud's addresses (in its enrollment code) must be `IPv4:PORT`, reachable from
//! the hub's LAN (its subnet or through its gateway). Over either, the handshake and the
//! encrypted messages are `outpost_link`'s `Link`, as on a device. Errors are
//! [`UplinkError`]s (`uplink/error.rs`).

mod dial;
mod error;
mod revocations;
mod state;

use crate::datadir::unix_now;
use crate::hub::Hub;
pub use dial::{CloudWire, Dial, StdDial};
pub use error::{PinnedError, UplinkError};
use outpost_link::{
    Attempt, Backoff, Endpoint, Event, Link, LinkError, LiveConfig, LiveWait, Timeouts,
};
use outpost_mailbox::{Mailbox, MailboxClient, Moved, HUB_BLOCK};
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::control::Root;
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::{Ephemeral, InitiatorConfig, PublicKey, Purpose};
use outpost_protocol::message::ErrorCode;
use outpost_protocol::message::{Hello, Message, PeerRole, SessionId};
use outpost_protocol::session::{ClientConfig, ClientSession};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use outpost_relay::allowlist::Allowlist;
use outpost_relay::vector_text::encode as encode_vector;
use serde::{Deserialize, Serialize};
pub use state::{UplinkState, STATE_FILE};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How errors and logs name the peer.
const CLOUD: &str = "the cloud";

/// Setting: the enrollment code given with `--cloud`, until the cloud is pinned.
pub const UPLINK_CODE: &str = "uplink_code";
/// Setting: the pinned cloud (JSON [`CloudPeer`]); empty while enrollment is pending.
pub const UPLINK_CLOUD: &str = "uplink_cloud";
/// Setting: the last handshake counter the hub sent the cloud (strictly increasing).
const UPLINK_COUNTER: &str = "uplink_counter";
/// Sessions one uplink round runs at most (each pushes up to the mailbox client's budget).
const MAX_SESSIONS: u32 = 64;
/// While a live session waits: the longest socket read, so also how long a device's commit or
/// the window's end waits to be noticed.
pub const LIVE_POLL: Duration = Duration::from_millis(50);

/// The cloud as pinned at enrollment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloudPeer {
    /// Its public key, hex of the uncompressed SEC1 bytes.
    pub key: String,
    /// Its site id.
    pub site: String,
    /// Where to reach it, most likely first.
    pub addresses: Vec<String>,
}

/// Stores `code` as the uplink's enrollment code (`run --cloud`) in the data directory's
/// `allowlist`. A code other than the stored one starts a new enrollment (the pinned cloud is
/// forgotten); the same code changes nothing.
pub fn configure(allowlist: &Allowlist, code: &str) -> Result<(), UplinkError> {
    let parsed = EnrollCode::decode(code).map_err(|error| UplinkError::Code {
        what: "--cloud: not an enrollment code",
        error,
    })?;
    parsed.public_key().map_err(|error| UplinkError::Code {
        what: "--cloud: the code's key",
        error,
    })?;
    if allowlist.setting(UPLINK_CODE)?.as_deref() == Some(code) {
        return Ok(());
    }
    allowlist.set_setting(UPLINK_CLOUD, "")?;
    allowlist.set_setting(UPLINK_CODE, code)?;
    // (The mailbox's delegated id mode is set by `run` for every data directory with an uplink,
    // this one included, before it serves anyone.)
    log::info!(
        "uplink: enrollment code stored for cloud site={} at {}",
        parsed.hub_site,
        parsed.addresses.join(",")
    );
    Ok(())
}

/// True when the data directory of `allowlist` has an uplink (a stored code or a pinned cloud).
pub fn configured(allowlist: &Allowlist) -> Result<bool, UplinkError> {
    let set = |name| -> Result<bool, UplinkError> {
        Ok(allowlist.setting(name)?.is_some_and(|v| !v.is_empty()))
    };
    Ok(set(UPLINK_CLOUD)? || set(UPLINK_CODE)?)
}

/// The pinned cloud as a root of the hub's key directory, if enrolled.
pub fn cloud_root(allowlist: &Allowlist) -> Result<Option<Root>, UplinkError> {
    let Some(peer) = pinned(allowlist)? else {
        return Ok(None);
    };
    Ok(Some(root_of(&peer)?))
}

fn root_of(peer: &CloudPeer) -> Result<Root, UplinkError> {
    Ok(Root {
        site: peer
            .site
            .parse()
            .map_err(|e| UplinkError::Pinned(PinnedError::Site(e)))?,
        key: key_of(&peer.key)?,
        role: PeerRole::Cloud,
    })
}

/// The pinned cloud, if enrolled.
pub fn pinned(allowlist: &Allowlist) -> Result<Option<CloudPeer>, UplinkError> {
    match allowlist.setting(UPLINK_CLOUD)? {
        Some(v) if !v.is_empty() => serde_json::from_str(&v)
            .map(Some)
            .map_err(|e| UplinkError::Pinned(PinnedError::Json(e))),
        _ => Ok(None),
    }
}

/// The uplink's timing.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// First backoff delay after a failure (`--uplink-min-ms`).
    pub min: Duration,
    /// Largest backoff delay (`--uplink-max-ms`).
    pub max: Duration,
    /// After a success, run again this long later even without local news (to pull).
    pub poll: Duration,
    /// After a device's commit, wait this long for more before running.
    pub debounce: Duration,
    /// Per address, to connect.
    pub connect_timeout: Duration,
    /// Per read or write.
    pub io_timeout: Duration,
    /// Numbers of a sequence asked of the cloud per refill at least (`--id-block`); a pool is
    /// refilled when it holds fewer than a quarter of this, or less than devices asked for.
    pub id_block: u64,
    /// Live mode (`--uplink-live-seconds`): how long a session stays open after its pull,
    /// pulling on the cloud's `Notify`; then it ends and the next starts at once. Zero: off
    /// (plain sessions, [`Config::poll`]).
    pub live: Duration,
    /// Live mode: a `Ping` after this long without sending anything.
    pub keepalive: Duration,
    /// Live mode: the link is taken for dead after this long without receiving anything (the
    /// cloud answers every `Ping`).
    pub silence: Duration,
}

impl Config {
    /// Defaults: backoff 1 s .. 5 min, poll every 30 s (never more than `max`), debounce 200 ms,
    /// live sessions of 5 min with a ping after 5 s of silence, dead after 15 s without a word.
    pub fn new(min: Option<Duration>, max: Option<Duration>) -> Result<Config, UplinkError> {
        let min = min.unwrap_or(Duration::from_secs(1));
        let max = max.unwrap_or(Duration::from_secs(300));
        if min.is_zero() || max < min {
            return Err(UplinkError::Backoff { min, max });
        }
        Ok(Config {
            min,
            max,
            poll: max.min(Duration::from_secs(30)),
            debounce: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            id_block: HUB_BLOCK,
            live: Duration::from_secs(300),
            keepalive: Duration::from_secs(5),
            silence: Duration::from_secs(15),
        })
    }
}

impl Config {
    /// The timeouts of a connection to the cloud.
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            io: self.io_timeout,
        }
    }
}

/// Starts the uplink on a thread of its own, with its own connections to the hub's `mailbox`
/// and `allowlist`.
pub fn spawn(
    hub: Arc<Hub>,
    mailbox: Mailbox,
    allowlist: Allowlist,
    dial: impl Dial,
    config: Config,
) -> Result<(), UplinkError> {
    let mut state = UplinkState::load(&hub.dir().path)
        .ok()
        .flatten()
        .unwrap_or_default();
    // Trusted time is per process: a restarted hub (a Pi without a battery clock) has none until
    // the cloud's next hello.
    state.clock_offset_ms = None;
    state.clock_synced_at = None;
    let uplink = Uplink {
        hub,
        dial: Box::new(dial),
        config,
        mailbox,
        allowlist,
        state,
        seen: 0,
        id_seen: 0,
        check_exports: false,
    };
    std::thread::Builder::new()
        .name("uplink".into())
        .spawn(move || uplink.run())
        .map_err(UplinkError::Thread)?;
    Ok(())
}

struct Uplink {
    hub: Arc<Hub>,
    dial: Box<dyn Dial>,
    config: Config,
    mailbox: Mailbox,
    allowlist: Allowlist,
    state: UplinkState,
    /// The hub's commit count as this thread expects it: taken when a session starts, raised
    /// by the uplink's own [`Hub::note_commit`]s; any other difference is a device's commit.
    seen: u64,
    /// [`Hub::id_shortfalls`] when the last session started (before its refills were planned):
    /// any change since is a demand that session may not have asked the cloud for.
    id_seen: u64,
    /// The cloud refused a push as badly signed (or of an origin it knows no key for): from
    /// then on (in this process) each batch is checked with the hub's directory before it goes
    /// up, and an origin whose batch fails (or whose key the hub does not know) is held back,
    /// so one forged batch does not stop the others.
    check_exports: bool,
}

/// How a round (its last session) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The session ran to its `Bye` (not live).
    Done,
    /// A push was left over (its budget): run another session.
    More,
    /// Live: a device committed, or devices want ids: the next session now.
    News,
    /// Live: the window ended: the next session now.
    Deadline,
}

/// `N` bytes of the operating system's randomness, for `purpose`.
fn random<const N: usize>(purpose: &'static str) -> Result<[u8; N], UplinkError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|error| UplinkError::Randomness { purpose, error })?;
    Ok(b)
}

impl Uplink {
    fn run(mut self) {
        if self.state.state.is_empty() || self.state.last_success.is_none() {
            self.state.state = "never".into();
        }
        self.state.retry_in_ms = None;
        self.state.live_since = None;
        loop {
            self.state.last_attempt = Some(unix_now());
            match self.round() {
                Ok((moved, ending)) => {
                    self.state.state = "connected".into();
                    self.state.last_success = Some(unix_now());
                    self.state.last_error = None;
                    self.state.failures = 0;
                    self.state.retry_in_ms = None;
                    if self.config.live.is_zero() {
                        self.state.live_since = None;
                    }
                    self.save();
                    match ending {
                        Ending::News => log::debug!(
                            "uplink: live session ended: local news to push; the next one now"
                        ),
                        Ending::Deadline => log::info!(
                            "uplink: live session window over; the next one now"
                        ),
                        // (A live session logged its figures when it went live.)
                        Ending::Done | Ending::More if self.config.live.is_zero() => log::info!(
                            "uplink: synced with the cloud: pushed {} seqs in {} batches, pulled {} seqs in {} batches",
                            moved.pushed,
                            moved.batches_pushed,
                            moved.pulled,
                            moved.batches_pulled
                        ),
                        Ending::Done | Ending::More => {}
                    }
                    match ending {
                        // The next (live) session at once: it pushes the news, or simply
                        // reopens the window.
                        Ending::News | Ending::Deadline => {}
                        Ending::More if !self.config.live.is_zero() => {}
                        Ending::Done | Ending::More => self.wait_for_news(self.seen),
                    }
                }
                Err(e) => {
                    self.state.live_since = None;
                    // The failures in a row live in the state (a live session's success
                    // clears them, a restart continues them).
                    let mut backoff = Backoff::new(self.config.min, self.config.max)
                        .with_failures(self.state.failures);
                    let delay = backoff.fail();
                    self.state.failures = backoff.failures();
                    if self.state.last_success.is_some() {
                        self.state.state = "backing off".into();
                    }
                    self.state.last_error = Some(format!("{} {e}", unix_now()));
                    self.state.retry_in_ms = Some(delay.as_millis() as u64);
                    self.save();
                    log::warn!(
                        "uplink: {e}; retrying in {} ms (failure {} in a row)",
                        delay.as_millis(),
                        self.state.failures
                    );
                    std::thread::sleep(delay);
                }
            }
        }
    }

    fn save(&self) {
        save(&self.state, &self.hub);
    }

    /// Returns after `poll`, or `debounce` after the hub's commit count leaves `seen`, or at
    /// once when a device asked for more ids than the pool holds (the pool is read only after a
    /// relay sent an empty grant, [`Hub::id_shortfalls`]).
    fn wait_for_news(&self, seen: u64) {
        let deadline = Instant::now() + self.config.poll;
        let mut id_seen = self.id_seen;
        while Instant::now() < deadline {
            if self.hub.commits() != seen {
                std::thread::sleep(self.config.debounce);
                return;
            }
            let shortfalls = self.hub.id_shortfalls();
            if shortfalls != id_seen {
                id_seen = shortfalls;
                match self.mailbox.id_refill_wanted() {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => log::warn!("uplink: reading the id pool: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Enrolls if needed, then sessions until nothing is left to push (the last one live, when
    /// live mode is on).
    fn round(&mut self) -> Result<(Moved, Ending), UplinkError> {
        let peer = match pinned(&self.allowlist)? {
            Some(p) => p,
            None => self.enroll()?,
        };
        self.state.cloud_site = Some(peer.site.clone());
        // The pinned cloud is a root of the hub's directory: for the relays' mailboxes and
        // for the uplink's own.
        let serving = self.hub.serving();
        let root = root_of(&peer)?;
        serving.set_cloud_root(Some(root));
        self.mailbox.set_control_owner(serving.control_owner());
        // The hub's stream names its cloud, so devices enrolled with a code printed before the
        // uplink was enrolled (no cloud anchor) learn the cloud's key from their own hub.
        self.mailbox
            .certify(root.site, &root.key, PeerRole::Cloud, false)?;
        let key = key_of(&peer.key)?;
        let site: SiteId = peer
            .site
            .parse()
            .map_err(|e| UplinkError::Pinned(PinnedError::Site(e)))?;
        // Entries stored before this round (by a process that stopped before applying them).
        let now = unix_now();
        for d in revocations::apply(&mut self.mailbox, &mut self.allowlist, &site, now)? {
            self.state.note_revoked(&d.site, now);
        }
        let mut total = Moved::default();
        let mut ending = Ending::Done;
        for _ in 0..MAX_SESSIONS {
            let (moved, end) = self.session(&peer.addresses, key, site)?;
            ending = end;
            total.pushed += moved.pushed;
            total.batches_pushed += moved.batches_pushed;
            total.pulled += moved.pulled;
            total.batches_pulled += moved.batches_pulled;
            if end != Ending::More {
                break;
            }
        }
        Ok((total, ending))
    }

    fn session(
        &mut self,
        addresses: &[String],
        key: PublicKey,
        site: SiteId,
    ) -> Result<(Moved, Ending), UplinkError> {
        // Before the push is planned: a device's commit after this is news for the live wait.
        self.seen = self.hub.commits();
        self.id_seen = self.hub.id_shortfalls();
        let mut link = self.open(addresses, key, site, Purpose::Session)?;
        let sid = random("a session id")?;
        let mut client = ClientSession::new(ClientConfig {
            site: self.hub.dir().identity.site,
            role: PeerRole::Hub,
            // The hub is schema-free: the cloud's relay checks no fingerprint.
            fingerprint: [0; 32],
            wall_clock_ms: unix_now() * 1000,
            session: SessionId(sid),
            live: !self.config.live.is_zero(),
            max_push_attempts: 3,
            batch_limits: BatchLimits::default(),
        });
        let deadline = Instant::now() + self.config.live;
        let Uplink {
            hub,
            config,
            mailbox,
            allowlist,
            state,
            seen,
            id_seen,
            check_exports,
            ..
        } = self;
        let mut store = MailboxClient::new(mailbox, site);
        store.server_key = Some(key);
        store.check_exports = *check_exports;
        store.id_block = config.id_block;
        store.id_low_water = config.id_block / 4;
        let mut news = News {
            hub,
            seen,
            id_seen: *id_seen,
            noted: 0,
            base: (state.pushed, state.pulled),
            allowlist,
            cloud: site,
            control_applied: 0,
        };
        let driven = link.drive(&mut client, &mut store, |s| news.after(s));
        // The hello's control entries are stored: a revoked device is refused from now on.
        news.revocations(&mut store, state);
        // Before a live wait saves the state: what this session's push and pull held back.
        state.held = ranges_text(&store.held);
        state.withheld = ranges_text(&store.withheld);
        // The cloud's hello states trusted time: from now on the hub's hellos state it too.
        if let Some(hello) = client.server_hello() {
            if hello.wall_clock_ms != 0 {
                let serving = news.hub.serving();
                serving.trust_time(hello.wall_clock_ms, serving.now().unix_ms);
                if let Some(t) = serving.trusted_time() {
                    state.clock_offset_ms = Some(t.offset_ms);
                    state.clock_synced_at = Some(t.since);
                }
            }
        }
        let r = driven.map_err(UplinkError::from).and_then(|()| {
            if !client.is_live() {
                return Ok(Ending::Done);
            }
            live_wait(
                &mut link,
                &mut client,
                &mut store,
                &mut news,
                config,
                state,
                deadline,
            )
        });
        if store.ids_granted > 0 {
            log::info!(
                "uplink: the cloud granted {} ids into the pool",
                store.ids_granted
            );
        }
        news.account(&store, state);
        state.held = ranges_text(&store.held);
        state.withheld = ranges_text(&store.withheld);
        if !store.held.is_empty() {
            log::warn!(
                "uplink: held {} pulled origins whose key no control entry names yet: {}",
                store.held.len(),
                state.held.join(", ")
            );
        }
        if let Err(UplinkError::Link(LinkError::Peer {
            code: ErrorCode::BadSignature | ErrorCode::KeyUnknown,
            ..
        })) = &r
        {
            if !*check_exports {
                log::warn!(
                    "uplink: the cloud refused a batch as not signed by its origin (or of an \
                     origin it knows no key for); checking every batch before it goes up from \
                     now on"
                );
            }
            *check_exports = true;
        }
        let moved = store.moved;
        let r = r.map(|end| match end {
            Ending::Done if store.more_to_push => Ending::More,
            end => end,
        });
        match &r {
            Ok(_) if !client.is_done() => {
                // A live session left early, cleanly: everything pulled is stored. A cloud
                // that cannot hear the Bye sees the close.
                let _ = link.send(&Message::Bye);
            }
            Err(UplinkError::Link(LinkError::Session { error, .. })) => link.report(error),
            _ => {}
        }
        link.close();
        r.map(|end| (moved, end))
    }

    fn next_counter(&self) -> Result<u64, UplinkError> {
        let last = self
            .allowlist
            .setting(UPLINK_COUNTER)?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let next = (last + 1).max(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        );
        // Committed (fsynced) before message 1 leaves: a replayed or reused counter is refused.
        self.allowlist
            .set_setting(UPLINK_COUNTER, &next.to_string())?;
        Ok(next)
    }

    /// Connects to the first address that answers and runs the handshake.
    fn open(
        &mut self,
        addresses: &[String],
        key: PublicKey,
        site: SiteId,
        purpose: Purpose,
    ) -> Result<Link<CloudWire>, UplinkError> {
        let timeouts = self.config.timeouts();
        let mut tried = Vec::new();
        let mut found = None;
        for a in addresses {
            self.state.address = Some(a.clone());
            match self.dial.dial(a, timeouts) {
                Ok(w) => {
                    found = Some((w, a.clone()));
                    break;
                }
                Err(failure) => tried.push(Attempt {
                    address: a.clone(),
                    failure,
                }),
            }
        }
        let Some((wire, address)) = found else {
            return Err(LinkError::Unreachable {
                peer: CLOUD.into(),
                tried,
            }
            .into());
        };
        let counter = self.next_counter()?;
        let config = InitiatorConfig {
            identity: self.hub.keypair().clone(),
            site: self.hub.dir().identity.site,
            counter,
            responder_key: key,
            responder_site: site,
            purpose,
            version: PROTOCOL_VERSION,
        };
        let ephemeral = Ephemeral::from_seed(random("the handshake")?);
        let at = Endpoint {
            peer: CLOUD.into(),
            address,
        };
        Ok(Link::open(wire, at, &config, ephemeral, timeouts.io)?)
    }

    /// Enrollment with the stored code; pins the cloud.
    fn enroll(&mut self) -> Result<CloudPeer, UplinkError> {
        let text = self
            .allowlist
            .setting(UPLINK_CODE)?
            .filter(|t| !t.is_empty())
            .ok_or(UplinkError::NoCode)?;
        let code = EnrollCode::decode(&text).map_err(|error| UplinkError::Code {
            what: "the stored code",
            error,
        })?;
        let key = code.public_key().map_err(|error| UplinkError::Code {
            what: "the stored code's key",
            error,
        })?;
        let peer = CloudPeer {
            key: hex(key.as_bytes()),
            site: code.hub_site.to_string(),
            addresses: code.addresses.clone(),
        };
        self.state.cloud_site = Some(peer.site.clone());
        let opened = self.open(
            &code.addresses,
            key,
            code.hub_site,
            Purpose::Enroll { token: code.token },
        );
        let mut link = match opened {
            Ok(l) => l,
            Err(e) => {
                // The cloud may have admitted this key already (the confirmation was lost and
                // the token is used up): an ordinary session handshake tells.
                if let Ok(mut l) = self.open(&code.addresses, key, code.hub_site, Purpose::Session)
                {
                    // Admitted: that is all this session was for.
                    let _ = l.send(&Message::Bye);
                    self.pin(&peer)?;
                    return Ok(peer);
                }
                return Err(UplinkError::Enrolling {
                    expired_at: (unix_now() > code.expires_at).then_some(code.expires_at),
                    source: Box::new(e),
                });
            }
        };
        let hello = Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            site: self.hub.dir().identity.site,
            role: PeerRole::Hub,
            fingerprint: [0; 32],
            wall_clock_ms: unix_now() * 1000,
            vector: self.mailbox.vector()?,
            session: SessionId::default(),
            // Enrolment only confirms admission: no control entries are exchanged.
            control: outpost_protocol::ControlVector::new(),
            drains: Vec::new(),
            regain: Vec::new(),
            keys: Vec::new(),
        });
        let h = link
            .confirm_enrollment(&hello, code.hub_site)
            .map_err(UplinkError::Unconfirmed)?;
        if h.role != PeerRole::Cloud {
            return Err(UplinkError::NotCloud { role: h.role });
        }
        // Confirmed; the cloud ends the session on its own when it misses the Bye.
        let _ = link.send(&Message::Bye);
        link.close();
        self.pin(&peer)?;
        Ok(peer)
    }

    fn pin(&mut self, peer: &CloudPeer) -> Result<(), UplinkError> {
        let json =
            serde_json::to_string(peer).map_err(|e| UplinkError::Pinned(PinnedError::Json(e)))?;
        self.allowlist.set_setting(UPLINK_CLOUD, &json)?;
        self.hub.serving().set_cloud_root(Some(root_of(peer)?));
        log::info!(
            "uplink: enrolled with the cloud site={} key={}",
            peer.site,
            key_of(&peer.key)?.fingerprint()
        );
        Ok(())
    }
}

/// "origin lo..=hi" per origin, for the state file.
fn ranges_text(
    ranges: &std::collections::BTreeMap<SiteId, outpost_protocol::SeqRange>,
) -> Vec<String> {
    ranges
        .iter()
        .map(|(o, r)| format!("{o} seqs {}..={}", r.lo, r.hi))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_of(text: &str) -> Result<PublicKey, UplinkError> {
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| UplinkError::Pinned(PinnedError::KeyNotHex))?;
    PublicKey::from_sec1(&bytes).map_err(|e| UplinkError::Pinned(PinnedError::Key(e)))
}

fn save(state: &UplinkState, hub: &Hub) {
    if let Err(e) = state.save(&hub.dir().path) {
        log::warn!("uplink: recording its state: {e}");
    }
}

/// Tells the hub's live devices about pulled batches, and keeps the uplink's own expectation of
/// the hub's commit count in step (its own bumps are not news).
struct News<'a> {
    hub: &'a Hub,
    seen: &'a mut u64,
    /// [`Hub::id_shortfalls`] as last checked: the pool is read again only when it moved.
    id_seen: u64,
    /// Pulled batches already announced.
    noted: u64,
    /// The state's (pushed, pulled) totals when the session started.
    base: (u64, u64),
    /// The hub's allowlist, where the cloud's revocations are applied.
    allowlist: &'a mut Allowlist,
    /// The pinned cloud: only its revocations count.
    cloud: SiteId,
    /// [`MailboxClient::control_accepted`] when the revocations were last applied.
    control_applied: usize,
}

impl News<'_> {
    /// After each message handled: pulled batches stored since the last call are announced.
    fn after(&mut self, store: &MailboxClient<'_>) {
        if store.moved.batches_pulled > self.noted {
            self.noted = store.moved.batches_pulled;
            self.hub.note_commit();
            *self.seen += 1;
        }
    }

    /// Applies the cloud's revocations to the allowlist when control entries arrived since the
    /// last call (a failure is logged: the next entries, or the next session, try again).
    fn revocations(&mut self, store: &mut MailboxClient<'_>, state: &mut UplinkState) {
        if store.control_accepted == self.control_applied {
            return;
        }
        self.control_applied = store.control_accepted;
        let now = unix_now();
        match revocations::apply(store.mailbox_mut(), self.allowlist, &self.cloud, now) {
            Ok(revoked) => {
                for d in &revoked {
                    state.note_revoked(&d.site, now);
                }
                if !revoked.is_empty() {
                    save(state, self.hub);
                }
            }
            Err(e) => log::warn!("uplink: applying the cloud's revocations: {e}"),
        }
    }

    /// A device committed since the session started (or since the uplink's last bump).
    fn local_commit(&self) -> bool {
        self.hub.commits() != *self.seen
    }

    /// The session's figures into the state (totals, the cloud's vector).
    fn account(&self, store: &MailboxClient<'_>, state: &mut UplinkState) {
        state.pushed = self.base.0 + store.moved.pushed;
        state.pulled = self.base.1 + store.moved.pulled;
        if let Some(v) = &store.server_vector {
            state.cloud_vector = Some(encode_vector(v));
        }
    }
}

/// The live wait of a session whose pull is complete (see the module's documentation): returns
/// why it should end (`Bye` is the caller's), or the error that ended it.
fn live_wait<'m>(
    link: &mut Link<CloudWire>,
    client: &mut ClientSession<MailboxClient<'m>>,
    store: &mut MailboxClient<'m>,
    news: &mut News<'_>,
    config: &Config,
    state: &mut UplinkState,
    deadline: Instant,
) -> Result<Ending, UplinkError> {
    let now = unix_now();
    state.state = "connected".into();
    state.last_success = Some(now);
    state.last_error = None;
    state.failures = 0;
    state.retry_in_ms = None;
    state.live_since.get_or_insert(now);
    news.account(store, state);
    save(state, news.hub);
    let moved = store.moved;
    log::info!(
        "uplink: synced with the cloud: pushed {} seqs in {} batches, pulled {} seqs in {} batches; live",
        moved.pushed,
        moved.batches_pushed,
        moved.pulled,
        moved.batches_pulled
    );
    if store.more_to_push {
        return Ok(Ending::More);
    }
    let timing = LiveConfig {
        poll: LIVE_POLL,
        keepalive: config.keepalive,
        silence: config.silence,
    };
    let mut wait = LiveWait::new(timing, deadline);
    let mut pulled_before = store.moved.batches_pulled;
    let mut last_saved = Instant::now();
    loop {
        let event = wait.next(link, client, store);
        // Also after a message that failed: what it stored is announced.
        news.after(store);
        match event? {
            Event::Deadline => return Ok(Ending::Deadline),
            Event::Done => return Ok(Ending::Done),
            // Between pulls (a pull in progress is finished first: everything it sends is
            // stored).
            Event::Poll => {
                if news.local_commit() {
                    return Ok(Ending::News);
                }
                let shortfalls = news.hub.id_shortfalls();
                if shortfalls != news.id_seen {
                    news.id_seen = shortfalls;
                    if store.mailbox().id_refill_wanted()? {
                        return Ok(Ending::News);
                    }
                }
            }
            Event::Received if !client.is_live() => {}
            Event::Received => {
                news.revocations(store, state);
                let pulled = store.moved.batches_pulled > pulled_before;
                if pulled {
                    log::info!(
                        "uplink: live: pulled {} batches on the cloud's notify",
                        store.moved.batches_pulled - pulled_before
                    );
                    pulled_before = store.moved.batches_pulled;
                }
                // The cloud answered (a pull, a pong): the link works now, as the status says.
                if pulled || last_saved.elapsed() >= config.keepalive {
                    last_saved = Instant::now();
                    state.last_success = Some(unix_now());
                    news.account(store, state);
                    save(state, news.hub);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
