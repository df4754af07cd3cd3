//! Cost of the write-time scope checks (docs/sql-api.md, `outpost_check_scope`): the same inserts into
//! a tracked table without a scope, with a scope column on a device with no grant, and on a
//! device granted one scope by the scripted hub (`common/scripted_hub.rs`), in bulk (one
//! transaction, one `INSERT` per row, as W1), in small transactions (10 rows each, as W1
//! small) and one row per transaction (where each insert reads `PRAGMA data_version` once:
//! `scope_check.rs`). Medians of several alternating runs. Prints figures, asserts nothing timed. Run with
//! `cargo test --release -p outpost --test scopes_bench -- --ignored --nocapture`
//! (`OUTPOST_BENCH_ROWS`, `OUTPOST_BENCH_RUNS` change the sizes).

mod common;
use common::scripted_hub::Hub;
use common::Replica;
use outpost_protocol::SiteId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const SCHEMA: &str =
    "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, village TEXT, clinic TEXT)";

#[derive(Clone, Copy, Debug)]
enum Variant {
    Unscoped,
    ScopedNoGrant,
    ScopedGranted,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh device of `variant`, with the hub that granted it (kept alive with it).
fn device(variant: Variant) -> (Replica, Option<Hub>) {
    let r = Replica::new("bench", SCHEMA);
    match variant {
        Variant::Unscoped => {
            r.track("patients", None);
            (r, None)
        }
        Variant::ScopedNoGrant => {
            r.track("patients", Some(r#"{"scope": "clinic"}"#));
            (r, None)
        }
        Variant::ScopedGranted => {
            r.track("patients", Some(r#"{"scope": "clinic"}"#));
            let hub = Hub::start();
            hub.enroll(&r);
            let site = SiteId::from_slice(&hex::decode(r.site_hex()).unwrap()).unwrap();
            hub.grant(site, 1, &["moshi"]);
            hub.sync(&r);
            (r, Some(hub))
        }
    }
}

/// Seconds to insert `rows` rows in transactions of `per_txn` rows.
fn insert(r: &Replica, rows: usize, per_txn: usize, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids: Vec<String> = (0..rows)
        .map(|_| format!("{:032x}", rng.gen::<u128>()))
        .collect();
    let mut s = r
        .conn
        .prepare("INSERT INTO patients(id, name, village, clinic) VALUES (?1, ?2, ?3, 'moshi')")
        .unwrap();
    let t = Instant::now();
    for chunk in ids.chunks(per_txn) {
        r.conn.execute_batch("BEGIN").unwrap();
        for id in chunk {
            s.execute(rusqlite::params![id, "Amina Juma", "Kibosho"])
                .unwrap();
        }
        r.conn.execute_batch("COMMIT").unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: prints figures"]
fn scope_check_cost() {
    let rows = env_usize("OUTPOST_BENCH_ROWS", 100_000);
    let runs = env_usize("OUTPOST_BENCH_RUNS", 5);
    let variants = [
        Variant::Unscoped,
        Variant::ScopedNoGrant,
        Variant::ScopedGranted,
    ];
    for (label, total, per_txn) in [
        ("bulk (1 txn)", rows, rows),
        ("small (txns of 10)", rows / 10, 10),
        ("single (txns of 1)", rows / 20, 1),
    ] {
        let mut times = vec![Vec::new(); variants.len()];
        for run in 0..runs {
            for (i, v) in variants.iter().enumerate() {
                let (r, _hub) = device(*v);
                times[i].push(insert(&r, total, per_txn, run as u64));
            }
        }
        let base = median(times[0].clone());
        for (v, t) in variants.iter().zip(times) {
            let m = median(t);
            println!(
                "{label:>18}, {:>13}: {total} rows in {:7.1} ms, {:6.2} us/row, {:.3}x unscoped",
                format!("{v:?}"),
                m * 1000.0,
                m * 1e6 / total as f64,
                m / base
            );
        }
    }
}
