//! The quarantine retry after each apply (the engine's `sqlite-ext/src/apply/retry.rs`): an
//! entry whose cause is gone (a parent that arrived later, a value a held row waited for) is
//! applied in the apply that removes the cause, so the quarantine and the rows are the same on
//! every store after the same batches, not only after a later one.
//!
//! Every entry is merged again as the change it is ([`Merger::merge_row`]), oldest first; it
//! goes once its change applies, and stays, with the reason it was kept for, while it does
//! not. An entry of a row held aside "applies" as a no-op while the row stays held: it stays
//! for a person. Rows held aside claim their values first and again after each pass
//! ([`Merger::settle`]: what the entries applied may free values), four rounds at most, as the
//! engine bounds them. A store with no entries only settles.
//!
//! As the engine runs it after the authority's transfers are queued, a row an entry brings in
//! is not transferred by this apply (`apply.rs`).

use crate::merge_row::{Merger, Outcome};
use crate::store::Store;
use crate::ApplyError;
use outpost_protocol::Value;

type Result<T, S> = std::result::Result<T, ApplyError<<S as Store>::Error>>;

/// Rounds of settle and retry at most (the engine's bound).
const ROUNDS: usize = 4;

impl<S: Store> Merger<'_, S> {
    /// Settles rows held aside and, when the store holds quarantine entries, retries them (the
    /// module doc). Entries a retry writes again are not counted as quarantined by this apply.
    pub(crate) fn settle_and_retry(&mut self) -> Result<(), S> {
        if !self.store.any_quarantined().map_err(ApplyError::Store)? {
            self.settle()?;
            return Ok(());
        }
        let before = self.stats.quarantined;
        for round in 0..ROUNDS {
            let placed = self.settle()?;
            if round > 0 && placed == 0 {
                break;
            }
            self.retry_entries()?;
        }
        self.stats.quarantined = before;
        Ok(())
    }

    /// One pass over the entries stored when it starts.
    fn retry_entries(&mut self) -> Result<(), S> {
        let entries = self.store.quarantined().map_err(ApplyError::Store)?;
        for e in entries {
            let applied_before = self.stats.applied;
            let target = self.target(&e.table);
            let (id, origin, table, row) = (e.id, e.origin, e.table.clone(), e.row.clone());
            self.retrying = Some(e);
            let merged = self.merge_row(target.as_ref(), origin, &table, &row);
            self.retrying = None;
            let kept =
                self.stats.applied == applied_before && self.is_held(&table.name, &row.key)?;
            if merged? == Outcome::Applied && !kept {
                self.store.unquarantine(id).map_err(ApplyError::Store)?;
            }
        }
        self.store.flush().map_err(ApplyError::Store)
    }

    /// Whether the row of the table named `table` with `key` is held aside now (alive, its
    /// values in a held tombstone, no app row).
    pub(crate) fn is_held(&mut self, table: &str, key: &[Value]) -> Result<bool, S> {
        let Some(ti) = self.tables.find(table) else {
            return Ok(false);
        };
        let t = self.tables.list[ti].clone();
        if key.len() != t.key.len() {
            return Ok(false);
        }
        let held = self
            .store
            .tombstone(&t, key)
            .map_err(ApplyError::Store)?
            .is_some_and(|tomb| tomb.held);
        if !held {
            return Ok(false);
        }
        let alive = self
            .store
            .row(&t, key)
            .map_err(ApplyError::Store)?
            .is_some_and(|st| st.exist % 2 == 1);
        Ok(alive
            && self
                .store
                .app_values(&t, key)
                .map_err(ApplyError::Store)?
                .is_none())
    }
}
