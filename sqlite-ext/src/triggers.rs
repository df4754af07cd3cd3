//! The AFTER INSERT/UPDATE/DELETE triggers of a tracked table.
//!
//! Triggers only **append** to `_outpost_log` (seq is its INTEGER PRIMARY KEY, so every write
//! lands at the end of one B-tree: the cheapest bookkeeping SQLite offers, see
//! docs/performance.md). The key is packed by `outpost_pack`, the clock issued by `outpost_tick`;
//! an UPDATE records which columns changed as a bit mask computed in SQL, and counter columns
//! their deltas. `fold.rs` turns the log into per-row state before any export or apply.
//! Writes applied from a peer are skipped by `WHEN outpost_capturing()`.

use crate::error::Error;
use crate::ffi::Conn;
use crate::schema::{quote, Direction, Tracked};
use outpost_protocol::Strategy;

/// Log operations.
pub(crate) const OP_INSERT: i64 = 1;
pub(crate) const OP_UPDATE: i64 = 2;
pub(crate) const OP_DELETE: i64 = 3;
/// An UPDATE that changed the primary key: `vals` holds the old key then the old values.
pub(crate) const OP_REKEY: i64 = 4;

fn name(t: &Tracked, what: &str) -> String {
    quote(&format!("_outpost_{}_{what}", t.def.name))
}

fn pack(prefix: &str, cols: &[String]) -> String {
    let args: Vec<String> = cols
        .iter()
        .map(|c| format!("{prefix}.{}", quote(c)))
        .collect();
    format!("outpost_pack({})", args.join(", "))
}

fn counters(t: &Tracked) -> Vec<&str> {
    t.def
        .columns
        .iter()
        .filter(|c| c.strategy == Strategy::Counter)
        .map(|c| c.name.as_str())
        .collect()
}

/// Drops the table's triggers (if any).
pub(crate) fn drop_triggers(conn: Conn, t: &Tracked) -> Result<(), Error> {
    for what in ["ins", "upd", "rekey", "del"] {
        conn.exec(&format!("DROP TRIGGER IF EXISTS {}", name(t, what)))?;
    }
    Ok(())
}

/// (Re)creates the table's triggers from its definition.
pub(crate) fn create_triggers(conn: Conn, t: &Tracked) -> Result<(), Error> {
    drop_triggers(conn, t)?;
    if t.def.direction == Direction::Down {
        return Ok(()); // local writes of a down table are never sent
    }
    let tbl = quote(&t.def.name);
    let id = t.id;
    let key_new = pack("NEW", &t.def.pk);
    let key_old = pack("OLD", &t.def.pk);
    let counter_cols = counters(t);
    let ins_vals = if counter_cols.is_empty() {
        "NULL".to_string()
    } else {
        let a: Vec<String> = counter_cols
            .iter()
            .map(|c| format!("coalesce(NEW.{0}, 0)", quote(c)))
            .collect();
        format!("outpost_pack({})", a.join(", "))
    };
    let upd_vals = if counter_cols.is_empty() {
        "NULL".to_string()
    } else {
        let a: Vec<String> = counter_cols
            .iter()
            .map(|c| format!("coalesce(NEW.{0}, 0) - coalesce(OLD.{0}, 0)", quote(c)))
            .collect();
        format!("outpost_pack({})", a.join(", "))
    };
    let all: Vec<String> = t.def.columns.iter().map(|c| c.name.clone()).collect();
    let del_vals = pack("OLD", &all);
    let mask_terms: Vec<String> = all
        .iter()
        .enumerate()
        .map(|(i, c)| format!("((NEW.{0} IS NOT OLD.{0}) << {i})", quote(c)))
        .collect();
    let mask = if mask_terms.is_empty() {
        "0".to_string()
    } else {
        mask_terms.join(" | ")
    };
    let mask = if t.def.row_lww {
        format!("(CASE WHEN ({mask}) != 0 THEN -1 ELSE 0 END)")
    } else {
        format!("({mask})")
    };
    let same_key: Vec<String> = t
        .def
        .pk
        .iter()
        .map(|c| format!("NEW.{0} IS OLD.{0}", quote(c)))
        .collect();
    let same_key = same_key.join(" AND ");
    let old_all: Vec<String> = t.def.pk.iter().chain(all.iter()).cloned().collect();
    let rekey_vals = pack("OLD", &old_all);
    let log = "INSERT INTO _outpost_log(tbl, key, op, hlc, mask, vals)";
    // One trigger per statement kind: each trigger costs a sub-program call per row. The mask is
    // computed once (an UPDATE that changed nothing logs mask 0, which fold skips): comparing
    // every column is the largest part of the trigger's cost.
    conn.exec(&format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {tbl} WHEN outpost_capturing() BEGIN
           {log} VALUES ({id}, {key_new}, {OP_INSERT}, outpost_tick(), -1, {ins_vals}); END;
         CREATE TRIGGER {upd} AFTER UPDATE ON {tbl} WHEN outpost_capturing() BEGIN
           {log} VALUES ({id}, {key_new},
             CASE WHEN {same_key} THEN {OP_UPDATE} ELSE {OP_REKEY} END, outpost_tick(),
             CASE WHEN {same_key} THEN {mask} ELSE -1 END,
             CASE WHEN {same_key} THEN {upd_vals} ELSE {rekey_vals} END); END;
         CREATE TRIGGER {del} AFTER DELETE ON {tbl} WHEN outpost_capturing() BEGIN
           {log} VALUES ({id}, {key_old}, {OP_DELETE}, outpost_tick(), 0, {del_vals}); END;",
        ins = name(t, "ins"),
        upd = name(t, "upd"),
        del = name(t, "del"),
    ))
}
