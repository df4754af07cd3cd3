//! The `outpost` command against the real `outpost-hub` over loopback TCP, with device databases
//! written through the built `liboutpost.so`:
//! - `outpost watch` while the hub is down backs off (intervals printed and growing), then
//!   syncs every write within one backoff interval after the hub returns: nothing lost, nothing
//!   doubled;
//! - SIGTERM during a long first sync leaves the database consistent (integrity_check ok, rows
//!   and vector advanced together) and the next run resumes where it stopped.
//!
//! The test builds `outpost-hub`, `liboutpost.so` and `outpost` in release mode first.

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::port::free_port;
use outpost_testkit::e2e::process::Group;
use outpost_testkit::e2e::scratch::scratch;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// A device database with table `visits` tracked, enrolled with `hub`.
fn device(path: &Path, hub: &Hub) -> DeviceDb {
    let d = DeviceDb::open(
        path,
        "CREATE TABLE visits(id TEXT PRIMARY KEY, note TEXT);
         SELECT outpost_track('visits');",
    );
    d.enroll(&hub.code());
    d
}

/// A running `outpost` command whose output lines the test waits for (echoed to stderr).
fn outpost(args: &[&str]) -> Group {
    let mut cmd = Command::new(&built().cli);
    cmd.args(args);
    Group::spawn_echoing(cmd, Some("  outpost| "))
}

/// SIGTERM to the `outpost` command; how it exited.
fn term(cli: &mut Group) -> ExitStatus {
    cli.signal(libc::SIGTERM);
    cli.child.wait().unwrap()
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

#[test]
fn watch_backs_off_while_the_hub_is_down_then_syncs_everything_once() {
    let dir = scratch();
    let hub_data = dir.path().join("hub");
    let port = free_port();
    let hub = Hub::start_on(&hub_data, port, &[]);
    let a_path = dir.path().join("a.db");
    let a = device(&a_path, &hub);
    let b_path = dir.path().join("b.db");
    let b = device(&b_path, &hub);
    let a_str = a_path.to_str().unwrap();
    let mut watch = outpost(&[
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
        a.conn
            .execute(
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
    let hub = Hub::start_on(&hub_data, port, &[]);
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
    let status = term(&mut watch);
    assert!(status.success(), "watch exited with {status} on SIGTERM");
    // The other device sees each row once, and a second sync brings nothing new.
    let first = sync_json(&b_path);
    assert_eq!(first["pulled"], 50, "{first}");
    assert_eq!(b.count("visits"), 50);
    let again = sync_json(&b_path);
    assert_eq!(again["pulled"], 0, "{again}");
    assert_eq!(b.count("visits"), 50);
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
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let a_path = dir.path().join("a.db");
    let a = device(&a_path, &hub);
    const ROWS: i64 = 400_000;
    a.exec(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO visits SELECT printf('r%07d', i), printf('%050d', i) FROM n;"
    ));
    let pushed = sync_json(&a_path);
    assert_eq!(pushed["pushed"].as_i64(), Some(ROWS), "{pushed}");
    let b_path = dir.path().join("b.db");
    let b = device(&b_path, &hub);
    let b_str = b_path.to_str().unwrap();
    let mut first = outpost(&["sync", "--json", "--db", b_str]);
    let seen: u64 = first.wait_for(Duration::from_secs(120), |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v["progress"]["changes"].as_u64().filter(|&n| n > 0)
    });
    let status = term(&mut first);
    assert!(!status.success(), "the interrupted sync reports failure");
    let ok: String = b.call("PRAGMA integrity_check").unwrap();
    assert_eq!(ok, "ok");
    let have = b.count("visits");
    assert!(
        have >= seen as i64 && have < ROWS,
        "stopped part-way: {have} rows (progress said {seen})"
    );
    // Rows and the vector advanced together: every covered seq of A is a row here, no more.
    let covered: i64 = b
        .call("SELECT max(covered) FROM _outpost_vector WHERE site <> outpost_site_id()")
        .unwrap();
    assert_eq!(covered, have, "vector and rows disagree after the stop");
    let resumed = sync_json(&b_path);
    assert_eq!(
        resumed["pulled"].as_i64(),
        Some(ROWS - have),
        "the next run pulls only what is missing: {resumed}"
    );
    assert_eq!(b.count("visits"), ROWS);
}
