//! Back-office writes are merge state on the PostgreSQL tenant (issue 21, DESIGN sections 3 and
//! 11): a write any PostgreSQL client makes to a tracked table takes part in merge as a local
//! write does on a SQLite tenant. A device's change stamped before it (t1 < t2) does not
//! overwrite it; one stamped after (t3 > t2) does; a counter sums both; a delete wins over an
//! older update of the row, and a device that received the delete can insert the row again. An
//! apply waits for a back-office transaction in progress and merges against what it wrote.
//!
//! The device is a real SQLite database with the engine; its batches reach PostgreSQL through
//! `postgres::apply` as they would through the cloud, and the cloud's captured writes reach it
//! through `outbox::batch`.

mod common;
use common::*;
use outpost_cloud::postgres::{app_tables, apply, meta, outbox};
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::Batch;
use outpost_protocol::vector::SeqRange;
use outpost_protocol::SiteId;
use outpost_testkit::pg;
use postgres::Client;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
  CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, visit_count INTEGER, notes TEXT);
  SELECT outpost_track('patients', '{\"columns\": {\"visit_count\": \"counter\", \"notes\": \"review\"}}');";

const SITE: SiteId = SiteId([0x7c; 16]);

/// A device and how far its export has gone.
struct Device {
    conn: Connection,
    sent: i64,
}

impl Device {
    fn open(path: &Path) -> Device {
        let conn = device(path);
        conn.execute_batch(SCHEMA).unwrap();
        Device { conn, sent: 0 }
    }

    fn write(&self, sql: &str) {
        self.conn.execute_batch(sql).unwrap();
    }

    /// Its changes since the last export.
    fn export(&mut self) -> Batch {
        self.export_blob().1
    }

    /// Its changes since the last export, as sent and decoded.
    fn export_blob(&mut self) -> (Vec<u8>, Batch) {
        let blob: Vec<u8> = self
            .conn
            .query_row("SELECT outpost_changes(?1)", [self.sent], |r| r.get(0))
            .unwrap();
        let b = codec::decode(&blob, &Limits::default()).unwrap();
        self.sent = b.header.range.hi as i64;
        (blob, b)
    }

    fn apply(&self, blob: &[u8]) {
        let _: String = self
            .conn
            .query_row("SELECT outpost_apply(?1)", [blob], |r| r.get(0))
            .unwrap();
    }

    fn conflicts(&self) -> i64 {
        self.conn
            .query_row("SELECT count(*) FROM outpost_conflicts", [], |r| r.get(0))
            .unwrap()
    }

    /// Applies the cloud's captured writes of the unscoped stream from `lo`.
    fn receive_from_cloud(&self, c: &mut Client, lo: u64) {
        let top = outbox::top(c, "").unwrap();
        let got = outbox::batch(c, "", SeqRange::new(lo, top).unwrap(), None)
            .unwrap()
            .unwrap();
        let _: String = self
            .conn
            .query_row("SELECT outpost_apply(?1)", [&got.bytes], |r| r.get(0))
            .unwrap();
    }
}

/// The tenant's database, its tables made from the device's first batch, which is applied.
fn tenant(db: &pg::TestDatabase, first: &Batch) -> Client {
    let mut c = db.superuser();
    meta::prepare(&mut c, SITE).unwrap();
    app_tables::ensure(&mut c, &first.header.tables).unwrap();
    apply::apply(&mut c, SITE, first).unwrap();
    c
}

/// The clocks of the writes around it are apart (milliseconds of the clocks' wall part).
fn later() {
    std::thread::sleep(Duration::from_millis(5));
}

fn name(c: &mut Client, id: &str) -> Option<String> {
    c.query_opt("SELECT name FROM public.patients WHERE id = $1", &[&id])
        .unwrap()
        .map(|r| r.get(0))
}

fn count(c: &mut Client, id: &str) -> Option<i64> {
    c.query_opt(
        "SELECT visit_count FROM public.patients WHERE id = $1",
        &[&id],
    )
    .unwrap()
    .map(|r| r.get(0))
}

#[test]
fn an_older_device_write_keeps_the_newer_back_office_value_and_a_newer_one_wins() {
    let Some(db) = pg::database("back_office_lww") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Device::open(&tmp.path().join("d.db"));
    d.write("INSERT INTO patients(id, name, visit_count) VALUES ('p1', 'Asha', 0)");
    let mut c = tenant(&db, &d.export());
    later();
    d.write("UPDATE patients SET name = 'device at t1' WHERE id = 'p1'");
    let t1 = d.export();
    later();
    c.batch_execute("UPDATE public.patients SET name = 'office at t2' WHERE id = 'p1'")
        .unwrap();
    apply::apply(&mut c, SITE, &t1).unwrap();
    assert_eq!(name(&mut c, "p1").as_deref(), Some("office at t2"));
    // A replay changes nothing either.
    apply::apply(&mut c, SITE, &t1).unwrap();
    assert_eq!(name(&mut c, "p1").as_deref(), Some("office at t2"));
    later();
    d.write("UPDATE patients SET name = 'device at t3' WHERE id = 'p1'");
    apply::apply(&mut c, SITE, &d.export()).unwrap();
    assert_eq!(name(&mut c, "p1").as_deref(), Some("device at t3"));
    // The device, given the cloud's write, ends where the cloud does.
    d.receive_from_cloud(&mut c, 1);
    let on_device: String = d
        .conn
        .query_row("SELECT name FROM patients WHERE id = 'p1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(on_device, "device at t3");
}

#[test]
fn a_counter_sums_the_back_office_delta_and_the_devices() {
    let Some(db) = pg::database("back_office_counter") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Device::open(&tmp.path().join("d.db"));
    d.write("INSERT INTO patients(id, name, visit_count) VALUES ('p1', 'Asha', 1)");
    let mut c = tenant(&db, &d.export());
    later();
    d.write("UPDATE patients SET visit_count = visit_count + 2 WHERE id = 'p1'");
    let t1 = d.export();
    later();
    c.batch_execute("UPDATE public.patients SET visit_count = visit_count + 10 WHERE id = 'p1'")
        .unwrap();
    apply::apply(&mut c, SITE, &t1).unwrap();
    assert_eq!(
        count(&mut c, "p1"),
        Some(13),
        "1 + 2 (device) + 10 (office)"
    );
    later();
    c.batch_execute("UPDATE public.patients SET visit_count = visit_count - 4 WHERE id = 'p1'")
        .unwrap();
    d.write("UPDATE patients SET visit_count = visit_count + 1 WHERE id = 'p1'");
    apply::apply(&mut c, SITE, &d.export()).unwrap();
    assert_eq!(
        count(&mut c, "p1"),
        Some(10),
        "13 - 4 (office) + 1 (device)"
    );
    d.receive_from_cloud(&mut c, 1);
    let on_device: i64 = d
        .conn
        .query_row(
            "SELECT visit_count FROM patients WHERE id = 'p1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(on_device, 10);
}

#[test]
fn a_back_office_delete_wins_over_an_older_device_update_until_the_row_is_inserted_again() {
    let Some(db) = pg::database("back_office_delete") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Device::open(&tmp.path().join("d.db"));
    d.write("INSERT INTO patients(id, name, visit_count) VALUES ('p1', 'Asha', 1)");
    let mut c = tenant(&db, &d.export());
    later();
    d.write("UPDATE patients SET name = 'device at t1' WHERE id = 'p1'");
    let t1 = d.export();
    later();
    c.batch_execute("DELETE FROM public.patients WHERE id = 'p1'")
        .unwrap();
    apply::apply(&mut c, SITE, &t1).unwrap();
    assert_eq!(name(&mut c, "p1"), None, "an update never revives a row");
    // Nor does a later one of the same life of the row.
    later();
    d.write("UPDATE patients SET name = 'device at t3' WHERE id = 'p1'");
    apply::apply(&mut c, SITE, &d.export()).unwrap();
    assert_eq!(name(&mut c, "p1"), None);
    // The device learns of the delete, then inserts the row again: a new life, everywhere.
    d.receive_from_cloud(&mut c, 1);
    d.write("INSERT INTO patients(id, name, visit_count) VALUES ('p1', 'again', 0)");
    apply::apply(&mut c, SITE, &d.export()).unwrap();
    assert_eq!(name(&mut c, "p1").as_deref(), Some("again"));
    let exist: i64 = c
        .query_one(
            "SELECT exist FROM outpost.capture_rows WHERE key = '[\"p1\"]'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(exist, 3);
}

#[test]
fn an_apply_waits_for_a_back_office_transaction_and_merges_against_its_write() {
    let Some(db) = pg::database("back_office_concurrent") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Device::open(&tmp.path().join("d.db"));
    d.write("INSERT INTO patients(id, name, visit_count) VALUES ('p1', 'Asha', 1)");
    let mut c = tenant(&db, &d.export());
    later();
    d.write("UPDATE patients SET name = 'device at t1' WHERE id = 'p1'");
    let t1 = d.export();
    later();
    // The back office's transaction writes, and is still open while the device's batch comes.
    let mut office = db.superuser();
    let mut tx = office.transaction().unwrap();
    tx.batch_execute("UPDATE public.patients SET name = 'office at t2' WHERE id = 'p1'")
        .unwrap();
    let url = db.url.clone();
    let applying = std::thread::spawn(move || {
        let mut c = Client::connect(&url, postgres::NoTls).unwrap();
        apply::apply(&mut c, SITE, &t1).unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !applying.is_finished(),
        "the apply waits for the back office"
    );
    tx.commit().unwrap();
    applying.join().unwrap();
    assert_eq!(name(&mut c, "p1").as_deref(), Some("office at t2"));
}

#[test]
fn the_store_prints_a_key_as_capture_does() {
    use outpost_cloud::postgres::pg_value::{key_json, Kind};
    use outpost_protocol::Value;
    let Some(db) = pg::database("back_office_keys") else {
        return;
    };
    let mut c = db.superuser();
    // `outpost.capture_rows.key` is compared bytewise: the store's key text must be capture's.
    for text in [
        "p1",
        "quote \" backslash \\ slash /",
        "line\nfeed\ttab\r\u{8}\u{c}",
        "control \u{1}\u{1f} del \u{7f}",
        "é ü 中文 🙂",
        "",
    ] {
        let pg: String = c
            .query_one("SELECT jsonb_build_array($1::text)::text", &[&text])
            .unwrap()
            .get(0);
        assert_eq!(
            key_json(&[Value::Text(text.into())], &[Kind::Text]),
            pg,
            "{text:?}"
        );
    }
    for n in [0i64, -7, i64::MAX, i64::MIN] {
        let pg: String = c
            .query_one(
                "SELECT jsonb_build_array($1::bigint, 'a'::text)::text",
                &[&n],
            )
            .unwrap()
            .get(0);
        let key = [Value::Integer(n), Value::Text("a".into())];
        assert_eq!(key_json(&key, &[Kind::Int, Kind::Text]), pg, "{n}");
    }
    for f in [
        0.0f64,
        -0.0,
        1.5,
        100.0,
        1e20,
        1.5e-7,
        -2.75,
        0.1,
        123456789.125,
    ] {
        let pg: String = c
            .query_one("SELECT jsonb_build_array($1::float8)::text", &[&f])
            .unwrap()
            .get(0);
        assert_eq!(key_json(&[Value::Real(f)], &[Kind::Real]), pg, "{f}");
    }
    let pg: String = c
        .query_one(
            "SELECT jsonb_build_array($1::bytea)::text",
            &[&vec![1u8, 0xab, 0]],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        key_json(&[Value::Blob(vec![1, 0xab, 0])], &[Kind::Bytes]),
        pg
    );
}

#[test]
fn a_back_office_review_write_resolves_the_conflict_it_saw_on_the_cloud_and_on_devices() {
    let Some(db) = pg::database("back_office_review") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Device::open(&tmp.path().join("a.db"));
    let mut b = Device::open(&tmp.path().join("b.db"));
    a.write("INSERT INTO patients(id, name, notes) VALUES ('p1', 'Asha', 'first')");
    let (blob, first) = a.export_blob();
    b.apply(&blob);
    let mut c = tenant(&db, &first);
    // Two devices write the review cell concurrently: a conflict on the cloud and on A.
    a.write("UPDATE patients SET notes = 'from A' WHERE id = 'p1'");
    b.write("UPDATE patients SET notes = 'from B' WHERE id = 'p1'");
    let from_a = a.export();
    let (blob, from_b) = b.export_blob();
    a.apply(&blob);
    apply::apply_many(&mut c, SITE, &[from_a, from_b]).unwrap();
    let listed = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM outpost.conflicts", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(listed(&mut c), 1);
    assert_eq!(a.conflicts(), 1);
    // A person resolves it in the back office, having seen both.
    later();
    c.batch_execute("UPDATE public.patients SET notes = 'resolved' WHERE id = 'p1'")
        .unwrap();
    apply::apply_many(&mut c, SITE, &[]).unwrap();
    assert_eq!(
        listed(&mut c),
        0,
        "the cloud's merge state holds one sibling"
    );
    a.receive_from_cloud(&mut c, 1);
    assert_eq!(
        a.conflicts(),
        0,
        "the device drops the siblings the person saw"
    );
    let on_a: String = a
        .conn
        .query_row("SELECT notes FROM patients WHERE id = 'p1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(on_a, "resolved");
}
