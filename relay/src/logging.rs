//! Structured log lines on stderr through the `log` facade:
//! `2026-11-23T08:30:01.123Z INFO outpost_relay::listener peer=192.168.1.7:50122 closed`.
//! The level comes from `OUTPOST_LOG` (`error`, `warn`, `info` (default), `debug`, `trace`).
//! Nothing secret is ever passed to a log macro: keys appear as fingerprints, tokens never.
//!
//! The last [`RECENT`] warnings and errors are also kept in memory ([`recent_errors`]) for the
//! status page and the run-state file (`status` shows them).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Warnings and errors kept for the status page.
pub const RECENT: usize = 20;

/// A warning or error the hub logged: unix seconds and the line's text (level and message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedError {
    /// When, unix seconds.
    pub at: u64,
    /// `WARN ...` or `ERROR ...` with the message.
    pub text: String,
}

static ERRORS: Mutex<VecDeque<LoggedError>> = Mutex::new(VecDeque::new());

/// The last [`RECENT`] warnings and errors, oldest first.
pub fn recent_errors() -> Vec<LoggedError> {
    ERRORS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

fn remember(level: Level, record: &Record<'_>) {
    if level > Level::Warn {
        return;
    }
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut errors = ERRORS.lock().unwrap_or_else(|p| p.into_inner());
    if errors.len() == RECENT {
        errors.pop_front();
    }
    errors.push_back(LoggedError {
        at,
        text: format!("{level} {}", record.args()),
    });
}

struct Stderr {
    level: LevelFilter,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        remember(record.level(), record);
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let line = format!(
            "{} {level} {} {}\n",
            utc_timestamp(SystemTime::now()),
            record.target(),
            record.args()
        );
        // One write per line so lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let level = std::env::var("OUTPOST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LevelFilter::Info);
    if log::set_logger(Box::leak(Box::new(Stderr { level }))).is_ok() {
        log::set_max_level(level);
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // a leap-year day
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(t), "2000-02-29T00:00:00.000Z");
    }
}
