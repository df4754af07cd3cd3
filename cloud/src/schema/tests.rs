use super::*;
use outpost_protocol::batch::{ColumnSchema, ForeignKey};

fn col(name: &str, decl: &str, strategy: Strategy) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: decl.into(),
        strategy,
        not_null: false,
    }
}

fn visits() -> TableSchema {
    TableSchema {
        scope: None,
        name: "visits".into(),
        columns: vec![
            col("id", "TEXT", Strategy::Lww),
            col("patient_id", "TEXT", Strategy::Lww),
            col("count", "INTEGER", Strategy::Counter),
            col("notes", "VARCHAR(200)", Strategy::Review),
        ],
        primary_key: vec![0],
        foreign_keys: vec![ForeignKey {
            columns: vec![1],
            parent: "patients".into(),
            parent_columns: vec![],
        }],
    }
}

#[test]
fn create_sql_keeps_types_key_and_foreign_keys() {
    assert_eq!(
        create_sql(&visits()),
        "CREATE TABLE IF NOT EXISTS \"visits\" (\"id\" TEXT, \"patient_id\" TEXT, \
         \"count\" INTEGER, \"notes\" TEXT, PRIMARY KEY(\"id\"), \
         FOREIGN KEY(\"patient_id\") REFERENCES \"patients\")"
    );
    assert_eq!(
        track_options(&visits()),
        r#"{"columns":{"count":"counter","notes":"review"}}"#
    );
}

#[test]
fn forged_headers_are_refused_before_any_sql() {
    let mut t = visits();
    t.columns[1].decl_type = "TEXT); DROP TABLE patients; --".into();
    assert!(validate(&t).is_err());
    let mut t = visits();
    t.columns[1].decl_type = "TEXT'".into();
    assert!(validate(&t).is_err());
    for decl in [
        "TEXT AS (abs(-9223372036854775807 - 1))",
        "TEXT CHECK (patient_id <> '')",
        "INTEGER DEFAULT (0)",
        "TEXT REFERENCES patients ON DELETE CASCADE",
    ] {
        let mut t = visits();
        t.columns[1].decl_type = decl.into();
        assert!(
            matches!(validate(&t), Err(SchemaError::InvalidType { .. })),
            "{decl}"
        );
    }
    for name in [
        "_outpost_rows",
        "outpost_quarantine",
        "OUTPOST_CONFLICTS",
        "_Cloud_x",
        "SQLITE_x",
    ] {
        let mut t = visits();
        t.name = name.into();
        assert!(
            matches!(validate(&t), Err(SchemaError::ReservedName { .. })),
            "{name}"
        );
    }
    let mut t = visits();
    t.columns[2].name = "Outpost_count".into();
    assert!(matches!(
        validate(&t),
        Err(SchemaError::ReservedColumnName { .. })
    ));
    let mut t = visits();
    t.foreign_keys[0].parent = "outpost_quarantine".into();
    assert!(matches!(
        validate(&t),
        Err(SchemaError::ReservedName { .. })
    ));
    let mut t = visits();
    t.primary_key = vec![9];
    assert!(validate(&t).is_err());
    let mut t = visits();
    t.columns.push(col("ID", "TEXT", Strategy::Lww));
    assert!(validate(&t).is_err());
    assert!(validate(&visits()).is_ok());
}

#[test]
fn declared_types_reach_ddl_only_as_fixed_spellings() {
    let mut t = visits();
    t.columns[1].decl_type = "varchar ( 36 )".into();
    t.columns[2].decl_type = "BIGINT".into();
    t.columns[3].decl_type = "".into();
    assert_eq!(
        create_sql(&t),
        "CREATE TABLE IF NOT EXISTS \"visits\" (\"id\" TEXT, \"patient_id\" TEXT, \
         \"count\" INT, \"notes\", PRIMARY KEY(\"id\"), \
         FOREIGN KEY(\"patient_id\") REFERENCES \"patients\")"
    );
}
