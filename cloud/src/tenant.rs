//! The tenant database: the app's real tables, written only through the engine.
//!
//! Two directions, both idempotent and restartable at any point:
//! - **ingest** (mailbox → tables): the batches the mailbox holds and the tenant's version vector
//!   lacks, per origin in seq order, each applied with `outpost_apply` (one transaction with the
//!   vector advance) after its header's tables were created or widened (`schema.rs`). A batch that
//!   fails to apply stays in the mailbox (nothing is ever removed from it) and stops its origin
//!   until the cause is fixed; other origins go on. Changes the engine cannot apply go to its
//!   `outpost_quarantine` and never block.
//! - **export** (tables → mailbox): the cloud's own changes (operator writes, REST pushes, parents
//!   the engine restored) with `outpost_changes`, from the mailbox's coverage of the cloud's
//!   origin, stored as batches of that origin so hubs and devices pull them like any other.

use crate::{changelog, schema};
use anyhow::{bail, Context, Result};
use outpost_mailbox::{Limits, Mailbox};
use outpost_protocol::batch::codec;
use outpost_protocol::{SiteId, VersionVector};
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest batch the cloud exports (the engine cuts at a seq boundary).
pub const EXPORT_BATCH_BYTES: i64 = 1 << 20;

/// The tenant database connection.
#[derive(Debug)]
pub struct Tenant {
    conn: Connection,
    path: PathBuf,
    site: SiteId,
}

/// A batch that could not be applied (it stays in the mailbox).
#[derive(Debug, Clone)]
pub struct ApplyFailure {
    /// Its origin.
    pub origin: SiteId,
    /// Its range, `lo..=hi`.
    pub range: (u64, u64),
    /// Why.
    pub error: String,
}

/// What one ingest did.
#[derive(Debug, Default, Clone)]
pub struct Ingested {
    /// Batches applied.
    pub batches: usize,
    /// Changes the engine reported applied.
    pub applied: u64,
    /// Changes the engine quarantined.
    pub quarantined: u64,
    /// Batches that failed (their origins were stopped for this round).
    pub failures: Vec<ApplyFailure>,
}

impl Tenant {
    /// Opens the tenant database (the engine must be registered: `engine::register`).
    pub fn open(path: &Path, site: SiteId) -> Result<Tenant> {
        crate::engine::register()?;
        let ctx = || format!("tenant database {}", path.display());
        let conn = Connection::open(path).with_context(ctx)?;
        conn.busy_timeout(Duration::from_secs(10))
            .with_context(ctx)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(ctx)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .with_context(ctx)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .with_context(ctx)?;
        Ok(Tenant {
            conn,
            path: path.to_path_buf(),
            site,
        })
    }

    /// Installs or refreshes the REST change-log triggers (`changelog.rs`); run before every
    /// ingest, pull and push so a table tracked meanwhile (by an operator) is logged too.
    pub fn refresh_triggers(&mut self) -> Result<()> {
        for t in changelog::ensure_triggers(&mut self.conn)? {
            log::info!("tenant REST change log now follows table {t:?}");
        }
        Ok(())
    }

    /// The connection (REST pull and push run on it).
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The tenant's version vector (its own entry is its db version).
    pub fn vector(&self) -> Result<VersionVector> {
        let text: String = self
            .conn
            .query_row("SELECT outpost_vector()", [], |r| r.get(0))
            .with_context(|| format!("reading the vector of {}", self.path.display()))?;
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).context("outpost_vector() is not a JSON object")?;
        let mut v = VersionVector::new();
        for (site, covered) in json {
            let site: SiteId = site
                .parse()
                .map_err(|_| anyhow::anyhow!("outpost_vector(): bad site id {site:?}"))?;
            v.set(
                site,
                covered.as_u64().context("outpost_vector(): bad coverage")?,
            );
        }
        Ok(v)
    }

    /// Applies what `mailbox` holds and the tenant lacks (see the module doc).
    pub fn ingest(&mut self, mailbox: &Mailbox) -> Result<Ingested> {
        let mut done = Ingested::default();
        let mut stopped: BTreeSet<SiteId> = BTreeSet::new();
        let mut plan = mailbox.pull_plan(&self.vector()?, Some(self.site))?;
        while let Some(batch) = mailbox.next_batch(&mut plan)? {
            if stopped.contains(&batch.origin) {
                continue;
            }
            let range = (batch.range.lo, batch.range.hi);
            match self.apply_one(&batch.bytes) {
                Ok((applied, quarantined)) => {
                    done.batches += 1;
                    done.applied += applied;
                    done.quarantined += quarantined;
                    log::info!(
                        "tenant applied batch origin={} seqs={}..={} applied={applied} quarantined={quarantined}",
                        batch.origin, range.0, range.1
                    );
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    log::warn!(
                        "tenant could not apply batch origin={} seqs={}..={} (kept in the mailbox): {error}",
                        batch.origin, range.0, range.1
                    );
                    stopped.insert(batch.origin);
                    done.failures.push(ApplyFailure {
                        origin: batch.origin,
                        range,
                        error,
                    });
                }
            }
        }
        Ok(done)
    }

    fn apply_one(&mut self, bytes: &[u8]) -> Result<(u64, u64)> {
        let header = codec::decode_header(bytes, &Limits::default())
            .map_err(|e| anyhow::anyhow!("not a valid batch header: {e}"))?;
        let changes = schema::ensure(&self.conn, &header.tables)?;
        if !changes.is_empty() {
            for c in &changes {
                log::info!("tenant schema from batch header: {c:?}");
            }
            self.refresh_triggers()?;
        }
        let out: String = self
            .conn
            .query_row("SELECT outpost_apply(?1)", [bytes], |r| r.get(0))?;
        let counts: serde_json::Value =
            serde_json::from_str(&out).context("outpost_apply() did not answer JSON")?;
        let n = |k: &str| {
            counts
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Ok((n("applied"), n("quarantined")))
    }

    /// Stores the cloud's own changes the mailbox lacks as batches of the cloud's origin.
    /// Returns how many batches were stored.
    pub fn export(&mut self, mailbox: &mut Mailbox) -> Result<usize> {
        let mut since = mailbox.vector()?.get(&self.site);
        let mut stored = 0;
        loop {
            let blob: Option<Vec<u8>> = self.conn.query_row(
                "SELECT outpost_changes(?1, ?2)",
                rusqlite::params![since as i64, EXPORT_BATCH_BYTES],
                |r| r.get(0),
            )?;
            let Some(blob) = blob else { break };
            let staged = mailbox.stage(0, blob)?;
            if staged.origin != self.site {
                bail!(
                    "the tenant exported a batch of origin {} but its site is {}",
                    staged.origin,
                    self.site
                );
            }
            if staged.range.hi <= since {
                break;
            }
            if staged.range.lo > since + 1 {
                bail!(
                    "the tenant exported seqs {}..={} but the mailbox covers only up to {since}",
                    staged.range.lo,
                    staged.range.hi
                );
            }
            let hi = staged.range.hi;
            mailbox.commit(std::slice::from_ref(&staged))?;
            log::info!(
                "tenant exported batch origin={} seqs={}..={hi} bytes={}",
                self.site,
                staged.range.lo,
                staged.bytes.len()
            );
            since = hi;
            stored += 1;
        }
        Ok(stored)
    }

    /// The tracked tables and their row counts.
    pub fn tables(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for t in schema::tracked_tables(&self.conn)? {
            let n: i64 = self.conn.query_row(
                &format!("SELECT count(*) FROM {}", schema::quote(&t)),
                [],
                |r| r.get(0),
            )?;
            out.push((t, n as u64));
        }
        Ok(out)
    }

    /// Rows in `outpost_quarantine` (0 before the engine's bookkeeping exists).
    pub fn quarantined(&self) -> Result<u64> {
        let has: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'outpost_quarantine'",
            [],
            |r| r.get(0),
        )?;
        if has == 0 {
            return Ok(0);
        }
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM outpost_quarantine", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}
