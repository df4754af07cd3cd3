//! Structured log lines on stderr through the `log` facade:
//! `2026-11-23T08:30:01.123Z INFO outpost_relay::listener peer=192.168.1.7:50122 closed`.
//! The level comes from `OUTPOST_LOG` (`error`, `warn`, `info` (default), `debug`, `trace`).
//! Nothing secret is ever passed to a log macro: keys appear as fingerprints, tokens never.
//!
//! Every line is one line: control characters in a message (and the Unicode marks that reorder
//! text on a terminal) are written escaped ([`escape_control`]: `\n`, `\u{1b}`, ...), whoever
//! wrote them. Messages carry text from the network (a peer's error message, a request line, a
//! device name), and a line break in it would let a stranger write a fake log line.
//!
//! The last [`RECENT`] warnings and errors are also kept in memory ([`recent_errors`]) for the
//! status page and the run-state file (`status` shows them).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
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

/// `text` with every control character escaped (`\n`, `\r`, `\t`, else `\u{..}`), and the
/// bidirectional marks and overrides a terminal would obey (U+200E, U+200F, U+202A..U+202E,
/// U+2066..U+2069), so it prints as one line that reads as it is stored. Borrowed when there is
/// nothing to escape.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    fn needs(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The line written for a record: time, level, target, message (escaped), newline.
fn line(at: SystemTime, level: Level, target: &str, message: &str) -> String {
    let level = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    };
    format!(
        "{} {level} {} {}\n",
        utc_timestamp(at),
        escape_control(target),
        escape_control(message)
    )
}

fn remember(level: Level, message: &str) {
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
        text: format!("{level} {}", escape_control(message)),
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
        let message = record.args().to_string();
        remember(record.level(), &message);
        let line = line(SystemTime::now(), record.level(), record.target(), &message);
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
    fn a_peer_s_line_break_cannot_start_a_log_line_of_its_own() {
        // What a peer could send as its error text (or a request path, or a device name).
        let forged =
            "bad batch\n2026-11-23T08:30:01.123Z INFO outpost_relay enrolled\r\x1b[2K\u{202e}x";
        let out = line(UNIX_EPOCH, Level::Warn, "outpost_relay::listener", forged);
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(out.ends_with('\n'));
        assert_eq!(
            out,
            "1970-01-01T00:00:00.000Z WARN outpost_relay::listener bad batch\\n2026-11-23T08:30:01.123Z INFO outpost_relay enrolled\\r\\u{1b}[2K\\u{202e}x\n"
        );
        assert!(matches!(escape_control("plain text: ok"), Cow::Borrowed(_)));
        assert_eq!(escape_control("tab\there"), "tab\\there");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // a leap-year day
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(t), "2000-02-29T00:00:00.000Z");
    }
}
