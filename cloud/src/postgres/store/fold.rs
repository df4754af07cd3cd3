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
/// by value column.
struct Row {
    table: usize,
    key: Vec<Value>,
    state: RowState,
    counters: HashMap<usize, CounterCell>,
    reviews: HashMap<usize, (ReviewCell, bool)>,
}

impl PgStore<'_, '_> {
    /// Folds the captured writes not folded yet into the merge state. Returns how many.
    pub(crate) fn fold_captured(&mut self) -> Result<u64, StoreError> {
        let s = self.stmt(
            "SELECT o.stream, o.seq, o.hlc, o.tbl, o.key::text, o.exist, o.op, o.cells::text \
             FROM outpost.streams s JOIN outpost.outbox o ON o.stream = s.stream AND o.seq > s.folded \
             ORDER BY o.hlc",
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
        let mut rows: HashMap<(i32, String), Row> = HashMap::new();
        let mut order: Vec<(i32, String)> = Vec::new();
        let mut folded: HashMap<String, i64> = HashMap::new();
        for e in &captured {
            let top = folded.entry(e.stream.clone()).or_insert(e.seq);
            *top = (*top).max(e.seq);
            let ti = tables
                .iter()
                .position(|t| t.id == i64::from(e.tbl))
                .ok_or_else(|| StoreError::Damaged {
                    what: format!(
                        "outpost.outbox names table id {}, which is not captured",
                        e.tbl
                    ),
                })?;
            let id = (e.tbl, e.key.clone());
            if !rows.contains_key(&id) {
                let t = &tables[ti];
                let def = &self.table(t)?.def;
                let key = outbox::key_values(def, &e.key).map_err(|err| StoreError::Damaged {
                    what: format!("a captured key of table {:?}: {err}", t.name),
                })?;
                let state = self.row(t, &key)?.unwrap_or(RowState {
                    exist: e.exist,
                    cells: Vec::new(),
                });
                rows.insert(
                    id.clone(),
                    Row {
                        table: ti,
                        key,
                        state,
                        counters: HashMap::new(),
                        reviews: HashMap::new(),
                    },
                );
                order.push(id.clone());
            }
            let row = rows.get_mut(&id).expect("inserted above");
            self.fold_one(&tables[ti], row, e)?;
        }
        self.write_folded(&tables, &order, &mut rows)?;
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
        for (c, col) in t.columns.iter().enumerate() {
            if col.strategy != Strategy::Review {
                continue;
            }
            if !row.reviews.contains_key(&c) {
                let cell = self.review(t, &row.key, c)?;
                row.reviews.insert(c, (cell, false));
            }
            let (cell, dirty) = row.reviews.get_mut(&c).expect("inserted above");
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
        let def = self.table(t)?.def.clone();
        let damaged = |what: String| StoreError::Damaged {
            what: format!("a captured write of table {:?}: {what}", t.name),
        };
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|err| damaged(err.to_string()))?;
        let cells = json
            .as_object()
            .ok_or_else(|| damaged(format!("cells {text}")))?;
        let value_columns: Vec<u16> = def.value_columns().collect();
        for (n, v) in cells {
            let c: usize = n.parse().map_err(|_| damaged(format!("column {n:?}")))?;
            let (Some(col), Some(&at)) = (t.columns.get(c), value_columns.get(c)) else {
                return Err(damaged(format!("column {c}")));
            };
            *row.state.cell_mut(c) = Some(version);
            match col.strategy {
                Strategy::Lww | Strategy::RowLww => {}
                Strategy::Counter => {
                    let total = v.as_i64().ok_or_else(|| damaged(format!("counter {v}")))?;
                    if !row.counters.contains_key(&c) {
                        let cell = self.counter(t, &row.key, c)?;
                        row.counters.insert(c, cell);
                    }
                    let cell = row.counters.get_mut(&c).expect("inserted above");
                    cell.merge(Contribution {
                        site: self.site,
                        epoch,
                        hlc: version.stamp.hlc,
                        total,
                    });
                }
                Strategy::Review => {
                    let value = outbox::value(&def, at as usize, v)
                        .map_err(|err| damaged(err.to_string()))?;
                    let (cell, dirty) = row.reviews.get_mut(&c).expect("read above");
                    let context = cell.context();
                    cell.merge(ReviewWrite {
                        version,
                        value,
                        context,
                    });
                    *dirty = true;
                }
            }
        }
        Ok(())
    }

    /// The folded rows' versions (capture's causal length left as it is), counters and
    /// reviews, written.
    fn write_folded(
        &mut self,
        tables: &[Table],
        order: &[(i32, String)],
        rows: &mut HashMap<(i32, String), Row>,
    ) -> Result<(), StoreError> {
        let s = self.stmt(
            "INSERT INTO outpost.capture_rows AS r(tbl, key, exist, versions) \
             SELECT u.t, u.k::jsonb, u.e, u.v FROM unnest($1::integer[], $2::text[], $3::bigint[], $4::bytea[]) AS u(t, k, e, v) \
             ON CONFLICT (tbl, key) DO UPDATE SET versions = excluded.versions",
        )?;
        let (mut ids, mut keys, mut exists, mut versions) = (vec![], vec![], vec![], vec![]);
        for id in order {
            let row = &rows[id];
            ids.push(id.0);
            keys.push(id.1.clone());
            exists.push(row.state.exist as i64);
            versions.push(row.state.encode());
        }
        self.tx
            .execute(&s, &[&ids, &keys, &exists, &versions])
            .map_err(sql(format!(
                "writing the versions of {} rows the back office wrote",
                ids.len()
            )))?;
        for id in order {
            let row = rows.get_mut(id).expect("listed in order");
            let t = &tables[row.table];
            for (&c, cell) in &row.counters {
                self.put_counter(t, &row.key, c, cell)?;
            }
            for (&c, (cell, dirty)) in &row.reviews {
                if *dirty {
                    self.put_review(t, &row.key, c, cell)?;
                }
            }
        }
        Ok(())
    }
}
