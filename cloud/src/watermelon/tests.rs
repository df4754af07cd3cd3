use super::*;

/// A tenant database with the REST tables of `cloud/tests/cloud_rest.rs`, tracked by the engine,
/// foreign keys on as the cloud opens it, and the change log's triggers installed.
fn tenant(dir: &std::path::Path) -> Connection {
    outpost_embed::register().unwrap();
    let mut conn = Connection::open(dir.join("tenant.db")).unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER CHECK (age >= 0));
         CREATE TABLE visits(id TEXT PRIMARY KEY, patient_id TEXT REFERENCES patients(id));
         SELECT outpost_track('patients');
         SELECT outpost_track('visits');",
    )
    .unwrap();
    changelog::ensure_triggers(&mut conn).unwrap();
    conn
}

fn refused(conn: &mut Connection, last_pulled_at: i64, body: Json) -> (u16, String) {
    let e = push(conn, last_pulled_at, &body).unwrap_err();
    (e.status(), e.answer())
}

#[test]
fn refused_pushes_answer_the_status_and_text_the_api_always_gave() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    assert_eq!(
        refused(&mut conn, 0, json!(["not", "an", "object"])),
        (
            400,
            "invalid push: the body must be a JSON object of tables".into()
        )
    );
    assert_eq!(
        refused(&mut conn, 0, json!({"nosuch": {"created": []}})),
        (
            400,
            "invalid push: unknown table \"nosuch\" (the REST API serves tracked tables whose \
             primary key is `id`)"
                .into()
        )
    );
    assert_eq!(
        refused(
            &mut conn,
            0,
            json!({"patients": {"created": [{"id": "p1", "shoe_size": 44}]}})
        ),
        (
            400,
            "invalid push: patients/p1: unknown column \"shoe_size\"".into()
        )
    );
    assert_eq!(
        refused(
            &mut conn,
            0,
            json!({"patients": {"created": [{"id": "p1", "name": "X", "age": -1}]}})
        ),
        (
            400,
            "invalid push: patients/p1: CHECK constraint failed: age >= 0".into()
        )
    );
    assert_eq!(
        refused(
            &mut conn,
            0,
            json!({"visits": {"created": [{"id": "v1", "patient_id": "ghost"}]}})
        ),
        (
            400,
            "invalid push: at commit (a foreign key?): FOREIGN KEY constraint failed".into()
        )
    );

    push(
        &mut conn,
        0,
        &json!({"patients": {"created": [{"id": "p1", "name": "Asha"}]}}),
    )
    .unwrap();
    let at: i64 = conn
        .query_row(
            "SELECT changed_at FROM _cloud_rest_log WHERE id = 'p1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        refused(
            &mut conn,
            0,
            json!({"patients": {"updated": [{"id": "p1", "name": "Stale"}]}})
        ),
        (
            409,
            format!(
                "conflict: patients/p1 changed on the server at {at}, after last_pulled_at 0; \
                 pull, then push again"
            )
        )
    );
}
