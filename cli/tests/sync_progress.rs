//! Progress with a total and a time left: a device pulls a few MB through the release-built
//! `outpost-hub` (real TCP on loopback, real database files). The peer announces the pull's size
//! before its first batch; `outpost_sync_progress()` shows it from a second connection of the
//! syncing process while the sync runs (NULL before and after), and `outpost sync --json` prints
//! progress lines with `total_bytes` and `eta_ms`.

use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::proxy::Proxy;
use rusqlite::Connection;
use serde_json::Value as Json;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn open(path: &Path) -> Connection {
    outpost_embed::register().unwrap();
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

fn device(path: &Path, hub: &Hub) -> Connection {
    device_with(path, &hub.code())
}

/// A device enrolled with `code`.
fn device_with(path: &Path, code: &str) -> Connection {
    let c = open(path);
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT);
         SELECT outpost_track('notes');",
    )
    .unwrap();
    c.query_row(&format!("SELECT outpost_enroll('{code}')"), [], |r| {
        r.get::<_, String>(0)
    })
    .unwrap();
    c
}

fn progress(c: &Connection) -> Option<Json> {
    c.query_row("SELECT outpost_sync_progress()", [], |r| {
        r.get::<_, Option<String>>(0)
    })
    .unwrap()
    .map(|t| serde_json::from_str(&t).unwrap())
}

#[test]
fn a_pull_shows_its_announced_total_and_time_left() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(&dir.path().join("hub"), &["--no-mdns"]);
    // The source: 80000 rows of ~200 bytes (~17 MB), pushed to the hub: a pull long enough for
    // the CLI's progress lines (the first after 0.3 s; 20000 rows applied in groups of 16 chunks
    // took less than that).
    let a = device(&dir.path().join("a.db"), &hub);
    a.execute_batch(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80000)
         INSERT INTO notes SELECT 'n' || i, hex(randomblob(100)) FROM n;
         COMMIT;",
    )
    .unwrap();
    a.query_row("SELECT outpost_sync()", [], |r| r.get::<_, String>(0))
        .unwrap();

    // B pulls in this process while a second connection watches.
    let b_path = dir.path().join("b.db");
    let b = device(&b_path, &hub);
    let watcher = open(&b_path);
    assert_eq!(progress(&watcher), None, "no sync runs yet");
    let done = Arc::new(AtomicBool::new(false));
    let seen = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                if let Some(p) = progress(&watcher) {
                    seen.push(p);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (seen, progress(&watcher))
        })
    };
    let out: String = b
        .query_row("SELECT outpost_sync()", [], |r| r.get(0))
        .unwrap();
    done.store(true, Ordering::SeqCst);
    let (seen, after) = seen.join().unwrap();
    let out: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(after, None, "nothing runs after the sync returned");
    let pulled = out["batches_pulled"].as_u64().unwrap();
    assert!(pulled > 1, "{out}");
    let announced: Vec<&Json> = seen.iter().filter(|p| p["total_bytes"].is_u64()).collect();
    assert!(!announced.is_empty(), "the total was announced: {seen:?}");
    let total_bytes = announced[0]["total_bytes"].as_u64().unwrap();
    for p in &announced {
        assert_eq!(p["total_batches"].as_u64(), Some(pulled), "{p}");
        assert_eq!(p["total_bytes"].as_u64(), Some(total_bytes), "{p}");
        assert!(p["bytes"].as_u64().unwrap() <= total_bytes, "{p}");
    }
    assert!(
        announced
            .iter()
            .any(|p| p["eta_ms"].is_u64() && p["batches"].as_u64() < Some(pulled)),
        "a time left while batches were still coming: {announced:?}"
    );
    assert!(total_bytes > 2_000_000, "{total_bytes}");

    // C pulls through the `outpost` command: JSON progress lines with the total and time left.
    // Through a proxy paced at 8 MB/s, so the pull lasts about two seconds on any machine (an
    // idle one pulls the 17 MB before the command's first line at 300 ms).
    let proxy = Proxy::start(hub.addr().rsplit_once(':').unwrap().1.parse().unwrap());
    proxy.pace.store(8 << 20, Ordering::SeqCst);
    let c_path = dir.path().join("c.db");
    drop(device_with(
        &c_path,
        &hub.code_naming(&[format!("127.0.0.1:{}", proxy.port)]),
    ));
    let run = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["sync", "--json", "--db"])
        .arg(&c_path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<Json> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter_map(|j| j.get("progress").cloned())
        .collect();
    assert!(!lines.is_empty(), "progress lines for a sync of seconds");
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["total_bytes"].as_u64(), Some(total_bytes), "{last}");
    assert_eq!(last["pulled_bytes"].as_u64(), Some(total_bytes), "{last}");
    assert_eq!(last["eta_ms"], 0, "{last}");
    assert!(
        lines
            .iter()
            .any(|l| l["done"] == false && l["eta_ms"].as_u64().is_some_and(|e| e > 0)),
        "a time left before the end: {lines:?}"
    );
}
