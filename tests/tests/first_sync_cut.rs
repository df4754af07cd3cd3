//! A new device's first sync of ~40 chunks (applied by `outpost_sync` in groups of 16 per
//! transaction) through the real `outpost-hub`, cut by a proxy at points spread over the pull:
//! each cut leaves the database at a group boundary (whole groups committed with their vector,
//! the kept chunks dropped), and the retry pulls exactly what was not committed: nothing lost,
//! nothing applied twice.

use rusqlite::Connection;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod built;
use built::{built, free_port, scratch, Proxy};

const ROWS: i64 = 20_000;

struct Hub {
    child: Child,
    data: PathBuf,
    port: u16,
}

impl Hub {
    fn start(data: &Path) -> Hub {
        std::fs::create_dir_all(data).unwrap();
        let port = free_port();
        let child = Command::new(&built().hub)
            .args(["run", "--data"])
            .arg(data)
            .args(["--net", &format!("std:127.0.0.1:{port}"), "--no-mdns"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "hub did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Hub {
            child,
            data: data.to_path_buf(),
            port,
        }
    }

    /// A fresh enrollment code naming `address`.
    fn code(&self, address: &str) -> String {
        let out = Command::new(&built().hub)
            .args(["enroll-code", "--no-qr", "--data"])
            .arg(&self.data)
            .args(["--address", address])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .find(|w| w.starts_with("outpost:"))
            .expect("an outpost: code")
            .to_string()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn device(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    // SAFETY: loading the extension built from this workspace.
    unsafe {
        conn.load_extension_enable().unwrap();
        conn.load_extension(&built().ext, Some("sqlite3_outpost_init"))
            .unwrap();
        conn.load_extension_disable().unwrap();
    }
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT);
         SELECT outpost_track('notes');",
    )
    .unwrap();
    conn
}

fn call(c: &Connection, sql: &str) -> Result<serde_json::Value, String> {
    c.query_row(sql, [], |r| r.get::<_, String>(0))
        .map(|j| serde_json::from_str(&j).unwrap())
        .map_err(|e| e.to_string())
}

/// What the device covers of `origin` (hex site id), from `outpost_vector()`.
fn covered(c: &Connection, origin: &str) -> u64 {
    call(c, "SELECT outpost_vector()").unwrap()[origin]
        .as_u64()
        .unwrap_or(0)
}

fn count(c: &Connection) -> i64 {
    c.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_first_sync_cut_mid_pull_keeps_whole_groups_and_the_retry_pulls_the_rest_once() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"));
    let proxy = Proxy::start(hub.port);
    let via = format!("127.0.0.1:{}", proxy.port);
    // The source: ~20 MB in ~40 chunks of 512 KiB.
    let src = device(&dir.path().join("src.db"));
    src.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO notes SELECT printf('n%06d', i), hex(randomblob(500)) FROM n;
         COMMIT;"
    ))
    .unwrap();
    call(
        &src,
        &format!("SELECT outpost_enroll('{}')", hub.code(&via)),
    )
    .unwrap();
    let pushed = call(&src, "SELECT outpost_sync()").unwrap();
    assert_eq!(pushed["pushed"].as_u64(), Some(ROWS as u64), "{pushed}");
    let origin: String = src
        .query_row("SELECT hex(outpost_site_id())", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
        .to_lowercase();

    // A whole first sync through the proxy: its size.
    let full = device(&dir.path().join("full.db"));
    call(
        &full,
        &format!("SELECT outpost_enroll('{}')", hub.code(&via)),
    )
    .unwrap();
    let r = call(&full, "SELECT outpost_sync()").unwrap();
    let total = *proxy.forwarded.lock().unwrap();
    let chunks = r["batches_pulled"].as_u64().unwrap();
    assert!(chunks > 32, "more than two groups of 16: {r}");
    assert_eq!(count(&full), ROWS);

    let mut committed_mid_pull = 0;
    for pct in [5, 30, 45, 60, 75, 90, 99] {
        let d = device(&dir.path().join(format!("d{pct}.db")));
        call(&d, &format!("SELECT outpost_enroll('{}')", hub.code(&via))).unwrap();
        proxy.budget.store(total * pct / 100, Ordering::SeqCst);
        let cut = call(&d, "SELECT outpost_sync()");
        proxy.budget.store(usize::MAX, Ordering::SeqCst);
        assert!(cut.is_err(), "{pct}%: the cut sync failed: {cut:?}");
        let ok: String = d
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        assert!(d.is_autocommit(), "left inside a transaction");
        // Whole groups only: the rows held are exactly what the vector covers.
        let have = covered(&d, &origin);
        assert_eq!(count(&d) as u64, have, "{pct}%");
        if have > 0 {
            committed_mid_pull += 1;
        }
        println!("cut at {pct}% of {total} bytes: {have} of {ROWS} rows committed");
        let r = call(&d, "SELECT outpost_sync()").unwrap_or_else(|e| panic!("{pct}%: {e}"));
        assert_eq!(
            r["pulled"].as_u64(),
            Some(ROWS as u64 - have),
            "{pct}%: the retry pulls what was not committed, once: {r}"
        );
        assert_eq!(count(&d), ROWS, "{pct}%");
        assert_eq!(covered(&d, &origin), ROWS as u64, "{pct}%");
        assert_eq!(r["quarantined"].as_u64(), Some(0));
    }
    assert!(
        committed_mid_pull >= 3,
        "groups commit during the pull, not only at its end"
    );
}
