//! Keeps the tracked tables' triggers out of an apply's statements.
//!
//! Our triggers log nothing while a peer's changes are applied (`outpost_capturing()` is false,
//! `outpost_clock` has no row), but SQLite still compiles them into every INSERT and UPDATE the
//! apply prepares. A statement with a trigger counts as a "multi-write" statement, and one that
//! may also abort (any UNIQUE key, or a function call inside the trigger) opens a statement
//! journal: every B-tree page it touches is first copied aside, 1 KiB at a time in memory. On a
//! first sync that copying was the largest cost SQLite added over plain inserts
//! (docs/performance.md, W4).
//!
//! So while an apply runs, the main schema's triggers are switched off
//! (`SQLITE_DBCONFIG_ENABLE_TRIGGER`), but only when every trigger there is ours: an app's own
//! trigger (a full-text index, an audit table) must still see the rows a peer sends. Or the
//! app's, when it named them to `outpost_list_applied`: it then reads the rows the apply wrote
//! from `outpost_applied` instead (`applied.rs`). TEMP
//! triggers are not affected by the switch. Switching expires the connection's prepared
//! statements, exactly as the `PRAGMA defer_foreign_keys` every apply already runs does; they
//! are re-prepared on their next run.

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::Value;

/// While alive, the main schema's triggers are off (if they were on and all are Outpost's).
pub(crate) struct TriggerPause {
    conn: Conn,
    paused: bool,
}

impl TriggerPause {
    pub(crate) fn begin(conn: Conn) -> Result<TriggerPause, Error> {
        // `substr` rather than LIKE: a prefix's `_` and `%` are not wildcards.
        let listed = crate::applied::prefix(conn)?;
        let foreign = conn
            .query_i64(
                "SELECT 1 FROM sqlite_master WHERE type = 'trigger' \
                 AND name NOT LIKE '\\_outpost\\_%' ESCAPE '\\' \
                 AND (?1 IS NULL OR substr(name, 1, length(?1)) IS NOT ?1) LIMIT 1",
                &[listed.map_or(Value::Null, Value::Text)],
            )?
            .is_some();
        let paused = !foreign && conn.triggers_enabled();
        if paused {
            conn.set_triggers_enabled(false);
        }
        Ok(TriggerPause { conn, paused })
    }

    /// Whether this pause switched the triggers off.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }
}

impl Drop for TriggerPause {
    fn drop(&mut self) {
        if self.paused {
            self.conn.set_triggers_enabled(true);
        }
    }
}
