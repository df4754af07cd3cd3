//! Export: `outpost_db_version`, `outpost_changes`, and `outpost_batch_json`.
//!
//! A batch holds this database's own writes that are still current (a cell since overwritten by
//! a peer is not re-sent: the peer's write travels with its own origin), only the changed columns,
//! for the seqs `since+1 ..= hi`. With a byte budget the rows go in order of their smallest seq
//! above `since`, and the batch stops before the first row that would pass the budget; `hi` is
//! then that row's smallest seq minus one, so every current change in the range is in the body
//! (rows may also carry later seqs of the same row; applying them twice is harmless) and the next
//! call, with `since = hi`, continues exactly there.
//!
//! **Direction.** A batch's clear header says which way its tables travel (docs/design.md section
//! 10): `up` when every row in it belongs to an `up` table (relays then serve devices only its
//! signed clear header), `both` otherwise; `down` tables are never exported here (only the cloud
//! writes them). So that `up` rows do not ride in `both` batches to every device, a batch is also
//! cut, as the budget cuts it, before the first row whose table's direction differs from the rows
//! it holds. Only rows that share their smallest seq (one write touching two rows) cannot be cut
//! apart: such a batch holds both kinds and is flagged `both`.
//!
//! **Grant version.** A batch names the version of this device's grant its seqs were written
//! under (`streams.rs`), so it ends where that version changes in its stream: it carries only
//! the cells whose seqs are in that stretch, and the next call starts at the next version.

use crate::cells;
use crate::error::{ApplyError, Error};
use crate::ffi::{Conn, Stmt};
use crate::functions::{Arg, Call};
use crate::json::value_json;
use crate::schema::{self, quote, Direction, Tracked};
use crate::sites::Sites;
use crate::state::RowStore;
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{
    BatchFlags, BatchMeta, BodyWriter, CellChange, CellPayload, Compression, RowChange,
};
use outpost_protocol::vector::SeqRange;
use outpost_protocol::{Hlc, SiteId, Strategy, Value};
use serde_json::json;

/// `outpost_db_version([scope])`: the highest seq of the stream of `scope` (`''`, the default:
/// the unscoped stream, whose seqs are the database's own change sequence when no table is
/// scoped).
pub(crate) fn sql_db_version(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let scope = scope_arg(call, args.first())?;
    schema::ensure(call.conn)?;
    let top = crate::streams::tops(call.conn)?
        .get(own_stream(call.conn, scope)?.as_str())
        .copied()
        .unwrap_or(0);
    Ok(Value::Integer(top as i64))
}

/// The own stream the manual API's `scope` argument names: a scope name, or in a sealed tenant
/// also the wire id `outpost_vector()` states it by (`wire_scope.rs`).
fn own_stream(conn: crate::ffi::Conn, scope: &str) -> Result<String, Error> {
    // Only a digest's text can be a wire id other than the name.
    if scope
        .parse::<outpost_protocol::seal::ScopeDigest>()
        .is_err()
    {
        return Ok(scope.to_string());
    }
    let wire = crate::wire_scope::WireScopes::load(conn)?;
    let tops = crate::streams::tops(conn)?;
    if tops.contains_key(scope) {
        return Ok(scope.to_string());
    }
    Ok(wire
        .name_of(scope, tops.keys().map(String::as_str))
        .unwrap_or(scope)
        .to_string())
}

/// The `scope` argument of the manual API: `''` (or NULL, or absent) is the unscoped stream.
fn scope_arg<'a>(call: &Call, arg: Option<&Arg<'a>>) -> Result<&'a str, Error> {
    match arg {
        None | Some(Arg::Null) => Ok(""),
        Some(Arg::Text(t)) if t.is_empty() || outpost_protocol::scope::check_name(t).is_ok() => {
            Ok(t)
        }
        Some(_) => Err(call.arg_error(
            "scope must be a scope name (1-64 of A-Z a-z 0-9 _ . -), or '' for the unscoped stream",
        )),
    }
}

/// `outpost_changes(since [, max_bytes [, scope]])`: the stream of `scope` (default `''`).
pub(crate) fn sql_changes(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let since = match args[0] {
        Arg::Integer(n) if n >= 0 => n as u64,
        _ => return Err(call.arg_error("since must be an integer >= 0 (0 = from the beginning)")),
    };
    let max_bytes = match args.get(1) {
        None | Some(Arg::Null) => None,
        Some(&Arg::Integer(n)) if n > 0 => Some(n as usize),
        Some(_) => return Err(call.arg_error("max_bytes must be a positive integer")),
    };
    let scope = scope_arg(call, args.get(2))?;
    schema::ensure(call.conn)?;
    let r = schema::with_bulk_cache(call.conn, || {
        call.conn.exec("SAVEPOINT outpost_changes")?;
        let r = (|| {
            if crate::fold::fold(call)?.columns_added {
                crate::apply::retry_all(call)?;
            }
            let scope = own_stream(call.conn, scope)?;
            changes(call, &scope, since, max_bytes)
        })();
        schema::finish_savepoint(call.conn, "outpost_changes", r)
    })?;
    Ok(r.map_or(Value::Null, Value::Blob))
}

/// The rows a chunked export has yet to send: valid while the database's own seq is unchanged
/// and the next call asks from where the last one stopped. Kept on the connection
/// (`Session::export`), it saves rescanning every row per chunk.
struct ExportCursor {
    stream: String,
    top: u64,
    since: u64,
    /// `(smallest own seq above since, table id, packed key)`, in that seq order.
    rest: Vec<(u64, i64, Vec<u8>)>,
}

struct Exported {
    t: Tracked,
    header_index: u16,
    select: Stmt,
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Text(t) => t.len() + 10,
        Value::Blob(b) => b.len() + 10,
        _ => 10,
    }
}

/// Builds the batch of own changes of `stream` above its seq `since` (fold must have run).
/// Rows hold local seqs (`streams.rs`): a version is in the batch when its local seq is one of
/// the stream's seqs above `since`, and ranges, cuts and marks are in the stream's seqs.
pub(crate) fn changes(
    call: &Call,
    stream: &str,
    since: u64,
    max_bytes: Option<usize>,
) -> Result<Option<Vec<u8>>, Error> {
    let conn = call.conn;
    let runs = crate::streams::Runs::load(conn)?;
    let top = runs.top(stream);
    if since >= top {
        return Ok(None);
    }
    // A transfer (`transfer.rs`) goes in a batch of its own: own changes stop before it.
    let next_transfer = crate::transfer::batch::next(conn, &runs, stream, since)?;
    if next_transfer == Some(since + 1) {
        return crate::transfer::batch::make(call, &runs, stream, since, max_bytes).map(Some);
    }
    // The grant version of seq `since + 1`, and the last seq written under it: this batch's
    // upper bound (module documentation), or the seq before the next transfer.
    let (version, stretch_end) = runs
        .stretch(stream, since + 1)
        .ok_or_else(|| Error::Internal(format!("stream {stream:?} has no seq {}", since + 1)))?;
    let limit = next_transfer.map_or(stretch_end, |s| stretch_end.min(s - 1));
    // The smallest local seq of the stream above `since`: rows whose newest own seq is below
    // it hold nothing for this batch.
    let first_local = runs
        .local_of(stream, since + 1)
        .ok_or_else(|| Error::Internal(format!("stream {stream:?} has no seq {}", since + 1)))?;
    // The stream seq of an own version's local seq, when it is in this stream.
    let in_stream = |lseq: u64| match runs.stream_of(lseq) {
        Some((s, sseq)) if s == stream && lseq > 0 => Some(sseq),
        _ => None,
    };
    // ... when it is also in this batch's stretch. Candidates are the rows holding such a seq
    // above `since`: a budget cut's cursor serves the rest of the stretch, and the next
    // stretch's first call scans again (no cursor is kept where a stretch ends).
    let in_batch = |lseq: u64| in_stream(lseq).filter(|&s| s <= limit);
    let above = |lseq: u64| in_batch(lseq).filter(|&s| s > since);
    let sites = Sites::load(conn)?;
    let me = sites.me();
    let mut exported: Vec<Exported> = Vec::new();
    let mut schemas = Vec::new();
    for t in schema::load_tracked(conn)?
        .into_iter()
        .filter(|t| t.def.direction != Direction::Down)
    {
        let select = select_row(conn, &t)?;
        schemas.push(schema::table_schema(conn, &t)?);
        exported.push(Exported {
            header_index: (schemas.len() - 1) as u16,
            t,
            select,
        });
    }
    let header_size = {
        let w = BodyWriter::new(schemas.clone()).map_err(Error::export)?;
        let range = SeqRange { lo: 1, hi: 1 };
        codec::finish_batch(w, me, range, Compression::None)
            .map_err(Error::export)?
            .len()
            + 16
    };
    // Candidates: rows holding an own write above `since`, by their smallest such seq.
    let kept = call.session.export.take::<ExportCursor>();
    let candidates = match kept {
        Some(c) if c.stream == stream && c.top == top && c.since == since => c.rest,
        _ => {
            let mut c: Vec<(u64, i64, Vec<u8>)> = Vec::new();
            let mut s = conn.prepare(
                "SELECT tbl, key, exist, exist_seq, clocks FROM _outpost_rows WHERE seq >= ?1 AND seq > 0",
            )?;
            s.bind_i64(1, first_local as i64)?;
            while s.step()? {
                let st =
                    crate::state::RowState::decode(s.i64(2) as u64, s.i64(3) as u64, &s.blob(4))?;
                if let Some(min) = st.own_seqs().filter_map(above).min() {
                    c.push((min, s.i64(0), s.blob(1)));
                }
            }
            c.sort_unstable_by_key(|x| x.0);
            c
        }
    };
    let mut rows = RowStore::new(conn)?;
    let mut writer = BodyWriter::new(schemas).map_err(Error::export)?;
    let mut open: Option<usize> = None;
    let mut pushed = 0usize;
    let mut hi = limit;
    // What this batch takes out of the database (`restamp.rs`: it can no longer be re-stamped).
    let mut sent_seq = 0u64;
    let mut sent_hlc = 0u64;
    // Whether the rows so far are all of `up` tables (`None`: no row yet), and whether a row of
    // the other kind had to join them (it shares its smallest seq with a row already in).
    let mut rows_up: Option<bool> = None;
    let mut mixed = false;
    let mut candidates = candidates.into_iter();
    while let Some((min_seq, tbl, key)) = candidates.next() {
        if min_seq > limit {
            break;
        }
        let Some(ti) = exported.iter().position(|e| e.t.id == tbl) else {
            continue;
        };
        let ex = &mut exported[ti];
        let Some(st) = rows.get(ex.t.id, &key)? else {
            continue;
        };
        let alive = st.exist % 2 == 1;
        let key_vals = crate::keys::unpack(&key)?;
        let mut app: Option<Vec<Value>> = None;
        let mut cells_out = Vec::new();
        let mut size = 24 + key_vals.iter().map(value_size).sum::<usize>();
        for c in 0..ex.t.def.columns.len() {
            let Some(v) = st.cell(c) else { continue };
            if !alive || v.site != 0 || v.epoch != st.exist || above(v.seq).is_none() {
                continue;
            }
            let payload = match ex.t.def.columns[c].strategy {
                Strategy::Lww | Strategy::RowLww => {
                    if app.is_none() {
                        ex.select.bind_all(&key_vals)?;
                        let found = ex.select.step()?;
                        let vals = if found {
                            (0..ex.t.def.columns.len())
                                .map(|i| ex.select.value(i))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        ex.select.reset();
                        // A row evicted by a UNIQUE collision keeps its values in its tombstone.
                        let vals = if found {
                            vals
                        } else {
                            tombstone(conn, ex.t.id, &key)?.unwrap_or_default()
                        };
                        app = Some(vals);
                    }
                    match app.as_ref().and_then(|a| a.get(c)) {
                        Some(v) => CellPayload::Value(v.clone()),
                        None => continue,
                    }
                }
                Strategy::Counter => {
                    let cell = cells::load_counter(conn, ex.t.id, &key, c)?;
                    let own = cell
                        .contributions()
                        .iter()
                        .find(|x| x.site == me && x.epoch == st.exist);
                    match own {
                        Some(x) => CellPayload::Counter(x.total),
                        None => continue,
                    }
                }
                Strategy::Review => {
                    let cell = cells::load_review(conn, ex.t.id, &key, c)?;
                    let own = cell.siblings().iter().find(|s| {
                        s.version.stamp.site == me
                            && s.version.epoch == st.exist
                            && s.version.stamp.hlc == Hlc::from_u64(v.hlc)
                    });
                    match own {
                        Some(w) => CellPayload::Review {
                            value: w.value.clone(),
                            context: w.context.clone(),
                        },
                        None => continue,
                    }
                }
            };
            size += 12
                + match &payload {
                    CellPayload::Value(v) => value_size(v),
                    CellPayload::Counter(_) => 10,
                    CellPayload::Review { value, context } => {
                        value_size(value) + 26 * context.len()
                    }
                };
            cells_out.push(CellChange {
                column: c as u16,
                hlc: Hlc::from_u64(v.hlc),
                payload,
            });
        }
        if cells_out.is_empty() && above(st.exist_seq).is_none() {
            continue;
        }
        let up = ex.t.def.direction == Direction::Up;
        let over_budget = max_bytes.is_some_and(|limit| header_size + writer.len() + size > limit);
        let turns = rows_up.is_some_and(|u| u != up);
        // A cut leaves `since+1 ..= min_seq-1` to this batch: never empty.
        if pushed > 0 && (over_budget || turns) && min_seq > since + 1 {
            hi = min_seq - 1;
            let mut rest = vec![(min_seq, tbl, key)];
            rest.extend(candidates);
            call.session.export.put(ExportCursor {
                stream: stream.to_string(),
                top,
                since: hi,
                rest,
            });
            break;
        }
        mixed |= turns;
        rows_up = Some(up);
        if open != Some(ti) {
            writer.begin_table(ex.header_index).map_err(Error::export)?;
            open = Some(ti);
        }
        sent_seq = st.own_seqs().filter_map(in_batch).fold(sent_seq, u64::max);
        sent_hlc = cells_out
            .iter()
            .map(|c| c.hlc.as_u64())
            .fold(sent_hlc, u64::max);
        let row = RowChange {
            key: key_vals,
            existence: st.exist,
            cells: cells_out,
        };
        writer.push_row(&row).map_err(|source| Error::Export {
            table: Some(ex.t.def.name.clone()),
            source,
        })?;
        pushed += 1;
    }
    let range = SeqRange::new(since + 1, hi)
        .ok_or_else(|| Error::Internal(format!("empty export range {since}..{hi}")))?;
    let meta = BatchMeta {
        stream: stream.to_string(),
        flags: BatchFlags {
            direction: if rows_up == Some(true) && !mixed {
                outpost_protocol::batch::Direction::Up
            } else {
                outpost_protocol::batch::Direction::Both
            },
            transfer: false,
        },
        grant_version: version,
        ..BatchMeta::default()
    };
    let mut bytes = codec::finish_batch_with(writer, me, range, &meta, Compression::None)
        .map_err(Error::export)?;
    sign(conn, me, &mut bytes)?;
    crate::restamp::note_sent(conn, stream, sent_seq.max(hi), sent_hlc)?;
    Ok(Some(bytes))
}

/// Signs an exported batch with the database's key when it has one (docs/design.md section 10:
/// every relay and receiver checks a batch was made by its origin); a database that never
/// enrolled nor synced has no key and exports unsigned batches, which only a database enrolled
/// with no relay accepts.
pub(crate) fn sign(conn: Conn, me: SiteId, bytes: &mut [u8]) -> Result<(), Error> {
    let key = crate::sync::identity::existing(conn, me).map_err(|e| Error::Sync {
        function: "outpost_changes",
        error: Box::new(e),
    })?;
    if let Some(key) = key {
        outpost_protocol::batch::signature::sign(bytes, &key)
            .map_err(|e| Error::Internal(format!("signing an exported batch: {e}")))?;
    }
    Ok(())
}

/// A statement reading every column of one row of `t`, its key bound as `?1...`.
pub(crate) fn select_row(conn: Conn, t: &Tracked) -> Result<Stmt, Error> {
    let cols: Vec<String> = t.def.columns.iter().map(|c| quote(&c.name)).collect();
    conn.prepare(&format!(
        "SELECT {} FROM {} WHERE {}",
        if cols.is_empty() {
            "1".to_string()
        } else {
            cols.join(", ")
        },
        quote(&t.def.name),
        crate::cells::key_match(t)
    ))
}

/// The values a row's tombstone keeps (a deleted row, or one held aside by a UNIQUE collision).
pub(crate) fn tombstone(conn: Conn, tbl: i64, key: &[u8]) -> Result<Option<Vec<Value>>, Error> {
    let mut s = conn.prepare("SELECT vals FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
    s.bind_i64(1, tbl)?;
    s.bind_blob(2, key)?;
    if s.step()? {
        Ok(Some(crate::keys::unpack(&s.blob(0))?))
    } else {
        Ok(None)
    }
}

/// `outpost_batch_json(batch)`.
pub(crate) fn sql_batch_json(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let Arg::Blob(bytes) = args[0] else {
        return Err(call.arg_error("expects a batch blob (from outpost_changes)"));
    };
    let b = codec::decode(bytes, &Limits::default())
        .map_err(|e| Error::Apply(ApplyError::Decode(e)))?;
    let h = &b.header;
    let tables: Vec<serde_json::Value> = h
        .tables
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "columns": t.columns.iter().map(|c| json!({"name": c.name, "type": c.decl_type, "strategy": c.strategy.name(), "not_null": c.not_null})).collect::<Vec<_>>(),
                "primary_key": t.primary_key,
                "foreign_keys": t.foreign_keys.iter().map(|f| json!({"columns": f.columns, "parent": f.parent, "parent_columns": f.parent_columns})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body: Vec<serde_json::Value> = b
        .tables
        .iter()
        .map(|g| {
            let schema = h.tables.get(g.table as usize);
            let names: Vec<String> = schema.map(|s| s.value_columns().map(|i| s.columns[i as usize].name.clone()).collect()).unwrap_or_default();
            json!({
                "table": schema.map(|s| s.name.clone()),
                "credit": g.credit.map(|s| s.to_string()),
                "rows": g.rows.iter().map(|r| json!({
                    "key": r.key.iter().map(value_json).collect::<Vec<_>>(),
                    "existence": r.existence,
                    "cells": r.cells.iter().map(|c| {
                        let mut o = json!({"column": names.get(c.column as usize), "hlc": c.hlc.to_string()});
                        match &c.payload {
                            CellPayload::Value(v) => o["value"] = value_json(v),
                            CellPayload::Counter(n) => o["counter"] = json!(n),
                            CellPayload::Review { value, context } => {
                                o["value"] = value_json(value);
                                o["supersedes"] = context.iter().map(|(s, h)| json!({"site": s.to_string(), "hlc": h.to_string()})).collect();
                            }
                        }
                        o
                    }).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let out = json!({
        "header": {
            "origin": h.origin.to_string(),
            "stream": h.stream,
            "range": {"lo": h.range.lo, "hi": h.range.hi},
            "direction": h.flags.direction.as_str(),
            "transfer": h.flags.transfer,
            "grant_version": h.grant_version,
            "base_hlc": h.base_hlc.to_string(),
            "tables": tables,
            "compression": format!("{:?}", h.compression).to_lowercase(),
            "body_len": h.body_len,
            "body_sha256": hex::encode(h.body_sha256),
        },
        "body": body,
    });
    Ok(Value::Text(out.to_string()))
}
