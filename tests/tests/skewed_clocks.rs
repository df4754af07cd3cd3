//! Issue 18 item 1's acceptance: a device whose clock runs a year behind and one whose clock runs
//! a day ahead edit the same fields while offline, then sync through a real `outpost-cloud` (whose
//! time is trusted); the edit made later in real time wins on both devices and in the cloud's
//! tenant. Each device learns the cloud's time at its sync's hello and re-stamps its unsent edits
//! before pushing them (docs/sql-api.md, `outpost_status`, "Re-stamping"); without that, the
//! device a day ahead would win every field it wrote.
//!
//! The device clocks are set with the extension's test hook (`test_wall_shift_ms` in
//! `_outpost_meta`: per database, so both devices run in this process); the cloud keeps the true
//! time. Builds `outpost-cloud` and `liboutpost.so` in release mode first (the testkit's
//! `built()`).

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::scratch::scratch;
use std::time::Duration;

const YEAR_MS: i64 = 365 * 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Sets `d`'s wall clock to the true time shifted by `ms`.
fn shift_clock(d: &DeviceDb, ms: i64) {
    d.exec(&format!(
        "INSERT INTO _outpost_meta(k, v) VALUES ('test_wall_shift_ms', {ms}) \
         ON CONFLICT(k) DO UPDATE SET v = excluded.v"
    ));
    // A connection reads the shift within a second of wall time, as it reads the skew offset.
    std::thread::sleep(Duration::from_millis(1100));
}

/// `(name, village)` of patient `id`.
fn patient(c: &rusqlite::Connection, id: &str) -> (String, String) {
    c.query_row(
        "SELECT name, village FROM patients WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap_or_else(|e| panic!("patient {id}: {e}"))
}

/// Lets real time pass between two edits (far more than the check's error, the loopback's
/// round trip).
fn later() {
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn the_later_edit_wins_everywhere_though_one_clock_is_a_year_behind_and_one_a_day_ahead() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let behind = DeviceDb::patients(&dir.path().join("behind.db"));
    let ahead = DeviceDb::patients(&dir.path().join("ahead.db"));
    for d in [&behind, &ahead] {
        assert_eq!(d.enroll(&cloud.code("--device"))["role"], "cloud");
    }
    shift_clock(&behind, -YEAR_MS);
    shift_clock(&ahead, DAY_MS);

    // Offline, in this real-time order: p1 is edited last by the device a year behind, p2 last by
    // the device a day ahead. Both register each patient (same key), so every field is edited
    // on both.
    ahead.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Asha (ahead)', 'Mbeya')");
    later();
    behind.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Asha (behind)', 'Moshi')");
    later();
    behind
        .exec("INSERT INTO patients(id, name, village) VALUES ('p2', 'Baraka (behind)', 'Tanga')");
    later();
    ahead.exec("INSERT INTO patients(id, name, village) VALUES ('p2', 'Baraka (ahead)', 'Lindi')");

    // Each device learns the cloud's time at its hello and re-stamps before pushing.
    for d in [&ahead, &behind, &ahead] {
        let out = d.sync();
        assert_eq!(out["peer"], "cloud", "{out}");
    }
    let clock = |d: &DeviceDb| d.json("SELECT outpost_status()")["clock"].clone();
    let (b, a) = (clock(&behind), clock(&ahead));
    assert!(
        (b["offset_ms"].as_i64().unwrap() - YEAR_MS).abs() < 60_000,
        "{b}"
    );
    assert!(
        (a["offset_ms"].as_i64().unwrap() + DAY_MS).abs() < 60_000,
        "{a}"
    );
    assert_eq!(b["restamped"], 2, "{b}");
    assert_eq!(a["restamped"], 2, "{a}");

    let p1 = ("Asha (behind)".to_string(), "Moshi".to_string());
    let p2 = ("Baraka (ahead)".to_string(), "Lindi".to_string());
    let tenant = cloud.tenant();
    for (name, c) in [
        ("the device a year behind", &behind.conn),
        ("the device a day ahead", &ahead.conn),
        ("the cloud's tenant", &tenant),
    ] {
        assert_eq!(
            patient(c, "p1"),
            p1,
            "{name}: p1 was edited last by the device behind"
        );
        assert_eq!(
            patient(c, "p2"),
            p2,
            "{name}: p2 was edited last by the device ahead"
        );
    }
}
