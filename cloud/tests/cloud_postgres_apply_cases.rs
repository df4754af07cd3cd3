//! The apply core's cases the random differential test (`cloud_postgres_apply.rs`) meets only by
//! chance, one by one: each batch goes to the engine on SQLite (`outpost_apply`) and to the core
//! on PostgreSQL, and both must end with the same rows and quarantine entries, which the test
//! also states outright.

mod common;
use common::*;
use outpost_cloud::postgres::{app_tables, apply, meta};
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::SiteId;
use outpost_testkit::pg;
use postgres::Client;
use rusqlite::Connection;
use std::path::Path;

const SCHEMA: &str = "
  CREATE TABLE staff(id TEXT PRIMARY KEY NOT NULL, badge TEXT UNIQUE, name TEXT);
  SELECT outpost_track('staff');";

/// A device with `schema`, foreign keys enforced.
fn open(path: &Path, schema: &str) -> Connection {
    let c = device(path);
    c.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    c.execute_batch(schema).unwrap();
    c
}

/// The device's changes since `after` (its own seqs), as one batch.
fn export(c: &Connection, after: i64) -> Vec<u8> {
    c.query_row("SELECT outpost_changes(?1)", [after], |r| r.get(0))
        .unwrap()
}

/// The two targets: the engine's SQLite tenant and the core's PostgreSQL one.
struct Targets {
    lite: Connection,
    pg: Client,
    site: SiteId,
}

impl Targets {
    fn new(dir: &Path, db: &pg::TestDatabase, schema: &str, unique: &str) -> Targets {
        let lite = open(&dir.join("target.db"), schema);
        let site: Vec<u8> = lite
            .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
            .unwrap();
        let site = SiteId::from_slice(&site).unwrap();
        let mut pg = db.superuser();
        meta::prepare(&mut pg, site).unwrap();
        Targets { lite, pg, site }.with_tables(dir, schema, unique)
    }

    /// Makes the PostgreSQL tables from a header with every table of `schema` (a scratch
    /// database's first batch, one row per table), then adds `unique` (batches carry no UNIQUE).
    fn with_tables(mut self, dir: &Path, schema: &str, unique: &str) -> Targets {
        let scratch = open(&dir.join("scratch.db"), schema);
        let tables: Vec<String> = scratch
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'outpost%' AND name NOT LIKE 'sqlite%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        scratch.execute_batch("PRAGMA foreign_keys = OFF;").unwrap();
        for t in &tables {
            scratch
                .execute(&format!("INSERT INTO {t}(id) VALUES ('t')"), [])
                .unwrap();
        }
        let blob = export(&scratch, 0);
        let header = codec::decode(&blob, &Limits::default()).unwrap().header;
        app_tables::ensure(&mut self.pg, &header.tables).unwrap();
        self.pg.batch_execute(unique).unwrap();
        self
    }

    /// Applies `blob` to both.
    fn apply(&mut self, blob: &[u8]) {
        let _: String = self
            .lite
            .query_row("SELECT outpost_apply(?1)", [blob], |r| r.get(0))
            .unwrap();
        let batch = codec::decode(blob, &Limits::default()).unwrap();
        apply::apply(&mut self.pg, self.site, &batch).unwrap();
    }

    /// `sql` (one text column, or several joined by `|`) on both, rows sorted.
    fn both(&mut self, sqlite: &str, postgres: &str) -> (Vec<String>, Vec<String>) {
        let mut s = self.lite.prepare(sqlite).unwrap();
        let mut lite: Vec<String> = s
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut pg: Vec<String> = self
            .pg
            .query(postgres, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        lite.sort();
        pg.sort();
        (lite, pg)
    }

    /// The app rows of `staff` on both (equal), as `id|badge`.
    fn staff(&mut self) -> Vec<String> {
        let (lite, pg) = self.both(
            "SELECT id || '|' || coalesce(badge, '') FROM staff",
            "SELECT id || '|' || coalesce(badge, '') FROM public.staff",
        );
        assert_eq!(lite, pg, "staff rows: engine, core");
        lite
    }

    /// The quarantine on both (equal), as `pk|reason`.
    fn quarantine(&mut self) -> Vec<String> {
        let (lite, pg) = self.both(
            "SELECT pk || '|' || reason || '|' || change FROM outpost_quarantine",
            "SELECT pk || '|' || reason || '|' || change FROM outpost.quarantine",
        );
        let norm = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|e| {
                    let mut parts = e.splitn(3, '|');
                    let (pk, reason, change) = (
                        parts.next().unwrap().to_string(),
                        parts.next().unwrap().to_string(),
                        parts.next().unwrap(),
                    );
                    let change: serde_json::Value = serde_json::from_str(change).unwrap();
                    format!("{pk}|{reason}|{change}")
                })
                .collect()
        };
        let (lite, pg) = (norm(lite), norm(pg));
        assert_eq!(lite, pg, "quarantine entries: engine, core");
        lite.into_iter()
            .map(|e| e.rsplit_once('|').unwrap().0.to_string())
            .collect()
    }
}

const HELD: &str =
    "UNIQUE constraint failed: staff.badge: the later write is kept here for a person";

#[test]
fn a_unique_collision_keeps_the_earlier_row_whichever_arrives_first_and_frees_the_value_later() {
    let Some(db) = pg::database("apply_case_unique") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a.db"), SCHEMA);
    let b = open(&tmp.path().join("b.db"), SCHEMA);
    a.execute(
        "INSERT INTO staff(id, badge, name) VALUES ('sa', 'B1', 'Asha')",
        [],
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.execute(
        "INSERT INTO staff(id, badge, name) VALUES ('sb', 'B1', 'Juma')",
        [],
    )
    .unwrap();
    let (from_a, from_b) = (export(&a, 0), export(&b, 0));
    let mut t = Targets::new(
        tmp.path(),
        &db,
        SCHEMA,
        "CREATE UNIQUE INDEX ON public.staff(badge)",
    );

    // The later write arrives first and is in the table until the earlier one comes: then the
    // earlier keeps the badge and the later is held aside, its values in the quarantine.
    t.apply(&from_b);
    assert_eq!(t.staff(), ["sb|B1"]);
    assert!(t.quarantine().is_empty());
    t.apply(&from_a);
    assert_eq!(t.staff(), ["sa|B1"]);
    assert_eq!(t.quarantine(), [format!("\"sb\"|{HELD}")]);

    // A later change to the held row merges over its held values and stays held.
    b.execute("UPDATE staff SET name = 'Juma K' WHERE id = 'sb'", [])
        .unwrap();
    t.apply(&export(&b, 1));
    assert_eq!(t.staff(), ["sa|B1"]);
    assert_eq!(t.quarantine().len(), 2, "an entry per change held aside");

    // The earlier row gives the badge up: the held row comes back whole, its entries go.
    a.execute("UPDATE staff SET badge = 'B2' WHERE id = 'sa'", [])
        .unwrap();
    t.apply(&export(&a, 1));
    assert_eq!(t.staff(), ["sa|B2", "sb|B1"]);
    assert!(t.quarantine().is_empty());
    let (lite, pg) = t.both(
        "SELECT name FROM staff WHERE id = 'sb'",
        "SELECT name FROM public.staff WHERE id = 'sb'",
    );
    assert_eq!(
        (lite, pg),
        (vec!["Juma K".to_string()], vec!["Juma K".to_string()])
    );
}

const FAMILY: &str = "
  CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
  CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id),
    clinic TEXT);
  SELECT outpost_track('patients');
  SELECT outpost_track('visits');";

/// Changes a target re-sends as its own: (causal length, columns written).
type Resent = Vec<(u64, usize)>;

/// The restored row as each target re-sends it: the engine's own change (its export) and the
/// PostgreSQL tenant's captured write (its outbox).
fn resent(t: &mut Targets) -> (Resent, Resent) {
    let blob: Option<Vec<u8>> = t
        .lite
        .query_row("SELECT outpost_changes(0)", [], |r| r.get(0))
        .unwrap();
    let lite = blob
        .map(|b| {
            let b = codec::decode(&b, &Limits::default()).unwrap();
            b.tables
                .iter()
                .filter(|g| b.header.tables[g.table as usize].name == "patients")
                .flat_map(|g| g.rows.iter().map(|r| (r.existence, r.cells.len())))
                .collect()
        })
        .unwrap_or_default();
    let pg =
        t.pg.query(
            "SELECT o.exist, (SELECT count(*) FROM jsonb_object_keys(o.cells))::bigint \
             FROM outpost.outbox o ORDER BY o.seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as usize))
        .collect();
    (lite, pg)
}

fn rows(t: &mut Targets, table: &str) -> Vec<String> {
    let (lite, pg) = t.both(
        &format!("SELECT id FROM {table}"),
        &format!("SELECT id FROM public.{table}"),
    );
    assert_eq!(lite, pg, "rows of {table}: engine, core");
    lite
}

#[test]
fn a_delete_of_a_parent_with_live_children_keeps_it_and_resends_it_as_the_clouds_own_write() {
    let Some(db) = pg::database("apply_case_restore_delete") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a.db"), FAMILY);
    let b = open(&tmp.path().join("b.db"), FAMILY);
    a.execute("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')", [])
        .unwrap();
    let first = export(&a, 0);
    b.query_row("SELECT outpost_apply(?1)", [&first], |_| Ok(()))
        .unwrap();
    // B records a visit of p1 while A, which never saw it, deletes p1.
    b.execute(
        "INSERT INTO visits(id, patient_id, clinic) VALUES ('v1', 'p1', 'Moshi')",
        [],
    )
    .unwrap();
    a.execute("DELETE FROM patients WHERE id = 'p1'", [])
        .unwrap();
    let mut t = Targets::new(tmp.path(), &db, FAMILY, "SELECT 1");
    t.apply(&first);
    t.apply(&export(&b, 0));
    t.apply(&export(&a, 1));
    assert_eq!(rows(&mut t, "patients"), ["p1"], "the parent is kept");
    assert_eq!(rows(&mut t, "visits"), ["v1"]);
    assert!(t.quarantine().is_empty());
    let (lite, pg) = resent(&mut t);
    // Re-sent at the causal length after the delete, every column written.
    assert_eq!(lite, [(3, 1)], "the engine's own change");
    assert_eq!(pg, [(3, 1)], "the cloud's captured write");
}

#[test]
fn a_child_of_a_parent_deleted_here_brings_the_parent_back_as_the_clouds_own_write() {
    let Some(db) = pg::database("apply_case_restore_child") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a.db"), FAMILY);
    let b = open(&tmp.path().join("b.db"), FAMILY);
    a.execute("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')", [])
        .unwrap();
    let first = export(&a, 0);
    b.query_row("SELECT outpost_apply(?1)", [&first], |_| Ok(()))
        .unwrap();
    b.execute(
        "INSERT INTO visits(id, patient_id, clinic) VALUES ('v1', 'p1', 'Moshi')",
        [],
    )
    .unwrap();
    a.execute("DELETE FROM patients WHERE id = 'p1'", [])
        .unwrap();
    let mut t = Targets::new(tmp.path(), &db, FAMILY, "SELECT 1");
    // The delete first: p1 is gone on both, then B's visit of it arrives.
    t.apply(&first);
    t.apply(&export(&a, 1));
    assert!(rows(&mut t, "patients").is_empty());
    t.apply(&export(&b, 0));
    assert_eq!(rows(&mut t, "patients"), ["p1"], "the parent is back");
    assert_eq!(rows(&mut t, "visits"), ["v1"]);
    assert!(t.quarantine().is_empty());
    let (lite, pg) = t.both(
        "SELECT name FROM patients",
        "SELECT name FROM public.patients",
    );
    assert_eq!(
        (lite, pg),
        (vec!["Asha".to_string()], vec!["Asha".to_string()])
    );
    let (lite, pg) = resent(&mut t);
    assert_eq!(lite, [(3, 1)], "the engine's own change");
    assert_eq!(pg, [(3, 1)], "the cloud's captured write");
}

#[test]
fn a_child_quarantined_for_its_missing_parent_applies_in_the_apply_that_brings_the_parent() {
    let Some(db) = pg::database("apply_case_retry") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a.db"), FAMILY);
    let b = open(&tmp.path().join("b.db"), FAMILY);
    a.execute("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')", [])
        .unwrap();
    let first = export(&a, 0);
    b.query_row("SELECT outpost_apply(?1)", [&first], |_| Ok(()))
        .unwrap();
    b.execute(
        "INSERT INTO visits(id, patient_id, clinic) VALUES ('v1', 'p1', 'Moshi')",
        [],
    )
    .unwrap();
    let mut t = Targets::new(tmp.path(), &db, FAMILY, "SELECT 1");
    // The visit first: its parent is missing on both targets, so it waits in the quarantine.
    t.apply(&export(&b, 0));
    assert!(rows(&mut t, "visits").is_empty());
    let waiting = t.quarantine();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(waiting[0].contains("parent row missing"), "{waiting:?}");
    // The apply that brings the parent applies the visit too: nothing waits any more.
    t.apply(&first);
    assert_eq!(rows(&mut t, "patients"), ["p1"]);
    assert_eq!(rows(&mut t, "visits"), ["v1"]);
    assert!(t.quarantine().is_empty());
}

const ROTA: &str = "
  CREATE TABLE staff(id TEXT PRIMARY KEY NOT NULL, badge TEXT UNIQUE, name TEXT);
  CREATE TABLE shifts(id TEXT PRIMARY KEY NOT NULL, staff_id TEXT REFERENCES staff(id),
    ward TEXT);
  SELECT outpost_track('staff');
  SELECT outpost_track('shifts');";

#[test]
fn rows_referencing_a_row_held_aside_are_held_aside_with_it_and_come_back_with_it() {
    let Some(db) = pg::database("apply_case_held_children") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a.db"), ROTA);
    let b = open(&tmp.path().join("b.db"), ROTA);
    a.execute(
        "INSERT INTO staff(id, badge, name) VALUES ('sa', 'B1', 'Asha')",
        [],
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.execute_batch(
        "INSERT INTO staff(id, badge, name) VALUES ('sb', 'B1', 'Juma');
         INSERT INTO shifts(id, staff_id, ward) VALUES ('h1', 'sb', 'maternity');",
    )
    .unwrap();
    let (from_a, from_b) = (export(&a, 0), export(&b, 0));
    let mut t = Targets::new(
        tmp.path(),
        &db,
        ROTA,
        "CREATE UNIQUE INDEX ON public.staff(badge)",
    );
    t.apply(&from_b);
    assert_eq!(rows(&mut t, "shifts"), ["h1"]);

    // The earlier badge arrives: Juma is held aside, and his shift with him (else it would
    // reference nothing, which both stores refuse at commit).
    t.apply(&from_a);
    assert_eq!(t.staff(), ["sa|B1"]);
    assert!(rows(&mut t, "shifts").is_empty());
    let q = t.quarantine();
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(q.contains(&format!("\"sb\"|{HELD}")), "{q:?}");
    assert!(
        q.contains(&"\"h1\"|parent row missing: a referenced row does not exist here (yet)".into()),
        "{q:?}"
    );

    // A shift of Juma's arriving while he is held aside is held aside too.
    b.execute(
        "INSERT INTO shifts(id, staff_id, ward) VALUES ('h2', 'sb', 'theatre')",
        [],
    )
    .unwrap();
    t.apply(&export(&b, 2));
    assert!(rows(&mut t, "shifts").is_empty());
    assert_eq!(t.quarantine().len(), 3);

    // The badge is freed: Juma comes back, his shifts after him, and every entry goes.
    a.execute("UPDATE staff SET badge = 'B2' WHERE id = 'sa'", [])
        .unwrap();
    t.apply(&export(&a, 1));
    assert_eq!(t.staff(), ["sa|B2", "sb|B1"]);
    assert_eq!(rows(&mut t, "shifts"), ["h1", "h2"]);
    assert!(t.quarantine().is_empty());
}

#[test]
fn a_claim_refused_by_a_check_leaves_the_holder_in_its_table_and_sets_the_change_aside() {
    let Some(db) = pg::database("apply_case_claim_check") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a.db"), SCHEMA);
    let b = open(&tmp.path().join("b.db"), SCHEMA);
    // The earlier badge is given to a name the targets' CHECK refuses.
    a.execute(
        "INSERT INTO staff(id, badge, name) VALUES ('sa', 'B1', 'Nobody')",
        [],
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.execute(
        "INSERT INTO staff(id, badge, name) VALUES ('sb', 'B1', 'Juma')",
        [],
    )
    .unwrap();
    let (from_a, from_b) = (export(&a, 0), export(&b, 0));
    // The operator's CHECK on both targets (batches carry none).
    let checked = "
      CREATE TABLE staff(id TEXT PRIMARY KEY NOT NULL, badge TEXT UNIQUE,
        name TEXT CHECK (name <> 'Nobody'));
      SELECT outpost_track('staff');";
    let mut t = Targets::new(
        tmp.path(),
        &db,
        checked,
        "CREATE UNIQUE INDEX ON public.staff(badge);
         ALTER TABLE public.staff ADD CONSTRAINT staff_named CHECK (name <> 'Nobody');",
    );
    t.apply(&from_b);
    t.apply(&from_a);
    // The engine meets the CHECK before the UNIQUE index: the change is set aside and Juma
    // keeps the badge. The core claims first and must put Juma back when the CHECK refuses.
    assert_eq!(t.staff(), ["sb|B1"]);
    let (lite, pg) = t.both(
        "SELECT pk || '|' || change FROM outpost_quarantine",
        "SELECT pk || '|' || change FROM outpost.quarantine",
    );
    assert_eq!(
        lite, pg,
        "quarantine entries (the reasons are each store's own text)"
    );
    assert_eq!(lite.len(), 1);
    assert!(lite[0].starts_with("\"sa\"|"), "{lite:?}");
    let reasons: Vec<String> =
        t.pg.query("SELECT reason FROM outpost.quarantine", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert!(reasons[0].contains("staff_named"), "{reasons:?}");
}

/// The quarantine on both as `pk|reason` (equal): for entries whose change carries a clock of
/// each target's own (a restored row's), which the two stores' clocks set apart.
fn reasons(t: &mut Targets) -> Vec<String> {
    let (lite, pg) = t.both(
        "SELECT pk || '|' || reason FROM outpost_quarantine",
        "SELECT pk || '|' || reason FROM outpost.quarantine",
    );
    assert_eq!(lite, pg, "quarantine entries: engine, core");
    lite
}

#[test]
fn a_parent_restored_whose_badge_another_row_took_is_held_aside_with_its_child() {
    let Some(db) = pg::database("apply_case_restore_unique") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a.db"), ROTA);
    let b = open(&tmp.path().join("b.db"), ROTA);
    let c = open(&tmp.path().join("c.db"), ROTA);
    a.execute(
        "INSERT INTO staff(id, badge, name) VALUES ('sa', 'B1', 'Asha')",
        [],
    )
    .unwrap();
    let first = export(&a, 0);
    b.query_row("SELECT outpost_apply(?1)", [&first], |_| Ok(()))
        .unwrap();
    // B gives Asha a shift while A, which never sees it, deletes Asha; C, later, gives the
    // badge Asha had to Neema.
    b.execute(
        "INSERT INTO shifts(id, staff_id, ward) VALUES ('h1', 'sa', 'maternity')",
        [],
    )
    .unwrap();
    a.execute("DELETE FROM staff WHERE id = 'sa'", []).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    c.execute(
        "INSERT INTO staff(id, badge, name) VALUES ('sc', 'B1', 'Neema')",
        [],
    )
    .unwrap();
    let mut t = Targets::new(
        tmp.path(),
        &db,
        ROTA,
        "CREATE UNIQUE INDEX ON public.staff(badge)",
    );
    t.apply(&first);
    t.apply(&export(&a, 1));
    t.apply(&export(&c, 0));
    assert_eq!(t.staff(), ["sc|B1"]);

    // The shift brings Asha back as each target's own write, later than Neema's badge: Asha is
    // held aside (alive, out of her table), and her shift with her.
    t.apply(&export(&b, 0));
    assert_eq!(t.staff(), ["sc|B1"]);
    assert!(rows(&mut t, "shifts").is_empty());
    assert_eq!(
        reasons(&mut t),
        [
            format!(
                "\"h1\"|{}",
                "parent row missing: a referenced row does not exist here (yet)"
            ),
            format!("\"sa\"|{HELD}"),
        ]
    );

    // Neema's badge changes: Asha and her shift come back, and every entry goes.
    c.execute("UPDATE staff SET badge = 'B9' WHERE id = 'sc'", [])
        .unwrap();
    t.apply(&export(&c, 1));
    assert_eq!(t.staff(), ["sa|B1", "sc|B9"]);
    assert_eq!(rows(&mut t, "shifts"), ["h1"]);
    assert!(reasons(&mut t).is_empty());
}
