//! `outpost_row_status(table, key_value [, key_value ...])`: one row's sync state as a word an
//! app maps to an icon: `'synced'`, `'pending'`, `'conflict'` or `'quarantined'`.
//!
//! Answered from the connection's snapshot (`pending.rs`), so calling it for every row of a
//! list costs a hash lookup per row plus one `PRAGMA data_version` (docs/performance.md,
//! "Per-record sync state"). It reads, never writes: it runs inside the app's own queries.

use crate::error::Error;
use crate::functions::{Arg, Call};
use crate::pending::{key_values, with_snapshot};
use outpost_protocol::Value;

/// `outpost_row_status(table, key_value [, key_value ...])`.
pub(crate) fn sql_row_status(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let Arg::Text(table) = args[0] else {
        return Err(call.arg_error("the first argument is the name of a tracked table"));
    };
    let keys = &args[1..];
    with_snapshot(call.conn, call.session, |snap| {
        let Some(t) = snap.table(table) else {
            return Err(call.arg_error(format!(
                "table \"{table}\" is not tracked (outpost_track it first)"
            )));
        };
        if keys.len() != t.pk.len() {
            return Err(call.arg_error(format!(
                "table \"{table}\" has a key of {} column(s) ({}): give that many key values in that order, got {}",
                t.pk.len(),
                t.pk.join(", "),
                keys.len()
            )));
        }
        let key = t.pack_key(key_values(keys));
        Ok(Value::Text(snap.status(t, &key)?.as_str().to_string()))
    })
}
