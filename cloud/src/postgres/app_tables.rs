//! The tenant's app tables in PostgreSQL, made and extended from the tables batch headers carry
//! (`outpost_protocol::batch::TableSchema`), as `schema.rs` does for the SQLite tenant:
//! - a missing table is created with real column types ([`pg_type`]: TEXT → `text`, INTEGER →
//!   `bigint`, REAL → `double precision`, BLOB → `bytea`, ...), `NOT NULL` and the primary key
//!   as declared, then its foreign keys are added once every table of the header exists (so a
//!   header may list a child before its parent, or tables referring to each other);
//! - an existing table missing columns gets `ALTER TABLE ... ADD COLUMN` (without `NOT NULL`, as
//!   on SQLite: rows already there have no value for it).
//!
//! The same refusals as the SQLite path come first (`schema::validate_all`: reserved and invalid
//! names, unknown types, missing keys), then PostgreSQL's own limit: a name longer than 63 bytes
//! would be silently truncated (and two names could become one), so it is refused. Everything
//! runs in one transaction, serialised between processes by an advisory lock: a refusal or a
//! failure leaves the database as it was.
//!
//! Every table made or extended, and every existing table a header names for the first time,
//! gets capture of back-office writes installed in the same transaction ([`super::capture`]),
//! and, if it is a REST table, the WatermelonDB API's change log ([`super::rest_log`]).
//!
//! Names are matched as SQLite matches them, without ASCII case: a header naming `Patients`
//! extends an existing `patients`. They are always quoted, so a table keeps the spelling of the
//! header that made it. Foreign keys are `DEFERRABLE INITIALLY IMMEDIATE`: a back-office write is
//! checked per statement, and an apply can defer the checks to its commit, as the engine's apply
//! does on SQLite (`PRAGMA defer_foreign_keys`).

use super::capture::{self, CaptureError};
use super::rest_log::{self, RestLogError};
use super::rights::{self, RightsError};
use crate::schema::{self, quote, SchemaError};
use ::postgres::{Client, Transaction};
use outpost_protocol::batch::decl_type::{self, DeclType};
use outpost_protocol::batch::{ColumnSchema, TableSchema};
use std::fmt;

/// The schema the app's tables live in.
pub const SCHEMA: &str = "public";

/// PostgreSQL's longest identifier, in bytes (`NAMEDATALEN - 1`); longer ones are truncated.
pub const MAX_NAME_BYTES: usize = 63;

/// The advisory lock serialising schema changes of the app tables between cloud processes.
const LOCK_KEY: i64 = 0x6f75_7470_6f73_7401;

/// What [`ensure`] did to one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// Created (with its foreign keys).
    Created(String),
    /// These columns were added.
    Extended(String, Vec<String>),
}

/// Why a header's tables could not be made or extended; nothing was changed.
#[derive(Debug)]
pub enum AppTableError {
    /// The header fails the checks every tenant makes (`schema::validate`).
    Refused(SchemaError),
    /// A name is longer than PostgreSQL keeps.
    NameTooLong {
        /// The table.
        table: String,
        /// The name (the table's, a column's or a parent's).
        name: String,
    },
    /// The table exists here with another primary key than the header's.
    KeyMismatch {
        /// The table.
        table: String,
        /// Its key columns here (lowercase; empty: it has none).
        here: Vec<String>,
        /// Its key columns in the header (lowercase).
        header: Vec<String>,
    },
    /// Several tables here match the name without case.
    Ambiguous {
        /// The name in the header.
        table: String,
        /// The tables here.
        here: Vec<String>,
    },
    /// A foreign key names a table that neither exists nor is in the header.
    MissingParent {
        /// The table.
        table: String,
        /// The parent it names.
        parent: String,
    },
    /// The role lacks a right the change needs.
    Rights(RightsError),
    /// Capturing the table's back-office writes could not be installed.
    Capture(CaptureError),
    /// The REST change log's triggers could not be installed.
    RestLog(RestLogError),
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
}

impl fmt::Display for AppTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppTableError::Refused(e) => e.fmt(f),
            AppTableError::NameTooLong { table, name } => write!(
                f,
                "table {table:?}: name {name:?} is longer than PostgreSQL's \
                 {MAX_NAME_BYTES} bytes; rename it on the devices"
            ),
            AppTableError::KeyMismatch {
                table,
                here,
                header,
            } => write!(
                f,
                "table {table:?} has primary key ({}) in PostgreSQL but ({}) in the batch \
                 header: rows cannot be matched; rename or migrate one of them",
                here.join(", "),
                header.join(", ")
            ),
            AppTableError::Ambiguous { table, here } => write!(
                f,
                "table {table:?} matches several tables in schema {SCHEMA} ({}): names are \
                 matched without case, as on SQLite; rename all but one",
                here.join(", ")
            ),
            AppTableError::MissingParent { table, parent } => write!(
                f,
                "table {table:?} has a foreign key to {parent:?}, which neither exists nor \
                 comes in the same batch header"
            ),
            AppTableError::Rights(e) => e.fmt(f),
            AppTableError::Capture(e) => e.fmt(f),
            AppTableError::RestLog(e) => e.fmt(f),
            AppTableError::Sql { doing, .. } => f.write_str(doing),
        }
    }
}

impl std::error::Error for AppTableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: these say what failed themselves.
            AppTableError::Refused(e) => e.source(),
            AppTableError::Rights(e) => e.source(),
            AppTableError::Capture(e) => e.source(),
            AppTableError::RestLog(e) => e.source(),
            AppTableError::Sql { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<CaptureError> for AppTableError {
    fn from(e: CaptureError) -> Self {
        AppTableError::Capture(e)
    }
}

impl From<RestLogError> for AppTableError {
    fn from(e: RestLogError) -> Self {
        AppTableError::RestLog(e)
    }
}

impl From<RightsError> for AppTableError {
    fn from(e: RightsError) -> Self {
        AppTableError::Rights(e)
    }
}

fn sql(doing: String) -> impl FnOnce(::postgres::Error) -> AppTableError {
    move |source| AppTableError::Sql { doing, source }
}

/// The PostgreSQL type of a column whose declared type reduces to `t`. Columns without a
/// declared type take anything on SQLite: bytes are what holds anything here.
pub fn pg_type(t: DeclType) -> &'static str {
    match t {
        DeclType::Integer | DeclType::Int => "bigint",
        DeclType::Text => "text",
        DeclType::Real => "double precision",
        DeclType::Numeric => "numeric",
        DeclType::Blob | DeclType::None => "bytea",
    }
}

/// The column's type (it was validated).
pub(crate) fn column_type(c: &ColumnSchema) -> &'static str {
    pg_type(decl_type::reduce(&c.decl_type).unwrap_or(DeclType::None))
}

/// `schema.table`, quoted.
fn qualified(table: &str) -> String {
    format!("{}.{}", quote(SCHEMA), quote(table))
}

/// The `CREATE TABLE` statement for `t` (validated), without its foreign keys.
pub fn create_sql(t: &TableSchema) -> String {
    let mut parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let null = if c.not_null { " NOT NULL" } else { "" };
            format!("{} {}{null}", quote(&c.name), column_type(c))
        })
        .collect();
    let key: Vec<String> = t
        .primary_key
        .iter()
        .map(|&i| quote(&t.columns[i as usize].name))
        .collect();
    parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    format!("CREATE TABLE {} ({})", qualified(&t.name), parts.join(", "))
}

/// Refuses names PostgreSQL would truncate.
fn check_lengths(t: &TableSchema) -> Result<(), AppTableError> {
    let names = std::iter::once(t.name.as_str())
        .chain(t.columns.iter().map(|c| c.name.as_str()))
        .chain(t.foreign_keys.iter().flat_map(|fk| {
            std::iter::once(fk.parent.as_str()).chain(fk.parent_columns.iter().map(String::as_str))
        }));
    for name in names {
        if name.len() > MAX_NAME_BYTES {
            return Err(AppTableError::NameTooLong {
                table: t.name.clone(),
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// A table of the app schema as it is now.
struct Existing {
    oid: u32,
    name: String,
}

/// The table of the app schema named `name` without ASCII case, if any.
fn find(tx: &mut Transaction<'_>, name: &str) -> Result<Option<Existing>, AppTableError> {
    let rows = tx
        .query(
            "SELECT c.oid, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND lower(c.relname) = lower($2) AND c.relkind IN ('r', 'p')",
            &[&SCHEMA, &name],
        )
        .map_err(sql(format!("looking for table {name:?}")))?;
    let mut found: Vec<Existing> = rows
        .iter()
        .map(|r| Existing {
            oid: r.get(0),
            name: r.get(1),
        })
        .filter(|e| e.name.eq_ignore_ascii_case(name))
        .collect();
    if found.len() > 1 {
        // Two spellings made outside the cloud: the exact one is the header's.
        if let Some(i) = found.iter().position(|e| e.name == name) {
            return Ok(Some(found.swap_remove(i)));
        }
        return Err(AppTableError::Ambiguous {
            table: name.to_string(),
            here: found.into_iter().map(|e| e.name).collect(),
        });
    }
    Ok(found.pop())
}

/// The columns of table `oid`, in order.
fn columns(tx: &mut Transaction<'_>, t: &Existing) -> Result<Vec<String>, AppTableError> {
    let rows = tx
        .query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&t.oid],
        )
        .map_err(sql(format!("reading the columns of table {:?}", t.name)))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The primary-key columns of table `oid`, lowercase, in key order (empty: none).
fn primary_key(tx: &mut Transaction<'_>, t: &Existing) -> Result<Vec<String>, AppTableError> {
    let rows = tx
        .query(
            "SELECT lower(a.attname::text) FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&t.oid],
        )
        .map_err(sql(format!(
            "reading the primary key of table {:?}",
            t.name
        )))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Makes the app schema hold every table of `tables` with at least their columns, in one
/// transaction. Returns what changed (nothing for tables that were already whole).
pub fn ensure(
    client: &mut Client,
    tables: &[TableSchema],
) -> Result<Vec<TableChange>, AppTableError> {
    schema::validate_all(tables).map_err(AppTableError::Refused)?;
    tables.iter().try_for_each(check_lengths)?;
    let mut tx = client
        .transaction()
        .map_err(sql("starting a transaction".into()))?;
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({LOCK_KEY})"))
        .map_err(sql("waiting for the app tables' lock".into()))?;
    let mut changes = Vec::new();
    let mut created: Vec<&TableSchema> = Vec::new();
    // Tables whose capture is (re)installed: made, extended, or not captured yet (made by a
    // back office before a batch named them).
    let captured = capture::captured(&mut tx)?;
    let mut to_capture: Vec<(String, TableSchema)> = Vec::new();
    for t in tables {
        let Some(here) = find(&mut tx, &t.name)? else {
            rights::check_schema(&mut tx, SCHEMA)?;
            tx.batch_execute(&create_sql(t))
                .map_err(sql(format!("creating table {:?}", t.name)))?;
            changes.push(TableChange::Created(t.name.clone()));
            created.push(t);
            to_capture.push((t.name.clone(), t.clone()));
            continue;
        };
        let key = primary_key(&mut tx, &here)?;
        let wanted: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| t.columns[i as usize].name.to_ascii_lowercase())
            .collect();
        if key != wanted {
            return Err(AppTableError::KeyMismatch {
                table: here.name,
                here: key,
                header: wanted,
            });
        }
        let have = columns(&mut tx, &here)?;
        let missing: Vec<&ColumnSchema> = t
            .columns
            .iter()
            .filter(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(&c.name)))
            .collect();
        // Installing capture (ENABLE ALWAYS TRIGGER) needs the owner, as adding columns does.
        let install = !missing.is_empty() || !captured.iter().any(|c| c.def.name == here.name);
        rights::check_table(&mut tx, SCHEMA, &here.name, install)?;
        for c in &missing {
            tx.batch_execute(&format!(
                "ALTER TABLE {} ADD COLUMN {} {}",
                qualified(&here.name),
                quote(&c.name),
                column_type(c)
            ))
            .map_err(sql(format!(
                "adding column {:?} to table {:?}",
                c.name, here.name
            )))?;
        }
        if install {
            to_capture.push((here.name.clone(), t.clone()));
        }
        if !missing.is_empty() {
            changes.push(TableChange::Extended(
                here.name,
                missing.iter().map(|c| c.name.clone()).collect(),
            ));
        }
    }
    for t in created {
        for fk in &t.foreign_keys {
            add_foreign_key(&mut tx, t, fk)?;
        }
    }
    if !to_capture.is_empty() {
        capture::install(&mut tx, &to_capture)?;
        let names: Vec<String> = to_capture.iter().map(|(n, _)| n.clone()).collect();
        rest_log::install(&mut tx, &names)?;
    }
    tx.commit()
        .map_err(sql("committing the app tables' changes".into()))?;
    Ok(changes)
}

fn add_foreign_key(
    tx: &mut Transaction<'_>,
    t: &TableSchema,
    fk: &outpost_protocol::batch::ForeignKey,
) -> Result<(), AppTableError> {
    let parent = find(tx, &fk.parent)?.ok_or_else(|| AppTableError::MissingParent {
        table: t.name.clone(),
        parent: fk.parent.clone(),
    })?;
    let columns: Vec<String> = fk
        .columns
        .iter()
        .map(|&i| quote(&t.columns[i as usize].name))
        .collect();
    // No parent columns: the parent's primary key, as in SQLite. Named ones are matched without
    // case to the parent's spelling.
    let parent_columns = if fk.parent_columns.is_empty() {
        String::new()
    } else {
        let have = self::columns(tx, &parent)?;
        let named: Vec<String> = fk
            .parent_columns
            .iter()
            .map(|c| {
                let c = have.iter().find(|h| h.eq_ignore_ascii_case(c)).unwrap_or(c);
                quote(c)
            })
            .collect();
        format!(" ({})", named.join(", "))
    };
    tx.batch_execute(&format!(
        "ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {}{parent_columns} \
         DEFERRABLE INITIALLY IMMEDIATE",
        qualified(&t.name),
        columns.join(", "),
        qualified(&parent.name)
    ))
    .map_err(sql(format!(
        "adding the foreign key of table {:?} to {:?}",
        t.name, parent.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::batch::ForeignKey;
    use outpost_protocol::Strategy;

    fn col(name: &str, decl: &str, not_null: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            decl_type: decl.into(),
            strategy: Strategy::Lww,
            not_null,
        }
    }

    #[test]
    fn create_sql_has_real_types_not_null_and_the_key_quoted() {
        let t = TableSchema {
            name: "Odd \"name\"".into(),
            columns: vec![
                col("id", "VARCHAR(36)", true),
                col("n", "SMALLINT", false),
                col("w", "FLOAT", false),
                col("ok", "BOOLEAN", false),
                col("raw", "", false),
                col("doc", "BLOB", true),
            ],
            primary_key: vec![0, 1],
            foreign_keys: vec![ForeignKey {
                columns: vec![0],
                parent: "p".into(),
                parent_columns: vec![],
            }],
            scope: None,
        };
        assert_eq!(
            create_sql(&t),
            "CREATE TABLE \"public\".\"Odd \"\"name\"\"\" (\"id\" text NOT NULL, \"n\" bigint, \
             \"w\" double precision, \"ok\" numeric, \"raw\" bytea, \"doc\" bytea NOT NULL, \
             PRIMARY KEY (\"id\", \"n\"))"
        );
    }

    #[test]
    fn names_postgresql_would_truncate_are_refused() {
        let mut t = TableSchema {
            name: "t".repeat(MAX_NAME_BYTES),
            columns: vec![col("id", "TEXT", true)],
            primary_key: vec![0],
            foreign_keys: vec![],
            scope: None,
        };
        assert!(check_lengths(&t).is_ok());
        t.columns[0].name = "c".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            check_lengths(&t),
            Err(AppTableError::NameTooLong { name, .. }) if name.len() == 64
        ));
    }
}
