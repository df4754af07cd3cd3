//! Capture's triggers brought up to this build's (an upgraded `outpost-cloud` on a database an
//! earlier build prepared). [`super::capture::install`] runs when a table is made or extended,
//! so a table that neither happens to keeps the trigger functions of the build that last did:
//! a newer build's capture (scope moves' transfers, for one) would never reach it. At its first
//! round a process compares a digest of the code that generates capture (`capture.sql`,
//! `merge_state.sql`, `capture.rs`, and the REST change log's `rest_log.sql`, `rest_log.rs`)
//! with the one `outpost.meta` (`capture_code`) holds, and reinstalls capture on every captured
//! table when they differ, in one transaction under the apply lock (two processes starting at
//! once reinstall once). A comment's change reinstalls too: harmless, the installation is
//! idempotent.

use super::apply::APPLY_LOCK;
use super::capture::{self, CaptureError};
use super::rest_log::{self, RestLogError};
use ::postgres::Client;
use sha2::{Digest, Sha256};
use std::fmt;

/// The `outpost.meta` row holding the digest of the capture code installed.
const CAPTURE_CODE: &str = "capture_code";

/// The digest of this build's capture code.
fn digest() -> String {
    let mut h = Sha256::new();
    for part in [
        include_str!("capture.sql"),
        include_str!("merge_state.sql"),
        include_str!("capture.rs"),
        include_str!("rest_log.sql"),
        include_str!("rest_log.rs"),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why capture could not be brought up to date (the tables keep what they had).
#[derive(Debug)]
pub enum UpgradeError {
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: &'static str,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// Reinstalling capture failed.
    Capture(CaptureError),
    /// Reinstalling the REST change log failed.
    RestLog(RestLogError),
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::Sql { doing, source } => match source.as_db_error() {
                Some(db) => write!(f, "{doing}: {}", db.message()),
                None => f.write_str(doing),
            },
            UpgradeError::Capture(e) => write!(f, "bringing capture up to this build: {e}"),
            UpgradeError::RestLog(e) => {
                write!(f, "bringing the REST change log up to this build: {e}")
            }
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeError::Sql { source, .. } => Some(source),
            UpgradeError::Capture(e) => Some(e),
            UpgradeError::RestLog(e) => Some(e),
        }
    }
}

fn sql(doing: &'static str) -> impl FnOnce(::postgres::Error) -> UpgradeError {
    move |source| UpgradeError::Sql { doing, source }
}

/// Reinstalls capture on every captured table unless `outpost.meta` says this build's is
/// installed. Returns how many tables were reinstalled.
pub fn upgrade(client: &mut Client) -> Result<usize, UpgradeError> {
    let code = digest();
    let mut tx = client
        .transaction()
        .map_err(sql("starting a transaction"))?;
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({APPLY_LOCK})"))
        .map_err(sql("taking the tenant's apply lock"))?;
    let installed: Option<String> = tx
        .query_opt(
            "SELECT value FROM outpost.meta WHERE name = $1",
            &[&CAPTURE_CODE],
        )
        .map_err(sql("reading the capture code's digest from outpost.meta"))?
        .map(|r| r.get(0));
    if installed.as_deref() == Some(code.as_str()) {
        return Ok(0);
    }
    let has_captured: bool = tx
        .query_one("SELECT to_regclass('outpost.captured') IS NOT NULL", &[])
        .map_err(sql("looking for outpost.captured"))?
        .get(0);
    let tables: Vec<_> = if has_captured {
        capture::captured(&mut tx)
            .map_err(UpgradeError::Capture)?
            .into_iter()
            .map(|c| (c.def.name.clone(), c.def))
            .collect()
    } else {
        Vec::new()
    };
    if !tables.is_empty() {
        capture::install(&mut tx, &tables).map_err(UpgradeError::Capture)?;
        let names: Vec<String> = tables.iter().map(|(n, _)| n.clone()).collect();
        rest_log::install(&mut tx, &names).map_err(UpgradeError::RestLog)?;
    }
    tx.execute(
        "INSERT INTO outpost.meta(name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        &[&CAPTURE_CODE, &code],
    )
    .map_err(sql("recording the capture code's digest in outpost.meta"))?;
    tx.commit().map_err(sql("committing capture's upgrade"))?;
    Ok(tables.len())
}
