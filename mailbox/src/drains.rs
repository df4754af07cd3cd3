//! The drains devices declared (docs/design.md section 10, "Regrants"): a device regranted out
//! of a scope still pushes its own batches of that scope's stream, up to the seq it declares in
//! its hello, and nothing above. The mailbox keeps each declaration so that every later session
//! judges the device's pushes by it, whether or not that session's hello repeats it.
//!
//! `drains(origin, scope, last)`: one row per (device, removed scope), the last seq declared; a
//! later declaration of the same pair replaces it. The table is created at every open (`CREATE
//! TABLE IF NOT EXISTS`), so a file made before it gains it empty: no device had declared a
//! drain to it.

use crate::error::MailboxError;
use crate::mailbox::Mailbox;
use outpost_protocol::message::Drain;
use outpost_protocol::SiteId;
use outpost_sql::{params, OptionalExtension};

/// Created at every open.
pub(crate) const DRAINS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS drains(
    origin BLOB NOT NULL CHECK (length(origin) = 16),
    scope TEXT NOT NULL,
    last INTEGER NOT NULL CHECK (last >= 0),
    PRIMARY KEY (origin, scope)
) WITHOUT ROWID;
";

impl Mailbox {
    /// Keeps what `origin` declared it drains (one transaction; a pair declared before is
    /// replaced).
    pub fn record_drains(&mut self, origin: &SiteId, drains: &[Drain]) -> Result<(), MailboxError> {
        let path = self.path().to_path_buf();
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut s = tx
                .prepare_cached(
                    "INSERT INTO drains(origin, scope, last) VALUES (?1, ?2, ?3)
                     ON CONFLICT(origin, scope) DO UPDATE SET last = excluded.last",
                )
                .map_err(sql)?;
            for d in drains {
                let last = i64::try_from(d.last).unwrap_or(i64::MAX);
                s.execute(params![origin.as_bytes().as_slice(), d.scope, last])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// The last seq `origin` declared it would push of its stream of `scope`, if it declared one.
    pub fn drain_of(&self, origin: &SiteId, scope: &str) -> Result<Option<u64>, MailboxError> {
        self.conn
            .query_row(
                "SELECT last FROM drains WHERE origin = ?1 AND scope = ?2",
                params![origin.as_bytes().as_slice(), scope],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|last| last.max(0) as u64))
            .map_err(|e| self.sql(e))
    }
}
