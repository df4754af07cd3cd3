//! Per-record sync state (`outpost_row_status`, `outpost_pending`, issue 18 item 6) on real
//! database files with the built extension loaded, synced through a hub on a loopback port that
//! speaks the real protocol (the `Responder` and `ServerSession` of `outpost-protocol`, real
//! Noise crypto) over a store in memory: what it was pushed it holds and serves, and its hello's
//! vector says so. The test scripts each connection it accepts, so it can cut one after the
//! push was stored and before the ack leaves.

mod common;
use common::clinic;
use common::scripted_hub::{now_ms, Hub};
use common::Replica;

fn status(r: &Replica, table: &str, key: &str) -> String {
    r.one(&format!("SELECT outpost_row_status('{table}', '{key}')"))
}

/// `outpost_pending` as `tbl|pk|columns|since_ms is null` lines.
fn pending(r: &Replica) -> Vec<String> {
    let mut s = r
        .conn
        .prepare("SELECT tbl, pk, columns, since_ms IS NULL FROM outpost_pending()")
        .unwrap();
    s.query_map([], |row| {
        Ok(format!(
            "{}|{}|{}|{}",
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            if row.get::<_, bool>(3)? { "null" } else { "ms" }
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn a_local_write_is_pending_until_a_hub_holds_it_and_again_after_an_edit() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Asha', 'Mbeya'), ('p2', 'Baraka', 'Moshi')");
    // Not folded yet: read from the trigger log.
    assert_eq!(status(&a, "patients", "p1"), "pending");
    let before: i64 = a.one("SELECT min(since_ms) FROM outpost_pending");
    let now = now_ms() as i64;
    assert!(
        (now - 60_000..=now + 1_000).contains(&before),
        "{before} vs {now}"
    );
    assert_eq!(
        pending(&a),
        vec![
            "patients|[\"p1\"]|[\"name\",\"village\",\"visits\",\"allergies\"]|ms",
            "patients|[\"p2\"]|[\"name\",\"village\",\"visits\",\"allergies\"]|ms",
        ]
    );
    let out = hub.sync(&a);
    assert_eq!(out["pushed"], 2, "{out}");
    assert_eq!(status(&a, "patients", "p1"), "synced");
    assert_eq!(status(&a, "patients", "p2"), "synced");
    assert!(pending(&a).is_empty(), "{:?}", pending(&a));
    assert_eq!(
        a.one::<String>("SELECT outpost_row_status('patients', 'p9')"),
        "synced"
    );

    // An edit of one column: that row alone, that column alone.
    a.exec("UPDATE patients SET village = 'Iringa' WHERE id = 'p2'");
    assert_eq!(status(&a, "patients", "p1"), "synced");
    assert_eq!(status(&a, "patients", "p2"), "pending");
    assert_eq!(pending(&a), vec!["patients|[\"p2\"]|[\"village\"]|ms"]);
    // Folded (an export folds the log) it is still pending: no relay holds it.
    assert!(a.changes(0, None).is_some());
    assert_eq!(pending(&a), vec!["patients|[\"p2\"]|[\"village\"]|ms"]);
    // A delete is pending too, without columns or a clock.
    a.exec("DELETE FROM patients WHERE id = 'p1'");
    assert_eq!(status(&a, "patients", "p1"), "pending");
    assert_eq!(
        pending(&a),
        vec![
            "patients|[\"p1\"]|[]|null",
            "patients|[\"p2\"]|[\"village\"]|ms"
        ]
    );
    hub.sync(&a);
    assert!(pending(&a).is_empty(), "{:?}", pending(&a));
    assert_eq!(status(&a, "patients", "p1"), "synced");
    assert_eq!(status(&a, "patients", "p2"), "synced");
}

#[test]
fn a_received_change_does_not_make_a_row_pending() {
    let hub = Hub::start();
    let (a, b) = (clinic("a"), clinic("b"));
    hub.enroll(&a);
    hub.enroll(&b);
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    hub.sync(&a);
    let out = hub.sync(&b);
    assert!(out["applied"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(
        b.one::<String>("SELECT name FROM patients WHERE id = 'p1'"),
        "Asha"
    );
    assert_eq!(status(&b, "patients", "p1"), "synced");
    assert!(pending(&b).is_empty(), "{:?}", pending(&b));
    // Its own edit of the received row is.
    b.exec("UPDATE patients SET name = 'Asha K' WHERE id = 'p1'");
    assert_eq!(status(&b, "patients", "p1"), "pending");
    assert_eq!(pending(&b), vec!["patients|[\"p1\"]|[\"name\"]|ms"]);
}

#[test]
fn a_push_stored_but_cut_before_its_ack_is_synced_at_the_next_hello() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    let e = hub.sync_cut_before_ack(&a);
    assert!(!e.is_empty());
    // The hub holds it, but the device never heard so.
    assert_eq!(status(&a, "patients", "p1"), "pending");
    let out = hub.sync(&a);
    assert_eq!(
        out["pushed"], 0,
        "the hub's hello said it holds everything: {out}"
    );
    assert_eq!(status(&a, "patients", "p1"), "synced");
    assert!(pending(&a).is_empty(), "{:?}", pending(&a));
}

#[test]
fn a_review_conflict_and_a_quarantined_row_say_so() {
    let (a, b) = (clinic("a"), clinic("b"));
    a.exec("INSERT INTO patients(id, allergies) VALUES ('p1', 'none'), ('p2', 'none')");
    a.sync_to(&b, None);
    b.sync_to(&a, None);
    a.exec("UPDATE patients SET allergies = 'penicillin' WHERE id = 'p1'");
    b.exec("UPDATE patients SET allergies = 'sulfa' WHERE id = 'p1'");
    a.sync_to(&b, None);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM outpost_conflicts"), 1);
    // B's own write is pending as well: conflict wins.
    assert_eq!(status(&b, "patients", "p1"), "conflict");
    assert_eq!(status(&b, "patients", "p2"), "synced");

    let x = Replica::new("x", "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER);");
    let y = Replica::new(
        "y",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER CHECK (n < 100));",
    );
    x.track("t", Some(r#"{"allow_integer_pk": true}"#));
    y.track("t", Some(r#"{"allow_integer_pk": true}"#));
    x.exec("INSERT INTO t VALUES (1, 500), (2, 5)");
    x.sync_to(&y, None);
    assert_eq!(y.one::<i64>("SELECT count(*) FROM outpost_quarantine"), 1);
    assert_eq!(
        y.one::<String>("SELECT outpost_row_status('t', 1)"),
        "quarantined"
    );
    // A key given as text (Android binds every argument as text) finds the integer key.
    assert_eq!(
        y.one::<String>("SELECT outpost_row_status('t', '1')"),
        "quarantined"
    );
    assert_eq!(
        y.one::<String>("SELECT outpost_row_status('t', 2)"),
        "synced"
    );
    // Quarantined wins over pending.
    y.exec("INSERT INTO t VALUES (1, 7)");
    assert_eq!(
        y.one::<String>("SELECT outpost_row_status('t', 1)"),
        "quarantined"
    );
}

#[test]
fn bad_calls_name_the_table_and_the_key() {
    let a = Replica::new(
        "a",
        "CREATE TABLE r(device TEXT, at INTEGER, v, PRIMARY KEY(device, at)); CREATE TABLE plain(id TEXT PRIMARY KEY);",
    );
    a.track("r", None);
    let err = |sql: &str| {
        a.conn
            .query_row(sql, [], |r| r.get::<_, String>(0))
            .unwrap_err()
            .to_string()
    };
    let e = err("SELECT outpost_row_status('plain', 'x')");
    assert!(e.contains("table \"plain\" is not tracked"), "{e}");
    let e = err("SELECT outpost_row_status('r', 'd1')");
    assert!(e.contains("key of 2 column(s) (device, at)"), "{e}");
    assert!(e.contains("got 1"), "{e}");
    let e = err("SELECT outpost_row_status('r')");
    assert!(e.contains("takes 2 to 127 argument(s)"), "{e}");
    a.exec("INSERT INTO r VALUES ('d1', 5, 1)");
    assert_eq!(
        a.one::<String>("SELECT outpost_row_status('r', 'd1', 5)"),
        "pending"
    );
    assert_eq!(
        a.one::<String>("SELECT outpost_row_status('r', 'd1', '5')"),
        "pending"
    );
    assert_eq!(
        a.one::<String>("SELECT outpost_row_status('r', 'd1', 6)"),
        "synced"
    );
    assert_eq!(
        a.one::<String>("SELECT pk FROM outpost_pending"),
        "[\"d1\",5]"
    );
}

#[test]
fn the_snapshot_follows_rollbacks_and_other_connections() {
    let a = clinic("a");
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    a.changes(0, None); // folded
                        // Acknowledge everything as a relay would (no relay here: the manual API alone never does).
    a.exec(
        "INSERT INTO _outpost_meta(k, v) VALUES ('acked_seq', (SELECT max(seq) FROM _outpost_log))",
    );
    assert_eq!(status(&a, "patients", "p1"), "synced");
    // A write inside a transaction shows, and goes with its rollback.
    a.exec("BEGIN; UPDATE patients SET name = 'X' WHERE id = 'p1';");
    assert_eq!(status(&a, "patients", "p1"), "pending");
    a.exec("ROLLBACK");
    assert_eq!(status(&a, "patients", "p1"), "synced");
    a.exec("BEGIN; SAVEPOINT s; UPDATE patients SET name = 'X' WHERE id = 'p1';");
    assert_eq!(status(&a, "patients", "p1"), "pending");
    a.exec("ROLLBACK TO s; RELEASE s;");
    assert_eq!(status(&a, "patients", "p1"), "synced");
    a.exec("COMMIT");
    // Another connection's commit is seen by the next call.
    let path = a.conn.path().unwrap().to_string();
    let other = rusqlite::Connection::open(&path).unwrap();
    common::load(&other);
    other
        .execute("UPDATE patients SET name = 'Y' WHERE id = 'p1'", [])
        .unwrap();
    assert_eq!(status(&a, "patients", "p1"), "pending");
}
