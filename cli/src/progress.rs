//! Progress of a long sync, measured from a second connection of this process (see
//! `session.rs`): changes received (the growth of `_outpost_vector`'s coverage), bytes written
//! (the growth of the database file and its WAL), and, from `outpost_sync_progress()`, the pull's
//! total as the peer announced it before its first batch, the batches and bytes applied of it,
//! and the time left at the rate since the announcement. On a terminal, one line redrawn on
//! stderr; otherwise JSON lines on stdout:
//! `{"progress":{"changes":..,"bytes":..,"changes_per_s":..,"bytes_per_s":..,"elapsed_ms":..,
//! "batches":..,"total_batches":..,"pulled_bytes":..,"total_bytes":..,"eta_ms":..,"done":..}}`
//! (`total_*` and `eta_ms` are null until known). Nothing is shown for a sync shorter than
//! 300 ms.

use rusqlite::{Connection, OpenFlags};
use serde_json::Value as Json;
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
    /// The last `outpost_sync_progress()` figures seen.
    pull: Json,
}

fn covered(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT coalesce(sum(covered), 0) FROM _outpost_vector",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// The running sync's figures (`outpost_sync_progress()`), `Null` when none runs.
fn announced(conn: &Connection) -> Json {
    conn.query_row("SELECT outpost_sync_progress()", [], |r| {
        r.get::<_, Option<String>>(0)
    })
    .ok()
    .flatten()
    .and_then(|t| serde_json::from_str(&t).ok())
    .unwrap_or(Json::Null)
}

/// `12.3 MB`.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `1 min 5 s left`, `7 s left`.
fn left(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    if s >= 60 {
        format!("{} min {} s left", s / 60, s % 60)
    } else {
        format!("{s} s left")
    }
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
            pull: Json::Null,
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

    /// The last figures, once, if any were shown: what the sync's `result` (its JSON, `None` when
    /// it failed) says it applied, else the last reading.
    pub fn finish(&mut self, result: Option<&Json>) {
        if !self.shown {
            return;
        }
        // The running figures are gone once the sync returns; its result says what it applied.
        if let (Some(r), Some(p)) = (result, self.pull.as_object_mut()) {
            for (done, key) in [("batches", "batches_pulled"), ("bytes", "bytes_pulled")] {
                if let Some(n) = r.get(key).filter(|n| n.is_u64()) {
                    p.insert(done.into(), n.clone());
                }
            }
        }
        self.show(true);
    }

    fn show(&mut self, last: bool) {
        self.shown = true;
        // Read before the sync returns (after it, the figures are gone): the last line keeps the
        // previous ones.
        if !last {
            let p = announced(&self.conn);
            if !p.is_null() {
                self.pull = p;
            }
        }
        let p = &self.pull;
        let u = |k: &str| p.get(k).and_then(Json::as_u64);
        let (batches, pulled) = (u("batches").unwrap_or(0), u("bytes").unwrap_or(0));
        let (total_batches, total_bytes) = (u("total_batches"), u("total_bytes"));
        // At the end nothing is left only if everything announced was applied (a live period
        // that ended mid-pull leaves the rest for the next sync: no estimate then).
        let eta_ms = if last {
            total_bytes.filter(|&t| pulled >= t).map(|_| 0)
        } else {
            u("eta_ms")
        };
        let changes = (covered(&self.conn) - self.changes0).max(0);
        let bytes = file_bytes(&self.db).saturating_sub(self.bytes0);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let (cps, bps) = (changes as f64 / secs, bytes as f64 / secs);
        match self.mode {
            Progress::Terminal => {
                let mut err = std::io::stderr();
                let of = match (total_batches, total_bytes) {
                    (Some(tb), Some(t)) => format!(
                        ", pulled {} of {} ({batches}/{tb} batches, {})",
                        mb(pulled),
                        mb(t),
                        eta_ms.map_or("time left unknown".into(), left)
                    ),
                    _ => String::new(),
                };
                let _ = write!(
                    err,
                    "\rsyncing: {changes} changes received{of}, {:.1} MB written, {:.0} changes/s, {:.1} MB/s, {:.0} s{}",
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
                    "batches": batches, "total_batches": total_batches,
                    "pulled_bytes": pulled, "total_bytes": total_bytes, "eta_ms": eta_ms,
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
