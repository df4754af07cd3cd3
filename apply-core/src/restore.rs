//! Parents come back, as the engine brings them back (`sqlite-ext/src/apply/restore.rs`): the
//! rule that keeps clinical data from being lost to a concurrent delete.
//!
//! When a delete arrives for a row that live rows of a tracked child table still reference, or
//! a child arrives whose parent this store deleted, the parent is re-created (from its tombstone
//! when its app row is gone) as the store's *own* write at the next causal length
//! ([`Store::restore`]), so it travels back to every replica with fresh clocks. Two replicas
//! that restore the same parent concurrently write equal values, and LWW converges them.
//!
//! Tombstones (a deleted row's last values) are kept for the rows of every table, as the
//! engine keeps them: a parent comes back from its tombstone, a row held aside keeps its values
//! there, and the authority reads a deleted row's scope from it (`transfer.rs`: a late delete
//! of a row that moved is transferred on).

use crate::merge_row::Merger;
use crate::store::{Store, Tombstone};
use crate::{reasons, ApplyError, RowState};
use outpost_protocol::Value;

type Result<T, S> = std::result::Result<T, ApplyError<<S as Store>::Error>>;

impl<S: Store> Merger<'_, S> {
    /// Keeps the values of the row of `ti` with `key` about to be deleted (a row held aside,
    /// with no app row, keeps the values it has, and is held no longer).
    pub(crate) fn keep_tombstone(&mut self, ti: usize, key: &[Value]) -> Result<(), S> {
        let t = self.tables.list[ti].clone();
        match self.store.app_values(&t, key).map_err(ApplyError::Store)? {
            Some(values) => {
                let tomb = Tombstone {
                    values,
                    held: false,
                };
                self.store
                    .put_tombstone(&t, key, &tomb)
                    .map_err(ApplyError::Store)
            }
            None => {
                let Some(mut tomb) = self.store.tombstone(&t, key).map_err(ApplyError::Store)?
                else {
                    return Ok(());
                };
                if !tomb.held {
                    return Ok(());
                }
                tomb.held = false;
                self.store
                    .put_tombstone(&t, key, &tomb)
                    .map_err(ApplyError::Store)?;
                self.released(ti, key)
            }
        }
    }

    /// Re-creates the row of `ti` with `key`, whose merge state is `st` (the causal length
    /// merged so far), as the store's own write: its app row's values, else its tombstone's.
    /// Whether it is in its table: not when the store cannot write (the caller sets the change
    /// aside), nor when it came back from its tombstone held aside (unique.rs, `decide_way`).
    pub(crate) fn restore(
        &mut self,
        ti: usize,
        key: &[Value],
        st: &RowState,
        why: &str,
    ) -> Result<bool, S> {
        let t = self.tables.list[ti].clone();
        let app = self.store.app_values(&t, key).map_err(ApplyError::Store)?;
        let from_tombstone = app.is_none();
        let mut values = match app {
            Some(v) => v,
            None => self
                .store
                .tombstone(&t, key)
                .map_err(ApplyError::Store)?
                .map(|tomb| tomb.values)
                .unwrap_or_default(),
        };
        // A tombstone written before a column was added is shorter than the row.
        values.resize(t.columns.len(), Value::Null);
        // Back from its tombstone, its UNIQUE values may be another row's now: those rows make
        // way for the store's write, and the order of rows decides after it (unique.rs).
        let way = if from_tombstone {
            self.make_way(ti, key, &values)?
        } else {
            Default::default()
        };
        let Some(after) = self
            .store
            .restore(&t, key, &values, st, why)
            .map_err(ApplyError::Store)?
        else {
            self.undo_way(ti, way)?;
            return Ok(false);
        };
        self.store
            .drop_tombstone(&t, key)
            .map_err(ApplyError::Store)?;
        // The restored row's clocks are the store's own: the apply observes them as the engine's
        // clock has issued them.
        self.max_hlc = self.max_hlc.max(
            after
                .cells
                .iter()
                .flatten()
                .map(|v| v.stamp.hlc.as_u64())
                .max()
                .unwrap_or(0),
        );
        // Held aside when a row keeping its value ranks earlier: alive, out of its table, its
        // tombstone rewritten (the engine's resurrect, then its claim).
        self.decide_way(ti, key, &after, values, way)
    }

    /// Brings back the parent of table `pi` with key `fk` that a child about to be written
    /// references, when this store deleted it and keeps its values. Whether it is back.
    pub(crate) fn parent_back(&mut self, pi: usize, fk: &[Value]) -> Result<bool, S> {
        let p = self.tables.list[pi].clone();
        let Some(pst) = self.store.row(&p, fk).map_err(ApplyError::Store)? else {
            return Ok(false);
        };
        if pst.exist % 2 == 1 {
            return Ok(false);
        }
        let kept = self
            .store
            .tombstone(&p, fk)
            .map_err(ApplyError::Store)?
            .is_some_and(|t| !t.held);
        if !kept {
            return Ok(false);
        }
        self.restore(pi, fk, &pst, reasons::RESTORED_FOR_CHILD)
    }
}
