//! One `outpost_sync` call, watched: progress while it runs, interrupted if a stop is asked.
//!
//! The sync call returns only at its end, so progress is read from a second connection of this
//! process to the same file: every pulled chunk is committed with its vector advance, so the sum
//! of `_outpost_vector` grows by the changes received and the file (plus its WAL) by what was
//! written; and `outpost_sync_progress()` (the engine is linked into this process, so both
//! connections share its figures) gives the pull's total as the peer announced it before the
//! first chunk, what was applied of it, and the time left.

use crate::progress::Progress;
use crate::stop;
use anyhow::Result;
use rusqlite::Connection;
use serde_json::Value as Json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one sync call ended with.
pub enum Outcome {
    /// The JSON counts of `outpost_sync`.
    Synced(Json),
    /// The error message (`outpost_sync: ...`).
    Failed(String),
}

/// Runs `outpost_sync(peer, options)` on `conn` (opened on `db`).
pub fn run(
    conn: &Connection,
    db: &Path,
    peer: Option<&str>,
    timeout_ms: Option<u64>,
    progress: Option<Progress>,
) -> Result<Outcome> {
    let options = timeout_ms.map(|ms| serde_json::json!({ "timeout_ms": ms }).to_string());
    let done = Arc::new(AtomicBool::new(false));
    let interrupt = conn.get_interrupt_handle();
    let watcher = {
        let done = done.clone();
        let db = db.to_path_buf();
        std::thread::spawn(move || {
            let mut progress = progress.and_then(|p| p.start(&db).ok());
            while !done.load(Ordering::SeqCst) {
                if stop::requested() {
                    interrupt.interrupt();
                    return None;
                }
                if let Some(p) = progress.as_mut() {
                    p.tick();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            progress
        })
    };
    let r: rusqlite::Result<String> =
        conn.query_row("SELECT outpost_sync(?1, ?2)", (peer, options), |r| r.get(0));
    done.store(true, Ordering::SeqCst);
    if let Ok(Some(mut p)) = watcher.join() {
        let result = r.as_ref().ok().and_then(|t| serde_json::from_str(t).ok());
        p.finish(result.as_ref());
    }
    Ok(match r {
        Ok(text) => Outcome::Synced(serde_json::from_str(&text)?),
        Err(rusqlite::Error::SqliteFailure(e, msg)) => {
            let msg = msg.unwrap_or_else(|| e.to_string());
            if e.code == rusqlite::ErrorCode::OperationInterrupted {
                Outcome::Failed(format!(
                    "interrupted by a stop signal ({msg}); committed chunks are kept, the next sync resumes"
                ))
            } else {
                Outcome::Failed(msg)
            }
        }
        Err(e) => Outcome::Failed(e.to_string()),
    })
}

/// One line for people: `synced with hub b637b45f… (127.0.0.1:7420): pushed 3, pulled 12 ...`.
pub fn describe(out: &Json) -> String {
    let n = |k: &str| out.get(k).and_then(Json::as_u64).unwrap_or(0);
    let s = |k: &str| out.get(k).and_then(Json::as_str).unwrap_or("?");
    let site = s("site");
    let mut line = format!(
        "synced with {} {} ({}): pushed {}, pulled {} (applied {}, unchanged {}, conflicts {}, quarantined {}) in {} ms",
        s("peer"),
        &site[..site.len().min(12)],
        s("address"),
        n("pushed"),
        n("pulled"),
        n("applied"),
        n("unchanged"),
        n("conflicts"),
        n("quarantined"),
        n("ms"),
    );
    if let Some(skipped) = out.get("skipped").and_then(Json::as_array) {
        for k in skipped {
            line.push_str(&format!(
                "; skipped {}: {}",
                k.get("peer").and_then(Json::as_str).unwrap_or("?"),
                k.get("error").and_then(Json::as_str).unwrap_or("?")
            ));
        }
    }
    line
}
