//! The PostgreSQL tenant's foundations against a real PostgreSQL (a database of each test's own
//! on the test cluster, `outpost_testkit::pg`): the workload's tables made with real types, keys
//! and foreign keys and read back from `information_schema`; a later header's column added; a
//! refused header leaving nothing behind; `init --postgres` idempotent and bound to one tenant;
//! missing rights named with their `GRANT`; `run` refusing to serve.

mod common;
use common::*;
use outpost_cloud::postgres::app_tables::{self, AppTableError, TableChange};
use outpost_cloud::postgres::connect;
use outpost_cloud::SchemaError;
use outpost_protocol::batch::{ColumnSchema, ForeignKey, TableSchema};
use outpost_protocol::Strategy;
use outpost_testkit::pg::{self, TestDatabase};
use postgres::Client;

fn col(name: &str, decl: &str, not_null: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: decl.into(),
        strategy: Strategy::Lww,
        not_null,
    }
}

/// `patients` of docs/workload.md, as a batch header carries it.
fn patients() -> TableSchema {
    TableSchema {
        name: "patients".into(),
        columns: vec![
            col("id", "TEXT", true),
            col("given_name", "TEXT", false),
            col("family_name", "TEXT", false),
            col("sex", "TEXT", false),
            col("dob", "TEXT", false),
            col("village", "TEXT", false),
            col("phone", "TEXT", false),
            col("visit_count", "INTEGER", false),
            col("updated_at", "INTEGER", false),
        ],
        primary_key: vec![0],
        foreign_keys: vec![],
        scope: None,
    }
}

/// `visits` of docs/workload.md, with a REAL and a BLOB column to see every type mapped.
fn visits() -> TableSchema {
    TableSchema {
        name: "visits".into(),
        columns: vec![
            col("id", "TEXT", true),
            col("patient_id", "TEXT", false),
            col("clinic", "TEXT", false),
            col("provider", "TEXT", false),
            col("notes", "TEXT", false),
            col("created_at", "INTEGER", false),
            col("weight_kg", "REAL", false),
            col("photo", "BLOB", false),
        ],
        primary_key: vec![0],
        foreign_keys: vec![ForeignKey {
            columns: vec![1],
            parent: "patients".into(),
            parent_columns: vec![],
        }],
        scope: None,
    }
}

/// (column, data type, nullable) of `public.table`, in order, from `information_schema`.
fn columns(c: &mut Client, table: &str) -> Vec<(String, String, bool)> {
    c.query(
        "SELECT column_name::text, data_type::text, is_nullable = 'YES' \
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 \
         ORDER BY ordinal_position",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// The columns of `table`'s constraints of `kind` (`PRIMARY KEY`, `FOREIGN KEY`), with the
/// referenced table and column for foreign keys, from `information_schema`.
fn constraint_columns(c: &mut Client, table: &str, kind: &str) -> Vec<(String, String, String)> {
    c.query(
        "SELECT k.column_name::text, coalesce(u.table_name::text, ''), \
                coalesce(u.column_name::text, '') \
         FROM information_schema.table_constraints t \
         JOIN information_schema.key_column_usage k \
           ON k.constraint_name = t.constraint_name AND k.table_schema = t.table_schema \
         LEFT JOIN information_schema.referential_constraints r \
           ON r.constraint_name = t.constraint_name AND r.constraint_schema = t.table_schema \
         LEFT JOIN information_schema.constraint_column_usage u \
           ON u.constraint_name = r.unique_constraint_name \
              AND u.constraint_schema = r.unique_constraint_schema \
         WHERE t.table_schema = 'public' AND t.table_name = $1 AND t.constraint_type = $2 \
         ORDER BY k.ordinal_position",
        &[&table, &kind],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn app_tables(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn owned(v: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
        .collect()
}

#[test]
fn workload_tables_get_real_types_keys_and_foreign_keys() {
    let Some(db) = pg::database("workload_tables") else {
        return;
    };
    let mut c = db.superuser();
    // The child first: foreign keys are added once every table of the header exists.
    let changes = app_tables::ensure(&mut c, &[visits(), patients()]).unwrap();
    assert_eq!(
        changes,
        vec![
            TableChange::Created("visits".into()),
            TableChange::Created("patients".into())
        ]
    );
    assert_eq!(
        columns(&mut c, "patients"),
        owned(&[
            ("id", "text", false),
            ("given_name", "text", true),
            ("family_name", "text", true),
            ("sex", "text", true),
            ("dob", "text", true),
            ("village", "text", true),
            ("phone", "text", true),
            ("visit_count", "bigint", true),
            ("updated_at", "bigint", true),
        ])
    );
    assert_eq!(
        columns(&mut c, "visits"),
        owned(&[
            ("id", "text", false),
            ("patient_id", "text", true),
            ("clinic", "text", true),
            ("provider", "text", true),
            ("notes", "text", true),
            ("created_at", "bigint", true),
            ("weight_kg", "double precision", true),
            ("photo", "bytea", true),
        ])
    );
    let pk = |c: &mut Client, t| constraint_columns(c, t, "PRIMARY KEY");
    assert_eq!(
        pk(&mut c, "patients"),
        vec![("id".into(), "".into(), "".into())]
    );
    assert_eq!(
        pk(&mut c, "visits"),
        vec![("id".into(), "".into(), "".into())]
    );
    assert_eq!(
        constraint_columns(&mut c, "visits", "FOREIGN KEY"),
        vec![("patient_id".into(), "patients".into(), "id".into())]
    );

    // The database holds them to it: a value of the wrong type, a missing parent and a NULL key
    // are refused by PostgreSQL itself.
    c.execute(
        "INSERT INTO patients(id, given_name, visit_count) VALUES ('p1', 'Amina', 3)",
        &[],
    )
    .unwrap();
    c.execute(
        "INSERT INTO visits(id, patient_id, weight_kg, photo) VALUES ('v1', 'p1', 61.5, '\\x00ff')",
        &[],
    )
    .unwrap();
    let refused = |c: &mut Client, sql: &str| c.batch_execute(sql).unwrap_err().to_string();
    let e = refused(
        &mut c,
        "INSERT INTO patients(id, visit_count) VALUES ('p2', 'many')",
    );
    assert!(e.contains("db error"), "{e}");
    let e = c
        .batch_execute("INSERT INTO visits(id, patient_id) VALUES ('v2', 'nobody')")
        .unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("23503"),
        "foreign key violation: {e}"
    );
    let e = c
        .batch_execute("INSERT INTO patients(id) VALUES (NULL)")
        .unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("23502"),
        "{e}"
    );

    // The same header again changes nothing.
    assert_eq!(
        app_tables::ensure(&mut c, &[patients(), visits()]).unwrap(),
        vec![]
    );
}

#[test]
fn a_second_schema_adds_its_new_column() {
    let Some(db) = pg::database("second_schema") else {
        return;
    };
    let mut c = db.superuser();
    app_tables::ensure(&mut c, &[patients()]).unwrap();
    c.batch_execute("INSERT INTO patients(id, village) VALUES ('p1', 'Mtoni')")
        .unwrap();
    // A later header, from a device whose app added a column, spelled with other case (SQLite
    // matches names without case, so does the cloud).
    let mut later = patients();
    later.name = "Patients".into();
    later.columns.push(col("email", "VARCHAR(80)", true));
    later.columns.push(col("height_cm", "REAL", false));
    assert_eq!(
        app_tables::ensure(&mut c, &[later.clone()]).unwrap(),
        vec![TableChange::Extended(
            "patients".into(),
            vec!["email".into(), "height_cm".into()]
        )]
    );
    let cols = columns(&mut c, "patients");
    assert_eq!(cols.len(), 11);
    // Added without NOT NULL, as on SQLite: the rows already there have no value for it.
    assert_eq!(cols[9], ("email".into(), "text".into(), true));
    assert_eq!(
        cols[10],
        ("height_cm".into(), "double precision".into(), true)
    );
    assert_eq!(app_tables(&mut c), vec!["patients".to_string()]);
    let village: String = c
        .query_one("SELECT village FROM patients WHERE id = 'p1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(village, "Mtoni");
    assert_eq!(app_tables::ensure(&mut c, &[later]).unwrap(), vec![]);

    // Another primary key than the table's is refused, naming both.
    let mut rekeyed = patients();
    rekeyed.primary_key = vec![6];
    let e = app_tables::ensure(&mut c, &[rekeyed]).unwrap_err();
    assert!(matches!(e, AppTableError::KeyMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("(id)") && e.to_string().contains("(phone)"),
        "{e}"
    );
}

#[test]
fn a_refused_schema_leaves_nothing_created() {
    let Some(db) = pg::database("refused_schema") else {
        return;
    };
    let mut c = db.superuser();
    // The SQLite path's refusals, checked before any SQL: a reserved name, a forged type.
    let mut reserved = visits();
    reserved.name = "_outpost_visits".into();
    let e = app_tables::ensure(&mut c, &[patients(), reserved]).unwrap_err();
    assert!(
        matches!(e, AppTableError::Refused(SchemaError::ReservedName { .. })),
        "{e}"
    );
    let mut forged = visits();
    forged.columns[2].decl_type = "TEXT); DROP TABLE patients; --".into();
    let e = app_tables::ensure(&mut c, &[patients(), forged]).unwrap_err();
    assert!(
        matches!(e, AppTableError::Refused(SchemaError::InvalidType { .. })),
        "{e}"
    );
    // PostgreSQL's own limit: a name it would truncate.
    let mut long = visits();
    long.columns[3].name = "p".repeat(64);
    let e = app_tables::ensure(&mut c, &[patients(), long]).unwrap_err();
    assert!(matches!(e, AppTableError::NameTooLong { .. }), "{e}");
    // Refused by PostgreSQL halfway: patients is made, then the foreign key's parent is missing;
    // the transaction takes patients back with it.
    let mut orphan = visits();
    orphan.foreign_keys[0].parent = "households".into();
    let e = app_tables::ensure(&mut c, &[patients(), orphan]).unwrap_err();
    assert!(
        matches!(e, AppTableError::MissingParent { ref parent, .. } if parent == "households"),
        "{e}"
    );
    assert_eq!(app_tables(&mut c), Vec::<String>::new());
}

/// `outpost-cloud init --data DIR --postgres URL`: (ok, stdout, stderr).
fn init_pg(data: &std::path::Path, url: &str) -> (bool, String, String) {
    cli(&["init", "--data", data.to_str().unwrap(), "--postgres", url])
}

fn meta(db: &TestDatabase) -> Vec<(String, String)> {
    db.superuser()
        .query("SELECT name, value FROM outpost.meta ORDER BY name", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn init_postgres_twice_is_idempotent_and_another_tenant_is_refused() {
    let Some(db) = pg::database("init_postgres") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cloud");
    let (ok, out, err) = init_pg(&data, &db.url);
    assert!(ok, "{err}");
    let site = std::fs::read_to_string(data.join("site-id")).unwrap();
    let site = site.trim().to_string();
    assert!(out.contains("schema outpost prepared"), "{out}");
    let stored = meta(&db);
    assert_eq!(
        stored,
        vec![
            ("schema_version".to_string(), "1".to_string()),
            ("site_id".to_string(), site.clone())
        ]
    );
    let (ok, out, err) = init_pg(&data, &db.url);
    assert!(ok, "{err}");
    assert!(out.contains("already this tenant's"), "{out}");
    assert_eq!(meta(&db), stored);
    // The tenant's control stream makes its tables strict on devices, said once.
    {
        let dir = outpost_cloud::datadir::DataDir::open(&data).unwrap();
        let mut mailbox = dir.mailbox().unwrap();
        let directory = mailbox.directory().unwrap();
        assert!(directory.is_strict());
        let said = directory
            .entries_after(&dir.identity.site, 0)
            .iter()
            .filter(|e| e.item == outpost_protocol::control::ControlItem::Strict)
            .count();
        assert_eq!(said, 1);
    }

    // status shows the store: host and database, never the password.
    let target = connect::target(&db.url).unwrap();
    let password = db.url.split(':').nth(2).unwrap().split('@').next().unwrap();
    let d = data.to_str().unwrap();
    let status = cli_ok(&["status", "--data", d]);
    assert!(
        status.contains(&format!(
            "store      postgres host 127.0.0.1 port {}, database {}",
            target.port, db.name
        )),
        "{status}"
    );
    let json = cli_ok(&["status", "--data", d, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["store"]["kind"], "postgres");
    assert_eq!(v["store"]["database"], db.name.as_str());
    for text in [&status, &json] {
        assert!(!text.contains(password), "the password shows: {text}");
    }

    // Another data directory (another tenant's cloud) on the same database is refused, and
    // changes nothing there.
    let other = tmp.path().join("other");
    let (ok, _, err) = init_pg(&other, &db.url);
    assert!(!ok);
    assert!(
        err.contains("belongs to another tenant") && err.contains(&site),
        "{err}"
    );
    assert_eq!(meta(&db), stored);
    // That directory was not bound to the database.
    let status = cli_ok(&["status", "--data", other.to_str().unwrap()]);
    assert!(status.contains("store      sqlite"), "{status}");

    // A SQLite data directory's status says so, and its tenant is not strict.
    let sqlite = init(&tmp.path().join("plain"));
    let dir = outpost_cloud::datadir::DataDir::open(&sqlite).unwrap();
    assert!(!dir.mailbox().unwrap().directory().unwrap().is_strict());
    let status = cli_ok(&["status", "--data", sqlite.to_str().unwrap()]);
    assert!(status.contains("store      sqlite"), "{status}");
}

#[test]
fn a_role_without_the_rights_is_told_which_grant_gives_them() {
    let Some(db) = pg::database("rights") else {
        return;
    };
    let (role, url) = db.role("cloud");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cloud");
    let (ok, _, err) = init_pg(&data, &url);
    assert!(!ok);
    assert!(
        err.contains("lacks the CREATE right on database")
            && err.contains(&format!(
                "GRANT CREATE ON DATABASE \"{}\" TO \"{role}\"",
                db.name
            )),
        "{err}"
    );
    let mut su = db.superuser();
    su.batch_execute(&format!(
        "GRANT CREATE ON DATABASE \"{}\" TO \"{role}\"",
        db.name
    ))
    .unwrap();
    // PostgreSQL 15 gives CREATE on schema public to the database's owner only.
    let (ok, _, err) = init_pg(&data, &url);
    assert!(!ok);
    assert!(
        err.contains(&format!("GRANT CREATE ON SCHEMA \"public\" TO \"{role}\"")),
        "{err}"
    );
    su.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO \"{role}\""))
        .unwrap();
    let (ok, out, err) = init_pg(&data, &url);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("as role \"{role}\"")), "{out}");

    // A table the back office made, not granted to the cloud's role: TRIGGER (for capture) is
    // named, then ownership once columns are to be added.
    su.batch_execute("CREATE TABLE public.patients(id text PRIMARY KEY, given_name text)")
        .unwrap();
    let mut c = Client::connect(&url, postgres::NoTls).unwrap();
    let e = app_tables::ensure(&mut c, &[patients()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lacks the SELECT right") && e.contains("GRANT SELECT ON TABLE"),
        "{e}"
    );
    su.batch_execute(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON public.patients TO \"{role}\""
    ))
    .unwrap();
    let e = app_tables::ensure(&mut c, &[patients()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "GRANT TRIGGER ON TABLE \"public\".\"patients\" TO \"{role}\""
        )),
        "{e}"
    );
    su.batch_execute(&format!("GRANT TRIGGER ON public.patients TO \"{role}\""))
        .unwrap();
    let e = app_tables::ensure(&mut c, &[patients()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not own table") && e.contains("OWNER TO"),
        "{e}"
    );
    su.batch_execute(&format!("ALTER TABLE public.patients OWNER TO \"{role}\""))
        .unwrap();
    let changes = app_tables::ensure(&mut c, &[patients(), visits()]).unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
}

/// `run --postgres URL` (or `OUTPOST_POSTGRES_URL`) for a data directory whose tenant is
/// SQLite is refused: `run` never moves a tenant.
#[test]
fn run_refuses_a_postgres_url_for_a_sqlite_tenant() {
    let Some(db) = pg::database("run_refuses") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let refused =
        |err: &str| err.contains("tenant is SQLite, not in PostgreSQL") && err.contains(&db.name);
    let sqlite = init(&tmp.path().join("plain"));
    let s = sqlite.to_str().unwrap();
    let (ok, out, err) = cli(&["run", "--data", s, "--postgres", &db.url]);
    assert!(!ok && refused(&err), "{err}");
    assert!(!out.contains("protocol "), "it listened: {out}");
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--data",
            s,
            "--listen",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
        ])
        .env("OUTPOST_POSTGRES_URL", &db.url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refused(&err), "{err}");
}
