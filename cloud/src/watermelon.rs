//! The WatermelonDB sync protocol over the tenant database (the HTTP side is in `https.rs`).
//!
//! **Pull** (`GET /watermelon/sync?last_pulled_at=T`): in one read transaction, every record of
//! every REST table (tracked, primary key one column `id`) whose logged change time is above `T`
//! (`changelog.rs`): `created` if it was created after `T`, `updated` if it existed before,
//! `deleted` (ids only) if it is gone. With `T` missing, `null` or 0 (first pull) every live record
//! is `created` and nothing is `deleted`. The answer's `timestamp` is the highest change time the
//! snapshot saw, so nothing committed later can be missed and nothing returned is after it.
//!
//! **Push** (`POST /watermelon/sync?last_pulled_at=T`, body = the `changes` object, or an object
//! holding it under `"changes"`): all or nothing, in one `BEGIN IMMEDIATE` transaction:
//! - everything is validated before any write: known REST tables, records are objects with a
//!   string `id`, only known columns, JSON scalars as values (`_status` and `_changed`, WatermelonDB's
//!   client-side columns, are ignored);
//! - a pushed record (created, updated or deleted) whose change time on the server is above `T` is a
//!   conflict: nothing is written and the answer is HTTP 409, so the client pulls first;
//! - `created` and `updated` write the given columns, inserting the record if it does not exist
//!   and updating it if it does (a retried push after a lost answer is therefore harmless);
//!   `deleted` of a record that does not exist is ignored;
//! - a constraint failure (NOT NULL, CHECK, a foreign key at commit) rolls everything back.
//!
//! The writes are ordinary local writes on the tenant database: the engine's triggers record them
//! as the cloud's changes, which are exported to the mailbox for hubs and devices.

use crate::changelog::{self, ChangelogError};
use crate::schema::{quote, SchemaError};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::fmt;

/// Why the server could not serve a pull or push (HTTP 500; nothing was written).
#[derive(Debug)]
pub enum RestError {
    /// The REST change log or its triggers failed.
    Changelog(ChangelogError),
    /// Reading a REST table's columns failed.
    Schema(SchemaError),
    /// SQLite failed on the tenant database.
    Sqlite(rusqlite::Error),
}

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestError::Changelog(e) => e.fmt(f),
            RestError::Schema(e) => e.fmt(f),
            RestError::Sqlite(_) => f.write_str("the tenant database failed"),
        }
    }
}

impl std::error::Error for RestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: these say what failed themselves.
            RestError::Changelog(e) => e.source(),
            RestError::Schema(e) => e.source(),
            RestError::Sqlite(e) => Some(e),
        }
    }
}

impl From<ChangelogError> for RestError {
    fn from(e: ChangelogError) -> Self {
        RestError::Changelog(e)
    }
}

impl From<SchemaError> for RestError {
    fn from(e: SchemaError) -> Self {
        RestError::Schema(e)
    }
}

impl From<rusqlite::Error> for RestError {
    fn from(e: rusqlite::Error) -> Self {
        RestError::Sqlite(e)
    }
}

/// What is wrong with a push body (found before anything is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidPush {
    /// The body is not a JSON object.
    NotAnObject,
    /// A table the REST API does not serve.
    UnknownTable {
        /// The table.
        table: String,
    },
    /// A table's value is not an object.
    NotATable {
        /// The table.
        table: String,
    },
    /// A table's object has a key other than `created`, `updated` and `deleted`.
    UnknownKey {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// `created`, `updated` or `deleted` is not an array.
    NotAnArray {
        /// The table.
        table: String,
        /// Which list.
        list: &'static str,
    },
    /// A created or updated record is not an object.
    RecordNotAnObject {
        /// The table.
        table: String,
        /// Which list.
        list: &'static str,
    },
    /// A created or updated record has no non-empty string `id`.
    NoId {
        /// The table.
        table: String,
        /// Which list.
        list: &'static str,
    },
    /// A record names a column the table does not have.
    UnknownColumn {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The column.
        column: String,
    },
    /// A record's value is an array or an object.
    NotAScalar {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The column.
        column: String,
    },
    /// `deleted` holds something other than non-empty strings.
    DeletedNotIds {
        /// The table.
        table: String,
    },
}

impl fmt::Display for InvalidPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidPush::NotAnObject => f.write_str("the body must be a JSON object of tables"),
            InvalidPush::UnknownTable { table } => write!(
                f,
                "unknown table {table:?} (the REST API serves tracked tables whose primary key \
                 is `id`)"
            ),
            InvalidPush::NotATable { table } => {
                write!(f, "{table}: expected {{created, updated, deleted}}")
            }
            InvalidPush::UnknownKey { table, key } => write!(f, "{table}: unknown key {key:?}"),
            InvalidPush::NotAnArray { table, list } => write!(f, "{table}.{list} must be an array"),
            InvalidPush::RecordNotAnObject { table, list } => {
                write!(f, "{table}.{list}: records are objects")
            }
            InvalidPush::NoId { table, list } => {
                write!(f, "{table}.{list}: a record without a string `id`")
            }
            InvalidPush::UnknownColumn { table, id, column } => {
                write!(f, "{table}/{id}: unknown column {column:?}")
            }
            InvalidPush::NotAScalar { table, id, column } => write!(
                f,
                "{table}/{id}: column {column:?} holds an array or object; values are strings, \
                 numbers, booleans or null"
            ),
            InvalidPush::DeletedNotIds { table } => {
                write!(f, "{table}.deleted holds ids (strings)")
            }
        }
    }
}

/// Why a push was refused. Nothing was written in any case.
#[derive(Debug)]
pub enum PushError {
    /// The request is malformed or names what the tables do not have (HTTP 400).
    Invalid(InvalidPush),
    /// Writing a record failed on a constraint (NOT NULL, CHECK, UNIQUE, ...) (HTTP 400).
    Rejected {
        /// The write, as `table/id` or `deleting table/id`.
        write: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The commit failed, usually on a deferred foreign key (HTTP 400).
    Commit(rusqlite::Error),
    /// A pushed record changed on the server after `last_pulled_at` (HTTP 409).
    Conflict {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// Its change time on the server.
        changed_at: i64,
        /// The push's `last_pulled_at`.
        last_pulled_at: i64,
    },
    /// The server failed (HTTP 500).
    Internal(RestError),
}

impl PushError {
    /// The HTTP status the REST API answers with.
    pub fn status(&self) -> u16 {
        match self {
            PushError::Invalid(_) | PushError::Rejected { .. } | PushError::Commit(_) => 400,
            PushError::Conflict { .. } => 409,
            PushError::Internal(_) => 500,
        }
    }

    /// The `error` text the REST API answers with: what was refused and SQLite's reason, never
    /// the server's internals.
    pub fn answer(&self) -> String {
        match self {
            PushError::Rejected { source, .. } | PushError::Commit(source) => {
                format!("{self}: {source}")
            }
            PushError::Internal(_) => "server error".into(),
            PushError::Invalid(_) | PushError::Conflict { .. } => self.to_string(),
        }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Invalid(why) => write!(f, "invalid push: {why}"),
            PushError::Rejected { write, .. } => write!(f, "invalid push: {write}"),
            PushError::Commit(_) => f.write_str("invalid push: at commit (a foreign key?)"),
            PushError::Conflict {
                table,
                id,
                changed_at,
                last_pulled_at,
            } => write!(
                f,
                "conflict: {table}/{id} changed on the server at {changed_at}, after \
                 last_pulled_at {last_pulled_at}; pull, then push again"
            ),
            PushError::Internal(_) => f.write_str("server error"),
        }
    }
}

impl std::error::Error for PushError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PushError::Rejected { source, .. } | PushError::Commit(source) => Some(source),
            PushError::Internal(e) => Some(e),
            PushError::Invalid(_) | PushError::Conflict { .. } => None,
        }
    }
}

impl From<RestError> for PushError {
    fn from(e: RestError) -> Self {
        PushError::Internal(e)
    }
}

/// SQLite failing on anything but a record's write or the commit is the server's failure.
impl From<rusqlite::Error> for PushError {
    fn from(e: rusqlite::Error) -> Self {
        PushError::Internal(RestError::Sqlite(e))
    }
}

impl From<ChangelogError> for PushError {
    fn from(e: ChangelogError) -> Self {
        PushError::Internal(RestError::Changelog(e))
    }
}

impl From<SchemaError> for PushError {
    fn from(e: SchemaError) -> Self {
        PushError::Internal(RestError::Schema(e))
    }
}

impl From<InvalidPush> for PushError {
    fn from(e: InvalidPush) -> Self {
        PushError::Invalid(e)
    }
}

fn to_json(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(r) => json!(r),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        // WatermelonDB has no binary type: blobs travel as lowercase hex text.
        ValueRef::Blob(b) => Json::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

/// The pull answer for `last_pulled_at` (`None` = first pull).
pub fn pull(conn: &mut Connection, last_pulled_at: Option<i64>) -> Result<Json, RestError> {
    let since = last_pulled_at.unwrap_or(0);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let timestamp = changelog::latest(&tx)?;
    let mut changes = Map::new();
    for table in changelog::rest_tables(&tx)? {
        let mut stmt = tx.prepare(&format!(
            "SELECT l.created_at, l.deleted, l.id, t.* FROM _cloud_rest_log l \
             LEFT JOIN {} t ON t.\"id\" = l.id \
             WHERE l.tbl = ?1 AND l.changed_at > ?2 ORDER BY l.changed_at",
            quote(&table)
        ))?;
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let (mut created, mut updated, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
        let mut rows = stmt.query(rusqlite::params![table, since])?;
        while let Some(r) = rows.next()? {
            let created_at: i64 = r.get(0)?;
            let gone = r.get::<_, i64>(1)? != 0 || r.get_ref(3)? == ValueRef::Null;
            if gone {
                if last_pulled_at.is_some() {
                    deleted.push(to_json(r.get_ref(2)?));
                }
                continue;
            }
            let mut rec = Map::new();
            for (i, name) in names.iter().enumerate().skip(3) {
                rec.insert(name.clone(), to_json(r.get_ref(i)?));
            }
            if created_at > since {
                created.push(Json::Object(rec));
            } else {
                updated.push(Json::Object(rec));
            }
        }
        changes.insert(
            table,
            json!({"created": created, "updated": updated, "deleted": deleted}),
        );
    }
    drop(tx);
    Ok(json!({"changes": changes, "timestamp": timestamp}))
}

struct Record {
    id: String,
    columns: Vec<(String, SqlValue)>,
}

struct TablePush {
    table: String,
    upserts: Vec<Record>,
    deleted: Vec<String>,
}

fn sql_value(table: &str, id: &str, col: &str, v: &Json) -> Result<SqlValue, InvalidPush> {
    Ok(match v {
        Json::Null => SqlValue::Null,
        Json::Bool(b) => SqlValue::Integer(*b as i64),
        Json::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => SqlValue::Text(s.clone()),
        _ => {
            return Err(InvalidPush::NotAScalar {
                table: table.to_string(),
                id: id.to_string(),
                column: col.to_string(),
            })
        }
    })
}

fn parse(
    body: &Json,
    tables: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<TablePush>, InvalidPush> {
    let mut obj = body.as_object().ok_or(InvalidPush::NotAnObject)?;
    if let Some(Json::Object(inner)) = obj.get("changes") {
        if !tables.contains_key("changes") {
            obj = inner;
        }
    }
    let mut out = Vec::new();
    for (table, v) in obj {
        let columns = tables.get(table).ok_or_else(|| InvalidPush::UnknownTable {
            table: table.clone(),
        })?;
        let t = v.as_object().ok_or_else(|| InvalidPush::NotATable {
            table: table.clone(),
        })?;
        if let Some(k) = t
            .keys()
            .find(|k| !["created", "updated", "deleted"].contains(&k.as_str()))
        {
            return Err(InvalidPush::UnknownKey {
                table: table.clone(),
                key: k.clone(),
            });
        }
        let mut push = TablePush {
            table: table.clone(),
            upserts: Vec::new(),
            deleted: Vec::new(),
        };
        for list in ["created", "updated"] {
            let records = match t.get(list) {
                None | Some(Json::Null) => continue,
                Some(Json::Array(a)) => a,
                Some(_) => {
                    return Err(InvalidPush::NotAnArray {
                        table: table.clone(),
                        list,
                    })
                }
            };
            for rec in records {
                let rec = rec
                    .as_object()
                    .ok_or_else(|| InvalidPush::RecordNotAnObject {
                        table: table.clone(),
                        list,
                    })?;
                let id = match rec.get("id") {
                    Some(Json::String(s)) if !s.is_empty() => s.clone(),
                    _ => {
                        return Err(InvalidPush::NoId {
                            table: table.clone(),
                            list,
                        })
                    }
                };
                let mut cols = Vec::new();
                for (c, v) in rec {
                    if c == "id" || c == "_status" || c == "_changed" {
                        continue;
                    }
                    if !columns.iter().any(|k| k == c) {
                        return Err(InvalidPush::UnknownColumn {
                            table: table.clone(),
                            id,
                            column: c.clone(),
                        });
                    }
                    cols.push((c.clone(), sql_value(table, &id, c, v)?));
                }
                push.upserts.push(Record { id, columns: cols });
            }
        }
        match t.get("deleted") {
            None | Some(Json::Null) => {}
            Some(Json::Array(a)) => {
                for id in a {
                    match id {
                        Json::String(s) if !s.is_empty() => push.deleted.push(s.clone()),
                        _ => {
                            return Err(InvalidPush::DeletedNotIds {
                                table: table.clone(),
                            })
                        }
                    }
                }
            }
            Some(_) => {
                return Err(InvalidPush::NotAnArray {
                    table: table.clone(),
                    list: "deleted",
                })
            }
        }
        out.push(push);
    }
    Ok(out)
}

/// Applies a push (see the module doc). Returns how many records were written.
pub fn push(conn: &mut Connection, last_pulled_at: i64, body: &Json) -> Result<usize, PushError> {
    let mut tables = BTreeMap::new();
    for t in changelog::rest_tables(conn)? {
        let cols = crate::schema::columns_of(conn, &t)?;
        tables.insert(t, cols);
    }
    let plan = parse(body, &tables)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("PRAGMA defer_foreign_keys = ON")?;
    for p in &plan {
        let ids = p.upserts.iter().map(|r| &r.id).chain(&p.deleted);
        let mut stmt =
            tx.prepare_cached("SELECT changed_at FROM _cloud_rest_log WHERE tbl = ?1 AND id = ?2")?;
        for id in ids {
            let changed: Option<i64> = stmt
                .query_row(rusqlite::params![p.table, id], |r| r.get(0))
                .optional()?;
            if let Some(at) = changed.filter(|&at| at > last_pulled_at) {
                return Err(PushError::Conflict {
                    table: p.table.clone(),
                    id: id.clone(),
                    changed_at: at,
                    last_pulled_at,
                });
            }
        }
    }
    let rejected = |write: String| move |source| PushError::Rejected { write, source };
    let mut written = 0;
    for p in &plan {
        let t = quote(&p.table);
        for r in &p.upserts {
            let exists = tx
                .query_row(
                    &format!("SELECT 1 FROM {t} WHERE \"id\" = ?1"),
                    [&r.id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            let mut params: Vec<&dyn rusqlite::ToSql> = Vec::new();
            let sql = if exists {
                if r.columns.is_empty() {
                    continue;
                }
                let sets = r
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (c, _))| format!("{} = ?{}", quote(c), i + 2))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("UPDATE {t} SET {sets} WHERE \"id\" = ?1")
            } else {
                let names = std::iter::once("\"id\"".to_string())
                    .chain(r.columns.iter().map(|(c, _)| quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let marks = (1..=r.columns.len() + 1)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("INSERT INTO {t} ({names}) VALUES ({marks})")
            };
            params.push(&r.id);
            for (_, v) in &r.columns {
                params.push(v);
            }
            tx.execute(&sql, params.as_slice())
                .map_err(rejected(format!("{}/{}", p.table, r.id)))?;
            written += 1;
        }
        for id in &p.deleted {
            written += tx
                .execute(&format!("DELETE FROM {t} WHERE \"id\" = ?1"), [id])
                .map_err(rejected(format!("deleting {}/{id}", p.table)))?;
        }
    }
    tx.commit().map_err(PushError::Commit)?;
    Ok(written)
}

/// A short description of a push body for logs (counts only, never values).
pub fn describe(body: &Json) -> String {
    let Some(obj) = body.as_object() else {
        return "not an object".into();
    };
    let obj = match obj.get("changes") {
        Some(Json::Object(inner)) => inner,
        _ => obj,
    };
    obj.iter()
        .map(|(t, v)| {
            let n = |k: &str| v.get(k).and_then(Json::as_array).map_or(0, Vec::len);
            format!("{t}: +{} ~{} -{}", n("created"), n("updated"), n("deleted"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
