//! Clock skew against a trusted peer (docs/design.md sections 3 and 10, "Time").
//!
//! Field clocks are wrong: a tablet with a dead battery boots in 1970, another was set by hand a
//! day ahead. At each session's hello a peer states its wall clock; the cloud's is trusted, and so
//! is a hub's that has synced its clock with the cloud since it booted (a hub with no trusted time
//! states 0: a Pi has no battery clock, so a hub alone is not a time source). When this device's
//! wall clock is off a trusted peer's by more than the bound ([`SkewPolicy`], five minutes), the
//! device writes with the peer's time: the offset is kept in `_outpost_meta` and every connection's
//! clock applies it to new writes (`clock.rs` reads it at most once a second), so they order as
//! the edits were really made. Within the bound the offset is cleared. Once the device has had
//! trusted time, a received clock more than [`FUTURE_BOUND_MS`] ahead of it no longer advances
//! this device's clock (the change itself is applied: a receiver never rewrites a change).
//!
//!
//! When the offset in use moves by more than the bound (first learnt, or the device's clock was
//! changed since), the changes that never left the device are re-stamped as if written with the
//! new offset (`restamp.rs`), in the same transaction as the new offset: a crash leaves either
//! both or neither. The session checks at the peer's hello, before it plans its push
//! (`sync/session.rs`), so what it pushes already carries the corrected clocks.

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::Call;
use crate::schema::{finish_savepoint, meta_get, meta_set};
use outpost_protocol::hlc::{assess_skew, SkewPolicy, SkewVerdict};

/// `_outpost_meta` key: the offset (ms) new writes add to the wall clock.
pub(crate) const OFFSET_KEY: &str = "clock_offset_ms";
/// `_outpost_meta` key: the wall clock minus the trusted peer's at the last check (ms).
const SKEW_KEY: &str = "clock_skew_ms";
/// `_outpost_meta` key: when the last check was made (unix seconds, this device's corrected time).
const CHECKED_KEY: &str = "clock_checked_at";
/// `_outpost_meta` key: how many changes the last re-stamp rewrote.
const RESTAMPED_KEY: &str = "clock_restamped";

/// How far ahead of trusted time a received clock may be and still advance this device's clock:
/// one day, the bound docs/design.md section 10 gives relays for pushes.
pub(crate) const FUTURE_BOUND_MS: u64 = outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS;

/// Compares this device's wall clock with a peer's stated at hello (`peer_wall_ms`, 0: the peer
/// has no trusted time) and records the verdict; re-stamps the changes that never left when the
/// offset moves by more than the bound. One transaction. Returns the offset now in use, or `None`
/// when the peer's time is not trusted (nothing is changed then).
pub(crate) fn check(call: &Call, peer_wall_ms: u64) -> Result<Option<i64>, Error> {
    if peer_wall_ms == 0 {
        return Ok(None);
    }
    let conn = call.conn;
    conn.exec("SAVEPOINT outpost_clock_check")?;
    let r = (|| {
        // Read inside the transaction: the wall reading and the offset belong together.
        let local_wall_ms = crate::clock::device_wall_ms(conn)?;
        let policy = SkewPolicy::default();
        let (now_offset, skew) = match assess_skew(local_wall_ms, peer_wall_ms, policy) {
            SkewVerdict::WithinBound { skew_ms } => (0, skew_ms),
            SkewVerdict::UsePeerTime { offset_ms } => (offset_ms, offset_ms.saturating_neg()),
        };
        let (before, _) = offset(conn)?;
        let moved = i128::from(now_offset) - i128::from(before);
        if moved.unsigned_abs() > u128::from(policy.max_skew_ms) {
            let delta = moved.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            let now = (i128::from(local_wall_ms) + i128::from(now_offset)).max(0) as u64;
            let n = crate::restamp::restamp(call, delta, now)?;
            meta_set(conn, RESTAMPED_KEY, i64::try_from(n).unwrap_or(i64::MAX))?;
        }
        meta_set(conn, OFFSET_KEY, now_offset)?;
        meta_set(conn, SKEW_KEY, skew)?;
        let corrected_secs = (i128::from(local_wall_ms) + i128::from(now_offset)).max(0) / 1000;
        meta_set(
            conn,
            CHECKED_KEY,
            i64::try_from(corrected_secs).unwrap_or(i64::MAX),
        )?;
        Ok(Some(now_offset))
    })();
    let r = finish_savepoint(conn, "outpost_clock_check", r);
    // The offset, and after a re-stamp the stored clock, changed: every use reads them again.
    call.session.clock.reload();
    r
}

/// The offset new writes use (0 when none was ever learnt) and whether trusted time was ever
/// learnt.
pub(crate) fn offset(conn: Conn) -> Result<(i64, bool), Error> {
    let offset = meta_get(conn, OFFSET_KEY)?;
    Ok((offset.unwrap_or(0), offset.is_some()))
}

/// What `outpost_status()` shows under `clock`: `null` before any check against a trusted peer.
pub(crate) fn status(conn: Conn) -> Result<serde_json::Value, Error> {
    let shift = meta_get(conn, crate::clock::TEST_SHIFT_KEY)?;
    let Some(checked_at) = meta_get(conn, CHECKED_KEY)? else {
        // The test hook shows even before any check: a shifted clock is never silent.
        return Ok(shift.map_or(
            serde_json::Value::Null,
            |s| serde_json::json!({ "test_wall_shift_ms": s }),
        ));
    };
    let mut out = serde_json::json!({
        "skew_ms": meta_get(conn, SKEW_KEY)?.unwrap_or(0),
        "offset_ms": meta_get(conn, OFFSET_KEY)?.unwrap_or(0),
        "checked_at": checked_at,
        "restamped": meta_get(conn, RESTAMPED_KEY)?.unwrap_or(0),
    });
    if let Some(shift) = shift {
        out["test_wall_shift_ms"] = shift.into();
    }
    if let Some(refusal) = crate::clock_ahead::status(conn)? {
        out["last_clock_ahead"] = refusal;
    }
    Ok(out)
}
