//! Re-applying the quarantine (`quarantine.rs`): after every apply, when fold notices new
//! columns (their values may be waiting there), and on `outpost_retry_quarantine()`. An entry
//! leaves the quarantine once its change applies; one that still does not stays, with the reason
//! it was kept for.

use super::{Applier, Outcome};
use crate::error::Error;
use crate::functions::{Arg, Call};
use crate::quarantine;
use outpost_protocol::Value;

/// Re-applies every entry that now applies; returns how many left the quarantine. Runs inside the
/// caller's transaction, with capture suppressed by the caller. Rows held aside by a UNIQUE
/// collision are settled first (`Applier::settle`), and again after: what the entries applied
/// may free values, and a row put back lets its entries go in a second pass.
pub(crate) fn retry_with(call: &Call, applier: &mut Applier) -> Result<u64, Error> {
    let mut done = 0;
    for round in 0..4 {
        let placed = applier.settle()?;
        if round > 0 && placed == 0 {
            break;
        }
        done += retry_entries(call, applier)?;
    }
    Ok(done)
}

fn retry_entries(call: &Call, applier: &mut Applier) -> Result<u64, Error> {
    let mut done = 0;
    for e in quarantine::entries(call.conn)? {
        let applied_before = applier.stats.applied;
        let o = applier.merge_row(e.origin, &e.table, &e.row)?;
        // An entry of a row held aside (apply/unique.rs) "applies" as a no-op: it stays for a
        // person while the row is held aside. Once the row is back, or a later change deleted
        // it, the entry goes, as on a replica that never held it aside (DESIGN I1).
        let kept = applier.stats.applied == applied_before
            && applier.is_evicted(&e.table.name, &e.row.key)?;
        if o == Outcome::Applied && !kept {
            quarantine::remove(call.conn, e.id)?;
            done += 1;
        }
    }
    Ok(done)
}

/// Retries within the caller's transaction (after fold noticed new columns).
pub(crate) fn retry_all(call: &Call) -> Result<u64, Error> {
    let _quiet = call.session.suppress();
    let mut applier = Applier::new(call)?;
    let done = retry_with(call, &mut applier)?;
    // A received change applied only now was compared with own changes now (`restamp.rs`).
    crate::restamp::note_received(call.conn, applier.received_hlc)?;
    Ok(done)
}

/// `outpost_retry_quarantine()`.
pub(crate) fn sql_retry(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_retry_quarantine"));
    }
    crate::schema::ensure(call.conn)?;
    call.conn.exec("SAVEPOINT outpost_retry")?;
    let r = (|| {
        crate::fold::fold(call)?;
        call.conn.exec("PRAGMA defer_foreign_keys = ON")?;
        retry_all(call)
    })();
    crate::schema::finish_savepoint(call.conn, "outpost_retry", r).map(|n| Value::Integer(n as i64))
}
