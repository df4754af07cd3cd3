//! The grouped ingest decides every batch as if each had been applied alone (`group.rs`).

use crate::tenant::Tenant;
use outpost_mailbox::Mailbox;
use outpost_protocol::SiteId;
use rusqlite::Connection;
use std::path::Path;

const NOTES: &str = "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT); \
                     SELECT outpost_track('notes');";

/// A device database with the engine, holding `NOTES`.
fn device(path: &Path) -> Connection {
    outpost_embed::register().unwrap();
    let c = Connection::open(path).unwrap();
    c.execute_batch(NOTES).unwrap();
    c
}

/// One batch per note: each written, then exported above the previous export.
fn batches(db: &Connection, notes: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut since = 0i64;
    for (id, body) in notes {
        db.execute("INSERT INTO notes VALUES (?1, ?2)", [id, body])
            .unwrap();
        let batch: Vec<u8> = db
            .query_row("SELECT outpost_changes(?1)", [since], |r| r.get(0))
            .unwrap();
        since = db
            .query_row("SELECT outpost_db_version()", [], |r| r.get(0))
            .unwrap();
        out.push(batch);
    }
    out
}

/// Devices `a` (notes a1, a2 "bad", a3) and `b` (b1, b2) in `dir`, their batches stored in a
/// mailbox there.
fn two_origins(dir: &Path) -> (Connection, Connection, Mailbox) {
    let a = device(&dir.join("a.db"));
    let b = device(&dir.join("b.db"));
    let from_a = batches(&a, &[("a1", "fine"), ("a2", "bad"), ("a3", "fine")]);
    let from_b = batches(&b, &[("b1", "fine"), ("b2", "fine")]);
    let mut mailbox = Mailbox::open(dir.join("mailbox.db")).unwrap();
    mailbox
        .store(from_a.into_iter().chain(from_b).collect())
        .unwrap();
    (a, b, mailbox)
}

fn site_of(db: &Connection) -> SiteId {
    let b: Vec<u8> = db
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .unwrap();
    SiteId::from_slice(&b).unwrap()
}

fn notes(tenant: &mut Tenant) -> Vec<String> {
    let mut s = tenant
        .conn()
        .prepare("SELECT id FROM notes ORDER BY id")
        .unwrap();
    let ids = s.query_map([], |r| r.get(0)).unwrap();
    ids.collect::<Result<_, _>>().unwrap()
}

/// One origin's batch fails inside a group (a trigger the operator put on the tenant's table
/// fails on its row: an error the engine does not quarantine): the group is applied again one batch at a time, so that origin's batches before
/// it are applied, it and its origin's later batches wait for the next round, and the other
/// origin's batches, before and after it in the same group, are applied.
#[test]
fn a_batch_failing_in_a_group_stops_only_its_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _b, mut mailbox) = two_origins(tmp.path());
    let mut tenant = Tenant::open(&tmp.path().join("tenant.db"), SiteId([7; 16])).unwrap();
    tenant.conn().execute_batch(NOTES).unwrap();
    tenant
        .conn()
        .execute_batch(
            "CREATE TRIGGER no_bad BEFORE INSERT ON notes WHEN NEW.body = 'bad' \
             BEGIN SELECT json(NEW.body); END;",
        )
        .unwrap();

    let done = tenant.ingest(&mut mailbox).unwrap();
    assert_eq!(notes(&mut tenant), ["a1", "b1", "b2"]);
    assert_eq!(done.batches, 3);
    assert_eq!(done.failures.len(), 1, "{:?}", done.failures);
    assert_eq!(done.failures[0].origin, site_of(&a));
    assert!(
        done.failures[0].error.contains("malformed JSON"),
        "{:?}",
        done.failures
    );

    // The next round retries from the batch that failed.
    tenant.conn().execute_batch("DROP TRIGGER no_bad").unwrap();
    let done = tenant.ingest(&mut mailbox).unwrap();
    assert_eq!((done.batches, done.failures.len()), (2, 0));
    assert_eq!(notes(&mut tenant), ["a1", "a2", "a3", "b1", "b2"]);
}

/// Batches applied in one group count and log as each applied alone.
#[test]
fn batches_of_several_origins_apply_in_one_group() {
    let tmp = tempfile::tempdir().unwrap();
    let a = device(&tmp.path().join("a.db"));
    let b = device(&tmp.path().join("b.db"));
    let from_a = batches(&a, &[("a1", "x"), ("a2", "y")]);
    let from_b = batches(&b, &[("b1", "z")]);
    let mut mailbox = Mailbox::open(tmp.path().join("mailbox.db")).unwrap();
    mailbox
        .store(from_a.into_iter().chain(from_b).collect())
        .unwrap();
    let mut tenant = Tenant::open(&tmp.path().join("tenant.db"), SiteId([7; 16])).unwrap();
    let done = tenant.ingest(&mut mailbox).unwrap();
    assert_eq!((done.batches, done.failures.len()), (3, 0));
    assert_eq!(notes(&mut tenant), ["a1", "a2", "b1"]);
    let again = tenant.ingest(&mut mailbox).unwrap();
    assert_eq!(again.batches, 0);
}

/// [`a_batch_failing_in_a_group_stops_only_its_origin`] on the PostgreSQL tenant, whose groups
/// apply the judge's decoded copies (`apply_many`): a trigger of the operator's raises on one
/// row (an error no careful apply quarantines), the group is applied again batch by batch, and
/// the outcome is each batch's alone.
#[test]
fn a_batch_failing_in_a_postgres_group_stops_only_its_origin() {
    use crate::postgres::PgTenant;
    let Some(db) = outpost_testkit::pg::database("ingest_pg_group_failure") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, mut mailbox) = two_origins(tmp.path());
    let site = SiteId([7; 16]);
    let mut c = db.superuser();
    crate::postgres::meta::prepare(&mut c, site).unwrap();
    let mut tenant = PgTenant::open(&db.url, site).unwrap();
    let notes = |tenant: &mut PgTenant| -> Vec<String> {
        let rows = tenant
            .client()
            .query("SELECT id FROM public.notes ORDER BY id", &[])
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };
    // The first round makes the table (and applies everything): the trigger comes after, on
    // rows the devices write next.
    let first = tenant.ingest(&mut mailbox).unwrap();
    assert_eq!((first.batches, first.failures.len()), (5, 0));
    c.batch_execute(
        "CREATE FUNCTION public.no_bad() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.body = 'worse' THEN RAISE EXCEPTION 'no worse notes'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER no_bad BEFORE INSERT OR UPDATE ON public.notes \
         FOR EACH ROW EXECUTE FUNCTION public.no_bad();",
    )
    .unwrap();
    let continue_from = |db: &Connection| -> i64 {
        db.query_row("SELECT outpost_db_version()", [], |r| r.get(0))
            .unwrap()
    };
    let more = |db: &Connection, notes: &[(&str, &str)]| -> Vec<Vec<u8>> {
        let mut since = continue_from(db);
        let mut out = Vec::new();
        for (id, body) in notes {
            db.execute("INSERT INTO notes VALUES (?1, ?2)", [id, body])
                .unwrap();
            out.push(
                db.query_row("SELECT outpost_changes(?1)", [since], |r| r.get(0))
                    .unwrap(),
            );
            since = continue_from(db);
        }
        out
    };
    let from_a = more(&a, &[("a4", "fine"), ("a5", "worse"), ("a6", "fine")]);
    let from_b = more(&b, &[("b3", "fine"), ("b4", "fine")]);
    mailbox
        .store(from_a.into_iter().chain(from_b).collect())
        .unwrap();

    let done = tenant.ingest(&mut mailbox).unwrap();
    assert_eq!(
        notes(&mut tenant),
        ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"]
    );
    assert_eq!(done.batches, 3);
    assert_eq!(done.failures.len(), 1, "{:?}", done.failures);
    assert_eq!(done.failures[0].origin, site_of(&a));
    assert!(
        done.failures[0].error.contains("no worse notes"),
        "{:?}",
        done.failures
    );

    // The next round retries from the batch that failed.
    c.batch_execute("DROP TRIGGER no_bad ON public.notes")
        .unwrap();
    let done = tenant.ingest(&mut mailbox).unwrap();
    assert_eq!((done.batches, done.failures.len()), (2, 0));
    assert_eq!(
        notes(&mut tenant),
        ["a1", "a2", "a3", "a4", "a5", "a6", "b1", "b2", "b3", "b4"]
    );
}
