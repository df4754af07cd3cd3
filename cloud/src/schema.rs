//! Tables learned from batch headers.
//!
//! A batch header describes every table its body touches: columns in order, declared types,
//! `NOT NULL`, the primary key, foreign keys and each column's merge strategy
//! (`outpost_protocol::batch::TableSchema`). The extension has no SQL helper that creates tables
//! from a header (docs/sql-api.md), so this module does, before the batch is applied:
//! - a missing table is created with `CREATE TABLE` (declared types, `NOT NULL`, primary key,
//!   foreign keys), then tracked with `outpost_track` and the header's strategies;
//! - a tracked table missing columns gets `ALTER TABLE ... ADD COLUMN` (without `NOT NULL`, which
//!   SQLite refuses on an added column without a default); the engine notices the new columns;
//! - an existing untracked table is tracked.
//!
//! Schema is data, not SQL: no header text reaches a statement except as a quoted identifier or a
//! bound value. Table and column names are quoted and may not be reserved
//! (`outpost_protocol::batch::names`: `outpost_*`, `_outpost*`, `_cloud*`, `sqlite_*`, any case);
//! a declared type is reduced to one of seven fixed spellings or refused
//! (`outpost_protocol::batch::decl_type`). Those checks ([`validate`]) depend on the header
//! alone, so every replica decides the same: a batch whose header fails them is quarantined by
//! the ingest (`tenant.rs`), not retried.

use outpost_protocol::batch::decl_type::{self, DeclType};
use outpost_protocol::batch::{names, ColumnSchema, TableSchema};
use outpost_protocol::scope::{ScopeColumn, ScopeRule};
use outpost_protocol::Strategy;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::fmt;

/// Why a batch header's tables could not be checked or made in the tenant database. The checks
/// (every variant up to [`SchemaError::KeyMismatch`]) run before anything is written.
#[derive(Debug)]
pub enum SchemaError {
    /// A table name is empty, longer than 128 bytes or holds NUL.
    InvalidName {
        /// What the name names (`table`, `parent table`).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A table name starts with `outpost_`, `_outpost`, `_cloud` or `sqlite_`, in any case (the
    /// engine's, the cloud's and SQLite's own tables).
    ReservedName {
        /// What the name names (`table`, `parent table`).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A column name is empty, longer than 128 bytes or holds NUL.
    InvalidColumnName {
        /// The table.
        table: String,
        /// The column name.
        column: String,
    },
    /// A column name starts with a reserved prefix (as for tables).
    ReservedColumnName {
        /// The table.
        table: String,
        /// The column name.
        column: String,
    },
    /// Two columns have the same name (SQLite compares them without case).
    DuplicateColumn {
        /// The table.
        table: String,
        /// The column name.
        column: String,
    },
    /// A declared type is not one of the accepted type names
    /// (`outpost_protocol::batch::decl_type`).
    InvalidType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The declared type.
        decl: String,
    },
    /// The header gives the table no primary key.
    NoPrimaryKey {
        /// The table.
        table: String,
    },
    /// The primary key names a column the table does not have.
    KeyColumnOutOfRange {
        /// The table.
        table: String,
    },
    /// A foreign key names no columns, or columns the table does not have.
    ForeignKeyColumns {
        /// The table.
        table: String,
        /// The parent table.
        parent: String,
    },
    /// A foreign key names an empty parent column or one holding NUL.
    ForeignKeyParentColumn {
        /// The table.
        table: String,
    },
    /// The table exists with another primary key than the header's: rows could not be matched.
    KeyMismatch {
        /// The table.
        table: String,
        /// Its key columns in the tenant database (lowercase).
        here: Vec<String>,
        /// Its key columns in the header (lowercase).
        header: Vec<String>,
    },
    /// Reading which tables are tracked failed.
    ReadTracked {
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Reading a table's columns failed.
    ReadColumns {
        /// The table.
        table: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// `CREATE TABLE` or tracking the new table failed.
    Create {
        /// The table.
        table: String,
        /// SQLite's (or the engine's) error.
        source: rusqlite::Error,
    },
    /// `ALTER TABLE ... ADD COLUMN` failed.
    AddColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// `outpost_track` refused an existing table.
    Track {
        /// The table.
        table: String,
        /// The engine's error.
        source: rusqlite::Error,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::InvalidName { what, name } => {
                write!(f, "{what} name {name:?}: 1 to 128 characters, no NUL")
            }
            SchemaError::ReservedName { what, name } => {
                write!(
                    f,
                    "{what} name {name:?} is reserved (outpost_*, _outpost*, _cloud*, sqlite_*)"
                )
            }
            SchemaError::ReservedColumnName { table, column } => write!(
                f,
                "table {table:?}: column name {column:?} is reserved (outpost_*, _outpost*, \
                 _cloud*, sqlite_*)"
            ),
            SchemaError::InvalidColumnName { table, column } => {
                write!(f, "table {table:?}: column name {column:?} is not valid")
            }
            SchemaError::DuplicateColumn { table, column } => {
                write!(f, "table {table:?}: column {column:?} appears twice")
            }
            SchemaError::InvalidType {
                table,
                column,
                decl,
            } => write!(
                f,
                "table {table:?} column {column:?}: declared type {decl:?} is not an accepted \
                 type name (INTEGER, INT, TEXT, VARCHAR(n), BLOB, REAL, DOUBLE, NUMERIC, \
                 DECIMAL(p,s), BOOLEAN, DATE, DATETIME, ...: docs/security.md)"
            ),
            SchemaError::NoPrimaryKey { table } => {
                write!(f, "table {table:?} has no primary key in the batch header")
            }
            SchemaError::KeyColumnOutOfRange { table } => {
                write!(
                    f,
                    "table {table:?}: primary key names a column past the last"
                )
            }
            SchemaError::ForeignKeyColumns { table, parent } => write!(
                f,
                "table {table:?}: a foreign key to {parent:?} names no or unknown columns"
            ),
            SchemaError::ForeignKeyParentColumn { table } => {
                write!(
                    f,
                    "table {table:?}: a foreign key names an invalid parent column"
                )
            }
            SchemaError::KeyMismatch {
                table,
                here,
                header,
            } => write!(
                f,
                "table {table:?} has primary key ({}) here but ({}) in the batch header: rows \
                 cannot be matched; rename or migrate one of them (the batch is kept)",
                here.join(", "),
                header.join(", ")
            ),
            SchemaError::ReadTracked { .. } => {
                f.write_str("reading the tracked tables of the tenant database")
            }
            SchemaError::ReadColumns { table, .. } => {
                write!(f, "reading the columns of table {table:?}")
            }
            SchemaError::Create { table, .. } => {
                write!(f, "creating table {table:?} from a batch header")
            }
            SchemaError::AddColumn { table, column, .. } => {
                write!(f, "adding column {column:?} to table {table:?}")
            }
            SchemaError::Track { table, .. } => write!(f, "tracking table {table:?}"),
        }
    }
}

impl std::error::Error for SchemaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SchemaError::ReadTracked { source }
            | SchemaError::ReadColumns { source, .. }
            | SchemaError::Create { source, .. }
            | SchemaError::AddColumn { source, .. }
            | SchemaError::Track { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Double-quotes an identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Refuses names that are empty, too long, hold NUL, or are reserved for SQLite's, Outpost's or
/// the cloud's own tables.
pub fn check_name(what: &'static str, name: &str) -> Result<(), SchemaError> {
    if name.is_empty() || name.len() > 128 || name.contains('\0') {
        return Err(SchemaError::InvalidName {
            what,
            name: name.to_string(),
        });
    }
    if names::is_reserved(name) {
        return Err(SchemaError::ReservedName {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The declared type reduced to the closed set, or why not.
pub fn decl_type(table: &str, column: &ColumnSchema) -> Result<DeclType, SchemaError> {
    decl_type::reduce(&column.decl_type).ok_or_else(|| SchemaError::InvalidType {
        table: table.to_string(),
        column: column.name.clone(),
        decl: column.decl_type.clone(),
    })
}

/// Checks every table of a header (see [`validate`]): what depends on the header alone.
pub fn validate_all(tables: &[TableSchema]) -> Result<(), SchemaError> {
    tables.iter().try_for_each(validate)
}

/// Checks a header's table description before any of it reaches SQL.
pub fn validate(t: &TableSchema) -> Result<(), SchemaError> {
    check_name("table", &t.name)?;
    let table = || t.name.clone();
    let mut seen = BTreeSet::new();
    for c in &t.columns {
        if c.name.is_empty() || c.name.len() > 128 || c.name.contains('\0') {
            return Err(SchemaError::InvalidColumnName {
                table: table(),
                column: c.name.clone(),
            });
        }
        if names::is_reserved(&c.name) {
            return Err(SchemaError::ReservedColumnName {
                table: table(),
                column: c.name.clone(),
            });
        }
        if !seen.insert(c.name.to_ascii_lowercase()) {
            return Err(SchemaError::DuplicateColumn {
                table: table(),
                column: c.name.clone(),
            });
        }
        decl_type(&t.name, c)?;
    }
    if t.primary_key.is_empty() {
        return Err(SchemaError::NoPrimaryKey { table: table() });
    }
    let n = t.columns.len() as u16;
    if t.primary_key.iter().any(|&i| i >= n) {
        return Err(SchemaError::KeyColumnOutOfRange { table: table() });
    }
    for fk in &t.foreign_keys {
        check_name("parent table", &fk.parent)?;
        if fk.columns.is_empty() || fk.columns.iter().any(|&i| i >= n) {
            return Err(SchemaError::ForeignKeyColumns {
                table: table(),
                parent: fk.parent.clone(),
            });
        }
        if fk
            .parent_columns
            .iter()
            .any(|c| c.is_empty() || c.contains('\0'))
        {
            return Err(SchemaError::ForeignKeyParentColumn { table: table() });
        }
    }
    Ok(())
}

/// The reduced type's fixed spelling (the column was validated).
fn reduced(c: &ColumnSchema) -> &'static str {
    decl_type::reduce(&c.decl_type).map_or("", DeclType::sql)
}

/// The `CREATE TABLE` statement for `t` (already validated).
pub fn create_sql(t: &TableSchema) -> String {
    let mut parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let mut s = quote(&c.name);
            let decl = reduced(c);
            if !decl.is_empty() {
                s.push(' ');
                s.push_str(decl);
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    let cols = |idx: &[u16]| {
        idx.iter()
            .map(|&i| quote(&t.columns[i as usize].name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    parts.push(format!("PRIMARY KEY({})", cols(&t.primary_key)));
    for fk in &t.foreign_keys {
        let parent_cols = if fk.parent_columns.is_empty() {
            String::new()
        } else {
            format!(
                "({})",
                fk.parent_columns
                    .iter()
                    .map(|c| quote(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        parts.push(format!(
            "FOREIGN KEY({}) REFERENCES {}{parent_cols}",
            cols(&fk.columns),
            quote(&fk.parent)
        ));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote(&t.name),
        parts.join(", ")
    )
}

/// The `outpost_track` options that reproduce the header's strategies and scope rule.
pub fn track_options(t: &TableSchema) -> String {
    let value_cols: Vec<_> = t.value_columns().map(|i| &t.columns[i as usize]).collect();
    let all_row_lww =
        !value_cols.is_empty() && value_cols.iter().all(|c| c.strategy == Strategy::RowLww);
    let mut opts = serde_json::Map::new();
    let mut columns = serde_json::Map::new();
    if all_row_lww {
        opts.insert("strategy".into(), "row_lww".into());
    } else {
        for c in &value_cols {
            if c.strategy != Strategy::Lww {
                columns.insert(c.name.clone(), c.strategy.name().into());
            }
        }
    }
    if !columns.is_empty() {
        opts.insert("columns".into(), columns.into());
    }
    match t.scope_rule() {
        Some(ScopeRule::Column(c)) => {
            opts.insert("scope".into(), c.into());
        }
        Some(ScopeRule::Via(c)) => {
            opts.insert("scope".into(), serde_json::json!({ "via": c }));
        }
        None => {}
    }
    if let [k] = t.primary_key.as_slice() {
        if decl_type::reduce(&t.columns[*k as usize].decl_type) == Some(DeclType::Integer) {
            // The origin tracked it, so its keys are assigned globally (it opted in).
            opts.insert("allow_integer_pk".into(), true.into());
        }
    }
    serde_json::Value::Object(opts).to_string()
}

/// Names of the tables `outpost_track` has registered in `conn`.
pub fn tracked_tables(conn: &Connection) -> Result<Vec<String>, SchemaError> {
    let read = || -> rusqlite::Result<Vec<String>> {
        let has: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = '_outpost_tables'",
            [],
            |r| r.get(0),
        )?;
        if has == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare("SELECT name FROM _outpost_tables ORDER BY name")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    };
    read().map_err(|source| SchemaError::ReadTracked { source })
}

/// Column names of `table`, in order (empty when it does not exist).
pub fn columns_of(conn: &Connection, table: &str) -> Result<Vec<String>, SchemaError> {
    column_names(
        conn,
        "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
        table,
    )
}

/// The primary-key column names of `table` (lowercased, in key order; empty when it does not
/// exist).
pub fn primary_key_of(conn: &Connection, table: &str) -> Result<Vec<String>, SchemaError> {
    column_names(
        conn,
        "SELECT lower(name) FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk",
        table,
    )
}

/// The names `sql` (a `pragma_table_info` query of `?1`) lists for `table`.
fn column_names(conn: &Connection, sql: &str, table: &str) -> Result<Vec<String>, SchemaError> {
    let read = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(sql)?;
        let names = stmt
            .query_map([table], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    };
    read().map_err(|source| SchemaError::ReadColumns {
        table: table.to_string(),
        source,
    })
}

/// What [`ensure`] did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created and tracked.
    Created(String),
    /// Columns added.
    Altered(String, Vec<String>),
    /// An existing table was tracked.
    Tracked(String),
}

/// Makes the tenant database hold every table of `tables` with at least their columns, tracked.
/// Must run outside a transaction (`outpost_track` owns its own). Everything is validated before
/// anything is written; each statement is atomic on its own and idempotent, so an interrupted
/// run is completed by the next.
pub fn ensure(conn: &Connection, tables: &[TableSchema]) -> Result<Vec<Change>, SchemaError> {
    validate_all(tables)?;
    for t in tables {
        let key = primary_key_of(conn, &t.name)?;
        let wanted: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| t.columns[i as usize].name.to_ascii_lowercase())
            .collect();
        if !key.is_empty() && key != wanted {
            return Err(SchemaError::KeyMismatch {
                table: t.name.clone(),
                here: key,
                header: wanted,
            });
        }
    }
    let tracked: BTreeSet<String> = tracked_tables(conn)?.into_iter().collect();
    let mut changes = Vec::new();
    for t in via_parents_first(tables) {
        let existing = columns_of(conn, &t.name)?;
        if existing.is_empty() {
            conn.execute(&create_sql(t), [])
                .and_then(|_| track(conn, t))
                .map_err(|source| SchemaError::Create {
                    table: t.name.clone(),
                    source,
                })?;
            changes.push(Change::Created(t.name.clone()));
            continue;
        }
        let have: BTreeSet<String> = existing.iter().map(|c| c.to_ascii_lowercase()).collect();
        let missing: Vec<_> = t
            .columns
            .iter()
            .filter(|c| !have.contains(&c.name.to_ascii_lowercase()))
            .collect();
        for c in &missing {
            conn.execute(
                &format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    quote(&t.name),
                    quote(&c.name),
                    reduced(c)
                ),
                [],
            )
            .map_err(|source| SchemaError::AddColumn {
                table: t.name.clone(),
                column: c.name.clone(),
                source,
            })?;
        }
        let new_strategy = missing.iter().any(|c| c.strategy != Strategy::Lww);
        if !tracked.contains(&t.name) || new_strategy {
            track(conn, t).map_err(|source| SchemaError::Track {
                table: t.name.clone(),
                source,
            })?;
            if !tracked.contains(&t.name) {
                changes.push(Change::Tracked(t.name.clone()));
            }
        }
        if !missing.is_empty() {
            changes.push(Change::Altered(
                t.name.clone(),
                missing.iter().map(|c| c.name.clone()).collect(),
            ));
        }
    }
    Ok(changes)
}

/// `tables` with every table scoped `via` a parent in the same header after that parent: the
/// engine tracks a `via` table only once its parent is tracked with a scope. (Other foreign keys
/// need no order: SQLite checks them when rows are written, not when tables are made.)
fn via_parents_first(tables: &[TableSchema]) -> Vec<&TableSchema> {
    let via_parent = |t: &TableSchema| match t.scope {
        Some(ScopeColumn::Via(c)) => t
            .foreign_keys
            .iter()
            .find(|fk| fk.columns == [c])
            .map(|fk| fk.parent.to_ascii_lowercase()),
        _ => None,
    };
    let mut left: Vec<&TableSchema> = tables.iter().collect();
    let mut out: Vec<&TableSchema> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let waits = |t: &TableSchema, left: &[&TableSchema]| {
            via_parent(t).is_some_and(|p| {
                left.iter()
                    .any(|o| !std::ptr::eq(*o, t) && o.name.eq_ignore_ascii_case(&p))
            })
        };
        // A cycle cannot be tracked anyway: take the rest in header order and let the engine
        // say why.
        let next = left.iter().position(|t| !waits(t, &left)).unwrap_or(0);
        out.push(left.remove(next));
    }
    out
}

fn track(conn: &Connection, t: &TableSchema) -> rusqlite::Result<()> {
    conn.query_row(
        "SELECT outpost_track(?1, ?2)",
        [&t.name, &track_options(t)],
        |r| r.get::<_, i64>(0),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
