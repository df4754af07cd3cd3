//! Rows held aside with the row they reference (the engine's `evict`, `held_aside_child` and
//! `Claim::Orphan`, `sqlite-ext/src/apply/unique.rs` and `restore.rs`): a row a UNIQUE collision
//! holds aside leaves its table, so the rows of tracked tables referencing it would reference
//! nothing, which a store enforcing foreign keys refuses at commit (the engine's SQLite tenant
//! and PostgreSQL both do). They are held aside with it, as missing their parent:
//! - evicting a row evicts the rows referencing it first (their entries with the engine's
//!   parent-missing reason), down the tree, a cycle ending at a row already on its way out;
//! - a change whose row references a parent held aside is held aside itself, its merge state
//!   merged, rather than quarantined plainly: a store that had the child first and one that had
//!   the parent first end the same;
//! - a held row claiming its values back while a parent it references is missing stays held
//!   (`Claim::Orphan`).
//!
//! They come back after it, parent tables first ([`Merger::settle`]), and their entries go at the
//! quarantine retry that follows (`retry.rs`).

use crate::merge_row::Merger;
use crate::store::Store;
use crate::{reasons, ApplyError, RowState};
use outpost_protocol::Value;

type Result<T, S> = std::result::Result<T, ApplyError<<S as Store>::Error>>;

impl<S: Store> Merger<'_, S> {
    /// The rows of tracked tables referencing the row of `ti` with `key`: (table, key).
    pub(crate) fn children(
        &mut self,
        ti: usize,
        key: &[Value],
    ) -> Result<Vec<(usize, Vec<Value>)>, S> {
        let links: Vec<crate::tables::Link> = self
            .tables
            .links
            .iter()
            .filter(|l| l.parent == ti)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for l in links {
            let c = self.tables.list[l.child].clone();
            for child in self
                .store
                .referencing(&c, &l.child_cols, key)
                .map_err(ApplyError::Store)?
            {
                out.push((l.child, child));
            }
        }
        Ok(out)
    }

    /// The parents a row of `ti` with `key` and `values` (all its value columns) references
    /// that their tables lack: (parent table, key). A reference with a NULL part references
    /// nothing.
    fn missing_parents(
        &mut self,
        ti: usize,
        key: &[Value],
        values: &[Value],
    ) -> Result<Vec<(usize, Vec<Value>)>, S> {
        let links: Vec<crate::tables::Link> = self
            .tables
            .links
            .iter()
            .filter(|l| l.child == ti)
            .cloned()
            .collect();
        let t = self.tables.list[ti].clone();
        let mut out = Vec::new();
        for l in links {
            let fk: Option<Vec<Value>> = l
                .child_cols
                .iter()
                .map(|col| {
                    let v = match t.key.iter().position(|k| k == col) {
                        Some(p) => key.get(p).cloned(),
                        None => t.column_index(col).and_then(|c| values.get(c).cloned()),
                    };
                    v.filter(|v| *v != Value::Null)
                })
                .collect();
            let Some(fk) = fk else { continue };
            let p = self.tables.list[l.parent].clone();
            if !self
                .store
                .row_exists(&p, &p.key, &fk)
                .map_err(ApplyError::Store)?
            {
                out.push((l.parent, fk));
            }
        }
        Ok(out)
    }

    /// Whether a row of `ti` with `key` and `values` references a row its parent table lacks.
    pub(crate) fn parent_missing(
        &mut self,
        ti: usize,
        key: &[Value],
        values: &[Value],
    ) -> Result<bool, S> {
        Ok(!self.missing_parents(ti, key, values)?.is_empty())
    }

    /// Whether a row of `ti` with `key` and `values` references a parent held aside here.
    fn parent_held_aside(&mut self, ti: usize, key: &[Value], values: &[Value]) -> Result<bool, S> {
        for (pi, fk) in self.missing_parents(ti, key, values)? {
            let p = self.tables.list[pi].clone();
            if self
                .store
                .tombstone(&p, &fk)
                .map_err(ApplyError::Store)?
                .is_some_and(|tomb| tomb.held)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A change whose row (of `ti`, with `key`, its state merged `merged`, what it writes
    /// `writes`) references a parent held aside: the row is held aside with its merge state.
    /// Whether it was (else the parent is simply missing: a plain quarantine, retried later).
    pub(crate) fn held_aside_child(
        &mut self,
        ti: usize,
        key: &[Value],
        merged: &RowState,
        writes: &[(usize, &Value)],
    ) -> Result<bool, S> {
        let values = self.row_values(ti, key, writes)?;
        if !self.parent_held_aside(ti, key, &values)? {
            return Ok(false);
        }
        self.evict(ti, key, merged, values, reasons::PARENT_MISSING)?;
        let t = self.tables.list[ti].clone();
        self.store
            .put_row(&t, key, merged)
            .map_err(ApplyError::Store)?;
        Ok(true)
    }

    /// Evicts the rows referencing the row of `ti` with `key`, which is being evicted (module
    /// doc).
    pub(crate) fn evict_children(&mut self, ti: usize, key: &[Value]) -> Result<(), S> {
        let own = crate::unique::packed(key);
        self.evicting.push((ti, own));
        let r = self.evict_each_child(ti, key);
        self.evicting.pop();
        r
    }

    fn evict_each_child(&mut self, ti: usize, key: &[Value]) -> Result<(), S> {
        for (ci, child) in self.children(ti, key)? {
            let packed = crate::unique::packed(&child);
            if self.evicting.iter().any(|(t, k)| *t == ci && *k == packed) {
                continue;
            }
            let c = self.tables.list[ci].clone();
            let st = self
                .store
                .row(&c, &child)
                .map_err(ApplyError::Store)?
                .unwrap_or_default();
            let values = self
                .store
                .app_values(&c, &child)
                .map_err(ApplyError::Store)?
                .unwrap_or_default();
            self.evict(ci, &child, &st, values, reasons::PARENT_MISSING)?;
        }
        Ok(())
    }
}
