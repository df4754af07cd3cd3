//! Grants (issue 19 item 3, the part in place): the cloud grants scopes to the peers it admits
//! (`enroll-code --scopes`) and replaces grants (`grant`); a hub learns its own grant over its
//! uplink (`outpost-hub status --json` shows `"scopes"`), mints codes only within it, and its
//! later grants reach it the same way. Real `outpost-cloud` and `outpost-hub` processes.

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::process::run_ok;
use outpost_testkit::e2e::scratch::scratch;
use std::process::Command;
use std::time::{Duration, Instant};

/// A cloud enrollment code for a hub granted `scopes`.
fn hub_code(cloud: &Cloud, scopes: &str) -> String {
    let out = run_ok(
        Command::new(&built().cloud)
            .args(["enroll-code", "--no-qr", "--hub", "--data"])
            .arg(&cloud.data)
            .args(["--address", &format!("127.0.0.1:{}", cloud.port)])
            .args(["--scopes", scopes]),
    );
    code_in(&out)
}

/// The `outpost:` code a command printed.
fn code_in(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("outpost:"))
        .expect("a code")
        .to_string()
}

/// The hub's `"scopes"` once they equal `want`, within 10 s.
fn wait_scopes(hub: &Hub, cloud: &Cloud, want: serde_json::Value) {
    let start = Instant::now();
    loop {
        let got = hub.status()["scopes"].clone();
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the hub's scopes are {got}, not {want}\nhub log:\n{}\ncloud log:\n{}",
            hub.log(),
            std::fs::read_to_string(cloud.data.with_extension("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A hub granted moshi and arusha, on the default uplink (one live session of 300 s: entries
/// written during it reach the hub within about a second, through the cloud's control
/// watcher), once it knows its grant.
fn moshi_arusha_hub(dir: &std::path::Path, cloud: &Cloud) -> Hub {
    let hub = Hub::uplinked(&dir.join("hub"), &hub_code(cloud, "moshi,arusha"), 500, &[]);
    wait_scopes(&hub, cloud, serde_json::json!(["arusha", "moshi"]));
    hub
}

/// `outpost-hub enroll-code --scopes scopes`: success, and the error text.
fn hub_enroll(hub: &Hub, scopes: &str) -> (bool, String) {
    let out = Command::new(&built().hub)
        .args(["enroll-code", "--no-qr", "--data"])
        .arg(&hub.data)
        .args(["--address", &hub.addr(), "--scopes", scopes])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hub_learns_its_grant_over_the_uplink_and_grants_within_it() {
    let tmp = scratch();
    let cloud = Cloud::running(&tmp.path().join("cloud"));
    let hub = moshi_arusha_hub(tmp.path(), &cloud);

    let (ok, err) = hub_enroll(&hub, "tanga");
    assert!(!ok, "a hub grants beyond its own grant");
    assert!(err.contains("granted arusha,moshi only"), "{err}");
    let (ok, err) = hub_enroll(&hub, "moshi");
    assert!(ok, "{err}");

    // The operator widens the hub's grant: a new version reaches it over the uplink.
    let site = hub.status()["site"].as_str().unwrap().to_string();
    let out = run_ok(
        Command::new(&built().cloud)
            .args(["grant", "--data"])
            .arg(&cloud.data)
            .args(["--hub", &site[..12], "--scopes", "moshi,arusha,tanga"]),
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("(version 2)"), "{out}");
    wait_scopes(
        &hub,
        &cloud,
        serde_json::json!(["arusha", "moshi", "tanga"]),
    );
    let (ok, err) = hub_enroll(&hub, "tanga");
    assert!(ok, "{err}");

    // The cloud's status shows each peer's grant.
    let peers = cloud.status()["peers"].clone();
    assert_eq!(
        peers[0]["scopes"],
        serde_json::json!(["arusha", "moshi", "tanga"]),
        "{peers}"
    );
}

/// `outpost_status().scopes` of a device database.
fn device_scopes(dev: &DeviceDb) -> serde_json::Value {
    dev.json("SELECT json_extract(outpost_status(), '$.scopes')")
}

/// A device knows its grant from the moment of enrolment (the enrolment answer carries the
/// control entries, its own grant among them), at the cloud and at a hub, and learns a new grant
/// at its next sync.
#[test]
fn a_device_knows_its_grant_from_enrolment_and_learns_a_regrant_at_sync() {
    let tmp = scratch();
    let cloud = Cloud::running(&tmp.path().join("cloud"));
    let direct = DeviceDb::patients(&tmp.path().join("direct.db"));
    let code = run_ok(
        Command::new(&built().cloud)
            .args(["enroll-code", "--no-qr", "--device", "--data"])
            .arg(&cloud.data)
            .args(["--address", &format!("127.0.0.1:{}", cloud.port)])
            .args(["--scopes", "tanga"]),
    );
    let code = code_in(&code);
    direct.enroll(&code);
    assert_eq!(device_scopes(&direct), serde_json::json!(["tanga"]));

    let hub = moshi_arusha_hub(tmp.path(), &cloud);
    let at_hub = DeviceDb::patients(&tmp.path().join("at_hub.db"));
    let code = run_ok(
        Command::new(&built().hub)
            .args(["enroll-code", "--no-qr", "--data"])
            .arg(&hub.data)
            .args(["--address", &hub.addr(), "--scopes", "moshi"]),
    );
    let code = code_in(&code);
    at_hub.enroll(&code);
    assert_eq!(device_scopes(&at_hub), serde_json::json!(["moshi"]));

    // The operator regrants the direct device: it learns the new version at its next sync.
    let site: Vec<u8> = direct.call("SELECT outpost_site_id()").unwrap();
    let hex: String = site.iter().map(|b| format!("{b:02x}")).collect();
    run_ok(
        Command::new(&built().cloud)
            .args(["grant", "--data"])
            .arg(&cloud.data)
            .args(["--device", &hex[..12], "--scopes", "tanga,pemba"]),
    );
    direct.sync();
    assert_eq!(
        device_scopes(&direct),
        serde_json::json!(["pemba", "tanga"])
    );
}
