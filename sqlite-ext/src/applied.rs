//! The rows an apply wrote, listed for an app that keeps data derived from them.
//!
//! An app may keep data derived from its tracked rows with triggers of its own: a search index,
//! an audit table, the cloud's REST change log. While such a trigger exists, an apply cannot
//! switch the triggers off (`apply/trigger_pause.rs`): every row a peer sends then runs the
//! app's trigger and, because the trigger may abort, copies each page the statement touches
//! into a statement journal first. On the cloud that was 60% of the CPU an ingest spent
//! (docs/performance.md, "SQLite tenant: the ingest of a hub's backlog").
//!
//! `outpost_list_applied(prefix)` lets the app take that work over. Triggers whose names start
//! with `prefix` are switched off during applies together with Outpost's own, and every row an
//! apply writes (inserted, updated or deleted, in any table it tracks, whatever the reason: the
//! batch's own rows, parents restored from tombstones, rows a UNIQUE collision holds aside,
//! quarantined changes let in again) is listed in the app-readable table
//!
//! ```text
//! outpost_applied("table" TEXT, pk TEXT)
//! ```
//!
//! in the apply's transaction, with its key as the other public tables show keys (`"p1"` for a
//! one-column key, else a JSON array: `json.rs`). The app brings its derived data up to date
//! from the rows as they are now and deletes the entries it handled. A row written several
//! times is listed as often: the list has no key, so each entry is an append (a key over
//! `("table", pk)` took random-order B-tree inserts, 13% of the cloud's ingest CPU). Writes the
//! app makes itself, or anyone else outside an apply, still run its triggers.
//! `outpost_list_applied(NULL)` turns the listing off; the setting is kept in the database, so
//! every connection's applies follow it.

use crate::arg::Arg;
use crate::error::Error;
use crate::ffi::{Conn, Stmt};
use crate::functions::Call;
use outpost_protocol::Value;

const TABLE: &str =
    "CREATE TABLE IF NOT EXISTS outpost_applied(\"table\" TEXT NOT NULL, pk TEXT NOT NULL)";

/// The `_outpost_meta` key holding the prefix.
const SETTING: &str = "list_applied";

/// The prefix of the triggers applies switch off and list rows for, if the app set one.
pub(crate) fn prefix(conn: Conn) -> Result<Option<String>, Error> {
    let mut s = conn.prepare("SELECT v FROM _outpost_meta WHERE k = ?1 AND typeof(v) = 'text'")?;
    s.bind_text(1, SETTING)?;
    Ok(s.step()?.then(|| s.text(0)))
}

/// `outpost_list_applied(prefix)`: sets (text) or clears (NULL) the prefix; returns it.
pub(crate) fn sql_list_applied(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let conn = call.conn;
    crate::schema::ensure(conn)?;
    let set = prefix(conn)?;
    match args[0] {
        // Unchanged: nothing written (a process sets it each time it opens the database).
        Arg::Null if set.is_none() => Ok(Value::Null),
        Arg::Text(p) if set.as_deref() == Some(p) => {
            conn.exec(TABLE)?;
            Ok(Value::Text(p.to_string()))
        }
        Arg::Null => {
            let mut s = conn.prepare("DELETE FROM _outpost_meta WHERE k = ?1")?;
            s.bind_text(1, SETTING)?;
            s.run()?;
            Ok(Value::Null)
        }
        // An empty prefix would switch off every trigger an app has, its search index's too.
        Arg::Text(p) if !p.is_empty() => {
            conn.exec(TABLE)?;
            let mut s = conn.prepare(
                "INSERT INTO _outpost_meta(k, v) VALUES (?1, ?2) \
                 ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            )?;
            s.bind_text(1, SETTING)?;
            s.bind_text(2, p)?;
            s.run()?;
            Ok(Value::Text(p.to_string()))
        }
        _ => Err(call.arg_error(
            "the argument is the name prefix of the triggers to switch off during applies \
             (non-empty text), or NULL to stop listing applied rows",
        )),
    }
}

/// Lists the rows one applier writes, when the app asked for it.
pub(crate) struct AppliedList {
    insert: Option<Stmt>,
}

impl AppliedList {
    /// Lists when the database's setting says so (the table then exists: the setting made it).
    pub(crate) fn load(conn: Conn) -> Result<AppliedList, Error> {
        let insert = match prefix(conn)? {
            Some(_) => {
                // Made again in case someone dropped it: a missing list would lose rows.
                conn.exec(TABLE)?;
                Some(conn.prepare("INSERT INTO outpost_applied(\"table\", pk) VALUES (?1, ?2)")?)
            }
            None => None,
        };
        Ok(AppliedList { insert })
    }

    /// Notes that the row of `table` with key `key` was written.
    pub(crate) fn note(&mut self, table: &str, key: &[Value]) -> Result<(), Error> {
        let Some(s) = self.insert.as_mut() else {
            return Ok(());
        };
        s.bind_text(1, table)?;
        s.bind_text(2, &crate::json::values_key_json(key))?;
        s.run()
    }
}
