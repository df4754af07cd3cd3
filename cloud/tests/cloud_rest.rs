//! A WatermelonDB client against the real cloud over HTTPS: create, update, delete, pull with
//! `last_pulled_at`, 409 on a stale push, and all-or-nothing pushes.

mod common;
use common::*;
use serde_json::json;

/// An operator publishes a table on the cloud: created and tracked on the tenant database through
/// the engine, like any app table.
fn publish_tables(data: &std::path::Path) {
    let db = device(&data.join("tenant.db"));
    db.execute_batch(
        "CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER CHECK (age >= 0), active INTEGER);
         CREATE TABLE visits(id TEXT PRIMARY KEY, patient_id TEXT REFERENCES patients(id), note TEXT);
         SELECT outpost_track('patients');
         SELECT outpost_track('visits');",
    )
    .unwrap();
}

#[test]
fn a_watermelon_client_creates_updates_deletes_and_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let d = data.to_str().unwrap();
    publish_tables(&data);
    let token = api_token(&data, "app");
    let run = start(&data);
    let rest = Rest::new(&data, &run.https, &token);

    // First pull: nothing yet, but every table is listed.
    let (s, first) = rest.pull(None);
    assert_eq!(s, 200, "{first}");
    assert_eq!(
        records(&first, "patients", "created"),
        Vec::<serde_json::Value>::new()
    );
    let t0 = first["timestamp"].as_i64().unwrap();

    // Push creates (with WatermelonDB's client-side columns, which the server ignores).
    let (s, r) = rest.push(
        t0,
        &json!({"patients": {"created": [
            {"id": "p1", "name": "Asha", "age": 31, "active": true, "_status": "created", "_changed": ""},
            {"id": "p2", "name": "Bo", "age": 40, "active": false}
        ], "updated": [], "deleted": []},
        "visits": {"created": [{"id": "v1", "patient_id": "p1", "note": "fever"}], "updated": [], "deleted": []}}),
    );
    assert_eq!(s, 200, "{r}");
    let (_, p1) = rest.pull(Some(t0));
    assert_eq!(
        records(&p1, "patients", "created"),
        vec![
            json!({"id": "p1", "name": "Asha", "age": 31, "active": 1}),
            json!({"id": "p2", "name": "Bo", "age": 40, "active": 0})
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

    // Update one, delete the other: a pull from t1 shows exactly that.
    let (s, r) = rest.push(
        t1,
        &json!({"patients": {"created": [], "updated": [{"id": "p1", "age": 32}], "deleted": ["p2", "never-existed"]}}),
    );
    assert_eq!(s, 200, "{r}");
    let (_, p2) = rest.pull(Some(t1));
    assert_eq!(
        records(&p2, "patients", "updated"),
        vec![json!({"id": "p1", "name": "Asha", "age": 32, "active": 1})]
    );
    assert!(records(&p2, "patients", "created").is_empty());
    assert_eq!(p2["changes"]["patients"]["deleted"], json!(["p2"]));
    let t2 = p2["timestamp"].as_i64().unwrap();

    // A client that last pulled at t1 pushes p1: p1 changed after t1 -> 409, nothing written.
    let stale = json!({"patients": {"created": [{"id": "p9", "name": "New"}], "updated": [{"id": "p1", "name": "Stale"}], "deleted": []}});
    let (s, r) = rest.push(t1, &stale);
    assert_eq!(s, 409, "{r}");
    assert!(r["error"].as_str().unwrap().contains("p1"), "{r}");
    let rows = shell_json(
        &data.join("tenant.db"),
        "SELECT id, name FROM patients ORDER BY id",
    );
    assert_eq!(rows, json!([{"id": "p1", "name": "Asha"}]));
    // The same push after pulling (t2) goes through.
    let (s, r) = rest.push(t2, &stale);
    assert_eq!(s, 200, "{r}");

    // All or nothing: one bad record among good ones (CHECK violation, unknown column, unknown
    // table, a foreign key to nothing) changes nothing at all.
    let (_, now) = rest.pull(Some(t2));
    let t3 = now["timestamp"].as_i64().unwrap();
    let before = shell_json(
        &data.join("tenant.db"),
        "SELECT * FROM patients ORDER BY id; ",
    );
    let before_visits = shell_json(&data.join("tenant.db"), "SELECT * FROM visits ORDER BY id");
    for bad in [
        json!({"patients": {"created": [{"id": "ok1", "name": "Fine"}, {"id": "bad", "name": "Neg", "age": -1}], "updated": [], "deleted": ["p1"]}}),
        json!({"patients": {"created": [{"id": "ok1", "name": "Fine"}, {"id": "bad", "name": "X", "shoe_size": 44}]}}),
        json!({"patients": {"created": [{"id": "ok1", "name": "Fine"}]}, "nosuch": {"created": []}}),
        json!({"patients": {"created": [{"id": "ok1", "name": "Fine"}]}, "visits": {"created": [{"id": "v2", "patient_id": "ghost"}]}}),
        json!({"patients": {"created": [{"id": "ok1", "name": null}]}}),
        json!({"patients": {"created": [{"name": "no id"}]}}),
        json!({"patients": {"created": [{"id": "ok1", "name": {"nested": 1}}]}}),
        json!(["not", "an", "object"]),
    ] {
        let (s, r) = rest.push(t3, &bad);
        assert_eq!(s, 400, "{bad} -> {r}");
        assert!(r["error"].is_string());
    }
    assert_eq!(
        shell_json(
            &data.join("tenant.db"),
            "SELECT * FROM patients ORDER BY id; "
        ),
        before
    );
    assert_eq!(
        shell_json(&data.join("tenant.db"), "SELECT * FROM visits ORDER BY id"),
        before_visits
    );
    let (_, after) = rest.pull(Some(t3));
    assert_eq!(after["timestamp"].as_i64().unwrap(), t3, "{after}");

    // A retried push (the answer was lost) is harmless: created records that exist are updated.
    let again = json!({"patients": {"created": [{"id": "p9", "name": "New"}]}});
    assert_eq!(rest.push(t3, &again).0, 200);
    assert_eq!(
        shell_json(
            &data.join("tenant.db"),
            "SELECT count(*) AS n FROM patients WHERE id = 'p9'"
        ),
        json!([{"n": 1}])
    );

    // The pushes are the cloud's own changes: exported to the mailbox as batches of its origin.
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(&["status", "--data", d, "--json"])).unwrap();
    let own = status["mailbox"]["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["own"] == json!(true))
        .cloned()
        .expect("a cloud-origin entry in the mailbox");
    assert_eq!(own["covered"], status["tenant"]["db_version"], "{status}");
    // Three pushes changed something; the retried one rewrote identical values, which logs no
    // change, so it exports nothing.
    assert_eq!(own["batches"].as_u64(), Some(3), "{status}");
}
