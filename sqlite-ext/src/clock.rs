//! The connection's hybrid logical clock, and wall time.
//!
//! Triggers call `outpost_tick()` (or read `outpost_clock`) once per written row, so the clock is
//! a cached [`outpost_protocol::Clock`] per connection ([`ConnClock`], held by the connection's
//! `Session`), resumed from what the database has stored at its first use. Another connection
//! of the same database may have issued later clocks meanwhile; `fold` therefore never trusts a
//! logged clock blindly: a local write always gets a clock above the version it replaces (see
//! `fold.rs`), so per-cell order holds across connections.
//!
//! The wall clock is read here and nowhere else in the engine (the protocol never reads it).

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::{Clock, Hlc};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (0 if the system clock is before it), for the timestamps Outpost
/// records (id requests, sync outcomes).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One connection's clock: resumed from the database at first use, then kept in memory.
#[derive(Default)]
pub(crate) struct ConnClock(Mutex<Option<Clock>>);

impl ConnClock {
    fn with_clock<T>(&self, conn: Conn, f: impl FnOnce(&mut Clock) -> T) -> Result<T, Error> {
        let mut guard = self
            .0
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
