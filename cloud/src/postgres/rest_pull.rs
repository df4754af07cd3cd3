//! A WatermelonDB pull from a PostgreSQL tenant: `watermelon::pull`'s contract
//! (docs/rest-api.md) over `outpost.rest_log` ([`super::rest_log`]) and the real tables.
//!
//! One `REPEATABLE READ READ ONLY` transaction: every statement reads the same snapshot, and the
//! answer's `timestamp` is the REST clock as that snapshot sees it, so nothing committed later
//! can be missed (its time is above it) and nothing returned is newer. The rows are streamed from
//! the server (`query_raw`) and written as JSON as they come: no JSON tree, no second copy of
//! the rows.

use super::rest_log;
use super::rest_tables::{ColumnKind, RestTable, RestTables};
use crate::watermelon::row_scope::ScopedTables;
use crate::watermelon::{served, Access, RestError, Served};
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, IsolationLevel, Row};

fn pg(doing: impl Into<String>) -> impl FnOnce(::postgres::Error) -> RestError {
    let doing = doing.into();
    move |source| RestError::Postgres { doing, source }
}

fn put_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), RestError> {
    serde_json::to_writer(out, v).map_err(RestError::Encode)
}

/// Cell `i` of `row`, read as `kind` reads it ([`ColumnKind::read`]), as JSON.
fn put_cell(out: &mut Vec<u8>, row: &Row, i: usize, kind: &ColumnKind) -> Result<(), RestError> {
    let bad = |source| RestError::Postgres {
        doing: "reading a row".into(),
        source,
    };
    match kind {
        ColumnKind::Int => match row.try_get::<_, Option<i64>>(i).map_err(bad)? {
            Some(v) => put_json(out, &v)?,
            None => out.extend_from_slice(b"null"),
        },
        // Not finite: `null`, as serde_json writes it.
        ColumnKind::Real => match row.try_get::<_, Option<f64>>(i).map_err(bad)? {
            Some(v) => put_json(out, &v)?,
            None => out.extend_from_slice(b"null"),
        },
        ColumnKind::Bytes => match row.try_get::<_, Option<&[u8]>>(i).map_err(bad)? {
            Some(b) => put_json(out, &super::pg_value::hex(b))?,
            None => out.extend_from_slice(b"null"),
        },
        // PostgreSQL prints a numeric as a JSON number, but for NaN and the infinities.
        ColumnKind::Numeric => match row.try_get::<_, Option<&str>>(i).map_err(bad)? {
            Some(n) if serde_json::from_str::<serde_json::Number>(n).is_ok() => {
                out.extend_from_slice(n.as_bytes())
            }
            _ => out.extend_from_slice(b"null"),
        },
        ColumnKind::Text | ColumnKind::Other(_) => {
            match row.try_get::<_, Option<&str>>(i).map_err(bad)? {
                Some(t) => put_json(out, t)?,
                None => out.extend_from_slice(b"null"),
            }
        }
    }
    Ok(())
}

/// `l.id` (text) as a value of the `id` column's type, to look the row up by its key.
fn id_from_text(kind: &ColumnKind) -> String {
    match kind {
        ColumnKind::Text => "l.id".into(),
        ColumnKind::Int => "l.id::bigint".into(),
        ColumnKind::Real => "l.id::float8".into(),
        ColumnKind::Numeric => "l.id::numeric".into(),
        ColumnKind::Bytes => "l.id::bytea".into(),
        ColumnKind::Other(t) => format!("l.id::{t}"),
    }
}

/// The pull answer for `last_pulled_at` (`None` = first pull), as `watermelon::pull` writes it
/// for the SQLite tenant.
pub fn pull(
    client: &mut Client,
    last_pulled_at: Option<i64>,
    access: &Access,
) -> Result<Vec<u8>, RestError> {
    let since = last_pulled_at.unwrap_or(0);
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg("starting the pull's transaction"))?;
    let timestamp = rest_log::latest(&mut tx)?;
    let rest = RestTables::load(&mut tx)?;
    let mut tables: Vec<&RestTable> = rest
        .tables
        .iter()
        .filter(|t| access.readable(&t.name))
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let scoped = ScopedTables::from_schema(&rest, &names, &access.scopes)?;
    let mut out = b"{\"changes\":{".to_vec();
    for (n, table) in tables.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        put_json(&mut out, table.name.as_str())?;
        out.extend_from_slice(b":{\"created\":[");
        let columns: Vec<&super::rest_tables::RestColumn> =
            std::iter::once(&table.id).chain(&table.columns).collect();
        let reads = columns
            .iter()
            .map(|c| c.kind.read("t", &c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let relation = rest_log::qualified(&table.name);
        // As on SQLite (`watermelon::pull`): a scoped token's first pull reads its scopes' rows
        // through the scope index; a later one reads every changed row with its scope.
        let scope = scoped.get(&table.name).filter(|s| s.within.is_some());
        let held_nothing = since <= 0;
        let sql = match scope {
            Some(s) if held_nothing => format!(
                "SELECT l.created_at, l.deleted, l.id, NULL::text, l.moved_at, true, {reads} \
                 FROM {relation} t JOIN outpost.rest_log l ON l.tbl = $1 AND l.id = t.\"id\"::text \
                 WHERE {} AND l.changed_at > $2 ORDER BY l.changed_at",
                s.within.as_deref().unwrap_or("true")
            ),
            _ => format!(
                "SELECT l.created_at, l.deleted, l.id, {}, l.moved_at, t.\"id\" IS NOT NULL, \
                 {reads} FROM outpost.rest_log l LEFT JOIN {relation} t ON t.\"id\" = {} \
                 WHERE l.tbl = $1 AND l.changed_at > $2 ORDER BY l.changed_at",
                // A row gone from its table: the scope it had, from its log entry.
                scope.map_or("NULL::text".to_string(), |s| format!(
                    "CASE WHEN t.\"id\" IS NULL THEN CAST({} AS TEXT) ELSE CAST({} AS TEXT) END",
                    s.gone, s.expr
                )),
                id_from_text(&table.id.kind)
            ),
        };
        let filter_rows = scope.is_some() && !held_nothing;
        let mut quoted = Vec::new();
        for c in &columns {
            let mut q = Vec::new();
            put_json(&mut q, c.name.as_str())?;
            quoted.push(q);
        }
        let (mut created, mut updated, mut deleted) = (0usize, Vec::new(), Vec::new());
        let (mut updated_count, mut deleted_count) = (0usize, 0usize);
        let reading = format!("reading the changes of table {:?}", table.name);
        let params: [&(dyn ::postgres::types::ToSql + Sync); 2] = [&table.name, &since];
        let mut rows = tx
            .query_raw(sql.as_str(), params)
            .map_err(pg(reading.clone()))?;
        while let Some(r) = rows.next().map_err(pg(reading.clone()))? {
            let get = |source| RestError::Postgres {
                doing: reading.clone(),
                source,
            };
            let id: &str = r.try_get(2).map_err(get)?;
            let scope_cell: Option<&str> = r.try_get(3).map_err(get)?;
            let disposition = served(
                since,
                last_pulled_at.is_some(),
                filter_rows.then_some(scope_cell),
                &access.scopes,
                r.try_get::<_, i64>(0).map_err(get)?,
                r.try_get::<_, bool>(1).map_err(get)? || !r.try_get::<_, bool>(5).map_err(get)?,
                r.try_get::<_, i64>(4).map_err(get)?,
            );
            let list = match disposition {
                Served::Nothing => continue,
                Served::Deleted => {
                    if deleted_count > 0 {
                        deleted.push(b',');
                    }
                    put_json(&mut deleted, id)?;
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
            for (i, (c, name)) in columns.iter().zip(&quoted).enumerate() {
                if i > 0 {
                    list.push(b',');
                }
                list.extend_from_slice(name);
                list.push(b':');
                put_cell(list, &r, i + 6, &c.kind)?;
            }
            list.push(b'}');
        }
        out.extend_from_slice(b"],\"updated\":[");
        out.extend_from_slice(&updated);
        out.extend_from_slice(b"],\"deleted\":[");
        out.extend_from_slice(&deleted);
        out.extend_from_slice(b"]}");
    }
    // Read only: nothing to keep.
    drop(tx);
    out.extend_from_slice(b"},\"timestamp\":");
    put_json(&mut out, &timestamp)?;
    out.push(b'}');
    Ok(out)
}
