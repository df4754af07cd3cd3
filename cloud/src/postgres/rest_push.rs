//! A WatermelonDB push into a PostgreSQL tenant: `watermelon::push`'s contract (docs/rest-api.md)
//! with the store-independent parts shared (the body read into a plan, table rights, scope
//! checks) and the writes in PostgreSQL, values bound with their columns' real types
//! ([`super::rest_tables::ColumnKind::bind`]: a value that does not fit is a 400 naming the
//! column, never coerced).
//!
//! One transaction, all or nothing. It first takes the REST clock (`outpost.rest_now()`, which
//! locks capture's clock row, then the REST clock row, until it ends): every transaction that
//! logged a change before is committed and visible to the conflict check, and any that logs one
//! later waits and gets a later time, as `BEGIN IMMEDIATE` makes it on SQLite. Foreign keys are
//! deferred to the commit (the app tables' keys are `DEFERRABLE`). A deadlock or serialization
//! failure with a concurrent writer (a back office holding a row the push writes, waiting for
//! the clock the push holds) rolls the push back; it is run again, a few times.
//!
//! The writes are ordinary writes: capture records them as changes of the cloud's origin (no
//! `outpost.applying`), so they reach devices, and the change log logs them.

use super::rest_tables::{Bound, RestTable, RestTables};
use crate::schema::quote;
use crate::watermelon::push_body::{self, BodyError, Tables};
use crate::watermelon::push_scope;
use crate::watermelon::row_scope::{self, ScopedTables};
use crate::watermelon::{
    Access, InvalidPush, Plan, PushError, Pushed, Refusal, RestError, Scalar, MAX_PUSH_RECORDS,
};
use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use ::postgres::{Client, Transaction};
use outpost_protocol::scope::{ScopeRule, Scopes};
use std::collections::{BTreeSet, HashMap};

/// How many times a push rolled back by a deadlock or a serialization failure is run again.
const RETRIES: usize = 4;

fn pg(doing: impl Into<String>) -> impl FnOnce(::postgres::Error) -> PushError {
    let doing = doing.into();
    move |source| PushError::Internal(RestError::Postgres { doing, source })
}

/// Whether `e` is a transaction lost to a concurrent one, worth running again.
fn retryable(e: &PushError) -> bool {
    let code = match e {
        PushError::Internal(RestError::Postgres { source, .. }) => source.code(),
        PushError::Rejected {
            source: Refusal::Postgres(source),
            ..
        }
        | PushError::Commit(Refusal::Postgres(source)) => source.code(),
        _ => None,
    };
    code.is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Applies a push body (see the module doc and `watermelon::push`).
pub fn push(
    client: &mut Client,
    last_pulled_at: i64,
    body: Vec<u8>,
    access: &Access,
) -> Result<Pushed, PushError> {
    let rest = RestTables::load(client)?;
    let tables: Tables = rest
        .tables
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.columns.iter().map(|c| c.name.clone()).collect(),
            )
        })
        .collect();
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
    let mut tries = 0;
    let written = loop {
        match apply(client, last_pulled_at, &plan, &rest, &access.scopes) {
            Err(e) if retryable(&e) && tries < RETRIES => {
                tries += 1;
                log::info!("REST push lost to a concurrent transaction (running it again): {e}");
            }
            done => break done?,
        }
    };
    Ok(Pushed {
        written,
        summary: plan.describe(),
    })
}

/// The statements of one table's writes, prepared once per push and column set.
struct Statements<'p> {
    table: &'p RestTable,
    inserts: HashMap<Vec<usize>, ::postgres::Statement>,
    updates: HashMap<Vec<usize>, ::postgres::Statement>,
}

/// `v` bound for `column` of `table`, or the refusal naming it.
fn bind<'v>(
    table: &RestTable,
    id: &str,
    column: usize,
    v: Scalar<'v>,
) -> Result<Bound<'v>, PushError> {
    let c = &table.columns[column];
    c.kind.bind(v).ok_or_else(|| {
        PushError::Invalid(InvalidPush::DoesNotFit {
            table: table.name.clone(),
            id: id.to_string(),
            column: c.name.clone(),
            pg_type: c.kind.name().to_string(),
        })
    })
}

fn apply(
    client: &mut Client,
    last_pulled_at: i64,
    plan: &Plan,
    rest: &RestTables,
    scopes: &Scopes,
) -> Result<usize, PushError> {
    if plan.tables.is_empty() {
        return Ok(0);
    }
    let mut tx = client
        .transaction()
        .map_err(pg("starting the push's transaction"))?;
    tx.batch_execute("SET CONSTRAINTS ALL DEFERRED; SELECT outpost.rest_now();")
        .map_err(pg("taking the REST clock"))?;
    let names: Vec<String> = plan.tables.iter().map(|p| p.table.clone()).collect();
    let scoped = ScopedTables::from_schema(rest, &names, scopes)?;
    check_conflicts(&mut tx, last_pulled_at, plan)?;
    // Records created in a table scoped `via` a parent: checked once everything is written.
    let mut follow_parent: Vec<(&str, &str, &str, &str)> = Vec::new();
    let mut written = 0;
    for p in &plan.tables {
        let Some(table) = rest.get(&p.table) else {
            // push_body read it against the same tables.
            return Err(PushError::Invalid(InvalidPush::UnknownTable {
                table: p.table.clone(),
            }));
        };
        let scope = scoped.get(&p.table);
        let relation = super::rest_log::qualified(&table.name);
        let mut st = Statements {
            table,
            inserts: HashMap::new(),
            updates: HashMap::new(),
        };
        // The row's current scope (NULL when unscoped) comes with its existence, in one lookup.
        let exists_stmt = tx
            .prepare(&format!(
                "SELECT CAST({} AS TEXT) FROM {relation} t WHERE t.\"id\" = {}",
                scope.map_or("NULL", |s| s.expr.as_str()),
                table.id.kind.text_placeholder(1)
            ))
            .map_err(pg(format!("looking up rows of table {:?}", table.name)))?;
        let scope_column = scope.and_then(|s| {
            p.columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(s.rule.column()))
                .map(|i| (i, p.columns[i].as_str()))
        });
        for r in p.created.records().chain(p.updated.records()) {
            let id = Bound::Text(r.id.into());
            let current: Option<Option<String>> = tx
                .query_opt(&exists_stmt, &[&id])
                .map_err(pg(format!("looking up {}/{}", table.name, r.id)))?
                .map(|row| row.get(0));
            let exists = current.is_some();
            let update = r.values_for_update();
            let values = if exists { &update } else { &r.values };
            if let Some(scope) = scope {
                push_scope::check_write(
                    &p.table,
                    r.id,
                    scope,
                    scope_column,
                    current.as_ref().map(Option::as_deref),
                    values,
                    scopes,
                )?;
                if let (false, ScopeRule::Via(c)) = (exists, &scope.rule) {
                    follow_parent.push((&p.table, r.id, c, &scope.expr));
                }
            }
            if exists && values.is_empty() {
                continue;
            }
            let mut params: Vec<Bound> = vec![id];
            for &(c, v) in values.iter() {
                params.push(bind(table, r.id, c, v)?);
            }
            let cols: Vec<usize> = values.iter().map(|&(c, _)| c).collect();
            let stmt = st.statement(&mut tx, exists, cols)?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
            tx.execute(&stmt, &refs)
                .map_err(|source| PushError::Rejected {
                    write: format!("{}/{}", p.table, r.id),
                    source: Refusal::Postgres(source),
                })?;
            written += 1;
        }
        let delete = tx
            .prepare(&format!(
                "DELETE FROM {relation} WHERE \"id\" = {}",
                table.id.kind.text_placeholder(1)
            ))
            .map_err(pg(format!("preparing deletes of table {:?}", table.name)))?;
        for id in p.deleted.ids() {
            let key = Bound::Text(id.into());
            if scope.is_some() {
                let current: Option<Option<String>> = tx
                    .query_opt(&exists_stmt, &[&key])
                    .map_err(pg(format!("looking up {}/{id}", table.name)))?
                    .map(|row| row.get(0));
                if let Some(current) = current {
                    if !row_scope::holds(scopes, current.as_deref()) {
                        return Err(PushError::Invalid(InvalidPush::ScopeNotGranted {
                            table: p.table.clone(),
                            id: id.to_string(),
                            scope: current,
                        }));
                    }
                }
            }
            written += tx
                .execute(&delete, &[&key])
                .map_err(|source| PushError::Rejected {
                    write: format!("deleting {}/{id}", p.table),
                    source: Refusal::Postgres(source),
                })? as usize;
        }
    }
    push_scope::check_followers(&follow_parent, scopes, |table, id, expr| {
        let Some(t) = rest.get(table) else {
            return Ok(None);
        };
        let key = Bound::Text(id.into());
        Ok(tx
            .query_opt(
                &format!(
                    "SELECT CAST({expr} AS TEXT) FROM {} t WHERE t.\"id\" = {}",
                    super::rest_log::qualified(table),
                    t.id.kind.text_placeholder(1)
                ),
                &[&key],
            )
            .map_err(pg(format!("reading the scope of {table}/{id}")))?
            .and_then(|row| row.get(0)))
    })?;
    tx.commit()
        .map_err(|e| PushError::Commit(Refusal::Postgres(e)))?;
    Ok(written)
}

impl Statements<'_> {
    /// The insert (`exists` false) or update of the columns `cols` (indexes into the table's
    /// columns), prepared once per push.
    fn statement(
        &mut self,
        tx: &mut Transaction<'_>,
        exists: bool,
        cols: Vec<usize>,
    ) -> Result<::postgres::Statement, PushError> {
        let t = self.table;
        let relation = super::rest_log::qualified(&t.name);
        let cache = if exists {
            &mut self.updates
        } else {
            &mut self.inserts
        };
        if let Some(s) = cache.get(&cols) {
            return Ok(s.clone());
        }
        let sql = if exists {
            let sets = cols
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    format!(
                        "{} = {}",
                        quote(&t.columns[c].name),
                        t.columns[c].kind.placeholder(i + 2)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "UPDATE {relation} SET {sets} WHERE \"id\" = {}",
                t.id.kind.text_placeholder(1)
            )
        } else {
            let names = std::iter::once("\"id\"".to_string())
                .chain(cols.iter().map(|&c| quote(&t.columns[c].name)))
                .collect::<Vec<_>>()
                .join(", ");
            let marks = std::iter::once(t.id.kind.text_placeholder(1))
                .chain(
                    cols.iter()
                        .enumerate()
                        .map(|(i, &c)| t.columns[c].kind.placeholder(i + 2)),
                )
                .collect::<Vec<_>>()
                .join(", ");
            format!("INSERT INTO {relation} ({names}) VALUES ({marks})")
        };
        let s = tx
            .prepare(&sql)
            .map_err(pg(format!("preparing writes of table {:?}", t.name)))?;
        cache.insert(cols, s.clone());
        Ok(s)
    }
}

/// 409 if any pushed record changed on the server after `last_pulled_at`: the first such record
/// in the body's order (tables in order; created, updated, then deleted).
fn check_conflicts(
    tx: &mut Transaction<'_>,
    last_pulled_at: i64,
    plan: &Plan,
) -> Result<(), PushError> {
    for p in &plan.tables {
        let ids: Vec<&str> = p
            .created
            .records()
            .chain(p.updated.records())
            .map(|r| r.id)
            .chain(p.deleted.ids())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let rows = tx
            .query(
                "SELECT id, changed_at FROM outpost.rest_log \
                 WHERE tbl = $1 AND id = ANY($2) AND changed_at > $3",
                &[&p.table, &ids, &last_pulled_at],
            )
            .map_err(pg(format!("reading the change log of table {:?}", p.table)))?;
        if rows.is_empty() {
            continue;
        }
        let changed: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut seen = BTreeSet::new();
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            if let Some(&at) = changed.get(id) {
                return Err(PushError::Conflict {
                    table: p.table.clone(),
                    id: id.to_string(),
                    changed_at: at,
                    last_pulled_at,
                });
            }
        }
    }
    Ok(())
}
