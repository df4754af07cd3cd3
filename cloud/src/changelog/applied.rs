//! Logs the rows the engine applied: the entries of `outpost_applied`, which the engine lists
//! while the log's triggers are switched off (`changelog.rs`'s module doc), become what the
//! triggers would have written, one statement per table and kind of entry.
//!
//! The rows are read as they are now, not as each write left them: a listed row the table
//! holds is logged as changed (created, if its entry was a deletion or there was none), one it
//! no longer holds as deleted. A row whose scope column (or `via` key) now differs from the
//! value its entry kept moved, exactly as the move trigger decides (`OLD.c IS NOT NEW.c`): it
//! gets `moved_at`, and the rows following it are logged as changed and moved.

use super::{quote, rest_followers, rest_tables, ChangelogError, NOW};
use rusqlite::{Connection, TransactionBehavior};

/// The listed key as the table's `id`: `outpost_applied` shows keys as JSON (`"p1"`, a number,
/// or `{"blob": hex}`), as the engine's other public tables do. (The table is the app's to
/// write too: an entry that is not JSON is dropped, never left to fail every later step.)
const LISTED_ID: &str = "CASE json_type(a.pk) WHEN 'object' THEN unhex(a.pk ->> '$.blob') \
     ELSE a.pk ->> '$' END";

/// Logs every row listed in `outpost_applied` and empties the list, in one transaction.
/// Returns how many entries it logged (0, without a write, when the list is empty).
pub(super) fn log(conn: &mut Connection) -> Result<usize, ChangelogError> {
    let err = |source| ChangelogError::Applied { source };
    // Both tables, or nothing to do yet: the list waits for the log (made with the triggers,
    // `ensure_triggers`, which logs every row of a table it starts to follow anyway).
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
             AND name IN ('outpost_applied', '_cloud_rest_log')",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if tables < 2
        || !conn
            .query_row("SELECT EXISTS (SELECT 1 FROM outpost_applied)", [], |r| {
                r.get::<_, bool>(0)
            })
            .map_err(err)?
    {
        return Ok(0);
    }
    let rest = rest_tables(conn)?;
    let rules = crate::scope_rules::tracked_rules(conn)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let now: i64 = tx
        .query_row(&format!("SELECT {NOW}"), [], |r| r.get(0))
        .map_err(err)?;
    let entries: i64 = tx
        .query_row("SELECT count(*) FROM outpost_applied", [], |r| r.get(0))
        .map_err(err)?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS _cloud_moved(id PRIMARY KEY);
         CREATE TEMP TABLE IF NOT EXISTS _cloud_applied(id PRIMARY KEY);",
    )
    .map_err(err)?;
    for table in &rest {
        let t = quote(table);
        // Each row once, in key order: the list holds a row as often as it was written, and
        // the lookups and log writes below then walk the B-trees in order. The joins are
        // `CROSS`, so SQLite reads the list first however small it is.
        tx.execute("DELETE FROM temp._cloud_applied", [])
            .map_err(err)?;
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO temp._cloud_applied SELECT {LISTED_ID} FROM outpost_applied a \
                 WHERE a.\"table\" = ?1 AND json_valid(a.pk) ORDER BY 1"
            ),
            [table],
        )
        .map_err(err)?;
        let rows = "temp._cloud_applied";
        let scope_column = match rules.get(&table.to_ascii_lowercase()) {
            Some(Some(rule)) => Some(quote(rule.column())),
            _ => None,
        };
        // Moves first: logging the rows below overwrites the values they are compared with.
        if let Some(c) = &scope_column {
            tx.execute("DELETE FROM temp._cloud_moved", [])
                .map_err(err)?;
            tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO temp._cloud_moved SELECT t.\"id\" FROM {rows} a \
                     CROSS JOIN {t} t ON t.\"id\" = a.id \
                     CROSS JOIN _cloud_rest_log l ON l.tbl = ?1 AND l.id = t.\"id\" \
                     WHERE l.deleted = 0 AND l.scope_value IS NOT t.{c}"
                ),
                [table],
            )
            .map_err(err)?;
        }
        let scope = scope_column
            .as_ref()
            .map_or("NULL".to_string(), |c| format!("t.{c}"));
        tx.execute(
            &format!(
                "INSERT INTO _cloud_rest_log(tbl, id, created_at, changed_at, deleted, \
                 scope_value) SELECT ?1, t.\"id\", ?2, ?2, 0, {scope} FROM {rows} a \
                 CROSS JOIN {t} t ON t.\"id\" = a.id WHERE true \
                 ON CONFLICT(tbl, id) DO UPDATE SET changed_at = excluded.changed_at, \
                 created_at = CASE WHEN deleted <> 0 THEN excluded.created_at ELSE created_at END, \
                 deleted = 0, scope_value = excluded.scope_value"
            ),
            rusqlite::params![table, now],
        )
        .map_err(err)?;
        tx.execute(
            &format!(
                "INSERT INTO _cloud_rest_log(tbl, id, created_at, changed_at, deleted) \
                 SELECT ?1, a.id, ?2, ?2, 1 FROM {rows} a \
                 WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE t.\"id\" = a.id) \
                 ON CONFLICT(tbl, id) DO UPDATE SET changed_at = excluded.changed_at, \
                 created_at = CASE WHEN deleted <> 0 THEN excluded.created_at ELSE created_at END, \
                 deleted = 1"
            ),
            rusqlite::params![table, now],
        )
        .map_err(err)?;
        if scope_column.is_none() {
            continue;
        }
        let moved = tx
            .execute(
                "UPDATE _cloud_rest_log SET moved_at = ?2 \
                 WHERE tbl = ?1 AND id IN (SELECT id FROM temp._cloud_moved)",
                rusqlite::params![table, now],
            )
            .map_err(err)?;
        if moved == 0 {
            continue;
        }
        let of_moved = |fk: &str, key: &str| {
            format!(
                "{} IN (SELECT {} FROM {t} WHERE \"id\" IN (SELECT id FROM temp._cloud_moved))",
                quote(fk),
                quote(key)
            )
        };
        let trigger_error = |source| ChangelogError::Trigger {
            table: table.clone(),
            source,
        };
        for f in rest_followers(&tx, &rules, table, &rest, &of_moved).map_err(trigger_error)? {
            tx.execute(
                &format!(
                    "UPDATE _cloud_rest_log SET changed_at = ?2, moved_at = ?2 \
                     WHERE tbl = ?1 AND id IN (SELECT \"id\" FROM {} WHERE {})",
                    quote(&f.child),
                    f.filter
                ),
                rusqlite::params![f.child, now],
            )
            .map_err(err)?;
        }
    }
    tx.execute("DELETE FROM outpost_applied", []).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(entries as usize)
}
