//! The text form of a version vector, as serving boxes keep peers' vectors in their own files
//! (the allowlist's `vector:<site>` settings, the hub's uplink state): `SITE:COVERED` entries
//! for unscoped streams and `SITE/SCOPE:COVERED` for scoped ones (32 hex digits, a scope id, a
//! positive decimal) joined by commas, in increasing stream order; the empty vector is the empty
//! text. A text written before streams existed reads as the unscoped streams it named.
//!
//! [`decode`] accepts exactly what [`encode`] writes and refuses anything else with a
//! [`VectorTextError`] naming the entry: a damaged file must be noticed, not read as a vector
//! that covers less than the peer does (which would make the status report changes as pending).

use outpost_protocol::batch::codec::valid_stream;
use outpost_protocol::site::ParseSiteIdError;
use outpost_protocol::{SiteId, StreamId, VersionVector};
use std::fmt::{self, Write as _};

/// Why a text is not a version vector. `index` counts entries from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VectorTextError {
    /// The entry is not `SITE:COVERED`.
    Entry {
        /// Which entry.
        index: usize,
    },
    /// The entry's scope is not a scope id.
    Scope {
        /// Which entry.
        index: usize,
    },
    /// The entry's site is not 32 hex digits.
    Site {
        /// Which entry.
        index: usize,
        /// The parse error.
        source: ParseSiteIdError,
    },
    /// The entry's coverage is not a positive decimal number that fits in 64 bits.
    Covered {
        /// Which entry.
        index: usize,
    },
    /// The entry's site does not come after the previous entry's (repeated or out of order).
    Order {
        /// Which entry.
        index: usize,
    },
}

impl fmt::Display for VectorTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorTextError::Entry { index } => {
                write!(f, "vector entry #{index} is not SITE:COVERED")
            }
            VectorTextError::Scope { index } => {
                write!(f, "vector entry #{index}: the scope is not a scope id")
            }
            VectorTextError::Site { index, source } => {
                write!(f, "vector entry #{index}: {source}")
            }
            VectorTextError::Covered { index } => write!(
                f,
                "vector entry #{index}: the coverage is not a positive decimal number"
            ),
            VectorTextError::Order { index } => write!(
                f,
                "vector entry #{index}: streams must be in increasing order, each once"
            ),
        }
    }
}

impl std::error::Error for VectorTextError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VectorTextError::Site { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `site:covered,site/scope:covered`, in stream order.
pub fn encode(v: &VersionVector) -> String {
    let mut out = String::new();
    for (stream, covered) in v.iter() {
        if !out.is_empty() {
            out.push(',');
        }
        // StreamId's Display: `site` unscoped, `site/scope` otherwise.
        let _ = write!(out, "{stream}:{covered}");
    }
    out
}

/// The vector [`encode`] wrote as `text`.
pub fn decode(text: &str) -> Result<VersionVector, VectorTextError> {
    let mut v = VersionVector::new();
    if text.is_empty() {
        return Ok(v);
    }
    let mut previous: Option<StreamId> = None;
    for (index, entry) in text.split(',').enumerate() {
        let (stream, covered) = entry
            .split_once(':')
            .ok_or(VectorTextError::Entry { index })?;
        let (site, scope) = stream.split_once('/').unwrap_or((stream, ""));
        let site: SiteId = site
            .parse()
            .map_err(|source| VectorTextError::Site { index, source })?;
        if stream.contains('/') && (scope.is_empty() || !valid_stream(scope)) {
            return Err(VectorTextError::Scope { index });
        }
        let stream = StreamId::new(site, scope);
        // u64's parser also takes a leading '+': only plain digits are what encode writes.
        let covered = Some(covered)
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|c| *c > 0)
            .ok_or(VectorTextError::Covered { index })?;
        if previous.as_ref().is_some_and(|p| *p >= stream) {
            return Err(VectorTextError::Order { index });
        }
        previous = Some(stream.clone());
        v.set(stream, covered);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_their_text() {
        let mut v = VersionVector::new();
        v.set(SiteId([1; 16]).into(), 7);
        v.set(StreamId::new(SiteId([1; 16]), "moshi"), 3);
        v.set(SiteId([2; 16]).into(), 1);
        let text = encode(&v);
        assert_eq!(
            text,
            format!(
                "{}:7,{}/moshi:3,{}:1",
                SiteId([1; 16]),
                SiteId([1; 16]),
                SiteId([2; 16])
            )
        );
        assert_eq!(decode(&text), Ok(v));
        assert_eq!(encode(&VersionVector::new()), "");
        assert_eq!(decode(""), Ok(VersionVector::new()));
    }

    #[test]
    fn damaged_text_is_refused_with_the_entry_named() {
        let a = SiteId([1; 16]);
        let b = SiteId([2; 16]);
        assert_eq!(decode("junk,x:y"), Err(VectorTextError::Entry { index: 0 }));
        assert!(matches!(
            decode(&format!("{a}:1,x:2")),
            Err(VectorTextError::Site { index: 1, .. })
        ));
        for covered in ["", "0", "+3", "-1", "1.5", "18446744073709551616"] {
            assert_eq!(
                decode(&format!("{a}:{covered}")),
                Err(VectorTextError::Covered { index: 0 }),
                "{covered:?}"
            );
        }
        assert_eq!(
            decode(&format!("{b}:1,{a}:1")),
            Err(VectorTextError::Order { index: 1 })
        );
        assert_eq!(
            decode(&format!("{a}:1,{a}:2")),
            Err(VectorTextError::Order { index: 1 })
        );
        assert_eq!(
            decode(&format!("{a}:1,")),
            Err(VectorTextError::Entry { index: 1 })
        );
        for scope in ["", "a b", "x:y"] {
            assert!(decode(&format!("{a}/{scope}:1")).is_err(), "{scope:?}");
        }
        assert_eq!(
            decode(&format!("{a}/moshi:1,{a}:1")),
            Err(VectorTextError::Order { index: 1 })
        );
        let err = decode(&format!("{a}:0")).unwrap_err().to_string();
        assert!(err.contains("#0") && err.contains("positive"), "{err}");
    }
}
