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
//! Not done yet: re-stamping the changes that have never left the device when the offset is first
//! learnt (changes written offline before the first sync with a trusted peer keep the clock they
//! were written with).

use crate::error::Error;
use crate::ffi::Conn;
use crate::schema::{meta_get, meta_set};
use outpost_protocol::hlc::{assess_skew, SkewPolicy, SkewVerdict};

/// `_outpost_meta` key: the offset (ms) new writes add to the wall clock.
pub(crate) const OFFSET_KEY: &str = "clock_offset_ms";
/// `_outpost_meta` key: the wall clock minus the trusted peer's at the last check (ms).
const SKEW_KEY: &str = "clock_skew_ms";
/// `_outpost_meta` key: when the last check was made (unix seconds, this device's corrected time).
const CHECKED_KEY: &str = "clock_checked_at";

/// How far ahead of trusted time a received clock may be and still advance this device's clock:
/// one day, the bound docs/design.md section 10 gives relays for pushes.
pub(crate) const FUTURE_BOUND_MS: u64 = 24 * 60 * 60 * 1000;

/// Compares this device's wall clock (`local_wall_ms`) with a peer's stated at hello
/// (`peer_wall_ms`, 0: the peer has no trusted time) and records the verdict. Returns the offset
/// now in use, or `None` when the peer's time is not trusted (nothing is changed then).
pub(crate) fn check(
    conn: Conn,
    local_wall_ms: u64,
    peer_wall_ms: u64,
) -> Result<Option<i64>, Error> {
    if peer_wall_ms == 0 {
        return Ok(None);
    }
    let (offset, skew) = match assess_skew(local_wall_ms, peer_wall_ms, SkewPolicy::default()) {
        SkewVerdict::WithinBound { skew_ms } => (0, skew_ms),
        SkewVerdict::UsePeerTime { offset_ms } => (offset_ms, offset_ms.saturating_neg()),
    };
    meta_set(conn, OFFSET_KEY, offset)?;
    meta_set(conn, SKEW_KEY, skew)?;
    let corrected_secs = (i128::from(local_wall_ms) + i128::from(offset)).max(0) / 1000;
    meta_set(
        conn,
        CHECKED_KEY,
        i64::try_from(corrected_secs).unwrap_or(i64::MAX),
    )?;
    Ok(Some(offset))
}

/// The offset new writes use (0 when none was ever learnt) and whether trusted time was ever
/// learnt.
pub(crate) fn offset(conn: Conn) -> Result<(i64, bool), Error> {
    let offset = meta_get(conn, OFFSET_KEY)?;
    Ok((offset.unwrap_or(0), offset.is_some()))
}

/// What `outpost_status()` shows under `clock`: `null` before any check against a trusted peer.
pub(crate) fn status(conn: Conn) -> Result<serde_json::Value, Error> {
    let Some(checked_at) = meta_get(conn, CHECKED_KEY)? else {
        return Ok(serde_json::Value::Null);
    };
    Ok(serde_json::json!({
        "skew_ms": meta_get(conn, SKEW_KEY)?.unwrap_or(0),
        "offset_ms": meta_get(conn, OFFSET_KEY)?.unwrap_or(0),
        "checked_at": checked_at,
    }))
}
