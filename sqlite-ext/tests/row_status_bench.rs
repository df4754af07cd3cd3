//! Cost of per-record sync state (docs/performance.md, "Per-record sync state"): a list of 1,000
//! rows each calling `outpost_row_status`, and `SELECT * FROM outpost_pending` with 1,000 pending
//! rows among 100,000. Prints figures, asserts nothing timed. Run with
//! `cargo test --release -p outpost --test row_status_bench -- --ignored --nocapture`.

mod common;
use common::Replica;
use std::time::Instant;

const ROWS: usize = 100_000;
const PENDING: usize = 1_000;
const LIST: usize = 1_000;
const RUNS: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median ms of `sql` run to its end, over [`RUNS`] runs (after one warm-up run).
fn time(r: &Replica, sql: &str) -> (f64, f64, usize) {
    let mut s = r.conn.prepare(sql).unwrap();
    let mut n = 0;
    let mut runs = Vec::new();
    let mut first = 0.0;
    for i in 0..=RUNS {
        let t = Instant::now();
        n = s.query_map([], |_| Ok(())).unwrap().count();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i == 0 {
            first = ms;
        } else {
            runs.push(ms);
        }
    }
    (first, median(runs), n)
}

#[test]
#[ignore = "benchmark: prints figures (docs/performance.md)"]
fn row_status_over_a_list_and_the_pending_table() {
    let r = Replica::new(
        "bench",
        "CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT, village TEXT, dob TEXT);",
    );
    r.track("patients", None);
    r.exec("BEGIN");
    {
        let mut ins = r
            .conn
            .prepare("INSERT INTO patients VALUES (outpost_uuid(), ?1, ?2, '1990-01-01')")
            .unwrap();
        for i in 0..ROWS {
            ins.execute(rusqlite::params![
                format!("Patient {i}"),
                format!("Village {}", i % 300)
            ])
            .unwrap();
        }
    }
    r.exec("COMMIT");
    // Everything folded and acknowledged, as after a sync with a hub (the bookkeeping a sync
    // writes, written directly: this measures the reading side).
    r.changes(0, Some(1 << 30));
    r.exec(
        "INSERT INTO _outpost_meta(k, v) VALUES ('acked_seq', (SELECT max(seq) FROM _outpost_log))",
    );
    // 1,000 rows edited since, in the trigger log (not folded).
    r.exec(&format!(
        "UPDATE patients SET village = 'Moved' WHERE id IN (SELECT id FROM patients ORDER BY id LIMIT {PENDING})"
    ));
    let list = format!(
        "SELECT id, name, outpost_row_status('patients', id) FROM patients ORDER BY id LIMIT {LIST}"
    );
    let plain = format!("SELECT id, name, 'synced' FROM patients ORDER BY id LIMIT {LIST}");
    let report = |what: &str, (first, med, n): (f64, f64, usize)| {
        println!(
            "{what}: {n} rows, first call {first:.2} ms (reads the snapshot), then median {med:.3} ms ({:.2} µs per row)",
            med * 1000.0 / n.max(1) as f64
        );
    };
    println!("{ROWS} rows, {PENDING} pending; medians of {RUNS} runs");
    report("list of 1,000 without status", time(&r, &plain));
    report(
        "list of 1,000 with outpost_row_status, log not folded",
        time(&r, &list),
    );
    report(
        "SELECT * FROM outpost_pending, log not folded",
        time(&r, "SELECT * FROM outpost_pending"),
    );
    // The same rows folded (after an export, as a sync leaves them until acknowledged).
    r.changes(0, Some(1 << 30));
    report(
        "list of 1,000 with outpost_row_status, folded",
        time(&r, &list),
    );
    report(
        "SELECT * FROM outpost_pending, folded",
        time(&r, "SELECT * FROM outpost_pending"),
    );
    // A write between every list render: each render reads the snapshot again.
    let mut renders = Vec::new();
    for i in 0..RUNS {
        r.exec(&format!("UPDATE patients SET name = 'Edited {i}' WHERE id = (SELECT id FROM patients ORDER BY id LIMIT 1)"));
        let t = Instant::now();
        let mut s = r.conn.prepare(&list).unwrap();
        let n = s.query_map([], |_| Ok(())).unwrap().count();
        assert_eq!(n, LIST);
        renders.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "list of 1,000 with outpost_row_status after a write each time: median {:.2} ms",
        median(renders)
    );
    assert_eq!(
        r.one::<i64>("SELECT count(*) FROM outpost_pending"),
        PENDING as i64
    );
}
