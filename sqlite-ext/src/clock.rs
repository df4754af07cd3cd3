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
//!
//! **Test hook.** A database whose `_outpost_meta` holds `test_wall_shift_ms` reads its wall
//! clock shifted by that many milliseconds ([`device_wall_ms`], and every connection's clock within
//! a second): two device databases in one test process can then run a year behind and a day
//! ahead. It lives in Outpost's private bookkeeping, per database, so an app reaches it only by
//! writing that row on purpose (docs/sql-api.md says it is for tests), and `outpost_status()`
//! shows it under `clock` when set. An environment variable would shift every database of the
//! process alike, and a debug-only switch would not reach the release builds the end-to-end
//! tests load.

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

/// The `_outpost_meta` key of the test hook (module documentation).
pub(crate) const TEST_SHIFT_KEY: &str = "test_wall_shift_ms";

/// `wall` moved by `shift_ms`, within 0 ..= u64::MAX.
fn shifted(wall: u64, shift_ms: i64) -> u64 {
    (i128::from(wall) + i128::from(shift_ms)).clamp(0, i128::from(u64::MAX)) as u64
}

/// This database's wall clock (ms): the system's, moved by the test hook when it is set.
pub(crate) fn device_wall_ms(conn: Conn) -> Result<u64, Error> {
    let shift = crate::schema::meta_get(conn, TEST_SHIFT_KEY)?.unwrap_or(0);
    Ok(shifted(wall_ms(), shift))
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

/// What a connection's clock reads from `_outpost_meta` (at first use, then once a second).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Settings {
    /// The skew offset (`skew.rs`).
    offset: i64,
    /// Trusted time was learnt at least once: received clocks far ahead of it are not adopted.
    trusted: bool,
    /// The test hook's shift of the wall clock (module documentation).
    shift: i64,
    /// Bumped by each re-stamp (`restamp.rs`): the stored clock may have gone down, so a
    /// connection holding an older value resumes from the stored one.
    epoch: i64,
}

impl Settings {
    fn read(conn: Conn) -> Result<Settings, Error> {
        let (offset, trusted) = crate::skew::offset(conn)?;
        Ok(Settings {
            offset,
            trusted,
            shift: crate::schema::meta_get(conn, TEST_SHIFT_KEY)?.unwrap_or(0),
            epoch: crate::restamp::clock_epoch(conn)?,
        })
    }
}

/// The stored clock a connection resumes from.
fn stored(conn: Conn) -> Result<Hlc, Error> {
    // Above what fold recorded and the newest log rows (the log's tail, by its INTEGER PRIMARY
    // KEY: a bounded read). Not `max(hlc)` over the whole log: that scans every unfolded row on
    // each connection's first write (12-16 ms after W1's 300k rows, inside W2's timing). An older
    // row of another connection with a higher clock is safe: fold raises every local write above
    // the version it replaces.
    let stored = conn.query_i64(
        "SELECT max(coalesce((SELECT v FROM _outpost_meta WHERE k='hlc'),0), coalesce((SELECT max(hlc) FROM (SELECT hlc FROM _outpost_log ORDER BY seq DESC LIMIT 1000)),0))",
        &[],
    )?;
    Ok(Hlc::from_u64(stored.unwrap_or(0) as u64))
}

/// A connection's clock and what it applies to the wall clock (`skew.rs`, the test hook).
struct State {
    clock: Clock,
    settings: Settings,
    /// The wall clock (ms) when the settings were last read (`None`: read them at the next use).
    /// Compared with the wall reading each call takes anyway, so the check costs no clock read.
    offset_read: Option<u64>,
}

impl State {
    /// The wall reading `wall` as this database's wall clock (the test hook's shift applied).
    fn wall(&self, wall: u64) -> u64 {
        shifted(wall, self.settings.shift)
    }
}

/// One connection's clock: resumed from the database at first use, then kept in memory.
#[derive(Default)]
pub(crate) struct ConnClock(Mutex<Option<State>>);

impl ConnClock {
    /// Runs `f` on the state, `wall` being this call's wall reading (ms).
    fn with_clock<T>(
        &self,
        conn: Conn,
        wall: u64,
        f: impl FnOnce(&mut State) -> T,
    ) -> Result<T, Error> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| Error::Internal("clock lock poisoned".into()))?;
        if let Some(state) = guard.as_mut() {
            // A wall clock that went back (set by hand) also reads them again.
            if state
                .offset_read
                .is_none_or(|at| wall.abs_diff(at) >= OFFSET_REFRESH_MS)
            {
                let settings = Settings::read(conn)?;
                if settings.epoch != state.settings.epoch {
                    // A re-stamp rewrote the stored clock (possibly lower): start from it again.
                    state.clock = Clock::resume(stored(conn)?);
                }
                state.clock.set_offset(settings.offset);
                state.settings = settings;
                state.offset_read = Some(wall);
            }
        }
        if guard.is_none() {
            let settings = Settings::read(conn)?;
            let mut clock = Clock::resume(stored(conn)?);
            clock.set_offset(settings.offset);
            *guard = Some(State {
                clock,
                settings,
                offset_read: Some(wall),
            });
        }
        match guard.as_mut() {
            Some(s) => Ok(f(s)),
            None => Err(Error::Internal("clock missing".into())),
        }
    }

    /// The clock of a new local write: the wall clock plus the skew offset, above every clock
    /// issued or observed.
    pub(crate) fn tick(&self, conn: Conn) -> Result<u64, Error> {
        let wall = wall_ms();
        self.with_clock(conn, wall, |s| {
            let wall = s.wall(wall);
            s.clock.tick(wall).as_u64()
        })
    }

    /// Takes note of a received clock, unless this device has trusted time and the clock runs
    /// more than a day ahead of it (docs/design.md section 10, "Time": such a clock must not drag
    /// every later local write into the future).
    pub(crate) fn observe(&self, conn: Conn, hlc: u64) -> Result<(), Error> {
        let wall = wall_ms();
        self.with_clock(conn, wall, |s| {
            let remote = Hlc::from_u64(hlc);
            let now = s.clock.corrected(s.wall(wall));
            if !s.settings.trusted
                || remote.millis() <= now.saturating_add(crate::skew::FUTURE_BOUND_MS)
            {
                s.clock.observe(remote);
            }
        })
    }

    /// Forgets the cached settings, so the next use reads them again (after a check changed the
    /// offset, or a re-stamp the stored clock).
    pub(crate) fn reload(&self) {
        if let Ok(mut guard) = self.0.lock() {
            if let Some(state) = guard.as_mut() {
                state.offset_read = None;
            }
        }
    }

    /// The last clock issued or observed (0 before any).
    pub(crate) fn last(&self, conn: Conn) -> Result<u64, Error> {
        self.with_clock(conn, wall_ms(), |s| s.clock.last().as_u64())
    }
}
