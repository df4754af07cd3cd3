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
//! Whether each record exists, and its scope, is read ahead per table in one query, and the
//! writes go in batches ([`super::rest_writes`]); a batch the database refuses reruns the push a
//! statement per record, so the refusal names its record.
//!
//! The writes are ordinary writes: capture records them as changes of the cloud's origin (no
//! `outpost.applying`), so they reach devices, and the change log logs them.

use super::rest_tables::{Bound, RestTable, RestTables};
use super::rest_writes::{from_text, id_array, Writes};
use crate::watermelon::push_body::{self, BodyError, Tables};
use crate::watermelon::push_scope;
use crate::watermelon::row_scope::{self, ScopeSchema, ScopedTables};
use crate::watermelon::{
    Access, InvalidPush, Plan, PushError, Pushed, Refusal, RestError, Scalar, MAX_PUSH_RECORDS,
};
use ::postgres::error::SqlState;
use ::postgres::{Client, Transaction};
use outpost_protocol::scope::{ScopeRule, Scopes};
use std::collections::{BTreeSet, HashMap, HashSet};

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
    let mut one_by_one = false;
    let written = loop {
        match apply(
            client,
            last_pulled_at,
            &plan,
            &rest,
            &access.scopes,
            one_by_one,
        ) {
            Err(e) if retryable(&e) && tries < RETRIES => {
                tries += 1;
                log::info!("REST push lost to a concurrent transaction (running it again): {e}");
            }
            // A batched statement was refused: again a statement per record, whose refusal
            // names the record.
            Err(PushError::Rejected { .. }) if !one_by_one => one_by_one = true,
            done => break done?,
        }
    };
    Ok(Pushed {
        written,
        summary: plan.describe(),
    })
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

/// Where a push learns whether a record exists and its current scope: read ahead for the whole
/// table in one query (batched writes), or one lookup per record. A record written earlier in
/// the same push is looked up again once the writes gathered so far are sent, so every check
/// sees what the push wrote before it, as a statement per record would.
struct Lookup {
    table: String,
    one: ::postgres::Statement,
    ahead: HashMap<String, Option<String>>,
    written: HashSet<String>,
}

/// A lookup by ids failing: an id that is not a value of the `id` column's type (`"x"` for a
/// `bigint` key: a data exception, SQLSTATE class 22) is the push's fault, named as `write`
/// (a 400, and a batched push runs again a record at a time to name the record); anything else
/// is the server's.
fn lookup_failed(write: String) -> impl FnOnce(::postgres::Error) -> PushError {
    move |source| {
        if source.code().is_some_and(|c| c.code().starts_with("22")) {
            PushError::Rejected {
                write,
                source: Refusal::Postgres(source),
            }
        } else {
            PushError::Internal(RestError::Postgres {
                doing: format!("looking up {write}"),
                source,
            })
        }
    }
}

impl Lookup {
    /// `Some(scope)` when the record `id` exists (its scope, NULL when unscoped), else `None`.
    fn current(
        &mut self,
        tx: &mut Transaction<'_>,
        writes: &mut Writes<'_>,
        id: &str,
    ) -> Result<Option<Option<String>>, PushError> {
        let again = !self.written.insert(id.to_string());
        if !writes.is_one_by_one() && !again {
            return Ok(self.ahead.get(id).cloned());
        }
        writes.flush(tx)?;
        Ok(tx
            .query_opt(&self.one, &[&id])
            .map_err(lookup_failed(format!("{}/{id}", self.table)))?
            .map(|row| row.get(0)))
    }
}

fn apply(
    client: &mut Client,
    last_pulled_at: i64,
    plan: &Plan,
    rest: &RestTables,
    scopes: &Scopes,
    one_by_one: bool,
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
        // A table scoped `via` a key to itself: a row's scope may be one written earlier in
        // the push, which a read ahead would not see.
        let self_via = matches!(
            scope.map(|s| &s.rule),
            Some(ScopeRule::Via(c)) if rest
                .via_parent(&table.name, c)?
                .is_some_and(|(parent, _)| parent.eq_ignore_ascii_case(&table.name))
        );
        let mut writes = if one_by_one || self_via {
            Writes::one_by_one(table)
        } else {
            Writes::batched(table)
        };
        // The row's current scope (NULL when unscoped) comes with its existence, in one lookup.
        let expr = scope.map_or("NULL", |s| s.expr.as_str());
        let mut lookup = Lookup {
            table: table.name.clone(),
            one: tx
                .prepare(&format!(
                    "SELECT CAST({expr} AS TEXT) FROM {relation} t WHERE t.\"id\" = {}",
                    from_text(&table.id.kind, "$1::text")
                ))
                .map_err(pg(format!("looking up rows of table {:?}", table.name)))?,
            ahead: HashMap::new(),
            written: HashSet::new(),
        };
        if !writes.is_one_by_one() {
            let ids: Vec<&str> = p
                .created
                .records()
                .chain(p.updated.records())
                .map(|r| r.id)
                .chain(p.deleted.ids())
                .collect();
            let rows = tx
                .query(
                    &format!(
                        "SELECT t.\"id\"::text, CAST({expr} AS TEXT) FROM {relation} t \
                         WHERE t.\"id\" = ANY({})",
                        id_array(&table.id.kind, 1)
                    ),
                    &[&ids],
                )
                .map_err(lookup_failed(format!("{} (its ids)", table.name)))?;
            lookup.ahead = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        }
        let scope_column = scope.and_then(|s| {
            p.columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(s.rule.column()))
                .map(|i| (i, p.columns[i].as_str()))
        });
        for r in p.created.records().chain(p.updated.records()) {
            let current = lookup.current(&mut tx, &mut writes, r.id)?;
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
            let bound = values
                .iter()
                .map(|&(c, v)| Ok((c, bind(table, r.id, c, v)?)))
                .collect::<Result<Vec<_>, PushError>>()?;
            writes.write(&mut tx, exists, r.id, bound)?;
        }
        for id in p.deleted.ids() {
            if scope.is_some() {
                if let Some(current) = lookup.current(&mut tx, &mut writes, id)? {
                    if !row_scope::holds(scopes, current.as_deref()) {
                        return Err(PushError::Invalid(InvalidPush::ScopeNotGranted {
                            table: p.table.clone(),
                            id: id.to_string(),
                            scope: current,
                        }));
                    }
                }
            } else if !lookup.written.insert(id.to_string()) {
                // Written before in this push: its earlier writes go first.
                writes.flush(&mut tx)?;
            }
            writes.delete(&mut tx, id)?;
        }
        writes.flush(&mut tx)?;
        written += writes.written();
    }
    push_scope::check_followers(&follow_parent, scopes, |table, id, expr| {
        let Some(t) = rest.get(table) else {
            return Ok(None);
        };
        Ok(tx
            .query_opt(
                &format!(
                    "SELECT CAST({expr} AS TEXT) FROM {} t WHERE t.\"id\" = {}",
                    super::rest_log::qualified(table),
                    from_text(&t.id.kind, "$1::text")
                ),
                &[&id],
            )
            .map_err(pg(format!("reading the scope of {table}/{id}")))?
            .and_then(|row| row.get(0)))
    })?;
    tx.commit()
        .map_err(|e| PushError::Commit(Refusal::Postgres(e)))?;
    Ok(written)
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
