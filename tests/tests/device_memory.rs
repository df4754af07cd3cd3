//! A device's memory, asserted (issue 18, item 8): a new device's first sync of the benchmark
//! workload's W1 (300k rows, docs/workload.md) through `outpost_sync()` from a release-built hub
//! peaks under 64 MiB. The device is a child process (this test binary again, `device_child`),
//! so its peak (`VmHWM`) is its own: the rows the parent generated and pushed are not in it.
//! Memory, not time: nothing here depends on the machine's speed. The figures with timings are
//! `session_bench`'s `first_sync_through_outpost_sync` (docs/performance.md).

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::workload::{insert_w1, w1_db, w1_rows};
use std::path::Path;
use std::process::Command;

/// The goal (README, docs/performance.md): a first sync under 64 MiB.
const PEAK_LIMIT_KIB: u64 = 64 * 1024;

/// This process's peak resident set (`VmHWM`), KiB.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a VmHWM line")
}

/// The device (run by `a_first_sync_of_the_workload_peaks_under_64_mib` as a child process; does
/// nothing on its own): a fresh W1 database, enrolled with the code it is given, one
/// `outpost_sync()`. Prints `DEVICE rows vmhwm_kib result`.
#[test]
fn device_child() {
    let Ok(spec) = std::env::var("OUTPOST_DEVICE_CHILD") else {
        return;
    };
    let (db, code) = spec.split_once('\n').expect("database and code");
    let conn = w1_db(Path::new(db), Some(&built().ext));
    conn.query_row(&format!("SELECT outpost_enroll('{code}')"), [], |_| Ok(()))
        .expect("enrolled");
    let out: String = conn
        .query_row("SELECT outpost_sync()", [], |r| r.get(0))
        .expect("synced");
    let rows: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM patients) + (SELECT count(*) FROM visits)",
            [],
            |r| r.get(0),
        )
        .expect("counted");
    println!("DEVICE {rows} {} {out}", vm_hwm_kib());
}

#[test]
fn a_first_sync_of_the_workload_peaks_under_64_mib() {
    if std::env::var("OUTPOST_DEVICE_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(&dir.path().join("hub"), &["--no-mdns"]);
    let rows = w1_rows(1.0);
    let total = (rows.0.len() + rows.1.len()) as i64;
    let source = w1_db(&dir.path().join("source.db"), Some(&built().ext));
    insert_w1(&source, &rows);
    drop(rows);
    source
        .query_row(
            &format!("SELECT outpost_enroll('{}')", hub.code()),
            [],
            |_| Ok(()),
        )
        .unwrap();
    let pushed: String = source
        .query_row("SELECT outpost_sync()", [], |r| r.get(0))
        .unwrap();
    drop(source);

    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "device_child", "--nocapture", "--test-threads=1"])
        .env(
            "OUTPOST_DEVICE_CHILD",
            format!("{}\n{}", dir.path().join("new.db").display(), hub.code()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("DEVICE ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("child: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    let mut f = line.splitn(3, ' ');
    let got: i64 = f.next().unwrap().parse().unwrap();
    let peak: u64 = f.next().unwrap().parse().unwrap();
    let result = f.next().unwrap_or_default();
    assert_eq!(
        got, total,
        "every row arrived: {result} (source pushed: {pushed})"
    );
    println!(
        "first sync of {total} rows: child VmHWM {:.1} MiB (limit {} MiB): {result}",
        peak as f64 / 1024.0,
        PEAK_LIMIT_KIB / 1024
    );
    assert!(
        peak < PEAK_LIMIT_KIB,
        "a first sync of W1 peaked at {:.1} MiB, over {} MiB",
        peak as f64 / 1024.0,
        PEAK_LIMIT_KIB / 1024
    );
}
