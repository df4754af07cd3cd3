//! What a scoped token's pull costs, printed (not asserted): a tenant of 100 clinic scopes of
//! 1,000 patients and 2,000 visits each (docs/workload.md's schema, visits scoped `via` their
//! patient), pulled by a token of one clinic, against a tenant holding only that clinic's rows
//! pulled whole: the same rows served.
//!
//! Ignored (and left out of `scripts/test`): run with
//! `cargo test --release -p outpost-cloud --lib scope_bench -- --ignored --nocapture`.
//! Results are recorded in docs/performance.md ("REST pulls by scope").

use super::*;
use std::time::{Duration, Instant};

const SCHEMA: &str = "PRAGMA foreign_keys = ON;
    CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT, village TEXT, clinic TEXT);
    CREATE TABLE visits(id TEXT PRIMARY KEY, patient_id TEXT REFERENCES patients(id), kind TEXT, note TEXT);
    SELECT outpost_track('patients', '{\"scope\": \"clinic\"}');
    SELECT outpost_track('visits', '{\"scope\": {\"via\": \"patient_id\"}}');";

/// A tenant database at `path` holding the given clinics' rows (`per` patients each, two visits
/// per patient), with the change log's triggers.
fn tenant(path: &std::path::Path, clinics: impl Iterator<Item = usize>, per: usize) -> Connection {
    outpost_embed::register().unwrap();
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut p = tx
            .prepare("INSERT INTO patients VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        let mut v = tx
            .prepare("INSERT INTO visits VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for c in clinics {
            let clinic = format!("clinic{c:03}");
            for i in 0..per {
                let id = format!("p{c:03}-{i:05}");
                p.execute(rusqlite::params![
                    id,
                    format!("Patient {i}"),
                    "Kijiji",
                    clinic
                ])
                .unwrap();
                for k in 0..2 {
                    v.execute(rusqlite::params![
                        format!("v{c:03}-{i:05}-{k}"),
                        id,
                        "ANC",
                        "no complaints"
                    ])
                    .unwrap();
                }
            }
        }
    }
    tx.commit().unwrap();
    changelog::ensure_triggers(&mut conn).unwrap();
    conn
}

/// The best of `runs` pulls: (time, answer bytes, records).
fn timed_pull(
    conn: &mut Connection,
    since: Option<i64>,
    access: &Access,
    runs: usize,
) -> (Duration, usize, usize) {
    let mut best = Duration::MAX;
    let mut out = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        out = pull(conn, since, access).unwrap();
        best = best.min(t0.elapsed());
    }
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let records = ["patients", "visits"]
        .iter()
        .flat_map(|t| {
            ["created", "updated", "deleted"]
                .map(|l| v["changes"][t][l].as_array().map_or(0, Vec::len))
        })
        .sum();
    (best, out.len(), records)
}

#[test]
#[ignore = "benchmark: prints what a scoped token's pull costs"]
fn scoped_pull_costs_about_an_unscoped_pull_of_the_same_rows() {
    let clinics = outpost_testkit::env::number("OUTPOST_BENCH_CLINICS", 100);
    let per = outpost_testkit::env::number("OUTPOST_BENCH_PATIENTS", 1_000);
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut all = tenant(&dir.path().join("all.db"), 0..clinics, per);
    let mut one = tenant(&dir.path().join("one.db"), 42..43, per);
    println!("made the tenants in {:.1} s", t0.elapsed().as_secs_f64());
    let token = Access {
        scopes: Scopes::parse(["clinic042"]).unwrap(),
        ..Access::default()
    };
    let every = Access::default();
    let runs = 5;
    let scoped = timed_pull(&mut all, None, &token, runs);
    let alone = timed_pull(&mut one, None, &every, runs);
    let whole = timed_pull(&mut all, None, &every, 1);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "first pull, token of 1 of {clinics} scopes: {:.1} ms, {} records, {} bytes",
        ms(scoped.0),
        scoped.2,
        scoped.1
    );
    println!(
        "first pull, the same rows in a tenant holding only them, token '*': {:.1} ms, {} records, {} bytes",
        ms(alone.0),
        alone.2,
        alone.1
    );
    println!("ratio scoped / alone: {:.2}x", ms(scoped.0) / ms(alone.0));
    println!(
        "(first pull of the whole tenant, token '*': {:.1} ms, {} records)",
        ms(whole.0),
        whole.2
    );

    // A later pull after one change in every clinic: the token reads every changed row (to
    // pull those that left its scopes as deleted) and serves its own.
    let since = changelog::latest(&all).unwrap();
    all.execute(
        "UPDATE patients SET name = name || '.' WHERE id LIKE 'p%-00000'",
        [],
    )
    .unwrap();
    let since_one = changelog::latest(&one).unwrap();
    one.execute(
        "UPDATE patients SET name = name || '.' WHERE id LIKE 'p%-00000'",
        [],
    )
    .unwrap();
    let later = timed_pull(&mut all, Some(since), &token, runs);
    let later_alone = timed_pull(&mut one, Some(since_one), &every, runs);
    println!(
        "later pull ({clinics} changed rows, 1 in scope): scoped {:.2} ms ({} records), alone {:.2} ms ({} records)",
        ms(later.0),
        later.2,
        ms(later_alone.0),
        later_alone.2
    );
}
