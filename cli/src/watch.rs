//! `outpost watch`: the background sync worker.
//!
//! One loop, ticking every 50 ms, decides when the next sync runs:
//! - a local commit (from any process, see `wake.rs`): `--debounce-ms` after the last one seen,
//!   so a burst of writes is one sync;
//! - an address or route change: at once, with the backoff reset (connectivity may be back);
//! - the timer: `--interval-s` after the last attempt;
//! - after a failure, only the backoff delay (`outpost_link::Backoff`: exponential, jittered in
//!   the upper quarter of each step): local commits wait for it.
//!
//! A stop signal is checked between syncs; one arriving during a sync interrupts it at its next
//! SQLite statement (see `stop.rs`), which rolls back at most the chunk in flight.

use crate::session::{self, Outcome};
use crate::wake::{Commits, Network};
use crate::{engine, progress, stop};
use anyhow::Result;
use outpost_link::Backoff;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `outpost watch` options.
pub struct Options {
    pub db: PathBuf,
    pub peer: Option<String>,
    pub json: bool,
    pub interval: Duration,
    pub debounce: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub timeout_ms: Option<u64>,
}

fn say(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// Runs until SIGTERM/SIGINT. Returns after the current sync ends.
pub fn run(o: Options) -> Result<()> {
    let conn = engine::open(&o.db)?;
    let mut commits = Commits::new(engine::open(&o.db)?)?;
    let mut network = Network::open();
    let mut backoff = Backoff::new(o.backoff_min, o.backoff_max);
    say(
        o.json,
        serde_json::json!({"watching": o.db, "interval_s": o.interval.as_secs()}),
        format!(
            "watching {} (sync on local commits, network changes, and every {} s)",
            o.db.display(),
            o.interval.as_secs()
        ),
    );
    // Sync once at start: changes may have waited while the worker was not running.
    let mut due = Some((Instant::now(), "start"));
    let mut retrying = false;
    while !stop::requested() {
        let now = Instant::now();
        if commits.new_local_change() && !retrying {
            let at = now + o.debounce;
            // A new commit pushes the debounce window out, but never past a sync already due sooner.
            due = Some(match due {
                Some((t, why)) if t <= now => (t, why),
                _ => (at, "local commit"),
            });
        }
        if network.changed() {
            backoff.reset();
            due = Some((now, "network change"));
        }
        let (at, why) = due.unwrap_or((now + o.interval, "timer"));
        if now < at {
            if due.is_none() {
                due = Some((at, why));
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let progress = (!o.json)
            .then(progress::auto)
            .or(Some(progress::Progress::JsonLines));
        let outcome = session::run(&conn, &o.db, o.peer.as_deref(), o.timeout_ms, progress)?;
        match outcome {
            Outcome::Synced(out) => {
                backoff.reset();
                retrying = false;
                let text = format!("{} [{why}]", session::describe(&out));
                let mut v = out;
                v["reason"] = why.into();
                say(o.json, serde_json::json!({"synced": v}), text);
                due = Some((Instant::now() + o.interval, "timer"));
            }
            Outcome::Failed(e) => {
                if stop::requested() {
                    say(
                        o.json,
                        serde_json::json!({"stopped": e}),
                        format!("stopped: {e}"),
                    );
                    break;
                }
                let d = backoff.fail();
                retrying = true;
                say(
                    o.json,
                    serde_json::json!({"failed": e, "retry_in_ms": d.as_millis() as u64}),
                    format!("sync failed: {e}; retrying in {} ms", d.as_millis()),
                );
                due = Some((Instant::now() + d, "retry"));
            }
        }
    }
    say(
        o.json,
        serde_json::json!({"stopped": "signal"}),
        "stopped".into(),
    );
    Ok(())
}
