//! The WatermelonDB REST API on a tenant in PostgreSQL (issue 21, docs/rest-api.md), through a
//! real `outpost-cloud run` and HTTPS against a database of the test's own on the test cluster
//! (`outpost_testkit::pg`): first and incremental pulls, created / updated / deleted, pushes all
//! or nothing, 409 on a stale push, `_changed`, values that do not fit their PostgreSQL type,
//! a back office's `psql` writes in pulls and in conflicts, table rights and token scopes
//! (pull, push, referral). And the change log under concurrent writers: a pull's `timestamp`
//! never misses a later commit.

mod common;
use common::*;
use outpost_cloud::postgres::{app_tables, rest_pull};
use outpost_cloud::Access;
use outpost_protocol::batch::{ColumnSchema, ForeignKey, TableSchema};
use outpost_protocol::scope::ScopeColumn;
use outpost_protocol::Strategy;
use outpost_testkit::pg::{self, psql, TestDatabase};
use postgres::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn col(name: &str, decl: &str, not_null: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: decl.into(),
        strategy: Strategy::Lww,
        not_null,
    }
}

/// `patients(id, name NOT NULL, age, active, clinic, photo BLOB)` and `visits(id, patient_id →
/// patients, note)`; scoped by `clinic`, visits `via` their patient, when `scoped`.
fn tables(scoped: bool) -> Vec<TableSchema> {
    vec![
        TableSchema {
            name: "patients".into(),
            columns: vec![
                col("id", "TEXT", true),
                col("name", "TEXT", true),
                col("age", "INTEGER", false),
                col("active", "INTEGER", false),
                col("clinic", "TEXT", false),
                col("photo", "BLOB", false),
            ],
            primary_key: vec![0],
            foreign_keys: vec![],
            scope: scoped.then_some(ScopeColumn::Column(4)),
        },
        TableSchema {
            name: "visits".into(),
            columns: vec![
                col("id", "TEXT", true),
                col("patient_id", "TEXT", false),
                col("note", "TEXT", false),
            ],
            primary_key: vec![0],
            foreign_keys: vec![ForeignKey {
                columns: vec![1],
                parent: "patients".into(),
                parent_columns: vec![],
            }],
            scope: scoped.then_some(ScopeColumn::Via(1)),
        },
        // A key that is not text: WatermelonDB's string ids are cast to it.
        TableSchema {
            name: "tallies".into(),
            columns: vec![col("id", "INTEGER", true), col("n", "INTEGER", false)],
            primary_key: vec![0],
            foreign_keys: vec![],
            scope: None,
        },
    ]
}

/// A data directory made with `init --unsealed --postgres` against a new test database, whose
/// tables the test makes as a device's batch header would (`app_tables::ensure`, which installs
/// capture and the REST change log), with a `CHECK` a back office added.
fn postgres_tenant(test: &str, scoped: bool) -> Option<(tempfile::TempDir, PathBuf, TestDatabase)> {
    let db = pg::database(test)?;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cloud");
    let d = data.to_str().unwrap();
    cli_ok(&["init", "--unsealed", "--data", d, "--postgres", &db.url]);
    let mut c = db.superuser();
    app_tables::ensure(&mut c, &tables(scoped)).unwrap();
    c.batch_execute("ALTER TABLE public.patients ADD CHECK (age >= 0)")
        .unwrap();
    Some((tmp, data, db))
}

/// A superuser connection to `db` prepared as a tenant (no cloud process), its unscoped tables
/// made as a device's batch header would.
fn prepared(db: &TestDatabase) -> Client {
    let mut c = db.superuser();
    outpost_cloud::postgres::meta::prepare(
        &mut c,
        outpost_protocol::SiteId::from_slice(&[7; 16]).unwrap(),
    )
    .unwrap();
    app_tables::ensure(&mut c, &tables(false)).unwrap();
    c
}

#[test]
fn a_watermelon_client_syncs_with_a_postgres_tenant() {
    let Some((_tmp, data, db)) = postgres_tenant("rest_pg_client", false) else {
        return;
    };
    let token = api_token(&data, "app");
    let run = start(&data);
    let rest = Rest::new(&data, &run.https, &token);

    // First pull: nothing yet, every table listed.
    let (s, first) = rest.pull(None);
    assert_eq!(s, 200, "{first}");
    assert_eq!(
        first["changes"]["patients"]["created"],
        json!([]),
        "{first}"
    );
    assert_eq!(first["changes"]["visits"]["deleted"], json!([]), "{first}");
    let t0 = first["timestamp"].as_i64().unwrap();

    // Push creates, booleans as 1/0, a blob as hex, WatermelonDB's columns ignored.
    let (s, r) = rest.push(
        t0,
        &json!({"patients": {"created": [
            {"id": "p1", "name": "Asha", "age": 31, "active": true, "photo": "00ff", "_status": "created", "_changed": ""},
            {"id": "p2", "name": "Bo", "age": 40, "active": false}
        ], "updated": [], "deleted": []},
        "visits": {"created": [{"id": "v1", "patient_id": "p1", "note": "fever"}], "updated": [], "deleted": []}}),
    );
    assert_eq!((s, &r), (200, &json!({"written": 3})));
    // Real rows with real types, read back as a back office would.
    assert_eq!(
        psql(
            &db.url,
            "SELECT id, name, age, active, encode(photo, 'hex') FROM public.patients ORDER BY id"
        ),
        ["p1|Asha|31|1|00ff", "p2|Bo|40|0|"]
    );
    let (_, p1) = rest.pull(Some(t0));
    assert_eq!(
        records(&p1, "patients", "created"),
        vec![
            json!({"id": "p1", "name": "Asha", "age": 31, "active": 1, "clinic": null, "photo": "00ff"}),
            json!({"id": "p2", "name": "Bo", "age": 40, "active": 0, "clinic": null, "photo": null})
        ]
    );
    assert_eq!(records(&p1, "visits", "created").len(), 1);
    let t1 = p1["timestamp"].as_i64().unwrap();
    assert!(t1 > t0);

    // Nothing changed since t1.
    let (_, empty) = rest.pull(Some(t1));
    assert_eq!(empty["timestamp"].as_i64().unwrap(), t1);
    for k in ["created", "updated", "deleted"] {
        assert!(records(&empty, "patients", k).is_empty(), "{empty}");
    }

    // Update one, delete the other (and an id that never existed): a pull from t1 shows that.
    let (s, r) = rest.push(
        t1,
        &json!({"visits": {"deleted": ["v1"]}, "patients": {"created": [], "updated": [{"id": "p1", "age": 32}], "deleted": ["p2", "never-existed"]}}),
    );
    assert_eq!((s, &r), (200, &json!({"written": 3})), "{r}");
    let (_, p2) = rest.pull(Some(t1));
    assert_eq!(
        records(&p2, "patients", "updated"),
        vec![
            json!({"id": "p1", "name": "Asha", "age": 32, "active": 1, "clinic": null, "photo": "00ff"})
        ]
    );
    assert!(records(&p2, "patients", "created").is_empty());
    assert_eq!(records(&p2, "patients", "deleted"), vec![json!("p2")]);
    assert_eq!(records(&p2, "visits", "deleted"), vec![json!("v1")]);
    let t2 = p2["timestamp"].as_i64().unwrap();

    // A first pull lists only live records, as created, and no deletions.
    let (_, again) = rest.pull(None);
    assert_eq!(records(&again, "patients", "created").len(), 1);
    assert!(records(&again, "patients", "deleted").is_empty());

    // A stale push (from t1; p1 changed at t2) is a 409 and writes nothing.
    let (s, r) = rest.push(
        t1,
        &json!({"patients": {"created": [{"id": "p9", "name": "New"}], "updated": [{"id": "p1", "age": 99}]}}),
    );
    assert_eq!(s, 409, "{r}");
    assert!(r["error"].as_str().unwrap().contains("patients/p1"), "{r}");
    assert_eq!(psql(&db.url, "SELECT count(*) FROM public.patients"), ["1"]);

    // All or nothing: a foreign key failing at commit, a CHECK, a NOT NULL: 400, nothing written.
    // (The writes go in batches; a refused batch is run again a record at a time, so the answer
    // names the record.)
    for (bad, says, record) in [
        (
            json!({"visits": {"created": [{"id": "v2", "patient_id": "nobody"}]}, "patients": {"created": [{"id": "p3", "name": "C"}]}}),
            "foreign key",
            "at commit",
        ),
        (
            json!({"patients": {"created": [{"id": "p3", "name": "C"}, {"id": "p4", "name": "D", "age": -1}]}}),
            "check",
            "patients/p4",
        ),
        (
            json!({"patients": {"created": [{"id": "p3", "name": "C"}, {"id": "p4", "age": 5}]}}),
            "null",
            "patients/p4",
        ),
    ] {
        let (s, r) = rest.push(t2, &bad);
        assert_eq!(s, 400, "{r}");
        let e = r["error"].as_str().unwrap();
        assert!(e.to_lowercase().contains(says) && e.contains(record), "{r}");
        assert_eq!(
            psql(&db.url, "SELECT count(*) FROM public.patients"),
            ["1"],
            "{r}"
        );
    }
    // A value its column's real type cannot hold: 400 naming the column, nothing written.
    for (bad, column) in [
        (json!({"id": "p3", "name": "C", "age": "old"}), "age"),
        (json!({"id": "p3", "name": "C", "age": 3.5}), "age"),
        (json!({"id": "p3", "name": 7}), "name"),
        (
            json!({"id": "p3", "name": "C", "photo": "not hex"}),
            "photo",
        ),
    ] {
        let (s, r) = rest.push(t2, &json!({"patients": {"created": [bad]}}));
        assert_eq!(s, 400, "{r}");
        let e = r["error"].as_str().unwrap();
        assert!(
            e.contains(&format!("{column:?}")) && e.contains("patients/p3"),
            "{r}"
        );
    }
    assert_eq!(psql(&db.url, "SELECT count(*) FROM public.patients"), ["1"]);

    // A record given twice in one push (created, then updated): the update sees the insert.
    let (s, r) = rest.push(
        t2,
        &json!({"patients": {"created": [{"id": "d1", "name": "Twice", "age": 1}], "updated": [{"id": "d1", "age": 2}], "deleted": ["d1"]}}),
    );
    assert_eq!((s, &r), (200, &json!({"written": 3})), "{r}");
    assert_eq!(
        psql(
            &db.url,
            "SELECT count(*) FROM public.patients WHERE id = 'd1'"
        ),
        ["0"]
    );
    // (d1 changed after t2: a push of it from t2 would be a conflict.)
    let (_, now) = rest.pull(Some(t2));
    let (s, r) = rest.push(
        now["timestamp"].as_i64().unwrap(),
        &json!({"patients": {"created": [{"id": "d1", "name": "Twice", "age": 1}], "updated": [{"id": "d1", "age": 2}]}}),
    );
    assert_eq!((s, &r), (200, &json!({"written": 2})), "{r}");
    assert_eq!(
        psql(
            &db.url,
            "SELECT name, age FROM public.patients WHERE id = 'd1'"
        ),
        ["Twice|2"]
    );
    psql(&db.url, "DELETE FROM public.patients WHERE id = 'd1'");

    // A table keyed by an integer: ids travel as strings, a string that is no integer is a 400.
    let (s, r) = rest.push(t2, &json!({"tallies": {"created": [{"id": "7", "n": 1}]}}));
    assert_eq!((s, &r), (200, &json!({"written": 1})), "{r}");
    let (_, tallies) = rest.pull(Some(t2));
    assert_eq!(
        records(&tallies, "tallies", "created"),
        [json!({"id": 7, "n": 1})]
    );
    let (s, r) = rest.push(
        tallies["timestamp"].as_i64().unwrap(),
        &json!({"tallies": {"updated": [{"id": "7", "n": 2}, {"id": "seven", "n": 3}]}}),
    );
    assert_eq!(s, 400, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("tallies/seven"),
        "{r}"
    );
    assert_eq!(psql(&db.url, "SELECT n FROM public.tallies"), ["1"]);

    // `_changed`: a stale copy of a column the client did not change does not undo a newer write.
    psql(
        &db.url,
        "UPDATE public.patients SET name = 'Asha K' WHERE id = 'p1'",
    );
    let (_, p3) = rest.pull(Some(t2));
    // The back office's write is in the pull, as updated.
    assert_eq!(
        records(&p3, "patients", "updated")[0]["name"],
        "Asha K",
        "{p3}"
    );
    let t3 = p3["timestamp"].as_i64().unwrap();
    assert!(t3 > t2);
    let (s, r) = rest.push(
        t3,
        &json!({"patients": {"updated": [{"id": "p1", "name": "Asha", "age": 33, "_changed": "age"}]}}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        psql(&db.url, "SELECT name, age FROM public.patients"),
        ["Asha K|33"]
    );

    // A back-office write after the client's pull makes its push of that record a 409.
    let (_, p4) = rest.pull(Some(t3));
    let t4 = p4["timestamp"].as_i64().unwrap();
    psql(
        &db.url,
        "UPDATE public.patients SET active = 0 WHERE id = 'p1'",
    );
    let (s, r) = rest.push(
        t4,
        &json!({"patients": {"updated": [{"id": "p1", "age": 34}]}}),
    );
    assert_eq!(s, 409, "{r}");
    // A back-office delete shows as deleted; a back-office insert as created.
    psql(
        &db.url,
        "BEGIN; DELETE FROM public.patients WHERE id = 'p1'; \
         INSERT INTO public.patients(id, name) VALUES ('o1', 'Office'); COMMIT;",
    );
    let (_, p5) = rest.pull(Some(t4));
    assert_eq!(
        records(&p5, "patients", "deleted"),
        vec![json!("p1")],
        "{p5}"
    );
    assert_eq!(records(&p5, "patients", "created")[0]["id"], "o1", "{p5}");

    // The REST pushes were captured as the cloud's own changes (devices get them).
    let captured = psql(&db.url, "SELECT count(*) > 0 FROM outpost.outbox");
    assert_eq!(captured, ["t"]);

    // A token with its own table rights: reads only patients, may not write it.
    let d = data.to_str().unwrap();
    let reader = cli_ok(&["api-token", "--data", d, "reader", "--tables", "patients:r"])
        .trim()
        .to_string();
    let reader = Rest::new(&data, &run.https, &reader);
    let (s, r) = reader.pull(None);
    assert_eq!(s, 200, "{r}");
    assert!(r["changes"].get("visits").is_none(), "{r}");
    assert_eq!(records(&r, "patients", "created").len(), 1, "{r}");
    let (s, r) = reader.push(
        r["timestamp"].as_i64().unwrap(),
        &json!({"patients": {"created": [{"id": "r1", "name": "R"}]}}),
    );
    assert_eq!(s, 403, "{r}");
    assert_eq!(
        psql(
            &db.url,
            "SELECT count(*) FROM public.patients WHERE id = 'r1'"
        ),
        ["0"]
    );
}

#[test]
fn a_scoped_token_pulls_and_pushes_only_its_scopes_on_a_postgres_tenant() {
    let Some((_tmp, data, db)) = postgres_tenant("rest_pg_scopes", true) else {
        return;
    };
    let d = data.to_str().unwrap();
    let all = api_token(&data, "office");
    let moshi = cli_ok(&["api-token", "--data", d, "moshi-app", "--scopes", "moshi"])
        .trim()
        .to_string();
    let run = start(&data);
    let all = Rest::new(&data, &run.https, &all);
    let moshi = Rest::new(&data, &run.https, &moshi);

    let (_, first) = all.pull(None);
    let t0 = first["timestamp"].as_i64().unwrap();
    let (s, r) = all.push(
        t0,
        &json!({"patients": {"created": [
            {"id": "m1", "name": "M", "clinic": "moshi"},
            {"id": "t1", "name": "T", "clinic": "tanga"}
        ]}, "visits": {"created": [
            {"id": "vm", "patient_id": "m1", "note": "a"},
            {"id": "vt", "patient_id": "t1", "note": "b"}
        ]}}),
    );
    assert_eq!(s, 200, "{r}");

    // The scoped token's first pull: moshi's patient and its visit only.
    let (s, p) = moshi.pull(None);
    assert_eq!(s, 200, "{p}");
    let ids = |p: &Value, t: &str| -> Vec<Value> {
        records(p, t, "created")
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    assert_eq!(ids(&p, "patients"), [json!("m1")], "{p}");
    assert_eq!(ids(&p, "visits"), [json!("vm")], "{p}");
    let t1 = p["timestamp"].as_i64().unwrap();

    // Pushing into a scope it does not hold: 403, nothing written; into its own: 200.
    let (s, r) = moshi.push(
        t1,
        &json!({"patients": {"created": [{"id": "x", "name": "X", "clinic": "tanga"}]}}),
    );
    assert_eq!(s, 403, "{r}");
    assert!(r["error"].as_str().unwrap().contains("tanga"), "{r}");
    let (s, r) = moshi.push(
        t1,
        &json!({"visits": {"created": [{"id": "vx", "patient_id": "t1"}]}}),
    );
    assert_eq!(s, 403, "{r}");
    let (s, r) = moshi.push(
        t1,
        &json!({"patients": {"updated": [{"id": "t1", "name": "mine"}]}}),
    );
    assert_eq!(s, 403, "{r}");
    let (s, r) = moshi.push(
        t1,
        &json!({"patients": {"created": [{"id": "m2", "name": "M2"}]}}),
    );
    assert_eq!(s, 400, "a created row without a scope: {r}");
    assert_eq!(psql(&db.url, "SELECT count(*) FROM public.patients"), ["2"]);
    assert_eq!(psql(&db.url, "SELECT count(*) FROM public.visits"), ["2"]);
    let (s, r) = moshi.push(
        t1,
        &json!({"visits": {"created": [{"id": "vm2", "patient_id": "m2"}]}, "patients": {"created": [{"id": "m2", "name": "M2", "clinic": "moshi"}]}}),
    );
    assert_eq!(s, 200, "a child before its parent, in one push: {r}");
    let (_, p) = moshi.pull(Some(t1));
    let t2 = p["timestamp"].as_i64().unwrap();

    // A referral by the back office (psql): m1 moves to tanga; the scoped token's next pull
    // names m1 and its visit as deleted, and nothing of tanga's that never was its.
    psql(
        &db.url,
        "UPDATE public.patients SET clinic = 'tanga' WHERE id = 'm1'",
    );
    psql(
        &db.url,
        "UPDATE public.visits SET note = 'c' WHERE id = 'vt'",
    );
    let (_, p) = moshi.pull(Some(t2));
    assert_eq!(records(&p, "patients", "deleted"), [json!("m1")], "{p}");
    assert_eq!(records(&p, "visits", "deleted"), [json!("vm")], "{p}");
    assert!(records(&p, "visits", "updated").is_empty(), "{p}");
    // The office's token sees the move as an update of m1 and of its visit.
    let (_, p) = all.pull(Some(t2));
    let updated: Vec<Value> = records(&p, "visits", "updated")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(updated, [json!("vm"), json!("vt")], "{p}");
    let t3 = p["timestamp"].as_i64().unwrap();

    // Deleted outright by the back office: moshi's patient m2 with its visit, and tanga's visit
    // vt. The moshi token is told of m2 and vm2 (through m2's entry), not of vt.
    psql(
        &db.url,
        "DELETE FROM public.visits WHERE id IN ('vm2', 'vt'); DELETE FROM public.patients WHERE id = 'm2'",
    );
    let (_, p) = moshi.pull(Some(t3));
    assert_eq!(records(&p, "patients", "deleted"), [json!("m2")], "{p}");
    assert_eq!(records(&p, "visits", "deleted"), [json!("vm2")], "{p}");
}

/// The change log's clock under concurrent writers (PostgreSQL is not single-writer): writers
/// on several connections (back-office writes, captured, and writes as the apply core makes
/// them, not captured) commit transactions of random lengths while a reader pulls over and
/// over from the last `timestamp` it got. Every row's last value must reach the reader: a
/// timestamp that ran ahead of a transaction committing later would lose its rows forever.
#[test]
fn pulls_under_concurrent_writers_miss_no_commit() {
    let Some(db) = pg::database("rest_pg_concurrent") else {
        return;
    };
    let mut c = prepared(&db);
    let writers = 4;
    let per_writer = 60;
    let done = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                let mut seed = 0x9e37_79b9_u32.wrapping_mul(w + 1);
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed
                };
                for n in 0..per_writer {
                    let mut tx = c.transaction().unwrap();
                    if w % 2 == 1 {
                        // As the apply core writes devices' changes: not captured, so capture's
                        // clock lock does not order these; the change log's own must.
                        tx.batch_execute("SET LOCAL outpost.applying = 'on'")
                            .unwrap();
                    }
                    // A few rows each: inserts, then updates of earlier ones.
                    let id = format!("w{w}-{}", n % 20);
                    tx.execute(
                        "INSERT INTO public.patients(id, name, age) VALUES ($1, 'x', $2) \
                         ON CONFLICT (id) DO UPDATE SET age = excluded.age",
                        &[&id, &(n as i64)],
                    )
                    .unwrap();
                    // Held open a while after taking its time: later writers queue behind it.
                    std::thread::sleep(Duration::from_millis(u64::from(next() % 15)));
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let url = db.url.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(&url, postgres::NoTls).unwrap();
            let mut seen: BTreeMap<String, i64> = BTreeMap::new();
            let mut since = None;
            let mut last_round = false;
            let mut pulls = 0;
            loop {
                let answer = rest_pull::pull(&mut c, since, &Access::default()).unwrap();
                let answer: Value = serde_json::from_slice(&answer).unwrap();
                for kind in ["created", "updated"] {
                    for r in answer["changes"]["patients"][kind].as_array().unwrap() {
                        seen.insert(
                            r["id"].as_str().unwrap().to_string(),
                            r["age"].as_i64().unwrap(),
                        );
                    }
                }
                let t = answer["timestamp"].as_i64().unwrap();
                assert!(since.is_none_or(|s| t >= s), "the timestamp went back");
                since = Some(t);
                pulls += 1;
                if last_round {
                    return (seen, pulls);
                }
                last_round = done.load(Ordering::SeqCst);
            }
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (seen, pulls) = reader.join().unwrap();
    let rows: BTreeMap<String, i64> = c
        .query("SELECT id, age FROM public.patients", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    println!("{pulls} pulls during {} transactions", writers * per_writer);
    assert_eq!(rows.len(), (writers * 20) as usize);
    assert_eq!(seen, rows, "what the pulls saw last of each row");
}

/// What a large push costs on a PostgreSQL tenant next to a SQLite one, through the same HTTPS
/// server (docs/rest-api.md, "On a PostgreSQL tenant"). A benchmark, not a test: run it with
/// `cargo test -p outpost-cloud --release --test cloud_rest_postgres -- --ignored --nocapture`.
#[test]
#[ignore]
fn a_large_push_on_postgres_next_to_sqlite() {
    let Some((_tmp, data, _db)) = postgres_tenant("rest_pg_push_bench", false) else {
        return;
    };
    let n = 20_000;
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("p{i}"), "name": format!("name {i}"), "age": i % 90}))
        .collect();
    let body = json!({"patients": {"created": records}});
    let timed = |rest: &Rest| {
        let (_, first) = rest.pull(None);
        let t = first["timestamp"].as_i64().unwrap();
        let start = std::time::Instant::now();
        let (s, r) = rest.push(t, &body);
        let push = start.elapsed();
        assert_eq!(s, 200, "{r}");
        let start = std::time::Instant::now();
        let (s, p) = rest.pull(Some(t));
        let pull = start.elapsed();
        assert_eq!(s, 200);
        assert_eq!(
            p["changes"]["patients"]["created"]
                .as_array()
                .unwrap()
                .len(),
            n
        );
        (push, pull)
    };
    let token = api_token(&data, "app");
    let run = start(&data);
    let (pg_push, pg_pull) = timed(&Rest::new(&data, &run.https, &token));
    let sqlite = tempfile::tempdir().unwrap();
    let (sdata, srun, stoken) = running_with_patients(sqlite.path());
    device(&sdata.join("tenant.db"))
        .execute_batch("ALTER TABLE patients ADD COLUMN age INTEGER")
        .ok();
    let (sq_push, sq_pull) = timed(&Rest::new(&sdata, &srun.https, &stoken));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "push of {n} records: PostgreSQL {pg_push:.2?} ({:.0} records/s), SQLite {sq_push:.2?} \
         ({:.0} records/s)\npull of them: PostgreSQL {pg_pull:.2?}, SQLite {sq_pull:.2?}",
        rate(pg_push),
        rate(sq_push)
    );
}

/// A back-office role with rights on the app's table only (none on schema `outpost`) writes,
/// and its rows are logged (the log's triggers run as the cloud's role); a tenant whose tables
/// were captured before the REST log existed gets it at the first REST call, its rows logged.
#[test]
fn the_log_serves_a_back_office_role_and_tables_captured_before_it() {
    let Some((_tmp, data, db)) = postgres_tenant("rest_pg_ensure", false) else {
        return;
    };
    let (office, office_url) = db.role("office");
    psql(
        &db.url,
        &format!("GRANT SELECT, INSERT, UPDATE, DELETE ON public.patients TO \"{office}\""),
    );
    psql(
        &office_url,
        "INSERT INTO public.patients(id, name) VALUES ('o1', 'By the office')",
    );
    // As a tenant captured before the log: its triggers and rows gone.
    psql(
        &db.url,
        "DROP TRIGGER outpost_rest_log_i ON public.patients; \
         DROP TRIGGER outpost_rest_log_u ON public.patients; \
         DROP TRIGGER outpost_rest_log_d ON public.patients; \
         DELETE FROM outpost.rest_log;",
    );
    psql(
        &office_url,
        "INSERT INTO public.patients(id, name) VALUES ('o2', 'Unlogged')",
    );
    let token = api_token(&data, "app");
    let run = start(&data);
    let rest = Rest::new(&data, &run.https, &token);
    let (s, first) = rest.pull(None);
    assert_eq!(s, 200, "{first}");
    let ids: Vec<Value> = records(&first, "patients", "created")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!("o1"), json!("o2")], "{first}");
    let t = first["timestamp"].as_i64().unwrap();
    psql(
        &office_url,
        "UPDATE public.patients SET name = 'Renamed' WHERE id = 'o1'",
    );
    let (_, later) = rest.pull(Some(t));
    assert_eq!(
        records(&later, "patients", "updated"),
        [
            json!({"id": "o1", "name": "Renamed", "age": null, "active": null, "clinic": null, "photo": null})
        ],
        "{later}"
    );
}

/// The log of an `INSERT` of many rows (`rest_log.sql`'s `rest_log_insert`): new ids appended
/// at once, and a statement holding an id logged already (a row deleted before) logged by the
/// upsert instead, with the same facts: the resurrected row created again, the others created,
/// nothing lost to the refused append.
#[test]
fn a_large_insert_logs_new_rows_and_rows_deleted_before() {
    let Some(db) = pg::database("rest_pg_large_insert") else {
        return;
    };
    let mut c = prepared(&db);
    let pull = |c: &mut Client, since: Option<i64>| -> Value {
        let answer = rest_pull::pull(c, since, &Access::default()).unwrap();
        serde_json::from_slice(&answer).unwrap()
    };
    let ids = |answer: &Value, kind: &str| -> Vec<String> {
        let mut ids: Vec<String> = answer["changes"]["patients"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| match r {
                Value::String(id) => id.clone(),
                r => r["id"].as_str().unwrap().to_string(),
            })
            .collect();
        ids.sort();
        ids
    };
    let expected = |range: std::ops::Range<u32>| -> Vec<String> {
        let mut v: Vec<String> = range.map(|i| format!("p{i:03}")).collect();
        v.sort();
        v
    };
    // 150 rows in one statement: appended.
    c.batch_execute(
        "INSERT INTO public.patients(id, name) \
         SELECT 'p' || lpad(i::text, 3, '0'), 'first' FROM generate_series(0, 149) i",
    )
    .unwrap();
    let first = pull(&mut c, None);
    assert_eq!(ids(&first, "created"), expected(0..150), "{first}");
    let t1 = first["timestamp"].as_i64().unwrap();
    c.batch_execute("DELETE FROM public.patients WHERE id = 'p007'")
        .unwrap();
    let second = pull(&mut c, Some(t1));
    assert_eq!(ids(&second, "deleted"), ["p007"], "{second}");
    let t2 = second["timestamp"].as_i64().unwrap();
    // 150 rows again, one of which (p007) the log holds as deleted: the append is refused
    // and the upsert logs them all.
    c.batch_execute(
        "INSERT INTO public.patients(id, name) \
         SELECT 'p' || lpad(i::text, 3, '0'), 'second' FROM generate_series(150, 298) i \
         UNION ALL SELECT 'p007', 'back'",
    )
    .unwrap();
    let third = pull(&mut c, Some(t2));
    let mut created = expected(150..299);
    created.push("p007".into());
    created.sort();
    assert_eq!(ids(&third, "created"), created, "{third}");
    assert!(ids(&third, "updated").is_empty(), "{third}");
    assert!(ids(&third, "deleted").is_empty(), "{third}");
    let logged: i64 = c
        .query_one(
            "SELECT count(*) FROM outpost.rest_log WHERE tbl = 'patients' AND NOT deleted",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(logged, 299);
    // The REST clock moved for that statement: it is taken before the append's subtransaction,
    // so the refused append does not roll it back under the rows the upsert logged.
    let t3 = third["timestamp"].as_i64().unwrap();
    assert!(t3 > t2, "{t3} > {t2}");
}
