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
         \"count\" INTEGER, \"notes\" VARCHAR(200), PRIMARY KEY(\"id\"), \
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
    let mut t = visits();
    t.name = "_outpost_rows".into();
    assert!(validate(&t).is_err());
    let mut t = visits();
    t.primary_key = vec![9];
    assert!(validate(&t).is_err());
    let mut t = visits();
    t.columns.push(col("ID", "TEXT", Strategy::Lww));
    assert!(validate(&t).is_err());
    assert!(validate(&visits()).is_ok());
}
