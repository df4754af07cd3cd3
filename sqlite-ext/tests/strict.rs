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

/// Whether Debian's `sqlite3` shell is there (required under `CI=true`).
fn shell_present() -> bool {
    outpost_testkit::require::require(
        "shell",
        "no /usr/bin/sqlite3 (Debian's sqlite3 package)",
        std::path::Path::new("/usr/bin/sqlite3").exists(),
    )
}

#[test]
fn the_sqlite3_shell_gets_the_same_refusal() {
    if !shell_present() {
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

/// One column per PostgreSQL type the declared types map to (two declared types for some), for
/// the matrix below.
const KINDS: &str = "
CREATE TABLE kinds(id TEXT PRIMARY KEY NOT NULL, i INTEGER, bi BIGINT, r REAL, d DOUBLE,
  n NUMERIC, bo BOOLEAN, dt DATE, t TEXT, vc VARCHAR(10), b BLOB, x);
CREATE TABLE ref_kinds(id TEXT PRIMARY KEY NOT NULL, i INTEGER, bi BIGINT, r REAL, d DOUBLE,
  n NUMERIC, bo BOOLEAN, dt DATE, t TEXT, vc VARCHAR(10), b BLOB, x);
";

/// The columns of `KINDS` and what PostgreSQL type each is kept in.
const KIND_COLUMNS: [(&str, &str); 11] = [
    ("i", "bigint"),
    ("bi", "bigint"),
    ("r", "double"),
    ("d", "double"),
    ("n", "numeric"),
    ("bo", "numeric"),
    ("dt", "numeric"),
    ("t", "text"),
    ("vc", "text"),
    ("b", "bytea"),
    ("x", "bytea"),
];

/// Every SQLite type, and the values at the edges of the checks (docs/sql-api.md,
/// `outpost_strict_check`): integers at the ends of 64 bits, whole and fractional reals, reals SQLite keeps as
/// reals in an INTEGER column (-2^63, 2^63, 1e20, infinities), texts that affinity makes numbers
/// and texts it does not, NUL at the start, middle and end of a text, after a multi-byte
/// character, blobs (empty, digits, NUL), a blob holding what reads as text with NUL.
const EDGE_VALUES: &str = "
 (NULL), (0), (1), (-1), (9223372036854775807), (-9223372036854775808), (1.0), (1.5), (-0.0),
 (1e20), (-1e20), (-9223372036854775808.0), (9223372036854775807.0), (9e999), (-9e999),
 (4.9e-324), (CAST(1 AS REAL)), ('abc'), (''), ('42'), ('-42'), ('12x'), ('4.0'), ('4.5'),
 (' 7 '), ('1e400'), ('9223372036854775808'), ('-9223372036854775809'), ('0x10'), ('Infinity'),
 ('NaN'), ('  '), ('aé'), (x''), (x'35'), (x'00'), (x'3400'), (x'efbbbf'),
 ('a' || char(0) || 'b'), (char(0)), ('4' || char(0)), (char(0) || 'a'),
 ('é' || char(0) || 'É'), (CAST('a' || char(0) || 'b' AS BLOB))";

/// Whether the value `ref_kinds` holds in `column` (same declared type, untracked: only
/// SQLite's affinity applied) fits `postgres`, judged with `typeof` and `instr`.
fn fits_by_typeof(r: &Replica, id: &str, column: &str, postgres: &str) -> bool {
    let (ty, nul): (String, i64) = r
        .conn
        .query_row(
            &format!(
                "SELECT typeof({column}), coalesce(instr({column}, char(0)), 0) FROM ref_kinds WHERE id = ?1"
            ),
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    match postgres {
        "bigint" => ["integer", "null"].contains(&ty.as_str()),
        "double" | "numeric" => ["integer", "real", "null"].contains(&ty.as_str()),
        "text" => ty == "null" || (ty == "text" && nul == 0),
        "bytea" => ["blob", "null"].contains(&ty.as_str()),
        other => panic!("{other}"),
    }
}

/// A strict device tracking `kinds` (and `ref_kinds` left untracked), with `vals` holding
/// [`EDGE_VALUES`]; returns it and the number of values.
fn kinds_device(tenant: &Tenant) -> (Replica, i64) {
    let d = Replica::new("kinds", KINDS);
    d.track("kinds", None);
    tenant.hub.enroll(&d);
    tenant.hub.sync(&d);
    d.exec(&format!(
        "CREATE TABLE vals(v); INSERT INTO vals VALUES {EDGE_VALUES};"
    ));
    let n = d.one::<i64>("SELECT count(*) FROM vals");
    for k in 1..=n {
        for (c, _) in KIND_COLUMNS {
            d.exec(&format!(
                "INSERT INTO ref_kinds(id, {c}) SELECT '{c}:{k}', v FROM vals WHERE rowid = {k}"
            ));
        }
    }
    (d, n)
}

#[test]
fn every_sqlite_value_into_every_postgres_type_is_judged_as_typeof_and_instr_judge_it() {
    let mut tenant = Tenant::new();
    tenant.say_strict();
    let (d, n) = kinds_device(&tenant);
    d.exec("INSERT INTO kinds(id) VALUES ('u')");
    let (mut refused, mut taken) = (0, 0);
    for k in 1..=n {
        let shown = d.one::<String>(&format!("SELECT quote(v) FROM vals WHERE rowid = {k}"));
        for (c, postgres) in KIND_COLUMNS {
            let id = format!("{c}:{k}");
            let fits = fits_by_typeof(&d, &id, c, postgres);
            let case = format!("{shown} into kinds.{c} ({postgres}): fits {fits}");
            let inserted = d.conn.execute(
                &format!("INSERT INTO kinds(id, {c}) SELECT ?1, v FROM vals WHERE rowid = {k}"),
                [&id],
            );
            let updated = d.conn.execute(
                &format!(
                    "UPDATE kinds SET {c} = (SELECT v FROM vals WHERE rowid = {k}) WHERE id = 'u'"
                ),
                [],
            );
            for (what, outcome) in [("insert", inserted), ("update", updated)] {
                match outcome {
                    Ok(_) => assert!(fits, "{what} of {case} was taken"),
                    Err(e) => {
                        assert!(!fits, "{what} of {case} was refused: {e}");
                        assert!(
                            e.to_string()
                                .contains(&format!("outpost: kinds.{c} takes ")),
                            "{what} of {case}: {e}"
                        );
                    }
                }
            }
            d.exec("UPDATE kinds SET i = NULL, bi = NULL, r = NULL, d = NULL, n = NULL, bo = NULL, dt = NULL, t = NULL, vc = NULL, b = NULL, x = NULL WHERE id = 'u'");
            if fits {
                taken += 1;
            } else {
                refused += 1;
            }
        }
    }
    // The matrix holds both outcomes for every column (it could not pass by refusing nothing).
    assert!(
        refused > 200 && taken > 100,
        "refused {refused}, taken {taken}"
    );
    // What was taken is what the table holds: one row per fitting case, plus 'u'.
    assert_eq!(d.one::<i64>("SELECT count(*) FROM kinds"), taken + 1);
}

#[test]
fn the_sqlite3_shell_judges_every_value_as_typeof_and_instr_judge_it() {
    if !shell_present() {
        return;
    }
    let mut tenant = Tenant::new();
    tenant.say_strict();
    let (d, n) = kinds_device(&tenant);
    // One script, every case an insert of a row of its own and an update of a row of its own
    // (no -bail: a refused statement is reported and the script goes on).
    // The reference values are written by the shell's SQLite too: versions differ in what
    // affinity makes of some texts ('4' followed by NUL is the integer 4 to the 3.54 the tests
    // link, text to Debian's 3.40 shell).
    // With `trusted_schema=OFF` too: the triggers may use only innocuous functions and tables.
    let mut script = String::from("PRAGMA trusted_schema=OFF;\nDELETE FROM ref_kinds;\n");
    for k in 1..=n {
        for (c, _) in KIND_COLUMNS {
            script.push_str(&format!(
                "INSERT INTO ref_kinds(id, {c}) SELECT '{c}:{k}', v FROM vals WHERE rowid = {k};\n"
            ));
        }
    }
    for k in 1..=n {
        for (c, _) in KIND_COLUMNS {
            script.push_str(&format!(
                "INSERT INTO kinds(id, {c}) SELECT 'i:{c}:{k}', v FROM vals WHERE rowid = {k};
                 INSERT INTO kinds(id) VALUES ('u:{c}:{k}');
                 UPDATE kinds SET {c} = (SELECT v FROM vals WHERE rowid = {k}) WHERE id = 'u:{c}:{k}';\n"
            ));
        }
    }
    let path = d.conn.path().unwrap().to_string();
    let so = common::ext_path();
    let so = so.to_str().unwrap().trim_end_matches(".so");
    // Through standard input: SQL given as an argument stops at its first error.
    let mut shell = std::process::Command::new("/usr/bin/sqlite3")
        .args(["-batch", &path])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = shell.stdin.take().unwrap();
        writeln!(stdin, ".load {so}\n{script}").unwrap();
    }
    let out = shell.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut refusals = 0;
    for k in 1..=n {
        let null = d.one::<bool>(&format!("SELECT v IS NULL FROM vals WHERE rowid = {k}"));
        for (c, postgres) in KIND_COLUMNS {
            let fits = fits_by_typeof(&d, &format!("{c}:{k}"), c, postgres);
            let inserted = d.one::<i64>(&format!(
                "SELECT count(*) FROM kinds WHERE id = 'i:{c}:{k}'"
            )) == 1;
            let updated = d.one::<bool>(&format!(
                "SELECT {c} IS NOT NULL FROM kinds WHERE id = 'u:{c}:{k}'"
            ));
            let case = format!("value {k} into kinds.{c} ({postgres})");
            assert_eq!(inserted, fits, "insert of {case}\n{stderr}");
            if !null {
                assert_eq!(updated, fits, "update of {case}\n{stderr}");
            }
            if !fits {
                refusals += 2;
            }
        }
    }
    assert!(refusals > 400, "{refusals}");
    // Each refusal was reported, naming its column.
    assert_eq!(
        stderr.matches("outpost: kinds.").count(),
        refusals,
        "{stderr}"
    );
}

#[test]
fn a_refused_insert_of_several_rows_writes_none_of_them() {
    let mut tenant = Tenant::new();
    tenant.say_strict();
    let d = device(&tenant, "dev");
    d.exec("BEGIN; INSERT INTO patients(id, age) VALUES ('p0', 0);");
    let e = d
        .conn
        .execute(
            "INSERT INTO patients(id, age) VALUES ('p1', 1), ('p2', 'two'), ('p3', 3)",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("patients.age takes INTEGER"), "{e}");
    d.exec("COMMIT");
    assert_eq!(d.rows("SELECT id FROM patients"), ["Text(\"p0\")"]);
}

/// UPDATEs are checked without a statement journal (docs/performance.md, W2): a refused
/// single-row UPDATE writes nothing, but an UPDATE of several rows refused at a later row keeps
/// the rows before it inside an explicit transaction, as `UPDATE OR FAIL` would (captured, so
/// they sync if the app commits); in autocommit nothing of it stays.
#[test]
fn a_refused_update_of_several_rows_keeps_the_rows_before_it_only_inside_a_transaction() {
    let mut tenant = Tenant::new();
    tenant.say_strict();
    let d = device(&tenant, "dev");
    d.exec("INSERT INTO patients(id, age) VALUES ('a', 1), ('b', 2), ('c', 3)");
    let update = "UPDATE patients SET age = CASE id WHEN 'b' THEN 'two' ELSE age + 10 END";
    let e = d.conn.execute(update, []).unwrap_err();
    assert!(
        e.to_string()
            .contains("patients.age takes INTEGER (PostgreSQL bigint): 'two' does not fit"),
        "{e}"
    );
    let ages =
        "SELECT group_concat(id || '=' || age) FROM (SELECT id, age FROM patients ORDER BY id)";
    assert_eq!(d.one::<String>(ages), "a=1,b=2,c=3");

    d.exec("BEGIN");
    assert!(d.conn.execute(update, []).is_err());
    d.exec("COMMIT");
    assert_eq!(d.one::<String>(ages), "a=11,b=2,c=3");
    // The kept row was captured: it is what the device exports.
    let peer = Replica::new("peer", SCHEMA);
    peer.track("patients", None);
    d.sync_to(&peer, None);
    assert_eq!(peer.one::<String>(ages), "a=11,b=2,c=3");
}

#[test]
fn checks_of_the_first_version_keep_refusing_and_are_remade_by_the_next_directory_entry() {
    let mut tenant = Tenant::new();
    tenant.say_strict();
    let d = device(&tenant, "dev");
    // The first version's update check of age: typeof in the WHEN, a function in the body.
    d.exec(
        "DROP TRIGGER \"_outpost_patients_strict_upd_2\";
         CREATE TRIGGER \"_outpost_patients_strict_upd_2\" BEFORE UPDATE OF \"age\" ON \"patients\"
           WHEN NEW.\"age\" IS NOT OLD.\"age\" AND NOT typeof(NEW.\"age\") IN ('integer', 'null')
           BEGIN SELECT outpost_strict_refuse('patients', 'age', 'INTEGER', NEW.\"age\"); END;
         INSERT INTO patients(id, age) VALUES ('p1', 1);",
    );
    let legacy =
        "SELECT count(*) FROM sqlite_master WHERE instr(sql, 'outpost_strict_refuse(') > 0";
    assert_eq!(d.one::<i64>(legacy), 1);
    let refused = |d: &Replica| {
        d.conn
            .execute("UPDATE patients SET age = 'old' WHERE id = 'p1'", [])
            .unwrap_err()
            .to_string()
    };
    assert!(
        refused(&d).contains("patients.age takes INTEGER (PostgreSQL bigint): 'old' does not fit")
    );
    // Any entry the directory admits next (here the cloud saying Strict again) remakes them.
    tenant.say_strict();
    tenant.hub.sync(&d);
    assert_eq!(d.one::<i64>(legacy), 0);
    assert!(
        refused(&d).contains("patients.age takes INTEGER (PostgreSQL bigint): 'old' does not fit")
    );
}
