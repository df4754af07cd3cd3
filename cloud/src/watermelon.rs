//! The WatermelonDB sync protocol over the tenant database (the HTTP side is in `http.rs`).
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
//!   string `id`, only known columns, JSON scalars as values (`_status`, WatermelonDB's
//!   client-side column, is ignored), at most [`MAX_PUSH_RECORDS`] records. The body is read
//!   straight into a compact plan (`push_body.rs`), never into a generic JSON tree, so a push
//!   costs a small multiple of its body (docs/rest-api.md states the bound);
//! - a pushed record (created, updated or deleted) whose change time on the server is above `T` is a
//!   conflict: nothing is written and the answer is HTTP 409, so the client pulls first;
//! - `created` and `updated` write the given columns, inserting the record if it does not exist
//!   and updating it if it does (a retried push after a lost answer is therefore harmless); an
//!   updated record that names its `_changed` columns writes only those into an existing row (a
//!   stale copy of another column, e.g. a scope cell a referral moved, never undoes a newer
//!   write); `deleted` of a record that does not exist is ignored;
//! - a constraint failure (NOT NULL, CHECK, a foreign key at commit) rolls everything back.
//!
//! A token's scopes narrow both to the rows of scoped tables in its scopes (`row_scope.rs`,
//! `push_scope.rs`; docs/rest-api.md, "Scopes").
//!
//! The writes are ordinary local writes on the tenant database: the engine's triggers record them
//! as the cloud's changes, which are exported to the mailbox for hubs and devices.

use crate::changelog;
use crate::schema::quote;
pub use access::Access;
pub use error::{InvalidPush, PushError, Refusal, RestError};
use outpost_protocol::scope::{ScopeRule, Scopes};
use push_body::{BodyError, Tables};
use row_scope::ScopedTables;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

mod access;
mod error;
mod plan;
pub(crate) mod push_body;
pub(crate) mod push_scope;
mod push_shape;
pub(crate) mod row_scope;

pub(crate) use plan::{Plan, Scalar};
/// The most records one push may hold (created, updated and deleted, all tables together): a
/// larger push is refused (HTTP 413) as soon as the parser counts one more, before any write.
pub const MAX_PUSH_RECORDS: usize = 100_000;

/// Appends `v` as JSON. Writing into a `Vec` fails only if serialization itself does (it does
/// not for strings and numbers), but the error is kept rather than assumed away.
fn put_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), RestError> {
    serde_json::to_writer(out, v).map_err(RestError::Encode)
}

fn put_cell(out: &mut Vec<u8>, v: ValueRef<'_>) -> Result<(), RestError> {
    match v {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Integer(i) => put_json(out, &i)?,
        // Not finite (SQLite can hold an infinity): `null`, as serde_json writes it.
        ValueRef::Real(r) => put_json(out, &r)?,
        ValueRef::Text(t) => put_json(out, &*String::from_utf8_lossy(t))?,
        // WatermelonDB has no binary type: blobs travel as lowercase hex text.
        ValueRef::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            put_json(out, &hex)?
        }
    }
    Ok(())
}

/// What a pull does with one logged row (`watermelon::pull`, `postgres/rest_pull.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// Not named at all.
    Nothing,
    /// Named in `deleted`.
    Deleted,
    /// Served in `created`.
    Created,
    /// Served in `updated`.
    Updated,
}

/// How a pull since `since` (`incremental`: the app named a `last_pulled_at`) serves a logged
/// row created at `created_at`, gone (`gone`: deleted, or no longer in its table), whose scope
/// last moved at `moved_at`; `scope` is the row's scope when the pull filters rows by the
/// token's `scopes` (a later pull of a scoped table by a token of named scopes).
pub(crate) fn served(
    since: i64,
    incremental: bool,
    scope: Option<Option<&str>>,
    scopes: &Scopes,
    created_at: i64,
    gone: bool,
    moved_at: i64,
) -> Served {
    let outside = scope.is_some_and(|s| !row_scope::holds(scopes, s));
    // A row outside the token's scopes that did not move since its last pull was never the
    // app's: not named at all.
    if outside && moved_at <= since {
        return Served::Nothing;
    }
    if outside || gone {
        return if incremental {
            Served::Deleted
        } else {
            Served::Nothing
        };
    }
    if created_at > since {
        Served::Created
    } else {
        Served::Updated
    }
}

/// The pull answer for `last_pulled_at` (`None` = first pull) as JSON text,
/// `{"changes": {table: {"created": [..], "updated": [..], "deleted": [..]}}, "timestamp": T}`,
/// tables by name. Written as the rows are read: no JSON tree, so the answer costs its own size
/// (plus its `updated` and `deleted` parts once more while they wait for `created` to end).
/// Only the tables `access` lets the token read: tables the tenant declares `up` are collected
/// from apps, never served to them (docs/design.md section 10), and a token with its own table
/// rights reads only the tables they name.
pub fn pull(
    conn: &mut Connection,
    last_pulled_at: Option<i64>,
    access: &Access,
) -> Result<Vec<u8>, RestError> {
    let since = last_pulled_at.unwrap_or(0);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let timestamp = changelog::latest(&tx)?;
    let mut tables = changelog::rest_tables(&tx)?;
    tables.retain(|t| access.readable(t));
    tables.sort();
    let scoped = ScopedTables::load(&tx, &tables, &access.scopes)?;
    let mut out = b"{\"changes\":{".to_vec();
    for (n, table) in tables.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        put_json(&mut out, table.as_str())?;
        out.extend_from_slice(b":{\"created\":[");
        // A scoped table read by a token of named scopes. A first pull (or one since 0: the
        // app held nothing) reads only the rows in its scopes, driven from the table's scope
        // index (the change log's rows are looked up by key), so it costs what its rows cost;
        // a later one reads every changed row with its scope and pulls those whose scope is now
        // another and that moved since as deleted (a referral took them away).
        let scope = scoped.get(table).filter(|s| s.within.is_some());
        let held_nothing = since <= 0;
        let sql = match scope {
            Some(s) if held_nothing => format!(
                "SELECT l.created_at, l.deleted, l.id, NULL, l.moved_at, 0, t.* FROM {} t \
                 CROSS JOIN _cloud_rest_log l ON l.tbl = ?1 AND l.id = t.\"id\" \
                 WHERE {} AND l.changed_at > ?2 ORDER BY l.changed_at",
                quote(table),
                s.within.as_deref().unwrap_or("1")
            ),
            _ => format!(
                "SELECT l.created_at, l.deleted, l.id, {}, l.moved_at, t.\"id\" IS NULL, t.* \
                 FROM _cloud_rest_log l \
                 LEFT JOIN {} t ON t.\"id\" = l.id \
                 WHERE l.tbl = ?1 AND l.changed_at > ?2 ORDER BY l.changed_at",
                // A row gone from its table: the scope it had, from its log entry.
                scope.map_or("NULL".to_string(), |s| format!(
                    "CASE WHEN t.\"id\" IS NULL THEN {} ELSE {} END",
                    s.gone, s.expr
                )),
                quote(table)
            ),
        };
        let filter_rows = scope.is_some() && !held_nothing;
        let mut stmt = tx.prepare(&sql)?;
        let mut names = Vec::new();
        for name in stmt.column_names().skip(6) {
            let mut quoted = Vec::new();
            put_json(&mut quoted, name)?;
            names.push(quoted);
        }
        let (mut created, mut updated, mut deleted) = (0usize, Vec::new(), Vec::new());
        let mut updated_count = 0usize;
        let mut deleted_count = 0usize;
        let mut rows = stmt.query(rusqlite::params![table, since])?;
        while let Some(r) = rows.next()? {
            let scope_cell = if filter_rows {
                Some(r.get_ref(3)?.as_str().ok())
            } else {
                None
            };
            // Gone: deleted, or no longer in its table (its `id` did not join; any other
            // column may be NULL in a live row).
            let gone = r.get::<_, i64>(1)? != 0 || r.get::<_, i64>(5)? != 0;
            let list = match served(
                since,
                last_pulled_at.is_some(),
                scope_cell,
                &access.scopes,
                r.get(0)?,
                gone,
                r.get(4)?,
            ) {
                Served::Nothing => continue,
                Served::Deleted => {
                    if deleted_count > 0 {
                        deleted.push(b',');
                    }
                    put_cell(&mut deleted, r.get_ref(2)?)?;
                    deleted_count += 1;
                    continue;
                }
                Served::Created => {
                    created += 1;
                    if created > 1 {
                        out.push(b',');
                    }
                    &mut out
                }
                Served::Updated => {
                    updated_count += 1;
                    if updated_count > 1 {
                        updated.push(b',');
                    }
                    &mut updated
                }
            };
            list.push(b'{');
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    list.push(b',');
                }
                list.extend_from_slice(name);
                list.push(b':');
                put_cell(list, r.get_ref(i + 6)?)?;
            }
            list.push(b'}');
        }
        out.extend_from_slice(b"],\"updated\":[");
        out.extend_from_slice(&updated);
        out.extend_from_slice(b"],\"deleted\":[");
        out.extend_from_slice(&deleted);
        out.extend_from_slice(b"]}");
    }
    drop(tx);
    out.extend_from_slice(b"},\"timestamp\":");
    put_json(&mut out, &timestamp)?;
    out.push(b'}');
    Ok(out)
}

/// The REST tables and their columns, as a push is checked against them.
fn rest_columns(conn: &Connection) -> Result<Tables, RestError> {
    let mut tables = Tables::new();
    for t in changelog::rest_tables(conn)? {
        let cols = crate::schema::columns_of(conn, &t)?;
        tables.insert(t, cols);
    }
    Ok(tables)
}

/// What an accepted push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Records written (inserted, updated or deleted).
    pub written: usize,
    /// What the push held, for logs: per table, counts only (`patients: +2 ~1 -0`).
    pub summary: String,
}

/// Applies a push body (see the module doc). The body is read into a compact plan (checked
/// against the tables as it is read) and dropped before the writes. A push touching a table
/// `access` does not let the token write (declared `down`, or outside its rights) is refused
/// whole.
pub fn push(
    conn: &mut Connection,
    last_pulled_at: i64,
    body: Vec<u8>,
    access: &Access,
) -> Result<Pushed, PushError> {
    let tables = rest_columns(conn)?;
    let plan = match push_body::read(&body, &tables, MAX_PUSH_RECORDS) {
        Ok(plan) => plan,
        Err(BodyError::NotJson(e)) => return Err(PushError::NotJson(e)),
        Err(BodyError::Invalid(why)) => return Err(PushError::Invalid(why)),
    };
    drop(body);
    if let Some(why) = plan
        .tables
        .iter()
        .find_map(|t| access.refuse_write(&t.table))
    {
        return Err(PushError::Invalid(why));
    }
    let written = apply(conn, last_pulled_at, &plan, &access.scopes)?;
    Ok(Pushed {
        written,
        summary: plan.describe(),
    })
}

fn sql_value(v: Scalar<'_>) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match v {
        Scalar::Null => ValueRef::Null,
        Scalar::Integer(i) => ValueRef::Integer(i),
        Scalar::Real(r) => ValueRef::Real(r),
        Scalar::Text(s) => ValueRef::Text(s.as_bytes()),
    })
}

fn apply(
    conn: &mut Connection,
    last_pulled_at: i64,
    plan: &Plan,
    scopes: &Scopes,
) -> Result<usize, PushError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("PRAGMA defer_foreign_keys = ON")?;
    let names: Vec<String> = plan.tables.iter().map(|p| p.table.clone()).collect();
    let scoped = ScopedTables::load(&tx, &names, scopes)?;
    // Records created in a table scoped `via` a parent: their scope is their parent's, which
    // may be created later in the same push; checked once everything is written.
    let mut follow_parent: Vec<(&str, &str, &str, &str)> = Vec::new();
    for p in &plan.tables {
        let ids = p
            .created
            .records()
            .chain(p.updated.records())
            .map(|r| r.id)
            .chain(p.deleted.ids());
        let mut stmt =
            tx.prepare_cached("SELECT changed_at FROM _cloud_rest_log WHERE tbl = ?1 AND id = ?2")?;
        for id in ids {
            let changed: Option<i64> = stmt
                .query_row(rusqlite::params![p.table, id], |r| r.get(0))
                .optional()?;
            if let Some(at) = changed.filter(|&at| at > last_pulled_at) {
                return Err(PushError::Conflict {
                    table: p.table.clone(),
                    id: id.to_string(),
                    changed_at: at,
                    last_pulled_at,
                });
            }
        }
    }
    let rejected = |write: String| {
        move |source| PushError::Rejected {
            write,
            source: Refusal::Sqlite(source),
        }
    };
    let mut written = 0;
    for p in &plan.tables {
        let t = quote(&p.table);
        let scope = scoped.get(&p.table);
        // The row's current scope comes with its existence, in one lookup by key.
        let exists_sql = format!(
            "SELECT CAST({} AS TEXT) FROM {t} t WHERE t.\"id\" = ?1",
            scope.map_or("NULL", |s| s.expr.as_str())
        );
        let scope_column = scope.and_then(|s| {
            p.columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(s.rule.column()))
                .map(|i| (i, p.columns[i].as_str()))
        });
        for r in p.created.records().chain(p.updated.records()) {
            let current: Option<Option<String>> = tx
                .prepare_cached(&exists_sql)?
                .query_row([r.id], |row| row.get(0))
                .optional()?;
            let exists = current.is_some();
            let update = r.values_for_update();
            if let Some(scope) = scope {
                let written = if exists { &update } else { &r.values };
                push_scope::check_write(
                    &p.table,
                    r.id,
                    scope,
                    scope_column,
                    current.as_ref().map(Option::as_deref),
                    written,
                    scopes,
                )?;
                if let (false, ScopeRule::Via(c)) = (exists, &scope.rule) {
                    follow_parent.push((&p.table, r.id, c, &scope.expr));
                }
            }
            let sql = if exists {
                if update.is_empty() {
                    continue;
                }
                let sets = update
                    .iter()
                    .enumerate()
                    .map(|(i, (c, _))| format!("{} = ?{}", quote(&p.columns[*c]), i + 2))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("UPDATE {t} SET {sets} WHERE \"id\" = ?1")
            } else {
                let names = std::iter::once("\"id\"".to_string())
                    .chain(r.values.iter().map(|(c, _)| quote(&p.columns[*c])))
                    .collect::<Vec<_>>()
                    .join(", ");
                let marks = (1..=r.values.len() + 1)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("INSERT INTO {t} ({names}) VALUES ({marks})")
            };
            let written_values = if exists { &update } else { &r.values };
            let params = std::iter::once(sql_value(Scalar::Text(r.id)))
                .chain(written_values.iter().map(|&(_, v)| sql_value(v)));
            tx.prepare_cached(&sql)
                .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(params)))
                .map_err(rejected(format!("{}/{}", p.table, r.id)))?;
            written += 1;
        }
        let delete_sql = format!("DELETE FROM {t} WHERE \"id\" = ?1");
        for id in p.deleted.ids() {
            if let Some(Some(current)) = scope
                .map(|_| {
                    tx.prepare_cached(&exists_sql)?
                        .query_row([id], |row| row.get::<_, Option<String>>(0))
                        .optional()
                })
                .transpose()?
            {
                if !row_scope::holds(scopes, current.as_deref()) {
                    return Err(PushError::Invalid(InvalidPush::ScopeNotGranted {
                        table: p.table.clone(),
                        id: id.to_string(),
                        scope: current,
                    }));
                }
            }
            written += tx
                .prepare_cached(&delete_sql)
                .and_then(|mut stmt| stmt.execute([id]))
                .map_err(rejected(format!("deleting {}/{id}", p.table)))?;
        }
    }
    push_scope::check_followers(&follow_parent, scopes, |table, id, expr| {
        push_scope::sqlite_scope_of(&tx, table, id, expr)
    })?;
    tx.commit()
        .map_err(|e| PushError::Commit(Refusal::Sqlite(e)))?;
    Ok(written)
}

#[cfg(test)]
mod scope_bench;
#[cfg(test)]
mod scope_tests;
#[cfg(test)]
mod tests;
