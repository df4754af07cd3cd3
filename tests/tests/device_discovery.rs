//! A device finds its hub on the LAN when the hub's known address stops answering (docs/design.md
//! section 2: "a reachable enrolled hub first, found on the LAN without typing an address"):
//! `outpost_sync()` with no argument asks mDNS for a hub with the pinned site id, proves the pinned
//! key in the handshake there, and remembers the new address. Runs in a network namespace of its
//! own (root), with multicast routed over its loopback, so the LAN is the test's alone.

mod support;

use outpost_testkit::e2e::device_db::DeviceDb;
use std::path::Path;
use support::*;

fn device(path: &Path) -> DeviceDb {
    DeviceDb::open(
        path,
        "CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
         SELECT outpost_track('patients');",
    )
}

/// For `test` (root): a network namespace of its own whose loopback carries multicast, the LAN
/// mDNS runs on; `None` when the test is skipped.
fn lan(test: &str, tag: &str) -> Option<Netns> {
    if !require(test, "needs root to create a network namespace", is_root()) {
        return None;
    }
    let ns = Netns::new(tag);
    sh(&["ip", "-n", &ns.0, "link", "set", "lo", "multicast", "on"]);
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "route",
        "add",
        "224.0.0.0/4",
        "dev",
        "lo",
    ]);
    Some(ns)
}

fn sync(db: &Path) -> rusqlite::Result<serde_json::Value> {
    device(db).try_sync()
}

fn first_address(db: &Path) -> String {
    let json: String = device(db)
        .call("SELECT addresses FROM _outpost_peers")
        .unwrap();
    serde_json::from_str::<Vec<String>>(&json).unwrap()[0].clone()
}

#[test]
fn a_device_finds_its_moved_hub_on_the_lan_and_remembers_where() {
    let Some(ns) = lan(
        "a_device_finds_its_moved_hub_on_the_lan_and_remembers_where",
        "disc",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let data_arg = data.to_str().unwrap().to_string();
    let db = dir.path().join("tablet.db");
    let net = |port: u16| format!("std:127.0.0.1:{port}");

    let (mut hub, first) = start_hub(
        Some(&ns.0),
        &["run", "--data", &data_arg, "--net", &net(7420)],
    );
    let code = code_for(&data, first).encode();
    let enrolled_db = db.clone();
    in_netns(&ns.0, move || {
        let d = device(&enrolled_db);
        d.enroll(&code);
        d.exec("INSERT INTO patients VALUES ('p1', 'Asha')");
        let r = sync(&enrolled_db).unwrap();
        assert_eq!(r["address"], first.to_string(), "{r}");
    });

    // The hub comes back on another port (a new lease, another box setting): the enrolled
    // address is dead, and the device finds the hub by its site id.
    hub.kill();
    let (_hub, moved) = start_hub(
        Some(&ns.0),
        &["run", "--data", &data_arg, "--net", &net(7521)],
    );
    let moved_db = db.clone();
    in_netns(&ns.0, move || {
        device(&moved_db).exec("INSERT INTO patients VALUES ('p2', 'Baraka')");
        let r = sync(&moved_db).unwrap_or_else(|e| panic!("sync after the hub moved: {e}"));
        assert_eq!(r["address"], moved.to_string(), "{r}");
        assert_eq!(
            r["pushed"], 1,
            "the change made while the hub was away: {r}"
        );
        assert_eq!(
            first_address(&moved_db),
            moved.to_string(),
            "the new address is remembered"
        );
        // Next time it goes straight there.
        let again = sync(&moved_db).unwrap();
        assert_eq!(again["address"], moved.to_string());
    });
}

#[test]
fn a_hub_that_does_not_answer_discovery_is_reported_unreachable_with_the_lan_tried() {
    let Some(ns) = lan(
        "a_hub_that_does_not_answer_discovery_is_reported_unreachable_with_the_lan_tried",
        "nodisc",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let data_arg = data.to_str().unwrap().to_string();
    let db = dir.path().join("tablet.db");
    let (mut hub, addr) = start_hub(
        Some(&ns.0),
        &[
            "run",
            "--data",
            &data_arg,
            "--net",
            "std:127.0.0.1:7420",
            "--no-mdns",
        ],
    );
    let code = code_for(&data, addr).encode();
    let enrolled = db.clone();
    in_netns(&ns.0, move || {
        device(&enrolled).enroll(&code);
    });
    hub.kill();
    let (_hub, _) = start_hub(
        Some(&ns.0),
        &[
            "run",
            "--data",
            &data_arg,
            "--net",
            "std:127.0.0.1:7521",
            "--no-mdns",
        ],
    );
    in_netns(&ns.0, move || {
        let err = sync(&db).unwrap_err().to_string();
        assert!(err.contains("peer unreachable"), "{err}");
        assert!(
            err.contains("127.0.0.1:7420"),
            "the enrolled address is listed: {err}"
        );
        assert!(err.contains("LAN (mDNS)"), "discovery was tried: {err}");
        assert_eq!(
            first_address(&db),
            "127.0.0.1:7420",
            "nothing is remembered"
        );
    });
}
