//! Fold: moving the trigger-written log into per-row state, before every export and apply.
//!
//! The triggers only append (`triggers.rs`); here each logged write becomes versions in
//! `_outpost_rows` (and counter/review state in `_outpost_cells`), a delete's last values become a
//! tombstone, and the log is emptied except for its newest row, which keeps the next seq above
//! every seq ever issued. A local write always gets a clock above the version it replaces, even
//! when another connection's cached clock lagged (the clock is per connection).
//!
//! Fold also notices schema changes (`PRAGMA schema_version`): a column added by `ALTER TABLE`
//! joins the table's definition, the triggers are regenerated, and the column's existing non-NULL
//! values are logged as local writes, so nothing written before the change is noticed is lost.

use crate::cells;
use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::Call;
use crate::schema::{self, quote, ColumnDef, Tracked};
use crate::sites::Sites;
use crate::state::{RowState, RowStore, Version};
use crate::triggers::{
    OP_DELETE, OP_DELETE_IF_GONE, OP_INSERT, OP_REKEY, OP_REKEY_COUNTED, OP_SCOPE_MOVE, OP_UPDATE,
    OP_UPDATE_RAW,
};
use outpost_protocol::merge::{CellVersion, ReviewWrite};
use outpost_protocol::{Hlc, Stamp, Strategy, Value};

/// One `_outpost_log` row: seq, table id, packed key, op, clock, mask, packed values.
type LogEntry = (u64, i64, Vec<u8>, i64, u64, i64, Option<Vec<u8>>);

/// This database's own change sequence: the highest seq issued (0 when fresh). Fold keeps the
/// log's newest row for it, so it never goes back.
pub(crate) fn db_version(conn: Conn) -> Result<u64, Error> {
    Ok(conn
        .query_i64("SELECT coalesce(max(seq), 0) FROM _outpost_log", &[])?
        .unwrap_or(0) as u64)
}

/// Log entries folded per sorted chunk.
const FOLD_CHUNK: usize = 20_000;

/// Stores the current `PRAGMA schema_version` as seen.
pub(crate) fn remember_schema(conn: Conn) -> Result<(), Error> {
    let v = conn.query_i64("PRAGMA schema_version", &[])?.unwrap_or(0);
    schema::meta_set(conn, "schema_version", v)
}

/// Picks up columns added since the schema was last seen. Returns whether anything changed.
fn notice_schema_changes(call: &Call) -> Result<bool, Error> {
    let conn = call.conn;
    let now = conn.query_i64("PRAGMA schema_version", &[])?.unwrap_or(0);
    if schema::meta_get(conn, "schema_version")? == Some(now) {
        return Ok(false);
    }
    let mut changed = false;
    for mut t in schema::load_tracked(conn)? {
        let info = schema::table_info(conn, &t.def.name)?;
        let added: Vec<_> = info
            .iter()
            .filter(|c| c.pk == 0 && t.column_index(&c.name).is_none())
            .cloned()
            .collect();
        if info.is_empty() {
            continue;
        }
        if added.is_empty() {
            // A UNIQUE index created or dropped since: the collision triggers follow it.
            if crate::triggers::collisions_may_differ(conn, &t)? {
                crate::triggers::create_triggers(conn, &t)?;
            }
            continue;
        }
        changed = true;
        let default = if t.def.row_lww {
            Strategy::RowLww
        } else {
            Strategy::Lww
        };
        for c in &added {
            let strategy = t
                .def
                .column_options
                .get(&c.name)
                .copied()
                .unwrap_or(default);
            t.def.columns.push(ColumnDef {
                name: c.name.clone(),
                strategy,
            });
        }
        schema::save_def(conn, &t.def)?;
        crate::triggers::create_triggers(conn, &t)?;
        if t.def.direction == schema::Direction::Down {
            continue;
        }
        let key: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
        for c in &added {
            let Some(idx) = t.column_index(&c.name) else {
                continue;
            };
            conn.exec(&format!(
                "INSERT INTO _outpost_log(tbl, key, op, hlc, mask, vals) SELECT {}, outpost_pack({}), {OP_UPDATE}, outpost_tick(), {}, NULL FROM {} WHERE {} IS NOT NULL",
                t.id,
                key.join(", "),
                1i64 << idx,
                quote(&t.def.name),
                quote(&c.name)
            ))?;
        }
    }
    remember_schema(conn)?;
    Ok(changed)
}

/// What a fold did.
pub(crate) struct Folded {
    /// Tracked tables gained columns: callers then retry the quarantine, which may hold values
    /// for them.
    pub columns_added: bool,
    /// Log entries became row state (`_outpost_rows` was written).
    pub rows_written: bool,
}

/// Folds the log.
pub(crate) fn fold(call: &Call) -> Result<Folded, Error> {
    let conn = call.conn;
    let schema_changed = notice_schema_changes(call)?;
    let tables = schema::load_tracked(conn)?;
    // Each write's stream is found while the app rows still are what the log led to; its
    // seqs are numbered under the grant this device holds now (`streams.rs`).
    let version = crate::scope_check::grant_version(call)?;
    crate::row_scope::assign_log(conn, &tables, version)?;
    let sites = Sites::load(conn)?;
    let mut rows = RowStore::new(conn)?;
    let mut tomb_put = conn.prepare(
        "INSERT OR REPLACE INTO _outpost_tombstones(tbl, key, vals) VALUES (?1, ?2, ?3)",
    )?;
    let mut tomb_del =
        conn.prepare("DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
    // One chunk of the log at a time, each chunk's entries deleted once folded (the newest log
    // row stays, see below): the pages they free go back to the freelist and the next chunk's
    // state rows reuse them, instead of growing the file by the whole state while the whole log
    // is still there (size after the first fold: 1.53x → see docs/performance.md).
    let mut log = conn.prepare(
        "SELECT seq, tbl, key, op, hlc, mask, vals FROM _outpost_log WHERE op != 0 AND seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut drop_folded = conn.prepare(
        "DELETE FROM _outpost_log WHERE seq <= ?1 AND seq < (SELECT max(seq) FROM _outpost_log)",
    )?;
    // The connection's clock resumes from the log's largest clock at first use: start it while
    // the whole log is still there.
    call.session.clock.last(conn)?;
    let mut max_hlc = 0u64;
    let mut any = false;
    let mut chunk: Vec<LogEntry> = Vec::new();
    let mut exhausted = false;
    let mut after = 0u64;
    // Own referrals (scope cell changes): the authority transfers their rows (`transfer.rs`).
    let mut moves: Vec<(u64, i64, Vec<u8>)> = Vec::new();
    while !exhausted {
        chunk.clear();
        log.bind_i64(1, after as i64)?;
        log.bind_i64(2, FOLD_CHUNK as i64)?;
        while chunk.len() < FOLD_CHUNK {
            if !log.step()? {
                exhausted = true;
                break;
            }
            let mut op = log.i64(3);
            // A raw column update carries the key and a counter's delta as stored: pack them
            // here, so the rest of fold sees one form (and sorts by the packed key).
            let (key, vals) = if op == OP_UPDATE_RAW {
                let delta = (!log.is_null(6)).then(|| crate::keys::pack(&[log.value(6)]));
                (crate::keys::pack(&[log.value(2)]), delta)
            } else if op == OP_SCOPE_MOVE {
                // Its old scope named its stream (assigned above); the write is an update.
                op = OP_UPDATE;
                moves.push((log.i64(0) as u64, log.i64(1), log.blob(2)));
                (log.blob(2), None)
            } else {
                let vals = (!log.is_null(6)).then(|| log.blob(6));
                (log.blob(2), vals)
            };
            chunk.push((
                log.i64(0) as u64,
                log.i64(1),
                key,
                op,
                log.i64(4) as u64,
                log.i64(5),
                vals,
            ));
        }
        log.reset();
        if chunk.is_empty() {
            break;
        }
        any = true;
        after = chunk.last().map_or(after, |e| e.0);
        // Entries of different rows are independent: folding a chunk in key order (stable, so
        // one row's entries keep their seq order) turns random B-tree writes into a sweep. A key
        // change touches two rows, so a chunk holding one keeps log order.
        if !chunk
            .iter()
            .any(|e| e.3 == OP_REKEY || e.3 == OP_REKEY_COUNTED)
        {
            chunk.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
        }
        for (seq, tbl, key, op, hlc, mask, vals) in chunk.drain(..) {
            let vals = match vals {
                None => Vec::new(),
                Some(b) => crate::keys::unpack(&b)?,
            };
            let Some(t) = tables.iter().find(|t| t.id == tbl) else {
                continue;
            };
            let entries = if op == OP_REKEY || op == OP_REKEY_COUNTED {
                // An UPDATE of the key: the old row is deleted, the new one inserted.
                let npk = t.def.pk.len().min(vals.len());
                let old_key = crate::keys::pack(&vals[..npk]);
                let (counters, old) = if op == OP_REKEY_COUNTED {
                    let k = match vals.get(npk) {
                        Some(Value::Integer(k)) => usize::try_from(*k).unwrap_or(0),
                        _ => 0,
                    };
                    let end = (npk + 1 + k).min(vals.len());
                    (vals[(npk + 1).min(end)..end].to_vec(), vals[end..].to_vec())
                } else {
                    let mut counters = Vec::new();
                    for (c, col) in t.def.columns.iter().enumerate() {
                        if col.strategy == Strategy::Counter {
                            counters.push(cells::read_app_value(conn, t, &key, c)?);
                        }
                    }
                    (counters, vals[npk..].to_vec())
                };
                vec![(OP_DELETE, old_key, old), (OP_INSERT, key, counters)]
            } else if op == OP_UPDATE_RAW {
                // One column (the mask's bit); a counter's delta goes to its place among the
                // counter columns, as an OP_UPDATE's vals would hold it.
                let mut deltas = Vec::new();
                for (c, col) in t.def.columns.iter().enumerate() {
                    if col.strategy == Strategy::Counter {
                        let mine = mask & (1i64 << c) != 0;
                        deltas.push(match vals.first() {
                            Some(d) if mine => d.clone(),
                            _ => Value::Integer(0),
                        });
                    }
                }
                vec![(OP_UPDATE, key, deltas)]
            } else {
                vec![(op, key, vals)]
            };
            for (op, key, mut vals) in entries {
                let mut st = rows.get(tbl, &key)?.unwrap_or_default();
                let before = st.exist;
                let mut cols: Vec<usize> = Vec::new();
                let n = t.def.columns.len();
                match op {
                    OP_INSERT => {
                        if st.exist % 2 == 0 {
                            st.exist += 1;
                        } else {
                            // An insert over a live row (`INSERT OR REPLACE`, whose delete fires
                            // no trigger): its counters are the row's new values, not additions.
                            replaced_counters(conn, t, &key, st.exist, &mut vals)?;
                        }
                        st.exist_seq = seq;
                        tomb_del.bind_i64(1, tbl)?;
                        tomb_del.bind_blob(2, &key)?;
                        tomb_del.run()?;
                        cols.extend(0..n);
                    }
                    OP_UPDATE if mask == 0 => continue,
                    OP_UPDATE => {
                        if st.exist % 2 == 0 {
                            st.exist += 1;
                            st.exist_seq = seq;
                        }
                        cols.extend((0..n).filter(|&i| mask & (1i64 << i) != 0));
                    }
                    // Logged before a write that could have deleted the row (triggers.rs):
                    // only a row that is gone now was deleted.
                    OP_DELETE_IF_GONE if cells::app_row_exists(conn, t, &key)? => continue,
                    OP_DELETE | OP_DELETE_IF_GONE => {
                        if st.exist % 2 == 1 {
                            st.exist += 1;
                            st.exist_seq = seq;
                        }
                        tomb_put.bind_i64(1, tbl)?;
                        tomb_put.bind_blob(2, &key)?;
                        tomb_put.bind_blob(3, &crate::keys::pack(&vals))?;
                        tomb_put.run()?;
                    }
                    _ => continue,
                }
                if st.exist != before {
                    cells::prune_review(conn, t, &key, st.exist)?;
                }
                let hlc =
                    write_local(call, t, &sites, &key, &mut st, &cols, hlc, seq, &vals, None)?;
                max_hlc = max_hlc.max(hlc);
                rows.put(tbl, &key, &st)?;
            }
        }
        drop_folded.bind_i64(1, after as i64)?;
        drop_folded.run()?;
    }
    drop(log);
    if any {
        conn.exec(
            "DELETE FROM _outpost_log WHERE seq < (SELECT max(seq) FROM _outpost_log);
             UPDATE _outpost_log SET op = 0, vals = NULL WHERE seq = (SELECT max(seq) FROM _outpost_log);",
        )?;
        let stored = schema::meta_get(conn, "hlc")?.unwrap_or(0) as u64;
        schema::meta_set(conn, "hlc", stored.max(max_hlc) as i64)?;
        call.session.clock.observe(conn, max_hlc)?;
    }
    if !moves.is_empty() {
        crate::transfer::queue_own_moves(conn, &tables, &moves)?;
        crate::apply::exits::own_moves_leave(call, &moves)?;
    }
    Ok(Folded {
        columns_added: schema_changed,
        rows_written: any,
    })
}

/// Turns the counter values an insert logged (`vals`, in counter-column order) into the deltas
/// from what the live row it replaced counted at `epoch`.
fn replaced_counters(
    conn: crate::ffi::Conn,
    t: &Tracked,
    key: &[u8],
    epoch: u64,
    vals: &mut [Value],
) -> Result<(), Error> {
    let counters = t
        .def
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.strategy == Strategy::Counter);
    for ((c, _), v) in counters.zip(vals.iter_mut()) {
        let total = cells::load_counter(conn, t.id, key, c)?.value(epoch);
        let new = match v {
            Value::Integer(n) => *n,
            Value::Real(f) => *f as i64,
            _ => 0,
        };
        *v = Value::Integer(new.wrapping_sub(total));
    }
    Ok(())
}

/// Records a local write of `cols` of a row (already alive at `st.exist`) as versions of this
/// database, with a clock above every version it replaces. `vals` are the logged counter values
/// (deltas for an update, the inserted values otherwise), in counter-column order. `absent`
/// holds the row's values when it is not in its table (held aside): review cells take theirs
/// from it instead of the app row. Returns the clock used.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_local(
    call: &Call,
    t: &Tracked,
    sites: &Sites,
    key: &[u8],
    st: &mut RowState,
    cols: &[usize],
    hlc: u64,
    seq: u64,
    vals: &[Value],
    absent: Option<&[Value]>,
) -> Result<u64, Error> {
    let conn = call.conn;
    let epoch = st.exist;
    let floor = cols
        .iter()
        .filter_map(|&c| st.cell(c))
        .filter(|v| v.epoch == epoch)
        .map(|v| v.hlc + 1)
        .max()
        .unwrap_or(0);
    let hlc = hlc.max(floor);
    let counters: Vec<usize> = (0..t.def.columns.len())
        .filter(|&c| t.def.columns[c].strategy == Strategy::Counter)
        .collect();
    for &c in cols {
        let v = Version {
            epoch,
            hlc,
            site: 0,
            seq,
        };
        match t.def.columns[c].strategy {
            Strategy::Lww | Strategy::RowLww => {}
            Strategy::Counter => {
                let pos = counters.iter().position(|&x| x == c).unwrap_or(usize::MAX);
                let delta = match vals.get(pos) {
                    Some(Value::Integer(d)) => *d,
                    Some(Value::Real(d)) => *d as i64,
                    _ => 0,
                };
                let mut cell = cells::load_counter(conn, t.id, key, c)?;
                cell.add_local(sites.me(), epoch, Hlc::from_u64(hlc), delta);
                cells::save_counter(conn, t.id, key, c, &cell)?;
            }
            Strategy::Review => {
                let value = match absent {
                    Some(values) => values.get(c).cloned().unwrap_or(Value::Null),
                    None => cells::read_app_value(conn, t, key, c)?,
                };
                let mut cell = cells::load_review(conn, t.id, key, c)?;
                let w = ReviewWrite {
                    version: CellVersion {
                        epoch,
                        stamp: Stamp {
                            hlc: Hlc::from_u64(hlc),
                            site: sites.me(),
                        },
                    },
                    value,
                    context: cell.context(),
                };
                cell.merge(w);
                cells::save_review(conn, t, key, c, &cell)?;
            }
        }
        *st.cell_mut(c) = Some(v);
    }
    Ok(hlc)
}
