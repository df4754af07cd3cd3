//! What the hub reports about itself: the `status` command, the status page and the run-state
//! file, all from one [`Snapshot`].
//!
//! - **Run state** (`run-state.json` in the data directory): written by a running hub at start
//!   and every [`HEARTBEAT`] (temp file + rename): pid, start time, last heartbeat, where it
//!   serves, its recent warnings and errors. `status` (another process) reads it to say whether
//!   the hub runs and for how long; a heartbeat older than [`STALE_AFTER`] means it stopped (or
//!   lost power) around then.
//! - **Device vectors**: when a session ends, the relay records what the device is known to
//!   cover in the allowlist (`Allowlist::record_vector`), so the snapshot can say what each
//!   device still lacks ("pending": the seqs the hub holds that its vector does not cover).
//! - **The page** is rendered from a snapshot refreshed by a thread ([`PageCache`]): the
//!   network executor only copies a string, it never touches a database.

use crate::datadir::{unix_now, DataDir};
use crate::uplink::{CloudPeer, UplinkState, STATE_FILE, UPLINK_CLOUD, UPLINK_CODE};
use outpost_mailbox::{scope_counts, MailboxError, ScopeCount};
use outpost_protocol::hlc::UtcDate;
use outpost_protocol::scope::Scopes;
use outpost_protocol::{Hlc, SiteId};
use outpost_relay::allowlist::{Allowlist, AllowlistError};
use outpost_relay::vector_text::{self, VectorTextError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The run-state file in the data directory.
pub const RUN_STATE: &str = "run-state.json";
/// How often a running hub rewrites its run state.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A heartbeat older than this means the hub is not running.
pub const STALE_AFTER: u64 = 15;
/// How often the status page's snapshot is refreshed.
pub const PAGE_REFRESH: Duration = Duration::from_secs(2);

/// Why the status could not be read or the run state written.
#[derive(Debug)]
#[non_exhaustive]
pub enum StatusError {
    /// A state file (run state, uplink state) could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A state file is not what the hub writes there.
    Damaged {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The run state could not be written.
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The run state could not be renamed into place.
    Rename {
        /// The file renamed into.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The run state could not be encoded.
    Encode(serde_json::Error),
    /// The pinned cloud (an allowlist setting) is not what the uplink writes there.
    PinnedCloud(serde_json::Error),
    /// The cloud's last known vector in the uplink state is damaged.
    CloudVector(VectorTextError),
    /// The mailbox failed.
    Mailbox(MailboxError),
    /// The allowlist failed.
    Allowlist(AllowlistError),
    /// A thread could not be started.
    Thread {
        /// Which thread.
        name: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            StatusError::Damaged {
                path,
                expected,
                source,
            } => write!(f, "{}: not {expected}: {source}", path.display()),
            StatusError::Write { path, source } => {
                write!(f, "writing {}: {source}", path.display())
            }
            StatusError::Rename { path, source } => {
                write!(f, "renaming to {}: {source}", path.display())
            }
            StatusError::Encode(e) => write!(f, "encoding the run state: {e}"),
            StatusError::PinnedCloud(e) => write!(f, "the pinned cloud setting: {e}"),
            StatusError::CloudVector(e) => {
                write!(f, "{STATE_FILE}: the cloud's last known vector: {e}")
            }
            StatusError::Mailbox(e) => e.fmt(f),
            StatusError::Allowlist(e) => e.fmt(f),
            StatusError::Thread { name, source } => {
                write!(f, "starting the {name} thread: {source}")
            }
        }
    }
}

impl std::error::Error for StatusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StatusError::Read { source, .. }
            | StatusError::Write { source, .. }
            | StatusError::Rename { source, .. }
            | StatusError::Thread { source, .. } => Some(source),
            StatusError::Damaged { source, .. }
            | StatusError::Encode(source)
            | StatusError::PinnedCloud(source) => Some(source),
            StatusError::CloudVector(e) => Some(e),
            // Transparent: the inner error's text is this one's.
            StatusError::Mailbox(e) => e.source(),
            StatusError::Allowlist(e) => e.source(),
        }
    }
}

impl From<MailboxError> for StatusError {
    fn from(e: MailboxError) -> Self {
        StatusError::Mailbox(e)
    }
}

impl From<AllowlistError> for StatusError {
    fn from(e: AllowlistError) -> Self {
        StatusError::Allowlist(e)
    }
}

/// The JSON state file `path`, if it exists.
fn load_json<T: DeserializeOwned>(
    path: PathBuf,
    expected: &'static str,
) -> Result<Option<T>, StatusError> {
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StatusError::Damaged {
                    path,
                    expected,
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StatusError::Read { path, source }),
    }
}

/// What a running hub writes about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunState {
    /// The hub's process id.
    pub pid: u32,
    /// When it started, unix seconds.
    pub started_at: u64,
    /// Its last heartbeat, unix seconds.
    pub heartbeat: u64,
    /// The `--net` value.
    pub net: String,
    /// Where the relay serves (`IP:PORT`), once known.
    pub serving: Option<String>,
    /// The status page's address, if served.
    pub status_page: Option<String>,
    /// Recent warnings and errors: (unix seconds, text), oldest first.
    pub errors: Vec<(u64, String)>,
}

impl RunState {
    /// Reads the run state of `dir`, if a hub ever ran there.
    pub fn load(dir: &Path) -> Result<Option<RunState>, StatusError> {
        load_json(dir.join(RUN_STATE), "a run state")
    }

    /// Writes it to `dir` atomically (temp file, rename). Not fsynced: it is advisory, and a
    /// lost heartbeat only makes the uptime look shorter.
    pub fn save(&self, dir: &Path) -> Result<(), StatusError> {
        let path = dir.join(RUN_STATE);
        let tmp = dir.join(format!("{RUN_STATE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(StatusError::Encode)?;
        std::fs::write(&tmp, bytes).map_err(|source| StatusError::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StatusError::Rename { path, source })
    }
}

/// The running hub's run state, shared with the heartbeat thread.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    dir: PathBuf,
    state: Arc<Mutex<RunState>>,
}

impl Heartbeat {
    /// Records the start of a hub serving `net` in `dir` and rewrites the file every
    /// [`HEARTBEAT`] from a thread of its own.
    pub fn start(dir: &Path, net: &str) -> Result<Heartbeat, StatusError> {
        let now = unix_now();
        let hb = Heartbeat {
            dir: dir.to_path_buf(),
            state: Arc::new(Mutex::new(RunState {
                pid: std::process::id(),
                started_at: now,
                heartbeat: now,
                net: net.to_owned(),
                ..RunState::default()
            })),
        };
        hb.beat()?;
        let thread = hb.clone();
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(HEARTBEAT);
                if let Err(e) = thread.beat() {
                    // Not through log::warn: it would land in the errors it failed to write.
                    eprintln!("outpost-hub: heartbeat: {e}");
                }
            })
            .map_err(|source| StatusError::Thread {
                name: "heartbeat",
                source,
            })?;
        Ok(hb)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records where the relay and the status page serve.
    pub fn serving(&self, relay: String, status_page: Option<String>) {
        {
            let mut s = self.lock();
            s.serving = Some(relay);
            s.status_page = status_page;
        }
        if let Err(e) = self.beat() {
            eprintln!("outpost-hub: heartbeat: {e}");
        }
    }

    /// Writes the state now.
    pub fn beat(&self) -> Result<(), StatusError> {
        let state = {
            let mut s = self.lock();
            s.heartbeat = unix_now();
            s.errors = outpost_relay::logging::recent_errors()
                .into_iter()
                .map(|e| (e.at, e.text))
                .collect();
            s.clone()
        };
        state.save(&self.dir)
    }
}

/// One device as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceStatus {
    /// Its site id.
    pub site: String,
    /// Its key's fingerprint.
    pub key: String,
    /// Last session, unix seconds.
    pub last_seen: Option<u64>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<u64>,
    /// Seqs the hub holds (contiguously, of other origins, in the streams of its grant) that the
    /// device's last known vector does not cover; `None` when the device never completed a
    /// session.
    pub pending: Option<u64>,
    /// The scopes it is granted (`["*"]`: all).
    pub scopes: Vec<String>,
}

/// One stream's batches in the mailbox: an origin's changes to one scope.
#[derive(Clone, Debug, Serialize)]
pub struct OriginStatus {
    /// The origin's site id.
    pub origin: String,
    /// The stream's scope (`""`: unscoped tables).
    pub scope: String,
    /// Batches held.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Contiguous coverage from seq 1.
    pub covered: u64,
    /// Highest seq held (beyond `covered` means a gap).
    pub highest: u64,
}

/// Everything `status` and the page show.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// The hub's site id.
    pub site: String,
    /// Its key fingerprint.
    pub key: String,
    /// When this snapshot was taken, unix seconds.
    pub taken_at: u64,
    /// Whether a hub process is running on this data directory (fresh heartbeat).
    pub running: bool,
    /// Seconds since the running hub started (or that the last run lasted, when stopped).
    pub uptime: Option<u64>,
    /// The last run state written.
    pub run: Option<RunState>,
    /// The address enrollment codes use by default (the last run's).
    pub last_net: Option<String>,
    /// Enrolled devices, revoked ones included.
    pub devices: Vec<DeviceStatus>,
    /// Batches held in all.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Per stream (origin and scope).
    pub origins: Vec<OriginStatus>,
    /// Per scope: what the hub holds of it and how many active devices it serves it to
    /// (docs/design.md section 10; the unscoped tables as scope `""`).
    pub scope_counts: Vec<ScopeCount>,
    /// Last successful uplink to the cloud, unix seconds (`None`: never).
    pub last_uplink: Option<u64>,
    /// The uplink, when this hub has one (`run --cloud`).
    pub uplink: Option<UplinkStatus>,
    /// Where the ids this hub grants come from: `root` (its own counters) or `delegated` (a
    /// pool of ranges from the cloud).
    pub id_mode: String,
    /// Per id sequence.
    pub ids: Vec<IdStatus>,
    /// The scopes this hub is granted (`["*"]`: all), once its uplink brought the cloud's
    /// grant; `None` before (or with no cloud).
    pub scopes: Option<Vec<String>>,
    /// The highest clock of any batch held, as a UTC date (`None` while none is held): a
    /// device's push stamped up to a second past it passes the time bound (docs/design.md
    /// section 10, "Time").
    pub highest_admitted: Option<String>,
    /// Device pushes refused because their clocks ran more than a day ahead of trusted time.
    pub clock_ahead_refused: u64,
    /// Stored batches found damaged before serving and removed (a bit flipped on the SD card):
    /// each range is fetched again, from the cloud or from the device that pushed it.
    pub damaged: u64,
    /// A sealed tenant's key envelopes this hub holds for devices, one per device, handed on
    /// unopened (it holds no key itself); 0 in an unsealed tenant.
    pub envelopes: u64,
}

/// One id sequence as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct IdStatus {
    /// The sequence's name.
    pub sequence: String,
    /// Root: the next number it grants.
    pub next: u64,
    /// Delegated: numbers left in the pool from the cloud.
    pub pool: u64,
    /// Delegated: numbers devices asked for that the pool could not cover yet.
    pub demand: u64,
    /// Delegated: numbers asked of the cloud, not granted yet.
    pub refilling: u64,
    /// Requests refused because the device had used its id quota.
    pub over_quota: u64,
}

/// The uplink as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct UplinkStatus {
    /// The cloud's address (last tried, else the first of the code or the pin).
    pub cloud: Option<String>,
    /// The cloud's site id, once known.
    pub cloud_site: Option<String>,
    /// `enrolling` (code stored, not enrolled yet), `never`, `connected`, `backing off`.
    pub state: String,
    /// Last successful round, unix seconds (a live session: when it went live, and its last pull).
    pub last_success: Option<u64>,
    /// Since when the uplink has been in live sessions without a failure, unix seconds (`None`:
    /// not live).
    pub live_since: Option<u64>,
    /// The last error, `unix-seconds text` (cleared by a success).
    pub last_error: Option<String>,
    /// While backing off: the delay before the next attempt, ms.
    pub retry_in_ms: Option<u64>,
    /// Seqs the hub holds (other than the cloud's) that the cloud's last known vector lacks;
    /// `None` before the first session.
    pub backlog_seqs: Option<u64>,
    /// Batches holding them.
    pub backlog_batches: Option<u64>,
    /// Whether the hub's clock is trusted: synced with the cloud's since the hub started. Only
    /// then do its hellos state a time devices adopt.
    pub clock_trusted: bool,
    /// Trusted time minus the hub's clock, ms, once synced.
    pub clock_offset_ms: Option<i64>,
    /// When it was last synced (unix seconds).
    pub clock_synced_at: Option<u64>,
    /// Pulled batches held back in the last session: no control entry named their origin's
    /// key yet ("origin seqs lo..=hi"); a later pull brings them again.
    pub held: Vec<String>,
    /// Origins held back from the push: their batch does not verify with the key the hub's
    /// directory holds (checked after the cloud refused a push as badly signed).
    pub withheld: Vec<String>,
    /// Devices the uplink revoked because the cloud revoked them ("site at unix-seconds").
    pub revoked_by_cloud: Vec<String>,
}

impl UplinkStatus {
    fn collect(dir: &DataDir, allowlist: &Allowlist) -> Result<Option<UplinkStatus>, StatusError> {
        // (`uplink::pinned` and `UplinkState::load` read the same, with the uplink's errors.)
        let peer: Option<CloudPeer> = match allowlist.setting(UPLINK_CLOUD)? {
            Some(v) if !v.is_empty() => {
                Some(serde_json::from_str(&v).map_err(StatusError::PinnedCloud)?)
            }
            _ => None,
        };
        let code = allowlist.setting(UPLINK_CODE)?.filter(|c| !c.is_empty());
        if peer.is_none() && code.is_none() {
            return Ok(None);
        }
        let state: UplinkState =
            load_json(dir.path.join(STATE_FILE), "an uplink state")?.unwrap_or_default();
        let cloud_site = peer
            .as_ref()
            .map(|p| p.site.clone())
            .or(state.cloud_site.clone());
        let backlog = match (&state.cloud_vector, &cloud_site) {
            (Some(v), Some(site)) => {
                let exclude = site.parse::<SiteId>().ok();
                let vector = vector_text::decode(v).map_err(StatusError::CloudVector)?;
                Some(dir.mailbox()?.backlog(&vector, exclude)?)
            }
            _ => None,
        };
        let first = |p: &CloudPeer| p.addresses.first().cloned();
        Ok(Some(UplinkStatus {
            cloud: state
                .address
                .clone()
                .or_else(|| peer.as_ref().and_then(first)),
            cloud_site,
            state: match (&peer, state.state.as_str()) {
                (None, _) => "enrolling".into(),
                (Some(_), "") => "never".into(),
                (Some(_), s) => s.into(),
            },
            last_success: state.last_success,
            live_since: state.live_since,
            last_error: state.last_error,
            retry_in_ms: state.retry_in_ms,
            backlog_seqs: backlog.map(|b| b.0),
            backlog_batches: backlog.map(|b| b.1),
            clock_trusted: state.clock_synced_at.is_some(),
            clock_offset_ms: state.clock_offset_ms,
            clock_synced_at: state.clock_synced_at,
            held: state.held,
            withheld: state.withheld,
            revoked_by_cloud: state.revoked_by_cloud,
        }))
    }

    /// The lines `status` prints, at `now` (unix seconds).
    fn lines(&self, now: u64) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut l = vec![
            ("cloud", opt(&self.cloud)),
            ("state", self.state.clone()),
            (
                "backlog",
                match (self.backlog_seqs, self.backlog_batches) {
                    (Some(s), Some(b)) => format!("{s} seqs in {b} batches"),
                    _ => "unknown (no session yet)".into(),
                },
            ),
            ("last error", opt(&self.last_error)),
            (
                "clock",
                match (self.clock_synced_at, self.clock_offset_ms) {
                    (Some(at), Some(offset)) => format!(
                        "trusted: synced with the cloud {} ago (this machine's clock {offset:+} ms off)",
                        duration(now.saturating_sub(at))
                    ),
                    _ => "not trusted: no session with the cloud since the hub started; devices \
                          keep their own time"
                        .into(),
                },
            ),
        ];
        if let Some(t) = self.live_since {
            l.insert(
                2,
                (
                    "live since",
                    format!("{} ago", duration(now.saturating_sub(t))),
                ),
            );
        }
        if let Some(ms) = self.retry_in_ms {
            l.push(("retry in", format!("{ms} ms")));
        }
        if !self.held.is_empty() {
            l.push((
                "held (key unknown)",
                format!("{}; pulled again later", self.held.join(", ")),
            ));
        }
        if !self.withheld.is_empty() {
            l.push((
                "withheld (bad signature)",
                format!("{}; not pushed", self.withheld.join(", ")),
            ));
        }
        if !self.revoked_by_cloud.is_empty() {
            l.push((
                "revoked by the cloud",
                format!("{}; refused from then on", self.revoked_by_cloud.join(", ")),
            ));
        }
        l
    }
}

impl Snapshot {
    /// Reads the data directory (the databases and the run state).
    pub fn collect(dir: &DataDir) -> Result<Snapshot, StatusError> {
        let (mailbox, id_mode, ids, clocks, envelopes) = {
            let mb = dir.mailbox()?;
            (
                mb.status()?,
                mb.id_mode()?,
                mb.id_status()?,
                mb.clock_admission()?,
                mb.envelopes_held()?,
            )
        };
        let allowlist = dir.allowlist()?;
        let run = RunState::load(&dir.path)?;
        let now = unix_now();
        let running = run
            .as_ref()
            .is_some_and(|r| now.saturating_sub(r.heartbeat) <= STALE_AFTER);
        let uptime = run.as_ref().map(|r| {
            let end = if running { now } else { r.heartbeat };
            end.saturating_sub(r.started_at)
        });
        let mut devices = Vec::new();
        let enrolled = allowlist.devices()?;
        for d in &enrolled {
            let pending = allowlist.peer_vector(&d.site)?.map(|v| {
                mailbox
                    .origins
                    .iter()
                    // What the device is served: others' streams within its grant.
                    .filter(|o| {
                        o.origin != d.site
                            && (o.scope.is_empty() || d.grant.scopes.contains(&o.scope))
                    })
                    .map(|o| o.covered.saturating_sub(v.get(&o.stream_id())))
                    .sum()
            });
            devices.push(DeviceStatus {
                site: d.site.to_string(),
                key: d.key.fingerprint(),
                last_seen: d.last_seen,
                revoked_at: d.revoked_at,
                pending,
                scopes: d.grant.scopes.names(),
            });
        }
        let origins: Vec<OriginStatus> = mailbox
            .origins
            .iter()
            .map(|o| OriginStatus {
                origin: o.origin.to_string(),
                scope: o.scope.clone(),
                batches: o.batches,
                bytes: o.bytes,
                covered: o.covered,
                highest: o.highest,
            })
            .collect();
        let grants: Vec<Scopes> = enrolled
            .into_iter()
            .filter(|d| d.revoked_at.is_none())
            .map(|d| d.grant.scopes)
            .collect();
        let scope_counts = scope_counts(&mailbox, &grants);
        // A damaged pinned-cloud setting is reported by the uplink's status below; without a
        // readable one no cloud grant is trusted.
        let cloud = crate::uplink::cloud_root(&allowlist).ok().flatten();
        let scopes = dir.own_grant(cloud)?.map(|g| g.scopes.names());
        let mut uplink = UplinkStatus::collect(dir, &allowlist)?;
        if let (Some(u), false) = (&mut uplink, running) {
            u.live_since = None; // the hub stopped: its uplink is not live
        }
        Ok(Snapshot {
            last_uplink: uplink.as_ref().and_then(|u| u.last_success),
            uplink,
            site: dir.identity.site.to_string(),
            key: dir.identity.public().fingerprint(),
            taken_at: now,
            running,
            uptime,
            run,
            last_net: allowlist.setting(crate::datadir::LAST_NET)?,
            devices,
            batches: mailbox.batches,
            bytes: mailbox.bytes,
            origins,
            scope_counts,
            id_mode: match id_mode {
                outpost_mailbox::IdMode::Root => "root".into(),
                outpost_mailbox::IdMode::Delegated => "delegated".into(),
            },
            ids: ids
                .into_iter()
                .map(|i| IdStatus {
                    sequence: i.sequence,
                    next: i.next,
                    pool: i.pool,
                    demand: i.demand,
                    refilling: i.refilling,
                    over_quota: i.over_quota,
                })
                .collect(),
            scopes,
            highest_admitted: (clocks.highest_admitted != Hlc::ZERO)
                .then(|| UtcDate(clocks.highest_admitted.millis()).to_string()),
            clock_ahead_refused: clocks.clock_ahead_refused,
            damaged: mailbox.damaged,
            envelopes,
        })
    }

    /// `, N damaged (removed, fetched again)` once any stored batch was found damaged.
    fn damaged_text(&self) -> String {
        match self.damaged {
            0 => String::new(),
            n => format!(", {n} damaged (removed, fetched again)"),
        }
    }

    /// `highest admitted <date>  refused ahead N`.
    fn clock_figures(&self) -> String {
        format!(
            "highest admitted {}  refused ahead {}",
            self.highest_admitted.as_deref().unwrap_or("-"),
            self.clock_ahead_refused
        )
    }

    fn uptime_text(&self) -> String {
        match (self.running, self.uptime, &self.run) {
            (true, Some(up), _) => format!("up {}", duration(up)),
            (false, Some(up), Some(run)) => format!(
                "not running (last heartbeat {} ago, after {} up)",
                duration(self.taken_at.saturating_sub(run.heartbeat)),
                duration(up)
            ),
            _ => "never run".to_owned(),
        }
    }

    fn errors(&self) -> &[(u64, String)] {
        self.run.as_ref().map_or(&[], |r| &r.errors)
    }

    /// The `status` command's text.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "hub site    {}", self.site);
        let _ = writeln!(o, "key         {}", self.key);
        let _ = writeln!(o, "uptime      {}", self.uptime_text());
        if let Some(serving) = self.run.as_ref().and_then(|r| r.serving.as_deref()) {
            let _ = writeln!(o, "serving     {serving}");
        }
        let _ = writeln!(
            o,
            "address     {}",
            self.last_net.as_deref().unwrap_or("(never run)")
        );
        let _ = writeln!(o, "last uplink {}", self.last_uplink_text());
        if let Some(u) = &self.uplink {
            for (k, v) in u.lines(self.taken_at) {
                let _ = writeln!(o, "  {k:<10} {v}");
            }
        }
        if let Some(scopes) = &self.scopes {
            let _ = writeln!(o, "scopes      {}", scopes.join(","));
        }
        let active = self
            .devices
            .iter()
            .filter(|d| d.revoked_at.is_none())
            .count();
        let _ = writeln!(
            o,
            "devices     {} enrolled, {active} active",
            self.devices.len()
        );
        for d in &self.devices {
            let _ = writeln!(
                o,
                "  {}  key {}  last seen {}  pending {}{}",
                d.site,
                d.key,
                d.last_seen.map_or("never".into(), |t| self.ago(t)),
                d.pending.map_or("unknown".into(), |p| p.to_string()),
                d.revoked_at
                    .map_or(String::new(), |t| format!("  REVOKED at {t}")),
            );
        }
        for c in &self.scope_counts {
            let _ = writeln!(
                o,
                "  scope {}  {} batches  {} bytes  {} devices",
                scope_label(&c.scope),
                c.batches,
                c.bytes,
                c.peers
            );
        }
        let _ = writeln!(
            o,
            "mailbox     {} batches, {} bytes{}",
            self.batches,
            self.bytes,
            self.damaged_text()
        );
        for b in &self.origins {
            let _ = writeln!(
                o,
                "  origin {}{}  {} batches  {} bytes  covered 1..={}{}",
                b.origin,
                if b.scope.is_empty() {
                    String::new()
                } else {
                    format!("/{}", b.scope)
                },
                b.batches,
                b.bytes,
                b.covered,
                if b.highest > b.covered {
                    format!("  (held up to {} beyond a gap)", b.highest)
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            o,
            "ids         {}",
            if self.id_mode == "delegated" {
                "delegated (pools of ranges from the cloud)"
            } else {
                "root (this hub's own counters)"
            }
        );
        for i in &self.ids {
            let _ = writeln!(o, "  {}  {}", i.sequence, self.id_figures(i));
        }
        let _ = writeln!(o, "clocks      {}", self.clock_figures());
        let errors = self.errors();
        let _ = writeln!(
            o,
            "errors      {}",
            if errors.is_empty() { "none" } else { "" }
        );
        for (at, text) in errors {
            let _ = writeln!(o, "  {} {text}", self.ago(*at));
        }
        o
    }

    /// `pool 190  demand 500  refilling 1000` (delegated) or `next 101` (root), then
    /// `over quota N` when devices were refused ids for their quota.
    fn id_figures(&self, i: &IdStatus) -> String {
        let figures = if self.id_mode == "delegated" {
            format!(
                "pool {}  demand {}  refilling {}",
                i.pool, i.demand, i.refilling
            )
        } else {
            format!("next {}", i.next)
        };
        if i.over_quota > 0 {
            format!("{figures}  over quota {}", i.over_quota)
        } else {
            figures
        }
    }

    fn last_uplink_text(&self) -> String {
        self.last_uplink.map_or("never".into(), |t| self.ago(t))
    }

    fn ago(&self, t: u64) -> String {
        format!("{} ago", duration(self.taken_at.saturating_sub(t)))
    }

    /// The status page: small, plain HTML (no script, no external resource) that a cheap
    /// phone's browser shows; refreshes itself every 10 s.
    pub fn render_html(&self) -> String {
        let mut o = String::with_capacity(4096);
        o.push_str("<!DOCTYPE html><html><head><meta charset=\"utf-8\">");
        o.push_str("<meta name=\"viewport\" content=\"width=device-width\">");
        o.push_str("<meta http-equiv=\"refresh\" content=\"10\"><title>Outpost hub</title>");
        o.push_str("<style>body{font-family:sans-serif;margin:8px}td,th{padding:2px 6px;text-align:left}</style>");
        o.push_str("</head><body><h1>Outpost hub</h1><table>");
        let row = |o: &mut String, k: &str, v: &str| {
            let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
        };
        row(&mut o, "Hub", &self.site);
        row(&mut o, "Key", &self.key);
        row(&mut o, "Uptime", &self.uptime_text());
        if let Some(serving) = self.run.as_ref().and_then(|r| r.serving.as_deref()) {
            row(&mut o, "Serving", serving);
        }
        row(&mut o, "Last uplink", &self.last_uplink_text());
        if let Some(u) = &self.uplink {
            for (k, v) in u.lines(self.taken_at) {
                row(&mut o, &format!("Uplink {k}"), &v);
            }
        }
        if let Some(scopes) = &self.scopes {
            row(&mut o, "Scopes", &scopes.join(", "));
        }
        row(
            &mut o,
            "Batches held",
            &format!(
                "{} ({} bytes){}",
                self.batches,
                self.bytes,
                self.damaged_text()
            ),
        );
        for i in &self.ids {
            row(&mut o, &format!("Ids {}", i.sequence), &self.id_figures(i));
        }
        row(&mut o, "Clocks", &self.clock_figures());
        o.push_str("</table><h2>Devices</h2>");
        if self.devices.is_empty() {
            o.push_str("<p>No device enrolled.</p>");
        } else {
            o.push_str(
                "<table><tr><th>Device</th><th>Last seen</th><th>Pending</th><th>State</th></tr>",
            );
            for d in &self.devices {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&d.site),
                    esc(&d.last_seen.map_or("never".into(), |t| self.ago(t))),
                    d.pending.map_or("?".into(), |p| p.to_string()),
                    if d.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
            o.push_str("</table>");
        }
        if !self.scope_counts.is_empty() {
            o.push_str(
                "<h2>Scopes</h2><table><tr><th>Scope</th><th>Batches</th><th>Bytes</th><th>Devices</th></tr>",
            );
            for c in &self.scope_counts {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(scope_label(&c.scope)),
                    c.batches,
                    c.bytes,
                    c.peers
                );
            }
            o.push_str("</table>");
        }
        o.push_str("<h2>Recent errors</h2>");
        let errors = self.errors();
        if errors.is_empty() {
            o.push_str("<p>None.</p>");
        } else {
            o.push_str("<ul>");
            for (at, text) in errors.iter().rev() {
                let _ = write!(o, "<li>{}: {}</li>", esc(&self.ago(*at)), esc(text));
            }
            o.push_str("</ul>");
        }
        let _ = write!(
            o,
            "<p><small>As of {}.</small></p></body></html>",
            outpost_relay::logging::utc_timestamp(
                std::time::UNIX_EPOCH + Duration::from_secs(self.taken_at)
            )
        );
        o
    }
}

/// A scope as status shows it: the unscoped tables' stream has no name.
fn scope_label(scope: &str) -> &str {
    if scope.is_empty() {
        "(unscoped)"
    } else {
        scope
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `7s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The status page as last rendered, refreshed by a thread every [`PAGE_REFRESH`]: what the
/// HTTP servers hand out without touching a database.
#[derive(Clone, Debug)]
pub struct PageCache {
    page: Arc<Mutex<Arc<str>>>,
}

impl PageCache {
    /// Renders the page once, then keeps it fresh from a thread reading `dir`.
    pub fn start(dir: Arc<DataDir>) -> Result<PageCache, StatusError> {
        let cache = PageCache {
            page: Arc::new(Mutex::new(Arc::from(render_page(&dir)))),
        };
        let inner = cache.clone();
        std::thread::Builder::new()
            .name("status-page".into())
            .spawn(move || loop {
                std::thread::sleep(PAGE_REFRESH);
                let page: Arc<str> = Arc::from(render_page(&dir));
                *inner.page.lock().unwrap_or_else(|p| p.into_inner()) = page;
            })
            .map_err(|source| StatusError::Thread {
                name: "status page",
                source,
            })?;
        Ok(cache)
    }

    /// The current page (a copy; the lock is held only to clone a pointer).
    pub fn page(&self) -> String {
        let page = self.page.lock().unwrap_or_else(|p| p.into_inner()).clone();
        page.to_string()
    }
}

fn render_page(dir: &DataDir) -> String {
    match Snapshot::collect(dir) {
        Ok(s) => s.render_html(),
        Err(e) => {
            log::warn!("status page: {e}");
            format!(
                "<!DOCTYPE html><html><body><h1>Outpost hub</h1><p>Status unavailable: {}</p></body></html>",
                esc(&e.to_string())
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(duration(7), "7s");
        assert_eq!(duration(250), "4m 10s");
        assert_eq!(duration(7500), "2h 5m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600), "3d 4h");
    }

    #[test]
    fn page_escapes_what_it_shows() {
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
