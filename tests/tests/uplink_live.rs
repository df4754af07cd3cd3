//! The hub's uplink in live mode, against the real cloud: release-built `outpost-hub run --cloud`
//! and `outpost-cloud run` processes on loopback, device databases with the built
//! `liboutpost.so` in `outpost_sync` live mode (a clinic tablet with the hub, a field device with
//! the cloud).
//!
//! - each way, an edit reaches the other live device within a few seconds (the uplink pulls on
//!   the cloud's `Notify` and notifies the hub's live devices; a tablet's commit ends the
//!   uplink's live wait and the next session pushes it);
//! - the cloud stopped (SIGSTOP: the link stays open, nothing answers), then killed (SIGKILL)
//!   while the uplink is live: the hub notices, backs off, relays what both sides wrote meanwhile
//!   when the cloud returns, and every replica ends with the same rows, nothing lost or doubled.

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{appears, live, DeviceDb};
use outpost_testkit::e2e::hub::{unix_now, Hub};
use outpost_testkit::e2e::mailbox_check::check_mailbox;
use outpost_testkit::e2e::patients::SCHEMA;
use outpost_testkit::e2e::scratch::scratch;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long an edit may take to reach the other live device (the feature: ~0.1-0.4 s here).
const PROPAGATION: Duration = Duration::from_secs(3);

/// `outpost-hub run --cloud CODE` (live uplink by default) with `extra` arguments.
fn uplinked_hub(data: &std::path::Path, cloud_code: &str, extra: &[&str]) -> Hub {
    let mut args = vec![
        "--no-mdns",
        "--cloud",
        cloud_code,
        "--uplink-min-ms",
        "200",
        "--uplink-max-ms",
        "2000",
    ];
    args.extend_from_slice(extra);
    Hub::start(data, &args)
}

/// A cloud, a hub uplinked to it, a tablet enrolled with the hub and a field device with the
/// cloud, both holding the table after a first exchange (plain syncs).
struct Setup {
    _dir: tempfile::TempDir,
    cloud: Cloud,
    hub: Hub,
    tablet_path: PathBuf,
    field_path: PathBuf,
    tablet: DeviceDb,
    field: DeviceDb,
}

fn setup(hub_args: &[&str]) -> Setup {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = uplinked_hub(&dir.path().join("hub"), &cloud.code("--hub"), hub_args);
    let (tablet_path, field_path) = (dir.path().join("tablet.db"), dir.path().join("field.db"));
    let tablet = DeviceDb::patients(&tablet_path);
    assert_eq!(tablet.enroll(&hub.code())["role"], "hub");
    let field = DeviceDb::patients(&field_path);
    assert_eq!(field.enroll(&cloud.code("--device"))["role"], "cloud");
    tablet.exec("INSERT INTO patients(id, name) VALUES ('first-t', 'n')");
    field.exec("INSERT INTO patients(id, name) VALUES ('first-f', 'n')");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(tablet.has("patients", "first-f") && field.has("patients", "first-t")) {
        assert!(
            Instant::now() < deadline,
            "no first exchange within 60 s; hub log:\n{}",
            hub.log()
        );
        tablet.sync_with("hub");
        field.sync_with("cloud");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The uplink's round after that exchange went live (unless live mode is off).
    let off = hub_args
        .windows(2)
        .any(|w| w == ["--uplink-live-seconds", "0"]);
    hub.wait_uplink("the uplink connected", Duration::from_secs(20), |u| {
        u["state"] == "connected" && (off || u["live_since"].as_u64().is_some())
    });
    Setup {
        _dir: dir,
        cloud,
        hub,
        tablet_path,
        field_path,
        tablet,
        field,
    }
}

#[test]
fn edits_cross_a_live_uplink_within_seconds_both_ways() {
    let s = setup(&[]);
    let tablet_live = live(&s.tablet_path, SCHEMA, "hub", 60);
    let field_live = live(&s.field_path, SCHEMA, "cloud", 60);
    std::thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for i in 0..3 {
        for (from, to, tag) in [(&s.field, &s.tablet, "down"), (&s.tablet, &s.field, "up")] {
            let id = format!("{tag}{i}");
            from.exec(&format!(
                "INSERT INTO patients(id, name, village) VALUES ('{id}', 'n', 'v')"
            ));
            let t = appears(to, "patients", &id, PROPAGATION, Duration::from_millis(5))
                .unwrap_or_else(|| {
                    panic!(
                        "{id} did not cross within {PROPAGATION:?}; hub log:\n{}",
                        s.hub.log()
                    )
                });
            took.push(format!("{id} {} ms", t.as_millis()));
            std::thread::sleep(Duration::from_millis(200 + i * 150));
        }
    }
    println!("propagation: {}", took.join(", "));
    println!(
        "uplink rounds logged: {}",
        s.hub.log().matches("uplink: synced with the cloud").count()
    );
    let u = s.hub.status()["uplink"].clone();
    assert_eq!(u["state"], "connected", "{u}");
    assert!(u["live_since"].as_u64().is_some(), "{u}");
    drop(s.hub);
    drop(s.cloud);
    let _ = tablet_live.join();
    let _ = field_live.join();
    assert_eq!(s.tablet.patient_rows(), s.field.patient_rows());
}

#[test]
fn a_stopped_then_killed_cloud_is_noticed_and_the_live_uplink_relays_everything_once_it_returns() {
    let mut s = setup(&[]);
    let tablet_live = live(&s.tablet_path, SCHEMA, "hub", 120);

    // The cloud stops answering (SIGSTOP: its sockets stay open): the live wait's pings go
    // unanswered and the uplink gives up on the link within its 15 s silence bound.
    let stopped = unix_now();
    s.cloud.signal("-STOP");
    s.hub
        .wait_uplink("a silent link noticed", Duration::from_secs(25), |u| {
            u["state"] == "backing off"
                && u["live_since"].is_null()
                && u["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("stopped answering"))
        });
    let noticed = unix_now() - stopped;
    s.cloud.signal("-CONT");
    s.hub
        .wait_uplink("live again", Duration::from_secs(45), |u| {
            u["state"] == "connected" && u["live_since"].as_u64().is_some()
        });

    // Killed while the uplink is live: the hub backs off, both sides keep writing.
    s.cloud.kill();
    s.hub
        .wait_uplink("the cut noticed", Duration::from_secs(10), |u| {
            u["state"] == "backing off"
        });
    for i in 0..5 {
        s.tablet.exec(&format!(
            "INSERT INTO patients(id, name, village) VALUES ('t{i}', 'n', 'clinic');
             UPDATE patients SET visits = visits + 1 WHERE id = 'first-f';"
        ));
        s.field.exec(&format!(
            "INSERT INTO patients(id, name, village) VALUES ('f{i}', 'n', 'field');
             UPDATE patients SET visits = visits + 1 WHERE id = 'first-t';"
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !s.field.has("patients", "t0"),
        "nothing crosses while the cloud is down"
    );

    // The cloud returns: the hub relays on its own (backoff ≤ 2 s), live again.
    let back = unix_now();
    s.cloud.start();
    s.hub
        .wait_uplink("relayed and live", Duration::from_secs(20), |u| {
            u["last_success"].as_u64().is_some_and(|t| t >= back)
                && u["backlog_seqs"].as_u64() == Some(0)
                && u["live_since"].as_u64().is_some()
        });
    // The field device comes back live: what it wrote goes up, down the live uplink, to the
    // live tablet; what the tablet wrote comes to it.
    let field_live = live(&s.field_path, SCHEMA, "cloud", 60);
    for i in 0..5 {
        for (d, id) in [(&s.tablet, format!("f{i}")), (&s.field, format!("t{i}"))] {
            appears(
                d,
                "patients",
                &id,
                Duration::from_secs(10),
                Duration::from_millis(20),
            )
            .unwrap_or_else(|| panic!("{id} missing; hub log:\n{}", s.hub.log()));
        }
    }
    // Everything written on both sides, once: the counters count each increment once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (t, f) = (s.tablet.patient_rows(), s.field.patient_rows());
        if t == f && t.iter().any(|r| r == "first-f|n||5") {
            assert!(t.iter().any(|r| r == "first-t|n||5"), "{t:?}");
            assert_eq!(t.len(), 12, "{t:?}");
            break;
        }
        assert!(Instant::now() < deadline, "tablet {t:?}\nfield {f:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.hub.log();
    drop(s.hub);
    s.cloud.kill();
    let _ = tablet_live.join();
    let _ = field_live.join();
    check_mailbox(&s._dir.path().join("hub/mailbox.db"));
    check_mailbox(&s.cloud.data.join("mailbox.db"));
    println!("silent link noticed after ~{noticed} s");
    assert!(
        log.contains("stopped answering"),
        "the hub's log names the silent link"
    );
}

#[test]
fn with_live_mode_off_the_uplink_polls_as_before() {
    let s = setup(&["--uplink-live-seconds", "0"]);
    let tablet_live = live(&s.tablet_path, SCHEMA, "hub", 30);
    std::thread::sleep(Duration::from_millis(300));
    // Down: the next poll (every 2 s here, --uplink-max-ms) brings it; never live.
    s.field
        .exec("INSERT INTO patients(id, name) VALUES ('polled', 'n')");
    s.field.sync_with("cloud");
    appears(
        &s.tablet,
        "patients",
        "polled",
        Duration::from_secs(10),
        Duration::from_millis(20),
    )
    .unwrap_or_else(|| panic!("no poll brought it; hub log:\n{}", s.hub.log()));
    let u = s.hub.status()["uplink"].clone();
    assert!(u["live_since"].is_null(), "{u}");
    assert_eq!(u["state"], "connected", "{u}");
    assert!(!s.hub.log().contains("; live"), "no session went live");
    drop(s.hub);
    drop(s.cloud);
    let _ = tablet_live.join();
}
