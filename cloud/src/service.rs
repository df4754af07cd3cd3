//! The running cloud: the tenant database, the mailbox and the control file behind locks, the
//! background loop that moves batches between mailbox and tables, and the REST operations.
//!
//! **Lock order**: tenant, then mailbox, then control; a thread never takes them the other way.
//! The tenant database has one connection in this process: SQLite serialises writers anyway, and
//! one connection keeps the engine's per-connection clock cache coherent.

use crate::control::{Control, LAST_APPLY_ERROR};
use crate::datadir::{unix_now, DataDir};
use crate::tenant::{Ingested, Tenant};
use crate::watermelon::{self, PushError};
use anyhow::Result;
use outpost_mailbox::Mailbox;
use outpost_relay::Serving;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The cloud's shared state.
#[derive(Debug)]
pub struct Cloud {
    /// The data directory.
    pub dir: DataDir,
    tenant: Mutex<Tenant>,
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
    /// Opens the stores of `dir`.
    pub fn open(dir: DataDir) -> Result<Arc<Cloud>> {
        let tenant = Tenant::open(&dir.tenant_path(), dir.identity.site)?;
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
    pub fn sync(&self) -> Result<(Ingested, usize)> {
        let mut tenant = lock(&self.tenant);
        tenant.refresh_triggers()?;
        let mut mailbox = lock(&self.mailbox);
        let ingested = tenant.ingest(&mailbox)?;
        let exported = tenant.export(&mut mailbox)?;
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

    /// Runs [`Cloud::sync`] every `period` and whenever kicked, forever, on a new thread.
    pub fn spawn_sync_loop(self: &Arc<Self>, period: Duration) -> std::io::Result<()> {
        let cloud = self.clone();
        std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || loop {
                if let Err(e) = cloud.sync() {
                    log::error!("sync round failed (retrying): {e:#}");
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

    /// The name of the API token `token` if it is valid.
    pub fn check_api_token(&self, token: &str) -> Result<Option<String>> {
        lock(&self.control).check_api_token(token, unix_now())
    }

    /// A WatermelonDB pull.
    pub fn rest_pull(&self, last_pulled_at: Option<i64>) -> Result<serde_json::Value> {
        let mut tenant = lock(&self.tenant);
        tenant.refresh_triggers()?;
        watermelon::pull(tenant.conn(), last_pulled_at)
    }

    /// A WatermelonDB push; on success the cloud's changes are exported to the mailbox at once
    /// (if that fails they stay in the tables and the next round exports them).
    pub fn rest_push(
        &self,
        last_pulled_at: i64,
        body: &serde_json::Value,
    ) -> Result<usize, PushError> {
        let mut tenant = lock(&self.tenant);
        tenant.refresh_triggers()?;
        let written = watermelon::push(tenant.conn(), last_pulled_at, body)?;
        let mut mailbox = lock(&self.mailbox);
        match tenant.export(&mut mailbox) {
            Ok(batches) => self.exported(batches),
            Err(e) => {
                log::warn!("export after a REST push failed (the next round retries): {e:#}")
            }
        }
        Ok(written)
    }
}
