//! Keeps SQLite's statement journals in memory on connections that load the extension.
//!
//! Any trigger on a table makes each single-row `INSERT`/`UPDATE`/`DELETE` of that table open a
//! statement journal (a copy of every page the statement first touches, for rolling back just
//! that statement) whenever the table has a constraint that may abort. SQLite keeps that journal
//! in memory up to 64 KiB and then moves it to a temporary file, and in a transaction it **stays
//! a file** until the transaction ends: after one statement touched more than 16 pages (a B-tree
//! rebalance does), every later statement writes its page copies with `pwrite` (measured on W1
//! bulk: 2.38 M `pwrite` calls against plain SQLite's 0.45 M, 1.8-2.2x the time; see
//! docs/performance.md). With `temp_store=MEMORY` the journal is never spilled; that is how
//! Android's own SQLite always runs (it is built with `SQLITE_TEMP_STORE=3`).
//!
//! The setting also keeps the app's temporary tables, and the scratch space of large sorts and
//! `VACUUM`, in memory. So it is only applied when the app left `temp_store` at its default and
//! has not opened the temp schema yet (changing it then would drop the app's temporary tables);
//! an app that prefers files sets `PRAGMA temp_store=FILE` after loading the extension.

use crate::error::Error;
use crate::ffi::Conn;

/// `PRAGMA temp_store` values.
const DEFAULT: i64 = 0;

/// Sets `temp_store=MEMORY` when the connection still has the default and no temp schema.
/// Returns whether it changed anything.
pub(crate) fn keep_in_memory(conn: Conn) -> Result<bool, Error> {
    if conn.query_i64("PRAGMA temp_store", &[])? != Some(DEFAULT) || conn.schema_open(c"temp") {
        return Ok(false);
    }
    conn.exec("PRAGMA temp_store=MEMORY")?;
    Ok(true)
}
