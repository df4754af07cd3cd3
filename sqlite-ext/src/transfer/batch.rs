//! The batch of queued transfers (`transfer.rs`): made by `outpost_changes` when the stream's
//! next seq is a transfer, for the run of consecutive transfer seqs from there (cut by the byte
//! budget, never empty). A transfer batch holds only transfers: the flag is per batch, so the
//! export of own changes stops before the next transfer seq (`next`).
//!
//! Each transferred row, and each of its `via` children (and theirs), goes in whole: for every
//! site that wrote a cell the row holds at its current epoch, one row change in a group credited
//! to that site, with the row's causal length; a row with no such cell (a deleted row) goes with
//! its causal length alone, credited to this database. The values are read now, not when the
//! transfer was queued: a transfer carries the latest merged state.

use crate::cells;
use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::Call;
use crate::schema::{self, quote, ScopeRule, Tracked};
use crate::sites::Sites;
use crate::state::RowStore;
use crate::streams::Runs;
use outpost_protocol::batch::codec;
use outpost_protocol::batch::{
    BatchFlags, BatchMeta, BodyWriter, CellChange, CellPayload, Compression, Direction, RowChange,
};
use outpost_protocol::vector::SeqRange;
use outpost_protocol::{Hlc, SiteId, Strategy, Value};
use std::collections::BTreeMap;

/// How deep `via` children are followed (as `row_scope.rs` follows parents).
const VIA_DEPTH: usize = 8;

/// The stream seqs above `since` of `stream` that are transfers, in order.
fn transfer_seqs(conn: Conn, runs: &Runs, stream: &str, since: u64) -> Result<Vec<u64>, Error> {
    let Some(first) = runs.local_of(stream, since + 1) else {
        return Ok(Vec::new());
    };
    let mut s = conn.prepare(
        "SELECT lseq FROM _outpost_transfers WHERE stream = ?1 AND lseq >= ?2 ORDER BY lseq",
    )?;
    s.bind_text(1, stream)?;
    s.bind_i64(2, first as i64)?;
    let mut out = Vec::new();
    while s.step()? {
        if let Some((st, sseq)) = runs.stream_of(s.i64(0) as u64) {
            if st == stream {
                out.push(sseq);
            }
        }
    }
    Ok(out)
}

/// The first seq above `since` of `stream` that is a transfer (one index probe).
pub(crate) fn next(
    conn: Conn,
    runs: &Runs,
    stream: &str,
    since: u64,
) -> Result<Option<u64>, Error> {
    let Some(first) = runs.local_of(stream, since + 1) else {
        return Ok(None);
    };
    let lseq = conn.query_i64(
        "SELECT lseq FROM _outpost_transfers WHERE stream = ?1 AND lseq >= ?2 ORDER BY lseq LIMIT 1",
        &[Value::Text(stream.to_string()), Value::Integer(first as i64)],
    )?;
    Ok(lseq
        .and_then(|l| runs.stream_of(l as u64))
        .map(|(_, sseq)| sseq))
}

/// The tracked tables, with how each `via` table finds its parent.
struct Tables {
    tracked: Vec<Tracked>,
    /// Per table, the `via` children: (child index, the child's `via` column).
    children: Vec<Vec<(usize, String)>>,
}

impl Tables {
    fn load(conn: Conn) -> Result<Tables, Error> {
        let tracked = schema::load_tracked(conn)?;
        let mut children = vec![Vec::new(); tracked.len()];
        for (ci, t) in tracked.iter().enumerate() {
            let Some(ScopeRule::Via(column)) = &t.def.scope else {
                continue;
            };
            let parent = schema::foreign_keys(conn, &t.def.name)?
                .into_iter()
                .find(|(_, from, _)| from.len() == 1 && from[0] == *column)
                .and_then(|(p, _, _)| {
                    tracked
                        .iter()
                        .position(|x| x.def.name.eq_ignore_ascii_case(&p))
                });
            if let Some(pi) = parent {
                children[pi].push((ci, column.clone()));
            }
        }
        Ok(Tables { tracked, children })
    }

    /// Row (`ti`, `key`) and its `via` descendants, parents first.
    fn with_children(
        &self,
        conn: Conn,
        ti: usize,
        key: Vec<u8>,
        out: &mut Vec<(usize, Vec<u8>)>,
    ) -> Result<(), Error> {
        let mut level = vec![(ti, key)];
        for _ in 0..VIA_DEPTH {
            let mut next = Vec::new();
            for (ti, key) in &level {
                for (ci, column) in &self.children[*ti] {
                    let child = &self.tracked[*ci];
                    let parent_key = crate::keys::unpack(key)?;
                    let [v] = parent_key.as_slice() else { continue };
                    let pk: Vec<String> = child.def.pk.iter().map(|c| quote(c)).collect();
                    let mut s = conn.prepare(&format!(
                        "SELECT {} FROM {} WHERE {} = ?1",
                        pk.join(", "),
                        quote(&child.def.name),
                        quote(column)
                    ))?;
                    s.bind_all(std::slice::from_ref(v))?;
                    while s.step()? {
                        let vals: Vec<Value> = (0..pk.len()).map(|i| s.value(i)).collect();
                        next.push((*ci, crate::keys::pack(&vals)));
                    }
                }
            }
            out.append(&mut level);
            if next.is_empty() {
                break;
            }
            level = next;
        }
        out.append(&mut level);
        Ok(())
    }
}

/// The app row's values (its tombstone's when it has no app row).
fn values(conn: Conn, t: &Tracked, key: &[u8]) -> Result<Vec<Value>, Error> {
    let mut s = crate::export::select_row(conn, t)?;
    s.bind_all(&crate::keys::unpack(key)?)?;
    if s.step()? {
        return Ok((0..t.def.columns.len()).map(|i| s.value(i)).collect());
    }
    Ok(crate::export::tombstone(conn, t.id, key)?.unwrap_or_default())
}

/// A row's merge state as row changes per credited site.
fn credited(
    conn: Conn,
    rows: &mut RowStore,
    sites: &Sites,
    t: &Tracked,
    key: &[u8],
) -> Result<BTreeMap<SiteId, RowChange>, Error> {
    let mut out: BTreeMap<SiteId, RowChange> = BTreeMap::new();
    let Some(st) = rows.get(t.id, key)? else {
        return Ok(out);
    };
    let me = sites.me();
    let mut cells_of: Vec<(SiteId, CellChange)> = Vec::new();
    if st.exist % 2 == 1 {
        let mut app: Option<Vec<Value>> = None;
        for c in 0..t.def.columns.len() {
            let column = c as u16;
            match t.def.columns[c].strategy {
                Strategy::Lww | Strategy::RowLww => {
                    let Some(v) = st.cell(c).filter(|v| v.epoch == st.exist) else {
                        continue;
                    };
                    if app.is_none() {
                        app = Some(values(conn, t, key)?);
                    }
                    let Some(value) = app.as_ref().and_then(|a| a.get(c)).cloned() else {
                        continue;
                    };
                    let site = sites.ids.get(v.site as usize).copied().unwrap_or(me);
                    cells_of.push((
                        site,
                        CellChange {
                            column,
                            hlc: Hlc::from_u64(v.hlc),
                            payload: CellPayload::Value(value),
                        },
                    ));
                }
                Strategy::Counter => {
                    let cell = cells::load_counter(conn, t.id, key, c)?;
                    for x in cell.contributions().iter().filter(|x| x.epoch == st.exist) {
                        cells_of.push((
                            x.site,
                            CellChange {
                                column,
                                hlc: x.hlc,
                                payload: CellPayload::Counter(x.total),
                            },
                        ));
                    }
                }
                Strategy::Review => {
                    let cell = cells::load_review(conn, t.id, key, c)?;
                    for w in cell
                        .siblings()
                        .iter()
                        .filter(|w| w.version.epoch == st.exist)
                    {
                        cells_of.push((
                            w.version.stamp.site,
                            CellChange {
                                column,
                                hlc: w.version.stamp.hlc,
                                payload: CellPayload::Review {
                                    value: w.value.clone(),
                                    context: w.context.clone(),
                                },
                            },
                        ));
                    }
                }
            }
        }
    }
    let key_vals = crate::keys::unpack(key)?;
    let blank = || RowChange {
        key: key_vals.clone(),
        existence: st.exist,
        cells: Vec::new(),
    };
    if cells_of.is_empty() {
        out.insert(me, blank());
    }
    for (site, cell) in cells_of {
        out.entry(site).or_insert_with(blank).cells.push(cell);
    }
    Ok(out)
}

/// The transfer batch of `stream` from seq `since + 1`, which must be a transfer (see
/// [`next`]), signed like every export.
pub(crate) fn make(
    call: &Call,
    runs: &Runs,
    stream: &str,
    since: u64,
    max_bytes: Option<usize>,
) -> Result<Vec<u8>, Error> {
    let conn = call.conn;
    let seqs = transfer_seqs(conn, runs, stream, since)?;
    let tables = Tables::load(conn)?;
    let sites = Sites::load(conn)?;
    let me = sites.me();
    let mut rows = RowStore::new(conn)?;
    let mut schemas = Vec::new();
    for t in &tables.tracked {
        schemas.push(schema::table_schema(conn, t)?);
    }
    // Per table, per credited site, the rows (a BTreeMap keeps the body's order stable).
    let mut groups: BTreeMap<(usize, SiteId), Vec<RowChange>> = BTreeMap::new();
    let mut size = 0usize;
    let mut hi = since;
    for sseq in seqs {
        if sseq != hi + 1 || (hi > since && max_bytes.is_some_and(|m| size > m)) {
            break;
        }
        let lseq = runs
            .local_of(stream, sseq)
            .ok_or_else(|| Error::Internal(format!("stream {stream:?} has no seq {sseq}")))?;
        let mut s = conn.prepare("SELECT tbl, key FROM _outpost_transfers WHERE lseq = ?1")?;
        s.bind_i64(1, lseq as i64)?;
        if !s.step()? {
            return Err(Error::Internal(format!("transfer {lseq} vanished")));
        }
        let (tbl, key) = (s.i64(0), s.blob(1));
        drop(s);
        hi = sseq;
        let Some(ti) = tables.tracked.iter().position(|t| t.id == tbl) else {
            continue; // untracked since: nothing to move
        };
        let mut moving = Vec::new();
        tables.with_children(conn, ti, key, &mut moving)?;
        for (ti, key) in moving {
            for (site, row) in credited(conn, &mut rows, &sites, &tables.tracked[ti], &key)? {
                size += 32 + 24 * row.cells.len();
                size += row
                    .cells
                    .iter()
                    .map(|c| match &c.payload {
                        CellPayload::Value(Value::Text(t)) => t.len(),
                        CellPayload::Value(Value::Blob(b)) => b.len(),
                        _ => 8,
                    })
                    .sum::<usize>();
                groups.entry((ti, site)).or_default().push(row);
            }
        }
    }
    let mut writer = BodyWriter::new_transfer(schemas).map_err(Error::export)?;
    for ((ti, site), list) in groups {
        writer
            .begin_credited(ti as u16, site)
            .map_err(Error::export)?;
        for row in &list {
            writer.push_row(row).map_err(|source| Error::Export {
                table: Some(tables.tracked[ti].def.name.clone()),
                source,
            })?;
        }
    }
    let range = SeqRange::new(since + 1, hi).ok_or_else(|| {
        Error::Internal(format!("no transfer at seq {} of {stream:?}", since + 1))
    })?;
    let meta = BatchMeta {
        stream: stream.to_string(),
        flags: BatchFlags {
            direction: Direction::Both,
            transfer: true,
        },
        ..BatchMeta::default()
    };
    let mut bytes = codec::finish_batch_with(writer, me, range, &meta, Compression::None)
        .map_err(Error::export)?;
    crate::export::sign(conn, me, &mut bytes)?;
    crate::restamp::note_sent(conn, stream, hi, 0)?;
    Ok(bytes)
}
