//! A fault in the middle of an apply leaves the database exactly as before.

mod common;
use common::{clinic, Replica};
use rusqlite::functions::FunctionFlags;

/// Every row of every table, bookkeeping included.
fn dump(r: &Replica) -> Vec<String> {
    let tables: Vec<String> = r
        .rows("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        .into_iter()
        .map(|s| {
            s.trim_start_matches("Text(\"")
                .trim_end_matches("\")")
                .to_string()
        })
        .collect();
    let mut out = Vec::new();
    for t in tables {
        out.push(format!("-- {t}"));
        out.extend(r.rows(&format!("SELECT * FROM \"{t}\" ORDER BY 1")));
    }
    out
}

#[test]
fn a_fault_in_the_middle_of_an_apply_leaves_the_database_unchanged() {
    let a = clinic("a");
    let b = clinic("b");
    a.exec("INSERT INTO patients(id, name) VALUES ('p0', 'first')");
    a.sync_to(&b, None);
    a.exec("BEGIN");
    for i in 1..200 {
        a.exec(&format!(
            "INSERT INTO patients(id, name, visits) VALUES ('p{i:03}', 'n{i}', {i})"
        ));
        let note = if i == 150 { "boom" } else { "ok" };
        a.exec(&format!(
            "INSERT INTO visits VALUES ('v{i:03}', 'p{i:03}', '{note}')"
        ));
    }
    a.exec("UPDATE patients SET name = 'changed' WHERE id = 'p0'; COMMIT;");
    // an app trigger on B that fails (like a full disk or a bug in the app's own trigger)
    b.conn
        .create_scalar_function("injected_fault", 0, FunctionFlags::SQLITE_UTF8, |_| {
            Err::<i64, _>(rusqlite::Error::UserFunctionError("injected fault".into()))
        })
        .unwrap();
    b.exec("CREATE TRIGGER fault AFTER INSERT ON visits WHEN NEW.note = 'boom' BEGIN SELECT injected_fault(); END;");
    let before = dump(&b);
    let batch = a.changes(b.covered(&a.site_hex()), None).unwrap();
    let err = b.apply(&batch).unwrap_err().to_string();
    assert!(err.contains("injected fault"), "{err}");
    assert_eq!(dump(&b), before, "nothing of the failed batch is visible");
    // once the fault is gone the same batch applies
    b.exec("DROP TRIGGER fault");
    b.apply(&batch).unwrap();
    assert_eq!(b.one::<i64>("SELECT count(*) FROM visits"), 199);
    assert_eq!(
        b.one::<String>("SELECT name FROM patients WHERE id='p0'"),
        "changed"
    );
}
