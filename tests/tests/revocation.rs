//! Revocation everywhere (issue 18 item 4), with real `outpost-cloud` and `outpost-hub`
//! processes on loopback and device databases with the built `liboutpost.so`:
//!
//! - a device revoked on the cloud (`outpost-cloud revoke`) is revoked in its hub's allowlist
//!   after the hub's next uplink round: its live session on the hub ends, and its next sync
//!   there is refused;
//! - a hub revoked on the cloud loses its live uplink session, and its next rounds are refused;
//! - a device revoked on the cloud loses its live session with the cloud, and is refused there.
//!
//! (`outpost-hub revoke` ending a live session is `appliance/tests/run.rs`.)

use outpost_protocol::SiteId;
use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, DeviceDb};
use outpost_testkit::e2e::hub::{unix_now, Hub};
use outpost_testkit::e2e::patients::{self, SCHEMA};
use outpost_testkit::e2e::process::run_ok;
use outpost_testkit::e2e::scratch::scratch;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A hub uplinked to `cloud_code`, retrying fast; `live` seconds of live uplink (0: a round
/// every half second).
fn uplinked_hub(data: &Path, cloud_code: &str, live: &str) -> Hub {
    Hub::uplinked(data, cloud_code, 500, &["--uplink-live-seconds", live])
}

/// `outpost-cloud revoke` of `site` (run as the operator would, a separate process).
fn cloud_revoke(cloud: &Cloud, site: &SiteId) {
    run_ok(
        Command::new(&built().cloud)
            .args(["revoke", "--data"])
            .arg(&cloud.data)
            .arg(&site.to_string()[..12]),
    );
}

fn site_of(dev: &DeviceDb) -> SiteId {
    SiteId::from_slice(&dev.call::<Vec<u8>>("SELECT outpost_site_id()").unwrap()).unwrap()
}

fn hub_site(hub: &Hub) -> SiteId {
    outpost_relay::identity::Identity::load_or_create(&hub.data)
        .unwrap()
        .0
        .site
}

/// Polls `f` every 100 ms up to `bound`: its value, or a panic naming `what`.
fn within<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_device_revoked_on_the_cloud_is_refused_by_its_hub_and_its_live_session_ends() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = uplinked_hub(&dir.path().join("hub"), &cloud.code("--hub"), "0");
    let a_path = dir.path().join("a.db");
    let a = DeviceDb::patients(&a_path);
    a.enroll(&hub.code());
    let a_site = site_of(&a);
    patients::write(&a.conn, "a", 1);
    a.sync_counted();
    // The cloud certifies the device once the hub's entry for it arrives.
    let since = unix_now();
    hub.wait_uplink("the uplink to relay A", Duration::from_secs(30), |u| {
        u["last_success"].as_u64().is_some_and(|t| t >= since)
            && u["backlog_seqs"].as_u64() == Some(0)
    });
    within("A's row in the cloud", Duration::from_secs(30), || {
        (cloud.count("patients") == 1).then_some(())
    });

    // A waits in a live session on the hub; the operator revokes it on the cloud.
    let a_live = device_db::live(&a_path, SCHEMA, "hub", 60);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!a_live.is_finished(), "A's live session ended on its own");
    let revoked_at = Instant::now();
    cloud_revoke(&cloud, &a_site);

    // Within a round (every half second here) and the hub's revocation check (1 s), the live
    // session is over.
    within("A's live session to end", Duration::from_secs(15), || {
        a_live.is_finished().then_some(())
    });
    let took = revoked_at.elapsed();
    let _ = a_live.join().unwrap();
    eprintln!("revoked on the cloud -> live session on the hub ended: {took:?}");

    // The hub's allowlist and status say so, its log names the cloud, and A is refused.
    let status = hub.status();
    let devices = status["devices"].as_array().unwrap().clone();
    let entry = devices
        .iter()
        .find(|d| d["site"].as_str() == Some(&a_site.to_string()))
        .unwrap_or_else(|| panic!("A in the status: {status}"));
    assert!(entry["revoked_at"].as_u64().is_some(), "{entry}");
    let by_cloud = status["uplink"]["revoked_by_cloud"].as_array().unwrap();
    assert!(
        by_cloud
            .iter()
            .any(|r| r.as_str().unwrap().starts_with(&a_site.to_string())),
        "{status}"
    );
    assert!(
        hub.log().contains("the cloud's control stream revokes it"),
        "{}",
        hub.log()
    );
    let refused = a.try_sync();
    let message = format!("{refused:?}");
    assert!(
        refused.is_err() && message.to_lowercase().contains("revoked"),
        "{message}"
    );
}

#[test]
fn a_hub_revoked_on_the_cloud_loses_its_live_uplink() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = uplinked_hub(&dir.path().join("hub"), &cloud.code("--hub"), "300");
    hub.wait_uplink("the uplink to go live", Duration::from_secs(30), |u| {
        u["live_since"].as_u64().is_some()
    });
    let site = hub_site(&hub);
    let revoked_at = Instant::now();
    cloud_revoke(&cloud, &site);
    hub.wait_uplink("the live uplink to end", Duration::from_secs(15), |u| {
        u["live_since"].is_null() && u["last_error"].is_string()
    });
    eprintln!(
        "hub revoked on the cloud -> its live uplink ended: {:?}",
        revoked_at.elapsed()
    );
    // And it stays out: every later round is refused.
    std::thread::sleep(Duration::from_secs(2));
    let u = hub.status()["uplink"].clone();
    assert!(u["live_since"].is_null(), "{u}");
    assert_ne!(u["state"], "connected", "{u}");
}

#[test]
fn a_device_revoked_on_the_cloud_loses_its_live_session_there() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let a_path = dir.path().join("a.db");
    let a = DeviceDb::patients(&a_path);
    a.enroll(&cloud.device_code());
    a.sync_with("cloud");
    let a_live = device_db::live(&a_path, SCHEMA, "cloud", 60);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!a_live.is_finished(), "A's live session ended on its own");
    let revoked_at = Instant::now();
    cloud_revoke(&cloud, &site_of(&a));
    within(
        "A's live session on the cloud to end",
        Duration::from_secs(10),
        || a_live.is_finished().then_some(()),
    );
    eprintln!(
        "revoked on the cloud -> live session on the cloud ended: {:?}",
        revoked_at.elapsed()
    );
    let refused = format!("{:?}", a.try_json("SELECT outpost_sync('cloud')"));
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
}
