//! Scope digests: in a sealed tenant, scope ids on the wire (batch streams, version vectors,
//! control entries, status pages) are keyed digests of the scope names, so a relay routes by
//! scope without learning which clinic a stream belongs to (docs/design.md section 10).
//!
//! A digest is the first 16 bytes of HMAC-SHA256(digest key, name), written as 32 lowercase hex
//! characters: itself a valid scope name and stream name (`scope::check_name`), so everything
//! that carries a scope id carries a digest unchanged. The digest key is one per tenant; it
//! travels with the scope keys in key envelopes (`super::envelope`). Without it, a digest tells
//! only that two streams are the same scope; with it, anyone can test a guessed name, so it is
//! as secret as the scope keys.

use super::primitives::hmac_sha256;
use crate::scope::Scopes;
use alloc::string::String;
use core::fmt;
use core::str::FromStr;
use zeroize::Zeroize;

/// Bytes of a digest key.
pub const DIGEST_KEY_LEN: usize = 32;
/// Bytes of a scope digest (its text form is twice as many hex characters).
pub const SCOPE_DIGEST_LEN: usize = 16;

/// The tenant's key for scope digests (32 bytes, HMAC-SHA256). Its bytes never appear in
/// `Debug` and are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey([u8; DIGEST_KEY_LEN]);

impl DigestKey {
    /// A digest key from its bytes (32 random bytes when a tenant is made).
    pub fn from_bytes(bytes: [u8; DIGEST_KEY_LEN]) -> DigestKey {
        DigestKey(bytes)
    }

    /// The key bytes, for storing and wrapping it.
    pub fn as_bytes(&self) -> &[u8; DIGEST_KEY_LEN] {
        &self.0
    }

    /// The digest of a scope name.
    pub fn digest(&self, name: &str) -> ScopeDigest {
        let mac = hmac_sha256(&self.0, name.as_bytes());
        let mut d = [0u8; SCOPE_DIGEST_LEN];
        d.copy_from_slice(&mac[..SCOPE_DIGEST_LEN]);
        ScopeDigest(d)
    }

    /// The scope id that carries scope `name` on a sealed tenant's wire (batch streams, version
    /// vectors, drains, regains, grants, epochs, voids): its digest's text. The unscoped stream
    /// `""` stays `""` (every grant holds it: its id tells nothing) and so does the every-scope
    /// grant `*`.
    pub fn wire_scope(&self, name: &str) -> String {
        if name.is_empty() || name == crate::scope::ALL {
            return String::from(name);
        }
        self.digest(name).to_stream()
    }

    /// A grant's scopes as a sealed tenant's control stream states them ([`Self::wire_scope`]).
    pub fn wire_scopes(&self, scopes: &Scopes) -> Scopes {
        match scopes {
            Scopes::All => Scopes::All,
            Scopes::Only(names) => Scopes::Only(names.iter().map(|n| self.wire_scope(n)).collect()),
        }
    }

    /// The digest the keys of wire scope id `wire` are filed under (envelopes, key stores): the
    /// digest it is, or for the unscoped stream `""` the digest of `""`. `None` for text that is
    /// neither (a scope name sent unsealed: it has no key).
    pub fn key_digest(&self, wire: &str) -> Option<ScopeDigest> {
        if wire.is_empty() {
            return Some(self.digest(""));
        }
        wire.parse().ok()
    }
}

impl Drop for DigestKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

/// A scope's digest: what stands for its name on the wire of a sealed tenant. Its text form
/// ([`fmt::Display`], [`ScopeDigest::to_stream`]) is 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeDigest(pub [u8; SCOPE_DIGEST_LEN]);

impl ScopeDigest {
    /// The stream name (scope id) that carries this scope on the wire.
    pub fn to_stream(&self) -> String {
        use core::fmt::Write;
        let mut s = String::with_capacity(2 * SCOPE_DIGEST_LEN);
        let _ = write!(s, "{self}");
        s
    }
}

impl fmt::Display for ScopeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ScopeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeDigest({self})")
    }
}

/// Text that is not a scope digest (32 lowercase hex characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotADigest;

impl fmt::Display for NotADigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a scope digest: expected 32 lowercase hex characters")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for NotADigest {}

/// Reads the text form back (a stream name of a sealed tenant); only the one canonical form
/// (lowercase) is accepted, so a digest has one text.
impl FromStr for ScopeDigest {
    type Err = NotADigest;

    fn from_str(s: &str) -> Result<ScopeDigest, NotADigest> {
        let b = s.as_bytes();
        if b.len() != 2 * SCOPE_DIGEST_LEN {
            return Err(NotADigest);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(NotADigest),
        };
        let mut d = [0u8; SCOPE_DIGEST_LEN];
        for (i, out) in d.iter_mut().enumerate() {
            *out = nibble(b[2 * i])? << 4 | nibble(b[2 * i + 1])?;
        }
        Ok(ScopeDigest(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::check_name;

    #[test]
    fn a_digest_is_a_valid_scope_name_and_reads_back() {
        let key = DigestKey::from_bytes([7; 32]);
        let d = key.digest("clinic-moshi");
        let text = d.to_stream();
        assert_eq!(text.len(), 32);
        check_name(&text).unwrap();
        assert!(crate::batch::codec::valid_stream(&text));
        assert_eq!(text.parse::<ScopeDigest>(), Ok(d));
        assert_eq!(text.to_uppercase().parse::<ScopeDigest>(), Err(NotADigest));
    }

    #[test]
    fn digests_depend_on_the_name_and_the_key() {
        let (a, b) = (
            DigestKey::from_bytes([7; 32]),
            DigestKey::from_bytes([8; 32]),
        );
        assert_ne!(a.digest("moshi"), a.digest("arusha"));
        assert_ne!(a.digest("moshi"), b.digest("moshi"));
        assert_eq!(a.digest("moshi"), a.digest("moshi"));
        assert!(!a.digest("moshi").to_stream().contains("moshi"));
    }
}
