//! A device finds its hub on the LAN when the hub's known address stops answering (docs/design.md
//! section 2: "a reachable enrolled hub first, found on the LAN without typing an address"):
//! `outpost_sync()` with no argument asks mDNS for a hub with the pinned site id, proves the pinned
//! key in the handshake there, and remembers the new address. Runs in a network namespace of its
//! own (root), with multicast routed over its loopback, so the LAN is the test's alone.

mod support;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::*;

/// The extension, release-built once per test process (the suite's build stage already did it).
fn extension() -> &'static Path {
    static EXT: OnceLock<PathBuf> = OnceLock::new();
    EXT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["build", "--release", "-q", "-p", "outpost"])
            .status()
            .expect("cargo build -p outpost");
        assert!(status.success(), "building liboutpost.so failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        target.join("release/liboutpost.so")
    })
}

fn device(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    // SAFETY: loading the extension built from this workspace, with its own entry point.
    unsafe {
        conn.load_extension_enable().unwrap();
        conn.load_extension(extension(), Some("sqlite3_outpost_init"))
            .unwrap();
        conn.load_extension_disable().unwrap();
    }
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
         SELECT outpost_track('patients');",
    )
    .unwrap();
    conn
}

fn sync(db: &Path) -> Result<serde_json::Value, String> {
    let db = db.to_path_buf();
    let conn = device(&db);
    conn.query_row("SELECT outpost_sync()", [], |r| r.get::<_, String>(0))
        .map(|j| serde_json::from_str(&j).unwrap())
        .map_err(|e| e.to_string())
}

fn first_address(db: &Path) -> String {
    let conn = device(db);
    let json: String = conn
        .query_row("SELECT addresses FROM _outpost_peers", [], |r| r.get(0))
        .unwrap();
    serde_json::from_str::<Vec<String>>(&json).unwrap()[0].clone()
}

#[test]
fn a_device_finds_its_moved_hub_on_the_lan_and_remembers_where() {
    if !require(
        "a_device_finds_its_moved_hub_on_the_lan_and_remembers_where",
        "needs root to create a network namespace",
        is_root(),
    ) {
        return;
    }
    let ns = Netns::new("disc");
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
        let conn = device(&enrolled_db);
        conn.query_row(&format!("SELECT outpost_enroll('{code}')"), [], |_| Ok(()))
            .unwrap();
        conn.execute("INSERT INTO patients VALUES ('p1', 'Asha')", [])
            .unwrap();
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
        let conn = device(&moved_db);
        conn.execute("INSERT INTO patients VALUES ('p2', 'Baraka')", [])
            .unwrap();
        drop(conn);
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
    if !require(
        "a_hub_that_does_not_answer_discovery_is_reported_unreachable_with_the_lan_tried",
        "needs root to create a network namespace",
        is_root(),
    ) {
        return;
    }
    let ns = Netns::new("nodisc");
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
        let conn = device(&enrolled);
        conn.query_row(&format!("SELECT outpost_enroll('{code}')"), [], |_| Ok(()))
            .unwrap();
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
        let err = sync(&db).unwrap_err();
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
