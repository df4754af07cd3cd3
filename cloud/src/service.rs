//! The running cloud: the tenant database, the mailbox and the control file behind locks, the
//! background loop that moves batches between mailbox and tables, and the REST operations.
//!
//! **Lock order**: tenant, then mailbox, then control; a thread never takes them the other way.
//! The tenant database has one connection in this process: SQLite serialises writers anyway, and
//! one connection keeps the engine's per-connection clock cache coherent.
//!
//! The tenant is the embedded SQLite one or, for a data directory made with `--postgres`, the
//! tables in PostgreSQL ([`TenantDb`]); both ingest and export alike (`tenant/ingest.rs`,
//! `tenant/export.rs`). A PostgreSQL tenant's back-office writes wake the loop through `LISTEN`
//! ([`Cloud::spawn_sync_loop`]), so live devices get them within a second.

use crate::changelog::ChangelogError;
use crate::control::{Control, ControlError, LAST_APPLY_ERROR};
use crate::datadir::{unix_now, DataDir, DataDirError};
use crate::error_chain::Chain;
use crate::high_water::{self, HighWaterError};
use crate::new_origin::{self, Recovery, RecoveryError};
use crate::postgres::listen::Listener;
use crate::postgres::{capture_upgrade, connect, rest_log, rest_pull, rest_push, PgTenant};
use crate::tenant::{Ingested, Tenant, TenantError, TenantStore};
use crate::watermelon::{self, Access, PushError, Pushed, RestError};
use outpost_mailbox::Mailbox;
use outpost_protocol::scope::Scopes;
use outpost_relay::Serving;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The control stream's length the last "waiting for control entries" warning named.
static WAITING_LOGGED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Why the cloud could not open its stores or run a round (the background loop logs it and
/// retries).
#[derive(Debug)]
pub enum ServiceError {
    /// The tenant database failed.
    Tenant(TenantError),
    /// The REST change log's triggers could not be refreshed.
    Changelog(ChangelogError),
    /// The mailbox or the control file could not be opened.
    DataDir(DataDirError),
    /// The control file failed (recording the last apply error).
    Control(ControlError),
    /// The high-water marks of the cloud's own streams could not be checked or recorded.
    HighWater(HighWaterError),
    /// The recovery from a restore failed (tried again next round).
    Recovery(RecoveryError),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Transparent: each layer's error says what failed and names its file or table.
        match self {
            ServiceError::Tenant(e) => e.fmt(f),
            ServiceError::Changelog(e) => e.fmt(f),
            ServiceError::DataDir(e) => e.fmt(f),
            ServiceError::Control(e) => e.fmt(f),
            ServiceError::HighWater(e) => e.fmt(f),
            ServiceError::Recovery(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Tenant(e) => e.source(),
            ServiceError::Changelog(e) => e.source(),
            ServiceError::DataDir(e) => e.source(),
            ServiceError::Control(e) => e.source(),
            ServiceError::HighWater(e) => e.source(),
            ServiceError::Recovery(e) => e.source(),
        }
    }
}

impl From<RecoveryError> for ServiceError {
    fn from(e: RecoveryError) -> Self {
        ServiceError::Recovery(e)
    }
}

impl From<TenantError> for ServiceError {
    fn from(e: TenantError) -> Self {
        ServiceError::Tenant(e)
    }
}

impl From<ChangelogError> for ServiceError {
    fn from(e: ChangelogError) -> Self {
        ServiceError::Changelog(e)
    }
}

impl From<DataDirError> for ServiceError {
    fn from(e: DataDirError) -> Self {
        ServiceError::DataDir(e)
    }
}

impl From<HighWaterError> for ServiceError {
    fn from(e: HighWaterError) -> Self {
        ServiceError::HighWater(e)
    }
}

impl From<ControlError> for ServiceError {
    fn from(e: ControlError) -> Self {
        ServiceError::Control(e)
    }
}

/// Where the tenant's tables are.
#[derive(Debug)]
pub enum TenantDb {
    /// The embedded SQLite tenant (`tenant.db`).
    Sqlite(Tenant),
    /// The tenant in PostgreSQL (its URL, for the `LISTEN` connection, and the serving one).
    Postgres {
        /// The database URL.
        url: String,
        /// The tenant.
        tenant: Box<PgTenant>,
        /// Whether the REST change log was checked on every captured table (once per process).
        rest_log_ready: bool,
    },
}

impl TenantDb {
    fn ingest(&mut self, mailbox: &mut Mailbox) -> Result<Ingested, ServiceError> {
        Ok(match self {
            TenantDb::Sqlite(t) => {
                // Devices' batches do not wait for the REST log: the engine lists what it
                // applies whatever the log's state, and the log catches up from the list once
                // it can (`changelog/applied.rs`); pulls and pushes do wait for it.
                if let Err(e) = t.refresh_triggers() {
                    log::warn!(
                        "REST change log not brought up to date before the ingest (retried before the next pull, push and round): {}",
                        Chain(&e)
                    );
                }
                t.ingest(mailbox)?
            }
            TenantDb::Postgres { tenant, .. } => tenant.ingest(mailbox)?,
        })
    }

    fn export(
        &mut self,
        mailbox: &mut Mailbox,
        key: &outpost_protocol::handshake::Keypair,
    ) -> Result<usize, TenantError> {
        match self {
            TenantDb::Sqlite(t) => t.export(mailbox, key),
            TenantDb::Postgres { tenant, .. } => tenant.export(mailbox, key),
        }
    }

    /// The highest seq the tenant issued in each of the cloud's own streams, by wire id.
    fn own_tops(&mut self, mailbox: &mut Mailbox) -> Result<BTreeMap<String, u64>, TenantError> {
        match self {
            TenantDb::Sqlite(t) => TenantStore::own_tops(t, mailbox),
            TenantDb::Postgres { tenant, .. } => TenantStore::own_tops(tenant.as_mut(), mailbox),
        }
    }

    /// The origin the tenant writes under (`site`, the cloud's site id, until a restore made a
    /// PostgreSQL tenant take another).
    fn origin(&self, site: outpost_protocol::SiteId) -> outpost_protocol::SiteId {
        match self {
            TenantDb::Sqlite(_) => site,
            TenantDb::Postgres { tenant, .. } => tenant.origin(),
        }
    }

    /// The clock of the cloud's own change at each given seq, where the store keeps one.
    fn own_stamps(
        &mut self,
        mailbox: &mut Mailbox,
        at: &BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, u64>, TenantError> {
        match self {
            TenantDb::Sqlite(t) => TenantStore::own_stamps(t, mailbox, at),
            TenantDb::Postgres { tenant, .. } => {
                TenantStore::own_stamps(tenant.as_mut(), mailbox, at)
            }
        }
    }

    /// The tenant as the REST API serves it, its change log's triggers up to date (SQLite:
    /// refreshed each time; PostgreSQL: installed with every table, checked once per process
    /// for tables captured before the log existed).
    fn rest(&mut self) -> Result<RestStore<'_>, RestError> {
        match self {
            TenantDb::Sqlite(t) => {
                t.refresh_triggers()?;
                Ok(RestStore::Sqlite(t))
            }
            TenantDb::Postgres {
                tenant,
                rest_log_ready,
                ..
            } => {
                if !*rest_log_ready {
                    let installed = rest_log::ensure(tenant.client())?;
                    if !installed.is_empty() {
                        log::info!("REST change log installed on tables {installed:?}");
                    }
                    *rest_log_ready = true;
                }
                Ok(RestStore::Postgres(tenant))
            }
        }
    }
}

/// The tenant a REST call reads and writes.
enum RestStore<'a> {
    Sqlite(&'a mut Tenant),
    Postgres(&'a mut PgTenant),
}

impl RestStore<'_> {
    fn pull(&mut self, last_pulled_at: Option<i64>, access: &Access) -> Result<Vec<u8>, RestError> {
        match self {
            RestStore::Sqlite(t) => watermelon::pull(t.conn(), last_pulled_at, access),
            RestStore::Postgres(t) => rest_pull::pull(t.client(), last_pulled_at, access),
        }
    }

    fn push(
        &mut self,
        last_pulled_at: i64,
        body: Vec<u8>,
        access: &Access,
    ) -> Result<Pushed, PushError> {
        match self {
            RestStore::Sqlite(t) => watermelon::push(t.conn(), last_pulled_at, body, access),
            RestStore::Postgres(t) => rest_push::push(t.client(), last_pulled_at, body, access),
        }
    }

    fn export(
        &mut self,
        mailbox: &mut Mailbox,
        key: &outpost_protocol::handshake::Keypair,
    ) -> Result<usize, TenantError> {
        match self {
            RestStore::Sqlite(t) => t.export(mailbox, key),
            RestStore::Postgres(t) => t.export(mailbox, key),
        }
    }
}

/// The cloud's shared state.
#[derive(Debug)]
pub struct Cloud {
    /// The data directory.
    pub dir: DataDir,
    tenant: Mutex<TenantDb>,
    mailbox: Mutex<Mailbox>,
    control: Mutex<Control>,
    kicked: Mutex<bool>,
    wake: Condvar,
    /// The session listener's relay state, once it runs: told of every batch the cloud exports
    /// (REST pushes, operator writes), so idle live sessions are notified of them.
    sessions: OnceLock<Arc<Serving>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every holder leaves the value consistent between statements (SQLite transactions roll back
    // on drop), so a panic elsewhere does not make it unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cloud {
    /// Opens the stores of `dir`: its tenant in the PostgreSQL database `postgres` names when
    /// given, else its SQLite tenant.
    pub fn open(dir: DataDir, postgres: Option<&str>) -> Result<Arc<Cloud>, ServiceError> {
        let tenant = match postgres {
            Some(url) => {
                let mut tenant = PgTenant::open(url, dir.identity.site)
                    .map_err(|e| TenantError::Store(Box::new(e)))?;
                // Tables made by an earlier build get this build's capture triggers.
                let n = capture_upgrade::upgrade(tenant.client())
                    .map_err(|e| TenantError::Store(Box::new(e)))?;
                if n > 0 {
                    log::info!("capture brought up to this build on {n} tables");
                }
                // Writes an earlier build kept aside after a restore go out as transfers.
                let n = crate::postgres::new_origin::reissue(tenant.client())
                    .map_err(|e| TenantError::Store(Box::new(e)))?;
                if n > 0 {
                    log::warn!(
                        "{n} rows written under a retired origin and kept aside by an earlier \
                         build are sent again as transfers under the current origin"
                    );
                }
                TenantDb::Postgres {
                    url: url.to_string(),
                    tenant: Box::new(tenant),
                    rest_log_ready: false,
                }
            }
            None => TenantDb::Sqlite(Tenant::open(&dir.tenant_path(), dir.identity.site)?),
        };
        let mailbox = dir.mailbox()?;
        let control = dir.control()?;
        Ok(Arc::new(Cloud {
            dir,
            tenant: Mutex::new(tenant),
            mailbox: Mutex::new(mailbox),
            control: Mutex::new(control),
            kicked: Mutex::new(false),
            wake: Condvar::new(),
            sessions: OnceLock::new(),
        }))
    }

    /// One round: apply what the mailbox holds to the tables, then export the cloud's own
    /// changes to the mailbox. Returns what was applied and how many batches were exported.
    pub fn sync(&self) -> Result<(Ingested, usize), ServiceError> {
        let mut tenant = lock(&self.tenant);
        let mut mailbox = lock(&self.mailbox);
        let ingested = tenant.ingest(&mut mailbox)?;
        let site = self.dir.identity.site;
        // A tenant behind what this process exported before was restored: latched before
        // anything more of it is exported (`high_water.rs`), and a PostgreSQL tenant takes a
        // new origin (`new_origin.rs`).
        let origin = tenant.origin(site);
        let records = high_water::recorded(&lock(&self.control), origin, site)?;
        let issued = tenant.own_tops(&mut mailbox)?;
        let stamps = tenant.own_stamps(&mut mailbox, &high_water::seqs(&records))?;
        high_water::check(&records, &issued, &stamps, &mut mailbox, origin)?;
        if let TenantDb::Postgres { tenant: pg, .. } = &mut *tenant {
            let control = lock(&self.control);
            match new_origin::recover(pg, &mut mailbox, &control, &self.dir.identity)? {
                // Said once per state, not every round.
                Recovery::WaitingForControl { held, recorded }
                    if WAITING_LOGGED.swap(held, Ordering::Relaxed) != held =>
                {
                    log::warn!(
                        "restored behind its peers: waiting for hubs to bring back the cloud's \
                         control entries {}..={recorded} before it takes a new origin",
                        held + 1
                    )
                }
                Recovery::WaitingForControl { .. } => {}
                Recovery::NotNeeded | Recovery::Taken { .. } => {}
            }
            let floor = high_water::record_control(&control, &mut mailbox, site)?;
            mailbox.set_control_floor(floor);
        }
        // Nothing writes the records in between; a new origin has none yet.
        let records = if tenant.origin(site) == origin {
            records
        } else {
            BTreeMap::new()
        };
        let origin = tenant.origin(site);
        let exported = tenant.export(&mut mailbox, self.dir.identity.keypair())?;
        let grown = high_water::grown(&records, &mailbox, origin)?;
        let stamps = tenant.own_stamps(&mut mailbox, &grown)?;
        high_water::record(&lock(&self.control), origin, &grown, &stamps)?;
        drop(mailbox);
        drop(tenant);
        self.exported(exported);
        let control = lock(&self.control);
        match ingested.failures.first() {
            Some(f) => control.set_setting(
                LAST_APPLY_ERROR,
                Some(&format!(
                    "{} batch origin={} seqs={}..={}: {}",
                    unix_now(),
                    f.origin,
                    f.range.0,
                    f.range.1,
                    f.error
                )),
            )?,
            None if ingested.batches > 0 => control.set_setting(LAST_APPLY_ERROR, None)?,
            None => {}
        }
        Ok((ingested, exported))
    }

    /// Lets the session listener's live sessions learn of the cloud's own exported batches
    /// (set once, by `sessions::spawn`).
    pub fn notify_sessions(&self, hub: Arc<Serving>) {
        let _ = self.sessions.set(hub);
    }

    /// After an export that stored `batches` new batches in the mailbox: news for live peers.
    fn exported(&self, batches: usize) {
        if batches > 0 {
            if let Some(hub) = self.sessions.get() {
                hub.note_commit();
            }
        }
    }

    /// Asks the background loop to run a round now (after a push stored batches).
    pub fn kick(&self) {
        *lock(&self.kicked) = true;
        self.wake.notify_all();
    }

    /// Runs [`Cloud::sync`] every `period` and whenever kicked, forever, on a new thread; for a
    /// tenant in PostgreSQL, a second thread kicks it whenever a back-office write commits.
    pub fn spawn_sync_loop(self: &Arc<Self>, period: Duration) -> std::io::Result<()> {
        if let TenantDb::Postgres { url, .. } = &*lock(&self.tenant) {
            // Back-office writes: export them.
            self.spawn_listener(url.clone(), crate::postgres::listen::CHANNEL, |cloud| {
                cloud.kick()
            })?;
            // Another process's commits: its batches are this one's live peers' news too.
            self.spawn_listener(url.clone(), outpost_mailbox::COMMIT_CHANNEL, |cloud| {
                if let Some(serving) = cloud.sessions.get() {
                    serving.note_commit();
                }
                cloud.kick();
            })?;
        }
        let cloud = self.clone();
        std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || loop {
                if let Err(e) = cloud.sync() {
                    log::error!("sync round failed (retrying): {}", Chain(&e));
                }
                let mut kicked = lock(&cloud.kicked);
                if !*kicked {
                    kicked = cloud
                        .wake
                        .wait_timeout(kicked, period)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                *kicked = false;
            })
            .map(|_| ())
    }

    /// Runs `woken` whenever `channel` is notified in PostgreSQL (`LISTEN`), reconnecting after
    /// a failure; the loop's own period is the fallback while it is down.
    fn spawn_listener(
        self: &Arc<Self>,
        url: String,
        channel: &'static str,
        woken: fn(&Cloud),
    ) -> std::io::Result<()> {
        let cloud = self.clone();
        std::thread::Builder::new()
            .name(format!("listen {channel}"))
            .spawn(move || loop {
                let listening = connect::connect(&url)
                    .map_err(|e| Chain(&e).to_string())
                    .and_then(|(client, _)| {
                        Listener::on(client, channel).map_err(|e| Chain(&e).to_string())
                    });
                let mut listener = match listening {
                    Ok(l) => l,
                    Err(e) => {
                        log::warn!("cannot listen on {channel} (retrying in 5 s): {e}");
                        std::thread::sleep(Duration::from_secs(5));
                        continue;
                    }
                };
                loop {
                    match listener.wait(Duration::from_secs(30)) {
                        Ok(streams) if streams.is_empty() => {}
                        Ok(_) => woken(&cloud),
                        Err(e) => {
                            log::warn!(
                                "listening on {channel} failed (reconnecting): {}",
                                Chain(&e)
                            );
                            break;
                        }
                    }
                }
            })
            .map(|_| ())
    }

    /// The name of the API token `token` if it is valid.
    pub fn check_api_token(&self, token: &str) -> Result<Option<String>, ControlError> {
        lock(&self.control).check_api_token(token, unix_now())
    }

    /// A WatermelonDB pull: the answer's JSON text (`watermelon::pull`, or
    /// `postgres::rest_pull` for a tenant in PostgreSQL).
    pub fn rest_pull(
        &self,
        token: &str,
        last_pulled_at: Option<i64>,
    ) -> Result<Vec<u8>, RestError> {
        let mut tenant = lock(&self.tenant);
        let mut tenant = tenant.rest()?;
        let access = self.access(token)?;
        tenant.pull(last_pulled_at, &access)
    }

    /// What token `token` may read and write: the tenant's table settings (taken under the
    /// mailbox lock, then the control file's: callers hold the tenant's, which comes first), the
    /// token's own table rights and its scopes.
    fn access(&self, token: &str) -> Result<Access, RestError> {
        let mut mailbox = lock(&self.mailbox);
        let declared = mailbox
            .directory()
            .map_err(RestError::Mailbox)?
            .tables()
            .map(|(n, d)| (n.to_string(), d))
            .collect();
        drop(mailbox);
        let (rights, scopes) = match lock(&self.control)
            .api_token(token)
            .map_err(RestError::Control)?
        {
            Some(t) => (t.tables, t.scopes),
            // Checked a moment ago: a token revoked since reads and writes nothing scoped.
            None => (None, Scopes::Only(Default::default())),
        };
        Ok(Access {
            declared,
            rights,
            scopes,
        })
    }

    /// A WatermelonDB push of `body` (JSON text, read into a compact plan and dropped before the
    /// writes); on success the cloud's changes are exported to the mailbox at once (if that
    /// fails they stay in the tables and the next round exports them).
    pub fn rest_push(
        &self,
        token: &str,
        last_pulled_at: i64,
        body: Vec<u8>,
    ) -> Result<Pushed, PushError> {
        let mut tenant = lock(&self.tenant);
        let mut tenant = tenant.rest()?;
        let access = self.access(token)?;
        let pushed = tenant.push(last_pulled_at, body, &access)?;
        let mut mailbox = lock(&self.mailbox);
        match tenant.export(&mut mailbox, self.dir.identity.keypair()) {
            Ok(batches) => self.exported(batches),
            Err(e) => {
                log::warn!(
                    "export after a REST push failed (the next round retries): {}",
                    Chain(&e)
                )
            }
        }
        Ok(pushed)
    }
}
