//! When each record last changed, for the REST API's `last_pulled_at` cursor.
//!
//! The extension keeps per-cell hybrid logical clocks in a packed internal blob and exposes no
//! per-row "last changed" through SQL (docs/sql-api.md), and an HLC says when a write was *made*,
//! not when the cloud *received* it (a device offline for a week syncs old clocks today; a pull
//! cursor compared against them would miss its changes). So the cloud keeps its own table in the
//! tenant database:
//!
//! ```text
//! _cloud_rest_log(tbl, id, created_at, changed_at, deleted)   PRIMARY KEY (tbl, id)
//! ```
//!
//! maintained by AFTER INSERT/UPDATE/DELETE triggers on every tracked table whose primary key is
//! one column named `id` (the tables WatermelonDB can address). The triggers fire for every
//! write, whoever makes it: batches applied by the engine, REST pushes, an operator in the
//! `sqlite3` shell; in the writer's transaction, so the log can never disagree with the rows.
//!
//! Times are a **monotonic millisecond clock in SQL**: `max(wall-clock ms, highest logged + 1)`,
//! so they never go backwards even when the machine's clock does, and every write transaction
//! committed after a pull's snapshot gets a time above every time that snapshot saw. An UPDATE
//! that changes no column (an engine merge that lost) is not logged.

use crate::schema::quote;
use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _cloud_rest_log(
    tbl TEXT NOT NULL,
    id NOT NULL,
    created_at INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
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
pub fn ensure_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)
        .context("creating the REST change log")
}

/// The tracked tables the REST API serves: primary key = one column named `id`.
pub fn rest_tables(conn: &Connection) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in crate::schema::tracked_tables(conn)? {
        let pk: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0")?
            .query_map([&t], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if pk.len() == 1 && pk[0] == "id" {
            out.push(t);
        }
    }
    Ok(out)
}

/// The three triggers of `table`, as (name, SQL).
fn triggers(table: &str, columns: &[String]) -> [(String, String); 3] {
    let t = quote(table);
    let lit = literal(table);
    let name = |op: &str| format!("_cloud_rest_{op}_{table}");
    let upsert = |id: &str, deleted: u8| {
        format!(
            "INSERT INTO _cloud_rest_log(tbl, id, created_at, changed_at, deleted) \
             VALUES ({lit}, {id}, {NOW}, {NOW}, {deleted}) \
             ON CONFLICT(tbl, id) DO UPDATE SET changed_at = excluded.changed_at, \
             created_at = CASE WHEN deleted <> 0 THEN excluded.created_at ELSE created_at END, \
             deleted = excluded.deleted;"
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
                upsert("NEW.\"id\"", 0)
            ),
        ),
        (
            upd.clone(),
            format!(
                "CREATE TRIGGER {} AFTER UPDATE ON {t} WHEN {changed} BEGIN {} \
                 UPDATE _cloud_rest_log SET changed_at = {NOW}, deleted = 1 \
                 WHERE OLD.\"id\" IS NOT NEW.\"id\" AND tbl = {lit} AND id = OLD.\"id\"; END",
                quote(&upd),
                upsert("NEW.\"id\"", 0)
            ),
        ),
        (
            del.clone(),
            format!(
                "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN {} END",
                quote(&del),
                upsert("OLD.\"id\"", 1)
            ),
        ),
    ]
}

/// Installs (or, after a column was added, replaces) the triggers of every REST table, and logs
/// the rows of a table seen for the first time as changed now. One transaction per table.
/// Returns the tables whose triggers were (re)installed.
pub fn ensure_triggers(conn: &mut Connection) -> Result<Vec<String>> {
    ensure_table(conn)?;
    let mut done = Vec::new();
    for table in rest_tables(conn)? {
        let columns = crate::schema::columns_of(conn, &table)?;
        let wanted = triggers(&table, &columns);
        let mut current = Vec::new();
        for (name, _) in &wanted {
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
            continue;
        }
        let first_time = current.iter().all(Option::is_none);
        let tx = conn.transaction()?;
        for (name, sql) in &wanted {
            tx.execute(&format!("DROP TRIGGER IF EXISTS {}", quote(name)), [])?;
            tx.execute(sql, [])
                .with_context(|| format!("creating REST trigger on {table:?}"))?;
        }
        if first_time {
            let now: i64 = tx.query_row(&format!("SELECT {NOW}"), [], |r| r.get(0))?;
            tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO _cloud_rest_log(tbl, id, created_at, changed_at, deleted) \
                     SELECT ?1, \"id\", ?2, ?2, 0 FROM {}",
                    quote(&table)
                ),
                rusqlite::params![table, now],
            )?;
        }
        tx.commit()?;
        done.push(table);
    }
    Ok(done)
}

/// The highest time logged (0 when nothing was).
pub fn latest(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT coalesce(max(changed_at), 0) FROM _cloud_rest_log",
        [],
        |r| r.get(0),
    )?)
}
