//! One batch into a store: the vector check, rows parents-first, the clock, the vector advance
//! (the engine's `apply_batch`, `sqlite-ext/src/apply.rs`, without what the crate doc leaves out).

use crate::merge_row::Merger;
use crate::store::Store;
use crate::tables::Tables;
use crate::ApplyError;
use outpost_protocol::batch::{Batch, RowChange, TableChanges};
use outpost_protocol::{Hlc, VersionVector};

/// What an apply did, counted as the engine's `outpost_apply` counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Cells that won their merge, and rows whose causal length grew.
    pub applied: u64,
    /// Cells and rows that changed nothing (older, dead, or already held).
    pub unchanged: u64,
    /// Review cells that gained a sibling while holding more than one.
    pub conflicts: u64,
    /// Quarantine entries written.
    pub quarantined: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.applied += o.applied;
        self.unchanged += o.unchanged;
        self.conflicts += o.conflicts;
        self.quarantined += o.quarantined;
    }
}

/// Applies `batch` to `store`, inside the transaction the caller holds (all or nothing is the
/// caller's commit or rollback). A batch whose range is held already changes nothing; one that
/// starts past what is held is refused ([`ApplyError::Gap`]).
///
/// Rows that end alive are applied parents first (tables sorted by their foreign keys), rows
/// that end deleted children first; a store that checks foreign keys should defer them to its
/// commit, as the engine does (`PRAGMA defer_foreign_keys`).
pub fn apply_batch<S: Store>(store: &mut S, batch: &Batch) -> Result<Stats, ApplyError<S::Error>> {
    let h = &batch.header;
    if h.origin == store.site() {
        return Err(ApplyError::OwnOrigin(h.origin));
    }
    let mut rows_in_batch = 0;
    for g in &batch.tables {
        if h.tables.get(g.table as usize).is_none() {
            return Err(ApplyError::BadSchema(format!(
                "body names table #{} but the header lists {}",
                g.table,
                h.tables.len()
            )));
        }
        rows_in_batch += g.rows.len() as u64;
    }
    let stream = h.stream_id();
    let have = store.covered(&stream).map_err(ApplyError::Store)?;
    let mut vector = VersionVector::new();
    vector.set(stream.clone(), have);
    vector
        .advance(stream.clone(), h.range)
        .map_err(ApplyError::Gap)?;
    if h.range.hi <= have {
        return Ok(Stats {
            unchanged: rows_in_batch,
            ..Stats::default()
        });
    }
    let tables = Tables::new(store.tables().map_err(ApplyError::Store)?);
    let mut m = Merger {
        store,
        tables,
        stats: Stats::default(),
        max_hlc: 0,
        uniques: Default::default(),
        authority: false,
        touched: Vec::new(),
        held_aside: Vec::new(),
        evicting: Vec::new(),
        retrying: None,
    };
    let held = m.store.held_tables().map_err(ApplyError::Store)?;
    m.held_aside = m.tables.list.iter().map(|t| held.contains(&t.id)).collect();
    m.authority = m.store.authority();
    let mut groups: Vec<&TableChanges> = batch.tables.iter().collect();
    groups.sort_by_key(|g| m.tables.rank(&h.tables[g.table as usize].name));
    // Alive rows parents first, then deleted ones children first.
    for (alive, ordered) in [
        (true, groups.clone()),
        (false, groups.into_iter().rev().collect()),
    ] {
        for g in ordered {
            let schema = &h.tables[g.table as usize];
            let target = m.target(schema);
            // A transfer's group is credited to the site that wrote its cells.
            let origin = g.credit.unwrap_or(h.origin);
            let rows: Vec<&RowChange> = g
                .rows
                .iter()
                .filter(|r| (r.existence % 2 == 1) == alive)
                .collect();
            if rows.is_empty() {
                continue;
            }
            if let Some(t) = &target {
                m.prefetch(t, &rows)?;
            }
            for row in rows {
                m.merge_row(target.as_ref(), origin, schema, row)?;
            }
            m.store.flush().map_err(ApplyError::Store)?;
        }
    }
    // On the authority, rows left in another scope than this stream's move there.
    m.queue_transfers(&stream.scope)?;
    // Rows this batch deleted or changed may have held values rows held aside now get, and
    // quarantined changes may apply now (retry.rs). After the transfers, as the engine runs
    // them: a row the retry brings in is not transferred by this apply.
    m.settle_and_retry()?;
    let observed = m.max_hlc.max(h.base_hlc.as_u64());
    let stats = m.stats;
    store
        .observe_clock(Hlc::from_u64(observed))
        .map_err(ApplyError::Store)?;
    store
        .advance(&stream, h.range.hi)
        .map_err(ApplyError::Store)?;
    Ok(stats)
}
