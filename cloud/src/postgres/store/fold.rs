//! Back-office writes into the merge state: the captured writes (`outpost.outbox`) not folded
//! yet become the cloud's own versions, as the engine's fold makes its triggers' log into local
//! versions before every apply (`sqlite-ext/src/fold.rs`, `write_local`):
//! - each value column a write holds gets the version `(causal length, its clock, the cloud's
//!   site)`, whatever version it replaces: the app row holds the back office's value, so the
//!   state must say so (capture's clocks are above every clock an apply observed, so in practice
//!   the version is the newest anyway);
//! - a `counter` cell's captured total is the cloud's contribution in that epoch;
//! - a `review` cell's write is the cloud's sibling, superseding every sibling held (a person's
//!   write saw them all), which clears the cell's conflict;
//! - review siblings of epochs before a write's causal length are dropped (a delete, a
//!   re-insert), as the engine prunes them.
//!
//! The causal length itself is capture's to keep (`capture_rows.exist`, written in the writing
//! transaction): fold writes only the versions beside it. Writes are folded in clock order (the
//! clock row orders every capturing transaction), and each stream's `folded` mark moves past
//! them, so each is folded once. The apply holds the clock row while it folds and merges, so no
//! back-office write lands between the two.

use super::{sql, PgStore, StoreError};
use crate::postgres::capture::OP_DELETE;
use crate::postgres::outbox;
use outpost_apply_core::{RowState, Store, Table};
use outpost_protocol::merge::{CellVersion, Contribution, CounterCell, ReviewCell, ReviewWrite};
use outpost_protocol::{Hlc, Stamp, Strategy, Value};
use std::collections::HashMap;

/// One captured write, as fold reads it.
struct Captured {
    stream: String,
    seq: i64,
    hlc: u64,
    tbl: i32,
    key: String,
    exist: u64,
    op: i16,
    cells: Option<String>,
}

/// What fold changes for one row: its key values and state, and its counter and review cells
/// by value column (read ahead for every such column; `true`: changed).
struct Row {
    table: usize,
    key: Vec<Value>,
    state: RowState,
    counters: HashMap<usize, (CounterCell, bool)>,
    reviews: HashMap<usize, (ReviewCell, bool)>,
}

impl PgStore<'_, '_> {
    /// Folds the captured writes not folded yet into the merge state. Returns how many.
    pub(crate) fn fold_captured(&mut self) -> Result<u64, StoreError> {
        // Transfers (op 4) are no writes: the state they carry is the merge state already.
        let s = self.stmt(
            "SELECT o.stream, o.seq, o.hlc, o.tbl, o.key::text, o.exist, o.op, o.cells::text \
             FROM outpost.streams s JOIN outpost.outbox o ON o.stream = s.stream AND o.seq > s.folded \
             WHERE o.op <> 4 ORDER BY o.hlc",
        )?;
        let found = self
            .tx
            .query(&s, &[])
            .map_err(sql("reading the captured writes not folded yet"))?;
        if found.is_empty() {
            return Ok(0);
        }
        let captured: Vec<Captured> = found
            .iter()
            .map(|r| Captured {
                stream: r.get(0),
                seq: r.get(1),
                hlc: r.get::<_, i64>(2) as u64,
                tbl: r.get(3),
                key: r.get(4),
                exist: r.get::<_, i64>(5) as u64,
                op: r.get(6),
                cells: r.get(7),
            })
            .collect();
        let tables = self.tables()?;
        let (order, mut rows) = self.read_folded_rows(&tables, &captured)?;
        let mut folded: HashMap<String, i64> = HashMap::new();
        for e in &captured {
            let top = folded.entry(e.stream.clone()).or_insert(e.seq);
            *top = (*top).max(e.seq);
            let row = rows
                .get_mut(&(e.tbl, e.key.clone()))
                .expect("read for every write");
            let t = &tables[row.table];
            self.fold_one(t, row, e)?;
        }
        self.write_folded(&tables, &order, &rows)?;
        let s = self.stmt("UPDATE outpost.streams SET folded = $2 WHERE stream = $1")?;
        for (stream, seq) in folded {
            self.tx
                .execute(&s, &[&stream, &seq])
                .map_err(sql(format!("marking stream {stream:?} folded")))?;
        }
        // Reads later in the transaction find the folded state in the tables.
        self.states.clear();
        Ok(captured.len() as u64)
    }

    /// The rows the writes touch, in order of their first write: their state, counter and
    /// review cells, read one statement per table (not one per row: a back-office statement may
    /// write thousands).
    #[allow(clippy::type_complexity)]
    fn read_folded_rows(
        &mut self,
        tables: &[Table],
        captured: &[Captured],
    ) -> Result<(Vec<(i32, String)>, HashMap<(i32, String), Row>), StoreError> {
        let mut order: Vec<(i32, String)> = Vec::new();
        let mut keys: HashMap<(i32, String), (usize, Vec<Value>, u64)> = HashMap::new();
        for e in captured {
            let id = (e.tbl, e.key.clone());
            if keys.contains_key(&id) {
                continue;
            }
            let ti = tables
                .iter()
                .position(|t| t.id == i64::from(e.tbl))
                .ok_or_else(|| StoreError::Damaged {
                    what: format!(
                        "outpost.outbox names table id {}, which is not captured",
                        e.tbl
                    ),
                })?;
            let def = &self.table(&tables[ti])?.def;
            let key = outbox::key_values(def, &e.key).map_err(|err| StoreError::Damaged {
                what: format!("a captured key of table {:?}: {err}", tables[ti].name),
            })?;
            keys.insert(id.clone(), (ti, key, e.exist));
            order.push(id);
        }
        let mut rows = HashMap::with_capacity(order.len());
        for (ti, t) in tables.iter().enumerate() {
            let mine: Vec<&(i32, String)> = order.iter().filter(|id| keys[*id].0 == ti).collect();
            if mine.is_empty() {
                continue;
            }
            let key_refs: Vec<&[Value]> = mine.iter().map(|id| keys[*id].1.as_slice()).collect();
            self.read_rows_ahead(t, &key_refs)?;
            let cells = self.read_cells_ahead(t, &mine)?;
            for id in mine {
                let (_, key, exist) = &keys[id];
                let state = self.row(t, key)?.unwrap_or(RowState {
                    exist: *exist,
                    cells: Vec::new(),
                });
                let mut row = Row {
                    table: ti,
                    key: key.clone(),
                    state,
                    counters: HashMap::new(),
                    reviews: HashMap::new(),
                };
                for (c, col) in t.columns.iter().enumerate() {
                    let stored = cells.get(&(id.1.clone(), c as i32));
                    let damaged = |e: serde_json::Error| StoreError::Damaged {
                        what: format!("a cell of table {:?}: {e}", t.name),
                    };
                    match col.strategy {
                        Strategy::Counter => {
                            let cell = match stored {
                                Some(j) => serde_json::from_str(j).map_err(damaged)?,
                                None => CounterCell::new(),
                            };
                            row.counters.insert(c, (cell, false));
                        }
                        Strategy::Review => {
                            let cell = match stored {
                                Some(j) => serde_json::from_str(j).map_err(damaged)?,
                                None => ReviewCell::new(),
                            };
                            row.reviews.insert(c, (cell, false));
                        }
                        Strategy::Lww | Strategy::RowLww => {}
                    }
                }
                rows.insert(id.clone(), row);
            }
        }
        Ok((order, rows))
    }

    /// The `counter` and `review` cells of rows `ids` of `t`, by (key, column).
    fn read_cells_ahead(
        &mut self,
        t: &Table,
        ids: &[&(i32, String)],
    ) -> Result<HashMap<(String, i32), String>, StoreError> {
        if !t
            .columns
            .iter()
            .any(|c| matches!(c.strategy, Strategy::Counter | Strategy::Review))
        {
            return Ok(HashMap::new());
        }
        let s = self.stmt(
            "SELECT c.key::text, c.col, c.state::text FROM outpost.merge_cells c \
             WHERE c.tbl = $1 AND c.key IN (SELECT unnest($2::text[])::jsonb)",
        )?;
        let keys: Vec<&str> = ids.iter().map(|id| id.1.as_str()).collect();
        let found = self
            .tx
            .query(&s, &[&(t.id as i32), &keys])
            .map_err(sql(format!(
                "reading the counter and review cells of {} rows of table {:?}",
                keys.len(),
                t.name
            )))?;
        Ok(found
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect())
    }

    /// One captured write into its row's state and cells.
    fn fold_one(&mut self, t: &Table, row: &mut Row, e: &Captured) -> Result<(), StoreError> {
        let epoch = e.exist;
        let version = CellVersion {
            epoch,
            stamp: Stamp {
                hlc: Hlc::from_u64(e.hlc),
                site: self.site,
            },
        };
        // Siblings of the epochs before this write's are dead (`prune_review`).
        for (cell, dirty) in row.reviews.values_mut() {
            if cell.siblings().iter().any(|s| s.version.epoch < epoch) {
                let mut kept = ReviewCell::new();
                for s in cell.siblings().iter().filter(|s| s.version.epoch >= epoch) {
                    kept.merge(s.clone());
                }
                *cell = kept;
                *dirty = true;
            }
        }
        if e.op == OP_DELETE {
            return Ok(());
        }
        let Some(text) = &e.cells else {
            return Ok(());
        };
        let def = &self.table(t)?.def;
        let damaged = |what: String| StoreError::Damaged {
            what: format!("a captured write of table {:?}: {what}", t.name),
        };
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|err| damaged(err.to_string()))?;
        let cells = json
            .as_object()
            .ok_or_else(|| damaged(format!("cells {text}")))?;
        for (n, v) in cells {
            let c: usize = n.parse().map_err(|_| damaged(format!("column {n:?}")))?;
            let (Some(col), Some(at)) = (t.columns.get(c), def.value_columns().nth(c)) else {
                return Err(damaged(format!("column {c}")));
            };
            *row.state.cell_mut(c) = Some(version);
            match col.strategy {
                Strategy::Lww | Strategy::RowLww => {}
                Strategy::Counter => {
                    let total = v.as_i64().ok_or_else(|| damaged(format!("counter {v}")))?;
                    let (cell, dirty) = row.counters.get_mut(&c).expect("read ahead");
                    *dirty |= cell.merge(Contribution {
                        site: self.site,
                        epoch,
                        hlc: version.stamp.hlc,
                        total,
                    });
                }
                Strategy::Review => {
                    let value = outbox::value(def, at as usize, v)
                        .map_err(|err| damaged(err.to_string()))?;
                    let (cell, dirty) = row.reviews.get_mut(&c).expect("read ahead");
                    let context = cell.context();
                    *dirty |= cell.merge(ReviewWrite {
                        version,
                        value,
                        context,
                    });
                }
            }
        }
        Ok(())
    }

    /// The folded rows' versions (capture's causal length left as it is), counter and review
    /// cells written, one statement each; a review cell left with several siblings (a delete
    /// pruned some) has its conflict record rewritten, the others' records are dropped.
    fn write_folded(
        &mut self,
        tables: &[Table],
        order: &[(i32, String)],
        rows: &HashMap<(i32, String), Row>,
    ) -> Result<(), StoreError> {
        let s = self.stmt(
            "INSERT INTO outpost.capture_rows AS r(tbl, key, exist, versions) \
             SELECT u.t, u.k, u.e, u.v FROM unnest($1::integer[], $2::text[], $3::bigint[], $4::bytea[]) AS u(t, k, e, v) \
             ON CONFLICT (tbl, key) DO UPDATE SET versions = excluded.versions",
        )?;
        let (mut ids, mut keys, mut exists, mut versions) = (vec![], vec![], vec![], vec![]);
        let (mut cell_ids, mut cell_keys, mut cell_cols, mut cell_states) =
            (vec![], vec![], vec![], vec![]);
        let (mut single_ids, mut single_keys, mut single_cols) = (vec![], vec![], vec![]);
        let mut conflicts = Vec::new();
        let json = |cell: Result<String, serde_json::Error>| {
            cell.map_err(|e| StoreError::Damaged {
                what: format!("a cell as JSON: {e}"),
            })
        };
        for id in order {
            let row = &rows[id];
            ids.push(id.0);
            keys.push(id.1.clone());
            exists.push(row.state.exist as i64);
            versions.push(row.state.encode());
            for (&c, (cell, dirty)) in &row.counters {
                if *dirty {
                    cell_ids.push(id.0);
                    cell_keys.push(id.1.clone());
                    cell_cols.push(c as i32);
                    cell_states.push(json(serde_json::to_string(cell))?);
                }
            }
            for (&c, (cell, dirty)) in &row.reviews {
                if !*dirty {
                    continue;
                }
                if cell.siblings().len() > 1 {
                    conflicts.push((row.table, row.key.clone(), c, cell.clone()));
                    continue;
                }
                cell_ids.push(id.0);
                cell_keys.push(id.1.clone());
                cell_cols.push(c as i32);
                cell_states.push(json(serde_json::to_string(cell))?);
                single_ids.push(id.0);
                single_keys.push(id.1.clone());
                single_cols.push(c as i32);
            }
        }
        self.tx
            .execute(&s, &[&ids, &keys, &exists, &versions])
            .map_err(sql(format!(
                "writing the versions of {} rows the back office wrote",
                ids.len()
            )))?;
        if !cell_ids.is_empty() {
            let s = self.stmt(
                "INSERT INTO outpost.merge_cells(tbl, key, col, state) \
                 SELECT u.t, u.k::jsonb, u.c, u.s::jsonb FROM unnest($1::integer[], $2::text[], $3::integer[], $4::text[]) AS u(t, k, c, s) \
                 ON CONFLICT (tbl, key, col) DO UPDATE SET state = excluded.state",
            )?;
            self.tx
                .execute(&s, &[&cell_ids, &cell_keys, &cell_cols, &cell_states])
                .map_err(sql(format!(
                    "writing {} counter and review cells the back office wrote",
                    cell_ids.len()
                )))?;
        }
        if !single_ids.is_empty() {
            let s = self.stmt(
                "DELETE FROM outpost.conflicts c USING unnest($1::integer[], $2::text[], $3::integer[]) AS u(t, k, col) \
                 WHERE c.tbl = u.t AND c.key = u.k::jsonb AND c.col = u.col",
            )?;
            self.tx
                .execute(&s, &[&single_ids, &single_keys, &single_cols])
                .map_err(sql("clearing the conflicts the back office resolved"))?;
        }
        for (ti, key, c, cell) in conflicts {
            self.put_review(&tables[ti], &key, c, &cell)?;
        }
        Ok(())
    }
}
