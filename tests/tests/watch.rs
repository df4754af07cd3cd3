//! The `outpost` command against the real `outpost-hub` over loopback TCP, with device databases
//! written through the built `liboutpost.so`:
//! - `outpost watch` while the hub is down backs off (intervals printed and growing), then
//!   syncs every write within one backoff interval after the hub returns: nothing lost, nothing
//!   doubled;
//! - SIGTERM during a long first sync leaves the database consistent (integrity_check ok, rows
//!   and vector advanced together) and the next run resumes where it stopped.
//!
//! The test builds `outpost-hub`, `liboutpost.so` and `outpost` in release mode first.

use rusqlite::Connection;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod built;
use built::{built, free_port, scratch};

/// `outpost-hub run` on loopback, killed on drop.
struct Hub {
    child: Child,
}

impl Hub {
    fn start(data: &Path, port: u16) -> Hub {
        std::fs::create_dir_all(data).unwrap();
        let child = Command::new(&built().hub)
            .args(["run", "--data"])
            .arg(data)
            .args(["--net", &format!("std:127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "hub did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Hub { child }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn code(data: &Path, port: u16) -> String {
    let out = Command::new(&built().hub)
        .args(["enroll-code", "--no-qr", "--data"])
        .arg(data)
        .args(["--address", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("outpost:"))
        .unwrap()
        .to_string()
}

/// A device database with the extension loaded, table `visits` tracked, enrolled.
fn device(path: &Path, hub_data: &Path, port: u16) -> Connection {
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
         CREATE TABLE visits(id TEXT PRIMARY KEY, note TEXT);
         SELECT outpost_track('visits');",
    )
    .unwrap();
    let c = code(hub_data, port);
    conn.query_row("SELECT outpost_enroll(?1)", [c], |_| Ok(()))
        .unwrap();
    conn
}

/// A running `outpost` child whose output lines arrive on a channel; SIGKILLed on drop.
struct Cli {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Cli {
    fn spawn(args: &[&str]) -> Cli {
        let mut child = Command::new(&built().cli)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("  outpost| {line}");
                    let _ = tx.send(line);
                }
            });
        }
        Cli { child, lines }
    }

    /// The next line for which `f` returns something, within `wait`.
    fn wait_for<T>(&self, wait: Duration, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return v;
                    }
                }
                Err(_) => panic!("no expected line from outpost within {wait:?}"),
            }
        }
    }

    fn term(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sync_json(db: &Path) -> serde_json::Value {
    let out = Command::new(&built().cli)
        .args(["sync", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "outpost sync: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    serde_json::from_str(last).unwrap()
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM visits", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn watch_backs_off_while_the_hub_is_down_then_syncs_everything_once() {
    let dir = scratch();
    let hub_data = dir.path().join("hub");
    let port = free_port();
    let hub = Hub::start(&hub_data, port);
    let a_path = dir.path().join("a.db");
    let a = device(&a_path, &hub_data, port);
    let b_path = dir.path().join("b.db");
    let b = device(&b_path, &hub_data, port);
    let a_str = a_path.to_str().unwrap();
    let mut watch = Cli::spawn(&[
        "watch",
        "--db",
        a_str,
        "--interval-s",
        "3600",
        "--debounce-ms",
        "100",
        "--backoff-min-ms",
        "300",
        "--backoff-max-ms",
        "5000",
        "--timeout-ms",
        "2000",
    ]);
    watch.wait_for(Duration::from_secs(20), |l| {
        l.starts_with("synced with").then_some(())
    });
    drop(hub);
    for i in 0..50 {
        a.execute(
            "INSERT INTO visits VALUES (?1, 'written while the hub was down')",
            [format!("v{i:03}")],
        )
        .unwrap();
    }
    let mut intervals = Vec::new();
    while intervals.len() < 4 {
        let ms: u64 = watch.wait_for(Duration::from_secs(30), |l| {
            l.strip_prefix("sync failed: ")?
                .rsplit_once("; retrying in ")?
                .1
                .strip_suffix(" ms")?
                .parse()
                .ok()
        });
        intervals.push(ms);
    }
    assert!(
        intervals.windows(2).all(|w| w[1] > w[0]),
        "backoff intervals do not grow: {intervals:?}"
    );
    assert!(intervals[0] >= 300 && intervals.iter().all(|&i| i <= 5000));
    let hub = Hub::start(&hub_data, port);
    let back = Instant::now();
    // The retry pending when the hub returned is at most the next interval away; the worker may
    // print one more failure if its attempt raced the restart, then must succeed at the next.
    let mut bound = *intervals.last().unwrap();
    let pushed: u64 = watch.wait_for(Duration::from_secs(30), |l| {
        if let Some(ms) = l
            .rsplit_once("; retrying in ")
            .and_then(|(_, r)| r.strip_suffix(" ms")?.parse::<u64>().ok())
        {
            bound = bound.max(ms);
        }
        let rest = l.strip_prefix("synced with")?;
        rest.split("pushed ")
            .nth(1)?
            .split(',')
            .next()?
            .parse()
            .ok()
    });
    let took = back.elapsed();
    assert!(
        took <= Duration::from_millis(bound + 2000),
        "synced {took:?} after the hub returned; the backoff interval was {bound} ms"
    );
    assert_eq!(pushed, 50, "every write made while the hub was down, once");
    let status = watch.term();
    assert!(status.success(), "watch exited with {status} on SIGTERM");
    // The other device sees each row once, and a second sync brings nothing new.
    let first = sync_json(&b_path);
    assert_eq!(first["pulled"], 50, "{first}");
    assert_eq!(count(&b), 50);
    let again = sync_json(&b_path);
    assert_eq!(again["pulled"], 0, "{again}");
    assert_eq!(count(&b), 50);
    let st = Command::new(&built().cli)
        .args(["status", "--json", "--db", a_str])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["pending_changes"], 0, "{st}");
    assert_eq!(st["last_error"]["since_last_sync"], false, "{st}");
    drop(hub);
}

#[test]
fn sigterm_during_a_long_first_sync_keeps_the_database_consistent_and_the_next_run_resumes() {
    let dir = scratch();
    let hub_data = dir.path().join("hub");
    let port = free_port();
    let _hub = Hub::start(&hub_data, port);
    let a_path = dir.path().join("a.db");
    let a = device(&a_path, &hub_data, port);
    const ROWS: i64 = 400_000;
    a.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO visits SELECT printf('r%07d', i), printf('%050d', i) FROM n;"
    ))
    .unwrap();
    let pushed = sync_json(&a_path);
    assert_eq!(pushed["pushed"].as_i64(), Some(ROWS), "{pushed}");
    let b_path = dir.path().join("b.db");
    let b = device(&b_path, &hub_data, port);
    let b_str = b_path.to_str().unwrap();
    let mut first = Cli::spawn(&["sync", "--json", "--db", b_str]);
    let seen: u64 = first.wait_for(Duration::from_secs(120), |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v["progress"]["changes"].as_u64().filter(|&n| n > 0)
    });
    let status = first.term();
    assert!(!status.success(), "the interrupted sync reports failure");
    let ok: String = b
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let have = count(&b);
    assert!(
        have >= seen as i64 && have < ROWS,
        "stopped part-way: {have} rows (progress said {seen})"
    );
    // Rows and the vector advanced together: every covered seq of A is a row here, no more.
    let covered: i64 = b
        .query_row(
            "SELECT max(covered) FROM _outpost_vector WHERE site <> outpost_site_id()",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(covered, have, "vector and rows disagree after the stop");
    let resumed = sync_json(&b_path);
    assert_eq!(
        resumed["pulled"].as_i64(),
        Some(ROWS - have),
        "the next run pulls only what is missing: {resumed}"
    );
    assert_eq!(count(&b), ROWS);
}
