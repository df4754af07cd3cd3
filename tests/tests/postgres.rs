//! A cloud whose tenant is in PostgreSQL (issue 21), end to end: `outpost-cloud init --postgres`
//! against the test cluster, `run`, and device databases on the built `liboutpost.so`. What the
//! devices push lands in real PostgreSQL tables (read back with `psql`, as a back office would);
//! what the back office writes there with `psql` reaches the devices at their next sync, and a
//! device in live mode within a second or two; the replicas end identical. Sealed and unsealed
//! tenants both.

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, DeviceDb};
use outpost_testkit::e2e::patients;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::pg;
use std::process::Command;
use std::time::{Duration, Instant};

/// `psql` on `url`: the rows of `sql`, one line each, fields `|`-separated.
fn psql(url: &str, sql: &str) -> Vec<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The tenant's patients as `patients::rows` shows a device's: `id|name|village|visits`.
fn tenant_rows(url: &str) -> Vec<String> {
    psql(
        url,
        "SELECT id || '|' || coalesce(name, '') || '|' || coalesce(village, '') || '|' || visits \
         FROM public.patients ORDER BY id COLLATE \"C\"",
    )
}

fn within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn story(unsealed: bool) {
    let Some(db) = pg::database(if unsealed {
        "pg_story_unsealed"
    } else {
        "pg_story_sealed"
    }) else {
        return;
    };
    let tmp = scratch();
    let mut cloud = Cloud::init_postgres(&tmp.path().join("cloud"), &db.url, unsealed);
    cloud.start();
    let peer = "cloud";

    // Two tablets enrol; one writes patients and a visit, and syncs.
    let a = DeviceDb::patients(&tmp.path().join("a.db"));
    a.enroll(&cloud.device_code());
    let b = DeviceDb::patients(&tmp.path().join("b.db"));
    b.enroll(&cloud.device_code());
    patients::write(&a.conn, "a", 3);
    a.sync_with(peer);
    within("a's rows in PostgreSQL", Duration::from_secs(20), || {
        tenant_rows(&db.url).len() == 3
    });
    assert_eq!(tenant_rows(&db.url), patients::rows(&a.conn));
    // Real column types, made from the batch header.
    let types = psql(
        &db.url,
        "SELECT column_name || ' ' || data_type FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'patients' ORDER BY ordinal_position",
    );
    assert_eq!(
        types,
        ["id text", "name text", "village text", "visits bigint"],
        "{types:?}"
    );

    // The back office writes with psql: an update, a new row, a delete.
    psql(
        &db.url,
        "BEGIN; \
         UPDATE public.patients SET village = 'office' WHERE id = 'a1'; \
         INSERT INTO public.patients(id, name, village, visits) VALUES ('bo1', 'Office', 'hq', 0); \
         DELETE FROM public.patients WHERE id = 'a2'; \
         COMMIT;",
    );
    // A device writes too, meanwhile: another visit to a0.
    a.exec("UPDATE patients SET visits = visits + 1 WHERE id = 'a0'");
    // The office's commit is exported at once (LISTEN) or at the next round (500 ms).
    within("the office's writes on a", Duration::from_secs(10), || {
        a.sync_with(peer);
        a.has("patients", "bo1")
    });
    b.sync_with(peer);
    let mut seen = Vec::new();
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within(
            "the tenant to hold a's second visit",
            Duration::from_secs(20),
            || {
                seen = tenant_rows(&db.url);
                seen.first().map(String::as_str) == Some("a0|na0|va|2")
            },
        )
    }));
    if waited.is_err() {
        let log = std::fs::read_to_string(tmp.path().join("cloud.log")).unwrap_or_default();
        panic!(
            "the tenant holds {seen:?}; a holds {:?}; b {:?}; the cloud's log:\n{log}",
            patients::rows(&a.conn),
            patients::rows(&b.conn)
        );
    }
    let expected = [
        "a0|na0|va|2", // 1 from a, then 1 more
        "a1|na1|office|0",
        "bo1|Office|hq|0",
    ];
    assert_eq!(tenant_rows(&db.url), expected);
    assert_eq!(patients::rows(&a.conn), expected, "a");
    assert_eq!(patients::rows(&b.conn), expected, "b");

    // Live: a device waiting in live mode gets the office's write within seconds.
    let live = device_db::live(&tmp.path().join("b.db"), patients::SCHEMA, peer, 8);
    std::thread::sleep(Duration::from_millis(1500));
    psql(
        &db.url,
        "INSERT INTO public.patients(id, name, village, visits) VALUES ('live1', 'Live', 'hq', 0)",
    );
    let took = within(
        "the office's row on the live device",
        Duration::from_secs(6),
        || b.has("patients", "live1"),
    );
    println!("a back-office insert reached a live device in {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    live.join().unwrap().expect("the live sync");

    // `status` reads the tenant in PostgreSQL: its store, its tables and rows.
    let st = cloud.status();
    assert_eq!(st["store"]["kind"], "postgres", "{st}");
    assert_eq!(st["store"]["database"], db.name.as_str(), "{st}");
    let tables = st["tenant"]["tables"].as_array().expect("tables");
    assert!(
        tables
            .iter()
            .any(|t| t["name"] == "patients" && t["rows"] == 4),
        "{st}"
    );
    assert_eq!(st["tenant"]["quarantined"], 0, "{st}");
    cloud.kill();
}

#[test]
fn devices_and_the_back_office_meet_in_an_unsealed_postgres_tenant() {
    story(true);
}

#[test]
fn devices_and_the_back_office_meet_in_a_sealed_postgres_tenant() {
    story(false);
}
