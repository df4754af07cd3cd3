//! When each record last changed, for the REST API's `last_pulled_at` cursor.
//!
//! The extension keeps per-cell hybrid logical clocks in a packed internal blob and exposes no
//! per-row "last changed" through SQL (docs/sql-api.md), and an HLC says when a write was *made*,
//! not when the cloud *received* it (a device offline for a week syncs old clocks today; a pull
//! cursor compared against them would miss its changes). So the cloud keeps its own table in the
//! tenant database:
//!
//! ```text
//! _cloud_rest_log(tbl, id, created_at, changed_at, deleted, moved_at)   PRIMARY KEY (tbl, id)
//! ```
//!
//! maintained by AFTER INSERT/UPDATE/DELETE triggers on every tracked table whose primary key is
//! one column named `id` (the tables WatermelonDB can address). The triggers fire for every
//! write, whoever makes it: batches applied by the engine, REST pushes, an operator in the
//! `sqlite3` shell; in the writer's transaction, so the log can never disagree with the rows.
//! A scoped table has a fourth trigger: when a row's scope changes, it records when
//! (`moved_at`), and logs the rows that follow it (`via` rules, docs/rest-api.md "Scopes") as
//! changed and moved too, so a token's next pull tells it that they left (or joined) its
//! scopes, and names as deleted only rows that moved since its last pull (rows that were never
//! in its scopes are not named at all).
//!
//! Times are a **monotonic millisecond clock in SQL**: `max(wall-clock ms, highest logged + 1)`,
//! so they never go backwards even when the machine's clock does, and every write transaction
//! committed after a pull's snapshot gets a time above every time that snapshot saw. An UPDATE
//! that changes no column (an engine merge that lost) is not logged.
//!
//! **Rows the engine applies are logged in bulk** (`changelog/applied.rs`): the triggers are
//! named with [`TRIGGER_PREFIX`], which the tenant gives the engine (`outpost_list_applied`), so
//! they are switched off while a batch is applied, and the engine lists the rows it wrote
//! instead. With a trigger of ours running, every applied row paid SQLite's statement journal:
//! 60% of an ingest's CPU (docs/performance.md). The list is brought into the log, one
//! statement per table, before every ingest round ends and before every REST pull and push
//! ([`ensure_triggers`]), in a transaction of its own: a pull between an apply and that step
//! sees the rows at its next pull, with a time above the one it holds. To tell a move from the
//! log alone, each entry keeps the value its row's scope column (or `via` key) had when it was
//! last logged (`scope_value`).

use crate::schema::{quote, SchemaError};
use outpost_protocol::scope::ScopeRule;
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::fmt;

mod applied;

/// The name prefix of the log's triggers, which applies switch off (`outpost_list_applied`).
pub const TRIGGER_PREFIX: &str = "_cloud_rest_";

/// Why the REST change log or its triggers could not be made or read.
#[derive(Debug)]
pub enum ChangelogError {
    /// Creating `_cloud_rest_log` or its indexes failed.
    CreateLog {
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Listing the tracked tables or a table's columns failed.
    Schema(SchemaError),
    /// Reading a tracked table's primary key failed.
    ReadKey {
        /// The table.
        table: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Installing a table's triggers or scope index (or logging its existing rows) failed; the
    /// table's transaction was rolled back.
    Trigger {
        /// The table.
        table: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Reading the highest logged time failed.
    Latest {
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Logging the rows the engine applied (`outpost_applied`) failed; the list was kept.
    Applied {
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

impl fmt::Display for ChangelogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangelogError::CreateLog { .. } => f.write_str("creating the REST change log"),
            ChangelogError::Schema(e) => e.fmt(f),
            ChangelogError::ReadKey { table, .. } => {
                write!(f, "reading the primary key of table {table:?}")
            }
            ChangelogError::Trigger { table, .. } => {
                write!(f, "creating REST trigger on {table:?}")
            }
            ChangelogError::Latest { .. } => f.write_str("reading the REST change log"),
            ChangelogError::Applied { .. } => {
                f.write_str("logging the rows the engine applied in the REST change log")
            }
        }
    }
}

impl std::error::Error for ChangelogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChangelogError::CreateLog { source }
            | ChangelogError::ReadKey { source, .. }
            | ChangelogError::Trigger { source, .. }
            | ChangelogError::Latest { source }
            | ChangelogError::Applied { source } => Some(source),
            // Transparent: the schema error says what failed itself.
            ChangelogError::Schema(e) => e.source(),
        }
    }
}

impl From<SchemaError> for ChangelogError {
    fn from(e: SchemaError) -> Self {
        ChangelogError::Schema(e)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _cloud_rest_log(
    tbl TEXT NOT NULL,
    id NOT NULL,
    created_at INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    moved_at INTEGER NOT NULL DEFAULT 0,
    scope_value,
    PRIMARY KEY (tbl, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _cloud_rest_log_changed ON _cloud_rest_log(tbl, changed_at);
CREATE INDEX IF NOT EXISTS _cloud_rest_log_time ON _cloud_rest_log(changed_at);
";

/// The SQL expression of the clock (see the module doc).
const NOW: &str = "max(CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER), \
     coalesce((SELECT max(changed_at) FROM _cloud_rest_log), 0) + 1)";

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Creates the log table.
pub fn ensure_table(conn: &Connection) -> Result<(), ChangelogError> {
    let make = || -> rusqlite::Result<()> {
        conn.execute_batch(SCHEMA)?;
        let has_moved: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_table_info('_cloud_rest_log') WHERE name = 'moved_at'",
            [],
            |r| r.get(0),
        )?;
        if has_moved == 0 {
            // A log made before scopes: any change may have been a move.
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 ALTER TABLE _cloud_rest_log ADD COLUMN moved_at INTEGER NOT NULL DEFAULT 0;
                 UPDATE _cloud_rest_log SET moved_at = changed_at;
                 COMMIT;",
            )?;
        }
        let has_scope: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_table_info('_cloud_rest_log') WHERE name = 'scope_value'",
            [],
            |r| r.get(0),
        )?;
        if has_scope == 0 {
            // Filled in for every scoped table as its triggers are replaced (`install_triggers`).
            conn.execute_batch("ALTER TABLE _cloud_rest_log ADD COLUMN scope_value")?;
        }
        Ok(())
    };
    make().map_err(|source| ChangelogError::CreateLog { source })
}

/// The tracked tables the REST API serves: primary key = one column named `id`.
pub fn rest_tables(conn: &Connection) -> Result<Vec<String>, ChangelogError> {
    let mut out = Vec::new();
    for t in crate::schema::tracked_tables(conn)? {
        let pk = || -> rusqlite::Result<Vec<String>> {
            conn.prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0")?
                .query_map([&t], |r| r.get(0))?
                .collect()
        };
        let pk = pk().map_err(|source| ChangelogError::ReadKey {
            table: t.clone(),
            source,
        })?;
        if pk.len() == 1 && pk[0] == "id" {
            out.push(t);
        }
    }
    Ok(out)
}

/// A table whose rows follow `table`'s scope (`via` rules, at any depth): the rows of `child`
/// whose parent chain reaches the updated row are those `filter` selects.
struct Follower {
    child: String,
    filter: String,
}

/// Selects a moved row's direct followers by their `via` column, given it and the column it
/// references: `(fk, key) -> filter`.
type Root<'a> = &'a dyn Fn(&str, &str) -> String;

/// Every table whose rows follow the scope of rows of `table`, down `via` chains (at most
/// eight deep, as `watermelon/row_scope.rs` reads them), with the filter selecting the rows
/// that follow them. `root(fk, key)` selects the direct children by their column `fk`, which
/// references `table`'s column `key`: in a trigger on `table`, those of the row `NEW`.
fn followers(
    conn: &Connection,
    rules: &BTreeMap<String, Option<ScopeRule>>,
    tracked: &[String],
    table: &str,
    (root, parent_filter): (Root<'_>, Option<&str>),
    depth: usize,
    out: &mut Vec<Follower>,
) -> rusqlite::Result<()> {
    if depth >= 8 {
        return Ok(());
    }
    for child in tracked {
        let Some(Some(ScopeRule::Via(fk))) = rules.get(&child.to_ascii_lowercase()) else {
            continue;
        };
        let Some((parent, key)) = crate::scope_rules::via_parent(conn, child, fk)? else {
            continue;
        };
        if !parent.eq_ignore_ascii_case(table) {
            continue;
        }
        let filter = match parent_filter {
            None => root(fk, &key),
            Some(f) => format!(
                "{} IN (SELECT {} FROM {} WHERE {f})",
                quote(fk),
                quote(&key),
                quote(table)
            ),
        };
        followers(
            conn,
            rules,
            tracked,
            child,
            (root, Some(&filter)),
            depth + 1,
            out,
        )?;
        out.push(Follower {
            child: child.clone(),
            filter,
        });
    }
    Ok(())
}

/// The REST tables among [`followers`] of `table`.
fn rest_followers(
    conn: &Connection,
    rules: &BTreeMap<String, Option<ScopeRule>>,
    table: &str,
    rest: &[String],
    root: Root<'_>,
) -> rusqlite::Result<Vec<Follower>> {
    let tracked: Vec<String> = {
        let mut stmt = conn.prepare_cached("SELECT name FROM _outpost_tables ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        names.collect::<Result<_, _>>()?
    };
    let mut found = Vec::new();
    followers(conn, rules, &tracked, table, (root, None), 0, &mut found)?;
    found.retain(|f| rest.iter().any(|r| r == &f.child));
    Ok(found)
}

/// The trigger that records, when a row of `table` changes scope (its scope cell, or its own
/// `via` key), that it moved (`moved_at`), and logs every REST row that follows it as changed
/// and moved: a referral moves a patient's visits out of one token's scopes and into another's,
/// and pulls must tell both (docs/rest-api.md, "Scopes"). `None` when the table is unscoped, or
/// neither it nor any table following it is a REST table.
fn follow_trigger(
    conn: &Connection,
    table: &str,
    rest: &[String],
) -> rusqlite::Result<Option<(String, String)>> {
    let rules = crate::scope_rules::tracked_rules(conn).map_err(|e| match e {
        SchemaError::ReadTracked { source } => source,
        other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
    })?;
    let Some(Some(rule)) = rules.get(&table.to_ascii_lowercase()) else {
        return Ok(None);
    };
    let of_new = |fk: &str, key: &str| format!("{} = NEW.{}", quote(fk), quote(key));
    let found = rest_followers(conn, &rules, table, rest, &of_new)?;
    let own = rest.iter().any(|r| r == table).then(|| {
        format!(
            "UPDATE _cloud_rest_log SET moved_at = {NOW} WHERE tbl = {} AND id = NEW.\"id\";",
            literal(table)
        )
    });
    let touches: Vec<String> = own
        .into_iter()
        .chain(found.iter().map(|f| {
            format!(
                "UPDATE _cloud_rest_log SET changed_at = {NOW}, moved_at = {NOW} WHERE \
                         tbl = {} AND id IN (SELECT \"id\" FROM {} WHERE {});",
                literal(&f.child),
                quote(&f.child),
                f.filter
            )
        }))
        .collect();
    if touches.is_empty() {
        return Ok(None);
    }
    let name = format!("{TRIGGER_PREFIX}s_{table}");
    let c = quote(rule.column());
    Ok(Some((
        name.clone(),
        format!(
            "CREATE TRIGGER {} AFTER UPDATE OF {c} ON {} WHEN OLD.{c} IS NOT NEW.{c} BEGIN {} END",
            quote(&name),
            quote(table),
            touches.join(" ")
        ),
    )))
}

/// The three triggers of `table`, as (name, SQL). `scope_column`: the table's scope column or
/// `via` key, whose value each entry keeps (`scope_value`).
fn triggers(table: &str, columns: &[String], scope_column: Option<&str>) -> [(String, String); 3] {
    let t = quote(table);
    let lit = literal(table);
    let name = |op: &str| format!("{TRIGGER_PREFIX}{op}_{table}");
    let upsert = |row: &str, deleted: u8| {
        // A deleted row's entry keeps the value it had: only rows alive can move.
        let (col, val, set) = match scope_column {
            Some(c) if deleted == 0 => (
                ", scope_value",
                format!(", {row}.{}", quote(c)),
                ", scope_value = excluded.scope_value",
            ),
            _ => ("", String::new(), ""),
        };
        format!(
            "INSERT INTO _cloud_rest_log(tbl, id, created_at, changed_at, deleted{col}) \
             VALUES ({lit}, {row}.\"id\", {NOW}, {NOW}, {deleted}{val}) \
             ON CONFLICT(tbl, id) DO UPDATE SET changed_at = excluded.changed_at, \
             created_at = CASE WHEN deleted <> 0 THEN excluded.created_at ELSE created_at END, \
             deleted = excluded.deleted{set};"
        )
    };
    let changed = columns
        .iter()
        .map(|c| format!("OLD.{0} IS NOT NEW.{0}", quote(c)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let ins = name("i");
    let upd = name("u");
    let del = name("d");
    [
        (
            ins.clone(),
            format!(
                "CREATE TRIGGER {} AFTER INSERT ON {t} BEGIN {} END",
                quote(&ins),
                upsert("NEW", 0)
            ),
        ),
        (
            upd.clone(),
            format!(
                "CREATE TRIGGER {} AFTER UPDATE ON {t} WHEN {changed} BEGIN {} \
                 UPDATE _cloud_rest_log SET changed_at = {NOW}, deleted = 1 \
                 WHERE OLD.\"id\" IS NOT NEW.\"id\" AND tbl = {lit} AND id = OLD.\"id\"; END",
                quote(&upd),
                upsert("NEW", 0)
            ),
        ),
        (
            del.clone(),
            format!(
                "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN {} END",
                quote(&del),
                upsert("OLD", 1)
            ),
        ),
    ]
}

/// Installs (or, after a column was added, replaces) the triggers of every REST table, and logs
/// the rows of a table seen for the first time as changed now. One transaction per table.
/// Returns the tables whose triggers were (re)installed.
pub fn ensure_triggers(conn: &mut Connection) -> Result<Vec<String>, ChangelogError> {
    ensure_table(conn)?;
    ensure_scope_indexes(conn)?;
    // Before any trigger is replaced: replacing fills `scope_value` in from the rows as they
    // are, and a row the engine moved must be compared with the value logged before.
    applied::log(conn)?;
    let mut done = Vec::new();
    let rest = rest_tables(conn)?;
    let rules = crate::scope_rules::tracked_rules(conn)?;
    for table in &rest {
        let columns = crate::schema::columns_of(conn, table)?;
        let trigger_error = |source| ChangelogError::Trigger {
            table: table.clone(),
            source,
        };
        let scope_column = match rules.get(&table.to_ascii_lowercase()) {
            Some(Some(rule)) => Some(rule.column()),
            _ => None,
        };
        let mut wanted = triggers(table, &columns, scope_column).to_vec();
        wanted.extend(follow_trigger(conn, table, &rest).map_err(trigger_error)?);
        if install_triggers(conn, table, scope_column, &wanted).map_err(trigger_error)? {
            done.push(table.clone());
        }
    }
    Ok(done)
}

/// Makes an index on every scoped table's scope column or `via` key (`_cloud_rest_scope_T`),
/// so a scoped token's pull reads its scopes' rows through it rather than every row
/// (`watermelon/row_scope.rs`). Made once: later calls only read the schema.
fn ensure_scope_indexes(conn: &Connection) -> Result<(), ChangelogError> {
    for (table, rule) in crate::scope_rules::tracked_rules(conn)? {
        let Some(rule) = rule else { continue };
        let name = format!("_cloud_rest_scope_{table}");
        let index_error = |source| ChangelogError::Trigger {
            table: table.clone(),
            source,
        };
        let exists: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
                [&name],
                |r| r.get(0),
            )
            .map_err(index_error)?;
        if exists == 0 {
            conn.execute(
                &format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {}({})",
                    quote(&name),
                    quote(&table),
                    quote(rule.column())
                ),
                [],
            )
            .map_err(index_error)?;
        }
    }
    Ok(())
}

/// Installs the triggers of `table` unless they are already the wanted ones; returns whether it
/// did.
fn install_triggers(
    conn: &mut Connection,
    table: &str,
    scope_column: Option<&str>,
    wanted: &[(String, String)],
) -> rusqlite::Result<bool> {
    let mut current = Vec::new();
    for (name, _) in wanted {
        current.push(
            conn.query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                [name],
                |r| r.get::<_, String>(0),
            )
            .optional()?,
        );
    }
    if wanted
        .iter()
        .zip(&current)
        .all(|((_, sql), cur)| cur.as_deref() == Some(sql.as_str()))
    {
        return Ok(false);
    }
    let first_time = current.iter().all(Option::is_none);
    let tx = conn.transaction()?;
    for (name, sql) in wanted {
        tx.execute(&format!("DROP TRIGGER IF EXISTS {}", quote(name)), [])?;
        tx.execute(sql, [])?;
    }
    let scope = scope_column.map_or("NULL".to_string(), quote);
    if first_time {
        let now: i64 = tx.query_row(&format!("SELECT {NOW}"), [], |r| r.get(0))?;
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO _cloud_rest_log(tbl, id, created_at, changed_at, deleted, \
                 scope_value) SELECT ?1, \"id\", ?2, ?2, 0, {scope} FROM {}",
                quote(table)
            ),
            rusqlite::params![table, now],
        )?;
    } else if scope_column.is_some() {
        // Triggers of an earlier build kept no `scope_value`, or the table's rule changed:
        // the rows' values now are the ones logged (the applied rows were logged before).
        tx.execute(
            &format!(
                "UPDATE _cloud_rest_log SET scope_value = (SELECT {scope} FROM {} t \
                 WHERE t.\"id\" = _cloud_rest_log.id) WHERE tbl = ?1 AND deleted = 0",
                quote(table)
            ),
            [table],
        )?;
    }
    tx.commit()?;
    Ok(true)
}

/// Has the engine switch the log's triggers off while it applies and list the rows it wrote
/// instead (see the module doc). Writes only the first time.
pub fn list_applied_rows(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT outpost_list_applied(?1)", [TRIGGER_PREFIX], |_| {
        Ok(())
    })
}

/// Logs the rows the engine applied since this was last done (see the module doc); returns
/// how many. [`ensure_triggers`] does it too.
pub fn log_applied(conn: &mut Connection) -> Result<usize, ChangelogError> {
    applied::log(conn)
}

/// The highest time logged (0 when nothing was).
pub fn latest(conn: &Connection) -> Result<i64, ChangelogError> {
    conn.query_row(
        "SELECT coalesce(max(changed_at), 0) FROM _cloud_rest_log",
        [],
        |r| r.get(0),
    )
    .map_err(|source| ChangelogError::Latest { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log made before scopes gains `moved_at`, equal to each record's `changed_at`: any
    /// change then may have been a move, so a scoped token's next pull still names it.
    #[test]
    fn a_log_made_before_scopes_counts_every_change_as_a_possible_move() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE _cloud_rest_log(tbl TEXT NOT NULL, id NOT NULL, created_at INTEGER NOT \
             NULL, changed_at INTEGER NOT NULL, deleted INTEGER NOT NULL, PRIMARY KEY (tbl, id)) \
             WITHOUT ROWID;
             INSERT INTO _cloud_rest_log VALUES ('patients', 'p1', 5, 9, 0);",
        )
        .unwrap();
        ensure_table(&conn).unwrap();
        ensure_table(&conn).unwrap();
        let moved: i64 = conn
            .query_row(
                "SELECT moved_at FROM _cloud_rest_log WHERE id = 'p1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(moved, 9);
    }
}
