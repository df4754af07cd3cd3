//! Capture of back-office writes on the PostgreSQL tenant (issue 21, docs/cloud.md
//! "PostgreSQL"), against a real PostgreSQL (a database of each test's own on the test cluster,
//! `outpost_testkit::pg`): writes through the `postgres` crate and the `psql` binary on the
//! workload's tables become changes of the cloud's origin with the right cells, counter deltas
//! and deletes, gap-free seqs and increasing clocks; the apply core's writes are not captured;
//! TRUNCATE and writing with capture switched off are refused or detected; the same writes on a
//! SQLite database tracked by the engine give the same cells; a LISTEN wakes on another
//! connection's commit; the capture time of a 10k-row UPDATE is printed.

mod common;
use common::*;
use outpost_cloud::postgres::listen::Listener;
use outpost_cloud::postgres::outbox::{self, OutboxError};
use outpost_cloud::postgres::{app_tables, apply, meta};
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{Batch, CellPayload, ColumnSchema, ForeignKey, TableSchema};
use outpost_protocol::vector::SeqRange;
use outpost_protocol::{SiteId, Strategy, Value};
use outpost_testkit::pg::{self, TestDatabase};
use postgres::Client;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The cloud's site id in these tests.
fn cloud_site() -> SiteId {
    SiteId::from_slice(&[0x5a; 16]).unwrap()
}

fn col(name: &str, decl: &str, strategy: Strategy) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: decl.into(),
        strategy,
        not_null: false,
    }
}

/// The workload's tables (docs/workload.md), `visit_count` a counter and `notes` a review
/// column, as batch headers carry them.
fn workload() -> Vec<TableSchema> {
    let mut id = col("id", "TEXT", Strategy::Lww);
    id.not_null = true;
    let patients = TableSchema {
        name: "patients".into(),
        columns: vec![
            id.clone(),
            col("given_name", "TEXT", Strategy::Lww),
            col("family_name", "TEXT", Strategy::Lww),
            col("sex", "TEXT", Strategy::Lww),
            col("dob", "TEXT", Strategy::Lww),
            col("village", "TEXT", Strategy::Lww),
            col("phone", "TEXT", Strategy::Lww),
            col("visit_count", "INTEGER", Strategy::Counter),
            col("updated_at", "INTEGER", Strategy::Lww),
        ],
        primary_key: vec![0],
        foreign_keys: vec![],
        scope: None,
    };
    let visits = TableSchema {
        name: "visits".into(),
        columns: vec![
            id,
            col("patient_id", "TEXT", Strategy::Lww),
            col("clinic", "TEXT", Strategy::Lww),
            col("provider", "TEXT", Strategy::Lww),
            col("notes", "TEXT", Strategy::Review),
            col("created_at", "INTEGER", Strategy::Lww),
        ],
        primary_key: vec![0],
        foreign_keys: vec![ForeignKey {
            columns: vec![1],
            parent: "patients".into(),
            parent_columns: vec![],
        }],
        scope: None,
    };
    vec![patients, visits]
}

/// A test database with the workload's tables made (capture installed), and the cloud's
/// connection to it (the superuser: the role that installed capture).
fn tenant(test: &str) -> Option<(TestDatabase, Client)> {
    let db = pg::database(test)?;
    let mut c = db.superuser();
    meta::prepare(&mut c, cloud_site()).unwrap();
    app_tables::ensure(&mut c, &workload()).unwrap();
    Some((db, c))
}

/// The batch of the unscoped stream from seq 1 to its top, decoded.
fn everything(c: &mut Client) -> Batch {
    let top = outbox::top(c, "").unwrap();
    let read = outbox::batch(c, "", SeqRange::new(1, top).unwrap(), None)
        .unwrap()
        .expect("something was captured");
    assert_eq!(read.range, SeqRange::new(1, top).unwrap());
    codec::decode(&read.bytes, &Limits::default()).unwrap()
}

/// What a batch says of each row: (table, key) → (existence, cells by column name).
type Rows = BTreeMap<(String, Vec<Value>), (u64, BTreeMap<String, Cell>)>;

/// A cell without its clock (which differs between databases): the payload, a review's
/// context as how many writes it supersedes.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Value(Value),
    Counter(i64),
    Review(Value, usize),
}

fn rows_of(b: &Batch) -> Rows {
    let mut out = Rows::new();
    for g in &b.tables {
        let t = &b.header.tables[g.table as usize];
        let names: Vec<String> = t
            .value_columns()
            .map(|i| t.columns[i as usize].name.clone())
            .collect();
        for r in &g.rows {
            let cells = r
                .cells
                .iter()
                .map(|c| {
                    let cell = match &c.payload {
                        CellPayload::Value(v) => Cell::Value(v.clone()),
                        CellPayload::Counter(n) => Cell::Counter(*n),
                        CellPayload::Review { value, context } => {
                            assert!(context.iter().all(|(s, _)| *s == b.header.origin));
                            Cell::Review(value.clone(), context.len())
                        }
                    };
                    (names[c.column as usize].clone(), cell)
                })
                .collect();
            out.insert((t.name.clone(), r.key.clone()), (r.existence, cells));
        }
    }
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// An outbox row: (seq, hlc, op, cells, extra), the JSON as text.
type OutboxRow = (i64, i64, i16, Option<String>, Option<String>);

/// Outbox rows of the unscoped stream.
fn outbox_rows(c: &mut Client) -> Vec<OutboxRow> {
    c.query(
        "SELECT seq, hlc, op, cells::text, extra::text FROM outpost.outbox \
         WHERE stream = '' ORDER BY seq",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

const INSERT_PATIENTS: &str = "
INSERT INTO patients(id, given_name, family_name, sex, dob, village, phone, visit_count, updated_at)
VALUES ('p1', 'Amani', 'Bakari', 'F', '1980-01-02', 'Kijiji', '+255700000001', 0, 1700000000000),
       ('p2', 'Baraka', 'Juma', 'M', '1975-03-04', 'Mjini', '+255700000002', 3, 1700000001000),
       ('p3', 'Chausiku', 'Said', 'F', '2001-05-06', 'Pwani', NULL, NULL, 1700000002000);
INSERT INTO visits(id, patient_id, clinic, provider, notes, created_at)
VALUES ('v1', 'p1', 'Kibaha Clinic', 'Zawadi', 'fever cough rest fluids', 1700000000500),
       ('v2', 'p2', 'Mlandizi Post', 'Rehema', 'follow up blood pressure', 1700000001500);";

/// Writes valid on SQLite and PostgreSQL alike, after [`INSERT_PATIENTS`].
const WRITES: &str = "
UPDATE patients SET village = 'Mjinini' WHERE id = 'p1';
UPDATE patients SET visit_count = visit_count + 2 WHERE id IN ('p1', 'p2');
UPDATE patients SET visit_count = visit_count - 1, updated_at = 1700000009000 WHERE id = 'p1';
UPDATE patients SET phone = NULL, given_name = 'Baraka J.' WHERE id = 'p2';
UPDATE patients SET phone = phone WHERE id = 'p1';
UPDATE visits SET notes = 'fever resolved' WHERE id = 'v1';
UPDATE visits SET notes = 'fever resolved, discharged' WHERE id = 'v1';
DELETE FROM visits WHERE id = 'v2';
DELETE FROM patients WHERE id = 'p3';
INSERT INTO patients(id, given_name, visit_count) VALUES ('p3', 'Chausiku', 5);";

/// A key change, after [`WRITES`]: a delete of the old key and an insert of the new one.
const REKEY: &str = "UPDATE patients SET id = 'p4' WHERE id = 'p2';";

#[test]
fn backoffice_writes_become_changes_with_cells_deltas_and_deletes() {
    let Some((_db, mut c)) = tenant("capture_cells") else {
        return;
    };
    let mut back_office = _db.superuser();
    back_office.batch_execute(INSERT_PATIENTS).unwrap();
    back_office.batch_execute(WRITES).unwrap();

    // One outbox row per row written, seqs 1.. without a gap, clocks strictly increasing.
    let rows = outbox_rows(&mut c);
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=rows.len() as i64).collect::<Vec<_>>());
    // 5 inserted rows, then 10 row writes: the UPDATE that changes nothing is not captured.
    assert_eq!(rows.len(), 15);
    assert!(rows.windows(2).all(|w| w[0].1 < w[1].1), "{rows:?}");
    // Only the columns an UPDATE changed; a counter's delta beside its total.
    let village = rows.iter().find(|r| r.2 == 2).unwrap();
    assert_eq!(village.3.as_deref(), Some(r#"{"4": "Mjinini"}"#));
    let minus = &rows[8];
    assert_eq!(minus.3.as_deref(), Some(r#"{"6": 1, "7": 1700000009000}"#));
    assert_eq!(minus.4.as_deref(), Some(r#"{"d": {"6": -1}}"#));
    let deletes: Vec<_> = rows.iter().filter(|r| r.2 == 3).collect();
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().all(|r| r.3.is_none()));

    let b = everything(&mut c);
    assert_eq!(b.header.origin, cloud_site());
    let rows = rows_of(&b);
    let p1 = &rows[&("patients".to_string(), vec![text("p1")])];
    assert_eq!(p1.0, 1);
    assert_eq!(p1.1["village"], Cell::Value(text("Mjinini")));
    assert_eq!(p1.1["visit_count"], Cell::Counter(1));
    assert_eq!(
        p1.1["updated_at"],
        Cell::Value(Value::Integer(1700000009000))
    );
    let p2 = &rows[&("patients".to_string(), vec![text("p2")])];
    assert_eq!(p2.1["visit_count"], Cell::Counter(5));
    assert_eq!(p2.1["phone"], Cell::Value(Value::Null));
    // Deleted, then inserted again: a new epoch holding only the new insert's cells.
    let p3 = &rows[&("patients".to_string(), vec![text("p3")])];
    assert_eq!(p3.0, 3);
    assert_eq!(p3.1["given_name"], Cell::Value(text("Chausiku")));
    assert_eq!(p3.1["village"], Cell::Value(Value::Null));
    assert_eq!(p3.1["visit_count"], Cell::Counter(5));
    let v2 = &rows[&("visits".to_string(), vec![text("v2")])];
    assert_eq!((v2.0, v2.1.len()), (2, 0));
    let v1 = &rows[&("visits".to_string(), vec![text("v1")])];
    assert_eq!(
        v1.1["notes"],
        Cell::Review(text("fever resolved, discharged"), 1)
    );

    // A range in the middle, and a budget cutting it at a seq boundary.
    let mid = outbox::batch(&mut c, "", SeqRange::new(6, 7).unwrap(), None)
        .unwrap()
        .unwrap();
    assert_eq!(mid.range, SeqRange::new(6, 7).unwrap());
    let cut = outbox::batch(&mut c, "", SeqRange::new(1, 15).unwrap(), Some(300))
        .unwrap()
        .unwrap();
    assert!(cut.range.lo == 1 && cut.range.hi < 15, "{:?}", cut.range);
    assert!(
        outbox::batch(&mut c, "", SeqRange::new(16, 20).unwrap(), None)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_rolled_back_write_leaves_no_gap() {
    let Some((db, mut c)) = tenant("capture_rollback") else {
        return;
    };
    let mut bo = db.superuser();
    bo.batch_execute("INSERT INTO patients(id) VALUES ('a')")
        .unwrap();
    let mut tx = bo.transaction().unwrap();
    tx.batch_execute("INSERT INTO patients(id) VALUES ('b'); UPDATE patients SET sex = 'F'")
        .unwrap();
    tx.rollback().unwrap();
    bo.batch_execute(
        "BEGIN;
         INSERT INTO patients(id) VALUES ('c');
         SAVEPOINT s; INSERT INTO patients(id) VALUES ('d'); ROLLBACK TO SAVEPOINT s;
         INSERT INTO patients(id) VALUES ('e');
         COMMIT;",
    )
    .unwrap();
    let rows = outbox_rows(&mut c);
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{rows:?}"
    );
    assert!(rows.windows(2).all(|w| w[0].1 < w[1].1), "{rows:?}");
    let b = everything(&mut c);
    let keys: Vec<Vec<Value>> = rows_of(&b).into_keys().map(|k| k.1).collect();
    assert_eq!(
        keys,
        vec![vec![text("a")], vec![text("c")], vec![text("e")]]
    );
    assert_eq!(outbox::top(&mut c, "").unwrap(), 3);
}

#[test]
fn applying_writes_are_not_captured_and_only_the_cloud_may_apply() {
    let Some((db, mut c)) = tenant("capture_applying") else {
        return;
    };
    // The apply core's contract: its transaction says it applies devices' changes.
    c.batch_execute(
        "BEGIN; SET LOCAL outpost.applying = 'on';
         INSERT INTO patients(id, village) VALUES ('from-device', 'Pwani');
         UPDATE patients SET village = 'Mjini' WHERE id = 'from-device';
         COMMIT;",
    )
    .unwrap();
    assert!(outbox_rows(&mut c).is_empty());
    // The setting ended with the transaction: the next write is captured.
    c.batch_execute("UPDATE patients SET village = 'Kijiji' WHERE id = 'from-device'")
        .unwrap();
    assert_eq!(outbox_rows(&mut c).len(), 1);

    // A back-office role with table rights only: captured (it needs no right on `outpost`),
    // and refused when it claims to apply.
    let (role, url) = db.role("back_office");
    c.batch_execute(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON patients, visits TO \"{role}\""
    ))
    .unwrap();
    let mut bo = Client::connect(&url, postgres::NoTls).unwrap();
    bo.batch_execute("INSERT INTO patients(id) VALUES ('from-back-office')")
        .unwrap();
    assert_eq!(outbox_rows(&mut c).len(), 2);
    let e = bo
        .batch_execute(
            "BEGIN; SET LOCAL outpost.applying = 'on';
             UPDATE patients SET village = 'hidden' WHERE id = 'from-back-office'; COMMIT;",
        )
        .unwrap_err();
    let text = e.as_db_error().map(|d| d.message().to_string()).unwrap();
    assert!(
        text.contains("outpost.applying is set by role") && text.contains(&role),
        "{text}"
    );
    bo.batch_execute("ROLLBACK").unwrap();
    let village: Option<String> = c
        .query_one(
            "SELECT village FROM patients WHERE id = 'from-back-office'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(village, None);
}

#[test]
fn truncate_of_a_tracked_table_is_refused_naming_it() {
    let Some((db, mut c)) = tenant("capture_truncate") else {
        return;
    };
    c.batch_execute("INSERT INTO patients(id) VALUES ('a')")
        .unwrap();
    let e = db
        .superuser()
        .batch_execute("TRUNCATE patients CASCADE")
        .unwrap_err();
    let text = e.as_db_error().map(|d| d.message().to_string()).unwrap();
    assert!(
        text.contains("TRUNCATE of table public.patients is refused"),
        "{text}"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM patients", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn writing_with_capture_switched_off_is_refused_or_detected() {
    let Some((db, mut c)) = tenant("capture_off") else {
        return;
    };
    let (role, url) = db.role("back_office");
    c.batch_execute(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON patients TO \"{role}\""
    ))
    .unwrap();
    let mut bo = Client::connect(&url, postgres::NoTls).unwrap();
    // What a back-office role may not do.
    for attempt in [
        "ALTER TABLE patients DISABLE TRIGGER outpost_capture",
        "ALTER TABLE patients DISABLE TRIGGER USER",
        "DROP TRIGGER outpost_capture ON patients",
        "SET session_replication_role = replica",
    ] {
        let e = bo.batch_execute(attempt).unwrap_err();
        let text = e.as_db_error().map(|d| d.message().to_string()).unwrap();
        assert!(
            text.contains("must be owner") || text.contains("permission denied"),
            "{attempt}: {text}"
        );
    }
    // A superuser's replica mode still captures: the triggers are ENABLE ALWAYS.
    let mut su = db.superuser();
    su.batch_execute(
        "SET session_replication_role = replica; INSERT INTO patients(id) VALUES ('r');
         RESET session_replication_role;",
    )
    .unwrap();
    assert_eq!(outbox_rows(&mut c).len(), 1);
    // The owner disabling the trigger: detected when the outbox is read, naming the table.
    su.batch_execute("ALTER TABLE patients DISABLE TRIGGER outpost_capture")
        .unwrap();
    su.batch_execute("INSERT INTO patients(id) VALUES ('unseen')")
        .unwrap();
    let e = outbox::batch(&mut c, "", SeqRange::new(1, 1).unwrap(), None).unwrap_err();
    assert!(
        matches!(&e, OutboxError::CaptureOff { table, state: "disabled", .. } if table == "patients"),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("capture is switched off on table \"patients\""));
    su.batch_execute("ALTER TABLE patients ENABLE ALWAYS TRIGGER outpost_capture; DROP TRIGGER outpost_truncate ON visits")
        .unwrap();
    let e = outbox::check_capture(&mut c).unwrap_err();
    assert!(
        matches!(&e, OutboxError::CaptureOff { table, state: "missing", .. } if table == "visits"),
        "{e}"
    );
}

#[test]
fn a_psql_write_is_captured() {
    let Some((db, mut c)) = tenant("capture_psql") else {
        return;
    };
    let out = std::process::Command::new(psql())
        .args([
            db.url.as_str(),
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "INSERT INTO patients(id, given_name, visit_count) VALUES ('psql-1', 'Neema', 4)",
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows_of(&everything(&mut c));
    let r = &rows[&("patients".to_string(), vec![text("psql-1")])];
    assert_eq!(r.1["given_name"], Cell::Value(text("Neema")));
    assert_eq!(r.1["visit_count"], Cell::Counter(4));
}

/// The `psql` of the test cluster's PostgreSQL (PATH's, else the newest server's).
fn psql() -> String {
    let newest = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.path().join("bin/psql"))
            .filter(|p| p.exists())
            .max()
    });
    match newest {
        Some(p) => p.display().to_string(),
        None => "psql".into(),
    }
}

#[test]
fn a_listener_wakes_on_another_connections_commit_within_a_second() {
    let Some((db, _c)) = tenant("capture_listen") else {
        return;
    };
    let mut listener = Listener::new(db.superuser()).unwrap();
    assert!(listener
        .wait(Duration::from_millis(100))
        .unwrap()
        .is_empty());
    let url = db.url.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut c = Client::connect(&url, postgres::NoTls).unwrap();
        let t = Instant::now();
        c.batch_execute("INSERT INTO patients(id) VALUES ('live')")
            .unwrap();
        t
    });
    let woke = listener.wait(Duration::from_secs(5)).unwrap();
    let now = Instant::now();
    let committed = writer.join().unwrap();
    assert_eq!(woke, vec![String::new()], "the unscoped stream is named");
    let latency = now.duration_since(committed);
    println!("LISTEN woke {latency:?} after the write started");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
}

#[test]
fn the_same_writes_on_sqlite_give_the_same_cells() {
    let Some(db) = pg::database("capture_differential") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lite = device(&tmp.path().join("device.db"));
    lite.execute_batch(
        "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, given_name TEXT, family_name TEXT,
           sex TEXT, dob TEXT, village TEXT, phone TEXT, visit_count INTEGER, updated_at INTEGER);
         CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id),
           clinic TEXT, provider TEXT, notes TEXT, created_at INTEGER);
         SELECT outpost_track('patients', '{\"columns\": {\"visit_count\": \"counter\"}}');
         SELECT outpost_track('visits', '{\"columns\": {\"notes\": \"review\"}}');",
    )
    .unwrap();
    lite.execute_batch(INSERT_PATIENTS).unwrap();
    lite.execute_batch(WRITES).unwrap();
    lite.execute_batch(REKEY).unwrap();
    let blob: Vec<u8> = lite
        .query_row("SELECT outpost_changes(0)", [], |r| r.get(0))
        .unwrap();
    let from_sqlite = codec::decode(&blob, &Limits::default()).unwrap();

    // The PostgreSQL tables made from the engine's own header: the same columns and strategies.
    let mut c = db.superuser();
    meta::prepare(&mut c, cloud_site()).unwrap();
    app_tables::ensure(&mut c, &from_sqlite.header.tables).unwrap();
    c.batch_execute(INSERT_PATIENTS).unwrap();
    c.batch_execute(WRITES).unwrap();
    c.batch_execute(REKEY).unwrap();
    let from_pg = everything(&mut c);

    let (a, b) = (rows_of(&from_sqlite), rows_of(&from_pg));
    assert_eq!(a.len(), 6);
    assert_eq!(a[&("patients".to_string(), vec![text("p2")])].0, 2);
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "row {k:?}");
    }
    assert_eq!(a, b);
}

#[test]
fn capture_time_of_a_10k_row_update() {
    let Some((db, mut c)) = tenant("capture_bench") else {
        return;
    };
    let n = 10_000;
    let load = format!(
        "INSERT INTO patients(id, given_name, village, visit_count, updated_at)
         SELECT 'p' || i, 'Name' || i, 'Village' || (i % 50), i % 20, 1700000000000 + i * 1000
         FROM generate_series(1, {n}) AS i"
    );
    // The same statement on an untracked copy of the table: what the UPDATE costs without capture.
    c.batch_execute("CREATE TABLE plain_patients (LIKE patients INCLUDING ALL)")
        .unwrap();
    let t = Instant::now();
    c.batch_execute(&load.replace("INTO patients", "INTO plain_patients"))
        .unwrap();
    let plain_insert = t.elapsed();
    let t = Instant::now();
    let mut bo = db.superuser();
    bo.batch_execute(&load).unwrap();
    let insert = t.elapsed();
    let update = "UPDATE patients SET village = village || 'ni'";
    let t = Instant::now();
    bo.batch_execute(update).unwrap();
    let captured = t.elapsed();
    let t = Instant::now();
    bo.batch_execute(&update.replace("patients", "plain_patients"))
        .unwrap();
    let plain = t.elapsed();
    assert_eq!(outbox::top(&mut c, "").unwrap(), 2 * n as u64);
    let t = Instant::now();
    let read = outbox::batch(
        &mut c,
        "",
        SeqRange::new(n as u64 + 1, 2 * n as u64).unwrap(),
        None,
    )
    .unwrap()
    .unwrap();
    let export = t.elapsed();
    let backwards: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT hlc <= lag(hlc) OVER (ORDER BY seq) AS back \
             FROM outpost.outbox) x WHERE back",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(backwards, 0, "every captured clock is above the one before");
    // The next apply (here one of no batch) folds the 2n captured writes into the merge state.
    let t = Instant::now();
    apply::apply_many(&mut c, cloud_site(), &[]).unwrap();
    let fold = t.elapsed();
    let versions: i64 = c
        .query_one(
            "SELECT count(*) FROM outpost.capture_rows WHERE versions IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        versions, n as i64,
        "every row the back office wrote has versions"
    );
    println!(
        "capture: INSERT {n} rows in one statement {insert:?} (untracked table {plain_insert:?}, \
         {:.1}x); UPDATE {n} rows in one statement {captured:?} (untracked table {plain:?}, \
         {:.1}x); reading them as one batch {export:?} ({} bytes); folding the {} captured \
         writes into the merge state at the next apply {fold:?}",
        insert.as_secs_f64() / plain_insert.as_secs_f64(),
        captured.as_secs_f64() / plain.as_secs_f64(),
        read.bytes.len(),
        2 * n
    );
}

#[test]
fn a_rows_stream_is_its_scope_and_a_via_row_follows_its_parent() {
    let Some(db) = pg::database("capture_scopes") else {
        return;
    };
    let mut c = db.superuser();
    meta::prepare(&mut c, cloud_site()).unwrap();
    let mut tables = workload();
    tables[0].columns.push(col("clinic", "TEXT", Strategy::Lww));
    tables[0].scope = Some(outpost_protocol::scope::ScopeColumn::Column(9));
    tables[1].scope = Some(outpost_protocol::scope::ScopeColumn::Via(1));
    app_tables::ensure(&mut c, &tables).unwrap();
    let mut listener = Listener::new(db.superuser()).unwrap();
    db.superuser()
        .batch_execute(
            "INSERT INTO patients(id, clinic) VALUES ('p1', 'kibaha'), ('p2', 'mlandizi'),
               ('p3', 'not a scope!');
             INSERT INTO visits(id, patient_id) VALUES ('v1', 'p1');
             UPDATE patients SET village = 'Pwani' WHERE id = 'p1';
             -- A referral travels in the scope the row had, and moves the row (with its
             -- visit) into the new scope's stream: mlandizi's seq 2.
             UPDATE patients SET clinic = 'mlandizi' WHERE id = 'p1';
             UPDATE patients SET village = 'Mjini' WHERE id = 'p1';",
        )
        .unwrap();
    let tops = outbox::tops(&mut c).unwrap();
    let expect: BTreeMap<String, u64> = [("", 1), ("kibaha", 4), ("mlandizi", 3)]
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    assert_eq!(tops, expect);
    let read = outbox::batch(&mut c, "kibaha", SeqRange::new(1, 4).unwrap(), None)
        .unwrap()
        .unwrap();
    let b = codec::decode(&read.bytes, &Limits::default()).unwrap();
    assert_eq!(b.header.stream, "kibaha");
    let rows = rows_of(&b);
    assert!(rows.contains_key(&("visits".to_string(), vec![text("v1")])));
    let p1 = &rows[&("patients".to_string(), vec![text("p1")])];
    assert_eq!(p1.1["clinic"], Cell::Value(text("mlandizi")));
    // mlandizi: p2's insert, the transfer of p1 and its visit (a batch of its own, flagged),
    // then the write to p1 made there.
    let mut batches = Vec::new();
    let mut since = 0;
    while let Some(e) = outbox::batch(
        &mut c,
        "mlandizi",
        SeqRange::new(since + 1, 1 << 40).unwrap(),
        None,
    )
    .unwrap()
    {
        since = e.range.hi;
        batches.push(codec::decode(&e.bytes, &Limits::default()).unwrap());
    }
    let ranges: Vec<(u64, u64, bool)> = batches
        .iter()
        .map(|b| {
            (
                b.header.range.lo,
                b.header.range.hi,
                b.header.flags.transfer,
            )
        })
        .collect();
    assert_eq!(ranges, [(1, 1, false), (2, 2, true), (3, 3, false)]);
    let moved = rows_of(&batches[1]);
    let p1 = &moved[&("patients".to_string(), vec![text("p1")])];
    assert_eq!(p1.1["clinic"], Cell::Value(text("mlandizi")));
    // Whole, as it is when the batch is read (the later write included).
    assert_eq!(p1.1["village"], Cell::Value(text("Mjini")));
    assert!(moved.contains_key(&("visits".to_string(), vec![text("v1")])));
    let mut woke = listener.wait(Duration::from_secs(2)).unwrap();
    woke.sort();
    assert_eq!(woke, ["", "kibaha", "mlandizi"]);
}

#[test]
fn a_via_row_given_a_parent_in_another_scope_is_transferred_there() {
    let Some(db) = pg::database("capture_via_move") else {
        return;
    };
    let mut c = db.superuser();
    meta::prepare(&mut c, cloud_site()).unwrap();
    let mut tables = workload();
    tables[0].columns.push(col("clinic", "TEXT", Strategy::Lww));
    tables[0].scope = Some(outpost_protocol::scope::ScopeColumn::Column(9));
    tables[1].scope = Some(outpost_protocol::scope::ScopeColumn::Via(1));
    app_tables::ensure(&mut c, &tables).unwrap();
    db.superuser()
        .batch_execute(
            "INSERT INTO patients(id, clinic) VALUES ('p1', 'kibaha'), ('p2', 'mlandizi');
             INSERT INTO visits(id, patient_id) VALUES ('v1', 'p1');
             -- The visit is recorded against the other clinic's patient: it travels in the
             -- stream it was in, and moves into the new parent's.
             UPDATE visits SET patient_id = 'p2' WHERE id = 'v1';",
        )
        .unwrap();
    let tops = outbox::tops(&mut c).unwrap();
    let expect: BTreeMap<String, u64> = [("kibaha", 3), ("mlandizi", 2)]
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    assert_eq!(tops, expect);
    let moved = outbox::batch(&mut c, "mlandizi", SeqRange::new(2, 2).unwrap(), None)
        .unwrap()
        .unwrap();
    let b = codec::decode(&moved.bytes, &Limits::default()).unwrap();
    assert!(b.header.flags.transfer);
    let rows = rows_of(&b);
    let v1 = &rows[&("visits".to_string(), vec![text("v1")])];
    assert_eq!(v1.1["patient_id"], Cell::Value(text("p2")), "{rows:?}");
    // A change of another column leaves the row where it is: nothing more is transferred.
    db.superuser()
        .batch_execute("UPDATE visits SET provider = 'seen' WHERE id = 'v1';")
        .unwrap();
    assert_eq!(outbox::top(&mut c, "mlandizi").unwrap(), 3);
    let write = outbox::batch(&mut c, "mlandizi", SeqRange::new(3, 3).unwrap(), None)
        .unwrap()
        .unwrap();
    let b = codec::decode(&write.bytes, &Limits::default()).unwrap();
    assert!(!b.header.flags.transfer);
}

#[test]
fn a_column_a_later_header_adds_is_captured() {
    let Some((db, mut c)) = tenant("capture_new_column") else {
        return;
    };
    let mut later = workload();
    later[0]
        .columns
        .push(col("allergies", "TEXT", Strategy::Lww));
    app_tables::ensure(&mut c, &later[..1]).unwrap();
    db.superuser()
        .batch_execute(
            "INSERT INTO patients(id) VALUES ('p1');
             UPDATE patients SET allergies = 'penicillin' WHERE id = 'p1';",
        )
        .unwrap();
    let b = everything(&mut c);
    let names: Vec<&str> = b.header.tables[0]
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names.last(), Some(&"allergies"));
    let rows = rows_of(&b);
    assert_eq!(
        rows[&("patients".to_string(), vec![text("p1")])].1["allergies"],
        Cell::Value(text("penicillin"))
    );
}

#[test]
fn concurrent_back_office_transactions_get_one_gap_free_sequence() {
    let Some((db, mut c)) = tenant("capture_concurrent") else {
        return;
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                for t in 0..25 {
                    let mut tx = c.transaction().unwrap();
                    for r in 0..4 {
                        tx.execute(
                            "INSERT INTO patients(id, visit_count) VALUES ($1, 1)",
                            &[&format!("w{w}-t{t}-r{r}")],
                        )
                        .unwrap();
                    }
                    tx.execute(
                        "UPDATE patients SET visit_count = visit_count + 1 WHERE id LIKE $1",
                        &[&format!("w{w}-t{t}-%")],
                    )
                    .unwrap();
                    // Every fifth transaction rolls back: its seqs must not leave a gap.
                    if t % 5 == 4 {
                        tx.rollback().unwrap();
                    } else {
                        tx.commit().unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let rows = outbox_rows(&mut c);
    let n = 4 * 20 * 8;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<i64>>()
    );
    assert!(rows.windows(2).all(|w| w[0].1 < w[1].1));
    let b = everything(&mut c);
    let counted = rows_of(&b)
        .values()
        .filter(|r| r.1.get("visit_count") == Some(&Cell::Counter(2)))
        .count();
    assert_eq!(counted, 4 * 20 * 4);
}

/// A database an earlier build prepared keeps that build's trigger functions until capture is
/// installed again: `capture_upgrade::upgrade` (each process's first act) reinstalls capture on
/// every captured table when the installed code's digest is not this build's, and only then.
/// The "earlier build" here is a row trigger function replaced by one that captures nothing.
#[test]
fn an_earlier_builds_capture_is_brought_up_to_this_builds_once() {
    use outpost_cloud::postgres::capture_upgrade;
    let Some((_db, mut c)) = tenant("capture_upgrade") else {
        return;
    };
    assert_eq!(capture_upgrade::upgrade(&mut c).unwrap(), 2, "first run");
    assert_eq!(capture_upgrade::upgrade(&mut c).unwrap(), 0, "current");
    let id: i32 = c
        .query_one(
            "SELECT id FROM outpost.captured WHERE name = 'patients'",
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute(&format!(
        "CREATE OR REPLACE FUNCTION outpost.capture_{id}() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; \
         UPDATE outpost.meta SET value = 'an earlier build' WHERE name = 'capture_code'"
    ))
    .unwrap();
    c.batch_execute("INSERT INTO patients(id, given_name) VALUES ('old-1', 'Asha')")
        .unwrap();
    assert!(outbox_rows(&mut c).is_empty(), "the stub captures nothing");
    assert_eq!(capture_upgrade::upgrade(&mut c).unwrap(), 2);
    c.batch_execute("INSERT INTO patients(id, given_name) VALUES ('new-1', 'Baraka')")
        .unwrap();
    let rows = rows_of(&everything(&mut c));
    assert!(rows.contains_key(&("patients".to_string(), vec![text("new-1")])));
}

/// Exported changes leave the outbox once folded and old enough (the mailbox keeps the cloud's
/// batches): the change at the exported top stays, and so does the stream's top, so the next
/// back-office write takes the next seq.
#[test]
fn exported_changes_are_pruned_from_the_outbox_once_folded_and_old() {
    let Some((_db, mut c)) = tenant("capture_prune") else {
        return;
    };
    for i in 1..=3 {
        c.batch_execute(&format!(
            "INSERT INTO patients(id, given_name) VALUES ('p{i}', 'x')"
        ))
        .unwrap();
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let later = now() + outbox::PRUNE_AFTER_MS + 60_000;
    // Not folded yet: nothing goes.
    assert_eq!(outbox::prune(&mut c, "", 3, later).unwrap(), 0);
    apply::apply_many(&mut c, cloud_site(), &[]).unwrap();
    // Folded, but younger than the window: nothing goes.
    assert_eq!(outbox::prune(&mut c, "", 3, now()).unwrap(), 0);
    assert_eq!(outbox::prune(&mut c, "", 3, later).unwrap(), 2);
    let seqs: Vec<i64> = outbox_rows(&mut c).iter().map(|r| r.0).collect();
    assert_eq!(seqs, [3]);
    assert_eq!(outbox::top(&mut c, "").unwrap(), 3);
    c.batch_execute("INSERT INTO patients(id, given_name) VALUES ('p4', 'x')")
        .unwrap();
    let seqs: Vec<i64> = outbox_rows(&mut c).iter().map(|r| r.0).collect();
    assert_eq!(seqs, [3, 4]);
}

/// A tenant taking a new origin after a restore (`new_origin::take`): the old origin's captured
/// writes above what the mailbox held are kept aside, a transfer not exported yet is queued
/// again under the new origin (it carries no write of its own), and the new origin's seqs
/// start after it.
#[test]
fn a_new_origin_sends_unexported_writes_and_pending_transfers_again_as_transfers() {
    use outpost_cloud::postgres::new_origin;
    let Some((_db, mut c)) = tenant("new_origin_take") else {
        return;
    };
    for id in ["p1", "p2"] {
        c.batch_execute(&format!(
            "INSERT INTO patients(id, given_name) VALUES ('{id}', 'x')"
        ))
        .unwrap();
    }
    c.batch_execute("UPDATE patients SET given_name = 'y' WHERE id = 'p2'")
        .unwrap();
    let tbl: i32 = c
        .query_one(
            "SELECT id FROM outpost.captured WHERE name = 'patients'",
            &[],
        )
        .unwrap()
        .get(0);
    c.execute(
        "SELECT outpost.transfer($1, '[\"p1\"]'::jsonb, '')",
        &[&tbl],
    )
    .unwrap();
    // The mailbox holds seq 1 (p1's insert) of the old origin: p2's insert and update (seqs 2
    // and 3) and p1's transfer (4) are above it.
    let new = SiteId::from_slice(&[0x77; 16]).unwrap();
    let held = BTreeMap::from([(String::new(), (String::new(), 1u64))]);
    let taken = new_origin::take(&mut c, cloud_site(), new, &held)
        .unwrap()
        .expect("the tenant was on the old origin");
    assert_eq!((taken.above_held, taken.reissued), (2, 2), "{taken:?}");
    assert_eq!(
        new_origin::kept_aside(&mut c).unwrap(),
        0,
        "nothing kept aside"
    );
    let outbox = c
        .query(
            "SELECT seq, op, key::text FROM outpost.outbox ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                r.get::<_, i16>(1),
                r.get::<_, String>(2),
            )
        })
        .collect::<Vec<_>>();
    // One transfer per row, in the order of its first write above what the mailbox held.
    assert_eq!(
        outbox,
        [
            (1, 4, "[\"p2\"]".to_string()),
            (2, 4, "[\"p1\"]".to_string())
        ]
    );
    // Under the new origin, p2 goes whole with its last value, credited to the old origin
    // that wrote it (its clock the write's own): a peer holding the old origin's seqs 2-3
    // already merges it to nothing, one that does not gets the write.
    let read = outbox::batch(&mut c, "", SeqRange::new(1, 1).unwrap(), None)
        .unwrap()
        .unwrap();
    let b = codec::decode(&read.bytes, &Limits::default()).unwrap();
    assert_eq!(b.header.origin, new);
    assert!(b.header.flags.transfer);
    let groups: Vec<_> = b.tables.iter().filter(|g| !g.rows.is_empty()).collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].credit, Some(cloud_site()));
    assert_eq!(groups[0].rows[0].key, vec![text("p2")]);
    assert!(
        groups[0].rows[0]
            .cells
            .iter()
            .any(|cell| cell.payload == CellPayload::Value(text("y"))),
        "{groups:?}"
    );
    assert_eq!(new_origin::current(&mut c, cloud_site()).unwrap(), new);
    assert_eq!(outbox::origin(&mut c).unwrap(), new);
    // Taken once: a second process finding the tenant moved changes nothing.
    assert!(new_origin::take(
        &mut c,
        cloud_site(),
        SiteId::from_slice(&[0x78; 16]).unwrap(),
        &held
    )
    .unwrap()
    .is_none());
    c.batch_execute("INSERT INTO patients(id, given_name) VALUES ('p3', 'x')")
        .unwrap();
    assert_eq!(outbox::top(&mut c, "").unwrap(), 3);
}
