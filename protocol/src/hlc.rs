//! The hybrid logical clock.
//!
//! An [`Hlc`] is 64 bits: 48 bits of milliseconds since the Unix epoch and a 16-bit counter.
//! Every local write takes `max(wall, last + 1)` ([`Clock::tick`]); every received change advances
//! `last` ([`Clock::observe`]). Adding one to a clock whose counter is `0xffff` carries into the
//! milliseconds, so the clock never wraps or stalls. Writes are ordered by [`Stamp`]: `(hlc, site)`.
//!
//! **Headroom.** A clock adopts wall readings and peers' clocks only up to [`CEILING_MILLIS`],
//! [`HEADROOM_MILLIS`] below the largest representable value. Without it, one change stamped near
//! the top (a peer whose RTC reads year 10000, or a crafted batch) would leave every replica that
//! saw it 65,536 local writes away from a clock that cannot increase: later writes would share a
//! stamp, and a receiver keeps what it has on an equal stamp, so replicas would diverge. With the
//! headroom, local writes after the highest adopted clock stay strictly increasing for 2^40 writes.
//! A change from beyond the ceiling is still accepted and merged (never rejected); only the local
//! clock stops at the ceiling, so such a change keeps winning over later local writes to the same
//! field, on every replica alike.
//!
//! Receivers never reject a change because of their own wall clock: that would break convergence.
//! Field clocks are wrong (dead RTC, manual time), so at hello a device compares its wall clock with
//! the peer's ([`assess_skew`]); past [`SkewPolicy::max_skew_ms`] it writes with the peer's time plus
//! its own monotonic progress ([`Clock::set_offset`]) and re-stamps the changes that never left it.
//! This module only decides; the caller reads the clocks and stores the state.

use crate::site::SiteId;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Bits of the counter part.
pub const COUNTER_BITS: u32 = 16;
/// The largest millisecond value a clock can hold (48 bits: year 10889).
pub const MAX_MILLIS: u64 = (1 << 48) - 1;

/// How far below [`MAX_MILLIS`] a clock stops adopting wall readings and observed clocks:
/// 2^24 ms (about 4.7 hours), room for 2^40 strictly increasing local writes after it.
pub const HEADROOM_MILLIS: u64 = 1 << 24;
/// The highest milliseconds a clock adopts from a wall reading or a peer (year 10889 minus
/// [`HEADROOM_MILLIS`]).
pub const CEILING_MILLIS: u64 = MAX_MILLIS - HEADROOM_MILLIS;

/// A hybrid logical clock value: `millis << 16 | counter`. Ordered as a plain `u64`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hlc(u64);

impl Hlc {
    /// The zero clock, before any write.
    pub const ZERO: Hlc = Hlc(0);

    /// Builds a clock from milliseconds (clamped to 48 bits) and a counter.
    pub const fn new(millis: u64, counter: u16) -> Hlc {
        let millis = if millis > MAX_MILLIS {
            MAX_MILLIS
        } else {
            millis
        };
        Hlc(millis << COUNTER_BITS | counter as u64)
    }

    /// Reinterprets a raw 64-bit value (as stored in a database or on the wire).
    pub const fn from_u64(raw: u64) -> Hlc {
        Hlc(raw)
    }

    /// The raw 64-bit value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The milliseconds part.
    pub const fn millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// The counter part.
    pub const fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The next clock value: counter + 1, carrying into the milliseconds on overflow. Saturates at
    /// the largest representable clock, which [`Clock`] never reaches: it adopts nothing above
    /// [`CEILING_MILLIS`], leaving 2^40 increments of headroom.
    pub const fn successor(self) -> Hlc {
        Hlc(self.0.saturating_add(1))
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}.{})", self.millis(), self.counter())
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.counter())
    }
}

/// The total order of writes: clock first, site id as tie-break.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stamp {
    /// When.
    pub hlc: Hlc,
    /// Who.
    pub site: SiteId,
}

/// A site's clock state: the last value it issued or observed, and the offset it applies to its
/// wall clock when its own time was found to be far off a peer's.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Clock {
    last: Hlc,
    offset_ms: i64,
}

impl Clock {
    /// A clock that resumes from `last` (as persisted) with no offset.
    ///
    /// After a skew correction, a device that re-stamps its never-sent changes may resume from a
    /// lower value than it had, but never below a clock that has left the database or was
    /// observed from a peer: every later write must still order after what peers already hold
    /// (a newer `counter` contribution replaces an older one only if its clock is higher).
    pub const fn resume(last: Hlc) -> Clock {
        Clock { last, offset_ms: 0 }
    }

    /// The last value issued or observed.
    pub const fn last(&self) -> Hlc {
        self.last
    }

    /// The offset in milliseconds added to the wall clock (0 unless skew was corrected).
    pub const fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Sets the correction applied to the wall clock (from [`SkewVerdict::UsePeerTime`]).
    pub fn set_offset(&mut self, offset_ms: i64) {
        self.offset_ms = offset_ms;
    }

    /// The corrected wall time for a raw wall reading, at most [`CEILING_MILLIS`].
    pub fn corrected(&self, wall_ms: u64) -> u64 {
        let t = wall_ms as i128 + self.offset_ms as i128;
        t.clamp(0, CEILING_MILLIS as i128) as u64
    }

    /// Issues the clock for a local write at wall time `wall_ms`: `max(wall, last + 1)`.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let wall = Hlc::new(self.corrected(wall_ms), 0);
        let next = core::cmp::max(wall, self.last.successor());
        self.last = next;
        next
    }

    /// Takes note of a clock received from a peer, so later local writes order after it.
    /// Never fails: a clock from the future is accepted (rejecting it would break convergence),
    /// but adopted only up to [`CEILING_MILLIS`] (see the module documentation).
    pub fn observe(&mut self, remote: Hlc) {
        let remote = remote.min(Hlc::new(CEILING_MILLIS, 0));
        if remote > self.last {
            self.last = remote;
        }
    }
}

/// How far ahead of a relay's trusted time a device's pushed clocks may run (one day): beyond it
/// the first relay with trusted time refuses the push, unless the relay already holds a clock
/// within [`ADMITTED_SLACK_MS`] of it, and the device re-stamps (docs/design.md section 10,
/// "Time"). Receivers with trusted time also stop adopting received clocks past it.
pub const MAX_CLOCK_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// How far above the highest clock a relay holds a device's pushed clock may be and still be
/// admitted, whatever the relay's trusted time: an edit of a far-future version is stamped just
/// above it (the re-stamp floor), so it must pass wherever that version passed.
pub const ADMITTED_SLACK_MS: u64 = 1000;

/// The highest milliseconds a relay admits in a device's push: trusted time plus
/// [`MAX_CLOCK_AHEAD_MS`], or the highest clock it holds plus [`ADMITTED_SLACK_MS`], whichever
/// is later.
pub fn admission_limit_ms(trusted_ms: u64, max_ahead_ms: u64, admitted: Hlc) -> u64 {
    trusted_ms
        .saturating_add(max_ahead_ms)
        .max(admitted.millis().saturating_add(ADMITTED_SLACK_MS))
}

/// Milliseconds since the Unix epoch shown as a UTC date, `2026-12-06T18:16:53Z` (what error
/// messages and status pages print for a clock).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UtcDate(pub u64);

impl fmt::Display for UtcDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// How far apart two peers' wall clocks may be before the device adopts the peer's time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SkewPolicy {
    /// The bound in milliseconds.
    pub max_skew_ms: u64,
}

impl Default for SkewPolicy {
    /// Five minutes: beyond ordinary drift, well inside a wrong date or a dead RTC.
    fn default() -> Self {
        SkewPolicy {
            max_skew_ms: 5 * 60 * 1000,
        }
    }
}

/// What a device does about the difference between its wall clock and a peer's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SkewVerdict {
    /// Within the bound: keep the local clock. `skew_ms` is `local - peer` (for status output).
    WithinBound {
        /// Local minus peer, in milliseconds.
        skew_ms: i64,
    },
    /// Too far off: write with the peer's time. `offset_ms` is what to add to the local wall
    /// clock ([`Clock::set_offset`]); the device should re-stamp its never-sent changes.
    UsePeerTime {
        /// Peer minus local, in milliseconds.
        offset_ms: i64,
    },
}

/// Compares a local wall reading with a peer's, both taken at hello.
///
/// The peer's reading is untrusted: any `u64` gives a verdict without panicking (values past what
/// an `i64` holds are clamped). With [`SkewVerdict::UsePeerTime`], `Clock::corrected(local)`
/// equals `peer` (when `peer` is within the 48-bit clock range).
pub fn assess_skew(local_wall_ms: u64, peer_wall_ms: u64, policy: SkewPolicy) -> SkewVerdict {
    // Both readings are u64, so their difference needs 65 bits; the peer's reading is untrusted
    // input (any u64 arrives at hello), so each direction is clamped on its own instead of
    // negating a clamped value (`-i64::MIN` overflows).
    let skew = local_wall_ms as i128 - peer_wall_ms as i128;
    let to_i64 = |x: i128| x.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    if skew.unsigned_abs() > policy.max_skew_ms as u128 {
        SkewVerdict::UsePeerTime {
            offset_ms: to_i64(-skew),
        }
    } else {
        SkewVerdict::WithinBound {
            skew_ms: to_i64(skew),
        }
    }
}

#[cfg(test)]
mod tests;
