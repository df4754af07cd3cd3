//! The workload's W4 through the apply core into PostgreSQL, next to the engine into SQLite and
//! plain PostgreSQL in the same run (docs/performance.md, "The cloud on PostgreSQL"). Ignored: a
//! benchmark that prints, run by hand.

mod common;
use common::*;
use outpost_cloud::postgres::pg_value::{Kind as PgKind, Param};
use outpost_cloud::postgres::{app_tables, apply, meta};
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{Batch, CellPayload};
use outpost_protocol::{SiteId, Value};
use outpost_testkit::pg;

/// The workload's W4 (docs/workload.md: W1's 100k patients and 200k visits exported in 512 KiB
/// chunks, applied into a fresh database) through the core into PostgreSQL, next to the engine's
/// apply of the same chunks into SQLite in the same run, one transaction per chunk on both, and
/// to PostgreSQL itself inserting the same rows into untracked copies of the tables. `OUTPOST_BENCH_SCALE` (default 0.1) scales W1. A benchmark, not a test: run it with
/// `cargo test -p outpost-cloud --release --test cloud_postgres_apply_w4 -- --ignored --nocapture`.
#[test]
#[ignore]
fn w4_apply_rate_of_the_core_into_postgresql_next_to_the_engine() {
    use outpost_testkit::e2e::workload::{insert_w1, w1_rows, W1_SCHEMA};
    use std::time::Instant;
    let Some(db) = pg::database("apply_w4") else {
        return;
    };
    let scale: f64 = std::env::var("OUTPOST_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.1);
    let tmp = tempfile::tempdir().unwrap();
    let track = "SELECT outpost_track('patients'), outpost_track('visits');";
    let open = |name: &str| {
        let c = device(&tmp.path().join(name));
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .unwrap();
        c.execute_batch(W1_SCHEMA).unwrap();
        c.query_row(track, [], |_| Ok(())).unwrap();
        c
    };
    let source = open("w1.db");
    let rows = w1_rows(scale);
    insert_w1(&source, &rows);
    let n_rows = (rows.0.len() + rows.1.len()) as f64;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut since = 0i64;
    while let Some(blob) = source
        .query_row("SELECT outpost_changes(?1, 524288)", [since], |r| {
            r.get::<_, Option<Vec<u8>>>(0)
        })
        .unwrap()
    {
        since = codec::decode_header(&blob, &Limits::default())
            .unwrap()
            .range
            .hi as i64;
        chunks.push(blob);
    }

    let target = open("w4.db");
    let t = Instant::now();
    for blob in &chunks {
        let _: String = target
            .query_row("SELECT outpost_apply(?1)", [blob], |r| r.get(0))
            .unwrap();
    }
    let engine_s = t.elapsed().as_secs_f64();
    // 16 chunks per transaction, as a first sync applies them (`outpost_apply_many`).
    let target16 = open("w4_16.db");
    let t = Instant::now();
    for group in chunks.chunks(16) {
        let marks: Vec<String> = (1..=group.len()).map(|i| format!("?{i}")).collect();
        let _: String = target16
            .query_row(
                &format!("SELECT outpost_apply_many({})", marks.join(", ")),
                rusqlite::params_from_iter(group.iter()),
                |r| r.get(0),
            )
            .unwrap();
    }
    let engine16_s = t.elapsed().as_secs_f64();

    let mut c = db.superuser();
    let site = SiteId([0x7c; 16]);
    meta::prepare(&mut c, site).unwrap();
    let first = codec::decode(&chunks[0], &Limits::default()).unwrap();
    app_tables::ensure(&mut c, &first.header.tables).unwrap();
    let mut decode_s = 0.0;
    let t = Instant::now();
    for blob in &chunks {
        let d = Instant::now();
        let batch = codec::decode(blob, &Limits::default()).unwrap();
        decode_s += d.elapsed().as_secs_f64();
        apply::apply(&mut c, site, &batch).unwrap();
    }
    let core_s = t.elapsed().as_secs_f64();
    // The same into a second database, 16 chunks per transaction (`apply::apply_many`).
    let db16 = pg::database("apply_w4_16").unwrap();
    let mut c16 = db16.superuser();
    meta::prepare(&mut c16, site).unwrap();
    app_tables::ensure(&mut c16, &first.header.tables).unwrap();
    let t = Instant::now();
    for group in chunks.chunks(16) {
        let batches: Vec<Batch> = group
            .iter()
            .map(|b| codec::decode(b, &Limits::default()).unwrap())
            .collect();
        apply::apply_many(&mut c16, site, &batches).unwrap();
    }
    let core16_s = t.elapsed().as_secs_f64();
    let held: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM public.patients) + (SELECT count(*) FROM public.visits)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(held as f64, n_rows, "every row applied");

    // The floor: PostgreSQL itself inserting the same rows into untracked copies of the tables
    // (no foreign keys, no triggers), one statement per table per chunk, as many transactions.
    c.batch_execute(
        "CREATE TABLE plain_patients (LIKE public.patients INCLUDING ALL);
         CREATE TABLE plain_visits (LIKE public.visits INCLUDING ALL);",
    )
    .unwrap();
    let t = Instant::now();
    for blob in &chunks {
        let batch = codec::decode(blob, &Limits::default()).unwrap();
        let mut tx = c.transaction().unwrap();
        for g in &batch.tables {
            let schema = &batch.header.tables[g.table as usize];
            let kinds: Vec<PgKind> = schema.columns.iter().map(PgKind::of).collect();
            let value_cols: Vec<usize> = schema.value_columns().map(usize::from).collect();
            let rows: Vec<Vec<Value>> = g
                .rows
                .iter()
                .map(|r| {
                    let mut row = vec![Value::Null; kinds.len()];
                    for (k, &i) in r.key.iter().zip(&schema.primary_key) {
                        row[i as usize] = k.clone();
                    }
                    for cell in &r.cells {
                        if let CellPayload::Value(v) = &cell.payload {
                            row[value_cols[cell.column as usize]] = v.clone();
                        }
                    }
                    row
                })
                .collect();
            let arrays: Vec<String> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| format!("${}::{}", i + 1, k.array_type()))
                .collect();
            let columns: Vec<Vec<Param>> = (0..kinds.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| Param {
                            value: &r[i],
                            kind: kinds[i],
                        })
                        .collect()
                })
                .collect();
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                columns.iter().map(|c| c as _).collect();
            tx.execute(
                &format!(
                    "INSERT INTO plain_{} SELECT * FROM unnest({})",
                    schema.name,
                    arrays.join(", ")
                ),
                &params,
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let plain_s = t.elapsed().as_secs_f64();
    println!(
        "W4 ({n_rows} rows, {} chunks of at most 512 KiB, one transaction each):\n  \
         engine into SQLite       {:>8.0} rows/s ({engine_s:.2} s)\n  \
         core into PostgreSQL     {:>8.0} rows/s ({core_s:.2} s; decoding {:.1}% of it)   \
         core / engine {:.2}x\n  \
         16 chunks per transaction: engine {:.0} rows/s, core {:.0} rows/s\n  \
         plain PostgreSQL inserts {:>8.0} rows/s ({plain_s:.2} s)   core / plain {:.2}x",
        chunks.len(),
        n_rows / engine_s,
        n_rows / core_s,
        decode_s / core_s * 100.0,
        engine_s / core_s,
        n_rows / engine16_s,
        n_rows / core16_s,
        n_rows / plain_s,
        plain_s / core_s,
    );
}

/// What the quarantine retry after each apply costs (`outpost_apply_core`'s `retry.rs`, the
/// engine's `apply/retry.rs`): one-row batches applied to the engine on SQLite and to the core
/// on PostgreSQL, first with an empty quarantine, then beside `OUTPOST_BENCH_ENTRIES` (default
/// 1,000) entries of a table neither target tracks, which every apply merges again. A benchmark,
/// not a test: run it with `cargo test -p outpost-cloud --release --test cloud_postgres_apply_w4
/// -- --ignored --nocapture an_apply_beside`.
#[test]
#[ignore]
fn an_apply_beside_many_quarantine_entries() {
    use std::time::Instant;
    let Some(db) = pg::database("apply_beside_entries") else {
        return;
    };
    let entries: usize = std::env::var("OUTPOST_BENCH_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let patients = "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
        SELECT outpost_track('patients');";
    let source = device(&tmp.path().join("source.db"));
    source
        .execute_batch(&format!(
            "{patients} CREATE TABLE drafts(id TEXT PRIMARY KEY NOT NULL, body TEXT);
             SELECT outpost_track('drafts');"
        ))
        .unwrap();
    let lite = device(&tmp.path().join("target.db"));
    lite.execute_batch(patients).unwrap();
    let mut c = db.superuser();
    let site = SiteId([0x7d; 16]);
    meta::prepare(&mut c, site).unwrap();
    let mut sent = 0i64;
    let mut next = |sql: &str| -> Vec<u8> {
        source.execute_batch(sql).unwrap();
        let blob: Vec<u8> = source
            .query_row("SELECT outpost_changes(?1)", [sent], |r| r.get(0))
            .unwrap();
        sent = codec::decode_header(&blob, &Limits::default())
            .unwrap()
            .range
            .hi as i64;
        blob
    };
    // Per one-row apply: (engine ms, core ms), averaged over `n`.
    let timed = |c: &mut ::postgres::Client, blobs: &[Vec<u8>]| -> (f64, f64) {
        let (mut lite_s, mut core_s) = (0.0, 0.0);
        for blob in blobs {
            let t = Instant::now();
            let _: String = lite
                .query_row("SELECT outpost_apply(?1)", [blob], |r| r.get(0))
                .unwrap();
            lite_s += t.elapsed().as_secs_f64();
            let batch = codec::decode(blob, &Limits::default()).unwrap();
            let tracked: Vec<_> = batch
                .header
                .tables
                .iter()
                .filter(|t| t.name == "patients")
                .cloned()
                .collect();
            app_tables::ensure(c, &tracked).unwrap();
            let t = Instant::now();
            apply::apply(c, site, &batch).unwrap();
            core_s += t.elapsed().as_secs_f64();
        }
        let n = blobs.len() as f64;
        (lite_s * 1000.0 / n, core_s * 1000.0 / n)
    };
    let n = 20;
    let one = |i: usize| format!("INSERT INTO patients(id, name) VALUES ('p{i}', 'Asha');");
    let before: Vec<Vec<u8>> = (0..n).map(|i| next(&one(i))).collect();
    let (lite_empty, core_empty) = timed(&mut c, &before);
    let drafts: String = (0..entries)
        .map(|i| format!("INSERT INTO drafts(id, body) VALUES ('d{i}', 'draft');"))
        .collect();
    let aside = next(&drafts);
    timed(&mut c, &[aside]);
    let listed: i64 = c
        .query_one("SELECT count(*) FROM outpost.quarantine", &[])
        .unwrap()
        .get(0);
    assert_eq!(listed as usize, entries, "every draft quarantined");
    let after: Vec<Vec<u8>> = (n..2 * n).map(|i| next(&one(i))).collect();
    let (lite_full, core_full) = timed(&mut c, &after);
    eprintln!(
        "one-row apply, mean of {n}: engine on SQLite {lite_empty:.2} ms with an empty \
         quarantine, {lite_full:.2} ms beside {entries} entries; core on PostgreSQL \
         {core_empty:.2} ms, {core_full:.2} ms"
    );
}
