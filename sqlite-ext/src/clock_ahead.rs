//! The device's answer when a relay refuses its push as stamped too far ahead
//! (`ErrorCode::ClockAhead`; docs/design.md section 10, "Time").
//!
//! The first relay with trusted time refuses a device's push whose clocks run more than a day
//! ahead of that time (and more than a second above every clock it holds). The hello's clock
//! check (`skew.rs`) has already moved this device to the relay's time and re-stamped what never
//! left, so what such a push still carries is one of:
//! - a write made by a connection that had not read the new offset yet (`clock.rs` reads it at
//!   most once a second), or by another process: it can be re-stamped;
//! - an edit of a far-future version, kept above it by the re-stamp floor (`restamp.rs`): it
//!   passes once the relay holds that version (its allowance), never by re-stamping;
//! - changes that left through an earlier push or `outpost_changes`: they keep their clocks.
//!
//! The refused push stored nothing, but its export marked what it carried as left: [`answer`]
//! puts the sent marks back to what they were before that export, only if they still are what
//! the export set (nothing exported since), then re-stamps every own change that never left and
//! is stamped after trusted time down to it (`restamp::restamp_ahead`), in one transaction. The
//! sync then pushes again in a new session, once; a second refusal fails the sync with
//! [`crate::error::SyncError::ClockAhead`]. Every refusal is recorded for `outpost_status()`.

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::Call;
use crate::restamp::{self, Sent};
use crate::schema::{finish_savepoint, meta_get, meta_set};
use outpost_protocol::hlc::UtcDate;

/// `_outpost_meta` keys of the last refusal: when (unix seconds), the push's largest clock and
/// the relay's trusted time (ms), how many changes were re-stamped (-1: not re-stamped, the
/// retry was refused too), and how many refusals in all.
const AT_KEY: &str = "clock_ahead_at";
const STAMPED_KEY: &str = "clock_ahead_stamped_ms";
const RELAY_KEY: &str = "clock_ahead_relay_ms";
const RESTAMPED_KEY: &str = "clock_ahead_restamped";
const COUNT_KEY: &str = "clock_ahead_refusals";

/// What the relay refused, as the device saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal {
    /// The largest clock's milliseconds among the batches the push carried.
    pub stamped_ms: u64,
    /// The relay's trusted time, as its hello stated it (ms).
    pub relay_ms: u64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Records a refusal (`restamped`: `None` when the device did not re-stamp).
fn record(call: &Call, refusal: Refusal, restamped: Option<u64>) -> Result<(), Error> {
    let conn = call.conn;
    meta_set(conn, AT_KEY, to_i64(crate::clock::unix_now()))?;
    meta_set(conn, STAMPED_KEY, to_i64(refusal.stamped_ms))?;
    meta_set(conn, RELAY_KEY, to_i64(refusal.relay_ms))?;
    meta_set(conn, RESTAMPED_KEY, restamped.map_or(-1, to_i64))?;
    meta_set(
        conn,
        COUNT_KEY,
        meta_get(conn, COUNT_KEY)?.unwrap_or(0).saturating_add(1),
    )
}

/// Answers a refusal: puts the marks the refused push's export set (`before` → `after`) back,
/// re-stamps the unsent changes past trusted time, records the refusal. One transaction.
/// Returns how many changes were re-stamped.
pub(crate) fn answer(
    call: &Call,
    before: Option<Sent>,
    after: Option<Sent>,
    refusal: Refusal,
) -> Result<u64, Error> {
    let conn = call.conn;
    conn.exec("SAVEPOINT outpost_clock_ahead")?;
    let r = (|| {
        if let (Some(before), Some(after)) = (&before, &after) {
            restamp::put_back(conn, before, after)?;
        }
        // The hello's check adopted the relay's time: the corrected wall clock is trusted time.
        let (offset, _) = crate::skew::offset(conn)?;
        let wall = crate::clock::device_wall_ms(conn)?;
        let now = (i128::from(wall) + i128::from(offset)).max(0) as u64;
        let n = restamp::restamp_ahead(call, now)?;
        record(call, refusal, Some(n))?;
        Ok(n)
    })();
    let r = finish_savepoint(conn, "outpost_clock_ahead", r);
    // The stored clock may have gone down: every connection resumes from it.
    call.session.clock.reload();
    r
}

/// Records a second refusal (the retry after a re-stamp): nothing is re-stamped again.
pub(crate) fn refused_again(call: &Call, refusal: Refusal) -> Result<(), Error> {
    record(call, refusal, None)
}

/// What `outpost_status()` shows under `clock.last_clock_ahead`: `None` before any refusal.
pub(crate) fn status(conn: Conn) -> Result<Option<serde_json::Value>, Error> {
    let Some(at) = meta_get(conn, AT_KEY)? else {
        return Ok(None);
    };
    let date = |k| -> Result<String, Error> {
        Ok(UtcDate(meta_get(conn, k)?.unwrap_or(0).max(0) as u64).to_string())
    };
    let restamped = meta_get(conn, RESTAMPED_KEY)?.unwrap_or(-1);
    Ok(Some(serde_json::json!({
        "at": at,
        "stamped": date(STAMPED_KEY)?,
        "relay_time": date(RELAY_KEY)?,
        "restamped": (restamped >= 0).then_some(restamped),
        "refusals": meta_get(conn, COUNT_KEY)?.unwrap_or(0),
    })))
}
