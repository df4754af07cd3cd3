//! The SQL surface: registered functions match the documented ones.

mod common;
use common::Replica;

#[test]
fn registered_functions_equal_the_documented_headings() {
    let r = Replica::new("a", "");
    let mut registered: Vec<String> = r
        .rows("SELECT DISTINCT name FROM pragma_function_list WHERE name LIKE 'outpost%' ORDER BY name")
        .into_iter()
        .map(|s| s.trim_start_matches("Text(\"").trim_end_matches("\")").to_string())
        .collect();
    registered.sort();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sql-api.md"))
        .unwrap();
    let mut documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|s| s.trim().to_string())
        .collect();
    documented.sort();
    assert_eq!(registered, documented);
    let mut exported: Vec<String> = outpost::function_names()
        .into_iter()
        .map(String::from)
        .collect();
    exported.sort();
    assert_eq!(exported, documented);
}

#[test]
fn site_id_is_sixteen_bytes_and_stable() {
    let r = Replica::new("a", "");
    let id: Vec<u8> = r.one("SELECT outpost_site_id()");
    assert_eq!(id.len(), 16);
    assert_eq!(r.one::<Vec<u8>>("SELECT outpost_site_id()"), id);
    assert_eq!(r.one::<i64>("SELECT outpost_db_version()"), 0);
    assert!(!r.one::<String>("SELECT outpost_version()").is_empty());
}

/// Functions read their arguments borrowed from SQLite (no copy); what they see is unchanged:
/// text that is not UTF-8 arrives lossily replaced, as before, and calls with more arguments than
/// the wrapper keeps on its stack see every one of them.
#[test]
fn arguments_arrive_as_sqlite_holds_them() {
    let r = Replica::new("a", "CREATE TABLE t(id TEXT PRIMARY KEY, x);");
    let e = r
        .conn
        .query_row(
            "SELECT outpost_track(CAST(x'ff61' AS TEXT))",
            [],
            |_| Ok(()),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("no table named \"\u{fffd}a\""), "{e}");
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let packed: Vec<u8> = r.one(&format!("SELECT outpost_pack('{uuid}')"));
    assert_eq!(packed.len(), 17);
    assert_eq!(packed[0], 1);
    assert_eq!(hex::encode(&packed[1..]), uuid.replace('-', ""));
    // 8 arguments live on the stack, 9 and more on the heap; the packing is a concatenation.
    let list = |n: usize| -> Vec<u8> {
        let args: Vec<String> = (1..=n)
            .map(|i| match i % 4 {
                0 => format!("{i}"),
                1 => format!("'t{i}'"),
                2 => format!("x'{i:02x}ff'"),
                _ => "NULL".to_string(),
            })
            .collect();
        r.one(&format!("SELECT outpost_pack({})", args.join(", ")))
    };
    let (eight, nine, twenty) = (list(8), list(9), list(20));
    assert!(
        nine.starts_with(&eight) && twenty.starts_with(&nine),
        "{eight:?} {nine:?}"
    );
    assert_eq!(&eight[..4], &[2, 3, 2, b't']);
    // An integer argument stays an integer, a blob a blob.
    assert_ne!(
        r.one::<Vec<u8>>("SELECT outpost_pack(1)"),
        r.one::<Vec<u8>>("SELECT outpost_pack('1')")
    );
    let e = r
        .conn
        .query_row("SELECT outpost_apply_many(x'00', 'text')", [], |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("blob"), "{e}");
}

/// The UPDATE trigger's log rows (op, mask, counter deltas, a changed key) and what a peer ends
/// up with after applying them.
#[test]
fn update_trigger_logs_changed_columns_counter_deltas_and_key_changes() {
    let a = common::clinic("a");
    let b = common::clinic("b");
    a.exec("INSERT INTO patients(id, name, village, visits) VALUES ('p1', 'Amina', 'Moshi', 2)");
    let seq = a.db_version();
    a.exec("UPDATE patients SET village = 'Tanga', visits = visits + 3 WHERE id = 'p1'");
    a.exec("UPDATE patients SET village = 'Tanga' WHERE id = 'p1'"); // changes nothing
                                                                     // An ORM writes every column back; only the one that changed is logged.
    a.exec(
        "UPDATE patients SET id = 'p1', name = 'Amina', village = 'Tanga', visits = 5, \
         allergies = 'none' WHERE id = 'p1'",
    );
    // (op, mask, vals) of the updates, one row per changed column: columns name, village,
    // visits, allergies are bits 0-3; the counter logs its delta. A one-column key logs the
    // "raw" form (op 6: key and delta as stored, packed by fold).
    assert_eq!(
        a.rows(&format!(
            "SELECT op, mask, hex(vals) FROM _outpost_log WHERE seq > {seq} ORDER BY seq"
        ))
        .len(),
        3
    );
    assert_eq!(
        a.rows(&format!(
            "SELECT op, mask, hex(vals) FROM _outpost_log WHERE seq > {seq} ORDER BY mask"
        )),
        a.rows("VALUES (6, 2, ''), (6, 4, hex(3)), (6, 8, '')")
    );
    // A changed key logs the old key and values once; the column triggers stay silent.
    let seq = a.db_version();
    a.exec("UPDATE patients SET id = 'p2', visits = visits + 1 WHERE id = 'p1'");
    a.exec("UPDATE patients SET visits = visits - 1 WHERE id = 'p2'");
    assert_eq!(
        a.rows(&format!(
            "SELECT op, mask FROM _outpost_log WHERE seq > {seq} ORDER BY seq"
        )),
        a.rows("VALUES (5, -1), (6, 4)")
    );
    a.sync_to(&b, None);
    assert_eq!(
        b.rows("SELECT id, name, village, visits FROM patients"),
        a.rows("SELECT id, name, village, visits FROM patients")
    );
    assert_eq!(
        b.one::<String>("SELECT id || village || visits || allergies FROM patients"),
        "p2Tanga5none"
    );
}

/// A counter changed in the same statement as the key, then changed again: the peer counts each
/// change once (fold used to read the new row's counter at fold time, after the later change,
/// and then add that change again).
#[test]
fn a_key_change_with_a_counter_change_counts_once() {
    let a = common::clinic("a");
    let b = common::clinic("b");
    a.exec("INSERT INTO patients(id, name, village, visits) VALUES ('p1', 'Amina', 'Moshi', 5)");
    a.exec("UPDATE patients SET id = 'p2', visits = visits + 1 WHERE id = 'p1'");
    a.exec("UPDATE patients SET visits = visits - 1 WHERE id = 'p2'");
    a.sync_to(&b, None);
    assert_eq!(
        b.rows("SELECT id, name, village, visits FROM patients"),
        a.rows("SELECT id, name, village, visits FROM patients")
    );
}

/// `INSERT OR REPLACE` over an existing row (an ORM's "save", Room's `OnConflictStrategy.REPLACE`)
/// sets a counter to the written value: the peers see that value, not the old and new added
/// together. Once folded before the replace, and once in the same fold as the first insert.
#[test]
fn a_replaced_row_sets_its_counter_once() {
    let a = common::clinic("a");
    let b = common::clinic("b");
    a.exec("INSERT INTO patients(id, name, visits) VALUES ('p1', 'Amina', 3)");
    a.sync_to(&b, None);
    a.exec("INSERT OR REPLACE INTO patients(id, name, visits) VALUES ('p1', 'Amina M.', 4)");
    a.exec("REPLACE INTO patients(id, name, visits) VALUES ('p2', 'Juma', 1)");
    a.exec("REPLACE INTO patients(id, name, visits) VALUES ('p2', 'Juma', 2)");
    a.sync_to(&b, None);
    let want = [
        "Text(\"p1\")|Text(\"Amina M.\")|Integer(4)",
        "Text(\"p2\")|Text(\"Juma\")|Integer(2)",
    ];
    assert_eq!(
        a.rows("SELECT id, name, visits FROM patients ORDER BY id"),
        want
    );
    assert_eq!(
        b.rows("SELECT id, name, visits FROM patients ORDER BY id"),
        want
    );
    // A later increment on b counts from the replaced value on both.
    b.exec("UPDATE patients SET visits = visits + 1 WHERE id = 'p1'");
    b.sync_to(&a, None);
    assert_eq!(
        a.one::<i64>("SELECT visits FROM patients WHERE id = 'p1'"),
        5
    );
}

/// A peer's update applied here is not captured as a local write: the column triggers read
/// `outpost_clock`, which has no row while `outpost_apply` runs.
#[test]
fn applied_updates_are_not_logged_as_local_writes() {
    let a = common::clinic("a");
    let b = common::clinic("b");
    a.exec("INSERT INTO patients(id, name, village, visits) VALUES ('p1', 'Amina', 'Moshi', 2)");
    a.sync_to(&b, None);
    a.exec("UPDATE patients SET village = 'Tanga', visits = visits + 1 WHERE id = 'p1'");
    a.sync_to(&b, None);
    assert_eq!(
        b.one::<i64>("SELECT count(*) FROM _outpost_log WHERE op != 0"),
        0
    );
    assert_eq!(b.one::<i64>("SELECT count(*) FROM outpost_clock"), 1);
    assert_eq!(
        b.one::<String>("SELECT village || visits FROM patients"),
        "Tanga3"
    );
    // b's own later change is captured, and goes back to a.
    b.exec("UPDATE patients SET name = 'Amina M.' WHERE id = 'p1'");
    assert_eq!(
        b.one::<i64>("SELECT count(*) FROM _outpost_log WHERE op = 6"),
        1
    );
    b.sync_to(&a, None);
    assert_eq!(a.one::<String>("SELECT name FROM patients"), "Amina M.");
}

/// A hardened app (`PRAGMA trusted_schema=OFF`, as some SQLite builds default to) still writes to
/// tracked tables and has every write captured: what the triggers call is marked innocuous.
#[test]
fn writes_are_captured_with_an_untrusted_schema() {
    let a = common::clinic("a");
    let b = common::clinic("b");
    a.exec("PRAGMA trusted_schema = OFF");
    a.exec("INSERT INTO patients(id, name, village, visits) VALUES ('p1', 'Amina', 'Moshi', 1)");
    a.exec("INSERT INTO patients(id, name) VALUES ('p2', 'Juma')");
    a.exec("UPDATE patients SET village = 'Tanga', visits = visits + 1 WHERE id = 'p1'");
    a.exec("DELETE FROM patients WHERE id = 'p2'");
    assert_eq!(a.db_version(), 5);
    a.sync_to(&b, None);
    assert_eq!(
        b.rows("SELECT id, village, visits FROM patients"),
        ["Text(\"p1\")|Text(\"Tanga\")|Integer(2)"]
    );
}

/// Issue 16, finding 4: `outpost_track` refused `_outpost*` and `sqlite_*` names only, case
/// sensitively, so a device could track the engine's own `outpost_quarantine`. Reserved names
/// (tables and columns) and declared types the cloud would refuse are refused here too.
#[test]
fn reserved_names_and_unaccepted_types_cannot_be_tracked() {
    let r = Replica::new(
        "a",
        "CREATE TABLE \"Outpost_Notes\"(id TEXT PRIMARY KEY, x TEXT);
         CREATE TABLE \"_CLOUD_x\"(id TEXT PRIMARY KEY);
         CREATE TABLE cols(id TEXT PRIMARY KEY, outpost_seen TEXT);
         CREATE TABLE typed(id TEXT PRIMARY KEY, x UUID);
         CREATE TABLE fine(id TEXT PRIMARY KEY, a VARCHAR(20), b BIGINT, c DOUBLE PRECISION, d);",
    );
    // The engine creates its own tables on the first call.
    r.track("fine", None);
    let track = |t: &str| {
        r.conn
            .query_row(&format!("SELECT outpost_track('{t}')"), [], |_| Ok(()))
            .unwrap_err()
            .to_string()
    };
    for t in [
        "outpost_quarantine",
        "OUTPOST_QUARANTINE",
        "Outpost_Notes",
        "_CLOUD_x",
    ] {
        let e = track(t);
        assert!(
            e.contains(&format!("table name \"{t}\" is reserved")),
            "{e}"
        );
    }
    let e = track("cols");
    assert!(e.contains("\"cols\".\"outpost_seen\" is reserved"), "{e}");
    let e = track("typed");
    assert!(e.contains("declared type \"UUID\""), "{e}");
    let tracked: String = r.one("SELECT group_concat(name) FROM _outpost_tables");
    assert_eq!(tracked, "fine");
}

/// A receiver whose table has a NOT NULL column without a default (the cloud's tables carry no
/// defaults) still applies a change writing only other columns of a row it holds: SQLite checks
/// NOT NULL on an upsert's INSERT row before it finds the conflict, so the apply updates in place.
#[test]
fn a_change_of_some_columns_applies_where_another_not_null_column_has_no_default() {
    let writer = Replica::new(
        "writer",
        "CREATE TABLE p(id TEXT PRIMARY KEY NOT NULL, name TEXT, n INTEGER NOT NULL DEFAULT 0);",
    );
    writer.track("p", None);
    let receiver = Replica::new(
        "receiver",
        "CREATE TABLE p(id TEXT PRIMARY KEY NOT NULL, name TEXT, n INTEGER NOT NULL);",
    );
    receiver.track("p", None);
    writer.exec("INSERT INTO p(id, name) VALUES ('a', 'first')");
    writer.sync_to(&receiver, None);
    writer.exec("UPDATE p SET name = 'second' WHERE id = 'a'");
    let batches = writer.sync_to(&receiver, None);
    assert_eq!(batches.len(), 1);
    assert_eq!(
        receiver.one::<i64>("SELECT count(*) FROM outpost_quarantine"),
        0
    );
    assert_eq!(
        receiver.one::<String>("SELECT name || '/' || n FROM p"),
        "second/0"
    );
}
