//! Scoped first syncs, printed (not asserted), against release-built `outpost-cloud run`
//! processes on loopback and real device databases (issue 19's goal): a tenant of
//! `OUTPOST_BENCH_SCOPES` clinic scopes (default 100) of 1,000 patients and 2,000 visits each
//! (docs/workload.md's rows, patients scoped by `village`, visits `via` their patient); a device
//! granted one clinic syncs for the first time. The same clinic's rows alone, in a tenant holding
//! only that scope, are the baseline: the goal is at most 1.1x its bytes and its time.
//!
//! Ignored (and left out of `scripts/test`): run with
//! `cargo test --release -p outpost-tests --test scope_bench -- --ignored --nocapture`.
//! Results are recorded in docs/performance.md ("Scopes").

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{n, DeviceDb};
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::e2e::workload::{insert_w1, w1_rows_seeded, W1_SCHEMA};
use outpost_testkit::env::number;
use rusqlite::types::Value;
use std::path::Path;
use std::time::Instant;

/// The one clinic the measured device is granted.
const CLINIC: usize = 42;

fn schema() -> String {
    format!(
        "{W1_SCHEMA}
SELECT outpost_track('patients', '{{\"scope\": \"village\"}}');
SELECT outpost_track('visits', '{{\"scope\": {{\"via\": \"patient_id\"}}}}');"
    )
}

fn scope(clinic: usize) -> String {
    format!("c{clinic:03}")
}

/// A cloud holding `clinics`' rows, pushed by one office device granted every scope.
fn tenant(dir: &Path, clinics: &[usize]) -> Cloud {
    let cloud = Cloud::running(&dir.join("cloud"));
    let office = DeviceDb::open(&dir.join("office.db"), &schema());
    office.enroll(&cloud.scoped_code("--device", "*"));
    for &c in clinics {
        let mut rows = w1_rows_seeded(0.01, 1_000 + c as u64);
        for p in &mut rows.0 {
            p[5] = Value::Text(scope(c));
        }
        insert_w1(&office.conn, &rows);
    }
    while n(&office.sync(), "pushed") > 0 {}
    cloud
}

/// A device granted the clinic's scope, first sync to the end: (bytes pulled, seconds, rows).
fn first_sync(dir: &Path, cloud: &Cloud) -> (u64, f64, i64) {
    let device = DeviceDb::open(&dir.join("clinic.db"), &schema());
    device.enroll(&cloud.scoped_code("--device", &scope(CLINIC)));
    let (mut bytes, t) = (0, Instant::now());
    loop {
        let r = device.sync();
        bytes += n(&r, "bytes_pulled");
        if n(&r, "pulled") == 0 {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    (
        bytes,
        secs,
        device.count("patients") + device.count("visits"),
    )
}

#[test]
#[ignore = "benchmark: prints a one-scope device's first sync in a tenant of many scopes"]
fn a_one_scope_first_sync_costs_what_its_scope_alone_would() {
    let scopes: usize = number("OUTPOST_BENCH_SCOPES", 100);
    let big = scratch();
    let cloud = tenant(big.path(), &(0..scopes).collect::<Vec<_>>());
    let (bytes, secs, rows) = first_sync(big.path(), &cloud);
    drop(cloud);
    let small = scratch();
    let cloud = tenant(small.path(), &[CLINIC]);
    let (alone_bytes, alone_secs, alone_rows) = first_sync(small.path(), &cloud);
    assert_eq!(rows, alone_rows, "the same clinic's rows either way");
    assert_eq!(rows, 3_000);
    println!(
        "scoped first sync, one clinic of {scopes} (3,000 rows): {bytes} bytes in {secs:.3} s; \
         that clinic alone: {alone_bytes} bytes in {alone_secs:.3} s; ratio bytes {:.3}x, time {:.2}x",
        bytes as f64 / alone_bytes as f64,
        secs / alone_secs
    );
}
