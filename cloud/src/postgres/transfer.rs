//! Transfer batches of the PostgreSQL tenant (DESIGN section 10, "Moves"; the engine's
//! `sqlite-ext/src/transfer/batch.rs`): the outbox entries of op 4 that the apply core queued
//! after a device's move, or a back-office move's capture (`capture.sql`, `outpost.transfer`,
//! `outpost.moved`), read as one batch of the cloud's origin flagged `transfer`.
//!
//! Each transferred row, and each of its `via` children (and theirs), goes in whole: the apply
//! core's [`outpost_apply_core::transfer::credited`] over the merge state now (not when the
//! transfer was queued), one row change per site that wrote a cell of the row's current epoch, in
//! a group credited to that site. The merge state is read in a transaction that holds the apply
//! lock and the clock row and first folds the back office's captured writes into it, as an apply
//! does: a back-office move's own cells are then versions of the cloud's like any other.
//!
//! Like the outbox's other batches, a transfer batch leaves unsealed and unsigned; the export
//! (`tenant/export.rs`) keeps its `transfer` flag, seals and signs it.

use super::apply::APPLY_LOCK;
use super::outbox::{key_values, Exported, OutboxError};
use super::store::PgStore;
use ::postgres::GenericClient;
use outpost_apply_core::transfer::credited;
use outpost_apply_core::{Store, Table};
use outpost_protocol::batch::codec;
use outpost_protocol::batch::{
    BatchFlags, BatchMeta, BodyWriter, CellPayload, Compression, Direction, RowChange,
};
use outpost_protocol::scope::ScopeRule;
use outpost_protocol::vector::SeqRange;
use outpost_protocol::{SiteId, Value};
use std::collections::BTreeMap;

/// How deep `via` children are followed (as capture follows parents).
const VIA_DEPTH: usize = 8;

/// Transfers whose rows' states are read ahead together.
const READ_AHEAD: usize = 512;

/// One queued transfer: its seq, table id and key (as the outbox holds it).
pub(crate) struct Queued {
    pub seq: u64,
    pub tbl: i32,
    pub key: String,
}

fn store_error(e: super::store::StoreError) -> OutboxError {
    OutboxError::Transfer(e)
}

/// The transfer batch of `stream` whose first seq is `queued[0]`'s (consecutive seqs, each a
/// transfer), cut after the row that passes `max_bytes` (never empty).
pub(crate) fn batch(
    client: &mut impl GenericClient,
    origin: SiteId,
    stream: &str,
    queued: &[Queued],
    max_bytes: Option<usize>,
) -> Result<Exported, OutboxError> {
    let mut tx = client.transaction().map_err(|source| OutboxError::Sql {
        doing: "starting a transaction to read transfers".into(),
        source,
    })?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({APPLY_LOCK}); SELECT outpost.clock_hold();"
    ))
    .map_err(|source| OutboxError::Sql {
        doing: "taking the tenant's apply lock and the clock row to read transfers".into(),
        source,
    })?;
    let (bytes, range) = {
        let mut store = PgStore::new(&mut tx, origin, false);
        store.fold_captured().map_err(store_error)?;
        let tables = store.tables().map_err(store_error)?;
        let mut schemas = Vec::with_capacity(tables.len());
        for t in &tables {
            schemas.push(store.schema(t).map_err(store_error)?);
        }
        let children = via_children(&tables);
        // Per table, per credited site, the rows (a BTreeMap keeps the body's order stable).
        let mut groups: BTreeMap<(usize, SiteId), Vec<RowChange>> = BTreeMap::new();
        let mut size = 0usize;
        let mut hi = queued[0].seq - 1;
        'chunks: for chunk in queued.chunks(READ_AHEAD) {
            // The chunk's rows and their `via` children first, then their states and values in
            // one read per table (a back-office statement may move thousands of rows).
            let mut moving: Vec<Vec<(usize, Vec<Value>)>> = Vec::with_capacity(chunk.len());
            for q in chunk {
                let Some(ti) = tables.iter().position(|t| t.id == i64::from(q.tbl)) else {
                    moving.push(Vec::new()); // not tracked any more: nothing to move
                    continue;
                };
                moving.push(vec![(ti, key_values(&schemas[ti], &q.key)?)]);
            }
            add_children(&mut store, &tables, &children, &mut moving)?;
            for (ti, t) in tables.iter().enumerate() {
                let keys: Vec<&[Value]> = moving
                    .iter()
                    .flatten()
                    .filter(|(i, _)| *i == ti)
                    .map(|(_, k)| k.as_slice())
                    .collect();
                if !keys.is_empty() {
                    store.prefetch_rows(t, &keys).map_err(store_error)?;
                    store.read_values_ahead(t, &keys).map_err(store_error)?;
                }
            }
            for (q, rows) in chunk.iter().zip(moving) {
                if hi >= queued[0].seq && max_bytes.is_some_and(|m| size > m) {
                    break 'chunks;
                }
                hi = q.seq;
                for (ti, key) in rows {
                    for (site, row) in
                        credited(&mut store, &tables[ti], &key).map_err(store_error)?
                    {
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
        }
        let encode = |table: Option<&str>| {
            let table = table.map(str::to_string);
            move |source| OutboxError::Encode { table, source }
        };
        let mut writer = BodyWriter::new_transfer(schemas).map_err(encode(None))?;
        for ((ti, site), rows) in groups {
            writer
                .begin_credited(ti as u16, site)
                .map_err(encode(None))?;
            for row in &rows {
                writer
                    .push_row(row)
                    .map_err(encode(Some(&tables[ti].name)))?;
            }
        }
        let range = SeqRange::new(queued[0].seq, hi).expect("one transfer at least");
        let meta = BatchMeta {
            stream: stream.to_string(),
            flags: BatchFlags {
                direction: Direction::Both,
                transfer: true,
            },
            ..BatchMeta::default()
        };
        let bytes = codec::finish_batch_with(writer, origin, range, &meta, Compression::None)
            .map_err(encode(None))?;
        (bytes, range)
    };
    tx.commit().map_err(|source| OutboxError::Sql {
        doing: "committing the merge state folded to read transfers".into(),
        source,
    })?;
    Ok(Exported { bytes, range })
}

/// Adds to each list of `moving` (one per transfer, its row first) the row's `via` descendants
/// (and theirs, up to [`VIA_DEPTH`] levels), parents first: per level, one read per parent
/// table and child table for every list at once.
fn add_children(
    store: &mut PgStore<'_, '_>,
    tables: &[Table],
    children: &[Vec<(usize, usize)>],
    moving: &mut [Vec<(usize, Vec<Value>)>],
) -> Result<(), OutboxError> {
    let mut from = vec![0; moving.len()];
    for _ in 0..VIA_DEPTH {
        let upto: Vec<usize> = moving.iter().map(Vec::len).collect();
        // The level's parents' keys per (child table, `via` column), and where each came from.
        let mut asked: BTreeMap<(usize, usize), (Vec<Value>, Vec<usize>)> = BTreeMap::new();
        for (m, list) in moving.iter().enumerate() {
            for (pi, pk) in &list[from[m]..upto[m]] {
                let [v] = pk.as_slice() else { continue };
                for &(ci, c) in &children[*pi] {
                    let (values, lists) = asked.entry((ci, c)).or_default();
                    values.push(v.clone());
                    lists.push(m);
                }
            }
        }
        if asked.is_empty() {
            break;
        }
        for ((ci, c), (values, lists)) in asked {
            let found = store
                .rows_holding(&tables[ci], c, &values)
                .map_err(store_error)?;
            for (m, keys) in lists.into_iter().zip(found) {
                for k in keys {
                    if !moving[m].iter().any(|(t, x)| *t == ci && *x == k) {
                        moving[m].push((ci, k));
                    }
                }
            }
        }
        from = upto;
    }
    Ok(())
}

/// Per table, its `via` children: (child index, the child's `via` column as a value-column
/// index), by the child's foreign key on that column.
fn via_children(tables: &[Table]) -> Vec<Vec<(usize, usize)>> {
    let mut out = vec![Vec::new(); tables.len()];
    for (ci, t) in tables.iter().enumerate() {
        let Some(ScopeRule::Via(column)) = &t.scope else {
            continue;
        };
        let Some(c) = t.column_index(column) else {
            continue;
        };
        let parent = t
            .parents
            .iter()
            .find(|p| p.columns == [column.clone()])
            .and_then(|p| {
                tables
                    .iter()
                    .position(|x| x.name.eq_ignore_ascii_case(&p.table))
            });
        if let Some(pi) = parent {
            out[pi].push((ci, c));
        }
    }
    out
}
