//! `outpost_list_applied`: the app's triggers of a prefix are switched off during applies and
//! the rows an apply writes are listed in `outpost_applied` instead (`applied.rs`).

mod common;

use common::{clinic, Replica};

/// An audit trigger standing for an app's derived data: it records every write it sees.
const AUDIT: &str = "
CREATE TABLE audit(what TEXT, id TEXT);
CREATE TRIGGER derived_ins AFTER INSERT ON patients BEGIN INSERT INTO audit VALUES ('insert', NEW.id); END;
CREATE TRIGGER derived_upd AFTER UPDATE ON patients BEGIN INSERT INTO audit VALUES ('update', NEW.id); END;
CREATE TRIGGER derived_del AFTER DELETE ON patients BEGIN INSERT INTO audit VALUES ('delete', OLD.id); END;
";

fn listed(r: &Replica) -> Vec<String> {
    r.rows("SELECT \"table\", pk FROM outpost_applied ORDER BY \"table\", pk")
}

#[test]
fn an_apply_lists_its_rows_instead_of_running_the_named_triggers() {
    let a = clinic("a");
    let b = clinic("b");
    b.exec(AUDIT);
    assert_eq!(
        b.one::<String>("SELECT outpost_list_applied('derived_')"),
        "derived_"
    );
    a.exec(
        "INSERT INTO patients(id, name) VALUES ('p1', 'Amina'), ('p2', 'Juma');
         INSERT INTO visits(id, patient_id) VALUES ('v1', 'p1');",
    );
    a.sync_to(&b, None);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM audit"), 0, "paused");
    assert_eq!(
        listed(&b),
        [
            "Text(\"patients\")|Text(\"\\\"p1\\\"\")",
            "Text(\"patients\")|Text(\"\\\"p2\\\"\")",
            "Text(\"visits\")|Text(\"\\\"v1\\\"\")"
        ]
    );
    // The app handles the list and clears it; the next apply lists its own rows, a delete too.
    b.exec("DELETE FROM outpost_applied");
    a.exec("UPDATE patients SET village = 'Moshi' WHERE id = 'p2'; DELETE FROM visits; DELETE FROM patients WHERE id = 'p1'");
    a.sync_to(&b, None);
    assert_eq!(
        listed(&b),
        [
            "Text(\"patients\")|Text(\"\\\"p1\\\"\")",
            "Text(\"patients\")|Text(\"\\\"p2\\\"\")",
            "Text(\"visits\")|Text(\"\\\"v1\\\"\")"
        ]
    );
    assert_eq!(b.one::<i64>("SELECT count(*) FROM patients"), 1);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM audit"), 0);
    // The app's own writes still run its triggers, and are not listed.
    b.exec("DELETE FROM outpost_applied; INSERT INTO patients(id, name) VALUES ('b1', 'Neema')");
    assert_eq!(
        b.rows("SELECT what, id FROM audit"),
        ["Text(\"insert\")|Text(\"b1\")"]
    );
    assert!(listed(&b).is_empty());
    // Turned off, applies run the app's triggers again and list nothing.
    assert_eq!(
        b.one::<Option<String>>("SELECT outpost_list_applied(NULL)"),
        None
    );
    a.exec("INSERT INTO patients(id, name) VALUES ('p3', 'Zawadi')");
    a.sync_to(&b, None);
    assert_eq!(
        b.rows("SELECT what, id FROM audit ORDER BY rowid"),
        [
            "Text(\"insert\")|Text(\"b1\")",
            "Text(\"insert\")|Text(\"p3\")"
        ]
    );
    assert!(listed(&b).is_empty());
}

/// A trigger the prefix does not name keeps every trigger on (the app's index must see the
/// rows); the rows are listed all the same, so the app misses none whichever way it reads.
#[test]
fn another_trigger_keeps_triggers_on_and_rows_are_still_listed() {
    let a = clinic("a");
    let b = clinic("b");
    b.exec(AUDIT);
    b.exec(
        "CREATE TABLE names(id TEXT);
         CREATE TRIGGER search_ins AFTER INSERT ON patients BEGIN INSERT INTO names VALUES (NEW.id); END;",
    );
    b.one::<String>("SELECT outpost_list_applied('derived_')");
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Amina')");
    a.sync_to(&b, None);
    assert_eq!(b.rows("SELECT id FROM names"), ["Text(\"p1\")"]);
    assert_eq!(
        b.rows("SELECT what, id FROM audit"),
        ["Text(\"insert\")|Text(\"p1\")"]
    );
    assert_eq!(listed(&b), ["Text(\"patients\")|Text(\"\\\"p1\\\"\")"]);
}

/// A row the apply removes though the batch did not name it (held aside by a UNIQUE collision
/// with an earlier row) is listed too.
#[test]
fn a_row_held_aside_by_a_unique_collision_is_listed() {
    let schema = "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT UNIQUE, name TEXT);";
    let (a, b, c) = (
        Replica::new("a", schema),
        Replica::new("b", schema),
        Replica::new("c", schema),
    );
    for r in [&a, &b, &c] {
        r.track("staff", None);
    }
    a.exec("INSERT INTO staff VALUES ('s1', 'B-7', 'Neema')");
    std::thread::sleep(std::time::Duration::from_millis(3));
    c.exec("INSERT INTO staff VALUES ('s2', 'B-7', 'Juma')");
    c.sync_to(&b, None);
    b.one::<String>("SELECT outpost_list_applied('derived_')");
    a.sync_to(&b, None); // s1 is earlier: s2 is held aside
    assert_eq!(b.rows("SELECT id FROM staff"), ["Text(\"s1\")"]);
    assert_eq!(
        listed(&b),
        [
            "Text(\"staff\")|Text(\"\\\"s1\\\"\")",
            "Text(\"staff\")|Text(\"\\\"s2\\\"\")"
        ]
    );
}

#[test]
fn a_prefix_must_be_non_empty_text() {
    let b = clinic("b");
    for bad in ["''", "7"] {
        let e = b
            .conn
            .query_row(&format!("SELECT outpost_list_applied({bad})"), [], |_| {
                Ok(())
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("outpost_list_applied: the argument is"), "{e}");
    }
    assert_eq!(
        b.maybe::<String>("SELECT v FROM _outpost_meta WHERE k = 'list_applied'"),
        None
    );
}
