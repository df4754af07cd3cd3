//! The AFTER INSERT/UPDATE/DELETE triggers of a tracked table.
//!
//! Triggers only **append** to `_outpost_log` (seq is its INTEGER PRIMARY KEY, so every write
//! lands at the end of one B-tree: the cheapest bookkeeping SQLite offers, see
//! docs/performance.md). The key is packed by `outpost_pack`, the clock issued by `outpost_tick`;
//! an UPDATE is captured per column (`create_triggers`): each changed column logs its bit of the
//! change mask, counter columns their deltas. `fold.rs` turns the log into per-row state before
//! any export or apply.
//! Writes applied from a peer are skipped by `WHEN outpost_capturing()`, or, in the column
//! triggers of one-column-key tables, by `outpost_clock` having no row then (`clock_table.rs`).
//! A `down` table (written by the cloud alone) gets no capturing triggers but three that refuse
//! the app's writes (`refusal_triggers`), skipped the same way while a peer's changes apply.
//! A table with a scope column has its scope cell checked by `outpost_check_scope`
//! (`scope_check.rs`): the INSERT trigger's WHEN calls it, and a BEFORE UPDATE OF trigger checks
//! a referral (`scope_triggers`).
//! In a strict tenant (`strict.rs`), the INSERT trigger's WHEN checks the new row
//! (`outpost_strict_check`), and BEFORE UPDATE OF triggers refuse a value that does not fit its
//! column's PostgreSQL type.
//! The three SQL functions the capturing triggers call are defined at the end of this file.

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use crate::schema::{quote, Direction, ScopeRule, Tracked};
use outpost_protocol::{Strategy, Value};

/// Log operations.
pub(crate) const OP_INSERT: i64 = 1;
pub(crate) const OP_UPDATE: i64 = 2;
pub(crate) const OP_DELETE: i64 = 3;
/// An UPDATE of one column of a table with a one-column key, logged without calling a function
/// (see `create_triggers`): `key` holds the key's value as stored (not packed), `vals` the
/// counter column's delta as a plain number (NULL for other strategies).
pub(crate) const OP_UPDATE_RAW: i64 = 6;
/// An UPDATE that changed the primary key, as logged before `OP_REKEY_COUNTED` existed: `vals`
/// holds the old key then the old values (fold reads the counters' new values from the row).
pub(crate) const OP_REKEY: i64 = 4;
/// An UPDATE that changed the primary key: `vals` holds the old key, the number k of counter
/// columns, the k counter values of the new row, then the old values. The new row's counters
/// are taken at the write: read at fold they would already include later deltas, which fold
/// then adds again.
pub(crate) const OP_REKEY_COUNTED: i64 = 5;
/// A row a write collided with on a UNIQUE column other than the key, logged before the write
/// (`key` and `vals` as an `OP_DELETE`'s): `INSERT OR REPLACE` / `UPDATE OR REPLACE` delete such
/// a row without firing any DELETE trigger. Fold records the delete only if the row is gone by
/// then, so a write that did not delete it (`OR IGNORE`, an upsert) deletes nothing.
pub(crate) const OP_DELETE_IF_GONE: i64 = 7;
/// An UPDATE that changed the scope cell of a table scoped by a column (a referral): logged as
/// an `OP_UPDATE` of that column (packed key, mask), with `vals` holding the old scope as
/// stored, so fold knows the stream the write travels in (`row_scope.rs`).
pub(crate) const OP_SCOPE_MOVE: i64 = 8;

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

/// Drops the table's triggers (if any), whatever columns they were made for.
pub(crate) fn drop_triggers(conn: Conn, t: &Tracked) -> Result<(), Error> {
    for n in trigger_names(conn, t, "")? {
        conn.exec(&format!("DROP TRIGGER IF EXISTS {}", quote(&n)))?;
    }
    Ok(())
}

/// The table's Outpost triggers whose names continue with `kind` (`""`: all of them).
fn trigger_names(conn: Conn, t: &Tracked, kind: &str) -> Result<Vec<String>, Error> {
    let mut q = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 \
         AND substr(name, 1, length(?2)) = ?2",
    )?;
    q.bind_text(1, &t.def.name)?;
    q.bind_text(2, &format!("_outpost_{}_{kind}", t.def.name))?;
    let mut names = Vec::new();
    while q.step()? {
        names.push(q.text(0));
    }
    Ok(names)
}

/// (Re)creates the table's triggers from its definition.
///
/// Updates are captured by **one trigger per column** (`AFTER UPDATE OF col`), which SQLite
/// only runs when the statement's `SET` names that column: `UPDATE patients SET village = ?`
/// runs the village trigger alone, reads only `village` and the key from the old row, and logs
/// a constant one-bit mask. A single AFTER UPDATE trigger would compare every column of every
/// updated row (`NEW.c IS NOT OLD.c` for each, most of W2's cost, see docs/performance.md). A
/// statement that sets several columns runs several small triggers and logs one row per column
/// that really changed (fold merges them). Key changes go through their own trigger, which
/// logs the old key and values (`OP_REKEY_COUNTED`); the column triggers skip that row.
pub(crate) fn create_triggers(conn: Conn, t: &Tracked) -> Result<(), Error> {
    drop_triggers(conn, t)?;
    if t.def.direction == Direction::Down {
        return conn.exec(&refusal_triggers(t));
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
    let all: Vec<String> = t.def.columns.iter().map(|c| c.name.clone()).collect();
    let del_vals = pack("OLD", &all);
    let same_key: Vec<String> = t
        .def
        .pk
        .iter()
        .map(|c| format!("NEW.{0} IS OLD.{0}", quote(c)))
        .collect();
    let same_key = same_key.join(" AND ");
    let pk_cols: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
    let mut rekey_args: Vec<String> = t
        .def
        .pk
        .iter()
        .map(|c| format!("OLD.{}", quote(c)))
        .collect();
    rekey_args.push(counter_cols.len().to_string());
    rekey_args.extend(
        counter_cols
            .iter()
            .map(|c| format!("coalesce(NEW.{0}, 0)", quote(c))),
    );
    rekey_args.extend(all.iter().map(|c| format!("OLD.{}", quote(c))));
    let rekey_vals = format!("outpost_pack({})", rekey_args.join(", "));
    let log = "INSERT INTO _outpost_log(tbl, key, op, hlc, mask, vals)";
    // Column updates of one-column-key tables (the common case: a UUID or integer id) log the
    // key as stored and let fold pack it, and take the clock from outpost_clock (no row while a
    // peer's changes are applied) instead of calling functions: see clock_table.rs. Inserts and
    // deletes keep the function calls: an INSERT into a table with a declared key is "may
    // abort" by its own UNIQUE check, so it has a statement journal either way, and the packed
    // key keeps the log small (size after W1). Composite keys and row_lww updates call them too.
    let raw = t.def.pk.len() == 1 && !t.def.row_lww;
    let ins_when = match (
        crate::strict::insert_check(conn, t)?,
        scope_check_call(t, "NEW", true),
    ) {
        // The strict check is also the capture test (false while a peer's changes apply).
        (Some(strict), None) => strict,
        (Some(strict), Some(scope)) => format!("{strict} AND {scope}"),
        (None, scope) => scope.unwrap_or_else(|| "outpost_capturing()".into()),
    };
    let mut sql = format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {tbl} WHEN {ins_when} BEGIN
           {log} VALUES ({id}, {key_new}, {OP_INSERT}, outpost_tick(), -1, {ins_vals}); END;
         CREATE TRIGGER {rekey} AFTER UPDATE OF {pk_cols} ON {tbl}
           WHEN NOT ({same_key}) AND outpost_capturing() BEGIN
           {log} VALUES ({id}, {key_new}, {OP_REKEY_COUNTED}, outpost_tick(), -1, {rekey_vals}); END;
         CREATE TRIGGER {del} AFTER DELETE ON {tbl} WHEN outpost_capturing() BEGIN
           {log} VALUES ({id}, {key_old}, {OP_DELETE}, outpost_tick(), 0, {del_vals}); END;",
        ins = name(t, "ins"),
        rekey = name(t, "rekey"),
        del = name(t, "del"),
        pk_cols = pk_cols.join(", "),
    );
    sql.push_str(&collision_triggers(conn, t)?);
    sql.push_str(&scope_triggers(t));
    if crate::strict::is_strict(conn)? {
        // The update checks, created after the collision and scope triggers: SQLite runs a
        // table's triggers newest first, so a value that does not fit is refused before
        // anything is logged. (An insert's check is its capture trigger's WHEN, above; what a
        // collision trigger logged before it is undone with the refused statement.)
        sql.push_str(&crate::strict::update_triggers(conn, t)?);
    }
    let delta = |c: &str| format!("coalesce(NEW.{0}, 0) - coalesce(OLD.{0}, 0)", quote(c));
    // A counter column's function-calling trigger logs the deltas of every counter; fold uses
    // the one of this column.
    let all_deltas = format!(
        "outpost_pack({})",
        counter_cols
            .iter()
            .map(|c| delta(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let scope_column = match &t.def.scope {
        Some(ScopeRule::Column(c)) => Some(c.as_str()),
        _ => None,
    };
    if let Some(i) = scope_column.and_then(|c| t.column_index(c)) {
        // A referral logs the old scope: the stream it travels in (`row_scope.rs`). Created
        // before every other trigger: SQLite runs a table's triggers newest first, so this one
        // logs after the other columns a statement changed with it, and those (written while
        // the row was still in the old scope) travel in the old scope's stream too.
        let mask = if t.def.row_lww { -1 } else { 1i64 << i };
        let c = quote(&t.def.columns[i].name);
        sql.insert_str(
            0,
            &format!(
                "CREATE TRIGGER {upd} AFTER UPDATE OF {c} ON {tbl}
                   WHEN NEW.{c} IS NOT OLD.{c} AND {same_key} AND outpost_capturing() BEGIN
                   {log} VALUES ({id}, {key_new}, {OP_SCOPE_MOVE}, outpost_tick(), {mask}, OLD.{c}); END;",
                upd = name(t, &format!("upd_{i}")),
            ),
        );
    }
    for (i, col) in t.def.columns.iter().enumerate() {
        // row_lww: any changed column rewrites the whole row.
        let mask = if t.def.row_lww { -1 } else { 1i64 << i };
        let counter = col.strategy == Strategy::Counter;
        let c = quote(&col.name);
        let upd = name(t, &format!("upd_{i}"));
        if scope_column == Some(col.name.as_str()) {
            continue; // its trigger was created first (above)
        }
        if raw {
            // No function call and no NOT NULL check anywhere in this trigger: the app's UPDATE
            // then needs no statement journal (clock_table.rs). outpost_clock has no row while a
            // peer's changes are applied, so nothing is logged then.
            let vals = if counter {
                delta(&col.name)
            } else {
                "NULL".into()
            };
            let k = quote(&t.def.pk[0]);
            sql.push_str(&format!(
                "CREATE TRIGGER {upd} AFTER UPDATE OF {c} ON {tbl}
                   WHEN NEW.{c} IS NOT OLD.{c} AND NEW.{k} IS OLD.{k} BEGIN
                   {log} SELECT {id}, NEW.{k}, {OP_UPDATE_RAW}, outpost_clock.hlc, {mask}, {vals}
                   FROM outpost_clock; END;"
            ));
        } else {
            let vals = if counter { all_deltas.as_str() } else { "NULL" };
            sql.push_str(&format!(
                "CREATE TRIGGER {upd} AFTER UPDATE OF {c} ON {tbl}
                   WHEN NEW.{c} IS NOT OLD.{c} AND {same_key} AND outpost_capturing() BEGIN
                   {log} VALUES ({id}, {key_new}, {OP_UPDATE}, outpost_tick(), {mask}, {vals}); END;"
            ));
        }
    }
    conn.exec(&sql)
}

/// For a table whose rows hold their scope (`{"scope": "clinic_id"}`), the call of
/// `outpost_check_scope` on `row`'s scope cell (`scope_check.rs`): 1 while this connection
/// captures and the cell passes, 0 while a peer's changes apply, an error that aborts the write
/// otherwise. `None` for other tables.
fn scope_check_call(t: &Tracked, row: &str, inserting: bool) -> Option<String> {
    let Some(ScopeRule::Column(column)) = &t.def.scope else {
        return None;
    };
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    Some(format!(
        "outpost_check_scope({}, {}, {row}.{}, {})",
        literal(&t.def.name),
        literal(column),
        quote(column),
        u8::from(inserting)
    ))
}

/// The scope checks of a table with a scope column: its capturing AFTER INSERT trigger calls
/// `outpost_check_scope` as its WHEN in place of `outpost_capturing()` (an inserted row must be
/// in the device's grant; one function call per row, no extra trigger), and a BEFORE UPDATE OF
/// the scope column trigger checks a referral's new value. A `via` table's rows take their
/// parent's scope, and unscoped tables get nothing: their writes cost what they always did.
fn scope_triggers(t: &Tracked) -> String {
    let (Some(ScopeRule::Column(column)), Some(check)) =
        (&t.def.scope, scope_check_call(t, "NEW", false))
    else {
        return String::new();
    };
    let (tbl, c) = (quote(&t.def.name), quote(column));
    format!(
        "CREATE TRIGGER {upd} BEFORE UPDATE OF {c} ON {tbl} WHEN NEW.{c} IS NOT OLD.{c} BEGIN
           SELECT {check}; END;",
        upd = name(t, "scope_upd"),
    )
}

/// The message a write to a `down` table fails with (`refusal_triggers`).
fn refusal_message(table: &str) -> String {
    format!("outpost: table \"{table}\" is down: only the cloud writes it")
}

/// BEFORE INSERT, UPDATE and DELETE triggers that refuse the app's writes to a `down` table:
/// the tenant declares it written by the cloud alone (docs/design.md section 10), so a local
/// write could never be sent and would silently differ from every other replica. Writes a peer's
/// changes make pass: `outpost_capturing()` is false then (and the apply usually switches the
/// triggers off altogether, `apply/trigger_pause.rs`). `RAISE(ABORT)` undoes the statement, and
/// its message reaches the app as the statement's error.
fn refusal_triggers(t: &Tracked) -> String {
    let tbl = quote(&t.def.name);
    let message = refusal_message(&t.def.name).replace('\'', "''");
    ["INSERT", "UPDATE", "DELETE"]
        .iter()
        .map(|op| {
            format!(
                "CREATE TRIGGER {} BEFORE {op} ON {tbl} WHEN outpost_capturing() BEGIN
                   SELECT RAISE(ABORT, '{message}'); END;",
                name(t, &format!("down_{}", op.to_ascii_lowercase()))
            )
        })
        .collect()
}

/// Whether the table has the triggers that refuse the app's writes (`refusal_triggers`).
pub(crate) fn refuses_writes(conn: Conn, t: &Tracked) -> Result<bool, Error> {
    Ok(!trigger_names(conn, t, "down_")?.is_empty())
}

/// Whether the table's collision triggers may not match its UNIQUE indexes any more (it has
/// either): recreating them then costs a schema change, so tables without any are left alone.
pub(crate) fn collisions_may_differ(conn: Conn, t: &Tracked) -> Result<bool, Error> {
    if t.def.direction == Direction::Down {
        return Ok(false);
    }
    Ok(!trigger_names(conn, t, "uniq_")?.is_empty()
        || !crate::schema::unique_indexes(conn, &t.def.name)?.is_empty())
}

/// BEFORE INSERT and BEFORE UPDATE triggers, one pair per UNIQUE constraint besides the key,
/// that log every other row the write collides with as `OP_DELETE_IF_GONE`. SQLite fires no
/// DELETE trigger for the rows a REPLACE conflict resolution removes (unless the connection set
/// `recursive_triggers`), so without these a row removed that way would stay on every peer.
/// A write that aborts takes its log rows back with it; one that does not delete (`OR IGNORE`,
/// an upsert) leaves a row fold finds still there. Tables without such constraints get none.
fn collision_triggers(conn: Conn, t: &Tracked) -> Result<String, Error> {
    let tbl = quote(&t.def.name);
    let id = t.id;
    let all: Vec<String> = t.def.columns.iter().map(|c| c.name.clone()).collect();
    let (key, vals) = (pack("o", &t.def.pk), pack("o", &all));
    let other_than = |row: &str| {
        let same: Vec<String> = t
            .def
            .pk
            .iter()
            .map(|c| format!("o.{0} IS {row}.{0}", quote(c)))
            .collect();
        format!("NOT ({})", same.join(" AND "))
    };
    let mut sql = String::new();
    for (i, cols) in crate::schema::unique_indexes(conn, &t.def.name)?
        .iter()
        .map(|u| &u.cols)
        .enumerate()
    {
        if cols.len() == t.def.pk.len() && cols.iter().all(|(c, _)| t.def.pk.contains(c)) {
            continue; // the key itself: an insert over a live row is handled by fold
        }
        let hit: Vec<String> = cols
            .iter()
            .map(|(c, coll)| format!("o.{0} = NEW.{0} COLLATE {1}", quote(c), quote(coll)))
            .collect();
        let hit = hit.join(" AND ");
        let of: Vec<String> = cols.iter().map(|(c, _)| quote(c)).collect();
        let log = |row: &str| {
            format!(
                "INSERT INTO _outpost_log(tbl, key, op, hlc, mask, vals)
                   SELECT {id}, {key}, {OP_DELETE_IF_GONE}, outpost_tick(), 0, {vals}
                   FROM {tbl} AS o WHERE {hit} AND {};",
                other_than(row)
            )
        };
        sql.push_str(&format!(
            "CREATE TRIGGER {ins} BEFORE INSERT ON {tbl} WHEN outpost_capturing() BEGIN {} END;
             CREATE TRIGGER {upd} BEFORE UPDATE OF {of} ON {tbl} WHEN outpost_capturing() BEGIN {} END;",
            log("NEW"),
            log("OLD"),
            ins = name(t, &format!("uniq_ins_{i}")),
            upd = name(t, &format!("uniq_upd_{i}")),
            of = of.join(", "),
        ));
    }
    Ok(sql)
}

/// `outpost_tick()`: the clock for a local write (called by the triggers).
pub(crate) fn sql_tick(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    Ok(Value::Integer(call.session.clock.tick(call.conn)? as i64))
}

/// `outpost_capturing()`: 1 unless this connection is applying a peer's changes.
pub(crate) fn sql_capturing(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    Ok(Value::Integer(call.session.capturing() as i64))
}

/// `outpost_pack(v, ...)`: the packed key form (called by the triggers).
pub(crate) fn sql_pack(_call: &Call, args: &[Arg]) -> Result<Value, Error> {
    Ok(Value::Blob(crate::keys::pack_args(
        args.iter().copied(),
        args.len(),
    )))
}
