//! Capture of back-office writes (issue 21, docs/design.md section 11): an `INSERT`, `UPDATE` or
//! `DELETE` any PostgreSQL client makes on a tracked table becomes a change of the cloud's
//! origin, recorded in the writing transaction, as the engine's triggers record a device's
//! writes (`sqlite-ext/src/triggers.rs`, `fold.rs`).
//!
//! [`install`] runs in the transaction that makes or extends an app table
//! ([`super::app_tables::ensure`]); it puts in place the shared objects of `capture.sql` (the
//! one clock row, the per-stream seq rows, the outbox, the rows' causal lengths) and, per table:
//! - a trigger function `outpost.capture_<id>` (PL/pgSQL, `SECURITY DEFINER`: a back-office
//!   role needs no right on the `outpost` schema) run `AFTER INSERT OR UPDATE OR DELETE ... FOR
//!   EACH ROW`. It finds the row's stream from the table's scope rule (an insert in its new
//!   scope, an update or delete in the scope the row had, a `via` row in its parent's) and
//!   records the key and, for an update, only the value columns whose value changed (all of them
//!   for `row_lww`); a counter column's `NEW - OLD` delta; a key change as a delete of the old
//!   key and an insert of the new one. Regenerated whenever a column is added;
//! - a statement trigger writing the statement's clocks back to the clock row, and one before
//!   the statement holding that row (so a back-office transaction and a device's apply take
//!   turns: `capture.sql`);
//! - a `BEFORE TRUNCATE` trigger refusing `TRUNCATE`, naming the table.
//!
//! All of them are `ENABLE ALWAYS`: they fire under `session_replication_role = replica` too.
//!
//! **Skipping capture** is the apply core's alone: a transaction applying devices' changes runs
//! `SET LOCAL outpost.applying = 'on'`, and its writes are not captured. A session of another
//! role than the one that installed capture (the cloud's) setting it has its write refused. The
//! row trigger's `WHEN` skips the cloud's applying session without calling anything, so an
//! apply's rows queue no trigger event at all (the function checks again, and refuses another
//! role).
//! **Capture switched off** otherwise needs `ALTER TABLE ... DISABLE TRIGGER` (the table's owner
//! or a superuser: back-office roles given only `SELECT, INSERT, UPDATE, DELETE` cannot) or
//! dropping the trigger; the outbox's reader refuses to read while any captured table lacks an
//! enabled trigger ([`super::outbox::check_capture`]), naming it. An event trigger could refuse
//! the `ALTER TABLE` itself, but making one needs a superuser, which the cloud's role is not
//! asked to be (docs/cloud.md, "PostgreSQL").

use crate::schema::quote;
use ::postgres::Transaction;
use outpost_protocol::batch::TableSchema;
use outpost_protocol::scope::ScopeColumn;
use outpost_protocol::Strategy;
use std::fmt;

/// The shared objects (`capture.sql`), `{ROLE}` standing for the cloud's role as a literal.
const SHARED_SQL: &str = include_str!("capture.sql");

/// The apply core's merge state beside capture's (`store.rs`): installed with it, so every
/// database whose tables are tracked has both.
const MERGE_STATE_SQL: &str = include_str!("merge_state.sql");

/// The name of the row trigger on every tracked table (the statement and truncate triggers
/// are `outpost_capture_flush` and `outpost_truncate`).
pub const ROW_TRIGGER: &str = "outpost_capture";
/// The statement trigger writing clocks back.
pub const FLUSH_TRIGGER: &str = "outpost_capture_flush";
/// The trigger refusing `TRUNCATE`.
pub const TRUNCATE_TRIGGER: &str = "outpost_truncate";
/// The statement trigger holding the clock row before a statement locks rows (`capture.sql`,
/// `outpost.capture_hold`).
pub const HOLD_TRIGGER: &str = "outpost_capture_hold";

/// How deep a `via` chain is followed to find a row's scope (a longer one puts the row in the
/// unscoped stream).
const MAX_VIA_DEPTH: usize = 8;

/// Op codes of `outpost.outbox`.
pub const OP_INSERT: i16 = 1;
/// An update of some value columns.
pub const OP_UPDATE: i16 = 2;
/// A delete.
pub const OP_DELETE: i16 = 3;
/// A transfer of the row into the entry's stream (`capture.sql`, `outpost.transfer`): no write
/// of its own, its batch carries the row's merge state ([`super::transfer`]).
pub const OP_TRANSFER: i16 = 4;

/// Why capture could not be installed; the transaction is then rolled back by the caller.
#[derive(Debug)]
pub enum CaptureError {
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// A stored definition in `outpost.captured` does not parse.
    Damaged {
        /// The table.
        table: String,
        /// The parser's reason.
        source: serde_json::Error,
    },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Sql { doing, .. } => f.write_str(doing),
            CaptureError::Damaged { table, .. } => write!(
                f,
                "the definition of table {table:?} in outpost.captured is damaged"
            ),
        }
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaptureError::Sql { source, .. } => Some(source),
            CaptureError::Damaged { source, .. } => Some(source),
        }
    }
}

fn sql(doing: String) -> impl FnOnce(::postgres::Error) -> CaptureError {
    move |source| CaptureError::Sql { doing, source }
}

/// A string literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `public."table"`.
fn qualified(table: &str) -> String {
    format!("{}.{}", quote(super::app_tables::SCHEMA), quote(table))
}

/// A table whose writes are captured, as `outpost.captured` holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Captured {
    /// Its id in the outbox.
    pub id: i32,
    /// Its definition, named as the table is in PostgreSQL.
    pub def: TableSchema,
}

/// Every captured table, by id.
pub fn captured(
    client: &mut impl ::postgres::GenericClient,
) -> Result<Vec<Captured>, CaptureError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('outpost.captured') IS NOT NULL", &[])
        .map_err(sql("looking for outpost.captured".into()))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT id, name, def::text FROM outpost.captured ORDER BY id",
            &[],
        )
        .map_err(sql("reading outpost.captured".into()))?;
    rows.iter()
        .map(|r| {
            let name: String = r.get(1);
            let def: TableSchema =
                serde_json::from_str(r.get(2)).map_err(|source| CaptureError::Damaged {
                    table: name,
                    source,
                })?;
            Ok(Captured { id: r.get(0), def })
        })
        .collect()
}

/// The definition to capture for a table named `name` here: what `outpost.captured` holds for
/// it with the columns `header` adds appended (as `ALTER TABLE ADD COLUMN` appends them), or
/// `header`'s own for a table captured for the first time.
fn merged(stored: Option<&TableSchema>, header: &TableSchema, name: &str) -> TableSchema {
    let mut def = stored.cloned().unwrap_or_else(|| header.clone());
    def.name = name.to_string();
    if stored.is_some() {
        for c in &header.columns {
            if !def
                .columns
                .iter()
                .any(|d| d.name.eq_ignore_ascii_case(&c.name))
            {
                def.columns.push(c.clone());
            }
        }
    }
    def
}

/// Installs (or re-installs) capture on the tables `tables` names: `(name here, the header's
/// definition)`. Runs inside the caller's transaction, after the tables exist with every column.
pub fn install(
    tx: &mut Transaction<'_>,
    tables: &[(String, TableSchema)],
) -> Result<(), CaptureError> {
    let role: String = tx
        .query_one("SELECT current_user::text", &[])
        .map_err(sql("reading the cloud's role".into()))?
        .get(0);
    // `init` made the schema (`meta.rs`); made here too for a database prepared otherwise.
    let has_schema: bool = tx
        .query_one("SELECT to_regnamespace('outpost') IS NOT NULL", &[])
        .map_err(sql("looking for schema outpost".into()))?
        .get(0);
    if !has_schema {
        tx.batch_execute("CREATE SCHEMA outpost")
            .map_err(sql("creating schema outpost".into()))?;
    }
    tx.batch_execute(&SHARED_SQL.replace("{ROLE}", &literal(&role)))
        .map_err(sql(
            "installing capture's shared objects in schema outpost".into()
        ))?;
    tx.batch_execute(MERGE_STATE_SQL)
        .map_err(sql("installing the merge state in schema outpost".into()))?;
    // Every definition first: a `via` table's trigger reads its parent's scope rule.
    let mut all = captured(tx)?;
    for (name, header) in tables {
        let stored = all.iter().position(|c| c.def.name == *name);
        let def = merged(stored.map(|i| &all[i].def), header, name);
        let json = serde_json::to_string(&def).expect("a TableSchema serialises");
        let id: i32 = tx
            .query_one(
                "INSERT INTO outpost.captured(name, def) VALUES ($1, $2::text::jsonb) \
                 ON CONFLICT (name) DO UPDATE SET def = excluded.def RETURNING id",
                &[name, &json],
            )
            .map_err(sql(format!("recording the capture of table {name:?}")))?
            .get(0);
        match stored {
            Some(i) => all[i].def = def,
            None => all.push(Captured { id, def }),
        }
    }
    let defs: Vec<TableSchema> = all.iter().map(|c| c.def.clone()).collect();
    for (name, _) in tables {
        let Some(c) = all.iter().find(|c| c.def.name == *name) else {
            continue;
        };
        tx.batch_execute(&table_sql(c, &defs, &role))
            .map_err(sql(format!(
                "installing the capture triggers of table {name:?}"
            )))?;
    }
    Ok(())
}

/// The trigger function and triggers of one table; `role` is the cloud's (the one session that
/// may apply devices' changes uncaptured).
pub fn table_sql(c: &Captured, defs: &[TableSchema], role: &str) -> String {
    let t = &c.def;
    let tbl = qualified(&t.name);
    let function = format!("outpost.{}", quote(&format!("capture_{}", c.id)));
    let body = function_body(c, defs);
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS {};
         REVOKE ALL ON FUNCTION {function}() FROM PUBLIC;
         DROP TRIGGER IF EXISTS {row} ON {tbl};
         DROP TRIGGER IF EXISTS {flush} ON {tbl};
         DROP TRIGGER IF EXISTS {trunc} ON {tbl};
         DROP TRIGGER IF EXISTS {hold} ON {tbl};
         CREATE TRIGGER {hold} BEFORE INSERT OR UPDATE OR DELETE ON {tbl}
           FOR EACH STATEMENT EXECUTE FUNCTION outpost.capture_hold();
         CREATE TRIGGER {row} AFTER INSERT OR UPDATE OR DELETE ON {tbl}
           FOR EACH ROW WHEN (coalesce(current_setting('outpost.applying', true), '') <> 'on'
                              OR session_user <> {role})
           EXECUTE FUNCTION {function}();
         CREATE TRIGGER {flush} AFTER INSERT OR UPDATE OR DELETE ON {tbl}
           FOR EACH STATEMENT EXECUTE FUNCTION outpost.capture_flush();
         CREATE TRIGGER {trunc} BEFORE TRUNCATE ON {tbl}
           FOR EACH STATEMENT EXECUTE FUNCTION outpost.refuse_truncate();
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {row};
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {flush};
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {trunc};
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {hold};",
        literal(&body),
        hold = quote(HOLD_TRIGGER),
        role = literal(role),
        row = quote(ROW_TRIGGER),
        flush = quote(FLUSH_TRIGGER),
        trunc = quote(TRUNCATE_TRIGGER),
    )
}

/// The value columns of `t`: (value-column number, column index, strategy).
fn value_columns(t: &TableSchema) -> Vec<(usize, usize, Strategy)> {
    t.value_columns()
        .enumerate()
        .map(|(n, i)| (n, i as usize, t.columns[i as usize].strategy))
        .collect()
}

/// `jsonb_build_array(ROW."k1", ...)`: the key as the outbox holds it.
fn key_expr(t: &TableSchema, row: &str) -> String {
    let parts: Vec<String> = t
        .primary_key
        .iter()
        .map(|&i| format!("{row}.{}", quote(&t.columns[i as usize].name)))
        .collect();
    format!("jsonb_build_array({})", parts.join(", "))
}

/// The raw scope value (text, or NULL) of the row `alias` of table `t`, following `via`
/// references through `defs`.
fn scope_value(t: &TableSchema, alias: &str, defs: &[TableSchema], depth: usize) -> String {
    let Some(scope) = t.scope else {
        return "NULL::text".into();
    };
    match scope {
        ScopeColumn::Column(i) => match t.columns.get(i as usize) {
            Some(c) => format!("{alias}.{}::text", quote(&c.name)),
            None => "NULL::text".into(),
        },
        ScopeColumn::Via(i) => {
            let parent = t
                .foreign_keys
                .iter()
                .find(|fk| fk.columns == [i])
                .and_then(|fk| {
                    let p = defs
                        .iter()
                        .find(|d| d.name.eq_ignore_ascii_case(&fk.parent))?;
                    let column = match fk.parent_columns.first() {
                        Some(c) => c.clone(),
                        None => p.columns[*p.primary_key.first()? as usize].name.clone(),
                    };
                    Some((p, column))
                });
            let (Some((p, column)), Some(c), true) =
                (parent, t.columns.get(i as usize), depth < MAX_VIA_DEPTH)
            else {
                return "NULL::text".into();
            };
            let next = format!("p{depth}");
            format!(
                "(SELECT {} FROM {} {next} WHERE {next}.{} = {alias}.{})",
                scope_value(p, &next, defs, depth + 1),
                qualified(&p.name),
                quote(&column),
                quote(&c.name)
            )
        }
    }
}

/// The stream of the row `row` (`NEW` or `OLD`).
fn stream_expr(t: &TableSchema, row: &str, defs: &[TableSchema]) -> String {
    match t.scope {
        None => "''".into(),
        Some(_) => format!("outpost.stream_of({})", scope_value(t, row, defs, 0)),
    }
}

/// The PL/pgSQL body of a table's trigger function.
fn function_body(c: &Captured, defs: &[TableSchema]) -> String {
    let t = &c.def;
    let id = c.id;
    let cols = value_columns(t);
    let row_lww = cols.iter().any(|&(_, _, s)| s == Strategy::RowLww);
    let name = |i: usize| quote(&t.columns[i].name);
    let reviews: Vec<String> = cols
        .iter()
        .filter(|&&(_, _, s)| s == Strategy::Review)
        .map(|&(n, _, _)| literal(&n.to_string()))
        .collect();
    let reviews = if reviews.is_empty() {
        "NULL::text[]".to_string()
    } else {
        format!("ARRAY[{}]::text[]", reviews.join(", "))
    };
    // An insert: every value column, counters as their inserted values (deltas from 0).
    let mut inserted = Vec::new();
    let mut counters_new = Vec::new();
    for &(n, i, s) in &cols {
        if s == Strategy::Counter {
            counters_new.push(format!("'{n}', coalesce(NEW.{}, 0)", name(i)));
        } else {
            inserted.push(format!("'{n}', NEW.{}", name(i)));
        }
    }
    let object = |parts: &[String]| {
        // jsonb_build_object takes at most 100 arguments: chunks of 50 pairs, concatenated.
        if parts.is_empty() {
            return "'{}'::jsonb".to_string();
        }
        parts
            .chunks(50)
            .map(|ch| format!("jsonb_build_object({})", ch.join(", ")))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    let ins_cells = object(&inserted);
    let ins_deltas = if counters_new.is_empty() {
        "NULL::jsonb".to_string()
    } else {
        object(&counters_new)
    };
    // An update that moves the row to another stream (its scope cell, or its `via` reference,
    // changed) also transfers it there (`capture.sql`, `outpost.moved`).
    let moved = match t.scope {
        None => String::new(),
        Some(_) => format!(
            "IF {new} IS DISTINCT FROM {old} THEN
               PERFORM outpost.moved({id}, {key}, {old}, {new});
             END IF;",
            new = stream_expr(t, "NEW", defs),
            old = stream_expr(t, "OLD", defs),
            key = key_expr(t, "NEW"),
        ),
    };
    let capture = |op: i16, row: &str, cells: &str, deltas: &str| {
        format!(
            "PERFORM outpost.capture({id}, {op}::smallint, {}, {}, {cells}, {deltas}, {reviews});",
            stream_expr(t, row, defs),
            key_expr(t, row)
        )
    };
    // An update: each changed column.
    let mut changed = String::new();
    for &(n, i, s) in &cols {
        let c = name(i);
        if s == Strategy::Counter {
            changed.push_str(&format!(
                "IF NEW.{c} IS DISTINCT FROM OLD.{c} THEN
                   deltas := coalesce(deltas, '{{}}'::jsonb)
                     || jsonb_build_object('{n}', coalesce(NEW.{c}, 0) - coalesce(OLD.{c}, 0));
                 END IF;\n"
            ));
        } else {
            changed.push_str(&format!(
                "IF NEW.{c} IS DISTINCT FROM OLD.{c} THEN
                   cells := cells || jsonb_build_object('{n}', NEW.{c});
                 END IF;\n"
            ));
        }
    }
    if row_lww {
        // Any changed column rewrites the whole row.
        changed.push_str(&format!(
            "IF cells <> '{{}}'::jsonb OR deltas IS NOT NULL THEN cells := {ins_cells}; END IF;\n"
        ));
    }
    let key_cols: Vec<String> = t.primary_key.iter().map(|&i| name(i as usize)).collect();
    let new_key: Vec<String> = key_cols.iter().map(|k| format!("NEW.{k}")).collect();
    let old_key: Vec<String> = key_cols.iter().map(|k| format!("OLD.{k}")).collect();
    format!(
        "DECLARE
           cells jsonb := '{{}}'::jsonb;
           deltas jsonb;
         BEGIN
           IF outpost.capture_skipped() THEN
             RETURN NULL;
           END IF;
           IF TG_OP = 'INSERT' THEN
             {ins}
           ELSIF TG_OP = 'DELETE' THEN
             {del}
           ELSIF ROW({new_key}) IS DISTINCT FROM ROW({old_key}) THEN
             -- A key change: the old row is deleted, the new one inserted.
             {del}
             {ins}
           ELSE
             {changed}
             IF cells <> '{{}}'::jsonb OR deltas IS NOT NULL THEN
               {upd}
               {moved}
             END IF;
           END IF;
           RETURN NULL;
         END",
        ins = capture(OP_INSERT, "NEW", &ins_cells, &ins_deltas),
        del = capture(OP_DELETE, "OLD", "NULL::jsonb", "NULL::jsonb"),
        upd = capture(OP_UPDATE, "OLD", "cells", "deltas"),
        new_key = new_key.join(", "),
        old_key = old_key.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::batch::{ColumnSchema, ForeignKey};

    fn col(name: &str, strategy: Strategy) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            decl_type: "TEXT".into(),
            strategy,
            not_null: false,
        }
    }

    #[test]
    fn a_via_row_takes_its_parents_scope_cell() {
        let clinics = TableSchema {
            name: "patients".into(),
            columns: vec![col("id", Strategy::Lww), col("clinic", Strategy::Lww)],
            primary_key: vec![0],
            foreign_keys: vec![],
            scope: Some(ScopeColumn::Column(1)),
        };
        let visits = TableSchema {
            name: "visits".into(),
            columns: vec![col("id", Strategy::Lww), col("patient_id", Strategy::Lww)],
            primary_key: vec![0],
            foreign_keys: vec![ForeignKey {
                columns: vec![1],
                parent: "Patients".into(),
                parent_columns: vec![],
            }],
            scope: Some(ScopeColumn::Via(1)),
        };
        let defs = [clinics.clone(), visits.clone()];
        assert_eq!(
            stream_expr(&clinics, "NEW", &defs),
            "outpost.stream_of(NEW.\"clinic\"::text)"
        );
        assert_eq!(
            stream_expr(&visits, "OLD", &defs),
            "outpost.stream_of((SELECT p0.\"clinic\"::text FROM \"public\".\"patients\" p0 \
             WHERE p0.\"id\" = OLD.\"patient_id\"))"
        );
    }

    #[test]
    fn a_stored_definition_gains_the_headers_new_columns_in_order() {
        let stored = TableSchema {
            name: "patients".into(),
            columns: vec![col("id", Strategy::Lww), col("n", Strategy::Counter)],
            primary_key: vec![0],
            foreign_keys: vec![],
            scope: None,
        };
        let mut header = stored.clone();
        header.name = "Patients".into();
        header.columns = vec![col("ID", Strategy::Lww), col("phone", Strategy::Lww)];
        let m = merged(Some(&stored), &header, "patients");
        let names: Vec<&str> = m.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "n", "phone"]);
        assert_eq!(m.columns[1].strategy, Strategy::Counter);
    }
}
