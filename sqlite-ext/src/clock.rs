//! Per-connection state: the hybrid logical clock and the capture switch; the site id.
//!
//! Triggers call `outpost_tick()` once per written row, so the clock is a cached
//! [`outpost_protocol::Clock`] per connection, resumed from what the database has stored at its
//! first use. Another connection of the same database may have issued later clocks meanwhile;
//! `fold` therefore never trusts a logged clock blindly: a local write always gets a clock above
//! the version it replaces (see `fold.rs`), so per-cell order holds across connections.
//!
//! `capturing` is false while `outpost_apply` writes a peer's changes: the triggers' `WHEN
//! outpost_capturing()` then skips them, so received writes keep their origin.

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use outpost_protocol::{Clock, Hlc, SiteId, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// State shared by all functions of one connection.
pub(crate) struct Session {
    capturing: AtomicBool,
    clock: Mutex<Option<Clock>>,
    /// Where a chunked export stopped (see `export.rs`).
    export: Mutex<Option<ExportCursor>>,
    /// What the last apply knew of rows without state (see `apply/carry.rs`).
    pub(crate) new_rows: Mutex<Option<crate::apply::Carried>>,
}

/// The rows a chunked export has yet to send: valid while the database's own seq is unchanged
/// and the next call asks from where the last one stopped. Saves rescanning every row per chunk.
pub(crate) struct ExportCursor {
    pub top: u64,
    pub since: u64,
    /// `(smallest own seq above since, table id, packed key)`, in that seq order.
    pub rest: Vec<(u64, i64, Vec<u8>)>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            capturing: AtomicBool::new(true),
            clock: Mutex::new(None),
            export: Mutex::new(None),
            new_rows: Mutex::new(None),
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Restores capture when dropped (also on early return or error).
pub(crate) struct Suppress<'a>(&'a Session);

impl Drop for Suppress<'_> {
    fn drop(&mut self) {
        self.0.capturing.store(true, Ordering::SeqCst);
    }
}

impl Session {
    pub(crate) fn capturing(&self) -> bool {
        self.capturing.load(Ordering::Relaxed)
    }

    /// Stops trigger capture until the guard drops.
    pub(crate) fn suppress(&self) -> Suppress<'_> {
        self.capturing.store(false, Ordering::SeqCst);
        Suppress(self)
    }

    fn with_clock<T>(&self, conn: Conn, f: impl FnOnce(&mut Clock) -> T) -> Result<T, Error> {
        let mut guard = self
            .clock
            .lock()
            .map_err(|_| Error::Internal("clock lock poisoned".into()))?;
        if guard.is_none() {
            // Resume above what fold recorded and the newest log rows (the log's tail, by its
            // INTEGER PRIMARY KEY: a bounded read). Not `max(hlc)` over the whole log: that scans
            // every unfolded row on each connection's first write (12-16 ms after W1's 300k rows,
            // inside W2's timing). An older row of another connection with a higher clock is safe:
            // fold raises every local write above the version it replaces.
            let stored = conn.query_i64(
                "SELECT max(coalesce((SELECT v FROM _outpost_meta WHERE k='hlc'),0), coalesce((SELECT max(hlc) FROM (SELECT hlc FROM _outpost_log ORDER BY seq DESC LIMIT 1000)),0))",
                &[],
            )?;
            *guard = Some(Clock::resume(Hlc::from_u64(stored.unwrap_or(0) as u64)));
        }
        match guard.as_mut() {
            Some(c) => Ok(f(c)),
            None => Err(Error::Internal("clock missing".into())),
        }
    }

    /// Takes the export cursor if it continues exactly `since` at own seq `top`.
    pub(crate) fn take_export(&self, top: u64, since: u64) -> Option<Vec<(u64, i64, Vec<u8>)>> {
        let mut g = self.export.lock().ok()?;
        match g.take() {
            Some(c) if c.top == top && c.since == since => Some(c.rest),
            _ => None,
        }
    }

    /// Remembers where a chunked export stopped.
    pub(crate) fn keep_export(&self, cursor: ExportCursor) {
        if let Ok(mut g) = self.export.lock() {
            *g = Some(cursor);
        }
    }

    /// The clock of a new local write.
    pub(crate) fn tick(&self, conn: Conn) -> Result<u64, Error> {
        self.with_clock(conn, |c| c.tick(wall_ms()).as_u64())
    }

    /// Takes note of a received clock.
    pub(crate) fn observe(&self, conn: Conn, hlc: u64) -> Result<(), Error> {
        self.with_clock(conn, |c| c.observe(Hlc::from_u64(hlc)))
    }

    /// The last clock issued or observed (0 before any).
    pub(crate) fn last(&self, conn: Conn) -> Result<u64, Error> {
        self.with_clock(conn, |c| c.last().as_u64())
    }
}

/// This database's site id (created with the bookkeeping, see `schema::ensure`).
pub(crate) fn site_id(conn: Conn) -> Result<SiteId, Error> {
    let mut s = conn.prepare("SELECT site FROM _outpost_sites WHERE idx = 0")?;
    if s.step()? {
        SiteId::from_slice(&s.blob(0))
            .ok_or_else(|| Error::Corrupt("stored site id is not 16 bytes".into()))
    } else {
        Err(Error::Corrupt("no site id stored".into()))
    }
}

/// A fresh random site id.
pub(crate) fn new_site_id() -> Result<SiteId, Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)
        .map_err(|e| Error::Internal(format!("no randomness for a site id: {e}")))?;
    Ok(SiteId(b))
}

/// `outpost_tick()`: the clock for a local write (called by the triggers).
pub(crate) fn sql_tick(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    Ok(Value::Integer(call.session.tick(call.conn)? as i64))
}

/// `outpost_capturing()`: 1 unless this connection is applying a peer's changes.
pub(crate) fn sql_capturing(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    Ok(Value::Integer(call.session.capturing() as i64))
}

/// `outpost_site_id()`.
pub(crate) fn sql_site_id(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    crate::schema::ensure(call.conn)?;
    Ok(Value::Blob(site_id(call.conn)?.0.to_vec()))
}

/// `outpost_pack(v, ...)`: the packed key form (called by the triggers).
pub(crate) fn sql_pack(_call: &Call, args: &[Arg]) -> Result<Value, Error> {
    Ok(Value::Blob(crate::keys::pack_args(
        args.iter().copied(),
        args.len(),
    )))
}
