//! `outpost_quarantined_batches`: batches set aside whole, with a reason, their range covered.
//!
//! The receiver checks of docs/design.md section 10 ("One decision everywhere") judge a batch by
//! its clear header, its tables and the key directory, never by this database's own state, so
//! every replica decides alike. A batch they refuse (`apply/direction.rs`: a `down` batch of an
//! origin that is not the tenant's cloud, or a non-cloud origin's rows of a table the tenant
//! declares `down`) is recorded here, none of its rows is applied or kept, and the origin's
//! coverage advances over its range: the next batches of that origin apply as usual, and the
//! refused one is never pulled (nor decoded) again. Unlike `outpost_quarantine`'s rows, nothing
//! here is retried: what was refused stays refused.
//!
//! | column | holds |
//! |---|---|
//! | `origin` | the batch's origin (hex site id) |
//! | `lo`, `hi` | its seq range |
//! | `reason` | why, the same text on every replica |

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::{SeqRange, SiteId};

/// Created with the bookkeeping (`schema.rs`).
pub(crate) const TABLE: &str = "CREATE TABLE IF NOT EXISTS outpost_quarantined_batches(\
    origin TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, reason TEXT NOT NULL, \
    PRIMARY KEY(origin, lo)) WITHOUT ROWID;";

/// Records a batch refused whole (idempotent: the same batch twice is one entry).
pub(crate) fn put(conn: Conn, origin: SiteId, range: SeqRange, reason: &str) -> Result<(), Error> {
    let mut s = conn.prepare(
        "INSERT INTO outpost_quarantined_batches(origin, lo, hi, reason) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(origin, lo) DO UPDATE SET hi = excluded.hi, reason = excluded.reason",
    )?;
    s.bind_text(1, &origin.to_string())?;
    s.bind_i64(2, range.lo as i64)?;
    s.bind_i64(3, range.hi as i64)?;
    s.bind_text(4, reason)?;
    s.run()
}

/// How many batches were refused whole.
pub(crate) fn count(conn: Conn) -> Result<i64, Error> {
    Ok(conn
        .query_i64("SELECT count(*) FROM outpost_quarantined_batches", &[])?
        .unwrap_or(0))
}
