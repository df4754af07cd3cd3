//! Keeps an apply's [`NewRows`] on the connection from one call to the next.
//!
//! A new device's first sync arrives as many calls (`outpost_apply_many` of 16 chunks each in
//! the sync client and the W4 benchmark). What one call learned, which tables had no row state
//! and which rows it gave state, stays true for the next call as long as nothing else wrote
//! to the database in between. That is checked, not assumed: the call records a [`Stamp`] as it
//! ends and the next one uses what was kept only when the stamp is unchanged.
//!
//! The stamp is this connection's change counter (`total_changes()`: every row any statement on
//! it inserted, updated or deleted, rolled back or not, including Outpost's own folds and
//! untracks), the database's `data_version` (changes when another connection commits) and
//! `schema_version` (any DDL). A single row written anywhere in between moves it, and the next
//! call looks again. Only a call that found a table without any state keeps anything (a first
//! sync under way): a device in steady state holds no filter and runs no stamp query.

use crate::error::Error;
use crate::ffi::Conn;
use crate::session::Leftover;
use crate::state::NewRows;

/// What the database looked like when the kept [`NewRows`] were last true.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Stamp {
    changes: i64,
    data_version: i64,
    schema_version: i64,
}

impl Stamp {
    pub(crate) fn now(conn: Conn) -> Result<Stamp, Error> {
        let mut q = conn.prepare(
            "SELECT total_changes(), (SELECT data_version FROM pragma_data_version), \
             (SELECT schema_version FROM pragma_schema_version)",
        )?;
        if !q.step()? {
            return Err(Error::Internal(
                "the database stamp query returned nothing".into(),
            ));
        }
        Ok(Stamp {
            changes: q.i64(0),
            data_version: q.i64(1),
            schema_version: q.i64(2),
        })
    }
}

/// The kept rows, with the stamp they are valid at (kept in `Session::apply`).
struct Carried {
    stamp: Stamp,
    rows: NewRows,
}

/// The rows kept by the connection's previous apply, if the database is as that apply left it.
/// Taking them clears the slot: a call that fails keeps nothing for the next.
pub(crate) fn take(conn: Conn, slot: &Leftover) -> Result<Option<NewRows>, Error> {
    match slot.take::<Carried>() {
        Some(c) if c.stamp == Stamp::now(conn)? => Ok(Some(c.rows)),
        _ => Ok(None),
    }
}

/// Keeps `rows` for the connection's next apply; called as a successful apply returns.
pub(crate) fn keep(conn: Conn, slot: &Leftover, rows: NewRows) -> Result<(), Error> {
    let stamp = Stamp::now(conn)?;
    slot.put(Carried { stamp, rows });
    Ok(())
}
