//! The merge rules: pure functions over cell states.
//!
//! A cell is `(table, primary key, column)`. Each write to it carries a [`CellVersion`]: the row's
//! existence epoch when it was written and its [`Stamp`] `(hlc, site)`. Versions order by epoch
//! first, so a write made before a row was deleted and re-created never beats one made after.
//!
//! Row existence is a causal-length counter ([`Existence`]): odd = alive, even = deleted; a delete
//! or an insert increments it and the larger count wins. An update never changes it, so an update
//! never revives a deleted row; only a later insert does, and the cells written before that delete
//! stay dead because their epoch is older.
//!
//! Each column merges with one [`Strategy`], carried in every batch header so every replica merges
//! a column the same way:
//! - [`Strategy::Lww`] / [`Strategy::RowLww`]: [`lww_wins`] (row-level LWW stamps every column of
//!   a write with one version, so the whole row follows its newest writer).
//! - [`Strategy::Counter`]: [`CounterCell`], per-site sums of local deltas per epoch.
//! - [`Strategy::Review`]: [`ReviewCell`], a multi-value register whose unsuperseded writes are
//!   siblings for a person to resolve.
//!
//! Every function here is deterministic, commutative, associative and idempotent; `merge/tests.rs`
//! proves it with property tests.

use crate::hlc::{Hlc, Stamp};
use crate::site::SiteId;
use crate::value::Value;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// How one column merges concurrent writes.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Strategy {
    /// Field-level last-writer-wins by `(epoch, hlc, site)`. The default.
    #[default]
    Lww,
    /// The whole row follows its newest writer: every write stamps all columns with one version.
    RowLww,
    /// Each site's contribution is the sum of its local deltas (`NEW - OLD`); the value is the sum
    /// of contributions of the row's current epoch.
    Counter,
    /// A multi-value register: concurrent writes are kept as siblings until a person resolves them.
    Review,
}

impl Strategy {
    /// The name used in `outpost_track` options and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::Lww => "lww",
            Strategy::RowLww => "row_lww",
            Strategy::Counter => "counter",
            Strategy::Review => "review",
        }
    }

    /// Parses a name as written in `outpost_track` options.
    pub fn from_name(name: &str) -> Option<Strategy> {
        match name {
            "lww" => Some(Strategy::Lww),
            "row_lww" => Some(Strategy::RowLww),
            "counter" => Some(Strategy::Counter),
            "review" => Some(Strategy::Review),
            _ => None,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A row's causal length: odd = alive, even = deleted. 0 = never seen.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Existence(pub u64);

impl Existence {
    /// True when the row exists.
    pub const fn is_alive(self) -> bool {
        self.0 % 2 == 1
    }

    /// The merge: the larger causal length wins.
    pub fn merge(self, other: Existence) -> Existence {
        core::cmp::max(self, other)
    }

    /// After a local insert: alive, one past the current length if it was dead (or unseen).
    pub const fn inserted(self) -> Existence {
        if self.is_alive() {
            self
        } else {
            // A dead length is even, so it is below `u64::MAX` and this cannot overflow.
            Existence(self.0 + 1)
        }
    }

    /// After a local delete: dead, one past the current length if it was alive.
    ///
    /// A row already at the largest length (`u64::MAX`, which only a corrupt or hostile peer can
    /// send) stays alive rather than wrapping to "never seen": a wrapped length would lose every
    /// later merge and leave this replica apart from the others.
    pub const fn deleted(self) -> Existence {
        if self.is_alive() {
            Existence(self.0.saturating_add(1))
        } else {
            self
        }
    }
}

/// The version of one write to one cell: ordered by `(epoch, hlc, site)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CellVersion {
    /// The row's causal length when the write was made (always odd: writes happen to live rows).
    pub epoch: u64,
    /// When and where.
    pub stamp: Stamp,
}

impl CellVersion {
    /// True when a cell written at this version shows in a row whose merged existence is `row`:
    /// the row is alive and the write belongs to its current epoch. A write from an older epoch
    /// (made before a delete, possibly arriving after a later re-insert) is dead, so an update
    /// never revives a deleted row and a re-created row never shows its previous life's cells.
    pub const fn is_visible(&self, row: Existence) -> bool {
        row.is_alive() && self.epoch == row.0
    }
}

/// Last-writer-wins: true when `incoming` replaces `current` (strictly newer). Equal versions are the
/// same write seen twice, so a replay changes nothing.
pub fn lww_wins(current: Option<&CellVersion>, incoming: &CellVersion) -> bool {
    current.is_none_or(|c| incoming > c)
}

/// One site's contribution to a counter in one epoch: the sum of its local deltas.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Contribution {
    /// The contributing site.
    pub site: SiteId,
    /// The row epoch the contribution belongs to.
    pub epoch: u64,
    /// The clock of the site's latest delta: a newer contribution of the same site replaces an
    /// older one, which makes replays count once.
    pub hlc: Hlc,
    /// The sum of the site's deltas in this epoch (wrapping on overflow, like the sum itself).
    pub total: i64,
}

impl Contribution {
    fn rank(&self) -> (u64, Hlc, i64) {
        (self.epoch, self.hlc, self.total)
    }
}

/// A `counter` cell: the latest contribution of each site, sorted by site.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct CounterCell {
    contributions: Vec<Contribution>,
}

impl CounterCell {
    /// An empty counter (value 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The held contributions, sorted by site.
    pub fn contributions(&self) -> &[Contribution] {
        &self.contributions
    }

    /// Merges one contribution: per site, the one with the larger `(epoch, hlc)` wins (the total
    /// breaks a tie no honest peer produces, so the merge stays deterministic). Returns whether the
    /// cell changed.
    pub fn merge(&mut self, incoming: Contribution) -> bool {
        match self
            .contributions
            .binary_search_by(|c| c.site.cmp(&incoming.site))
        {
            Ok(i) => {
                if incoming.rank() > self.contributions[i].rank() {
                    self.contributions[i] = incoming;
                    true
                } else {
                    false
                }
            }
            Err(i) => {
                self.contributions.insert(i, incoming);
                true
            }
        }
    }

    /// Merges every contribution of another cell.
    pub fn merge_cell(&mut self, other: &CounterCell) -> bool {
        let mut changed = false;
        for c in &other.contributions {
            changed |= self.merge(*c);
        }
        changed
    }

    /// Records a local delta (`NEW - OLD`) by `site` at clock `hlc` in `epoch`, and returns the
    /// site's new contribution (what goes into the next batch). A contribution from an older epoch
    /// starts again at 0: a re-created row counts from scratch.
    ///
    /// `hlc` must come from the site's [`Clock::tick`](crate::hlc::Clock::tick) and `epoch` must be
    /// the row's current causal length: a contribution only replaces the site's previous one when
    /// its `(epoch, hlc)` is larger, so a stale clock or epoch would make the delta disappear.
    pub fn add_local(&mut self, site: SiteId, epoch: u64, hlc: Hlc, delta: i64) -> Contribution {
        let previous = self
            .contributions
            .iter()
            .find(|c| c.site == site && c.epoch == epoch)
            .map_or(0, |c| c.total);
        let contribution = Contribution {
            site,
            epoch,
            hlc,
            total: previous.wrapping_add(delta),
        };
        self.merge(contribution);
        contribution
    }

    /// The counter's value in `epoch` (the row's current causal length): the wrapping sum of the
    /// contributions of that epoch.
    pub fn value(&self, epoch: u64) -> i64 {
        self.contributions
            .iter()
            .filter(|c| c.epoch == epoch)
            .fold(0i64, |sum, c| sum.wrapping_add(c.total))
    }
}

/// One write to a `review` cell.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReviewWrite {
    /// Its version; `(site, hlc)` is the write's identity (its "dot").
    pub version: CellVersion,
    /// The value written.
    pub value: Value,
    /// The writes this one supersedes: per site, the highest clock of that site's writes the writer
    /// had seen on this cell. Sorted by site, one entry per site.
    pub context: Vec<(SiteId, Hlc)>,
}

impl ReviewWrite {
    /// True when this write's context covers `other` (the writer had seen it).
    pub fn supersedes(&self, other: &ReviewWrite) -> bool {
        self.version.epoch > other.version.epoch
            || (self.version.epoch == other.version.epoch
                && self
                    .context
                    .iter()
                    .any(|(s, h)| *s == other.version.stamp.site && *h >= other.version.stamp.hlc))
    }
}

/// A `review` cell: the writes no other held write supersedes (its siblings), sorted by version.
///
/// Because each context is cumulative (it covers everything its writer had seen), a write that
/// arrives after one superseding it is dropped at once, so replays and any delivery order give the
/// same siblings.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ReviewCell {
    siblings: Vec<ReviewWrite>,
}

impl ReviewCell {
    /// An empty cell.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current siblings, sorted by version. More than one = a conflict for a person.
    pub fn siblings(&self) -> &[ReviewWrite] {
        &self.siblings
    }

    /// Merges one write. Returns whether the siblings changed.
    pub fn merge(&mut self, incoming: ReviewWrite) -> bool {
        if self
            .siblings
            .iter()
            .any(|s| s.version == incoming.version || s.supersedes(&incoming))
        {
            return false;
        }
        self.siblings.retain(|s| !incoming.supersedes(s));
        let at = self
            .siblings
            .binary_search_by(|s| s.version.cmp(&incoming.version))
            .unwrap_or_else(|i| i);
        self.siblings.insert(at, incoming);
        true
    }

    /// Merges every sibling of another cell.
    pub fn merge_cell(&mut self, other: &ReviewCell) -> bool {
        let mut changed = false;
        for w in &other.siblings {
            changed |= self.merge(w.clone());
        }
        changed
    }

    /// The context a new local write must carry to supersede every sibling held now.
    pub fn context(&self) -> Vec<(SiteId, Hlc)> {
        let mut ctx: Vec<(SiteId, Hlc)> = Vec::new();
        for s in &self.siblings {
            let dots = s.context.iter().copied().chain(core::iter::once((
                s.version.stamp.site,
                s.version.stamp.hlc,
            )));
            for (site, hlc) in dots {
                match ctx.binary_search_by(|(x, _)| x.cmp(&site)) {
                    Ok(i) => ctx[i].1 = core::cmp::max(ctx[i].1, hlc),
                    Err(i) => ctx.insert(i, (site, hlc)),
                }
            }
        }
        ctx
    }

    /// The value shown in the app table: the sibling with the greatest version (deterministic on
    /// every replica holding the same siblings). `None` when the cell is empty.
    pub fn shown(&self) -> Option<&Value> {
        self.siblings.last().map(|s| &s.value)
    }
}

#[cfg(test)]
mod tests;
