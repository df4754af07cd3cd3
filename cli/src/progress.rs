//! Progress of a long sync, measured from a second connection (see `session.rs`): changes
//! received (the growth of `_outpost_vector`'s coverage) and bytes written (the growth of the
//! database file and its WAL), with the rate as the estimate. On a terminal, one line redrawn on
//! stderr; otherwise JSON lines on stdout: `{"progress":{"changes":..,"bytes":..,"changes_per_s":..,"bytes_per_s":..,"elapsed_ms":..}}`.
//! Nothing is shown for a sync shorter than 300 ms.

use rusqlite::{Connection, OpenFlags};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to show progress.
#[derive(Clone, Copy)]
pub enum Progress {
    Terminal,
    JsonLines,
}

/// Progress being measured.
pub struct Running {
    mode: Progress,
    conn: Connection,
    db: PathBuf,
    started: Instant,
    last_shown: Option<Instant>,
    changes0: i64,
    bytes0: u64,
    shown: bool,
}

fn covered(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT coalesce(sum(covered), 0) FROM _outpost_vector",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn file_bytes(db: &Path) -> u64 {
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db.to_path_buf()) + size(PathBuf::from(wal))
}

impl Progress {
    /// Starts measuring from now.
    pub fn start(self, db: &Path) -> rusqlite::Result<Running> {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_millis(200))?;
        Ok(Running {
            mode: self,
            changes0: covered(&conn),
            bytes0: file_bytes(db),
            conn,
            db: db.to_path_buf(),
            started: Instant::now(),
            last_shown: None,
            shown: false,
        })
    }
}

impl Running {
    /// Shows the figures every half second once the sync has run for 300 ms.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if now - self.started < Duration::from_millis(300)
            || self
                .last_shown
                .is_some_and(|t| now - t < Duration::from_millis(500))
        {
            return;
        }
        self.last_shown = Some(now);
        self.show(false);
    }

    /// The last figures, once, if any were shown.
    pub fn finish(&mut self) {
        if self.shown {
            self.show(true);
        }
    }

    fn show(&mut self, last: bool) {
        self.shown = true;
        let changes = (covered(&self.conn) - self.changes0).max(0);
        let bytes = file_bytes(&self.db).saturating_sub(self.bytes0);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let (cps, bps) = (changes as f64 / secs, bytes as f64 / secs);
        match self.mode {
            Progress::Terminal => {
                let mut err = std::io::stderr();
                let _ = write!(
                    err,
                    "\rsyncing: {changes} changes received, {:.1} MB written, {:.0} changes/s, {:.1} MB/s, {:.0} s{}",
                    bytes as f64 / 1e6,
                    cps,
                    bps / 1e6,
                    secs,
                    if last { "\n" } else { "   " }
                );
                let _ = err.flush();
            }
            Progress::JsonLines => {
                let line = serde_json::json!({"progress": {
                    "changes": changes, "bytes": bytes,
                    "changes_per_s": cps.round() as u64, "bytes_per_s": bps.round() as u64,
                    "elapsed_ms": (secs * 1000.0) as u64, "done": last,
                }});
                let mut out = std::io::stdout();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }
}

/// Terminal when stderr is one, else JSON lines.
pub fn auto() -> Progress {
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(2) } == 1 {
        Progress::Terminal
    } else {
        Progress::JsonLines
    }
}
