//! The uplink: the hub as a **client** of the cloud (DESIGN.md section 6).
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
//!    - the window's end: `Bye`, and the next session starts at once.
//! 4. **When** (between rounds): after a non-live success, again when a device commits
//!    (debounced by [`Config::debounce`]) or after [`Config::poll`] to fetch other clinics'
//!    changes; after a live session's end, at once. After a failure (no answer, a cut, a refusal,
//!    a silent live link), exponential backoff with jitter from [`Config::min`] to
//!    [`Config::max`], reset by the next success.
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
//! the hub's LAN (its subnet or through its gateway).

use crate::datadir::{unix_now, DataDir};
use crate::hub::Hub;
use anyhow::{anyhow, bail, Context, Result};
use outpost_mailbox::{Mailbox, MailboxClient, Moved, HUB_BLOCK};
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::channel::{Channel, Limits as ChannelLimits};
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::{Ephemeral, Initiator, InitiatorConfig, PublicKey, Purpose};
use outpost_protocol::message::{Hello, Message, PeerRole, SessionId};
use outpost_protocol::session::{ClientConfig, ClientSession};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use outpost_relay::allowlist::Allowlist;
use outpost_relay::vector_text::encode as encode_vector;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Setting: the enrollment code given with `--cloud`, until the cloud is pinned.
pub const UPLINK_CODE: &str = "uplink_code";
/// Setting: the pinned cloud (JSON [`CloudPeer`]); empty while enrollment is pending.
pub const UPLINK_CLOUD: &str = "uplink_cloud";
/// Setting: the last handshake counter the hub sent the cloud (strictly increasing).
const UPLINK_COUNTER: &str = "uplink_counter";
/// The uplink's state file in the data directory.
pub const STATE_FILE: &str = "uplink-state.json";
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

/// What the uplink last did (for `status` and the page).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UplinkState {
    /// `never` (no success yet), `connected` (the last round succeeded), `backing off`.
    pub state: String,
    /// The address last tried or used.
    pub address: Option<String>,
    /// The cloud's site id, once pinned.
    pub cloud_site: Option<String>,
    /// Last successful round, unix seconds.
    pub last_success: Option<u64>,
    /// Last attempt, unix seconds.
    pub last_attempt: Option<u64>,
    /// The last failure (cleared by a success).
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// While backing off: the delay before the next attempt.
    pub retry_in_ms: Option<u64>,
    /// The cloud's vector as last known (its hello, advanced by its acks), in `vector_text` form.
    pub cloud_vector: Option<String>,
    /// Since when (unix seconds) the uplink has been in live sessions without a failure; `None`
    /// when not live.
    #[serde(default)]
    pub live_since: Option<u64>,
    /// Seqs pushed and pulled by this process's uplink.
    pub pushed: u64,
    /// See `pushed`.
    pub pulled: u64,
}

impl UplinkState {
    /// The state in `dir`, if the uplink ever ran there.
    pub fn load(dir: &Path) -> Result<Option<UplinkState>> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("{}", path.display()))?,
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("{}", path.display()))),
        }
    }

    /// Writes the state (temporary file + rename: a reader never sees half of it).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("{}", path.display()))
    }
}

/// Stores `code` as the uplink's enrollment code (`run --cloud`). A code other than the stored
/// one starts a new enrollment (the pinned cloud is forgotten); the same code changes nothing.
pub fn configure(dir: &DataDir, code: &str) -> Result<()> {
    let parsed =
        EnrollCode::decode(code).map_err(|e| anyhow!("--cloud: not an enrollment code: {e}"))?;
    parsed
        .public_key()
        .map_err(|e| anyhow!("--cloud: the code's key: {e}"))?;
    let allowlist = dir.allowlist()?;
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

/// True when this data directory has an uplink (a stored code or a pinned cloud).
pub fn configured(dir: &DataDir) -> Result<bool> {
    let a = dir.allowlist()?;
    let set = |name| -> Result<bool> { Ok(a.setting(name)?.is_some_and(|v| !v.is_empty())) };
    Ok(set(UPLINK_CLOUD)? || set(UPLINK_CODE)?)
}

/// The pinned cloud, if enrolled.
pub fn pinned(allowlist: &Allowlist) -> Result<Option<CloudPeer>> {
    match allowlist.setting(UPLINK_CLOUD)? {
        Some(v) if !v.is_empty() => Ok(Some(
            serde_json::from_str(&v).context("the pinned cloud setting")?,
        )),
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
    pub fn new(min: Option<Duration>, max: Option<Duration>) -> Result<Config> {
        let min = min.unwrap_or(Duration::from_secs(1));
        let max = max.unwrap_or(Duration::from_secs(300));
        if min.is_zero() || max < min {
            bail!("uplink backoff: 0 < --uplink-min-ms <= --uplink-max-ms required");
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

/// The delay before attempt number `failures + 1` after `failures` failures in a row: `min`
/// doubled per failure, at most `max`, then a uniform pick in its upper half (`random` is any
/// random number), so hubs cut off together do not come back together.
pub fn backoff(config: &Config, failures: u32, random: u64) -> Duration {
    let min = config.min.as_millis() as u64;
    let max = config.max.as_millis() as u64;
    let base = min
        .saturating_mul(1u64 << failures.saturating_sub(1).min(40))
        .min(max);
    let half = base / 2;
    Duration::from_millis(base - half + random % (half + 1))
}

/// A byte stream to the cloud.
pub trait Wire: Read + Write + Send {
    /// The longest wait of one `read` before it fails with `TimedOut` or `WouldBlock`.
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()>;
}

impl Wire for TcpStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, Some(timeout))
    }
}

impl Wire for crate::net::bridge::BridgedConn {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        crate::net::bridge::BridgedConn::set_read_timeout(self, Some(timeout));
        Ok(())
    }
}

/// Opens byte streams to the cloud (over the OS's sockets, or some other stack).
pub trait Dial: Send + 'static {
    /// Connects to `address` (`host:port`) within `connect`, with `io` as read/write timeout.
    fn dial(
        &self,
        address: &str,
        connect: Duration,
        io: Duration,
    ) -> std::io::Result<Box<dyn Wire>>;
}

/// [`Dial`] over the OS's TCP sockets.
#[derive(Debug, Default)]
pub struct StdDial;

impl Dial for StdDial {
    fn dial(
        &self,
        address: &str,
        connect: Duration,
        io: Duration,
    ) -> std::io::Result<Box<dyn Wire>> {
        let mut last = std::io::Error::new(ErrorKind::NotFound, "resolves to no address");
        for sa in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, connect) {
                Ok(s) => {
                    s.set_read_timeout(Some(io))?;
                    s.set_write_timeout(Some(io))?;
                    s.set_nodelay(true)?;
                    return Ok(Box::new(s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// [`Dial`] over the hub's own stack (`--net packet:/tap:`): `IPv4:PORT` addresses only.
impl Dial for crate::net::dial::Dialer {
    fn dial(
        &self,
        address: &str,
        connect: Duration,
        io: Duration,
    ) -> std::io::Result<Box<dyn Wire>> {
        let to = crate::net::dial::parse_address(address)?;
        let mut conn = self.connect(to, connect)?;
        conn.set_read_timeout(Some(io));
        conn.set_write_timeout(Some(io));
        Ok(Box::new(conn))
    }
}

/// Starts the uplink on a thread of its own.
pub fn spawn(hub: Arc<Hub>, dial: impl Dial, config: Config) -> Result<()> {
    let mailbox = hub.dir().mailbox()?;
    let allowlist = hub.dir().allowlist()?;
    let state = UplinkState::load(&hub.dir().path)
        .ok()
        .flatten()
        .unwrap_or_default();
    let uplink = Uplink {
        hub,
        dial: Box::new(dial),
        config,
        mailbox,
        allowlist,
        state,
        seen: 0,
        id_seen: 0,
    };
    std::thread::Builder::new()
        .name("uplink".into())
        .spawn(move || uplink.run())
        .context("starting the uplink thread")?;
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

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
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
                    self.state.failures = self.state.failures.saturating_add(1);
                    let delay = backoff(&self.config, self.state.failures, random_u64());
                    if self.state.last_success.is_some() {
                        self.state.state = "backing off".into();
                    }
                    self.state.last_error = Some(format!("{} {e:#}", unix_now()));
                    self.state.retry_in_ms = Some(delay.as_millis() as u64);
                    self.save();
                    log::warn!(
                        "uplink: {e:#}; retrying in {} ms (failure {} in a row)",
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
                    Err(e) => log::warn!("uplink: reading the id pool: {e:#}"),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Enrolls if needed, then sessions until nothing is left to push (the last one live, when
    /// live mode is on).
    fn round(&mut self) -> Result<(Moved, Ending)> {
        let peer = match pinned(&self.allowlist)? {
            Some(p) => p,
            None => self.enroll()?,
        };
        self.state.cloud_site = Some(peer.site.clone());
        let key = key_of(&peer.key)?;
        let site: SiteId = peer
            .site
            .parse()
            .map_err(|_| anyhow!("pinned cloud site id"))?;
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
    ) -> Result<(Moved, Ending)> {
        // Before the push is planned: a device's commit after this is news for the live wait.
        self.seen = self.hub.commits();
        self.id_seen = self.hub.id_shortfalls();
        let mut link = self.open(addresses, key, site, Purpose::Session)?;
        let mut sid = [0u8; 16];
        getrandom::getrandom(&mut sid).context("no randomness for a session id")?;
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
            state,
            seen,
            id_seen,
            ..
        } = self;
        let mut store = MailboxClient::new(mailbox, site);
        store.id_block = config.id_block;
        store.id_low_water = config.id_block / 4;
        let mut news = News {
            hub,
            seen,
            id_seen: *id_seen,
            noted: 0,
            base: (state.pushed, state.pulled),
        };
        let r = drive(&mut link, &mut client, &mut store, &mut news).and_then(|()| {
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
        let moved = store.moved;
        let r = r.map(|end| match end {
            Ending::Done if store.more_to_push => Ending::More,
            end => end,
        });
        if r.is_ok() && !client.is_done() {
            // A live session left early, cleanly: everything pulled is stored.
            let _ = link.send(&Message::Bye);
        }
        if let Err(e) = &r {
            if let Some(m) = e
                .downcast_ref::<outpost_protocol::session::SessionError>()
                .and_then(|e| e.to_message())
            {
                let _ = link.send(&m);
            }
        }
        r.map(|end| (moved, end))
    }

    fn next_counter(&self) -> Result<u64> {
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
    ) -> Result<Link> {
        let mut tried = Vec::new();
        let mut wire = None;
        for a in addresses {
            self.state.address = Some(a.clone());
            match self
                .dial
                .dial(a, self.config.connect_timeout, self.config.io_timeout)
            {
                Ok(w) => {
                    wire = Some(w);
                    break;
                }
                Err(e) => tried.push(format!("{a}: {e}")),
            }
        }
        let Some(wire) = wire else {
            bail!("the cloud is unreachable ({})", tried.join("; "));
        };
        let counter = self.next_counter()?;
        handshake(
            wire,
            InitiatorConfig {
                identity: self.hub.keypair().clone(),
                site: self.hub.dir().identity.site,
                counter,
                responder_key: key,
                responder_site: site,
                purpose,
                version: PROTOCOL_VERSION,
            },
        )
    }

    /// Enrollment with the stored code; pins the cloud.
    fn enroll(&mut self) -> Result<CloudPeer> {
        let text = self
            .allowlist
            .setting(UPLINK_CODE)?
            .filter(|t| !t.is_empty())
            .context("no cloud enrollment code stored (run --cloud CODE)")?;
        let code = EnrollCode::decode(&text).map_err(|e| anyhow!("the stored code: {e}"))?;
        let key = code
            .public_key()
            .map_err(|e| anyhow!("the stored code's key: {e}"))?;
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
                    let _ = l.send(&Message::Bye);
                    self.pin(&peer)?;
                    return Ok(peer);
                }
                let expired = if unix_now() > code.expires_at {
                    format!(" (the code expired at unix {})", code.expires_at)
                } else {
                    String::new()
                };
                return Err(e.context(format!("enrolling with the cloud{expired}")));
            }
        };
        link.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            site: self.hub.dir().identity.site,
            role: PeerRole::Hub,
            fingerprint: [0; 32],
            wall_clock_ms: unix_now() * 1000,
            vector: self.mailbox.vector()?,
            session: SessionId::default(),
        }))?;
        match link.recv().context("waiting for the cloud to confirm the enrollment")? {
            Message::Hello(h) if h.site != code.hub_site => bail!(
                "enrollment: the peer's hello names site {} but the code names {}",
                h.site,
                code.hub_site
            ),
            Message::Hello(h) if h.role != PeerRole::Cloud => bail!(
                "enrollment: the code's peer is a {:?}, not a cloud (use outpost-cloud enroll-code --hub)",
                h.role
            ),
            Message::Hello(_) => {}
            Message::Error { code, message } => {
                bail!("enrollment: the cloud answered an error ({code:?}): {message}")
            }
            other => bail!("enrollment: the cloud answered message tag {}", other.tag()),
        }
        let _ = link.send(&Message::Bye);
        self.pin(&peer)?;
        Ok(peer)
    }

    fn pin(&mut self, peer: &CloudPeer) -> Result<()> {
        self.allowlist
            .set_setting(UPLINK_CLOUD, &serde_json::to_string(peer)?)?;
        log::info!(
            "uplink: enrolled with the cloud site={} key={}",
            peer.site,
            key_of(&peer.key)?.fingerprint()
        );
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_of(text: &str) -> Result<PublicKey> {
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| anyhow!("the pinned cloud key is not hex"))?;
    PublicKey::from_sec1(&bytes).map_err(|e| anyhow!("the pinned cloud key: {e:?}"))
}

fn save(state: &UplinkState, hub: &Hub) {
    if let Err(e) = state.save(&hub.dir().path) {
        log::warn!("uplink: recording its state: {e:#}");
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

/// Runs the client session over `link` to its end, or until it waits live after its pull.
fn drive<'m>(
    link: &mut Link,
    client: &mut ClientSession<MailboxClient<'m>>,
    store: &mut MailboxClient<'m>,
    news: &mut News<'_>,
) -> Result<()> {
    loop {
        while let Some(m) = client.poll(store)? {
            link.send(&m)?;
        }
        if client.is_done() || client.is_live() {
            return Ok(());
        }
        let msg = link.recv()?;
        let r = client.handle(msg, store);
        news.after(store);
        r?;
    }
}

/// The live wait of a session whose pull is complete (see the module's documentation): returns
/// why it should end (`Bye` is the caller's), or the error that ended it.
fn live_wait<'m>(
    link: &mut Link,
    client: &mut ClientSession<MailboxClient<'m>>,
    store: &mut MailboxClient<'m>,
    news: &mut News<'_>,
    config: &Config,
    state: &mut UplinkState,
    deadline: Instant,
) -> Result<Ending> {
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
    link.wire.set_read_timeout(LIVE_POLL).map_err(io_context)?;
    let (mut last_sent, mut last_received) = (Instant::now(), Instant::now());
    let mut nonce = 0u64;
    let mut pulled_before = store.moved.batches_pulled;
    let mut last_saved = Instant::now();
    loop {
        let now = Instant::now();
        // Between pulls (a pull in progress is finished first: everything it sends is stored).
        if client.is_live() {
            if now >= deadline {
                return Ok(Ending::Deadline);
            }
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
        if now.duration_since(last_received) >= config.silence {
            bail!(
                "the cloud stopped answering (nothing received for {} s in a live session)",
                config.silence.as_secs()
            );
        }
        if now.duration_since(last_sent) >= config.keepalive {
            nonce += 1;
            link.send(&Message::Ping { nonce })?;
            last_sent = now;
        }
        let Some(msg) = link.recv_within()? else {
            continue;
        };
        last_received = Instant::now();
        let r = client.handle(msg, store);
        news.after(store);
        r?;
        while let Some(m) = client.poll(store)? {
            link.send(&m)?;
            last_sent = Instant::now();
        }
        if client.is_done() {
            return Ok(Ending::Done);
        }
        if !client.is_live() {
            continue;
        }
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

/// An authenticated, encrypted connection to the cloud.
struct Link {
    wire: Box<dyn Wire>,
    channel: Channel,
    start: Instant,
    pending: Vec<u8>,
    max_message: usize,
    buf: Vec<u8>,
}

fn io_context(e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            anyhow!("the cloud stopped answering (timed out)")
        }
        _ => anyhow::Error::new(e).context("the connection to the cloud"),
    }
}

/// The initiator's side of the handshake over `wire` (message 3 of an enrollment included).
fn handshake(mut wire: Box<dyn Wire>, config: InitiatorConfig) -> Result<Link> {
    let start = Instant::now();
    let limits = ChannelLimits::default();
    let ephemeral = Ephemeral::from_os().context("no randomness for the handshake")?;
    let mut init =
        Initiator::start(&config, ephemeral, limits, 0).map_err(|e| anyhow!("handshake: {e}"))?;
    wire.write_all(&init.take_outgoing()).map_err(io_context)?;
    let mut buf = [0u8; 1024];
    let mut received = 0usize;
    loop {
        let n = match wire.read(&mut buf) {
            Ok(0) if received == 0 => bail!(
                "the cloud closed without answering the handshake (not the pinned key, or the cloud does not know this hub)"
            ),
            Ok(0) => bail!("the cloud closed in the middle of the handshake"),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_context(e)),
        };
        received += n;
        let mut input = &buf[..n];
        let now = start.elapsed().as_millis() as u64;
        match init.receive(&mut input, now) {
            Ok(Some(mut channel)) => {
                let out = channel.take_outgoing();
                if !out.is_empty() {
                    wire.write_all(&out).map_err(io_context)?;
                }
                return Ok(Link {
                    wire,
                    channel,
                    start,
                    pending: input.to_vec(),
                    max_message: limits.max_message,
                    buf: vec![0u8; 64 * 1024],
                });
            }
            Ok(None) => {}
            Err(e) => bail!("handshake with the cloud: {e}"),
        }
    }
}

impl Link {
    fn send(&mut self, msg: &Message) -> Result<()> {
        self.channel
            .send(&msg.encode())
            .map_err(|e| anyhow!("channel: {e}"))?;
        let out = self.channel.take_outgoing();
        self.wire.write_all(&out).map_err(io_context)
    }

    fn recv(&mut self) -> Result<Message> {
        self.recv_inner(false)?
            .context("the cloud stopped answering (timed out)")
    }

    /// One message, or `None` when a read times out first (the live wait's short reads; a
    /// message half received stays pending for the next call).
    fn recv_within(&mut self) -> Result<Option<Message>> {
        self.recv_inner(true)
    }

    fn recv_inner(&mut self, timeout_is_none: bool) -> Result<Option<Message>> {
        loop {
            if !self.pending.is_empty() {
                let mut input = &self.pending[..];
                let now = self.start.elapsed().as_millis() as u64;
                let r = self.channel.receive(&mut input, now);
                let used = self.pending.len() - input.len();
                self.pending.drain(..used);
                if let Some(bytes) = r.map_err(|e| anyhow!("channel: {e}"))? {
                    return Message::decode(&bytes, self.max_message)
                        .map(Some)
                        .map_err(|e| anyhow!("a message from the cloud: {e}"));
                }
            }
            match self.wire.read(&mut self.buf) {
                Ok(0) => bail!("the cloud closed the connection"),
                Ok(n) => self.pending.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if timeout_is_none
                        && matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(io_context(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_min_to_max_with_jitter_in_the_upper_half() {
        let c = Config::new(
            Some(Duration::from_millis(100)),
            Some(Duration::from_millis(1000)),
        )
        .unwrap();
        for (failures, base) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let lo = backoff(&c, failures, 0).as_millis() as u64;
            let hi = backoff(&c, failures, base / 2).as_millis() as u64;
            assert_eq!((lo, hi), (base - base / 2, base), "failures {failures}");
            for r in [1, 7, 12345, u64::MAX] {
                let d = backoff(&c, failures, r).as_millis() as u64;
                assert!(d >= base - base / 2 && d <= base);
            }
        }
    }

    #[test]
    fn a_config_with_max_below_min_is_refused() {
        assert!(Config::new(Some(Duration::from_secs(2)), Some(Duration::from_secs(1))).is_err());
        assert!(Config::new(Some(Duration::ZERO), None).is_err());
    }

    #[test]
    fn the_pinned_key_round_trips_through_hex() {
        let k = outpost_protocol::handshake::Keypair::generate().unwrap();
        let text = hex(k.public().as_bytes());
        assert_eq!(key_of(&text).unwrap(), *k.public());
        assert!(key_of("zz").is_err());
    }
}
