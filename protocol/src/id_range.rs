//! Identifier blocks: human-readable numbers (patient registration numbers, receipt numbers) that
//! a device hands out offline from blocks it reserved at an earlier sync.
//!
//! A device asks with an [`IdRequest`] (message tag 13) for `count` numbers of a named sequence;
//! the server answers with an [`IdGrant`] (tag 14): ranges totalling exactly `count`, or no range
//! at all when it cannot grant now (a hub whose pool from the cloud is short; it records the
//! demand, and the device asks again, under the same request id, at its next sync). The cloud is
//! the root of every sequence; a hub sub-allocates from ranges the cloud granted it. Blocks never
//! overlap because every number has exactly one granting root and each grant is recorded under
//! (peer, request id) before it is sent, so a retried request gets the recorded ranges again.
//!
//! **Contract**: [`check_sequence`] and [`check_ranges`] are what the message decoder enforces;
//! they never panic.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// The most numbers one request may ask for.
pub const MAX_ID_BLOCK: u64 = 1_000_000;

/// The longest sequence name, in bytes.
pub const MAX_SEQUENCE_LEN: usize = 64;

/// Names one id request, chosen by the requester at random and kept until the grant is stored,
/// so a request retried after a cut gets the grant recorded the first time.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct RequestId(pub [u8; 16]);

/// An inclusive range of numbers, `first..=last`, `1 <= first <= last`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct IdRange {
    /// The first number.
    pub first: u64,
    /// The last number (inclusive).
    pub last: u64,
}

impl IdRange {
    /// How many numbers the range holds.
    pub fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    /// Never true for a valid range; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// Message tag 13, client → server: reserve `count` numbers of `sequence`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IdRequest {
    /// The request's id (random; the same on every retry).
    pub request: RequestId,
    /// The sequence's name: 1 to 64 bytes of `A-Z a-z 0-9 _ . -`.
    pub sequence: String,
    /// How many numbers: 1 to [`MAX_ID_BLOCK`].
    pub count: u64,
    /// Every granted number must be larger than this (0: no floor). A hub that granted numbers
    /// as its own root before it joined a cloud sends the highest one it issued.
    pub above: u64,
}

/// Message tag 14, server → client: the numbers granted for a request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IdGrant {
    /// The request answered.
    pub request: RequestId,
    /// Its sequence.
    pub sequence: String,
    /// Ascending, non-overlapping ranges totalling the request's `count`; empty when the server
    /// cannot grant now (ask again, with the same request id, at the next sync).
    pub ranges: Vec<IdRange>,
}

impl IdGrant {
    /// The numbers granted.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(IdRange::len).sum()
    }
}

/// Why a sequence name, a count or granted ranges break the rules of id blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IdRangeError {
    /// The sequence name is empty.
    EmptyName,
    /// The sequence name is longer than [`MAX_SEQUENCE_LEN`] bytes.
    NameTooLong,
    /// The sequence name has a byte other than `A-Z a-z 0-9 _ . -`.
    NameCharacter,
    /// A request asks for 0 or more than [`MAX_ID_BLOCK`] numbers.
    Count,
    /// A granted range is empty or starts at 0.
    EmptyRange,
    /// Granted ranges are not ascending and disjoint.
    Overlap,
    /// Granted ranges total more than [`MAX_ID_BLOCK`] numbers.
    GrantTooLarge,
}

impl IdRangeError {
    /// What is wrong, in words (also the message decoder's `InvalidField` text).
    pub const fn as_str(self) -> &'static str {
        match self {
            IdRangeError::EmptyName => "sequence name is empty",
            IdRangeError::NameTooLong => "sequence name is longer than 64 bytes",
            IdRangeError::NameCharacter => {
                "sequence name has a character other than A-Z a-z 0-9 _ . -"
            }
            IdRangeError::Count => "id count is not between 1 and 1000000",
            IdRangeError::EmptyRange => "id range is empty or starts at 0",
            IdRangeError::Overlap => "id ranges are not ascending and disjoint",
            IdRangeError::GrantTooLarge => "id grant totals more than 1000000 numbers",
        }
    }
}

impl fmt::Display for IdRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for IdRangeError {}

/// Checks a sequence name: 1 to [`MAX_SEQUENCE_LEN`] bytes of `A-Z a-z 0-9 _ . -`.
pub fn check_sequence(name: &str) -> Result<(), IdRangeError> {
    if name.is_empty() {
        return Err(IdRangeError::EmptyName);
    }
    if name.len() > MAX_SEQUENCE_LEN {
        return Err(IdRangeError::NameTooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(IdRangeError::NameCharacter);
    }
    Ok(())
}

/// Checks a request count: 1 to [`MAX_ID_BLOCK`].
pub fn check_count(count: u64) -> Result<(), IdRangeError> {
    if count == 0 || count > MAX_ID_BLOCK {
        return Err(IdRangeError::Count);
    }
    Ok(())
}

/// Checks granted ranges: each `1 <= first <= last`, ascending and non-overlapping, totalling at
/// most [`MAX_ID_BLOCK`]. Returns the total.
pub fn check_ranges(ranges: &[IdRange]) -> Result<u64, IdRangeError> {
    let mut total: u64 = 0;
    let mut previous: Option<u64> = None;
    for r in ranges {
        if r.first == 0 || r.first > r.last {
            return Err(IdRangeError::EmptyRange);
        }
        if previous.is_some_and(|p| r.first <= p) {
            return Err(IdRangeError::Overlap);
        }
        previous = Some(r.last);
        total = total.saturating_add(r.len());
    }
    if total > MAX_ID_BLOCK {
        return Err(IdRangeError::GrantTooLarge);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_names_are_checked() {
        assert!(check_sequence("patients").is_ok());
        assert!(check_sequence("clinic-3.receipts_2026").is_ok());
        assert!(check_sequence("").is_err());
        assert!(check_sequence("has space").is_err());
        assert!(check_sequence("é").is_err());
        assert!(check_sequence(&"x".repeat(64)).is_ok());
        assert!(check_sequence(&"x".repeat(65)).is_err());
    }

    #[test]
    fn ranges_must_ascend_without_overlap() {
        let r = |first, last| IdRange { first, last };
        assert_eq!(check_ranges(&[]), Ok(0));
        assert_eq!(check_ranges(&[r(1, 10), r(20, 29)]), Ok(20));
        assert!(check_ranges(&[r(0, 3)]).is_err());
        assert!(check_ranges(&[r(5, 4)]).is_err());
        assert!(check_ranges(&[r(1, 10), r(10, 12)]).is_err());
        assert!(check_ranges(&[r(20, 29), r(1, 10)]).is_err());
        assert!(check_ranges(&[r(1, 1_000_001)]).is_err());
        assert!(check_ranges(&[r(u64::MAX, u64::MAX)]).is_ok());
        assert!(check_count(0).is_err() && check_count(MAX_ID_BLOCK + 1).is_err());
    }
}
