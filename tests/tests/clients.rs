//! The client programs under `clients/` (the `sqlite3` shell, Rust/rusqlite, Python/apsw,
//! Node/better-sqlite3), each run as a real process against the built `liboutpost.so` and the
//! real `outpost-hub` on loopback: device A tracks a table, enrolls, writes and syncs; device B
//! enrolls, syncs and must see A's rows (each program checks and exits non-zero otherwise).
//!
//! Python needs `apsw` importable by `python3`; Node needs `clients/node/node_modules` (`npm ci`
//! there). Without them a test prints `SKIPPED` (and fails under `CI=true`).

use outpost_testkit::e2e::built::{built, root, target_dir};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::require::require;
use std::process::Command;

/// Runs `program args... EXT DB_A DB_B CODE_A CODE_B` and checks it succeeded and said so.
fn two_devices(mut cmd: Command) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    cmd.arg(&built().ext)
        .arg(dir.path().join("a.db"))
        .arg(dir.path().join("b.db"))
        .arg(hub.code())
        .arg(hub.code())
        .current_dir(root());
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}{stderr}");
    assert!(
        stdout.contains("ok: device B sees amina,bruno,chen"),
        "{stdout}"
    );
}

#[test]
fn sqlite3_shell_client_syncs_two_devices() {
    let ok = Command::new("sqlite3").arg("-version").output().is_ok();
    if !require("sqlite3_shell_client", "no sqlite3 shell on PATH", ok) {
        return;
    }
    let mut cmd = Command::new("sh");
    cmd.arg(root().join("clients/shell/two_devices.sh"));
    two_devices(cmd);
}

#[test]
fn rust_client_syncs_two_devices() {
    let dir = target_dir().join("clients-rust");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(root().join("clients/rust/Cargo.toml"))
        .arg("--target-dir")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "building clients/rust failed");
    two_devices(Command::new(dir.join("release/outpost-client-rust")));
}

#[test]
fn python_apsw_client_syncs_two_devices() {
    let ok = Command::new("python3")
        .args(["-c", "import apsw"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        "python_apsw_client",
        "python3 cannot import apsw (pip install apsw)",
        ok,
    ) {
        return;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("clients/python/two_devices.py"));
    two_devices(cmd);
}

#[test]
fn node_better_sqlite3_client_syncs_two_devices() {
    let module =
        root().join("clients/node/node_modules/better-sqlite3/build/Release/better_sqlite3.node");
    if !require(
        "node_better_sqlite3_client",
        "clients/node/node_modules has no built better-sqlite3 (npm ci --prefix clients/node)",
        module.exists(),
    ) {
        return;
    }
    let mut cmd = Command::new("node");
    cmd.arg(root().join("clients/node/two_devices.js"));
    two_devices(cmd);
}
