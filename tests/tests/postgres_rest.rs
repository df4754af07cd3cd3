//! The WatermelonDB REST API on a cloud whose tenant is in PostgreSQL (issue 21), end to end:
//! `outpost-cloud init --postgres` against the test cluster, `run`, device databases on the built
//! `liboutpost.so`, and `curl` as the REST client. Devices' rows and changes show in REST pulls;
//! REST pushes land in the real tables (read with `psql`) and reach devices, a live one at once.

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, DeviceDb};
use outpost_testkit::e2e::patients;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::pg;
use outpost_testkit::wait::within;
use std::time::Duration;

/// The WatermelonDB REST API on a PostgreSQL tenant meets devices: a device's rows and its later
/// change show in REST pulls; a REST push lands in the real tables (read with `psql`), reaches a
/// device at its next sync, and a device in live mode at once (the push is exported and the live
/// sessions told, as on a SQLite tenant). Sealed and unsealed tenants both.
fn rest_story(unsealed: bool) {
    let Some(db) = pg::database(if unsealed {
        "pg_rest_unsealed"
    } else {
        "pg_rest_sealed"
    }) else {
        return;
    };
    let tmp = scratch();
    let mut cloud = Cloud::init_postgres(&tmp.path().join("cloud"), &db.url, unsealed);
    cloud.start();
    let peer = "cloud";
    let token = cloud.api_token("app");

    // A device writes patients and syncs: a REST first pull lists them.
    let a_path = tmp.path().join("a.db");
    let a = DeviceDb::patients(&a_path);
    a.enroll(&cloud.device_code());
    patients::write(&a.conn, "a", 2);
    a.sync_with(peer);
    within("a's rows in PostgreSQL", Duration::from_secs(20), || {
        pg::patient_rows(&db.url).len() == 2
    });
    let (code, first) = cloud.rest(&token, "GET", "last_pulled_at=0", None);
    assert_eq!(code, 200, "{first}");
    let mut created: Vec<String> = first["changes"]["patients"]["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}|{}|{}", r["id"], r["name"], r["visits"]))
        .collect();
    created.sort();
    assert_eq!(created, [r#""a0"|"na0"|1"#, r#""a1"|"na1"|0"#], "{first}");
    let t0 = first["timestamp"].as_i64().unwrap();

    // The device changes a row: the next REST pull has it as updated.
    a.exec("UPDATE patients SET name = 'renamed' WHERE id = 'a1'");
    a.sync_with(peer);
    within("a's change in PostgreSQL", Duration::from_secs(20), || {
        pg::patient_rows(&db.url).contains(&"a1|renamed|va|0".to_string())
    });
    let (_, pulled) = cloud.rest(&token, "GET", &format!("last_pulled_at={t0}"), None);
    let updated = &pulled["changes"]["patients"]["updated"];
    assert_eq!(updated.as_array().map(Vec::len), Some(1), "{pulled}");
    assert_eq!(updated[0]["name"], "renamed", "{pulled}");
    let t1 = pulled["timestamp"].as_i64().unwrap();

    // A REST push: in the real table at once, and on the device at its next sync.
    let body = r#"{"patients": {"created": [{"id": "r1", "name": "Neema", "village": "Arusha", "visits": 0}], "updated": [{"id": "a0", "village": "moved"}]}}"#;
    let (code, answer) = cloud.rest(&token, "POST", &format!("last_pulled_at={t1}"), Some(body));
    assert_eq!(code, 200, "{answer}");
    assert!(pg::patient_rows(&db.url).contains(&"r1|Neema|Arusha|0".to_string()));
    within("the REST push on a", Duration::from_secs(10), || {
        a.sync_with(peer);
        a.has("patients", "r1")
    });
    assert_eq!(patients::rows(&a.conn), pg::patient_rows(&db.url));
    assert!(patients::rows(&a.conn).contains(&"a0|na0|moved|1".to_string()));

    // A device in live mode gets a REST push without syncing again.
    let live = device_db::live(&a_path, patients::SCHEMA, peer, 6);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, pulled) = cloud.rest(&token, "GET", &format!("last_pulled_at={t1}"), None);
    let t2 = pulled["timestamp"].as_i64().unwrap();
    let body = r#"{"patients": {"created": [{"id": "r2", "name": "Live", "village": "hq", "visits": 0}]}}"#;
    let (code, answer) = cloud.rest(&token, "POST", &format!("last_pulled_at={t2}"), Some(body));
    assert_eq!(code, 200, "{answer}");
    let took = within(
        "the REST push on the live device",
        Duration::from_secs(5),
        || a.has("patients", "r2"),
    );
    println!("a REST push on a PostgreSQL tenant reached a live device in {took:?}");
    live.join().unwrap().expect("the live sync");
    cloud.kill();
}

#[test]
fn rest_clients_and_devices_meet_in_an_unsealed_postgres_tenant() {
    rest_story(true);
}

#[test]
fn rest_clients_and_devices_meet_in_a_sealed_postgres_tenant() {
    rest_story(false);
}
