//! Site ids: 16 random bytes naming one database (a device, a hub, the cloud).
//!
//! A site id is generated once when a database is first used and never changes; it is bound to the
//! key the database enrolled with (a second key presenting a known site id is refused, because
//! reusing `(site, seq)` would lose writes).

use core::fmt;
use serde::{Deserialize, Serialize};

/// The 16-byte identity of one database. Ordered bytewise; that order breaks clock ties.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SiteId(pub [u8; 16]);

impl SiteId {
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Builds a site id from a slice, which must be exactly 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(SiteId)
    }
}

impl fmt::Debug for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteId({self})")
    }
}

/// Lowercase hex, 32 characters: the form used in JSON, logs and status output.
impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl core::str::FromStr for SiteId {
    type Err = ParseSiteIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return Err(ParseSiteIdError);
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(ParseSiteIdError)?;
            let lo = hex_digit(pair[1]).ok_or(ParseSiteIdError)?;
            out[i] = hi << 4 | lo;
        }
        Ok(SiteId(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A site id written as text was not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ParseSiteIdError;

impl fmt::Display for ParseSiteIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a site id is 32 hexadecimal digits")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseSiteIdError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn site_id_round_trips_through_hex() {
        let id = SiteId([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text, "abababababababababababababababab");
        assert_eq!(text.parse::<SiteId>(), Ok(id));
        assert_eq!("abc".parse::<SiteId>(), Err(ParseSiteIdError));
        assert_eq!("zz".repeat(16).parse::<SiteId>(), Err(ParseSiteIdError));
    }
}
