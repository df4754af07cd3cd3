//! Re-stamping after a clock correction (issue 18 item 1; the rule in docs/sql-api.md under that
//! heading): when a trusted peer's hello moves this device's skew offset, the
//! changes that never left the device get the clocks the corrected clock would have given them,
//! in their order, before the push; what left (a push, or a manual `outpost_changes`) and what was
//! received keep theirs; a failure half-way changes nothing.
//!
//! Against the scripted hub of `common/scripted_hub.rs` (the real protocol on loopback, stating
//! the true time), with the device clocks set through the test hook (`test_wall_shift_ms` in
//! `_outpost_meta`, `clock.rs`). The clocks are read from what the hub was pushed, decoded with
//! `outpost_batch_json`, and from `outpost_pending` (neither of which counts as sending). The
//! crash test kills a second process of this test binary in the middle of a re-stamp.

mod common;
use common::clinic;
use common::scripted_hub::{now_ms, Hub};
use common::Replica;
use std::collections::HashMap;

const YEAR_MS: i64 = 365 * 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// How far from the expected time a clock may be (the test's own run time, with room).
const SLACK_MS: i64 = 60_000;

/// Sets `r`'s wall clock to the true time shifted by `ms` (the test hook).
fn shift_clock(r: &Replica, ms: i64) {
    r.exec(&format!(
        "INSERT INTO _outpost_meta(k, v) VALUES ('test_wall_shift_ms', {ms}) \
         ON CONFLICT(k) DO UPDATE SET v = excluded.v"
    ));
    // A connection reads the shift within a second of wall time, as it reads the skew offset.
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

fn status(r: &Replica) -> serde_json::Value {
    serde_json::from_str(&r.one::<String>("SELECT outpost_status()")).unwrap()
}

/// `"ms.counter"` (as `outpost_batch_json` writes a clock) as the 64-bit clock.
fn hlc(text: &str) -> u64 {
    let (ms, counter) = text.split_once('.').unwrap();
    ms.parse::<u64>().unwrap() << 16 | counter.parse::<u64>().unwrap()
}

fn millis(hlc: u64) -> i64 {
    (hlc >> 16) as i64
}

/// The clocks of the cells in `batches`, by (first key value, column); a later batch's cell
/// replaces an earlier one's. `r` only decodes.
fn clocks(r: &Replica, batches: &[Vec<u8>]) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    for b in batches {
        let json: String = r
            .conn
            .query_row("SELECT outpost_batch_json(?1)", [b], |row| row.get(0))
            .unwrap();
        let batch: serde_json::Value = serde_json::from_str(&json).unwrap();
        for table in batch["body"].as_array().unwrap() {
            for row in table["rows"].as_array().unwrap() {
                let id = row["key"][0].as_str().unwrap().to_string();
                for cell in row["cells"].as_array().unwrap() {
                    let column = cell["column"].as_str().unwrap().to_string();
                    out.insert((id.clone(), column), hlc(cell["hlc"].as_str().unwrap()));
                }
            }
        }
    }
    out
}

fn at(c: &HashMap<(String, String), u64>, id: &str, column: &str) -> u64 {
    *c.get(&(id.to_string(), column.to_string()))
        .unwrap_or_else(|| panic!("no cell {id}.{column} in {c:?}"))
}

/// The oldest unacknowledged change of a patient row (`outpost_pending.since_ms`).
fn pending_since(r: &Replica, id: &str) -> i64 {
    r.one(&format!(
        "SELECT since_ms FROM outpost_pending WHERE tbl = 'patients' AND pk = '[\"{id}\"]'"
    ))
}

#[test]
fn a_device_a_year_behind_moves_its_unsent_changes_a_year_on_in_their_order() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    shift_clock(&a, -YEAR_MS);

    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Asha', 'Mbeya')");
    // Exported by hand: the app may have shipped it, so it has left and keeps its clock.
    let shipped = a.changes(0, None).expect("a batch");
    let left = clocks(&a, &[shipped]);
    let village = at(&left, "p1", "village");
    assert!((millis(village) - (now_ms() as i64 - YEAR_MS)).abs() < SLACK_MS);

    // Written offline with the wrong clock, in this order, counter and review cells included.
    a.exec("INSERT INTO patients(id, name, village, allergies) VALUES ('p2', 'Baraka', 'Moshi', 'none')");
    a.exec("UPDATE patients SET visits = visits + 1 WHERE id = 'p2'");
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p3', 'Chausiku', 'Tanga')");
    a.exec("UPDATE patients SET name = 'Asha K.' WHERE id = 'p1'");
    let before = pending_since(&a, "p3");
    assert!((before - (now_ms() as i64 - YEAR_MS)).abs() < SLACK_MS);

    let out = hub.sync(&a);
    assert_eq!(out["pushed"], 5, "{out}");
    let clock = status(&a)["clock"].clone();
    assert!(
        (clock["offset_ms"].as_i64().unwrap() - YEAR_MS).abs() < SLACK_MS,
        "{clock}"
    );
    assert_eq!(clock["restamped"], 4, "four writes had not left: {clock}");
    assert_eq!(clock["test_wall_shift_ms"], -YEAR_MS, "{clock}");

    let pushed = clocks(&a, &hub.pushed());
    let now = now_ms() as i64;
    // What left by hand kept its clock.
    assert_eq!(at(&pushed, "p1", "village"), village);
    // The rest moved a year on (to the peer's time), in the order written, every kind of cell
    // of a write alike.
    let p2 = at(&pushed, "p2", "name");
    assert!((millis(p2) - now).abs() < SLACK_MS, "{p2} vs {now}");
    assert_eq!(at(&pushed, "p2", "allergies"), p2, "the review cell");
    let visits = at(&pushed, "p2", "visits");
    let p3 = at(&pushed, "p3", "name");
    let p1 = at(&pushed, "p1", "name");
    assert!(
        p2 < visits && visits < p3 && p3 < p1,
        "{p2} {visits} {p3} {p1}"
    );
    assert!(p1 > village);
    // The counter and the review value went out with their cells (found by their new clocks).
    let b = clinic("b");
    hub.enroll(&b);
    hub.sync(&b);
    assert_eq!(
        b.rows("SELECT id, name, visits, allergies FROM patients ORDER BY id"),
        a.rows("SELECT id, name, visits, allergies FROM patients ORDER BY id")
    );
    assert_eq!(
        b.one::<i64>("SELECT visits FROM patients WHERE id = 'p2'"),
        1
    );
}

#[test]
fn a_device_a_day_ahead_moves_its_unsent_changes_back_and_writes_on_from_there() {
    let hub = Hub::start();
    let d = clinic("d");
    hub.enroll(&d);
    shift_clock(&d, DAY_MS);
    d.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Daudi', 'Arusha')");
    assert!((pending_since(&d, "p1") - (now_ms() as i64 + DAY_MS)).abs() < SLACK_MS);

    hub.sync(&d);
    let pushed = clocks(&d, &hub.pushed());
    let now = now_ms() as i64;
    assert!((millis(at(&pushed, "p1", "name")) - now).abs() < SLACK_MS);
    assert_eq!(status(&d)["clock"]["restamped"], 1);

    // The stored clock went back with them: a new write takes the corrected time, not the day
    // ahead its last write had.
    d.exec("UPDATE patients SET village = 'Moshi' WHERE id = 'p1'");
    let since = pending_since(&d, "p1");
    assert!((since - now_ms() as i64).abs() < SLACK_MS, "{since}");
    assert!(since as u64 >= millis(at(&pushed, "p1", "name")) as u64);
}

#[test]
fn a_re_stamp_keeps_an_edit_above_the_received_version_it_replaced() {
    let hub = Hub::start();
    let (c, d) = (clinic("c"), clinic("d"));
    hub.enroll(&c);
    hub.enroll(&d);
    // c runs two days ahead and syncs while the hub has no trusted time: its clock goes out.
    hub.set_clock_shift(None);
    shift_clock(&c, 2 * DAY_MS);
    c.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Eliya', 'Dodoma')");
    hub.sync(&c);
    let received = at(&clocks(&c, &hub.pushed()), "p1", "name");

    // d, a day ahead, receives it and edits it: its edit is ordered after what it replaced.
    shift_clock(&d, DAY_MS);
    hub.sync(&d);
    d.exec("UPDATE patients SET name = 'Eliya M.' WHERE id = 'p1'");

    // Trusted time: d moves its unsent edit back a day, but not below the version it replaced,
    // or c would keep its own name while d shows the edit.
    hub.set_clock_shift(Some(0));
    hub.sync(&d);
    assert_eq!(status(&d)["clock"]["restamped"], 1);
    let edit = at(&clocks(&d, &hub.pushed()), "p1", "name");
    assert!(edit > received, "{edit} must stay above {received}");
    hub.sync(&c);
    let name = "SELECT name FROM patients WHERE id = 'p1'";
    assert_eq!(c.one::<String>(name), "Eliya M.");
    assert_eq!(d.one::<String>(name), "Eliya M.");
}

#[test]
fn a_re_stamp_that_fails_half_way_changes_nothing() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    shift_clock(&a, -YEAR_MS);
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Faraji', 'Lindi')");
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p2', 'Gift', 'Mtwara')");
    let before = (pending_since(&a, "p1"), pending_since(&a, "p2"));

    // The re-stamp's last write fails, after every row was rewritten: as a crash there would,
    // the transaction is rolled back (SQLite undoes an interrupted one from its journal).
    a.exec(
        "CREATE TRIGGER crash BEFORE INSERT ON _outpost_meta WHEN NEW.k = 'clock_epoch' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    );
    let e = hub.try_sync(&a).expect_err("the check fails");
    assert!(e.contains("injected failure"), "{e}");
    assert!(
        hub.pushed().is_empty(),
        "nothing is pushed after a failed check"
    );
    assert_eq!(status(&a)["clock"]["offset_ms"], serde_json::Value::Null);
    assert_eq!(
        (pending_since(&a, "p1"), pending_since(&a, "p2")),
        before,
        "the clocks are as they were"
    );
    assert_eq!(a.one::<String>("PRAGMA integrity_check"), "ok");

    // Once it can run, it runs whole.
    a.exec("DROP TRIGGER crash");
    hub.sync(&a);
    let pushed = clocks(&a, &hub.pushed());
    let now = now_ms() as i64;
    assert!((millis(at(&pushed, "p1", "name")) - now).abs() < SLACK_MS);
    assert!(at(&pushed, "p1", "name") < at(&pushed, "p2", "name"));
}

/// Set in the child process of the crash test: the database it syncs.
const CRASH_CHILD: &str = "OUTPOST_RESTAMP_CRASH_CHILD";

#[test]
fn a_process_killed_in_the_middle_of_a_re_stamp_leaves_the_changes_as_they_were() {
    if let Ok(path) = std::env::var(CRASH_CHILD) {
        // The child: a device process syncing, to be killed inside the re-stamp.
        let conn = rusqlite::Connection::open(path).unwrap();
        common::load(&conn);
        let r = conn.query_row(
            "SELECT outpost_sync('hub', '{\"timeout_ms\": 600000}')",
            [],
            |row| row.get::<_, String>(0),
        );
        panic!("the child was to be killed before its sync ended: {r:?}");
    }
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    shift_clock(&a, -YEAR_MS);
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Faraji', 'Lindi')");
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p2', 'Gift', 'Mtwara')");
    let before = (pending_since(&a, "p1"), pending_since(&a, "p2"));
    // The re-stamp's last write (after every row was rewritten) spins until the process dies.
    a.exec(
        "CREATE TRIGGER spin BEFORE INSERT ON _outpost_meta WHEN NEW.k = 'clock_epoch' BEGIN \
         SELECT count(*) FROM (WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r \
         WHERE i < 1000000000000) SELECT i FROM r); END",
    );

    let path = a.conn.path().unwrap().to_string();
    hub.serve_sync();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_process_killed_in_the_middle_of_a_re_stamp_leaves_the_changes_as_they_were",
            "--nocapture",
        ])
        .env(CRASH_CHILD, &path)
        .spawn()
        .unwrap();
    // The re-stamp holds the write lock: once it has held it for half a second, the child is in
    // the trigger (the counter bump before the handshake takes a moment only).
    let probe = rusqlite::Connection::open(&path).unwrap();
    probe.busy_timeout(std::time::Duration::ZERO).unwrap();
    let started = std::time::Instant::now();
    let mut busy_since: Option<std::time::Instant> = None;
    loop {
        assert!(
            started.elapsed().as_secs() < 120,
            "the child never held the write lock"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child ended");
        match probe.execute_batch("BEGIN IMMEDIATE; ROLLBACK") {
            Ok(()) => busy_since = None,
            Err(_) => {
                let since = *busy_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed().as_millis() >= 500 {
                    break;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no rollback by the child, SQLite's recovery only
    child.wait().unwrap();
    hub.served();

    assert!(hub.pushed().is_empty(), "nothing was pushed");
    assert_eq!(status(&a)["clock"]["offset_ms"], serde_json::Value::Null);
    assert_eq!(
        (pending_since(&a, "p1"), pending_since(&a, "p2")),
        before,
        "the clocks are as they were"
    );
    assert_eq!(a.one::<String>("PRAGMA integrity_check"), "ok");

    a.exec("DROP TRIGGER spin");
    hub.sync(&a);
    assert_eq!(status(&a)["clock"]["restamped"], 2);
    let pushed = clocks(&a, &hub.pushed());
    assert!((millis(at(&pushed, "p1", "name")) - now_ms() as i64).abs() < SLACK_MS);
}
