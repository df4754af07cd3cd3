//! Scopes on the device (docs/design.md section 10, "Scopes"; docs/sql-api.md, `outpost_track`):
//! declaring a table's scope and the restrictions `outpost_track` refuses, and the write-time
//! checks against the device's grant, which reaches it as a hub-signed control entry from the
//! scripted hub over TCP. Real SQLite files throughout.

mod common;
use common::scripted_hub::Hub;
use common::Replica;
use outpost_protocol::batch::signature;
use outpost_protocol::SiteId;
use outpost_testkit::keys::site_keypair;
use rusqlite::Connection;

const SCHEMA: &str = "
CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id), note TEXT);
CREATE TABLE forms(id TEXT PRIMARY KEY NOT NULL, title TEXT);
";

/// A device with `patients` scoped by `clinic`, `visits` via `patient_id`, `forms` unscoped.
fn device(name: &str) -> Replica {
    let r = Replica::new(name, SCHEMA);
    r.track("patients", Some(r#"{"scope": "clinic"}"#));
    r.track("visits", Some(r#"{"scope": {"via": "patient_id"}}"#));
    r.track("forms", None);
    r
}

/// The error `sql` fails with.
fn error_of(conn: &Connection, sql: &str) -> String {
    match conn.execute_batch(sql) {
        Ok(()) => panic!("{sql}: succeeded, expected an error"),
        Err(e) => e.to_string(),
    }
}

/// `outpost_track(table, options)`'s error.
fn track_error(r: &Replica, table: &str, options: &str) -> String {
    r.conn
        .query_row(
            "SELECT outpost_track(?1, ?2)",
            rusqlite::params![table, options],
            |row| row.get::<_, i64>(0),
        )
        .expect_err("outpost_track should refuse")
        .to_string()
}

fn assert_contains(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "{p:?} not in: {message}");
    }
}

fn site_of(r: &Replica) -> SiteId {
    SiteId::from_slice(&hex::decode(r.site_hex()).unwrap()).unwrap()
}

fn status_scopes(r: &Replica) -> String {
    r.one("SELECT json_extract(outpost_status(), '$.scopes')")
}

/// A device enrolled at a scripted hub that granted it `scopes` (version 1), synced once.
fn granted(name: &str, scopes: &[&str]) -> (Hub, Replica) {
    let hub = Hub::start();
    let r = device(name);
    hub.enroll(&r);
    hub.grant(site_of(&r), 1, scopes);
    hub.sync(&r);
    (hub, r)
}

// ---- declaring ----

#[test]
fn the_scope_rule_is_stored_with_the_table_definition() {
    let r = device("a");
    let def = |t: &str| -> String {
        r.one(&format!(
            "SELECT def FROM _outpost_tables WHERE name = '{t}'"
        ))
    };
    assert_contains(&def("patients"), &[r#""scope":{"column":"clinic"}"#]);
    assert_contains(&def("visits"), &[r#""scope":{"via":"patient_id"}"#]);
    // An unscoped table's definition is what it was before scopes: no "scope" key at all.
    assert!(!def("forms").contains("scope"), "{}", def("forms"));
    // Tracking again with the same rule is idempotent.
    r.track("patients", Some(r#"{"scope": "clinic"}"#));
    r.track("visits", Some(r#"{"scope": {"via": "patient_id"}}"#));
}

#[test]
fn a_definition_saved_without_a_rule_reads_as_unscoped() {
    let r = Replica::new("a", SCHEMA);
    r.track("patients", None);
    // A definition as an earlier version saved it (no "scope" key): unscoped, no write check.
    r.exec("UPDATE _outpost_tables SET def = json_remove(def, '$.scope')");
    r.exec("INSERT INTO patients VALUES ('p1', 'A', NULL)");
    // Declaring a scope on it now (nothing exported) is accepted once its rows hold scope names,
    // and checks writes from then on.
    let e = track_error(&r, "patients", r#"{"scope": "clinic"}"#);
    assert_contains(&e, &["1 row(s) of \"patients\""]);
    r.exec("UPDATE patients SET clinic = 'moshi'");
    r.track("patients", Some(r#"{"scope": "clinic"}"#));
    let e = error_of(&r.conn, "INSERT INTO patients VALUES ('p2', 'B', NULL)");
    assert_contains(&e, &["\"clinic\"", "\"patients\"", "not NULL"]);
}

#[test]
fn the_scope_column_must_exist_outside_the_key_and_merge_lww() {
    let r = Replica::new(
        "a",
        "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
         CREATE TABLE beds(clinic TEXT NOT NULL, n INTEGER NOT NULL, label TEXT, PRIMARY KEY(clinic, n));",
    );
    let e = track_error(&r, "patients", r#"{"scope": "clinik"}"#);
    assert_contains(&e, &["\"patients\".\"clinik\"", "no such column"]);
    let e = track_error(&r, "beds", r#"{"scope": "clinic"}"#);
    assert_contains(&e, &["\"beds\".\"clinic\"", "primary key"]);
    let e = track_error(
        &r,
        "patients",
        r#"{"scope": "clinic", "columns": {"clinic": "counter"}}"#,
    );
    assert_contains(&e, &["\"patients\".\"clinic\"", "lww", "counter"]);
    let e = track_error(&r, "patients", r#"{"scope": 7}"#);
    assert_contains(&e, &["\"scope\" is a column name"]);
    let e = track_error(&r, "patients", r#"{"scope": {"via": 1}}"#);
    assert_contains(&e, &["\"scope\" is a column name"]);
    // Saying lww explicitly is fine; nothing refused was recorded.
    assert_eq!(r.one::<i64>("SELECT count(*) FROM _outpost_tables"), 0);
    r.track(
        "patients",
        Some(r#"{"scope": "clinic", "columns": {"clinic": "lww"}}"#),
    );
}

#[test]
fn a_via_key_is_a_foreign_key_to_a_table_tracked_with_a_scope() {
    let r = Replica::new(
        "a",
        "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
         CREATE TABLE households(id TEXT PRIMARY KEY NOT NULL, village TEXT);
         CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id),
           household_id TEXT REFERENCES households(id), note TEXT);
         CREATE TABLE labs(id TEXT PRIMARY KEY NOT NULL, visit_id TEXT REFERENCES visits(id), result TEXT);
         CREATE TABLE cards(id TEXT PRIMARY KEY NOT NULL, clinic TEXT, code TEXT, UNIQUE(code, clinic));
         CREATE TABLE scans(id TEXT PRIMARY KEY NOT NULL, card_code TEXT REFERENCES cards(code), at TEXT);
         CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, parent_id TEXT REFERENCES notes(id), body TEXT);",
    );
    // The parent not tracked yet, then a parent tracked without a scope.
    let e = track_error(&r, "visits", r#"{"scope": {"via": "patient_id"}}"#);
    assert_contains(
        &e,
        &[
            "\"visits\".\"patient_id\"",
            "\"patients\"",
            "not tracked with a scope",
        ],
    );
    r.track("households", None);
    let e = track_error(&r, "visits", r#"{"scope": {"via": "household_id"}}"#);
    assert_contains(
        &e,
        &[
            "\"visits\".\"household_id\"",
            "\"households\"",
            "not tracked with a scope",
        ],
    );
    // Not a foreign key at all; a key to the table itself.
    let e = track_error(&r, "visits", r#"{"scope": {"via": "note"}}"#);
    assert_contains(&e, &["\"visits\".\"note\"", "no single-column foreign key"]);
    let e = track_error(&r, "notes", r#"{"scope": {"via": "parent_id"}}"#);
    assert_contains(&e, &["\"notes\".\"parent_id\"", "itself"]);
    // A key to a scoped parent's other column than its primary key.
    r.track("cards", Some(r#"{"scope": "clinic"}"#));
    let e = track_error(&r, "scans", r#"{"scope": {"via": "card_code"}}"#);
    assert_contains(
        &e,
        &["\"scans\".\"card_code\"", "\"cards\"(code)", "primary key"],
    );
    // The right way, and a chain: labs follow visits, which follow patients.
    r.track("patients", Some(r#"{"scope": "clinic"}"#));
    r.track("visits", Some(r#"{"scope": {"via": "patient_id"}}"#));
    r.track("labs", Some(r#"{"scope": {"via": "visit_id"}}"#));
}

#[test]
fn scoped_tables_reference_scoped_tables_only_through_their_via_key() {
    let r = Replica::new(
        "a",
        "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
         CREATE TABLE staff(id TEXT PRIMARY KEY NOT NULL, name TEXT);
         CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id),
           referred_from TEXT REFERENCES patients(id), staff_id TEXT REFERENCES staff(id), clinic TEXT);
         CREATE TABLE rooms(id TEXT PRIMARY KEY NOT NULL, clinic TEXT, head TEXT REFERENCES rooms(id));",
    );
    r.track("patients", Some(r#"{"scope": "clinic"}"#));
    r.track("staff", None);
    // A second key to the scoped parent, beside the via key: refused, naming it.
    let e = track_error(&r, "visits", r#"{"scope": {"via": "patient_id"}}"#);
    assert_contains(
        &e,
        &[
            "\"visits\".\"referred_from\"",
            "scoped table \"patients\"",
            "via key",
        ],
    );
    // A direct scope with a key to a scoped table: refused too.
    let e = track_error(&r, "visits", r#"{"scope": "clinic"}"#);
    assert_contains(&e, &["\"visits\".", "references scoped table \"patients\""]);
    // A reference to itself in a scoped table.
    let e = track_error(&r, "rooms", r#"{"scope": "clinic"}"#);
    assert_contains(&e, &["\"rooms\".\"head\"", "scoped table \"rooms\""]);
    // The other way round: a scoped table referencing `staff`, then `staff` scoped.
    r.exec("ALTER TABLE staff ADD COLUMN clinic TEXT");
    r.exec(
        "CREATE TABLE shifts(id TEXT PRIMARY KEY NOT NULL, staff_id TEXT REFERENCES staff(id), clinic TEXT)",
    );
    r.track("shifts", Some(r#"{"scope": "clinic"}"#));
    let e = track_error(&r, "staff", r#"{"scope": "clinic"}"#);
    assert_contains(
        &e,
        &[
            "scoped table \"shifts\"",
            "\"staff\"",
            "\"staff_id\"",
            "via key",
        ],
    );
}

#[test]
fn a_unique_constraint_on_a_scoped_table_includes_its_scope_column() {
    let r = Replica::new(
        "a",
        "CREATE TABLE staff(id TEXT PRIMARY KEY NOT NULL, badge TEXT UNIQUE, clinic TEXT);
         CREATE TABLE rooms(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
         CREATE UNIQUE INDEX rooms_name ON rooms(name);
         CREATE TABLE beds(id TEXT PRIMARY KEY NOT NULL, label TEXT, clinic TEXT, UNIQUE(clinic, label));
         CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, clinic TEXT);
         CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id),
           n INTEGER, UNIQUE(n));
         CREATE TABLE labs(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id),
           n INTEGER, UNIQUE(patient_id, n));",
    );
    let e = track_error(&r, "staff", r#"{"scope": "clinic"}"#);
    assert_contains(
        &e,
        &[
            "UNIQUE constraint of \"staff\" (badge)",
            "scope column \"clinic\"",
        ],
    );
    let e = track_error(&r, "rooms", r#"{"scope": "clinic"}"#);
    assert_contains(
        &e,
        &[
            "unique index \"rooms_name\" of \"rooms\" (name)",
            "\"clinic\"",
        ],
    );
    r.track("beds", Some(r#"{"scope": "clinic"}"#));
    r.track("patients", Some(r#"{"scope": "clinic"}"#));
    let e = track_error(&r, "visits", r#"{"scope": {"via": "patient_id"}}"#);
    assert_contains(&e, &["\"visits\" (n)", "\"patient_id\""]);
    r.track("labs", Some(r#"{"scope": {"via": "patient_id"}}"#));
    // Unscoped, the same tables are fine.
    r.track("staff", None);
    r.track("rooms", None);
}

#[test]
fn a_scope_rule_needs_a_table_with_no_exported_history() {
    let r = Replica::new(
        "a",
        &format!(
            "{SCHEMA} CREATE TABLE drugs(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);"
        ),
    );
    r.track("patients", None);
    r.track("drugs", None);
    r.exec("INSERT INTO patients VALUES ('p1', 'A', 'moshi')");
    // Written and not exported yet: a scope is still accepted, once every row holds a scope name.
    r.exec("INSERT INTO drugs VALUES ('d1', 'ORS', 'moshi'), ('d2', 'Zinc', NULL), ('d3', 'Iron', 'a*')");
    let e = track_error(&r, "drugs", r#"{"scope": "clinic"}"#);
    assert_contains(&e, &["2 row(s) of \"drugs\"", "\"clinic\""]);
    r.exec("UPDATE drugs SET clinic = 'moshi'");
    r.track("drugs", Some(r#"{"scope": "clinic"}"#));
    // Exported (outpost_changes puts it in a batch): refused from then on.
    assert!(r.changes(0, None).is_some());
    let e = track_error(&r, "patients", r#"{"scope": "clinic"}"#);
    assert_contains(
        &e,
        &[
            "\"patients\"",
            "already left in a batch",
            "no exported history",
        ],
    );
    // A table tracked after the export has no history of its own.
    r.exec("CREATE TABLE wards(id TEXT PRIMARY KEY NOT NULL, clinic TEXT)");
    r.track("wards", None);
    r.exec("INSERT INTO wards VALUES ('w1', 'moshi')");
    r.track("wards", Some(r#"{"scope": "clinic"}"#));
    // An already scoped table tracked again the same way is no new rule.
    r.track("drugs", Some(r#"{"scope": "clinic"}"#));
}

#[test]
fn a_scope_rule_never_changes_once_declared() {
    let r = device("a");
    let e = track_error(&r, "patients", r#"{"scope": "name"}"#);
    assert_contains(
        &e,
        &[
            "\"patients\" is scoped by {\"scope\": \"clinic\"}",
            "cannot change",
            "asked: {\"scope\": \"name\"}",
        ],
    );
    let e = track_error(&r, "patients", r#"{"direction": "up"}"#);
    assert_contains(&e, &["cannot change", "asked: no scope"]);
    let e = track_error(&r, "visits", r#"{"scope": "note"}"#);
    assert_contains(
        &e,
        &["{\"scope\": {\"via\": \"patient_id\"}}", "cannot change"],
    );
    // Other options may change with the same rule.
    r.track(
        "patients",
        Some(r#"{"scope": "clinic", "direction": "up"}"#),
    );
}

// ---- writing ----

#[test]
fn an_inserted_scope_cell_must_hold_a_scope_name() {
    let r = device("a");
    for (value, shown) in [
        ("NULL", "not NULL"),
        ("''", "not ''"),
        ("'*'", "not '*'"),
        ("'moshi town'", "not 'moshi town'"),
        ("'moshi/2'", "not 'moshi/2'"),
        (&format!("'{}'", "a".repeat(65)), "not 'aaaa"),
        ("x'00'", "not a blob"),
    ] {
        let e = error_of(
            &r.conn,
            &format!("INSERT INTO patients VALUES ('p1', 'A', {value})"),
        );
        assert_contains(
            &e,
            &[
                "outpost: scope column \"clinic\" of \"patients\" must hold a scope name (1-64 of A-Z a-z 0-9 _ . -)",
                shown,
            ],
        );
    }
    assert_eq!(r.one::<i64>("SELECT count(*) FROM patients"), 0);
    assert_eq!(
        r.one::<i64>("SELECT count(*) FROM _outpost_log WHERE tbl = 1"),
        0
    );
    // Names at the limits, every character allowed.
    r.exec(&format!(
        "INSERT INTO patients VALUES ('p1', 'A', 'a'), ('p2', 'B', '{}'), ('p3', 'C', 'Tanga-2.north_A')",
        "z".repeat(64)
    ));
    // Unscoped and via tables are not checked.
    r.exec("INSERT INTO forms VALUES ('f1', NULL); INSERT INTO visits VALUES ('v1', 'p1', NULL)");
}

#[test]
fn a_device_with_no_grant_inserts_into_any_scope() {
    let r = device("a");
    assert_eq!(
        r.one::<Option<String>>("SELECT json_extract(outpost_status(), '$.scopes')"),
        None
    );
    r.exec("INSERT INTO patients VALUES ('p1', 'A', 'moshi'), ('p2', 'B', 'tanga')");
    // Enrolled with a peer that wrote no grant: still none.
    let hub = Hub::start();
    hub.enroll(&r);
    hub.sync(&r);
    r.exec("INSERT INTO patients VALUES ('p3', 'C', 'arusha')");
    assert_eq!(r.one::<i64>("SELECT count(*) FROM patients"), 3);
}

#[test]
fn an_insert_outside_the_grant_is_refused_naming_the_scope() {
    let (_hub, r) = granted("a", &["moshi"]);
    assert_eq!(status_scopes(&r), r#"["moshi"]"#);
    // The contract check's lines (../shared/checks/scopes-contract).
    let e = error_of(
        &r.conn,
        "INSERT INTO patients VALUES ('x1','Dalila','tanga')",
    );
    assert_contains(
        &e,
        &["outpost: scope 'tanga' is not granted to this device"],
    );
    let e = error_of(&r.conn, "INSERT INTO patients VALUES ('x2','Eshe',NULL)");
    assert_contains(&e, &["\"clinic\"", "not NULL"]);
    assert_eq!(r.one::<i64>("SELECT count(*) FROM patients"), 0);
    // In its grant: fine, in a transaction too, where one refused row undoes its statement only.
    r.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi')");
    r.exec("BEGIN; INSERT INTO patients VALUES ('m2', 'Baraka', 'moshi');");
    let e = error_of(&r.conn, "INSERT INTO patients VALUES ('x3', 'C', 'tanga')");
    assert_contains(&e, &["'tanga'"]);
    r.exec("COMMIT");
    assert_eq!(
        r.rows("SELECT id FROM patients ORDER BY id"),
        ["Text(\"m1\")", "Text(\"m2\")"]
    );
    // An upsert that moves a row inserts it into the new scope: refused outside the grant.
    let e = error_of(
        &r.conn,
        "INSERT OR REPLACE INTO patients VALUES ('m1', 'Amina', 'tanga')",
    );
    assert_contains(&e, &["'tanga'"]);
}

#[test]
fn a_referral_moves_a_row_to_any_scope_name() {
    let (_hub, r) = granted("a", &["moshi"]);
    r.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi'), ('m2', 'Baraka', 'moshi')");
    r.exec("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'");
    assert_eq!(
        r.one::<String>("SELECT clinic FROM patients WHERE id = 'm1'"),
        "tanga"
    );
    // Another column of a row now outside the grant: no scope change, no check.
    r.exec("UPDATE patients SET name = 'Amina K' WHERE id = 'm1'");
    for (value, shown) in [("NULL", "not NULL"), ("''", "not ''"), ("'*'", "not '*'")] {
        let e = error_of(
            &r.conn,
            &format!("UPDATE patients SET clinic = {value} WHERE id = 'm2'"),
        );
        assert_contains(&e, &["\"clinic\" of \"patients\"", shown]);
    }
    assert_eq!(
        r.one::<String>("SELECT clinic FROM patients WHERE id = 'm2'"),
        "moshi"
    );
}

#[test]
fn a_regrant_learnt_at_a_sync_decides_the_next_insert() {
    let (hub, r) = granted("a", &["moshi"]);
    // A second connection of the same database keeps its own grant.
    let other = Connection::open(r.conn.path().unwrap()).unwrap();
    common::load(&other);
    let e = error_of(&other, "INSERT INTO patients VALUES ('t1', 'C', 'tanga')");
    assert_contains(&e, &["'tanga'"]);
    hub.grant(site_of(&r), 2, &["tanga"]);
    hub.sync(&r);
    assert_eq!(status_scopes(&r), r#"["tanga"]"#);
    // This connection synced; the other sees another connection's commit.
    r.exec("INSERT INTO patients VALUES ('t1', 'C', 'tanga')");
    other
        .execute_batch("INSERT INTO patients VALUES ('t2', 'D', 'tanga')")
        .unwrap();
    for conn in [&r.conn, &other] {
        let e = error_of(conn, "INSERT INTO patients VALUES ('m9', 'E', 'moshi')");
        assert_contains(&e, &["'moshi'"]);
    }
    hub.grant(site_of(&r), 3, &["*"]);
    hub.sync(&r);
    r.exec("INSERT INTO patients VALUES ('m9', 'E', 'moshi')");
    other
        .execute_batch("INSERT INTO patients VALUES ('a1', 'F', 'arusha')")
        .unwrap();
}

#[test]
fn changes_applied_from_a_peer_are_never_refused() {
    let (hub, r) = granted("a", &["moshi"]);
    // Another device (granted everything) writes into tanga; its batch (stream tanga) reaches
    // `a` signed, through the manual API: a sync would not apply a stream outside a's grant
    // (tests/streams.rs); the write checks are what this test is about.
    let o = device("o");
    o.exec("INSERT INTO patients VALUES ('t1', 'Chausiku', 'tanga'); INSERT INTO visits VALUES ('v1', 't1', 'ANC')");
    let site = site_of(&o);
    let key = site_keypair(site);
    hub.certify_key(site, key.public());
    hub.sync(&r);
    let mut batch: Vec<u8> = o.one("SELECT outpost_changes(0, NULL, 'tanga')");
    signature::sign(&mut batch, &key).unwrap();
    // The write checks let it in (an error would fail the apply); then the row, in a scope
    // outside a's grant, leaves with its visit (tests/streams.rs, "rows that leave").
    let out = r.apply(&batch).unwrap();
    assert_eq!(out["exits"], 2, "{out}");
    assert_eq!(r.one::<i64>("SELECT count(*) FROM patients"), 0);
    assert_eq!(r.one::<i64>("SELECT count(*) FROM outpost_quarantine"), 0);
    // A local insert into tanga is still refused.
    let e = error_of(&r.conn, "INSERT INTO patients VALUES ('t2', 'D', 'tanga')");
    assert_contains(&e, &["'tanga'"]);
}
