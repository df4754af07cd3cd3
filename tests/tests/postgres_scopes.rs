//! Scope moves on a PostgreSQL tenant, end to end (issue 21, Deliver 6; DESIGN section 10,
//! "Moves" and "Holding a row"): `outpost-cloud init --postgres` against the test cluster, `run`,
//! and two tablets on the built `liboutpost.so`, one granted only `moshi`, one only `tanga`.
//! A patient (with its `via` visit) that the moshi tablet refers to tanga, and one that the back
//! office moves with a `psql` `UPDATE` of its scope column, each end on the tanga tablet whole
//! and leave the moshi tablet; the tanga tablet then writes to a moved patient, and the tenant
//! holds it. Sealed and unsealed tenants both.

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::patients::SCOPED_SCHEMA as SCHEMA;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::pg::{self, psql};
use outpost_testkit::wait::within;
use std::time::Duration;

const PEER: &str = "cloud";

/// Each row of `sql` on `dev`, its columns joined by `|`.
fn rows(dev: &DeviceDb, sql: &str) -> Vec<String> {
    let mut st = dev.conn.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        Ok((0..n)
            .map(|i| r.get::<_, Option<String>>(i).unwrap().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn moves(unsealed: bool) {
    let Some(db) = pg::database(if unsealed {
        "pg_moves_unsealed"
    } else {
        "pg_moves_sealed"
    }) else {
        return;
    };
    let tmp = scratch();
    let mut cloud = Cloud::init_postgres(&tmp.path().join("cloud"), &db.url, unsealed);
    cloud.start();
    let moshi = DeviceDb::open(&tmp.path().join("moshi.db"), SCHEMA);
    moshi.enroll(&cloud.scoped_code("--device", "moshi"));
    let tanga = DeviceDb::open(&tmp.path().join("tanga.db"), SCHEMA);
    tanga.enroll(&cloud.scoped_code("--device", "tanga"));
    let log = || std::fs::read_to_string(tmp.path().join("cloud.log")).unwrap_or_default();
    let patients = "SELECT id, name, clinic FROM patients ORDER BY id";
    let visits = "SELECT id, patient_id, note FROM visits ORDER BY id";

    moshi.exec(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi'), ('m2', 'Baraka', 'moshi');
         INSERT INTO visits VALUES ('v1', 'm1', 'ANC 1'), ('v2', 'm2', 'BCG');",
    );
    moshi.sync_with(PEER);
    within(
        "moshi's rows in PostgreSQL",
        Duration::from_secs(20),
        || {
            // The tables are made by the first apply.
            psql(&db.url, "SELECT to_regclass('public.visits') IS NOT NULL") == ["t"]
                && psql(&db.url, "SELECT count(*) FROM public.visits") == ["2"]
        },
    );
    tanga.sync_with(PEER);
    assert!(
        rows(&tanga, patients).is_empty(),
        "tanga holds no moshi row"
    );

    // The moshi tablet refers m1 to tanga: the write travels in moshi's stream; the cloud
    // transfers the row with its visit into tanga's.
    moshi.exec("UPDATE patients SET clinic = 'tanga', name = 'Amina K' WHERE id = 'm1'");
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within(
            "the referred patient on the tanga tablet, gone from moshi's",
            Duration::from_secs(20),
            || {
                moshi.sync_with(PEER);
                tanga.sync_with(PEER);
                tanga.has("visits", "v1") && !moshi.has("patients", "m1")
            },
        )
    }));
    if waited.is_err() {
        panic!(
            "tanga holds {:?} {:?}; moshi {:?}; PostgreSQL {:?}; the cloud's log:\n{}",
            rows(&tanga, patients),
            rows(&tanga, visits),
            rows(&moshi, patients),
            psql(
                &db.url,
                "SELECT id, clinic FROM public.patients ORDER BY id"
            ),
            log()
        );
    }
    assert_eq!(rows(&tanga, patients), ["m1|Amina K|tanga"], "whole");
    assert_eq!(rows(&tanga, visits), ["v1|m1|ANC 1"], "with its visit");
    assert_eq!(rows(&moshi, patients), ["m2|Baraka|moshi"]);
    assert_eq!(
        rows(&moshi, visits),
        ["v2|m2|BCG"],
        "the visit left with her"
    );

    // The back office moves m2 with psql: moshi's tablet sees it leave, tanga's gets it whole.
    psql(
        &db.url,
        "UPDATE public.patients SET clinic = 'tanga' WHERE id = 'm2'",
    );
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within(
            "the patient the office moved on the tanga tablet, gone from moshi's",
            Duration::from_secs(20),
            || {
                moshi.sync_with(PEER);
                tanga.sync_with(PEER);
                tanga.has("visits", "v2") && !moshi.has("patients", "m2")
            },
        )
    }));
    if waited.is_err() {
        panic!(
            "tanga holds {:?} {:?}; moshi {:?}; the cloud's log:\n{}",
            rows(&tanga, patients),
            rows(&tanga, visits),
            rows(&moshi, patients),
            log()
        );
    }
    assert_eq!(
        rows(&tanga, patients),
        ["m1|Amina K|tanga", "m2|Baraka|tanga"]
    );
    assert_eq!(rows(&tanga, visits), ["v1|m1|ANC 1", "v2|m2|BCG"]);
    assert!(
        rows(&moshi, patients).is_empty(),
        "{:?}",
        rows(&moshi, patients)
    );
    assert!(
        rows(&moshi, visits).is_empty(),
        "{:?}",
        rows(&moshi, visits)
    );

    // The tanga tablet goes on with the moved record; the tenant holds its write, and a move
    // deleted nothing there.
    tanga.exec("INSERT INTO visits VALUES ('v3', 'm2', 'at tanga')");
    tanga.sync_with(PEER);
    within(
        "tanga's visit in PostgreSQL",
        Duration::from_secs(20),
        || psql(&db.url, "SELECT id FROM public.visits ORDER BY id") == ["v1", "v2", "v3"],
    );
    assert_eq!(
        psql(
            &db.url,
            "SELECT id || '|' || name || '|' || clinic FROM public.patients ORDER BY id"
        ),
        ["m1|Amina K|tanga", "m2|Baraka|tanga"]
    );
    let st = cloud.status();
    assert_eq!(st["tenant"]["quarantined"], 0, "{st}");
}

#[test]
fn moved_rows_reach_the_new_scopes_tablet_whole_on_an_unsealed_postgresql_tenant() {
    moves(true);
}

#[test]
fn moved_rows_reach_the_new_scopes_tablet_whole_on_a_sealed_postgresql_tenant() {
    moves(false);
}
