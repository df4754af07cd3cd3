//! Outpost linked statically into a C program (issue 18 item 7), the way an iOS or Android app
//! embeds it where `.load` is not allowed: `tests/c/outpost_device.c` is compiled with the
//! system C compiler (`cc`) together with the SQLite amalgamation (`sqlite3.c`, the copy
//! `libsqlite3-sys` ships, found by `build.rs`) and linked with the release-built
//! `liboutpost.a` and the header `sqlite-ext/include/outpost.h`. The program registers
//! `sqlite3_outpost_init` with `sqlite3_auto_extension`, tracks a table, enrolls with a real
//! `outpost-hub` on loopback, writes and calls `outpost_sync()`; a second device (the loadable
//! `liboutpost.so` in rusqlite) receives its rows and answers with one of its own, which the next
//! run of the C program pulls.
//!
//! Also pinned: a SQLite built with `SQLITE_OMIT_LOAD_EXTENSION` (Apple's system SQLite is)
//! hands auto extensions no API routines table, so Outpost cannot load into it and opening a
//! database fails (docs/client-mobile.md says to bundle a SQLite instead).

use outpost_testkit::e2e::built::{built, root};
use outpost_testkit::e2e::device_db::{n, DeviceDb};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::scratch::scratch;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// What `cargo rustc -p outpost --crate-type staticlib -- --print native-static-libs` prints on
/// Linux (glibc): the system libraries the Rust standard library in `liboutpost.a` needs. The
/// header documents the same list.
const NATIVE_STATIC_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// The same table on both devices: the C program creates it, the rusqlite device runs this.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS visits(
    id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), patient TEXT NOT NULL, note TEXT);
  SELECT outpost_track('visits');";

/// Runs `cmd`; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (is a C compiler `cc` installed?)"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Compiles the C device into `dir` (the amalgamation with `defines`), links `liboutpost.a`.
fn compile(dir: &Path, defines: &[&str]) -> PathBuf {
    let staticlib = built().ext.with_file_name("liboutpost.a");
    assert!(
        staticlib.exists(),
        "{staticlib:?} missing: sqlite-ext/Cargo.toml's crate-type must list staticlib"
    );
    // Cargo leaves an old liboutpost.a behind when staticlib leaves the crate-type list: one
    // built by the same rustc run as liboutpost.so is current.
    let built_at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    assert!(
        built_at(&staticlib) + Duration::from_secs(60) >= built_at(&built().ext),
        "{staticlib:?} is older than liboutpost.so: sqlite-ext/Cargo.toml's crate-type must list staticlib"
    );
    let amalgamation = Path::new(env!("OUTPOST_SQLITE_AMALGAMATION"));
    let include = root().join("sqlite-ext/include");
    // The program's own file with every warning an error: the header must declare the entry
    // point so that the documented registration compiles cleanly.
    let main_o = dir.join("outpost_device.o");
    run_ok(
        Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-c", "-o"])
            .arg(&main_o)
            .arg(root().join("tests/c/outpost_device.c"))
            .arg("-I")
            .arg(amalgamation)
            .arg("-I")
            .arg(&include),
        "compiling tests/c/outpost_device.c",
    );
    // The app's SQLite, unoptimised (4 s instead of 12 s at -O1 on the CI machine).
    let sqlite_o = dir.join("sqlite3.o");
    run_ok(
        Command::new("cc")
            .args(["-O0", "-c", "-o"])
            .arg(&sqlite_o)
            .arg(amalgamation.join("sqlite3.c"))
            .args(defines),
        "compiling the SQLite amalgamation",
    );
    let exe = dir.join("outpost_device");
    run_ok(
        Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(&main_o)
            .arg(&sqlite_o)
            .arg(&staticlib)
            .args(NATIVE_STATIC_LIBS),
        "linking the C device with liboutpost.a",
    );
    exe
}

/// What one run of the C device printed: `(label, rest)` per line.
fn lines(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((label, rest)) => (label.to_string(), rest.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// The JSON after `label` (exactly one such line).
fn json_line(lines: &[(String, String)], label: &str) -> Value {
    let found: Vec<&String> = lines
        .iter()
        .filter(|(l, _)| l == label)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(found.len(), 1, "one `{label}` line: {lines:?}");
    serde_json::from_str(found[0]).unwrap_or_else(|e| panic!("{label}: {e}: {}", found[0]))
}

/// The `visit` lines: `patient|note`.
fn visits(lines: &[(String, String)]) -> Vec<String> {
    lines
        .iter()
        .filter(|(l, _)| l == "visit")
        .map(|(_, r)| r.clone())
        .collect()
}

#[test]
fn a_c_program_with_outpost_linked_statically_syncs_through_a_hub_with_a_loadable_device() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let exe = compile(dir.path(), &[]);
    let c_db = dir.path().join("c.db");

    // First run: register, open, track, enroll, write three rows, sync.
    let out = run_ok(
        Command::new(&exe)
            .arg(&c_db)
            .arg(hub.code())
            .args(["c", "3"]),
        "the C device's first run",
    );
    let first = lines(&out);
    let version = &first[0];
    assert_eq!(version.0, "version", "{first:?}");
    assert_eq!(version.1, env!("CARGO_PKG_VERSION"), "outpost_version()");
    assert_eq!(json_line(&first, "enrolled")["role"], "hub", "{first:?}");
    let synced = json_line(&first, "synced");
    assert_eq!(
        n(&synced, "pushed"),
        3,
        "one change per inserted row: {synced}"
    );
    assert!(synced["peer"].is_string(), "{synced}");

    // The second device: the loadable extension in rusqlite, enrolled with the same hub.
    let b = DeviceDb::open(&dir.path().join("b.db"), SCHEMA);
    b.enroll(&hub.code());
    let got = b.sync();
    assert_eq!(n(&got, "pulled"), 3, "{got}");
    assert_eq!(
        n(&got, "applied"),
        3 * 3,
        "three rows of three columns: {got}"
    );
    let rows: Vec<(String, String)> = {
        let mut s = b
            .conn
            .prepare("SELECT patient, note FROM visits ORDER BY patient")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let written_in_c = |p: &str| (p.to_string(), "written in C".to_string());
    assert_eq!(
        rows,
        vec![
            written_in_c("c-1"),
            written_in_c("c-2"),
            written_in_c("c-3")
        ]
    );

    // The other way: b writes, a second run of the C program (already enrolled) pulls it.
    b.exec("INSERT INTO visits(patient, note) VALUES ('b-1', 'written through .load')");
    assert_eq!(n(&b.sync(), "pushed"), 1);
    let out = run_ok(
        Command::new(&exe).arg(&c_db).args(["-", "c", "0"]),
        "the C device's second run",
    );
    let second = lines(&out);
    let synced = json_line(&second, "synced");
    assert_eq!(n(&synced, "pulled"), 1, "{synced}");
    assert_eq!(n(&synced, "pushed"), 0, "{synced}");
    assert_eq!(
        visits(&second),
        [
            "b-1|written through .load",
            "c-1|written in C",
            "c-2|written in C",
            "c-3|written in C"
        ]
    );
}

#[test]
fn a_sqlite_built_without_extension_loading_refuses_outpost_at_open() {
    let dir = scratch();
    let exe = compile(dir.path(), &["-DSQLITE_OMIT_LOAD_EXTENSION"]);
    let out = Command::new(&exe)
        .arg(dir.path().join("c.db"))
        .args(["-", "c", "0"])
        .output()
        .expect("running the C device");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sqlite3_open: automatic extension loading failed"),
        "{stderr}"
    );
}
