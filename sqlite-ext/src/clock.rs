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
pub(crate) fn wall_ms() -> u64 {
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

/// How often a connection re-reads the skew offset another connection (or process) may have
/// learnt: a read per second of wall time instead of one per written row.
const OFFSET_REFRESH_MS: u64 = 1000;

/// A connection's clock and the skew offset it applies (`skew.rs`).
struct State {
    clock: Clock,
    /// Trusted time was learnt at least once: received clocks far ahead of it are not adopted.
    trusted: bool,
    /// The wall clock (ms) when the offset was last read (`None`: read it at the next use).
    /// Compared with the wall reading each call takes anyway, so the check costs no clock read.
    offset_read: Option<u64>,
}

/// One connection's clock: resumed from the database at first use, then kept in memory.
#[derive(Default)]
pub(crate) struct ConnClock(Mutex<Option<State>>);

impl ConnClock {
    /// Runs `f` on the clock, `wall` being this call's wall reading (ms).
    fn with_clock<T>(
        &self,
        conn: Conn,
        wall: u64,
        f: impl FnOnce(&mut Clock, bool) -> T,
    ) -> Result<T, Error> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| Error::Internal("clock lock poisoned".into()))?;
        if let Some(state) = guard.as_mut() {
            // A wall clock that went back (set by hand) also reads it again.
            if state
                .offset_read
                .is_none_or(|at| wall.abs_diff(at) >= OFFSET_REFRESH_MS)
            {
                let (offset, trusted) = crate::skew::offset(conn)?;
                state.clock.set_offset(offset);
                state.trusted = trusted;
                state.offset_read = Some(wall);
            }
        }
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
            let mut clock = Clock::resume(Hlc::from_u64(stored.unwrap_or(0) as u64));
            let (offset, trusted) = crate::skew::offset(conn)?;
            clock.set_offset(offset);
            *guard = Some(State {
                clock,
                trusted,
                offset_read: Some(wall),
            });
        }
        match guard.as_mut() {
            Some(s) => Ok(f(&mut s.clock, s.trusted)),
            None => Err(Error::Internal("clock missing".into())),
        }
    }

    /// The clock of a new local write: the wall clock plus the skew offset, above every clock
    /// issued or observed.
    pub(crate) fn tick(&self, conn: Conn) -> Result<u64, Error> {
        let wall = wall_ms();
        self.with_clock(conn, wall, |c, _| c.tick(wall).as_u64())
    }

    /// Takes note of a received clock, unless this device has trusted time and the clock runs
    /// more than a day ahead of it (docs/design.md section 10, "Time": such a clock must not drag
    /// every later local write into the future).
    pub(crate) fn observe(&self, conn: Conn, hlc: u64) -> Result<(), Error> {
        let wall = wall_ms();
        self.with_clock(conn, wall, |c, trusted| {
            let remote = Hlc::from_u64(hlc);
            let now = c.corrected(wall);
            if !trusted || remote.millis() <= now.saturating_add(crate::skew::FUTURE_BOUND_MS) {
                c.observe(remote);
            }
        })
    }

    /// Forgets the cached offset, so the next use reads it again (after a check changed it).
    pub(crate) fn reload_offset(&self) {
        if let Ok(mut guard) = self.0.lock() {
            if let Some(state) = guard.as_mut() {
                state.offset_read = None;
            }
        }
    }

    /// The last clock issued or observed (0 before any).
    pub(crate) fn last(&self, conn: Conn) -> Result<u64, Error> {
        self.with_clock(conn, wall_ms(), |c, _| c.last().as_u64())
    }
}
