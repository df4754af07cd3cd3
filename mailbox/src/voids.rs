//! Voided ranges (docs/design.md section 10, "One decision everywhere"): a range of an origin's
//! stream the cloud refused is published in its control stream, and every replica treats it as
//! covered and empty. In a mailbox that means:
//! - coverage reaches over a voided range as over a held batch (`advance_coverage` reads
//!   `voids` as well as `batches`), so a relay that never held the refused batch is not stuck
//!   below it, and its later batches are served and pushed;
//! - a held batch inside a voided range is never served (the pull plan steps over the range
//!   without sending anything: the puller has the same entry, sent before any batch, and covers
//!   the range itself). The batch stays in the file, as every refused batch does.
//!
//! `voids(origin, stream, lo, hi)` is derived from the directory, which holds the entries: it is
//! brought up to date whenever the directory admits entries ([`Mailbox::sync_voids`]), inside a
//! savepoint so it can run within a caller's transaction. Created at every open: a file made
//! before it gains it empty and fills it from its stored entries at the first refresh.

use crate::error::MailboxError;
use crate::mailbox::{advance_coverage, Mailbox};
use outpost_sql::params;
use std::collections::BTreeSet;

/// Created at every open.
pub(crate) const VOIDS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS voids(
    origin BLOB NOT NULL CHECK (length(origin) = 16),
    stream TEXT NOT NULL,
    lo INTEGER NOT NULL CHECK (lo >= 1),
    hi INTEGER NOT NULL CHECK (hi >= lo),
    PRIMARY KEY (origin, stream, lo, hi)
) WITHOUT ROWID;
";

impl Mailbox {
    /// Stores the directory's voided ranges this file lacks and extends the coverage of their
    /// streams over them. Costs nothing when the directory holds no more voids than last time.
    pub(crate) fn sync_voids(&mut self) -> Result<(), MailboxError> {
        let held = self.control.directory_ref().void_count();
        if held == self.control.voids_synced {
            return Ok(());
        }
        let voids: Vec<_> = self
            .control
            .directory_ref()
            .voids()
            .map(|(s, r, _)| (s.clone(), r))
            .collect();
        let sql = |e| self.sql(e);
        self.conn.execute_batch("SAVEPOINT voids").map_err(sql)?;
        let r = (|| -> Result<(), outpost_sql::Error> {
            let mut touched = BTreeSet::new();
            let mut insert = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO voids(origin, stream, lo, hi) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (stream, range) in &voids {
                let lo = i64::try_from(range.lo).unwrap_or(i64::MAX);
                let hi = i64::try_from(range.hi).unwrap_or(i64::MAX);
                if insert.execute(params![stream.origin.as_bytes(), stream.scope, lo, hi])? > 0 {
                    touched.insert(stream.clone());
                }
            }
            for stream in &touched {
                advance_coverage(&self.conn, &stream.origin, &stream.scope)?;
            }
            if !touched.is_empty() {
                log::info!(
                    "mailbox={} voided ranges: {} stored, coverage of {} streams extended",
                    self.path().display(),
                    voids.len(),
                    touched.len()
                );
            }
            Ok(())
        })();
        let end = match r {
            Ok(()) => "RELEASE voids",
            Err(_) => "ROLLBACK TO voids; RELEASE voids",
        };
        let ended = self.conn.execute_batch(end);
        r.map_err(sql)?;
        ended.map_err(sql)?;
        self.control.voids_synced = held;
        Ok(())
    }
}
