//! Scenarios a user recognises: databases exchanging batches through the loaded extension.

mod common;
use common::{clinic, mesh_sync, Replica};

const TABLES: &[&str] = &["patients", "visits"];

#[test]
fn inserts_updates_and_deletes_reach_the_other_device() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1','Asha','Mbeya'), ('p2','Baraka','Moshi'), ('p3','Chausiku','Gulu');
            INSERT INTO visits VALUES ('v1','p1','fever');");
    a.sync_to(&b, None);
    assert_eq!(a.state(TABLES), b.state(TABLES));
    a.exec("UPDATE patients SET village = 'Iringa' WHERE id = 'p1'; DELETE FROM patients WHERE id = 'p3';");
    let batches = a.sync_to(&b, None);
    assert_eq!(batches.len(), 1);
    assert_eq!(
        b.one::<String>("SELECT village FROM patients WHERE id='p1'"),
        "Iringa"
    );
    assert_eq!(
        b.one::<i64>("SELECT count(*) FROM patients WHERE id='p3'"),
        0
    );
    assert_eq!(a.state(TABLES), b.state(TABLES));
    // only the changed column travels for an update
    a.exec("UPDATE patients SET name = 'Asha K' WHERE id = 'p1'");
    let since = b.covered(&a.site_hex());
    let batch = a.changes(since, None).unwrap();
    let json: serde_json::Value = serde_json::from_str(&a.one::<String>(&format!(
        "SELECT outpost_batch_json(x'{}')",
        hex::encode(&batch)
    )))
    .unwrap();
    let cells = &json["body"][0]["rows"][0]["cells"];
    assert_eq!(cells.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(cells[0]["column"], "name");
}

#[test]
fn applying_the_same_batch_twice_changes_nothing() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name) VALUES ('p1','Asha')");
    let batch = a.changes(0, None).unwrap();
    let first = b.apply(&batch).unwrap();
    assert!(first["applied"].as_u64().unwrap() > 0);
    let before = b.state(TABLES);
    let again = b.apply(&batch).unwrap();
    assert_eq!(again["applied"], 0);
    assert_eq!(b.state(TABLES), before);
    // applied writes are not recorded as local writes, so B has nothing of its own to send
    assert_eq!(b.db_version(), 0);
    assert!(b.changes(0, None).is_none());
}

#[test]
fn concurrent_edits_of_different_fields_both_survive() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1','Asha','Mbeya')");
    mesh_sync(&[&a, &b]);
    a.exec("UPDATE patients SET name = 'Asha K' WHERE id='p1'");
    b.exec("UPDATE patients SET village = 'Iringa' WHERE id='p1'");
    mesh_sync(&[&a, &b]);
    for r in [&a, &b] {
        assert_eq!(
            r.one::<String>("SELECT name || '/' || village FROM patients"),
            "Asha K/Iringa"
        );
    }
}

#[test]
fn concurrent_edits_of_one_field_converge_on_three_devices() {
    let (a, b, c) = (clinic("a"), clinic("b"), clinic("c"));
    a.exec("INSERT INTO patients(id, village) VALUES ('p1','Mbeya')");
    mesh_sync(&[&a, &b, &c]);
    a.exec("UPDATE patients SET village='Tanga' WHERE id='p1'");
    b.exec("UPDATE patients SET village='Arusha' WHERE id='p1'");
    c.exec("UPDATE patients SET village='Gulu' WHERE id='p1'");
    // deliver in different orders
    c.sync_to(&a, None);
    b.sync_to(&a, None);
    a.sync_to(&c, None);
    mesh_sync(&[&c, &b, &a]);
    assert_eq!(a.state(TABLES), b.state(TABLES));
    assert_eq!(b.state(TABLES), c.state(TABLES));
}

#[test]
fn concurrent_counter_increments_add_once_under_replays() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, visits) VALUES ('p1', 0)");
    mesh_sync(&[&a, &b]);
    a.exec("UPDATE patients SET visits = visits + 1 WHERE id='p1'");
    a.exec("UPDATE patients SET visits = visits + 1 WHERE id='p1'");
    b.exec("UPDATE patients SET visits = visits + 1 WHERE id='p1'");
    let from_a = a.changes(0, None).unwrap();
    let from_b = b.changes(0, None).unwrap();
    for _ in 0..3 {
        b.apply(&from_a).unwrap();
        a.apply(&from_b).unwrap();
    }
    mesh_sync(&[&a, &b]);
    for r in [&a, &b] {
        assert_eq!(
            r.one::<i64>("SELECT visits FROM patients WHERE id='p1'"),
            3,
            "{}",
            r.name
        );
    }
}

#[test]
fn review_fields_show_the_same_conflict_everywhere_and_a_resolution_propagates() {
    let (a, b, c) = (clinic("a"), clinic("b"), clinic("c"));
    a.exec("INSERT INTO patients(id, allergies) VALUES ('p1', 'none')");
    mesh_sync(&[&a, &b, &c]);
    a.exec("UPDATE patients SET allergies='penicillin' WHERE id='p1'");
    b.exec("UPDATE patients SET allergies='sulfa' WHERE id='p1'");
    mesh_sync(&[&a, &b, &c]);
    let conflicts =
        |r: &Replica| r.rows("SELECT \"table\", pk, \"column\", siblings FROM outpost_conflicts");
    assert_eq!(conflicts(&a).len(), 1);
    assert_eq!(conflicts(&a), conflicts(&b));
    assert_eq!(conflicts(&b), conflicts(&c));
    assert_eq!(a.state(TABLES), c.state(TABLES));
    let id: i64 = c.one("SELECT id FROM outpost_conflicts");
    c.one::<i64>(&format!(
        "SELECT outpost_resolve({id}, 'penicillin, sulfa')"
    ));
    assert!(conflicts(&c).is_empty());
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        assert!(conflicts(r).is_empty(), "{}", r.name);
        assert_eq!(
            r.one::<String>("SELECT allergies FROM patients"),
            "penicillin, sulfa"
        );
    }
}

#[test]
fn delete_wins_over_a_concurrent_update() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name) VALUES ('p1','Asha')");
    mesh_sync(&[&a, &b]);
    a.exec("DELETE FROM patients WHERE id='p1'");
    b.exec("UPDATE patients SET name='Asha K' WHERE id='p1'");
    mesh_sync(&[&a, &b]);
    assert_eq!(a.state(TABLES), b.state(TABLES));
    assert_eq!(a.one::<i64>("SELECT count(*) FROM patients"), 0);
    // re-inserting later brings it back everywhere, without the old cells
    b.exec("INSERT INTO patients(id, name) VALUES ('p1','New')");
    mesh_sync(&[&a, &b]);
    assert_eq!(a.one::<String>("SELECT name FROM patients"), "New");
    assert_eq!(a.state(TABLES), b.state(TABLES));
}

fn parent_child_race(deleter_first: bool) {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p2','Baraka','Moshi')");
    mesh_sync(&[&a, &b]);
    a.exec("INSERT INTO visits VALUES ('v1','p2','fever')");
    b.exec("DELETE FROM patients WHERE id='p2'");
    if deleter_first {
        b.sync_to(&a, None);
        a.sync_to(&b, None);
        b.sync_to(&a, None);
    } else {
        a.sync_to(&b, None);
        b.sync_to(&a, None);
        a.sync_to(&b, None);
    }
    mesh_sync(&[&a, &b]);
    for r in [&a, &b] {
        assert_eq!(
            r.one::<String>("SELECT p.name || '/' || v.note FROM visits v JOIN patients p ON p.id = v.patient_id"),
            "Baraka/fever",
            "{}",
            r.name
        );
        assert!(r.maybe::<String>("PRAGMA foreign_key_check").is_none());
    }
    assert_eq!(a.state(TABLES), b.state(TABLES));
    let events: i64 = a.one::<i64>("SELECT count(*) FROM outpost_events")
        + b.one::<i64>("SELECT count(*) FROM outpost_events");
    assert!(events >= 1, "the restore is listed for a person");
}

#[test]
fn parent_deleted_while_child_added_elsewhere_comes_back_when_the_delete_arrives_first() {
    parent_child_race(false);
}

#[test]
fn parent_deleted_while_child_added_elsewhere_comes_back_when_the_child_arrives_first() {
    parent_child_race(true);
}

#[test]
fn up_and_down_tables_only_travel_their_way() {
    let schema = "CREATE TABLE forms(id TEXT PRIMARY KEY, body TEXT); CREATE TABLE readings(id TEXT PRIMARY KEY, value REAL);";
    let device = Replica::new("device", schema);
    let cloud = Replica::new("cloud", schema);
    device.track("forms", Some(r#"{"direction":"down"}"#));
    device.track("readings", Some(r#"{"direction":"up"}"#));
    cloud.track("forms", None);
    cloud.track("readings", None);
    cloud.exec(
        "INSERT INTO forms VALUES ('f1','intake v2'); INSERT INTO readings VALUES ('r0', 0.5);",
    );
    device.exec("INSERT INTO readings VALUES ('r1', 37.2);");
    // down: the device cannot write the table at all (each kind of write is refused).
    let refused = |write: &str| {
        let e = device.conn.execute_batch(write).unwrap_err().to_string();
        assert!(
            e.contains(r#"outpost: table "forms" is down: only the cloud writes it"#),
            "{write}: {e}"
        );
    };
    refused("INSERT INTO forms VALUES ('f-local','draft')");
    mesh_sync(&[&device, &cloud]);
    assert_eq!(
        device.rows("SELECT id, body FROM forms ORDER BY id"),
        vec!["Text(\"f1\")|Text(\"intake v2\")"],
        "down: the cloud's rows arrive (an apply writes the table)"
    );
    refused("UPDATE forms SET body = 'edited'");
    refused("DELETE FROM forms");
    refused("INSERT OR REPLACE INTO forms VALUES ('f1','replaced')");
    // ... and the cloud's later update and delete too.
    cloud.exec("UPDATE forms SET body = 'intake v3'; INSERT INTO forms VALUES ('f2', 'triage');");
    mesh_sync(&[&device, &cloud]);
    cloud.exec("DELETE FROM forms WHERE id = 'f1'");
    mesh_sync(&[&device, &cloud]);
    assert_eq!(
        device.rows("SELECT id, body FROM forms ORDER BY id"),
        vec!["Text(\"f2\")|Text(\"triage\")"]
    );
    assert_eq!(
        cloud.rows("SELECT id FROM readings ORDER BY id"),
        vec!["Text(\"r0\")", "Text(\"r1\")"]
    );
    assert_eq!(
        device.rows("SELECT id FROM readings"),
        vec!["Text(\"r1\")"],
        "up: nothing comes down"
    );
}

#[test]
fn a_column_added_between_writes_is_picked_up_with_its_values() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name) VALUES ('p1','Asha')");
    a.sync_to(&b, None);
    a.exec("ALTER TABLE patients ADD COLUMN phone TEXT; UPDATE patients SET phone = '+255700000001' WHERE id='p1';
            INSERT INTO patients(id, name, phone) VALUES ('p2','Baraka','+255700000002');");
    // B does not have the column yet: the values wait in quarantine, the rest applies
    a.sync_to(&b, None);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM patients"), 2);
    assert!(b.one::<i64>("SELECT count(*) FROM outpost_quarantine") >= 1);
    let later = a.changes(b.covered(&a.site_hex()), None);
    assert!(later.is_none(), "nothing is re-sent");
    b.exec("ALTER TABLE patients ADD COLUMN phone TEXT");
    b.one::<i64>("SELECT outpost_retry_quarantine()");
    assert_eq!(
        b.rows("SELECT phone FROM patients ORDER BY id"),
        vec!["Text(\"+255700000001\")", "Text(\"+255700000002\")"]
    );
    assert_eq!(b.one::<i64>("SELECT count(*) FROM outpost_quarantine"), 0);
    // and B's own edit of the new column travels back
    b.exec("UPDATE patients SET phone = '+255799999999' WHERE id='p1'");
    b.sync_to(&a, None);
    assert_eq!(
        a.one::<String>("SELECT phone FROM patients WHERE id='p1'"),
        "+255799999999"
    );
}

#[test]
fn a_check_failure_is_quarantined_and_never_blocks_later_syncs() {
    let a = Replica::new("a", "CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER);");
    let b = Replica::new(
        "b",
        "CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER CHECK (n < 100));",
    );
    a.track("t", None);
    b.track("t", None);
    a.exec("INSERT INTO t VALUES ('x', 500), ('y', 5)");
    a.sync_to(&b, None);
    assert_eq!(b.rows("SELECT id FROM t"), vec!["Text(\"y\")"]);
    assert_eq!(
        b.one::<String>("SELECT pk FROM outpost_quarantine"),
        "\"x\""
    );
    a.exec("INSERT INTO t VALUES ('z', 7)");
    a.sync_to(&b, None);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM t"), 2);
}

#[test]
fn an_unknown_table_is_quarantined() {
    let a = clinic("a");
    let b = Replica::new("b", common::CLINIC);
    b.track(
        "patients",
        Some(r#"{"columns":{"visits":"counter","allergies":"review"}}"#),
    );
    a.exec("INSERT INTO patients(id) VALUES ('p1'); INSERT INTO visits VALUES ('v1','p1','x');");
    a.sync_to(&b, None);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM patients"), 1);
    assert!(b
        .one::<String>("SELECT reason FROM outpost_quarantine")
        .contains("unknown table"));
}

/// Three replicas with a tracked `staff` table whose `badge` is UNIQUE.
fn staff_replicas() -> (Replica, Replica, Replica) {
    staff_replicas_of("CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT UNIQUE, name TEXT);")
}

/// Three replicas of `schema` with its `staff` table tracked.
fn staff_replicas_of(schema: &str) -> (Replica, Replica, Replica) {
    let rs = (
        Replica::new("a", schema),
        Replica::new("b", schema),
        Replica::new("c", schema),
    );
    for r in [&rs.0, &rs.1, &rs.2] {
        r.track("staff", None);
    }
    rs
}

#[test]
fn a_unique_collision_quarantines_the_later_row_on_every_replica() {
    let (a, b, c) = staff_replicas();
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema')");
    std::thread::sleep(std::time::Duration::from_millis(3));
    b.exec("INSERT INTO staff VALUES ('s2', 'B-7', 'Juma')");
    b.sync_to(&c, None); // C holds the later row first
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        assert_eq!(
            r.rows("SELECT id FROM staff"),
            vec!["Text(\"s1\")"],
            "{}: the earlier row stays",
            r.name
        );
        let q = r.rows("SELECT DISTINCT \"table\", pk FROM outpost_quarantine");
        assert_eq!(
            q,
            vec!["Text(\"staff\")|Text(\"\\\"s2\\\"\")"],
            "{}",
            r.name
        );
    }
    assert_eq!(a.state(&["staff"]), b.state(&["staff"]));
    assert_eq!(b.state(&["staff"]), c.state(&["staff"]));
    // once the earlier row is gone, the quarantined one comes back everywhere
    a.exec("DELETE FROM staff WHERE id = 's1'");
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        r.one::<i64>("SELECT outpost_retry_quarantine()");
        assert_eq!(
            r.rows("SELECT id, name FROM staff"),
            vec!["Text(\"s2\")|Text(\"Juma\")"],
            "{}",
            r.name
        );
        assert_eq!(
            r.one::<i64>("SELECT count(*) FROM outpost_quarantine"),
            0,
            "{}",
            r.name
        );
    }
}

/// A later change to a row held aside by a UNIQUE collision (evicted: values in quarantine, no
/// app row) is merged over its held values: the row neither comes back with its other columns
/// empty on one replica nor differs between replicas.
#[test]
fn a_change_to_a_row_held_aside_by_a_unique_collision_keeps_it_whole() {
    let (a, b, c) = staff_replicas();
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema')");
    std::thread::sleep(std::time::Duration::from_millis(3));
    c.exec("INSERT INTO staff VALUES ('s2', 'B-7', 'Juma')");
    c.sync_to(&b, None);
    a.sync_to(&b, None); // b: s1 is earlier, s2 is held aside
    assert_eq!(b.rows("SELECT id FROM staff"), vec!["Text(\"s1\")"]);
    // b's database as an earlier version left it: no list of the rows held aside.
    b.exec("DROP TABLE _outpost_evicted");
    c.exec("UPDATE staff SET name = 'Juma K.' WHERE id = 's2'"); // c has not seen s1 yet
    c.sync_to(&b, None);
    assert_eq!(
        b.rows("SELECT id, badge, name FROM staff ORDER BY id"),
        vec!["Text(\"s1\")|Text(\"B-7\")|Text(\"Neema\")"],
        "s2 must not come back without its badge"
    );
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        assert_eq!(
            r.rows("SELECT id FROM staff"),
            vec!["Text(\"s1\")"],
            "{}",
            r.name
        );
    }
    assert_eq!(a.state(&["staff"]), b.state(&["staff"]));
    assert_eq!(b.state(&["staff"]), c.state(&["staff"]));
    // Once s1 gives the badge up, s2 comes back whole everywhere, with its later name.
    a.exec("UPDATE staff SET badge = 'B-1' WHERE id = 's1'");
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        r.one::<i64>("SELECT outpost_retry_quarantine()");
        assert_eq!(
            r.rows("SELECT id, badge, name FROM staff ORDER BY id"),
            vec![
                "Text(\"s1\")|Text(\"B-1\")|Text(\"Neema\")",
                "Text(\"s2\")|Text(\"B-7\")|Text(\"Juma K.\")"
            ],
            "{}",
            r.name
        );
    }
}

/// Three replicas of a staff table with two UNIQUE columns besides its key.
fn two_unique_replicas() -> (Replica, Replica, Replica) {
    staff_replicas_of(
        "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT UNIQUE, name TEXT UNIQUE);",
    )
}

/// Rows colliding on two UNIQUE columns, reaching replicas in different orders: a row held
/// aside on one column frees the other for a later row, and a delete passes a value on down
/// the order. Every replica ends with the same rows and the same reasons.
#[test]
fn collisions_on_two_unique_columns_end_the_same_in_any_order() {
    let (a, b, c) = two_unique_replicas();
    let pause = || std::thread::sleep(std::time::Duration::from_millis(3));
    a.exec("INSERT INTO staff VALUES ('x', 'B-1', 'N-1')");
    pause();
    b.exec("INSERT INTO staff VALUES ('y', 'B-2', 'N-1')");
    pause();
    c.exec("INSERT INTO staff VALUES ('z', 'B-2', 'N-2')");
    // c meets y before x: y takes B-2 from the later z, then x takes N-1 from y, and z must
    // get B-2 back.
    b.sync_to(&c, None);
    assert_eq!(
        c.rows("SELECT id FROM staff ORDER BY id"),
        vec!["Text(\"y\")"]
    );
    a.sync_to(&c, None);
    // a meets z before y: y arrives to find N-1 held by the earlier x.
    c.sync_to(&a, None);
    b.sync_to(&a, None);
    mesh_sync(&[&a, &b, &c]);
    let held = |r: &Replica| {
        r.rows("SELECT DISTINCT pk || ' ' || reason FROM outpost_quarantine ORDER BY 1")
    };
    for r in [&a, &b, &c] {
        assert_eq!(
            r.rows("SELECT id FROM staff ORDER BY id"),
            vec!["Text(\"x\")", "Text(\"z\")"],
            "{}",
            r.name
        );
        assert_eq!(
            held(r),
            vec![
                "Text(\"\\\"y\\\" UNIQUE constraint failed: staff.name: the later write is kept here for a person\")"
            ],
            "{}",
            r.name
        );
    }
    // x leaves: y (earlier than z) takes N-1 and B-2 back, and z is held aside in turn.
    a.exec("DELETE FROM staff WHERE id = 'x'");
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        r.one::<i64>("SELECT outpost_retry_quarantine()");
        assert_eq!(
            r.rows("SELECT id, badge, name FROM staff ORDER BY id"),
            vec!["Text(\"y\")|Text(\"B-2\")|Text(\"N-1\")"],
            "{}",
            r.name
        );
        assert_eq!(
            held(r),
            vec![
                "Text(\"\\\"z\\\" UNIQUE constraint failed: staff.badge: the later write is kept here for a person\")"
            ],
            "{}",
            r.name
        );
    }
    assert_eq!(a.state(&["staff"]), b.state(&["staff"]));
    assert_eq!(b.state(&["staff"]), c.state(&["staff"]));
    // Untracking forgets the row held aside (its values stay in the quarantine for a person).
    assert_eq!(a.one::<i64>("SELECT outpost_untrack('staff')"), 1);
    assert_eq!(a.one::<i64>("SELECT count(*) FROM _outpost_evicted"), 0);
    assert_eq!(a.rows("SELECT id FROM staff"), vec!["Text(\"y\")"]);
    assert_eq!(
        a.one::<i64>("SELECT count(*) FROM outpost_quarantine WHERE pk = '\"z\"'"),
        1
    );
}

/// A row that arrives after two later rows took its two UNIQUE values, one each: both are held
/// aside and it takes its place, as on the replica that had it first.
#[test]
fn an_earlier_row_takes_its_values_from_two_later_rows() {
    let (a, b, c) = two_unique_replicas();
    // c's database is as an earlier version made it, without the list of rows held aside.
    c.exec("DROP TABLE _outpost_evicted");
    a.exec("INSERT INTO staff VALUES ('r', 'B-1', 'N-1')");
    std::thread::sleep(std::time::Duration::from_millis(3));
    b.exec("INSERT INTO staff VALUES ('h1', 'B-1', 'N-8')");
    b.exec("INSERT INTO staff VALUES ('h2', 'B-9', 'N-1')");
    b.sync_to(&c, None);
    a.sync_to(&c, None); // c holds h1 and h2 when r comes
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        assert_eq!(
            r.rows("SELECT id FROM staff ORDER BY id"),
            vec!["Text(\"r\")"],
            "{}",
            r.name
        );
        assert_eq!(
            r.rows("SELECT DISTINCT pk FROM outpost_quarantine ORDER BY 1"),
            vec!["Text(\"\\\"h1\\\"\")", "Text(\"\\\"h2\\\"\")"],
            "{}",
            r.name
        );
    }
    assert_eq!(a.state(&["staff"]), c.state(&["staff"]));
    assert_eq!(b.state(&["staff"]), c.state(&["staff"]));
}

/// A row held aside by a UNIQUE collision while another replica already gave it a child row
/// (foreign keys on): the child is held aside with it instead of failing every later sync on
/// the foreign key, and both come back when the value is free.
#[test]
fn a_row_held_aside_takes_its_children_with_it() {
    let schema = "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT UNIQUE, name TEXT);
         CREATE TABLE visits(id TEXT PRIMARY KEY, staff_id TEXT REFERENCES staff(id), note TEXT);";
    let (a, b) = (Replica::new("a", schema), Replica::new("b", schema));
    for r in [&a, &b] {
        r.track("staff", None);
        r.track("visits", None);
    }
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema')");
    std::thread::sleep(std::time::Duration::from_millis(3));
    b.exec("INSERT INTO staff VALUES ('s2', 'B-7', 'Juma')");
    b.exec("INSERT INTO visits VALUES ('v1', 's2', 'seen')");
    a.sync_to(&b, None); // b holds s2 and its visit when the earlier s1 comes
    b.sync_to(&a, None);
    mesh_sync(&[&a, &b]);
    for r in [&a, &b] {
        assert_eq!(
            r.rows("SELECT id FROM staff"),
            vec!["Text(\"s1\")"],
            "{}",
            r.name
        );
        assert_eq!(
            r.rows("SELECT id FROM visits"),
            Vec::<String>::new(),
            "{}",
            r.name
        );
        assert_eq!(
            r.rows("SELECT DISTINCT \"table\" || ' ' || pk FROM outpost_quarantine ORDER BY 1"),
            vec!["Text(\"staff \\\"s2\\\"\")", "Text(\"visits \\\"v1\\\"\")"],
            "{}",
            r.name
        );
    }
    assert_eq!(a.state(&["staff", "visits"]), b.state(&["staff", "visits"]));
    a.exec("UPDATE staff SET badge = 'B-1' WHERE id = 's1'");
    mesh_sync(&[&a, &b]);
    for r in [&a, &b] {
        r.one::<i64>("SELECT outpost_retry_quarantine()");
        assert_eq!(
            r.rows("SELECT s.id, v.id FROM staff AS s LEFT JOIN visits AS v ON v.staff_id = s.id ORDER BY 1"),
            vec!["Text(\"s1\")|Null", "Text(\"s2\")|Text(\"v1\")"],
            "{}",
            r.name
        );
        assert_eq!(
            r.one::<i64>("SELECT count(*) FROM outpost_quarantine"),
            0,
            "{}",
            r.name
        );
    }
    assert_eq!(a.state(&["staff", "visits"]), b.state(&["staff", "visits"]));
}

/// A partial UNIQUE index ("one active badge"): only rows its WHERE selects collide, so an
/// inactive row with the same badge neither holds it nor is held aside.
#[test]
fn a_partial_unique_index_decides_only_between_the_rows_it_selects() {
    let schema = "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT, active INTEGER);
         CREATE UNIQUE INDEX one_active_badge ON staff(badge) WHERE active = 1;";
    let (a, b) = (Replica::new("a", schema), Replica::new("b", schema));
    for r in [&a, &b] {
        r.track("staff", None);
    }
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 1)");
    std::thread::sleep(std::time::Duration::from_millis(3));
    b.exec("INSERT INTO staff VALUES ('s2', 'B-7', 0)");
    b.exec("INSERT INTO staff VALUES ('s3', 'B-7', 1)");
    b.sync_to(&a, None); // a: s3 meets the earlier s1
    a.sync_to(&b, None); // b: s1 meets the later s3 (and the inactive s2)
    for r in [&a, &b] {
        assert_eq!(
            r.rows("SELECT id FROM staff ORDER BY id"),
            vec!["Text(\"s1\")", "Text(\"s2\")"],
            "{}",
            r.name
        );
        assert_eq!(
            r.rows("SELECT DISTINCT pk || ' ' || reason FROM outpost_quarantine"),
            vec![
                "Text(\"\\\"s3\\\" UNIQUE constraint failed: staff.badge: the later write is kept here for a person\")"
            ],
            "{}",
            r.name
        );
    }
    // s1 steps down: s3 is the active B-7 everywhere.
    a.exec("UPDATE staff SET active = 0 WHERE id = 's1'");
    a.sync_to(&b, None);
    b.sync_to(&a, None);
    for r in [&a, &b] {
        r.one::<i64>("SELECT outpost_retry_quarantine()");
        assert_eq!(
            r.rows("SELECT id, active FROM staff ORDER BY id"),
            vec![
                "Text(\"s1\")|Integer(0)",
                "Text(\"s2\")|Integer(0)",
                "Text(\"s3\")|Integer(1)"
            ],
            "{}",
            r.name
        );
    }
    assert_eq!(a.state(&["staff"]), b.state(&["staff"]));
}

/// The same with a column added after the row was held aside: its tombstone is shorter than the
/// row, and the new column's value must still come back with it.
#[test]
fn a_row_held_aside_keeps_a_value_of_a_column_added_since() {
    let (a, b, c) = staff_replicas();
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema')");
    std::thread::sleep(std::time::Duration::from_millis(3));
    c.exec("INSERT INTO staff VALUES ('s2', 'B-7', 'Juma')");
    c.sync_to(&b, None);
    a.sync_to(&b, None); // b holds s2 aside
    for r in [&a, &b, &c] {
        r.exec("ALTER TABLE staff ADD COLUMN phone TEXT");
    }
    c.exec("UPDATE staff SET phone = '+255 700' WHERE id = 's2'");
    c.sync_to(&b, None);
    a.exec("UPDATE staff SET badge = 'B-1' WHERE id = 's1'");
    mesh_sync(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        r.one::<i64>("SELECT outpost_retry_quarantine()");
        assert_eq!(
            r.rows("SELECT id, badge, phone FROM staff ORDER BY id"),
            vec![
                "Text(\"s1\")|Text(\"B-1\")|Null",
                "Text(\"s2\")|Text(\"B-7\")|Text(\"+255 700\")"
            ],
            "{}",
            r.name
        );
    }
}

#[test]
fn chunked_first_sync_covers_everything() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("BEGIN");
    for i in 0..500 {
        a.exec(&format!(
            "INSERT INTO patients(id, name, village) VALUES ('p{i:04}', 'name {i}', 'village {}')",
            i % 7
        ));
    }
    a.exec("COMMIT; UPDATE patients SET village = 'moved' WHERE id < 'p0100';");
    let batches = a.sync_to(&b, Some(2_000));
    assert!(batches.len() > 5, "{} batches", batches.len());
    assert!(batches.iter().all(|b| b.len() <= 2_000));
    assert_eq!(a.state(TABLES), b.state(TABLES));
}

#[test]
fn bad_calls_get_clear_errors() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("CREATE TABLE nopk(a, b); CREATE TABLE ipk(id INTEGER PRIMARY KEY, x);");
    let err = |r: &Replica, sql: &str| {
        r.conn
            .query_row(sql, [], |_| Ok(()))
            .unwrap_err()
            .to_string()
    };
    assert!(err(&a, "SELECT outpost_track('nopk')").contains("PRIMARY KEY"));
    assert!(err(&a, "SELECT outpost_track('ipk')").contains("allow_integer_pk"));
    a.track("ipk", Some(r#"{"allow_integer_pk": true}"#));
    assert!(err(&a, "SELECT outpost_changes()").contains("takes 1 to 3"));
    assert!(err(&a, "SELECT outpost_changes('x')").contains("since"));
    assert!(err(&a, "SELECT outpost_changes(0, NULL, 'no scope!')").contains("scope"));
    a.exec("INSERT INTO patients(id) VALUES ('p1')");
    let batch = a.changes(0, None).unwrap();
    b.exec("BEGIN");
    assert!(b
        .apply(&batch)
        .unwrap_err()
        .to_string()
        .contains("outside a transaction"));
    assert!(err(&b, "SELECT outpost_track('visits')").contains("outside a transaction"));
    b.exec("ROLLBACK");
    let before = b.state(TABLES);
    for bad in [&batch[..batch.len() - 3], b"\x00\xff\x13\x37", &[]] {
        let e = b.apply(bad).unwrap_err().to_string();
        assert!(e.contains("not a valid Outpost batch"), "{e}");
    }
    let mut flipped = batch.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(b.apply(&flipped).is_err());
    assert!(a
        .apply(&batch)
        .unwrap_err()
        .to_string()
        .contains("made by this database"));
    assert_eq!(b.state(TABLES), before);
}

#[test]
fn a_batch_that_leaves_a_gap_is_refused() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id) VALUES ('p1')");
    let v = a.db_version();
    a.exec("INSERT INTO patients(id) VALUES ('p2')");
    let later = a.changes(v, None).unwrap();
    let e = b.apply(&later).unwrap_err().to_string();
    assert!(e.contains("gap"), "{e}");
    assert_eq!(b.one::<i64>("SELECT count(*) FROM patients"), 0);
}

#[test]
fn untrack_removes_bookkeeping_and_keeps_the_data() {
    let a = clinic("a");
    a.exec("INSERT INTO visits VALUES ('v1', NULL, 'x')");
    assert_eq!(a.one::<i64>("SELECT outpost_untrack('visits')"), 1);
    assert_eq!(a.one::<i64>("SELECT count(*) FROM visits"), 1);
    assert_eq!(
        a.one::<i64>(
            "SELECT count(*) FROM sqlite_master WHERE type='trigger' AND tbl_name='visits'"
        ),
        0
    );
    a.exec("INSERT INTO visits VALUES ('v2', NULL, 'y')");
    assert_eq!(
        a.one::<i64>("SELECT outpost_track('patients')"),
        1,
        "track is idempotent-safe to call again"
    );
}
