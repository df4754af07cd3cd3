//! Version vectors: a peer's knowledge, per stream, as contiguous coverage.
//!
//! Every origin numbers its changes per *stream* from 1: a stream is `(origin, scope)`, the scope
//! being the scope id its rows belong to, or `""` for unscoped tables (docs/design.md section
//! 10). A [`VersionVector`] maps each stream to the highest seq up to which the holder has *every*
//! change of that stream. Gaps are never recorded: a range that does not start at or below
//! `coverage + 1` cannot advance the vector ([`Vector::advance`] reports [`VectorGap`]). Vectors
//! are the cursors of every session. Control streams are one per writer and never scoped: their
//! cursors are a [`ControlVector`], the same structure keyed by site id alone.

use crate::site::SiteId;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// One origin's changes to one scope: the unit of numbering, coverage and routing.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct StreamId {
    /// The site that made the changes.
    pub origin: SiteId,
    /// The scope id of their rows; `""` for unscoped tables.
    pub scope: String,
}

impl StreamId {
    /// The stream of `origin`'s changes to `scope`.
    pub fn new(origin: SiteId, scope: impl Into<String>) -> StreamId {
        StreamId {
            origin,
            scope: scope.into(),
        }
    }

    /// The stream of `origin`'s changes to unscoped tables (scope `""`).
    pub fn unscoped(origin: SiteId) -> StreamId {
        StreamId {
            origin,
            scope: String::new(),
        }
    }

    /// True for the stream of unscoped tables, which belongs to every grant.
    pub fn is_unscoped(&self) -> bool {
        self.scope.is_empty()
    }
}

impl From<SiteId> for StreamId {
    fn from(origin: SiteId) -> StreamId {
        StreamId::unscoped(origin)
    }
}

impl From<&SiteId> for StreamId {
    fn from(origin: &SiteId) -> StreamId {
        StreamId::unscoped(*origin)
    }
}

/// Why a text is not a stream id (`SITE` or `SITE/SCOPE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseStreamIdError {
    /// The site part is not a site id.
    Site(crate::site::ParseSiteIdError),
    /// The scope part is empty or not a scope id.
    Scope,
}

impl fmt::Display for ParseStreamIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseStreamIdError::Site(e) => write!(f, "stream: {e}"),
            ParseStreamIdError::Scope => f.write_str("stream: the scope is not a scope id"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseStreamIdError {}

/// The text [`StreamId`]'s `Display` writes: `SITE` (unscoped) or `SITE/SCOPE`.
impl core::str::FromStr for StreamId {
    type Err = ParseStreamIdError;

    fn from_str(text: &str) -> Result<StreamId, ParseStreamIdError> {
        let (site, scope) = match text.split_once('/') {
            Some((site, scope)) => {
                if scope.is_empty() || !crate::batch::codec::valid_stream(scope) {
                    return Err(ParseStreamIdError::Scope);
                }
                (site, scope)
            }
            None => (text, ""),
        };
        let origin = site.parse().map_err(ParseStreamIdError::Site)?;
        Ok(StreamId::new(origin, scope))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scope.is_empty() {
            write!(f, "{}", self.origin)
        } else {
            write!(f, "{}/{}", self.origin, self.scope)
        }
    }
}

/// An inclusive range of sequence numbers `lo..=hi` of one stream, `1 <= lo <= hi`.
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

/// A range could not be added because it starts after `coverage + 1`: accepting it would record
/// knowledge of changes the holder does not have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VectorGap<K = StreamId> {
    /// The stream (or, for control streams, the writer).
    pub origin: K,
    /// The holder's contiguous coverage of that origin.
    pub covered: u64,
    /// The range offered.
    pub range: SeqRange,
}

impl<K: fmt::Display> fmt::Display for VectorGap<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "changes {}..={} of {} leave a gap: only 1..={} are held",
            self.range.lo, self.range.hi, self.origin, self.covered
        )
    }
}

#[cfg(feature = "std")]
impl<K: fmt::Display + fmt::Debug> std::error::Error for VectorGap<K> {}

/// For each key, the highest seq up to which every change is held. Keys at 0 are not stored.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Vector<K: Ord>(BTreeMap<K, u64>);

/// A data vector: coverage per stream `(origin, scope)`.
pub type VersionVector = Vector<StreamId>;

/// A control vector: coverage per control stream, one per writer.
pub type ControlVector = Vector<SiteId>;

impl<K: Ord> Default for Vector<K> {
    fn default() -> Self {
        Vector(BTreeMap::new())
    }
}

impl<K: Ord + Clone> Vector<K> {
    /// An empty vector (knows nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Contiguous coverage of `origin` (0 when unknown).
    pub fn get(&self, origin: &K) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Sets the coverage of `origin` outright (loading a stored vector). 0 removes the entry.
    pub fn set(&mut self, origin: K, covered: u64) {
        if covered == 0 {
            self.0.remove(&origin);
        } else {
            self.0.insert(origin, covered);
        }
    }

    /// Iterates `(origin, coverage)` in origin order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &u64)> {
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
    pub fn covers(&self, origin: &K, range: SeqRange) -> bool {
        self.get(origin) >= range.hi
    }

    /// Records that every seq of `range` of `origin` is now held. Returns whether coverage grew.
    /// A range overlapping what is held is fine (replays); one starting past `coverage + 1` is a
    /// [`VectorGap`] and changes nothing.
    pub fn advance(&mut self, origin: K, range: SeqRange) -> Result<bool, VectorGap<K>> {
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
    pub fn merge(&mut self, other: &Vector<K>) {
        for (origin, &seq) in &other.0 {
            // Only ever raise an entry: inserting `seq` blindly would store a 0 entry if `other`
            // held one, and two vectors covering the same changes must compare equal.
            if seq > self.get(origin) {
                self.0.insert(origin.clone(), seq);
            }
        }
    }

    /// True when `self` covers at least everything `other` covers.
    pub fn dominates(&self, other: &Vector<K>) -> bool {
        other.0.iter().all(|(o, &s)| self.get(o) >= s)
    }

    /// The ranges `other` holds that `self` lacks, one per origin, in origin order: exactly what a
    /// holder of `other` must send to a holder of `self`.
    pub fn missing_from(&self, other: &Vector<K>) -> Vec<(K, SeqRange)> {
        other
            .0
            .iter()
            .filter_map(|(origin, &theirs)| {
                let lo = self.get(origin).checked_add(1)?;
                SeqRange::new(lo, theirs).map(|r| (origin.clone(), r))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
