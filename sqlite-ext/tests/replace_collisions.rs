//! Rows removed by a REPLACE conflict on a UNIQUE column other than the key.
//!
//! SQLite fires no DELETE trigger for them (unless the connection enabled `recursive_triggers`),
//! so the collision triggers of `triggers.rs` log them before the write, and fold records a
//! delete only for a row that is really gone.

mod common;
use common::Replica;

const STAFF: &str = "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT UNIQUE, name TEXT);";

fn pair() -> (Replica, Replica) {
    let (a, b) = (Replica::new("a", STAFF), Replica::new("b", STAFF));
    for r in [&a, &b] {
        r.track("staff", None);
    }
    (a, b)
}

fn staff(r: &Replica) -> Vec<String> {
    r.rows("SELECT id, badge, name FROM staff ORDER BY id")
}

#[test]
fn a_row_replaced_away_on_a_unique_column_is_deleted_on_the_peer_too() {
    let (a, b) = pair();
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema'), ('s3', 'B-9', 'Asha')");
    a.sync_to(&b, None);
    // s2 takes badge B-7: INSERT OR REPLACE removes s1 without any DELETE trigger firing.
    a.exec("INSERT OR REPLACE INTO staff VALUES ('s2', 'B-7', 'Juma')");
    // s2 moves to badge B-9: UPDATE OR REPLACE removes s3 the same way.
    a.exec("UPDATE OR REPLACE staff SET badge = 'B-9' WHERE id = 's2'");
    a.sync_to(&b, None);
    let want = vec!["Text(\"s2\")|Text(\"B-9\")|Text(\"Juma\")"];
    assert_eq!(staff(&a), want);
    assert_eq!(staff(&b), want, "the replaced rows must go on the peer too");
    assert_eq!(a.state(&["staff"]), b.state(&["staff"]));
    // The removed rows are deletes like any other: a later write of s1 elsewhere revives it.
    b.exec("INSERT INTO staff VALUES ('s1', 'B-1', 'Neema')");
    b.sync_to(&a, None);
    assert_eq!(a.state(&["staff"]), b.state(&["staff"]));
    assert_eq!(a.one::<i64>("SELECT count(*) FROM staff"), 2);
}

#[test]
fn a_collision_that_deletes_nothing_deletes_nothing_on_the_peer() {
    let (a, b) = pair();
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema')");
    a.sync_to(&b, None);
    let check = |name: &str, what: &str| {
        a.sync_to(&b, None);
        let want = vec![format!("Text(\"s1\")|Text(\"B-7\")|Text(\"{name}\")")];
        assert_eq!(staff(&a), want, "{what}");
        assert_eq!(staff(&b), want, "{what}");
        assert_eq!(a.state(&["staff"]), b.state(&["staff"]), "{what}");
    };
    a.exec("INSERT OR IGNORE INTO staff VALUES ('s2', 'B-7', 'Juma')");
    check("Neema", "OR IGNORE");
    let refused = a
        .conn
        .execute("INSERT INTO staff VALUES ('s5', 'B-7', 'Refused')", []);
    assert!(refused.is_err(), "a plain insert on a taken badge fails");
    check("Neema", "a failed insert");
    a.exec(
        "INSERT INTO staff VALUES ('s4', 'B-7', 'Upsert') \
         ON CONFLICT(badge) DO UPDATE SET name = 'Neema K.'",
    );
    check("Neema K.", "an upsert");
}

#[test]
fn a_unique_index_created_after_tracking_is_covered_from_the_next_sync() {
    let schema = "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT, name TEXT);";
    let (a, b) = (Replica::new("a", schema), Replica::new("b", schema));
    for r in [&a, &b] {
        r.track("staff", None);
    }
    let uniq_triggers =
        "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%uniq%'";
    assert_eq!(
        a.one::<i64>(uniq_triggers),
        0,
        "no UNIQUE column, no trigger"
    );
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema')");
    a.exec("CREATE UNIQUE INDEX staff_badge ON staff(badge COLLATE NOCASE)");
    a.sync_to(&b, None);
    assert_eq!(a.one::<i64>(uniq_triggers), 2);
    a.exec("REPLACE INTO staff VALUES ('s2', 'b-7', 'Juma')");
    a.sync_to(&b, None);
    let want = vec!["Text(\"s2\")|Text(\"b-7\")|Text(\"Juma\")"];
    assert_eq!(staff(&a), want, "NOCASE made 'b-7' collide with 'B-7'");
    assert_eq!(staff(&b), want);
    a.exec("DROP INDEX staff_badge");
    a.sync_to(&b, None);
    assert_eq!(a.one::<i64>(uniq_triggers), 0, "dropped with the index");
}
