//! Live mode of `outpost_sync` (`'{"live_seconds": N}'`) between real device databases (the
//! built `liboutpost.so`) and the real `outpost-hub` binary over loopback TCP: a live device
//! applies what another device pushes while it waits, and pushes its own commits made by other
//! connections meanwhile, without holding a write lock; bad values are refused.
//!
//! Against the real `outpost-cloud`: a device live-synced with the cloud applies a WatermelonDB
//! REST push and an operator's write in the tenant database while it waits (the cloud notifies
//! live sessions of its own exported batches, not only of commits made through its relay).
//!
//! The benchmark (`live_propagation_latency`, ignored) measures device A commit → device B sees
//! it, both live, through the hub:
//! `cargo test --release -p outpost-tests --test live_mode -- --ignored --nocapture`.

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, n, DeviceDb};
use outpost_testkit::e2e::figures::{print_live_calls, propagation, summary};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::patients::SCHEMA;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::wait_until;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Two enrolled devices (files `a.db`, `b.db` in `dir`) that have synced once.
fn two_devices(dir: &Path, hub: &Hub) -> (PathBuf, PathBuf) {
    let paths = (dir.join("a.db"), dir.join("b.db"));
    for p in [&paths.0, &paths.1] {
        let d = DeviceDb::patients(p);
        d.enroll(&hub.code());
        d.sync_with("hub");
    }
    (paths.0, paths.1)
}

/// `outpost_sync('hub', '{"live_seconds": seconds}')` on its own thread and connection.
fn live(path: &Path, seconds: u64) -> JoinHandle<rusqlite::Result<serde_json::Value>> {
    device_db::live(path, SCHEMA, "hub", seconds)
}

/// Polls `d` for patient `id` up to `wait`; how long it took to appear.
fn appears(d: &DeviceDb, id: &str, wait: Duration, every: Duration) -> Option<Duration> {
    device_db::appears(d, "patients", id, wait, every)
}

#[test]
fn a_live_device_applies_and_pushes_changes_while_it_stays_connected() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let (a_path, b_path) = two_devices(dir.path(), &hub);
    let a = DeviceDb::patients(&a_path);
    let b = DeviceDb::patients(&b_path);
    let called = Instant::now();
    let a_live = live(&a_path, 5);
    // Let A finish its normal sync and start waiting.
    std::thread::sleep(Duration::from_millis(300));

    // B's change reaches A while A's call is still running.
    b.exec("INSERT INTO patients(id, name, village) VALUES ('from-b', 'Amina', 'Kisumu')");
    let r = b.sync_with("hub");
    let per_row = n(&r, "pushed");
    assert!(per_row >= 1, "{r}");
    let took = appears(
        &a,
        "from-b",
        Duration::from_secs(2),
        Duration::from_millis(10),
    );
    assert!(took.is_some(), "B's row did not reach live A within 2 s");
    assert!(!a_live.is_finished(), "A's live call returned early");

    // A's own commit, from another connection, during A's live session: it does not wait for a
    // lock A holds (a short busy timeout), and it reaches B.
    a.conn.busy_timeout(Duration::from_millis(500)).unwrap();
    let write = Instant::now();
    a.exec("INSERT INTO patients(id, name, village) VALUES ('from-a', 'Baraka', 'Moshi')");
    assert!(
        write.elapsed() < Duration::from_millis(500),
        "the write waited {:?} for A's live call",
        write.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!a_live.is_finished(), "A's live call returned early");
    let r = b.sync_with("hub");
    assert!(
        b.has("patients", "from-a"),
        "A's live call did not push its own commit: {r}"
    );
    assert_eq!(n(&r, "pushed"), 0, "{r}");
    assert_eq!(
        n(&r, "pulled"),
        per_row,
        "A's row came through the hub: {r}"
    );

    let out = a_live.join().unwrap().unwrap();
    let total = called.elapsed();
    assert!(out.get("live_error").is_none(), "{out}");
    assert!(n(&out, "live_ms") >= 4900, "{out}");
    assert!(total < Duration::from_secs(8), "{total:?}");
    assert_eq!(n(&out, "pulled"), per_row, "{out}");
    // B's row is shaped like A's: A applied as many changes as B did for A's row.
    assert_eq!(n(&out, "applied"), n(&r, "applied"), "{out}");
    assert_eq!(n(&out, "pushed"), per_row, "{out}");
    assert!(
        n(&out, "live_sessions") >= 2,
        "a session to push A's commit: {out}"
    );
    assert!(a.conn.is_autocommit());
    // Nothing was left behind: a normal sync moves nothing more.
    let r = a.sync_with("hub");
    assert_eq!((n(&r, "pushed"), n(&r, "pulled")), (0, 0), "{r}");
    assert_eq!(n(&r, "live_ms"), 0, "{r}");
}

#[test]
fn live_seconds_out_of_range_is_refused_with_the_range() {
    let dir = scratch();
    let d = DeviceDb::patients(&dir.path().join("d.db"));
    for bad in ["3601", "-1", "1.5", "\"10\"", "null"] {
        let e = d
            .call::<String>(&format!(
                "SELECT outpost_sync('hub', '{{\"live_seconds\": {bad}}}')"
            ))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("live_seconds must be an integer from 0 to 3600"),
            "{bad}: {e}"
        );
    }
    // In range, the options are accepted: the next complaint is that nothing is enrolled.
    let e = d
        .call::<String>("SELECT outpost_sync('hub', '{\"live_seconds\": 3600}')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not enrolled"), "{e}");
}

#[test]
#[ignore = "benchmark: prints live-mode propagation latency"]
fn live_propagation_latency() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let (a_path, b_path) = two_devices(dir.path(), &hub);
    let a = DeviceDb::patients(&a_path);
    let b = DeviceDb::patients(&b_path);
    let samples = 20;
    let a_live = live(&a_path, 60);
    let b_live = live(&b_path, 60);
    std::thread::sleep(Duration::from_millis(500));
    let ms = propagation(&a, &b, "lat", samples, Duration::from_secs(5), |i| {
        Duration::from_millis(200 + (i * 37) % 250)
    });
    drop(hub);
    let ra = a_live.join().unwrap().unwrap();
    let rb = b_live.join().unwrap().unwrap();
    println!(
        "live propagation A commit -> B sees it (through the hub, both live), {samples} samples: {}",
        summary(&ms)
    );
    print_live_calls(&ra, &rb);
    assert_eq!(n(&ra, "pushed"), n(&rb, "pulled"));
    assert!(n(&rb, "pulled") >= samples);
}

#[test]
fn a_device_live_with_the_cloud_sees_a_rest_push_within_2_s_and_an_operator_write_within_3_s() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let token = cloud.api_token("app");
    let a_path = dir.path().join("a.db");
    let a = DeviceDb::patients(&a_path);
    a.json(&format!("SELECT outpost_enroll('{}')", cloud.device_code()));
    // A first row, so the cloud learns the table from the batch header and creates it.
    a.exec("INSERT INTO patients(id, name, village) VALUES ('seed', 'Asha', 'Moshi')");
    let r = a.json("SELECT outpost_sync('cloud')");
    assert!(n(&r, "pushed") >= 1, "{r}");
    wait_until(
        "the cloud to ingest A's row",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || cloud.count("patients") == 1,
    );

    let a_live = device_db::live(&a_path, SCHEMA, "cloud", 8);
    std::thread::sleep(Duration::from_millis(500));

    // A WatermelonDB client pushes a record: the cloud exports it at once and tells A.
    let (code, pulled) = cloud.rest(&token, "GET", "last_pulled_at=0", None);
    assert_eq!(code, 200, "{pulled}");
    let body = r#"{"patients": {"created": [{"id": "rest-1", "name": "Neema", "village": "Arusha", "visits": 0}], "updated": [], "deleted": []}}"#;
    let (code, answer) = cloud.rest(
        &token,
        "POST",
        &format!("last_pulled_at={}", pulled["timestamp"]),
        Some(body),
    );
    assert_eq!(code, 200, "{answer}");
    let took = appears(
        &a,
        "rest-1",
        Duration::from_secs(2),
        Duration::from_millis(10),
    );
    assert!(
        took.is_some(),
        "the REST push did not reach A (live with the cloud) within 2 s"
    );
    println!("REST push -> live device: {:?}", took.unwrap());

    // An operator writes in the tenant database with the extension: the next round (500 ms)
    // exports it and tells A.
    let op = device_db::open(&cloud.data.join("tenant.db"));
    op.execute_batch(
        "INSERT INTO patients(id, name, village, visits) VALUES ('op-1', 'Juma', 'Tanga', 0)",
    )
    .unwrap();
    drop(op);
    // The export round runs every 500 ms: 3 s leaves room for a loaded machine.
    let took = appears(
        &a,
        "op-1",
        Duration::from_secs(3),
        Duration::from_millis(10),
    );
    assert!(
        took.is_some(),
        "the operator's write did not reach A (live with the cloud) within 3 s"
    );
    println!("operator write -> live device: {:?}", took.unwrap());
    assert!(!a_live.is_finished(), "A's live call returned early");

    let out = a_live.join().unwrap().unwrap();
    assert!(out.get("live_error").is_none(), "{out}");
    assert!(n(&out, "pulled") >= 2, "{out}");
    assert_eq!(n(&out, "pushed"), 0, "{out}");
}
