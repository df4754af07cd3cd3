//! Strict tracked tables (docs/design.md section 11, "Values must fit PostgreSQL's types"; issue
//! 21): once the tenant's cloud says `Strict` in its control stream (served here by the scripted
//! hub, signed with the key of the cloud its enrolment codes anchor), a device refuses at write
//! time a value that does not fit its column's PostgreSQL type, or text holding NUL, naming the
//! table and column; an unstrict tenant takes anything, rows already there are left alone, and a
//! peer's changes always apply.

mod common;
use common::scripted_hub::Hub;
use common::Replica;
use outpost_protocol::batch::signature;
use outpost_protocol::control::{self, ControlItem};
use outpost_protocol::enroll_code::CloudAnchor;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::SiteId;
use outpost_testkit::keys::site_keypair;
use rusqlite::params;

const SCHEMA: &str = "
CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name VARCHAR(40), age INTEGER,
  weight REAL, alive BOOLEAN, photo BLOB, note);
CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT, temp REAL);
";

/// A cloud (its own database, its site, its key) and a hub whose codes anchor it.
struct Tenant {
    db: Replica,
    site: SiteId,
    key: Keypair,
    hub: Hub,
    seq: u64,
}

impl Tenant {
    fn new() -> Tenant {
        let db = Replica::new("cloud", SCHEMA);
        db.track("patients", None);
        db.track("visits", None);
        let site = SiteId::from_slice(&hex::decode(db.site_hex()).unwrap()).unwrap();
        let key = site_keypair(site);
        let hub = Hub::start_with_cloud(Some(CloudAnchor {
            site,
            key: key.public().as_bytes().to_vec(),
        }));
        Tenant {
            db,
            site,
            key,
            hub,
            seq: 0,
        }
    }

    /// The cloud's `Strict` entry, served by the hub from its next session (what `outpost-cloud
    /// init --postgres` writes).
    fn say_strict(&mut self) {
        self.seq += 1;
        self.hub.relay_control(control::encode_entry(
            self.site,
            self.seq,
            &ControlItem::Strict,
            &self.key,
        ));
    }
}

/// The error an INSERT of `values` into patients gets, if any.
fn insert(
    r: &Replica,
    values: rusqlite::ParamsFromIter<Vec<rusqlite::types::Value>>,
) -> Option<String> {
    r.conn
        .execute(
            "INSERT INTO patients(id, name, age, weight, alive, photo, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            values,
        )
        .err()
        .map(|e| e.to_string())
}

/// A patients row: id, then the value columns (name, age, weight, alive, photo, note).
fn row(
    id: &str,
    cells: [rusqlite::types::Value; 6],
) -> rusqlite::ParamsFromIter<Vec<rusqlite::types::Value>> {
    let mut v = vec![rusqlite::types::Value::Text(id.into())];
    v.extend(cells);
    rusqlite::params_from_iter(v)
}

use rusqlite::types::Value as V;

fn text(s: &str) -> V {
    V::Text(s.into())
}

/// A row that fits every column.
fn good() -> [V; 6] {
    [
        text("Amina"),
        V::Integer(34),
        V::Real(61.5),
        V::Integer(1),
        V::Blob(vec![0xff, 0xd8]),
        V::Blob(vec![1]),
    ]
}

/// `good()` with cell `i` replaced by `v`.
fn with(i: usize, v: V) -> [V; 6] {
    let mut r = good();
    r[i] = v;
    r
}

/// A device tracking patients before it enrols at `tenant`'s hub, then synced once (the
/// scripted hub serves its control stream at syncs, not at enrolment).
fn device(tenant: &Tenant, name: &str) -> Replica {
    let d = Replica::new(name, SCHEMA);
    d.track("patients", None);
    tenant.hub.enroll(&d);
    tenant.hub.sync(&d);
    d
}

#[test]
fn an_unstrict_tenant_takes_anything_as_today() {
    let tenant = Tenant::new();
    let d = device(&tenant, "dev");
    for (i, (col, v)) in [
        (2, text("abc")),
        (2, V::Real(1.5)),
        (0, V::Blob(vec![1])),
        (0, text("a\0b")),
        (5, V::Integer(7)),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(insert(&d, row(&format!("p{i}"), with(col, v))), None);
    }
    assert_eq!(
        d.one::<i64>("SELECT count(*) FROM sqlite_master WHERE name LIKE '%strict%'"),
        0
    );
}

#[test]
fn a_strict_tenant_refuses_each_value_that_does_not_fit_naming_its_column() {
    let mut tenant = Tenant::new();
    tenant.say_strict();
    // patients was tracked before the entry arrived (at the first sync); visits is tracked after.
    let d = device(&tenant, "dev");
    d.track("visits", None);

    let cases: [(usize, V, &str); 12] = [
        (
            1,
            text("abc"),
            "patients.age takes INTEGER (PostgreSQL bigint): 'abc' does not fit",
        ),
        (
            1,
            V::Real(1.5),
            "patients.age takes INTEGER (PostgreSQL bigint): the real 1.5 does not fit",
        ),
        (1, V::Blob(vec![1]), "patients.age takes INTEGER"),
        (
            2,
            text("heavy"),
            "patients.weight takes REAL (PostgreSQL double precision): 'heavy' does not fit",
        ),
        (
            3,
            text("yes"),
            "patients.alive takes BOOLEAN (PostgreSQL numeric): 'yes' does not fit",
        ),
        (
            0,
            V::Blob(vec![1, 2]),
            "patients.name takes VARCHAR(40) (PostgreSQL text): a blob of 2 bytes does not fit",
        ),
        (
            0,
            text("Am\0ina"),
            "patients.name takes text without NUL characters (PostgreSQL text)",
        ),
        (
            4,
            text("jpeg"),
            "patients.photo takes BLOB (PostgreSQL bytea): 'jpeg' does not fit",
        ),
        (
            4,
            V::Integer(5),
            "patients.photo takes BLOB (PostgreSQL bytea): the integer 5 does not fit",
        ),
        (
            5,
            text("n"),
            "patients.note takes blobs (no declared type) (PostgreSQL bytea)",
        ),
        (5, V::Real(2.5), "patients.note takes blobs"),
        (1, text("12x"), "'12x' does not fit"),
    ];
    for (i, (col, v, message)) in cases.into_iter().enumerate() {
        let e = insert(&d, row(&format!("bad{i}"), with(col, v))).expect("refused");
        assert!(e.contains(message), "case {i}: {e}");
    }
    // A key is a column too.
    let e = insert(&d, row("k\0ey", good())).expect("refused");
    assert!(e.contains("patients.id takes text without NUL"), "{e}");
    assert_eq!(
        d.one::<i64>("SELECT count(*) FROM patients"),
        0,
        "nothing written"
    );

    // Values that fit pass, after affinity: '42' into INTEGER is 42, 37 into REAL is 37.0.
    assert_eq!(insert(&d, row("p1", good())), None);
    assert_eq!(
        insert(
            &d,
            row(
                "p2",
                [
                    V::Null,
                    text("42"),
                    V::Integer(37),
                    V::Real(0.5),
                    V::Null,
                    V::Null
                ]
            )
        ),
        None
    );
    assert_eq!(
        d.rows("SELECT age, weight FROM patients WHERE id = 'p2'"),
        ["Integer(42)|Real(37.0)"]
    );
    // Updates are checked per column, before the row is written.
    let e = d
        .conn
        .execute("UPDATE patients SET age = 'old' WHERE id = 'p1'", [])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("patients.age takes INTEGER (PostgreSQL bigint): 'old' does not fit"),
        "{e}"
    );
    let e = d
        .conn
        .execute(
            "UPDATE patients SET name = ?1 WHERE id = 'p1'",
            params!["x\0y"],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("patients.name takes text without NUL"), "{e}");
    d.exec("UPDATE patients SET age = 35, name = 'Amina K.' WHERE id = 'p1'");
    assert_eq!(
        d.rows("SELECT age FROM patients WHERE id = 'p1'"),
        ["Integer(35)"]
    );
    // Inside a transaction the refused statement alone is undone.
    d.exec("BEGIN; INSERT INTO patients(id, age) VALUES ('p3', 3);");
    assert!(d
        .conn
        .execute("UPDATE patients SET age = 'x' WHERE id = 'p3'", [])
        .is_err());
    d.exec("COMMIT");
    assert_eq!(
        d.rows("SELECT age FROM patients WHERE id = 'p3'"),
        ["Integer(3)"]
    );

    // The table tracked after the entry arrived is checked too.
    let e = d
        .conn
        .execute("INSERT INTO visits VALUES ('v1', 'p1', 'hot')", [])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("visits.temp takes REAL (PostgreSQL double precision): 'hot' does not fit"),
        "{e}"
    );
    d.exec("INSERT INTO visits VALUES ('v1', 'p1', 38.5)");
    // What was written is what is exported: only the rows that fit.
    assert_eq!(d.one::<i64>("SELECT count(*) FROM patients"), 3);
}

#[test]
fn rows_written_before_the_entry_arrived_are_left_alone() {
    let mut tenant = Tenant::new();
    let d = device(&tenant, "dev");
    assert_eq!(insert(&d, row("old", with(1, text("unknown")))), None);
    tenant.say_strict();
    tenant.hub.sync(&d);
    // Checked from this sync on.
    let e = insert(&d, row("new", with(1, text("unknown")))).expect("refused");
    assert!(e.contains("patients.age takes INTEGER"), "{e}");
    // The old row keeps its value; writing its other columns passes, writing a new misfit does not.
    d.exec("UPDATE patients SET name = 'Baraka' WHERE id = 'old'");
    assert!(d
        .conn
        .execute(
            "UPDATE patients SET age = 'still unknown' WHERE id = 'old'",
            []
        )
        .is_err());
    assert_eq!(
        d.rows("SELECT age FROM patients WHERE id = 'old'"),
        ["Text(\"unknown\")"]
    );
    // A column the app adds later is checked once fold has seen it.
    d.exec("ALTER TABLE patients ADD COLUMN height REAL");
    d.one::<i64>("SELECT length(outpost_changes(0))");
    assert!(d
        .conn
        .execute("UPDATE patients SET height = 'tall' WHERE id = 'old'", [])
        .unwrap_err()
        .to_string()
        .contains("patients.height takes REAL"));
}

#[test]
fn a_peers_changes_apply_whatever_they_hold() {
    let mut tenant = Tenant::new();
    tenant.say_strict();
    let d = device(&tenant, "dev");
    // The cloud's database is not strict (it is a SQLite replica here): it writes misfits.
    tenant
        .db
        .exec("INSERT INTO patients(id, name, age) VALUES ('c1', 'Chausiku', 'forty');");
    tenant
        .db
        .conn
        .execute(
            "UPDATE patients SET name = ?1 WHERE id = 'c1'",
            params!["Chau\0siku"],
        )
        .unwrap();
    let mut b = tenant.db.changes(0, None).expect("changes");
    signature::sign(&mut b, &tenant.key).unwrap();
    tenant.hub.inject(b);
    let out = tenant.hub.sync(&d);
    assert_eq!(out["quarantined"], 0, "{out}");
    assert_eq!(
        d.rows("SELECT age FROM patients WHERE id = 'c1'"),
        ["Text(\"forty\")"]
    );
    assert_eq!(
        d.one::<i64>("SELECT instr(name, char(0)) FROM patients WHERE id = 'c1'"),
        5
    );
    // The app's own writes are still checked.
    assert!(d
        .conn
        .execute("UPDATE patients SET age = 'fifty' WHERE id = 'c1'", [])
        .is_err());
}

#[test]
fn the_sqlite3_shell_gets_the_same_refusal() {
    if !outpost_testkit::require::require(
        "shell",
        "no /usr/bin/sqlite3 (Debian's sqlite3 package)",
        std::path::Path::new("/usr/bin/sqlite3").exists(),
    ) {
        return;
    }
    let mut tenant = Tenant::new();
    tenant.say_strict();
    let d = device(&tenant, "dev");
    let path = d.conn.path().unwrap().to_string();
    let so = common::ext_path();
    let so = so.to_str().unwrap().trim_end_matches(".so");
    let shell = |sql: &str| {
        let out = std::process::Command::new("/usr/bin/sqlite3")
            .args(["-bail", "-batch", &path, &format!(".load {so}"), sql])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = shell("INSERT INTO patients(id, age) VALUES ('s1', 'abc');");
    assert!(!ok);
    assert!(
        err.contains("patients.age takes INTEGER (PostgreSQL bigint): 'abc' does not fit"),
        "{err}"
    );
    let (ok, err) = shell("INSERT INTO patients(id, age) VALUES ('s1', 41);");
    assert!(ok, "{err}");
    assert_eq!(
        d.rows("SELECT age FROM patients WHERE id = 's1'"),
        ["Integer(41)"]
    );
}
