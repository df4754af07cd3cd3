//! REST tokens scoped by their grant, against a real tenant database tracked with scope rules:
//! `patients` scoped by its `clinic` column, `visits` following their patient (`via`), `forms`
//! unscoped.

use super::*;
use serde_json::{json, Value as Json};

/// The tables, tracked with their scope rules.
const SCHEMA: &str = "PRAGMA foreign_keys = ON;
    CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT, clinic TEXT);
    CREATE TABLE visits(id TEXT PRIMARY KEY, patient_id TEXT REFERENCES patients(id), note TEXT);
    CREATE TABLE forms(id TEXT PRIMARY KEY, title TEXT);
    SELECT outpost_track('patients', '{\"scope\": \"clinic\"}');
    SELECT outpost_track('visits', '{\"scope\": {\"via\": \"patient_id\"}}');
    SELECT outpost_track('forms');";

fn tenant(dir: &std::path::Path) -> Connection {
    outpost_embed::register().unwrap();
    let mut conn = Connection::open(dir.join("tenant.db")).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute_batch(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi'), ('m2', 'Baraka', 'moshi'),
                                     ('t1', 'Chausiku', 'tanga');
         INSERT INTO visits VALUES ('v1', 'm1', 'ANC 1'), ('v2', 't1', 'ANC 1');
         INSERT INTO forms VALUES ('f1', 'ANC visit');",
    )
    .unwrap();
    changelog::ensure_triggers(&mut conn).unwrap();
    conn
}

fn token(scopes: &[&str]) -> Access {
    Access {
        scopes: Scopes::parse(scopes.iter().copied()).unwrap(),
        ..Access::default()
    }
}

fn pulled(conn: &mut Connection, since: Option<i64>, access: &Access) -> Json {
    serde_json::from_slice(&pull(conn, since, access).unwrap()).unwrap()
}

/// The ids of one list of one table, sorted.
fn ids(pull: &Json, table: &str, list: &str) -> Vec<String> {
    let mut out: Vec<String> = pull["changes"][table][list]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.get("id").unwrap_or(r).as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn pushed(
    conn: &mut Connection,
    since: i64,
    access: &Access,
    body: Json,
) -> Result<(), (u16, String)> {
    push(conn, since, body.to_string().into_bytes(), access)
        .map(|_| ())
        .map_err(|e| (e.status(), e.answer()))
}

fn latest(conn: &Connection) -> i64 {
    changelog::latest(conn).unwrap()
}

#[test]
fn a_scoped_token_pulls_its_scopes_rows_and_referred_rows_as_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    let moshi = token(&["moshi"]);
    let first = pulled(&mut conn, None, &moshi);
    assert_eq!(ids(&first, "patients", "created"), ["m1", "m2"]);
    assert_eq!(
        ids(&first, "visits", "created"),
        ["v1"],
        "a visit follows its patient"
    );
    assert_eq!(
        ids(&first, "forms", "created"),
        ["f1"],
        "unscoped tables are whole"
    );
    let all = pulled(&mut conn, None, &Access::default());
    assert_eq!(ids(&all, "patients", "created"), ["m1", "m2", "t1"]);
    assert_eq!(ids(&all, "visits", "created"), ["v1", "v2"]);
    let both = pulled(&mut conn, None, &token(&["moshi", "tanga"]));
    assert_eq!(ids(&both, "visits", "created"), ["v1", "v2"]);

    // A referral (as a device's batch or another client writes it): m1 moves to tanga, and
    // its visit with it, though the visit's own row did not change.
    let t = first["timestamp"].as_i64().unwrap();
    conn.execute("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'", [])
        .unwrap();
    // Changes in another scope only: never the moshi app's rows, not named to it at all.
    conn.execute_batch(
        "UPDATE patients SET name = 'Chausiku B' WHERE id = 't1';
         UPDATE visits SET note = 'ANC 2' WHERE id = 'v2';",
    )
    .unwrap();
    let later = pulled(&mut conn, Some(t), &moshi);
    assert_eq!(ids(&later, "patients", "deleted"), ["m1"]);
    assert_eq!(ids(&later, "visits", "deleted"), ["v1"]);
    assert!(ids(&later, "patients", "updated").is_empty(), "{later}");
    let tanga = pulled(&mut conn, Some(t), &token(&["tanga"]));
    assert_eq!(ids(&tanga, "patients", "updated"), ["m1", "t1"]);
    assert_eq!(ids(&tanga, "visits", "updated"), ["v1", "v2"]);
    assert!(ids(&tanga, "patients", "deleted").is_empty(), "{tanga}");
}

#[test]
fn a_scoped_tokens_pushes_stay_in_its_scopes_and_may_refer_rows_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    let moshi = token(&["moshi"]);
    let now = latest(&conn);

    let outside = pushed(
        &mut conn,
        now,
        &moshi,
        json!({"patients": {"created": [{"id": "r1", "name": "Faraji", "clinic": "tanga"}]}}),
    );
    assert_eq!(
        outside,
        Err((
            403,
            "invalid push: scope 'tanga' is not granted to this token (patients/r1; its \
             scopes: outpost-cloud grant --token NAME --scopes ...)"
                .into()
        ))
    );
    for (bad, why) in [
        (json!(null), "null"),
        (json!(""), "''"),
        (json!("*"), "*"),
        (json!("a b"), "space"),
    ] {
        let (status, answer) = pushed(
            &mut conn,
            now,
            &moshi,
            json!({"patients": {"created": [{"id": "r2", "clinic": bad}]}}),
        )
        .unwrap_err();
        assert_eq!(status, 400, "{why}: {answer}");
        assert!(
            answer.contains("patients/r2: column \"clinic\" must hold a scope name"),
            "{answer}"
        );
    }
    let (status, answer) = pushed(
        &mut conn,
        now,
        &Access::default(),
        json!({"patients": {"created": [{"id": "r3", "name": "No clinic"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        (status, answer.contains("\"clinic\"")),
        (400, true),
        "{answer}"
    );

    // Another scope's row: neither updated nor deleted.
    for body in [
        json!({"patients": {"updated": [{"id": "t1", "name": "X", "_changed": "name"}]}}),
        json!({"patients": {"deleted": ["t1"]}}),
        json!({"visits": {"updated": [{"id": "v2", "note": "X"}]}}),
    ] {
        let (status, answer) = pushed(&mut conn, now, &moshi, body).unwrap_err();
        assert_eq!(status, 403, "{answer}");
        assert!(answer.contains("scope 'tanga' is not granted"), "{answer}");
    }
    // A visit follows its patient: one of another scope's patient is refused, even when the
    // push creates the patient too.
    let (status, answer) = pushed(
        &mut conn,
        now,
        &moshi,
        json!({"visits": {"created": [{"id": "v3", "patient_id": "t1"}]}}),
    )
    .unwrap_err();
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("visits/v3"), "{answer}");
    let (status, answer) = pushed(
        &mut conn,
        now,
        &moshi,
        json!({"visits": {"created": [{"id": "v4", "patient_id": "nobody"}]}}),
    )
    .unwrap_err();
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("column \"patient_id\" must name a parent row"),
        "{answer}"
    );
    let count =
        |conn: &Connection, sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count(&conn, "SELECT count(*) FROM patients"),
        3,
        "nothing refused was written"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM visits"), 2);

    // In its scope: a new patient with a visit listed before it, in one push.
    pushed(
        &mut conn,
        now,
        &moshi,
        json!({"visits": {"created": [{"id": "v5", "patient_id": "m3", "note": "first"}]},
               "patients": {"created": [{"id": "m3", "name": "Dalila", "clinic": "moshi"}],
                            "updated": [{"id": "m2", "name": "Baraka J", "_changed": "name"}]}}),
    )
    .unwrap();
    // A referral of a row it holds, to a scope it does not hold: allowed; the row then left.
    let now = latest(&conn);
    pushed(
        &mut conn,
        now,
        &moshi,
        json!({"patients": {"updated": [{"id": "m3", "clinic": "tanga", "_changed": "clinic"}]}}),
    )
    .unwrap();
    assert_eq!(
        conn.query_row("SELECT clinic FROM patients WHERE id = 'm3'", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap(),
        "tanga"
    );
    let now = latest(&conn);
    let (status, _) = pushed(
        &mut conn,
        now,
        &moshi,
        json!({"patients": {"updated": [{"id": "m3", "clinic": "moshi", "_changed": "clinic"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        status, 403,
        "a row that left is no longer the token's to move back"
    );
    let (status, answer) = pushed(
        &mut conn,
        now,
        &moshi,
        json!({"patients": {"updated": [{"id": "m2", "clinic": "", "_changed": "clinic"}]}}),
    )
    .unwrap_err();
    assert_eq!(status, 400, "{answer}");
    // An unscoped table is every token's.
    pushed(
        &mut conn,
        now,
        &moshi,
        json!({"forms": {"created": [{"id": "f2", "title": "PNC"}]}}),
    )
    .unwrap();
}

/// `last_pulled_at=0` is a first pull too: the app held nothing, so other scopes' rows are not
/// named even as deleted.
#[test]
fn a_pull_since_zero_names_no_other_scopes_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    let zero = pulled(&mut conn, Some(0), &token(&["moshi"]));
    assert_eq!(ids(&zero, "patients", "created"), ["m1", "m2"]);
    assert!(ids(&zero, "patients", "deleted").is_empty(), "{zero}");
    assert!(ids(&zero, "visits", "deleted").is_empty(), "{zero}");
}

/// A device's database with the tenant's tables, tracked with the same rules.
fn device(dir: &std::path::Path) -> Connection {
    let conn = Connection::open(dir.join("device.db")).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn
}

/// What `device` wrote in the stream of `scope` since `since`, applied to the tenant as the
/// ingest applies it: the log's triggers switched off, the rows listed, then logged in bulk.
/// Returns the new `since`.
fn apply_from(device: &Connection, scope: &str, since: i64, tenant: &mut Connection) -> i64 {
    let batch: Vec<u8> = device
        .query_row(
            "SELECT outpost_changes(?1, NULL, ?2)",
            rusqlite::params![since, scope],
            |r| r.get(0),
        )
        .unwrap();
    tenant
        .query_row("SELECT outpost_apply(?1)", [batch], |_| Ok(()))
        .unwrap();
    let listed: i64 = tenant
        .query_row("SELECT count(*) FROM outpost_applied", [], |r| r.get(0))
        .unwrap();
    assert!(listed > 0, "the engine listed the rows it wrote");
    assert_eq!(changelog::log_applied(tenant).unwrap(), listed as usize);
    device
        .query_row("SELECT outpost_db_version(?1)", [scope], |r| r.get(0))
        .unwrap()
}

/// Rows a device's batch brings are logged from the engine's list, with the log's triggers
/// switched off during the apply (`changelog/applied.rs`), as the triggers would have logged
/// them: created, moved to another clinic (the patient and its visit leave one token's pulls
/// and join the other's), deleted.
#[test]
fn rows_the_engine_applies_reach_scoped_pulls_as_the_triggers_would_log_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    changelog::list_applied_rows(&conn).unwrap();
    let dev = device(dir.path());
    let (moshi, tanga) = (token(&["moshi"]), token(&["tanga"]));
    let (m0, t0) = (latest(&conn), latest(&conn));

    dev.execute_batch(
        "INSERT INTO patients VALUES ('d1', 'Dalila', 'moshi');
         INSERT INTO visits VALUES ('dv1', 'd1', 'ANC 1');",
    )
    .unwrap();
    let since = apply_from(&dev, "moshi", 0, &mut conn);
    let m = pulled(&mut conn, Some(m0), &moshi);
    assert_eq!(ids(&m, "patients", "created"), ["d1"]);
    assert_eq!(ids(&m, "visits", "created"), ["dv1"]);
    let t = pulled(&mut conn, Some(t0), &tanga);
    assert!(ids(&t, "patients", "created").is_empty());
    assert!(
        ids(&t, "patients", "deleted").is_empty(),
        "never in its scopes"
    );
    let (m1, t1) = (
        m["timestamp"].as_i64().unwrap(),
        t["timestamp"].as_i64().unwrap(),
    );

    // The referral: the device moves the patient to tanga; its visit follows.
    dev.execute("UPDATE patients SET clinic = 'tanga' WHERE id = 'd1'", [])
        .unwrap();
    apply_from(&dev, "moshi", since, &mut conn);
    let m = pulled(&mut conn, Some(m1), &moshi);
    assert_eq!(ids(&m, "patients", "deleted"), ["d1"]);
    assert_eq!(ids(&m, "visits", "deleted"), ["dv1"]);
    let t = pulled(&mut conn, Some(t1), &tanga);
    assert_eq!(ids(&t, "patients", "updated"), ["d1"]);
    assert_eq!(ids(&t, "visits", "updated"), ["dv1"]);
    let (scope_value, moved_at): (String, i64) = conn
        .query_row(
            "SELECT scope_value, moved_at FROM _cloud_rest_log WHERE tbl = 'patients' AND id = 'd1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(scope_value, "tanga");
    assert!(moved_at > m1);
    let (m2, t2) = (
        m["timestamp"].as_i64().unwrap(),
        t["timestamp"].as_i64().unwrap(),
    );

    // A rename is a change, not a move; a deleted visit is logged deleted.
    dev.execute_batch(
        "UPDATE patients SET name = 'Dalila K.' WHERE id = 'd1'; DELETE FROM visits WHERE id = 'dv1';",
    )
    .unwrap();
    apply_from(&dev, "tanga", 0, &mut conn);
    let m = pulled(&mut conn, Some(m2), &moshi);
    assert!(ids(&m, "patients", "deleted").is_empty(), "{m}");
    assert!(ids(&m, "visits", "deleted").is_empty(), "{m}");
    let t = pulled(&mut conn, Some(t2), &tanga);
    assert_eq!(ids(&t, "patients", "updated"), ["d1"]);
    assert!(ids(&t, "patients", "deleted").is_empty(), "{t}");
    assert_eq!(ids(&t, "visits", "deleted"), ["dv1"]);
}

/// A row deleted outright is named in `deleted` to the tokens whose scopes held it and to no
/// other: the log keeps the scope value it had. A visit deleted with its patient finds its
/// scope through the patient's entry.
#[test]
fn a_row_deleted_outright_is_named_to_the_scopes_that_held_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    let (moshi, tanga) = (token(&["moshi"]), token(&["tanga"]));
    let since = latest(&conn);
    conn.execute_batch(
        "DELETE FROM patients WHERE id = 'm2';
         DELETE FROM visits WHERE id = 'v1'; DELETE FROM patients WHERE id = 'm1';
         DELETE FROM visits WHERE id = 'v2';",
    )
    .unwrap();
    let m = pulled(&mut conn, Some(since), &moshi);
    assert_eq!(ids(&m, "patients", "deleted"), ["m1", "m2"]);
    assert_eq!(
        ids(&m, "visits", "deleted"),
        ["v1"],
        "through its patient's entry"
    );
    let t = pulled(&mut conn, Some(since), &tanga);
    assert!(ids(&t, "patients", "deleted").is_empty(), "{t}");
    assert_eq!(
        ids(&t, "visits", "deleted"),
        ["v2"],
        "its patient t1 is there"
    );
}

/// `outpost_applied` is a table the app may write too: an entry that is not a key the engine
/// writes is dropped, and the others are logged, so one bad entry never stops every later
/// ingest round and pull.
#[test]
fn an_entry_that_is_not_a_key_does_not_stop_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = tenant(dir.path());
    changelog::list_applied_rows(&conn).unwrap();
    let before = latest(&conn);
    conn.execute_batch(
        "INSERT INTO outpost_applied VALUES ('patients', 'not json'), ('patients', '\"m1\"'),
                                            ('nowhere', '\"x\"');",
    )
    .unwrap();
    assert_eq!(changelog::log_applied(&mut conn).unwrap(), 3);
    let left: i64 = conn
        .query_row("SELECT count(*) FROM outpost_applied", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    let p = pulled(&mut conn, Some(before), &token(&["moshi"]));
    assert_eq!(ids(&p, "patients", "updated"), ["m1"]);
}
