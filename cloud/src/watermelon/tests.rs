use super::*;
use outpost_protocol::batch::Direction;
use push_body::BodyError;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;

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
    let e = push(
        conn,
        last_pulled_at,
        body.to_string().into_bytes(),
        &Access::default(),
    )
    .unwrap_err();
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
        json!({"patients": {"created": [{"id": "p1", "name": "Asha"}]}})
            .to_string()
            .into_bytes(),
        &Access::default(),
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

fn tables() -> Tables {
    let mut t = Tables::new();
    t.insert(
        "patients".into(),
        vec!["id".into(), "name".into(), "age".into()],
    );
    t.insert("visits".into(), vec!["id".into(), "patient_id".into()]);
    t
}

fn plan_of(body: &Json) -> Plan {
    match push_body::read(body.to_string().as_bytes(), &tables(), 10) {
        Ok(p) => p,
        Err(BodyError::Invalid(why)) => panic!("{why}"),
        Err(BodyError::NotJson(e)) => panic!("{e}"),
    }
}

fn invalid(body: &[u8]) -> String {
    match push_body::read(body, &tables(), 10) {
        Ok(p) => panic!("accepted: {}", p.describe()),
        Err(BodyError::Invalid(why)) => why.to_string(),
        Err(BodyError::NotJson(e)) => format!("not JSON: {e}"),
    }
}

#[test]
fn a_plan_reads_back_the_records_and_values_the_body_held() {
    let plan = plan_of(&json!({"patients": {
        "created": [{"id": "p1", "name": "Asha \"A\" ☃", "age": 31, "_status": "created", "_changed": ""}],
        "updated": [{"id": "p2", "age": -7, "name": null}, {"id": "p3", "age": 1.5}, {"id": "p4", "age": true},
                    {"id": "p5", "age": 18446744073709551615u64}],
        "deleted": ["p6", "p7"]}}));
    assert_eq!(plan.describe(), "patients: +1 ~4 -2");
    let t = &plan.tables[0];
    let created: Vec<_> = t.created.records().collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].id, "p1");
    assert_eq!(
        created[0].values,
        vec![(1, Scalar::Text("Asha \"A\" ☃")), (2, Scalar::Integer(31))]
    );
    let updated: Vec<_> = t.updated.records().map(|r| (r.id, r.values)).collect();
    assert_eq!(
        updated,
        vec![
            ("p2", vec![(1, Scalar::Null), (2, Scalar::Integer(-7))]),
            ("p3", vec![(2, Scalar::Real(1.5))]),
            ("p4", vec![(2, Scalar::Integer(1))]),
            (
                "p5",
                vec![(2, Scalar::Real(18446744073709551615u64 as f64))]
            ),
        ]
    );
    assert_eq!(t.deleted.ids().collect::<Vec<_>>(), vec!["p6", "p7"]);
}

#[test]
fn wrapped_changes_and_repeated_keys_read_as_a_json_map_would() {
    // {"changes": {...}, "lastPulledAt": ...}: the wrapper's other keys are ignored.
    let plan =
        plan_of(&json!({"lastPulledAt": 5, "changes": {"visits": {"created": [{"id": "v1"}]}}}));
    assert_eq!(plan.describe(), "visits: +1 ~0 -0");
    // `changes` that is not an object is a table name, which is unknown.
    assert_eq!(
        invalid(br#"{"changes": 1}"#),
        "unknown table \"changes\" (the REST API serves tracked tables whose primary key is `id`)"
    );
    // The last of a repeated key counts: table, list, column.
    let plan = plan_of_text(
        br#"{"patients": {"created": [{"id": "x"}]}, "patients": {"created": [{"id": "a", "age": [1], "age": 2}], "created": [{"id": "b"}]}}"#,
    );
    assert_eq!(plan.describe(), "patients: +1 ~0 -0");
    assert_eq!(plan.tables[0].created.records().next().unwrap().id, "b");
    let plan = plan_of_text(br#"{"patients": {"created": [{"id": "a", "age": [1], "age": 2}]}}"#);
    assert_eq!(
        plan.tables[0].created.records().next().unwrap().values,
        vec![(2, Scalar::Integer(2))]
    );
}

fn plan_of_text(body: &[u8]) -> Plan {
    match push_body::read(body, &tables(), 10) {
        Ok(p) => p,
        Err(BodyError::Invalid(why)) => panic!("{why}"),
        Err(BodyError::NotJson(e)) => panic!("{e}"),
    }
}

#[test]
fn bad_bodies_are_refused_with_the_reason() {
    assert!(invalid(b"{\"patients\": ").starts_with("not JSON"));
    assert!(invalid(b"{} x").starts_with("not JSON"));
    assert_eq!(
        invalid(br#"{"patients": {"created": [{"id": "p1", "shoe": 1}]}}"#),
        "patients/p1: unknown column \"shoe\""
    );
    // The id may come after the column it names in the error.
    assert_eq!(
        invalid(br#"{"patients": {"created": [{"age": {"x": 1}, "id": "p1"}]}}"#),
        "patients/p1: column \"age\" holds an array or object; values are strings, numbers, \
         booleans or null"
    );
    assert_eq!(
        invalid(br#"{"patients": {"created": [{"id": 7}]}}"#),
        "patients.created: a record without a string `id`"
    );
    assert_eq!(
        invalid(br#"{"patients": {"deleted": [""]}}"#),
        "patients.deleted holds ids (strings)"
    );
    assert_eq!(
        invalid(br#"{"patients": {"updated": {}}}"#),
        "patients.updated must be an array"
    );
    assert_eq!(
        invalid(br#"{"patients": []}"#),
        "patients: expected {created, updated, deleted}"
    );
    assert_eq!(
        invalid(br#"{"patients": {"gone": []}}"#),
        "patients: unknown key \"gone\""
    );
    let eleven: Vec<_> = (0..11).map(|i| format!("p{i}")).collect();
    assert_eq!(
        invalid(
            json!({"patients": {"deleted": eleven}})
                .to_string()
                .as_bytes()
        ),
        "more than 10 records in one push; push them in several parts"
    );
}

#[test]
fn a_plan_is_no_larger_than_its_body() {
    // Short keys and values, the body's worst case for a tree, and realistic records.
    for record in [
        json!({"id": "a", "age": 1}),
        json!({"id": "p-0001", "name": "Asha Devi, village 4", "age": 31}),
    ] {
        let body = json!({"patients": {"created": vec![record; 10_000]}}).to_string();
        let plan = push_body::read(body.as_bytes(), &tables(), MAX_PUSH_RECORDS)
            .unwrap_or_else(|_| panic!());
        assert!(
            plan.heap_bytes() <= body.len(),
            "{} bytes of plan for {} of body",
            plan.heap_bytes(),
            body.len()
        );
    }
}

/// Directions the tenant declares (issue 16 item 5): a push touching a `down` table is refused
/// whole with 403, nothing written; an `up` table is left out of pulls.
#[test]
fn down_tables_refuse_pushes_and_up_tables_are_not_pulled() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    let body = json!({
        "patients": {"created": [{"id": "p1", "name": "Asha"}]},
        "visits": {"created": [{"id": "v1", "patient_id": "p1"}]},
    });
    let down = Access {
        declared: BTreeMap::from([("visits".to_string(), Direction::Down)]),
        rights: None,
        ..Access::default()
    };
    let e = push(&mut conn, 0, body.to_string().into_bytes(), &down).unwrap_err();
    assert_eq!(e.status(), 403);
    assert!(
        e.answer().contains("\"visits\" is declared down"),
        "{}",
        e.answer()
    );
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM patients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "nothing of the push was written");

    push(
        &mut conn,
        0,
        body.to_string().into_bytes(),
        &Access::default(),
    )
    .unwrap();
    let mut pulled = |access: &Access| -> Json {
        serde_json::from_slice(&pull(&mut conn, None, access).unwrap()).unwrap()
    };
    let all = pulled(&Access::default());
    assert!(all["changes"]["visits"].is_object());
    let up = Access {
        declared: BTreeMap::from([("visits".to_string(), Direction::Up)]),
        rights: None,
        ..Access::default()
    };
    let some = pulled(&up);
    assert!(some["changes"].get("visits").is_none(), "{some}");
    assert_eq!(some["changes"]["patients"]["created"][0]["id"], "p1");
}

/// A token's own table rights (`--tables patients:r`): it pulls only the tables named and
/// pushes only to `rw` ones; anything else is refused whole with 403, nothing written.
#[test]
fn a_tokens_table_rights_narrow_what_it_pulls_and_pushes() {
    use crate::control::TableRights;
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    let body = json!({"patients": {"created": [{"id": "p1", "name": "Asha"}]}});
    push(
        &mut conn,
        0,
        body.to_string().into_bytes(),
        &Access::default(),
    )
    .unwrap();
    let reader = Access {
        declared: BTreeMap::new(),
        rights: Some(TableRights::parse("patients:r").unwrap()),
        ..Access::default()
    };
    let pulled: Json = serde_json::from_slice(&pull(&mut conn, None, &reader).unwrap()).unwrap();
    assert!(pulled["changes"]["patients"].is_object(), "{pulled}");
    assert!(pulled["changes"].get("visits").is_none(), "{pulled}");
    for (rights, table) in [("patients:r", "patients"), ("patients:rw", "visits")] {
        let access = Access {
            declared: BTreeMap::new(),
            rights: Some(TableRights::parse(rights).unwrap()),
            ..Access::default()
        };
        let changes = json!({table: {"created": [{"id": "x9"}]}});
        let e = push(&mut conn, 0, changes.to_string().into_bytes(), &access).unwrap_err();
        assert_eq!(e.status(), 403, "{rights}: {}", e.answer());
        assert!(
            e.answer()
                .contains(&format!("may not write table \"{table}\"")),
            "{}",
            e.answer()
        );
    }
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM visits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    let writer = Access {
        declared: BTreeMap::new(),
        rights: Some(TableRights::parse("patients:rw,visits:r").unwrap()),
        ..Access::default()
    };
    let more = json!({"patients": {"created": [{"id": "p2", "name": "Bo"}]}});
    push(&mut conn, 0, more.to_string().into_bytes(), &writer).unwrap();
    assert!(TableRights::parse("patients:x").is_err());
    assert!(TableRights::parse("patients:r,patients:rw").is_err());
    assert!(TableRights::parse("_outpost_rows:r").is_err());
}

/// An updated record writes into an existing row only the columns its `_changed` names: a stale
/// copy of another column (a referral moved the row meanwhile) does not undo the newer write. A
/// created record, or an updated one for a row not here yet, writes every column it gives.
#[test]
fn an_updated_record_writes_only_its_changed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    let all = Access::default();
    let created = json!({"patients": {"created": [{"id": "p1", "name": "Asha", "age": 30}]}});
    push(&mut conn, 0, created.to_string().into_bytes(), &all).unwrap();
    let at: i64 = conn
        .query_row("SELECT max(changed_at) FROM _cloud_rest_log", [], |r| {
            r.get(0)
        })
        .unwrap();
    // The server's copy changes (another client): age 31.
    conn.execute("UPDATE patients SET age = 31 WHERE id = 'p1'", [])
        .unwrap();
    let at = at.max(
        conn.query_row("SELECT max(changed_at) FROM _cloud_rest_log", [], |r| {
            r.get(0)
        })
        .unwrap(),
    );
    // A client whose copy still says age 30 changes the name only.
    let updated = json!({"patients": {"updated": [
        {"id": "p1", "name": "Asha K", "age": 30, "_status": "updated", "_changed": "name"},
        {"id": "p2", "name": "Bo", "age": 5, "_changed": "name"}
    ]}});
    push(&mut conn, at, updated.to_string().into_bytes(), &all).unwrap();
    let rows: Vec<(String, String, i64)> = conn
        .prepare("SELECT id, name, age FROM patients ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            ("p1".into(), "Asha K".into(), 31),
            ("p2".into(), "Bo".into(), 5)
        ]
    );
}

/// A live row whose first column is NULL (the table's `id` is not its first column) is served
/// as itself, never as deleted: a pull tells a gone row by its `id` not joining.
#[test]
fn a_live_row_whose_first_column_is_null_is_not_pulled_as_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    conn.execute_batch(
        "CREATE TABLE notes(body TEXT, id TEXT PRIMARY KEY);
         SELECT outpost_track('notes');",
    )
    .unwrap();
    changelog::ensure_triggers(&mut conn).unwrap();
    conn.execute_batch("INSERT INTO notes(body, id) VALUES (NULL, 'n1')")
        .unwrap();
    let first: Json =
        serde_json::from_slice(&pull(&mut conn, None, &Access::default()).unwrap()).unwrap();
    assert_eq!(
        first["changes"]["notes"]["created"],
        json!([{"body": null, "id": "n1"}]),
        "{first}"
    );
    let later: Json =
        serde_json::from_slice(&pull(&mut conn, Some(1), &Access::default()).unwrap()).unwrap();
    assert_eq!(later["changes"]["notes"]["deleted"], json!([]), "{later}");
    assert_eq!(
        later["changes"]["notes"]["created"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
