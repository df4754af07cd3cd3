//! Cost of re-stamping (docs/performance.md, "Re-stamping"): a first sync pushing 100,000 rows
//! written offline, by a device whose clock is right and by one whose clock ran a year behind
//! (which re-stamps all of them at the hello, in the same sync), for the clinic table (a counter
//! and a review column: their cells are rewritten too) and for a table of `lww` columns only.
//! Against the scripted hub
//! (`common/scripted_hub.rs`); the device clock is set with the test hook. Prints figures,
//! asserts nothing timed. Run with
//! `cargo test --release -p outpost --test restamp_bench -- --ignored --nocapture`.

mod common;
use common::scripted_hub::Hub;
use common::{clinic, Replica};
use std::time::Instant;

const ROWS: usize = 100_000;
const YEAR_MS: i64 = 365 * 24 * 60 * 60 * 1000;

#[test]
#[ignore = "benchmark: prints figures (docs/performance.md)"]
fn restamp_cost() {
    for clinic_table in [true, false] {
        run(clinic_table);
    }
}

fn run(clinic_table: bool) {
    let mut base = 0.0;
    for (label, shift) in [("clock right", 0), ("a year behind", -YEAR_MS)] {
        let hub = Hub::start();
        let r = if clinic_table {
            clinic("bench")
        } else {
            let r = Replica::new(
                "bench",
                "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, village TEXT)",
            );
            r.track("patients", None);
            r
        };
        hub.enroll(&r);
        r.exec(&format!(
            "INSERT INTO _outpost_meta(k, v) VALUES ('test_wall_shift_ms', {shift})"
        ));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        r.exec(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
             INSERT INTO patients(id, name, village) SELECT 'p' || i, 'name ' || i, 'v' FROM n"
        ));
        let t = Instant::now();
        let out = hub.sync(&r);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let status: serde_json::Value =
            serde_json::from_str(&r.one::<String>("SELECT outpost_status()")).unwrap();
        let restamped = &status["clock"]["restamped"];
        if shift == 0 {
            base = ms;
        }
        let table = if clinic_table { "clinic" } else { "lww only" };
        println!(
            "{table:>8}, {label:>13}: first sync of {ROWS} rows {ms:8.0} ms ({:.2}x), pushed {}, re-stamped {restamped}",
            ms / base,
            out["pushed"]
        );
    }
}
