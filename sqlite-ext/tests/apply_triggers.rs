//! Applying a peer's batch with the tracked tables' triggers paused (`apply/trigger_pause.rs`):
//! the app's own triggers still run, capture is back right after, and a row the app table holds
//! without sync state is merged, not refused.

mod common;

use common::{clinic, Replica, CLINIC};
use rusqlite::config::DbConfig;

/// An app trigger (here an audit table; a full-text index works the same way) sees the rows a
/// peer sends, so Outpost leaves every trigger on for that apply.
#[test]
fn an_apps_own_trigger_sees_the_rows_a_peer_sends() {
    let a = clinic("a");
    let b = clinic("b");
    b.exec(
        "CREATE TABLE audit(what TEXT, id TEXT);
         CREATE TRIGGER patients_audit_ins AFTER INSERT ON patients BEGIN
           INSERT INTO audit VALUES ('insert', NEW.id); END;
         CREATE TRIGGER patients_audit_upd AFTER UPDATE OF village ON patients BEGIN
           INSERT INTO audit VALUES ('village', NEW.id); END;",
    );
    a.exec(
        "INSERT INTO patients(id, name, village) VALUES ('p1', 'Amina', 'Moshi'), ('p2', 'Juma', 'Tanga')",
    );
    a.sync_to(&b, None);
    a.exec("UPDATE patients SET village = 'Arusha' WHERE id = 'p2'");
    a.sync_to(&b, None);
    assert_eq!(
        b.rows("SELECT what, id FROM audit ORDER BY rowid"),
        [
            "Text(\"insert\")|Text(\"p1\")",
            "Text(\"insert\")|Text(\"p2\")",
            "Text(\"village\")|Text(\"p2\")"
        ]
    );
    // The peer's writes were not captured as b's own.
    assert_eq!(b.db_version(), 0);
}

fn triggers_on(r: &Replica) -> bool {
    r.conn
        .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)
        .unwrap()
}

/// Right after an apply, whether it succeeded or was refused, triggers are on again and a local
/// write is captured; the connection's trigger setting is what it was.
#[test]
fn local_writes_right_after_an_apply_are_captured() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Amina')");
    let first = a.changes(0, None).unwrap();
    a.exec("INSERT INTO patients(id, name) VALUES ('p2', 'Juma')");
    let second = a.changes(1, None).unwrap();

    // A batch that leaves a gap in a's sequence is refused: nothing applied.
    let refused = b.apply(&second).unwrap_err().to_string();
    assert!(
        refused.contains("gap") || refused.contains("missing"),
        "{refused}"
    );
    assert!(triggers_on(&b));
    b.exec("INSERT INTO patients(id, name) VALUES ('b1', 'Neema')");
    assert_eq!(b.db_version(), 1);

    b.apply(&first).unwrap();
    assert!(triggers_on(&b));
    b.exec("UPDATE patients SET village = 'Moshi' WHERE id = 'p1'");
    assert_eq!(b.db_version(), 2);
    b.sync_to(&a, None);
    assert_eq!(
        a.one::<String>("SELECT village FROM patients WHERE id = 'p1'"),
        "Moshi"
    );
    assert_eq!(a.one::<i64>("SELECT count(*) FROM patients"), 3);

    // An app that switched triggers off itself keeps that choice.
    b.conn
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .unwrap();
    b.apply(&second).unwrap();
    assert!(!triggers_on(&b));
}

/// Batches kept in an app table can be applied by one statement; switching triggers expires
/// prepared statements, which must not disturb the one running the applies.
#[test]
fn one_statement_applies_every_batch_of_an_inbox() {
    let a = clinic("a");
    let b = clinic("b");
    b.exec("CREATE TABLE inbox(n INTEGER PRIMARY KEY, batch BLOB)");
    let mut since = 0;
    for i in 0..5 {
        a.exec(&format!(
            "INSERT INTO patients(id, name) VALUES ('p{i}', 'Patient {i}')"
        ));
        let batch = a.changes(since, None).unwrap();
        since = a.db_version();
        b.conn
            .execute("INSERT INTO inbox(batch) VALUES (?1)", [&batch])
            .unwrap();
    }
    let outs = b.rows("SELECT outpost_apply(batch) FROM inbox ORDER BY n");
    assert_eq!(outs.len(), 5);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM patients"), 5);
    assert_eq!(b.covered(&a.site_hex()), 5);
}

/// A table that syncs `down` only captures nothing, so a row it held before it was tracked has
/// no sync state (the app cannot write it afterwards: the write is refused). A peer's row with
/// the same key is merged into it (the peer's values win), as before the apply learned to insert
/// rows it has no state for without an upsert.
#[test]
fn a_row_held_without_sync_state_takes_the_peers_values() {
    let hq = Replica::new("hq", CLINIC);
    hq.track("patients", None);
    let device = Replica::new("device", CLINIC);
    device.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'draft', 'Moshi')");
    device.track("patients", Some(r#"{"direction":"down"}"#));
    hq.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Amina')");
    let out = device.apply(&hq.changes(0, None).unwrap()).unwrap();
    assert_eq!(out["quarantined"], 0, "{out}");
    assert_eq!(
        device.rows("SELECT id, name, village FROM patients"),
        ["Text(\"p1\")|Text(\"Amina\")|Null"]
    );
}

/// Foreign-key actions are not triggers: a peer's delete of a patient still cascades to the
/// rows of an untracked table that reference it, with Outpost's triggers paused.
#[test]
fn a_peers_delete_still_cascades_to_an_untracked_child_table() {
    let a = clinic("a");
    let b = clinic("b");
    b.exec(
        "CREATE TABLE reminders(id INTEGER PRIMARY KEY,
           patient_id TEXT REFERENCES patients(id) ON DELETE CASCADE, text TEXT)",
    );
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Amina'), ('p2', 'Juma')");
    a.sync_to(&b, None);
    b.exec(
        "INSERT INTO reminders(patient_id, text) VALUES ('p1', 'malaria test'), ('p2', 'weigh')",
    );
    a.exec("DELETE FROM patients WHERE id = 'p1'");
    a.sync_to(&b, None);
    assert_eq!(b.rows("SELECT id FROM patients"), ["Text(\"p2\")"]);
    assert_eq!(b.rows("SELECT text FROM reminders"), ["Text(\"weigh\")"]);
}
