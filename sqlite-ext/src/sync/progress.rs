//! The progress of the `outpost_sync` running on a database, readable from any connection of the
//! process with `outpost_sync_progress()` (the `outpost` CLI's progress line reads it from a
//! second connection while the first one syncs).
//!
//! One entry per database file, in a process-global map: created when `outpost_sync` starts
//! ([`Running::start`]), removed when it returns (the guard's `Drop`, also on errors and
//! panics). The server announces each pull's size (`PullSize`, before its first chunk), so the
//! total is known up front. `batches` and `bytes` count what was applied (committed); chunks
//! received and verified but kept for the next grouped apply (`store.rs`) are `buffered_*`, and
//! leave it when applied, or when the session ends without applying them (a cut: the next pull
//! brings them again). The rate of what arrived (applied + buffered) since the announcement
//! gives the time left. A sync of several sessions adds each announced pull to what was applied
//! before.

use super::identity::db_path;
use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use outpost_protocol::Value;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Debug)]
struct Progress {
    started: Instant,
    /// When the current pull's size was announced (the rate is measured from there).
    announced_at: Option<Instant>,
    /// Received (applied + buffered) before the current pull was announced.
    base_batches: u64,
    base_bytes: u64,
    total_batches: Option<u64>,
    total_bytes: Option<u64>,
    /// Applied (committed).
    batches: u64,
    bytes: u64,
    /// Received and verified, kept for the next grouped apply.
    buffered_batches: u64,
    buffered_bytes: u64,
}

static RUNNING: Mutex<Option<HashMap<String, Progress>>> = Mutex::new(None);

/// The map's key for `conn`'s database (`None` for an in-memory one): a query and a path
/// resolution, so a sync reads it once ([`Running::start`], the store) and passes it on.
pub(crate) fn key(conn: Conn) -> Option<String> {
    let path = db_path(conn).ok().flatten()?;
    Some(
        std::fs::canonicalize(&path)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned(),
    )
}

fn with<T>(f: impl FnOnce(&mut HashMap<String, Progress>) -> T) -> T {
    let mut g = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// A sync in progress on one database; its entry goes when this is dropped.
pub(crate) struct Running(Option<String>);

impl Running {
    /// Registers a sync starting on `conn`'s database (none for an in-memory database).
    pub(crate) fn start(conn: Conn) -> Running {
        let key = key(conn);
        if let Some(k) = &key {
            with(|m| {
                m.insert(
                    k.clone(),
                    Progress {
                        started: Instant::now(),
                        announced_at: None,
                        base_batches: 0,
                        base_bytes: 0,
                        total_batches: None,
                        total_bytes: None,
                        batches: 0,
                        bytes: 0,
                        buffered_batches: 0,
                        buffered_bytes: 0,
                    },
                )
            });
        }
        Running(key)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(k) = &self.0 {
            with(|m| m.remove(k));
        }
    }
}

fn update(key: Option<&str>, f: impl FnOnce(&mut Progress)) {
    let Some(k) = key else { return };
    with(|m| {
        if let Some(p) = m.get_mut(k) {
            f(p)
        }
    });
}

/// The server announced a pull of `batches` batches, `bytes` bytes.
pub(crate) fn announced(key: Option<&str>, batches: u64, bytes: u64) {
    update(key, |p| {
        p.announced_at = Some(Instant::now());
        p.base_batches = p.batches + p.buffered_batches;
        p.base_bytes = p.bytes + p.buffered_bytes;
        p.total_batches = Some(p.base_batches + batches);
        p.total_bytes = Some(p.base_bytes + bytes);
    });
}

/// One pulled batch of `bytes` bytes was received, verified and kept for the next grouped apply.
pub(crate) fn kept(key: Option<&str>, bytes: u64) {
    update(key, |p| {
        p.buffered_batches += 1;
        p.buffered_bytes += bytes;
    });
}

/// `batches` kept batches of `bytes` bytes in all were applied (committed).
pub(crate) fn applied(key: Option<&str>, batches: u64, bytes: u64) {
    update(key, |p| {
        p.buffered_batches = p.buffered_batches.saturating_sub(batches);
        p.buffered_bytes = p.buffered_bytes.saturating_sub(bytes);
        p.batches += batches;
        p.bytes += bytes;
    });
}

/// A session ended without applying its kept batches (the next pull brings them again).
pub(crate) fn discarded(key: Option<&str>, batches: u64, bytes: u64) {
    update(key, |p| {
        p.buffered_batches = p.buffered_batches.saturating_sub(batches);
        p.buffered_bytes = p.buffered_bytes.saturating_sub(bytes);
    });
}

/// Milliseconds left at the rate of arrival since the announcement; `None` before the first
/// batch.
fn eta_ms(p: &Progress) -> Option<u64> {
    let total = p.total_bytes?;
    let since = p.announced_at?.elapsed().as_millis() as u64;
    let received = p.bytes + p.buffered_bytes;
    let done = received.saturating_sub(p.base_bytes);
    if total <= received {
        return Some(0);
    }
    if done == 0 {
        return None;
    }
    Some((total - received).saturating_mul(since) / done)
}

/// `outpost_sync_progress()`: JSON of the sync running on this database in this process, or
/// NULL when none runs.
pub(crate) fn sql_sync_progress(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    let Some(k) = key(call.conn) else {
        return Ok(Value::Null);
    };
    let Some(p) = with(|m| m.get(&k).cloned()) else {
        return Ok(Value::Null);
    };
    Ok(Value::Text(
        json!({
            "elapsed_ms": p.started.elapsed().as_millis() as u64,
            "batches": p.batches,
            "bytes": p.bytes,
            "buffered_batches": p.buffered_batches,
            "buffered_bytes": p.buffered_bytes,
            "total_batches": p.total_batches,
            "total_bytes": p.total_bytes,
            "eta_ms": eta_ms(&p),
        })
        .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_left_follows_the_rate_since_the_announcement() {
        let now = Instant::now();
        let mut p = Progress {
            started: now,
            announced_at: Some(now - Duration::from_millis(1_000)),
            base_batches: 0,
            base_bytes: 0,
            total_batches: Some(10),
            total_bytes: Some(4_000),
            batches: 0,
            bytes: 0,
            buffered_batches: 0,
            buffered_bytes: 0,
        };
        assert_eq!(eta_ms(&p), None, "no rate before the first batch");
        p.bytes = 1_000;
        let eta = eta_ms(&p).unwrap();
        assert!((3_000..3_100).contains(&eta), "{eta}");
        // Received but not applied yet counts as arrived.
        (p.bytes, p.buffered_bytes) = (0, 1_000);
        let eta = eta_ms(&p).unwrap();
        assert!((3_000..3_100).contains(&eta), "{eta}");
        p.buffered_bytes = 0;
        p.bytes = 4_000;
        assert_eq!(eta_ms(&p), Some(0));
        p.total_bytes = None;
        assert_eq!(eta_ms(&p), None, "nothing announced");
    }
}
