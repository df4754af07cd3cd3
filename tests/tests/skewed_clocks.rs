//! Issue 18 item 1's acceptance: a device whose clock runs a year behind and one whose clock runs
//! a day ahead edit the same fields while offline, then sync through a real `outpost-cloud` (whose
//! time is trusted), or one through an `outpost-hub` whose time comes from the cloud over its
//! uplink; the edit made later in real time wins on both devices and in the cloud's tenant. Each
//! device learns trusted time at its sync's hello and re-stamps its unsent edits before pushing
//! them (docs/sql-api.md, "Re-stamping after a clock correction"); without that, the device a day
//! ahead would win every field it wrote.
//!
//! The device clocks are set with the extension's test hook (`test_wall_shift_ms` in
//! `_outpost_meta`: per database, so both devices run in this process); the cloud keeps the true
//! time. Builds `outpost-cloud`, `outpost-hub` and `liboutpost.so` in release mode first (the
//! testkit's `built()`).

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::{unix_now, Hub};
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

/// Offline, in this real-time order: p1 is written last by the device a year behind, p2 last by
/// the device a day ahead. Both register each patient (same key), so every field is written on
/// both.
fn edit_offline(behind: &DeviceDb, ahead: &DeviceDb) {
    shift_clock(behind, -YEAR_MS);
    shift_clock(ahead, DAY_MS);
    ahead.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Asha (ahead)', 'Mbeya')");
    later();
    behind.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Asha (behind)', 'Moshi')");
    later();
    behind
        .exec("INSERT INTO patients(id, name, village) VALUES ('p2', 'Baraka (behind)', 'Tanga')");
    later();
    ahead.exec("INSERT INTO patients(id, name, village) VALUES ('p2', 'Baraka (ahead)', 'Lindi')");
}

/// Each device learnt trusted time and re-stamped its two unsent writes.
fn assert_corrected(behind: &DeviceDb, ahead: &DeviceDb) {
    let clock = |d: &DeviceDb| d.json("SELECT outpost_status()")["clock"].clone();
    let (b, a) = (clock(behind), clock(ahead));
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
}

/// The later edit of each patient on every replica.
fn assert_later_edits_win(replicas: &[(&str, &rusqlite::Connection)]) {
    let p1 = ("Asha (behind)".to_string(), "Moshi".to_string());
    let p2 = ("Baraka (ahead)".to_string(), "Lindi".to_string());
    for (name, c) in replicas {
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

#[test]
fn the_later_edit_wins_everywhere_though_one_clock_is_a_year_behind_and_one_a_day_ahead() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let behind = DeviceDb::patients(&dir.path().join("behind.db"));
    let ahead = DeviceDb::patients(&dir.path().join("ahead.db"));
    for d in [&behind, &ahead] {
        assert_eq!(d.enroll(&cloud.code("--device"))["role"], "cloud");
    }
    edit_offline(&behind, &ahead);

    // Each device learns the cloud's time at its hello and re-stamps before pushing.
    for d in [&ahead, &behind, &ahead] {
        let out = d.sync();
        assert_eq!(out["peer"], "cloud", "{out}");
    }
    assert_corrected(&behind, &ahead);
    assert_later_edits_win(&[
        ("the device a year behind", &behind.conn),
        ("the device a day ahead", &ahead.conn),
        ("the cloud's tenant", &cloud.tenant()),
    ]);
}

#[test]
fn the_later_edit_wins_through_a_hub_whose_time_comes_from_the_cloud() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = Hub::start(
        &dir.path().join("hub"),
        &[
            "--no-mdns",
            "--cloud",
            &cloud.code("--hub"),
            "--uplink-min-ms",
            "100",
            "--uplink-max-ms",
            "1000",
        ],
    );
    // A hub's time is trusted once its uplink heard the cloud (a Pi has no battery clock).
    hub.wait_uplink(
        "the hub's clock to be trusted",
        Duration::from_secs(20),
        |u| u["clock_trusted"] == true,
    );
    let behind = DeviceDb::patients(&dir.path().join("behind.db"));
    let ahead = DeviceDb::patients(&dir.path().join("ahead.db"));
    assert_eq!(behind.enroll(&hub.code())["role"], "hub");
    assert_eq!(ahead.enroll(&cloud.code("--device"))["role"], "cloud");
    edit_offline(&behind, &ahead);

    let relayed = |since: u64| {
        hub.wait_uplink("the uplink to relay", Duration::from_secs(20), |u| {
            u["last_success"].as_u64().is_some_and(|t| t > since)
                && u["backlog_seqs"].as_u64() == Some(0)
        })
    };
    assert_eq!(behind.sync()["peer"], "hub");
    assert_eq!(ahead.sync()["peer"], "cloud");
    let t = unix_now();
    relayed(t);
    ahead.sync();
    behind.sync();
    assert_corrected(&behind, &ahead);
    assert_later_edits_win(&[
        ("the device a year behind, behind the hub", &behind.conn),
        ("the device a day ahead, at the cloud", &ahead.conn),
        ("the cloud's tenant", &cloud.tenant()),
    ]);
}

/// Issue 16 item 6: the cloud refuses a push stamped more than a day ahead of its time, and the
/// device re-stamps and pushes again in the same `outpost_sync`. The device runs three days
/// ahead; the hello's check moves it to the cloud's time, but a write of another connection in
/// the second after (which still holds the old clock) goes out three days ahead: the cloud
/// refuses it (nothing stored, counted in its status), the device brings it down to the cloud's
/// time, and the second push is taken.
#[test]
fn the_cloud_refuses_a_write_three_days_ahead_and_the_device_re_stamps_it() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let d = DeviceDb::patients(&dir.path().join("d.db"));
    assert_eq!(d.enroll(&cloud.code("--device"))["role"], "cloud");
    shift_clock(&d, 3 * DAY_MS);
    let app = outpost_testkit::e2e::device_db::open(&d.path);
    app.execute_batch("INSERT INTO patients(id, name, village) VALUES ('p1', 'Neema', 'Mbeya')")
        .unwrap();
    assert_eq!(d.sync()["pushed"], 1);
    // Within the second the app's connection still trusts its old clock.
    app.execute_batch("INSERT INTO patients(id, name, village) VALUES ('p2', 'Juma', 'Iringa')")
        .unwrap();
    let now_ms = unix_now() as i64 * 1000;
    let stamped: i64 = app
        .query_row(
            "SELECT since_ms FROM outpost_pending WHERE pk = '[\"p2\"]'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stamped > now_ms + 2 * DAY_MS,
        "precondition: the app's connection wrote with its old clock (the sync took over a \
         second?): {stamped}"
    );

    let out = d.sync();
    assert_eq!(out["pushed"], 1, "{out}");
    let refusal = d.json("SELECT outpost_status()")["clock"]["last_clock_ahead"].clone();
    assert_eq!(refusal["restamped"], 1, "{refusal}");
    let clocks = cloud.status()["clocks"].clone();
    assert_eq!(clocks["clock_ahead_refused"], 1, "{clocks}");
    // What the cloud admitted is stamped with its own date, not three days on.
    let today = outpost_protocol::hlc::UtcDate(now_ms as u64).to_string();
    assert_eq!(
        clocks["highest_admitted"].as_str().unwrap()[..10],
        today[..10],
        "{clocks}"
    );
    let t0 = std::time::Instant::now();
    while cloud.count("patients") < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the cloud applies both rows"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 16 item 6 at the hub: a hub bounds what devices push only while its time is trusted
/// (its uplink heard the cloud since it started). Without it, a device three days ahead pushes
/// as it is (the one way a far-future clock enters; the hub's status shows that date as the
/// highest admitted); with it, a write three days ahead is refused, counted, and re-stamped by
/// the device.
#[test]
fn a_hub_bounds_device_clocks_only_while_its_time_is_trusted() {
    let dir = scratch();
    let today = outpost_protocol::hlc::UtcDate(unix_now() * 1000).to_string();
    let ahead = outpost_protocol::hlc::UtcDate(unix_now() * 1000 + 3 * DAY_MS as u64).to_string();

    // A hub with no cloud has no trusted time: it cannot judge, and takes the push.
    let alone = Hub::start(&dir.path().join("alone"), &["--no-mdns"]);
    let a = DeviceDb::patients(&dir.path().join("a.db"));
    assert_eq!(a.enroll(&alone.code())["role"], "hub");
    shift_clock(&a, 3 * DAY_MS);
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Neema', 'Mbeya')");
    assert_eq!(a.sync()["pushed"], 1);
    let s = alone.status();
    assert_eq!(s["clock_ahead_refused"], 0, "{s}");
    assert_eq!(
        s["highest_admitted"].as_str().unwrap()[..10],
        ahead[..10],
        "{s}"
    );

    // A hub whose uplink heard the cloud refuses a write three days ahead.
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = Hub::uplinked(&dir.path().join("hub"), &cloud.code("--hub"), 1000, &[]);
    hub.wait_uplink(
        "the hub's clock to be trusted",
        Duration::from_secs(20),
        |u| u["clock_trusted"] == true,
    );
    let d = DeviceDb::patients(&dir.path().join("d.db"));
    assert_eq!(d.enroll(&hub.code())["role"], "hub");
    shift_clock(&d, 3 * DAY_MS);
    let app = outpost_testkit::e2e::device_db::open(&d.path);
    app.execute_batch("INSERT INTO patients(id, name, village) VALUES ('p2', 'Juma', 'Iringa')")
        .unwrap();
    assert_eq!(
        d.sync()["pushed"],
        1,
        "re-stamped at the hello, then pushed"
    );
    // Within the second the app's connection still trusts its old clock.
    app.execute_batch("INSERT INTO patients(id, name, village) VALUES ('p3', 'Zawadi', 'Tanga')")
        .unwrap();
    assert_eq!(d.sync()["pushed"], 1, "refused, re-stamped, pushed again");
    let s = hub.status();
    assert_eq!(s["clock_ahead_refused"], 1, "{s}");
    assert_eq!(
        s["highest_admitted"].as_str().unwrap()[..10],
        today[..10],
        "{s}"
    );
    assert_eq!(s["uplink"]["clock_trusted"], true, "{s}");
}
