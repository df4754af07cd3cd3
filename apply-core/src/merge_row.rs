//! One row change merged into a store: the engine's `merge_packed` (`sqlite-ext/src/apply.rs`)
//! case by case, over [`Store`] calls.
//!
//! Per row: existence merges by max; a cell at the row's current epoch merges by its column's
//! strategy (`protocol::merge`); a cell from an older epoch, or of a row that ends deleted, is
//! dead. A row that becomes or stays alive is written parents checked; one that dies is deleted
//! unless live rows still reference it. What cannot be applied is quarantined with the engine's
//! reason, never blocking the rest.

use crate::reasons;
use crate::store::{Quarantined, Store, Written};
use crate::tables::Tables;
use crate::{ApplyError, Stats};
use outpost_protocol::batch::{CellPayload, RowChange, TableSchema};
use outpost_protocol::merge::{lww_wins, CellVersion, Contribution, ReviewCell, ReviewWrite};
use outpost_protocol::{SiteId, Stamp, Strategy, Value};
use std::borrow::Cow;

/// What became of one row change (the engine's `Outcome`): the quarantine retry lets an entry
/// go only when its change applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Applied,
    /// Set aside, whole or in part (cells of columns this store lacks).
    Quarantined,
}

/// A batch table resolved to a table of the store.
pub(crate) struct Target {
    /// Index into `Tables::list`.
    ti: usize,
    /// Per value column of the batch table, its index here (`None`: this store lacks it).
    local: Vec<Option<usize>>,
    /// The batch table's value-column names (for the unknown-columns reason).
    names: Vec<String>,
    /// Why its rows are not applied: the batch declares another scope rule than here.
    scope_differs: Option<String>,
}

/// The apply's state across the rows of one batch.
pub(crate) struct Merger<'s, S: Store> {
    pub store: &'s mut S,
    pub tables: Tables,
    pub stats: Stats,
    /// The largest cell clock merged (observed by the store at the end).
    pub max_hlc: u64,
    /// Tables' UNIQUE indexes, by index into `tables.list`, asked once per apply.
    pub uniques: std::collections::HashMap<usize, std::rc::Rc<Vec<crate::store::Unique>>>,
    /// Whether the store is the scope authority ([`Store::authority`]): it notes `touched`.
    pub authority: bool,
    /// Rows of scoped tables the batch changed, on the authority (`transfer.rs`).
    pub touched: Vec<crate::transfer::Touched>,
    /// Per table (by index into `tables.list`), whether it may hold rows held aside (listed by
    /// [`Store::held_tables`] when the apply starts, or one evicted since): only then can a
    /// live row lack its app row.
    pub held_aside: Vec<bool>,
    /// Rows whose eviction is under way (table, packed key): a cycle of references ends there
    /// (`cascade.rs`).
    pub evicting: Vec<(usize, Vec<u8>)>,
    /// The entry the quarantine retry is merging again (`retry.rs`): quarantining its own change
    /// with the reason it has is left unwritten (the store would write the same entry back).
    pub retrying: Option<crate::store::Entry>,
}

type Result<T, S> = std::result::Result<T, ApplyError<<S as Store>::Error>>;

impl<S: Store> Merger<'_, S> {
    /// Where rows of the batch table `schema` go; `None` when it is not tracked here.
    pub(crate) fn target(&self, schema: &TableSchema) -> Option<Target> {
        let ti = self.tables.find(&schema.name)?;
        let t = &self.tables.list[ti];
        let there = schema.scope_rule();
        let shown = |r: &Option<outpost_protocol::scope::ScopeRule>| {
            r.as_ref().map_or("no scope".to_string(), |r| r.to_string())
        };
        let scope_differs = (t.scope != there)
            .then(|| reasons::scope_differs(&schema.name, &shown(&there), &shown(&t.scope)));
        let names: Vec<String> = schema
            .value_columns()
            .map(|i| schema.columns[i as usize].name.clone())
            .collect();
        let local = names.iter().map(|n| t.column_index(n)).collect();
        Some(Target {
            ti,
            local,
            names,
            scope_differs,
        })
    }

    pub(crate) fn quarantine(
        &mut self,
        origin: SiteId,
        table: &TableSchema,
        row: &RowChange,
        reason: &str,
    ) -> Result<Outcome, S> {
        let unchanged = self.retrying.as_ref().is_some_and(|e| {
            e.origin == origin && e.reason == reason && e.table == *table && e.row == *row
        });
        if unchanged {
            self.stats.quarantined += 1;
            return Ok(Outcome::Quarantined);
        }
        self.store
            .quarantine(Quarantined {
                origin,
                table,
                row,
                reason,
            })
            .map_err(ApplyError::Store)?;
        self.stats.quarantined += 1;
        Ok(Outcome::Quarantined)
    }

    /// Tells the store which rows of `target` the `rows` of a group are, and which parents their
    /// written foreign-key columns reference (hints: see [`Store::prefetch_rows`]).
    pub(crate) fn prefetch(&mut self, target: &Target, rows: &[&RowChange]) -> Result<(), S> {
        let ti = target.ti;
        let t = &self.tables.list[ti];
        let keys: Vec<&[Value]> = rows
            .iter()
            .filter(|r| r.key.len() == t.key.len())
            .map(|r| r.key.as_slice())
            .collect();
        self.store
            .prefetch_rows(t, &keys)
            .map_err(ApplyError::Store)?;
        for l in self.tables.links.iter().filter(|l| l.child == ti) {
            let mut wanted: Vec<Vec<Value>> = Vec::new();
            for r in rows.iter().filter(|r| r.key.len() == t.key.len()) {
                let fk: Option<Vec<Value>> = l
                    .child_cols
                    .iter()
                    .map(|col| {
                        let v = match t.key.iter().position(|k| k == col) {
                            Some(p) => Some(r.key[p].clone()),
                            None => r.cells.iter().find_map(|c| {
                                let local = target.local.get(c.column as usize).copied().flatten();
                                match (&c.payload, local) {
                                    (CellPayload::Value(v), Some(i))
                                        if t.columns[i].name == *col =>
                                    {
                                        Some(v.clone())
                                    }
                                    _ => None,
                                }
                            }),
                        };
                        v.filter(|v| *v != Value::Null)
                    })
                    .collect();
                // Repeats are the store's to fold (it keys them; comparing here is quadratic).
                wanted.extend(fk);
            }
            if !wanted.is_empty() {
                let p = &self.tables.list[l.parent];
                self.store
                    .prefetch_exists(p, &p.key, &wanted)
                    .map_err(ApplyError::Store)?;
            }
        }
        Ok(())
    }

    /// Merges one row change of `origin` (its batch table `schema`, resolved as `target`).
    pub(crate) fn merge_row(
        &mut self,
        target: Option<&Target>,
        origin: SiteId,
        schema: &TableSchema,
        row: &RowChange,
    ) -> Result<Outcome, S> {
        let Some(target) = target else {
            return self.quarantine(origin, schema, row, &reasons::unknown_table(&schema.name));
        };
        if let Some(reason) = &target.scope_differs {
            return self.quarantine(origin, schema, row, reason);
        }
        let ti = target.ti;
        if row.key.len() != self.tables.list[ti].key.len() {
            return self.quarantine(origin, schema, row, reasons::KEY_SHAPE);
        }
        // Cells of columns this store lacks are set aside (schema skew); the rest merge below.
        let mut unknown = Vec::new();
        for cell in &row.cells {
            let local = target.local.get(cell.column as usize).ok_or_else(|| {
                ApplyError::BadSchema(format!(
                    "a cell of {} names column {} it does not have",
                    schema.name, cell.column
                ))
            })?;
            if local.is_none() {
                unknown.push(cell.clone());
            }
        }
        let n_known = row.cells.len() - unknown.len();
        let mut outcome = Outcome::Applied;
        if !unknown.is_empty() {
            outcome = Outcome::Quarantined;
            let cols: Vec<String> = unknown
                .iter()
                .map(|c| target.names[c.column as usize].clone())
                .collect();
            let part = RowChange {
                key: row.key.clone(),
                existence: row.existence,
                cells: unknown,
            };
            let reason = reasons::unknown_columns(&cols, &schema.name);
            self.quarantine(origin, schema, &part, &reason)?;
        }
        let t = self.tables.list[ti].clone();
        let key = &row.key;
        let stored = self.store.row(&t, key).map_err(ApplyError::Store)?;
        let fresh = stored.is_none();
        let mut st = stored.unwrap_or_default();
        let e_in = row.existence;
        let exist = st.exist.max(e_in);
        let was_alive = st.exist % 2 == 1;
        let alive = exist % 2 == 1;
        let mut writes: Vec<(usize, Cow<Value>)> = Vec::with_capacity(n_known);
        let mut changed = e_in > st.exist;
        let mut new_conflicts = 0;
        let known = row
            .cells
            .iter()
            .filter_map(|cell| target.local[cell.column as usize].map(|c| (c, cell)));
        for (c, cell) in known {
            self.max_hlc = self.max_hlc.max(cell.hlc.as_u64());
            // A cell of an older epoch, or of a row that ends deleted, is dead.
            if e_in != exist || !alive {
                self.stats.unchanged += 1;
                continue;
            }
            let incoming = CellVersion {
                epoch: e_in,
                stamp: Stamp {
                    hlc: cell.hlc,
                    site: origin,
                },
            };
            let strategy = t.columns[c].strategy;
            let won = match (strategy, &cell.payload) {
                (Strategy::Lww | Strategy::RowLww, CellPayload::Value(v)) => {
                    lww_wins(st.cell(c), &incoming).then(|| {
                        *st.cell_mut(c) = Some(incoming);
                        Cow::Borrowed(v)
                    })
                }
                (Strategy::Counter, CellPayload::Counter(total)) => {
                    let mut cc = self.store.counter(&t, key, c).map_err(ApplyError::Store)?;
                    if cc.merge(Contribution {
                        site: origin,
                        epoch: e_in,
                        hlc: cell.hlc,
                        total: *total,
                    }) {
                        self.store
                            .put_counter(&t, key, c, &cc)
                            .map_err(ApplyError::Store)?;
                        if st.cell(c).is_none() {
                            *st.cell_mut(c) = Some(incoming);
                        }
                        Some(Cow::Owned(Value::Integer(cc.value(exist))))
                    } else {
                        None
                    }
                }
                (Strategy::Review, CellPayload::Review { value, context }) => {
                    let mut rc = self.store.review(&t, key, c).map_err(ApplyError::Store)?;
                    let w = ReviewWrite {
                        version: incoming,
                        value: value.clone(),
                        context: context.clone(),
                    };
                    if rc.merge(w) {
                        self.store
                            .put_review(&t, key, c, &rc)
                            .map_err(ApplyError::Store)?;
                        if rc.siblings().len() > 1 {
                            new_conflicts += 1;
                        }
                        // The row state keeps the store's own write (a back office's, folded
                        // in by the store) while it is still a sibling, as the engine does.
                        let me = self.store.site();
                        let own_alive = st.cell(c).is_some_and(|v| {
                            v.stamp.site == me
                                && rc.siblings().iter().any(|s| s.version.stamp == v.stamp)
                        });
                        if !own_alive {
                            *st.cell_mut(c) = Some(incoming);
                        }
                        rc.shown().cloned().map(Cow::Owned)
                    } else {
                        None
                    }
                }
                _ => {
                    let reason =
                        reasons::strategy_differs(&t.columns[c].name, &t.name, strategy.name());
                    return self.quarantine(origin, schema, row, &reason);
                }
            };
            match won {
                Some(v) => {
                    writes.push((c, v));
                    changed = true;
                    self.stats.applied += 1;
                }
                None => self.stats.unchanged += 1,
            }
        }
        if e_in > st.exist {
            self.stats.applied += 1;
        } else if n_known == 0 {
            self.stats.unchanged += 1;
        }
        if !changed {
            return Ok(outcome);
        }
        let uniques = self.uniques(ti)?;
        let mut whole_again = false;
        if alive && was_alive && self.held_aside[ti] {
            // A row held aside (alive, its values in its tombstone, no app row: unique.rs) is
            // written whole, the incoming values over its own; written column by column it
            // would come back with its other columns empty.
            if let Some(tomb) = self.store.tombstone(&t, key).map_err(ApplyError::Store)? {
                if self
                    .store
                    .app_values(&t, key)
                    .map_err(ApplyError::Store)?
                    .is_none()
                {
                    writes = (0..t.columns.len())
                        .map(|c| match writes.iter().find(|(w, _)| *w == c) {
                            Some((_, v)) => (c, v.clone()),
                            None => (
                                c,
                                Cow::Owned(tomb.values.get(c).cloned().unwrap_or(Value::Null)),
                            ),
                        })
                        .collect();
                    whole_again = true;
                }
            }
        }
        let writes: Vec<(usize, &Value)> = writes.iter().map(|(c, v)| (*c, v.as_ref())).collect();
        if alive {
            if !self.parents_ok(ti, key, &writes)? {
                // A parent held aside holds its children aside with it (cascade.rs).
                let mut merged = st.clone();
                merged.exist = exist;
                if self.held_aside_child(ti, key, &merged, &writes)? {
                    return Ok(Outcome::Quarantined);
                }
                return self.quarantine(origin, schema, row, reasons::PARENT_MISSING);
            }
            let values = if uniques.is_empty() {
                None
            } else {
                Some(self.row_values(ti, key, &writes)?)
            };
            match values {
                // The write would fail a UNIQUE index: the row claims its values or is held
                // aside (checked first: PostgreSQL aborts a transaction on the failure).
                Some(values) if self.collides(ti, key, &values)? => {
                    let mut merged = st.clone();
                    merged.exist = exist;
                    let rank = self.rank(ti, &merged, key)?;
                    let claim = self.claim(ti, key, fresh, &rank, &values, &writes)?;
                    if let Some(why) = claim.reason(&uniques) {
                        self.evict(ti, key, &merged, values, &why)?;
                        self.store
                            .put_row(&t, key, &merged)
                            .map_err(ApplyError::Store)?;
                        return Ok(Outcome::Quarantined);
                    }
                    // Refused for itself (a CHECK), its holders back: set aside as the engine
                    // sets it aside, whose SQLite checks a CHECK before any UNIQUE index.
                    if let crate::unique::Claim::Refused(why) = claim {
                        return self.quarantine(origin, schema, row, &why);
                    }
                }
                _ => match self
                    .store
                    .write_row(&t, key, fresh, &writes)
                    .map_err(ApplyError::Store)?
                {
                    Written::Done => {}
                    Written::Refused(why) => return self.quarantine(origin, schema, row, &why),
                },
            }
            if whole_again {
                self.store
                    .drop_tombstone(&t, key)
                    .map_err(ApplyError::Store)?;
                self.released(ti, key)?;
            } else if !was_alive && st.exist > 0 {
                // Alive again: the values of its last life are not needed any more.
                self.store
                    .drop_tombstone(&t, key)
                    .map_err(ApplyError::Store)?;
            }
        } else if was_alive {
            if self.has_children(ti, key)? {
                // The delete met live children: the row stays, as the store's own write that
                // every replica receives (restore.rs), or set aside when the store cannot write.
                st.exist = exist;
                if self.restore(ti, key, &st, reasons::KEPT_FOR_CHILDREN)? {
                    return Ok(Outcome::Applied);
                }
                return self.quarantine(origin, schema, row, reasons::DELETE_HAS_CHILDREN);
            }
            self.keep_tombstone(ti, key)?;
            self.store.delete_row(&t, key).map_err(ApplyError::Store)?;
        }
        if exist > st.exist && st.exist > 0 {
            // Siblings of the epochs before the new causal length died with it (a row never
            // seen has none to drop).
            self.prune_review(ti, key, exist)?;
        }
        st.exist = exist;
        self.store
            .put_row(&t, key, &st)
            .map_err(ApplyError::Store)?;
        self.stats.conflicts += new_conflicts;
        if self.authority && t.scope.is_some() {
            // The scope cell this change wrote, when it wrote one: the authority then knows
            // the row's scope without reading it back, and that the row moved.
            let scope = match &t.scope {
                Some(outpost_protocol::scope::ScopeRule::Column(c)) => t
                    .column_index(c)
                    .and_then(|c| writes.iter().find(|(w, _)| *w == c))
                    .map(|(_, v)| *v),
                _ => None,
            };
            self.touch(ti, key, alive, scope);
        }
        Ok(outcome)
    }

    /// Whether every parent a row about to be written references exists. Only foreign-key
    /// columns written now are checked (a column not written now was checked when it was), and
    /// a reference with a NULL part references nothing.
    fn parents_ok(
        &mut self,
        ti: usize,
        key: &[Value],
        writes: &[(usize, &Value)],
    ) -> Result<bool, S> {
        let links: Vec<crate::tables::Link> = self
            .tables
            .links
            .iter()
            .filter(|l| l.child == ti)
            .cloned()
            .collect();
        for l in links {
            let t = &self.tables.list[ti];
            let fk: Option<Vec<Value>> = l
                .child_cols
                .iter()
                .map(|col| {
                    let v = match t.key.iter().position(|k| k == col) {
                        Some(p) => Some(key[p].clone()),
                        None => t.column_index(col).and_then(|c| {
                            writes
                                .iter()
                                .find(|(w, _)| *w == c)
                                .map(|(_, v)| (*v).clone())
                        }),
                    };
                    v.filter(|v| *v != Value::Null)
                })
                .collect();
            let Some(fk) = fk else {
                continue;
            };
            let p = self.tables.list[l.parent].clone();
            if self
                .store
                .row_exists(&p, &p.key, &fk)
                .map_err(ApplyError::Store)?
            {
                continue;
            }
            // A parent this store deleted comes back from its tombstone (restore.rs).
            if !self.parent_back(l.parent, &fk)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether live rows of a tracked table reference the row of `ti` with `key`.
    fn has_children(&mut self, ti: usize, key: &[Value]) -> Result<bool, S> {
        for l in self.tables.links.iter().filter(|l| l.parent == ti) {
            let c = &self.tables.list[l.child];
            if self
                .store
                .row_exists(c, &l.child_cols, key)
                .map_err(ApplyError::Store)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Drops the review siblings written before causal length `exist`, so a conflict is listed
    /// only for a live row's current epoch, whichever order a delete and the writes arrived in
    /// (`sqlite-ext/src/cells.rs`, `prune_review`).
    fn prune_review(&mut self, ti: usize, key: &[Value], exist: u64) -> Result<(), S> {
        let t = self.tables.list[ti].clone();
        for (c, col) in t.columns.iter().enumerate() {
            if col.strategy != Strategy::Review {
                continue;
            }
            let cell = self.store.review(&t, key, c).map_err(ApplyError::Store)?;
            if cell.siblings().iter().all(|s| s.version.epoch >= exist) {
                continue;
            }
            let mut kept = ReviewCell::new();
            for s in cell.siblings().iter().filter(|s| s.version.epoch >= exist) {
                kept.merge(s.clone());
            }
            self.store
                .put_review(&t, key, c, &kept)
                .map_err(ApplyError::Store)?;
        }
        Ok(())
    }
}
