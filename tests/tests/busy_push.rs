//! Two devices push full sessions into one cloud at once, more than its staging budget holds
//! together: the one told `Busy` waits and runs its session again inside the same
//! `outpost_sync`, and both calls succeed with every row in the tenant (real device databases,
//! the release-built `outpost-cloud run` on loopback).

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{n, DeviceDb};
use outpost_testkit::e2e::scratch::scratch;
use std::sync::{Arc, Barrier};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS notes(id TEXT PRIMARY KEY NOT NULL, body TEXT);
SELECT outpost_track('notes');";

/// Rows per device: about 24 MiB of text, two sessions' worth.
const ROWS: i64 = 24 * 1024;

#[test]
fn devices_told_busy_wait_and_push_again_in_the_same_sync() {
    let dir = scratch();
    let mut cloud = Cloud::init(&dir.path().join("cloud"));
    // The smallest budget: one device's full session at a time, so the two devices' pushes,
    // started together, collide.
    cloud.run_args = vec!["--staging-mib".into(), "16".into()];
    cloud.start();
    let paths: Vec<_> = (0..2)
        .map(|d| dir.path().join(format!("d{d}.db")))
        .collect();
    for (d, p) in paths.iter().enumerate() {
        let db = DeviceDb::open(p, SCHEMA);
        db.enroll(&cloud.device_code());
        // 1 KiB of text per row that differs per device and row (no two batches alike).
        db.exec(&format!(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {ROWS})
             INSERT INTO notes SELECT 'd{d}-' || i, hex(randomblob(512)) FROM k;"
        ));
    }
    let start = Arc::new(Barrier::new(paths.len()));
    let syncs: Vec<_> = paths
        .iter()
        .map(|p| {
            let (p, start) = (p.clone(), start.clone());
            std::thread::spawn(move || {
                let db = DeviceDb::open(&p, SCHEMA);
                start.wait();
                db.try_json("SELECT outpost_sync('cloud')")
            })
        })
        .collect();
    let results: Vec<_> = syncs
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .expect("outpost_sync through a busy cloud")
        })
        .collect();
    for r in &results {
        assert_eq!(
            n(r, "pushed"),
            ROWS as u64,
            "every own row acknowledged: {r}"
        );
    }
    let retries: u64 = results.iter().map(|r| n(r, "busy_retries")).sum();
    assert!(
        retries > 0,
        "the pushes were expected to collide in a 16 MiB budget: {results:?}"
    );
    outpost_testkit::wait_until(
        "the tenant holds both devices' rows",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(50),
        || cloud.count("notes") == 2 * ROWS,
    );
}
