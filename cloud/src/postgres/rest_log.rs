//! The REST change log of a PostgreSQL tenant: what `changelog.rs` keeps in `_cloud_rest_log` for
//! the SQLite tenant (when each row of a REST table was created and last changed, whether it is
//! gone, when its scope last moved), kept by PostgreSQL triggers in `outpost.rest_log`
//! (`rest_log.sql`) so the WatermelonDB API's `last_pulled_at` cursor works for every writer:
//! devices' applies (under `outpost.applying`), REST pushes and the back office, in the writer's
//! transaction.
//!
//! [`install`] runs where capture is installed ([`super::app_tables::ensure`], after
//! [`super::capture::install`]), for every REST table among those (tracked, primary key one
//! column named `id`):
//! - three statement triggers with transition tables (`outpost_rest_log_i`, `_u`, `_d`), so a
//!   statement writing many rows logs them with one upsert;
//! - on a scoped table, a statement trigger `outpost_rest_move` (`AFTER UPDATE`, with
//!   transition tables) running `outpost.rest_move_<id>`: for the rows whose scope column or
//!   `via` key the statement changed, it sets their `moved_at` and logs every REST row following
//!   them through `via` keys as changed and moved, as the SQLite tenant's fourth trigger does
//!   (one statement per follower table, however many rows moved). Its body is regenerated for every scoped table
//!   whenever any table's log is installed (a new `via` child changes its parent's followers);
//! - an index on the scope column or `via` key (`outpost_rest_scope_<id>`), through which a
//!   scoped token's first pull reads its rows;
//! - the table's existing rows logged as created now (a table made by a back office before a
//!   batch named it).
//!
//! **Times** are milliseconds, `max(wall clock, last + 1)`, from one clock row
//! (`outpost.rest_clock`) that every logging transaction locks from its first logged write to
//! its end: PostgreSQL is not single-writer like SQLite, and without the lock a transaction that
//! took time 100 and committed after one that took 101 could be missed by a pull whose snapshot
//! saw only the second. With it, times are issued in commit order, so a pull's `timestamp` (the
//! clock row as its snapshot sees it) is above every time in the snapshot and below every time
//! committed after it. The lock is taken after capture's clock row (`outpost.clock`), which
//! every capturing transaction takes first: one order, no deadlock between the two. Every
//! write of one transaction gets the same time.
//!
//! All triggers are `ENABLE ALWAYS`, like capture's.

use super::capture::{self, literal, Captured};
use crate::schema::quote;
use ::postgres::{GenericClient, Transaction};
use outpost_protocol::batch::TableSchema;
use outpost_protocol::scope::ScopeRule;
use std::fmt;

/// The shared objects (`rest_log.sql`).
const SHARED_SQL: &str = include_str!("rest_log.sql");

/// The statement triggers logging inserts, updates and deletes.
pub const TRIGGERS: [&str; 3] = [
    "outpost_rest_log_i",
    "outpost_rest_log_u",
    "outpost_rest_log_d",
];
/// The row trigger of a scoped table recording moves.
pub const MOVE_TRIGGER: &str = "outpost_rest_move";
/// The statement trigger of a scoped REST table keeping the scope value of the rows deleted.
/// Named to sort after `outpost_rest_log_d`: PostgreSQL runs a statement's triggers in name
/// order, and that one logs the deletion this one completes.
pub const GONE_TRIGGER: &str = "outpost_rest_log_d_scope";

/// How deep `via` chains are followed (as `watermelon/row_scope.rs` reads them).
const MAX_VIA_DEPTH: usize = 8;

/// Why the REST change log could not be installed or read.
#[derive(Debug)]
pub enum RestLogError {
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// The captured tables' definitions could not be read.
    Capture(capture::CaptureError),
}

impl fmt::Display for RestLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestLogError::Sql { doing, source } => match source.as_db_error() {
                Some(db) => write!(f, "{doing}: {}", db.message()),
                None => f.write_str(doing),
            },
            RestLogError::Capture(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RestLogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestLogError::Sql { source, .. } => Some(source),
            // Transparent: it says what failed itself.
            RestLogError::Capture(e) => e.source(),
        }
    }
}

impl From<capture::CaptureError> for RestLogError {
    fn from(e: capture::CaptureError) -> Self {
        RestLogError::Capture(e)
    }
}

fn sql(doing: impl Into<String>) -> impl FnOnce(::postgres::Error) -> RestLogError {
    let doing = doing.into();
    move |source| RestLogError::Sql { doing, source }
}

/// `public."table"`.
pub fn qualified(table: &str) -> String {
    format!("{}.{}", quote(super::app_tables::SCHEMA), quote(table))
}

/// Whether the REST API serves `t`: its primary key is one column named `id` (WatermelonDB
/// addresses records by a string `id`), as `changelog::rest_tables` decides on SQLite.
pub fn is_rest(t: &TableSchema) -> bool {
    matches!(t.primary_key.as_slice(), [i] if t.columns.get(*i as usize).is_some_and(|c| c.name == "id"))
}

/// The parent table and its key column that `table`'s `via` column `column` refers to.
pub fn via_parent<'d>(
    defs: &'d [TableSchema],
    table: &TableSchema,
    column: &str,
) -> Option<(&'d TableSchema, String)> {
    let i = table
        .columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(column))?;
    let fk = table
        .foreign_keys
        .iter()
        .find(|fk| fk.columns == [i as u16])?;
    let parent = defs
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(&fk.parent))?;
    let key = match fk.parent_columns.first() {
        Some(c) => c.clone(),
        None => match parent.primary_key.as_slice() {
            [k] => parent.columns.get(*k as usize)?.name.clone(),
            _ => return None,
        },
    };
    Some((parent, key))
}

/// Installs the log (shared objects, and the triggers of the REST tables among `tables`: names
/// as they are here) in the caller's transaction, after capture's, and refreshes every scoped
/// table's move function.
pub fn install(tx: &mut Transaction<'_>, tables: &[String]) -> Result<(), RestLogError> {
    tx.batch_execute(SHARED_SQL)
        .map_err(sql("installing the REST change log in schema outpost"))?;
    let all = capture::captured(tx)?;
    let defs: Vec<TableSchema> = all.iter().map(|c| c.def.clone()).collect();
    for name in tables {
        let Some(c) = all.iter().find(|c| c.def.name == *name) else {
            continue;
        };
        if !is_rest(&c.def) {
            continue;
        }
        let first_time = !has_triggers(tx, &c.def.name)?;
        tx.batch_execute(&table_sql(c)).map_err(sql(format!(
            "installing the REST log triggers of table {name:?}"
        )))?;
        if first_time {
            tx.execute(
                &format!(
                    "INSERT INTO outpost.rest_log(tbl, id, created_at, changed_at) \
                     SELECT $1, \"id\"::text, outpost.rest_now(), outpost.rest_now() FROM {} \
                     ON CONFLICT DO NOTHING",
                    qualified(&c.def.name)
                ),
                &[&c.def.name],
            )
            .map_err(sql(format!("logging the rows of table {name:?}")))?;
        }
    }
    for c in &all {
        let Some(rule) = c.def.scope_rule() else {
            continue;
        };
        let function = move_function(c, &rule, &defs);
        tx.batch_execute(&function).map_err(sql(format!(
            "installing the scope-move function of table {:?}",
            c.def.name
        )))?;
        if tables.contains(&c.def.name) {
            tx.batch_execute(&move_trigger(c)).map_err(sql(format!(
                "installing the scope-move trigger of table {:?}",
                c.def.name
            )))?;
            if is_rest(&c.def) {
                tx.batch_execute(&gone_trigger(c, &rule))
                    .map_err(sql(format!(
                        "installing the deleted-scope trigger of table {:?}",
                        c.def.name
                    )))?;
            }
        }
    }
    Ok(())
}

/// Installs the log on every captured table lacking it (a tenant whose tables were captured
/// before the REST log existed), in one transaction; returns the tables it installed.
pub fn ensure(client: &mut impl GenericClient) -> Result<Vec<String>, RestLogError> {
    let all = capture::captured(client)?;
    let mut missing = Vec::new();
    for c in &all {
        if is_rest(&c.def) && !has_triggers(client, &c.def.name)? {
            missing.push(c.def.name.clone());
        }
    }
    if missing.is_empty() {
        return Ok(missing);
    }
    let mut tx = client
        .transaction()
        .map_err(sql("starting a transaction"))?;
    install(&mut tx, &missing)?;
    tx.commit()
        .map_err(sql("committing the REST change log's triggers"))?;
    Ok(missing)
}

/// Whether `table` has its three log triggers.
fn has_triggers(client: &mut impl GenericClient, table: &str) -> Result<bool, RestLogError> {
    let names: Vec<String> = TRIGGERS.iter().map(|s| s.to_string()).collect();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = ANY($2)",
            &[&qualified(table), &names],
        )
        .map_err(sql(format!(
            "looking for the REST log triggers of table {table:?}"
        )))?
        .get(0);
    Ok(n as usize == TRIGGERS.len())
}

/// The three statement triggers of a REST table, and its scope index.
fn table_sql(c: &Captured) -> String {
    let tbl = qualified(&c.def.name);
    let [i, u, d] = TRIGGERS.map(quote);
    let index = match c.def.scope_rule() {
        Some(rule) => format!(
            "CREATE INDEX IF NOT EXISTS {} ON {tbl}({});",
            quote(&format!("outpost_rest_scope_{}", c.id)),
            quote(rule.column())
        ),
        None => String::new(),
    };
    format!(
        "DROP TRIGGER IF EXISTS {i} ON {tbl};
         DROP TRIGGER IF EXISTS {u} ON {tbl};
         DROP TRIGGER IF EXISTS {d} ON {tbl};
         CREATE TRIGGER {i} AFTER INSERT ON {tbl} REFERENCING NEW TABLE AS rest_new
           FOR EACH STATEMENT EXECUTE FUNCTION outpost.rest_log_insert();
         CREATE TRIGGER {u} AFTER UPDATE ON {tbl} REFERENCING OLD TABLE AS rest_old NEW TABLE AS rest_new
           FOR EACH STATEMENT EXECUTE FUNCTION outpost.rest_log_update();
         CREATE TRIGGER {d} AFTER DELETE ON {tbl} REFERENCING OLD TABLE AS rest_old
           FOR EACH STATEMENT EXECUTE FUNCTION outpost.rest_log_delete();
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {i};
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {u};
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {d};
         {index}"
    )
}

/// The name of a scoped table's move function.
fn move_function_name(c: &Captured) -> String {
    format!("outpost.{}", quote(&format!("rest_move_{}", c.id)))
}

/// The statement trigger running a scoped table's move function after every `UPDATE` of it.
/// A statement trigger, not a row trigger: a back-office statement moving 10,000 rows ran the
/// followers' log updates 10,000 times (16 s of the statement's 20 s, docs/performance.md); with
/// the statement's transition tables they run once. (A trigger with transition tables cannot
/// name columns, `UPDATE OF`: the function picks the rows whose scope value changed itself.)
fn move_trigger(c: &Captured) -> String {
    let tbl = qualified(&c.def.name);
    let trigger = quote(MOVE_TRIGGER);
    format!(
        "DROP TRIGGER IF EXISTS {trigger} ON {tbl};
         CREATE TRIGGER {trigger} AFTER UPDATE ON {tbl}
           REFERENCING OLD TABLE AS rest_move_old NEW TABLE AS rest_move_new
           FOR EACH STATEMENT EXECUTE FUNCTION {}();
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {trigger};",
        move_function_name(c)
    )
}

/// The trigger of scoped REST table `c` keeping, for each row a statement deletes, the scope
/// cell (or `via` key) it had in its log entry (`scope_value`), with its function.
fn gone_trigger(c: &Captured, rule: &ScopeRule) -> String {
    let tbl = qualified(&c.def.name);
    let trigger = quote(GONE_TRIGGER);
    let name = format!("outpost.{}", quote(&format!("rest_gone_{}", c.id)));
    let function = format!(
        "BEGIN UPDATE outpost.rest_log l SET scope_value = CAST(o.{} AS TEXT) \
         FROM rest_gone_old o WHERE l.tbl = {} AND l.id = o.\"id\"::text; RETURN NULL; END",
        quote(rule.column()),
        literal(&c.def.name)
    );
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog, pg_temp AS {};
         REVOKE ALL ON FUNCTION {name}() FROM PUBLIC;
         DROP TRIGGER IF EXISTS {trigger} ON {tbl};
         CREATE TRIGGER {trigger} AFTER DELETE ON {tbl} REFERENCING OLD TABLE AS rest_gone_old
           FOR EACH STATEMENT EXECUTE FUNCTION {name}();
         ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {trigger};",
        literal(&function)
    )
}

/// The rows of table `c` whose scope column `col` the statement changed (a subquery over the
/// move trigger's transition tables, matched by the primary key), as rows of the table.
fn moved_rows(c: &Captured, col: &str) -> String {
    let on: Vec<String> = c
        .def
        .primary_key
        .iter()
        .filter_map(|&i| c.def.columns.get(i as usize))
        .map(|k| format!("o.{0} = n.{0}", quote(&k.name)))
        .collect();
    format!(
        "(SELECT n.* FROM rest_move_new n JOIN rest_move_old o ON {} \
         WHERE o.{col} IS DISTINCT FROM n.{col})",
        on.join(" AND "),
        col = quote(col)
    )
}

/// A table whose rows follow a scoped table's rows (`via`, at any depth), with the condition
/// selecting, in the parent's move function, the rows that follow the rows the statement moved.
struct Follower<'d> {
    child: &'d TableSchema,
    filter: String,
}

/// The followers of `table`, whose moving rows are `parents` (a subquery of rows of it).
fn followers<'d>(
    defs: &'d [TableSchema],
    table: &TableSchema,
    parents: &str,
    depth: usize,
    out: &mut Vec<Follower<'d>>,
) {
    if depth >= MAX_VIA_DEPTH {
        return;
    }
    for child in defs {
        let Some(ScopeRule::Via(fk)) = child.scope_rule() else {
            continue;
        };
        let Some((parent, key)) = via_parent(defs, child, &fk) else {
            continue;
        };
        if !parent.name.eq_ignore_ascii_case(&table.name) {
            continue;
        }
        let filter = format!(
            "{} IN (SELECT p.{} FROM {parents} p)",
            quote(&fk),
            quote(&key)
        );
        let rows = format!("(SELECT * FROM {} WHERE {filter})", qualified(&child.name));
        followers(defs, child, &rows, depth + 1, out);
        out.push(Follower { child, filter });
    }
}

/// The move function of scoped table `c`: the moved rows' `moved_at`, and every REST row
/// following them logged as changed and moved (docs/rest-api.md, "Scopes").
fn move_function(c: &Captured, rule: &ScopeRule, defs: &[TableSchema]) -> String {
    let moved = moved_rows(c, rule.column());
    let mut found = Vec::new();
    followers(defs, &c.def, &moved, 0, &mut found);
    let mut body = String::new();
    if is_rest(&c.def) {
        body.push_str(&format!(
            "UPDATE outpost.rest_log SET moved_at = t WHERE tbl = {} AND id IN \
             (SELECT m.\"id\"::text FROM {moved} m);\n",
            literal(&c.def.name)
        ));
    }
    for f in found.iter().filter(|f| is_rest(f.child)) {
        body.push_str(&format!(
            "UPDATE outpost.rest_log SET changed_at = t, moved_at = t WHERE tbl = {} AND id IN \
             (SELECT \"id\"::text FROM {} WHERE {});\n",
            literal(&f.child.name),
            qualified(&f.child.name),
            f.filter
        ));
    }
    // Nothing to log (no REST row moves with it): the function takes no lock. Nor does a
    // statement that moved nothing (most updates: another column).
    let function = if body.is_empty() {
        "BEGIN RETURN NULL; END".to_string()
    } else {
        format!(
            "DECLARE t bigint; BEGIN IF NOT EXISTS {moved} THEN RETURN NULL; END IF; \
             t := outpost.rest_now(); {body} RETURN NULL; END"
        )
    };
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog, pg_temp AS {};
         REVOKE ALL ON FUNCTION {name}() FROM PUBLIC;",
        literal(&function),
        name = move_function_name(c)
    )
}

/// The REST clock as `client`'s snapshot sees it: the time of the last logging transaction it
/// sees (0 before any, or before the log exists).
pub fn latest(client: &mut impl GenericClient) -> Result<i64, RestLogError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('outpost.rest_clock') IS NOT NULL", &[])
        .map_err(sql("looking for outpost.rest_clock"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT at FROM outpost.rest_clock WHERE one", &[])
        .map_err(sql("reading the REST clock (outpost.rest_clock)"))?
        .get(0))
}
