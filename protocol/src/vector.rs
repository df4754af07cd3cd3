//! Version vectors: a peer's knowledge, per origin, as contiguous coverage.
//!
//! Every change a database makes gets `(site, seq)`, seq counting from 1. A [`VersionVector`] maps
//! each origin to the highest seq up to which the holder has *every* change of that origin. Gaps are
//! never recorded: a range that does not start at or below `coverage + 1` cannot advance the vector
//! ([`VersionVector::advance`] reports [`VectorGap`]). Vectors are the cursors of every session.

use crate::site::SiteId;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// An inclusive range of sequence numbers `lo..=hi` of one origin, `1 <= lo <= hi`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SeqRange {
    /// First seq, inclusive.
    pub lo: u64,
    /// Last seq, inclusive.
    pub hi: u64,
}

impl SeqRange {
    /// A range, or `None` when `lo` is 0 or `lo > hi`.
    pub fn new(lo: u64, hi: u64) -> Option<SeqRange> {
        (lo >= 1 && lo <= hi).then_some(SeqRange { lo, hi })
    }

    /// How many seqs the range holds.
    pub fn len(&self) -> u64 {
        self.hi - self.lo + 1
    }

    /// Always false: a range holds at least one seq. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg_attr(feature = "defmt", derive(defmt::Format))]
/// A range could not be added because it starts after `coverage + 1`: accepting it would record
/// knowledge of changes the holder does not have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VectorGap {
    /// The origin.
    pub origin: SiteId,
    /// The holder's contiguous coverage of that origin.
    pub covered: u64,
    /// The range offered.
    pub range: SeqRange,
}

impl fmt::Display for VectorGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "changes {}..={} of origin {} leave a gap: only 1..={} are held",
            self.range.lo, self.range.hi, self.origin, self.covered
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for VectorGap {}

/// For each origin, the highest seq up to which every change is held. Origins at 0 are not stored.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<SiteId, u64>);

impl VersionVector {
    /// An empty vector (knows nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Contiguous coverage of `origin` (0 when unknown).
    pub fn get(&self, origin: &SiteId) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Sets the coverage of `origin` outright (loading a stored vector). 0 removes the entry.
    pub fn set(&mut self, origin: SiteId, covered: u64) {
        if covered == 0 {
            self.0.remove(&origin);
        } else {
            self.0.insert(origin, covered);
        }
    }

    /// Iterates `(origin, coverage)` in origin order.
    pub fn iter(&self) -> impl Iterator<Item = (&SiteId, &u64)> {
        self.0.iter()
    }

    /// How many origins have non-zero coverage.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the vector knows no origin.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every seq of `range` of `origin` is held.
    pub fn covers(&self, origin: &SiteId, range: SeqRange) -> bool {
        self.get(origin) >= range.hi
    }

    /// Records that every seq of `range` of `origin` is now held. Returns whether coverage grew.
    /// A range overlapping what is held is fine (replays); one starting past `coverage + 1` is a
    /// [`VectorGap`] and changes nothing.
    pub fn advance(&mut self, origin: SiteId, range: SeqRange) -> Result<bool, VectorGap> {
        let covered = self.get(&origin);
        if range.lo > covered.saturating_add(1) {
            return Err(VectorGap {
                origin,
                covered,
                range,
            });
        }
        if range.hi > covered {
            self.0.insert(origin, range.hi);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The pointwise maximum: what a holder of both vectors' changes covers.
    pub fn merge(&mut self, other: &VersionVector) {
        for (origin, &seq) in &other.0 {
            // Only ever raise an entry: inserting `seq` blindly would store a 0 entry if `other`
            // held one, and two vectors covering the same changes must compare equal.
            if seq > self.get(origin) {
                self.0.insert(*origin, seq);
            }
        }
    }

    /// True when `self` covers at least everything `other` covers.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(o, &s)| self.get(o) >= s)
    }

    /// The ranges `other` holds that `self` lacks, one per origin, in origin order: exactly what a
    /// holder of `other` must send to a holder of `self`.
    pub fn missing_from(&self, other: &VersionVector) -> Vec<(SiteId, SeqRange)> {
        other
            .0
            .iter()
            .filter_map(|(origin, &theirs)| {
                let lo = self.get(origin).checked_add(1)?;
                SeqRange::new(lo, theirs).map(|r| (*origin, r))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
