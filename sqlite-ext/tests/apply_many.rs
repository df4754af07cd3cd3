//! `outpost_apply_many`: several batches in one transaction, all or nothing, with the same
//! outcome as applying them one by one.

mod common;
use common::{clinic, Replica};

/// Chunks of `a`'s changes from the beginning, each at most `max_bytes`.
fn chunks(a: &Replica, max_bytes: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut since = 0;
    while let Some(b) = a.changes(since, Some(max_bytes)) {
        let hi = outpost_protocol::batch::codec::decode_header(&b, &Default::default())
            .unwrap()
            .range
            .hi as i64;
        out.push(b);
        since = hi;
    }
    out
}

fn apply_many(r: &Replica, batches: &[&Vec<u8>]) -> rusqlite::Result<serde_json::Value> {
    let params: Vec<String> = (1..=batches.len()).map(|i| format!("?{i}")).collect();
    let s: String = r.conn.query_row(
        &format!("SELECT outpost_apply_many({})", params.join(", ")),
        rusqlite::params_from_iter(batches.iter()),
        |row| row.get(0),
    )?;
    Ok(serde_json::from_str(&s).unwrap())
}

fn source() -> Replica {
    let a = clinic("a");
    a.exec("BEGIN");
    for i in 0..60 {
        a.exec(&format!(
            "INSERT INTO patients(id, name, village, visits, allergies) VALUES ('p{i:03}', 'n{i}', 'v{}', {}, 'none');
             INSERT INTO visits VALUES ('v{i:03}', 'p{i:03}', 'note {i}');",
            i % 7,
            i % 5
        ));
    }
    a.exec("COMMIT");
    a.exec("UPDATE patients SET village = 'moved' WHERE id < 'p020'; DELETE FROM visits WHERE id > 'v050';");
    a
}

const TABLES: [&str; 2] = ["patients", "visits"];

#[test]
fn many_batches_in_one_call_equal_one_call_each() {
    let a = source();
    let cs = chunks(&a, 600);
    assert!(
        cs.len() >= 4,
        "the source should cut into several chunks: {}",
        cs.len()
    );
    let one_each = clinic("b");
    let mut applied = 0;
    for c in &cs {
        applied += one_each.apply(c).unwrap()["applied"].as_i64().unwrap();
    }
    let together = clinic("c");
    let refs: Vec<&Vec<u8>> = cs.iter().collect();
    let counts = apply_many(&together, &refs).unwrap();
    assert_eq!(counts["applied"].as_i64().unwrap(), applied);
    assert_eq!(together.state(&TABLES), one_each.state(&TABLES));
    assert_eq!(together.state(&TABLES), a.state(&TABLES));
    assert_eq!(together.covered(&a.site_hex()), a.db_version());
    // Again: nothing changes.
    let again = apply_many(&together, &refs).unwrap();
    assert_eq!(again["applied"].as_i64().unwrap(), 0);
    assert_eq!(together.state(&TABLES), a.state(&TABLES));
}

#[test]
fn any_refused_batch_leaves_the_database_unchanged() {
    let a = source();
    let cs = chunks(&a, 600);
    let b = clinic("b");
    let garbage = vec![0u8, 0xff, 0x13, 0x37];
    // A malformed last batch, a gap (second chunk before the first), this database's own batch.
    let own = {
        b.exec("INSERT INTO patients(id, name) VALUES ('mine', 'x')");
        let own = b.changes(0, None).unwrap();
        b.exec("DELETE FROM patients");
        own
    };
    let before_vector: String = b.one("SELECT outpost_vector()");
    let before = b.state(&TABLES);
    for bad in [
        vec![&cs[0], &cs[1], &garbage],
        vec![&cs[1], &cs[0]],
        vec![&cs[0], &own],
    ] {
        assert!(apply_many(&b, &bad).is_err());
        assert_eq!(b.state(&TABLES), before);
        assert_eq!(b.one::<String>("SELECT outpost_vector()"), before_vector);
    }
    // Inside the caller's transaction it is refused like outpost_apply.
    b.exec("BEGIN");
    let err = apply_many(&b, &[&cs[0]]).unwrap_err().to_string();
    assert!(err.contains("outpost_apply"), "{err}");
    b.exec("ROLLBACK");
    // In order, it applies.
    let refs: Vec<&Vec<u8>> = cs.iter().collect();
    apply_many(&b, &refs).unwrap();
    assert_eq!(b.state(&TABLES), a.state(&TABLES));
}

/// One call applying a row and, in later batches, its changes (a device that synced rarely
/// sends its history in one go): each later batch finds the state the earlier one wrote, so
/// counters add once, later values win and deletes land, exactly as batch by batch.
#[test]
fn later_batches_of_one_call_see_the_rows_earlier_ones_created() {
    let a = clinic("a");
    let mut batches = Vec::new();
    let mut since = 0;
    let mut cut = |a: &Replica, batches: &mut Vec<Vec<u8>>| {
        batches.push(a.changes(since, None).unwrap());
        since = a.db_version();
    };
    a.exec(
        "INSERT INTO patients(id, name, village, visits) VALUES ('p1', 'Amina', 'Moshi', 1), ('p2', 'Juma', 'Tanga', 0);
         INSERT INTO visits VALUES ('v1', 'p1', 'first');",
    );
    cut(&a, &mut batches);
    a.exec("UPDATE patients SET village = 'Arusha', visits = visits + 2 WHERE id = 'p1'");
    a.exec("INSERT INTO visits VALUES ('v2', 'p2', 'second')");
    cut(&a, &mut batches);
    a.exec("UPDATE patients SET visits = visits + 4 WHERE id = 'p1'; DELETE FROM visits WHERE id = 'v1'");
    cut(&a, &mut batches);

    let together = clinic("b");
    let refs: Vec<&Vec<u8>> = batches.iter().collect();
    let out = apply_many(&together, &refs).unwrap();
    assert_eq!(out["quarantined"], 0, "{out}");
    let one_each = clinic("c");
    for b in &batches {
        one_each.apply(b).unwrap();
    }
    assert_eq!(together.state(&TABLES), one_each.state(&TABLES));
    assert_eq!(together.state(&TABLES), a.state(&TABLES));
    assert_eq!(
        together.one::<String>("SELECT village || visits FROM patients WHERE id = 'p1'"),
        "Arusha7"
    );
    // Applying them all again changes nothing.
    let again = apply_many(&together, &refs).unwrap();
    assert_eq!(again["applied"], 0, "{again}");
    assert_eq!(together.state(&TABLES), a.state(&TABLES));
}

/// Two sources write the same patient, the later write on `newer`; returns (older's batch,
/// newer's batch). Whoever applies both must keep the newer name whatever the order.
fn older_and_newer(id: &str) -> (Vec<u8>, Vec<u8>) {
    let older = clinic("older");
    older.exec(&format!(
        "INSERT INTO patients(id, name) VALUES ('{id}', 'older')"
    ));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let newer = clinic("newer");
    newer.exec(&format!(
        "INSERT INTO patients(id, name) VALUES ('{id}', 'newer')"
    ));
    (
        older.changes(0, None).unwrap(),
        newer.changes(0, None).unwrap(),
    )
}

/// A first sync arrives as many calls; each call starts from what the previous one learned of
/// rows without state (apply/carry.rs). A row the first call created must be known to the
/// next: an older write of it arriving later loses, exactly as within one call.
#[test]
fn a_later_call_sees_the_rows_an_earlier_call_created() {
    let (older, newer) = older_and_newer("p1");
    let b = clinic("b");
    apply_many(&b, &[&newer]).unwrap();
    let out = apply_many(&b, &[&older]).unwrap();
    assert_eq!(out["quarantined"], 0, "{out}");
    assert_eq!(
        b.one::<String>("SELECT name FROM patients WHERE id = 'p1'"),
        "newer",
        "the second call took the row for new and wrote the older value over it"
    );
    // And the other way round.
    let c = clinic("c");
    apply_many(&c, &[&older]).unwrap();
    apply_many(&c, &[&newer]).unwrap();
    assert_eq!(b.state(&TABLES), c.state(&TABLES));
}

/// What a call learned is not trusted once anything else wrote to the database: here another
/// connection gives the row state between two calls of this one.
#[test]
fn another_connections_write_between_calls_is_seen() {
    let (older, newer) = older_and_newer("p9");
    let source = source();
    let cs = chunks(&source, 600);
    let b = clinic("b");
    // This connection's first call learns that patients had no state, and which rows it wrote.
    apply_many(&b, &[&cs[0]]).unwrap();
    let other = rusqlite::Connection::open(b.conn.path().unwrap()).unwrap();
    common::load(&other);
    let s: String = other
        .query_row("SELECT outpost_apply(?1)", [&newer], |r| r.get(0))
        .unwrap();
    let counts: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert!(counts["applied"].as_i64().unwrap() > 0, "{s}");
    drop(other);
    apply_many(&b, &[&older]).unwrap();
    assert_eq!(
        b.one::<String>("SELECT name FROM patients WHERE id = 'p9'"),
        "newer",
        "the call trusted what it knew before the other connection's write"
    );
}
