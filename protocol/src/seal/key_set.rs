//! A key set (the tenant's digest key and scope keys) and its one plaintext layout, shared by
//! everything that carries keys sealed: key envelopes ([`super::envelope`]) and two-part
//! enrolment codes ([`super::code_keys`]).
//!
//! ```text
//! contents = digest key (32) ‖ count (u16 BE, at most MAX_ENTRIES)
//!            ‖ count × (scope digest (16) ‖ epoch (u32 BE, from 1) ‖ key (32)), ascending by (digest, epoch)
//! ```
//!
//! The layout is canonical (sorted, no duplicates, no epoch 0, exact length): one key set has
//! one contents. Each carrier checks its own bounds before it decrypts; [`read_contents`] checks
//! what only the plaintext can tell.

use super::digest::{DigestKey, ScopeDigest, DIGEST_KEY_LEN, SCOPE_DIGEST_LEN};
use super::key::ScopeKey;
use super::primitives::KEY_LEN;
use alloc::vec::Vec;

/// The most entries one key set carries (every epoch of 64 scopes for 16 rotations each).
pub const MAX_ENTRIES: usize = 1024;
/// Bytes of one entry: scope digest, epoch, key.
pub const ENTRY_LEN: usize = SCOPE_DIGEST_LEN + 4 + KEY_LEN;
/// Bytes of the contents before the entries: digest key and count.
pub const CONTENTS_HEAD: usize = DIGEST_KEY_LEN + 2;
/// Bytes of the longest contents ([`MAX_ENTRIES`] entries).
pub const MAX_CONTENTS_LEN: usize = CONTENTS_HEAD + MAX_ENTRIES * ENTRY_LEN;

/// One scope key and the scope it opens.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyEntry {
    /// The scope, by digest (as its streams are named on the wire).
    pub scope: ScopeDigest,
    /// Its key of one epoch.
    pub key: ScopeKey,
}

/// What an envelope or a two-part code carries: the tenant's digest key and scope keys.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeySet {
    /// The tenant's key for scope digests.
    pub digest_key: DigestKey,
    /// Scope keys, ascending by (scope, epoch) once opened; in any order when sealing.
    pub entries: Vec<KeyEntry>,
}

/// Why a key set could not be laid out, or its opened contents broke the layout. Lengths are
/// the contents' own; each carrier reports them in its own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContentsError {
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries { count: usize },
    /// Laying out: two entries with the same scope and epoch.
    DuplicateEntry { scope: ScopeDigest, epoch: u32 },
    /// The count asks for more bytes than there are.
    Truncated { expected: usize, got: usize },
    /// Bytes beyond what the count asks for.
    TooLong { len: usize, max: usize },
    /// Entries out of order, a repeated (scope, epoch), or an epoch 0.
    NotCanonical,
}

/// Appends the contents of `keys` to `out` (entries sorted; duplicates and more than
/// [`MAX_ENTRIES`] refused).
pub(crate) fn write_contents(keys: &KeySet, out: &mut Vec<u8>) -> Result<(), ContentsError> {
    let count = keys.entries.len();
    if count > MAX_ENTRIES {
        return Err(ContentsError::TooManyEntries { count });
    }
    let mut entries: Vec<&KeyEntry> = keys.entries.iter().collect();
    entries.sort_by_key(|e| (e.scope, e.key.epoch()));
    if let Some(w) = entries
        .windows(2)
        .find(|w| (w[0].scope, w[0].key.epoch()) == (w[1].scope, w[1].key.epoch()))
    {
        return Err(ContentsError::DuplicateEntry {
            scope: w[0].scope,
            epoch: w[0].key.epoch(),
        });
    }
    out.reserve(CONTENTS_HEAD + count * ENTRY_LEN);
    out.extend_from_slice(keys.digest_key.as_bytes());
    // At most MAX_ENTRIES (checked above), which fits a u16.
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for e in entries {
        out.extend_from_slice(&e.scope.0);
        out.extend_from_slice(&e.key.epoch().to_be_bytes());
        out.extend_from_slice(e.key.as_bytes());
    }
    Ok(())
}

/// Whether `len` bytes can be contents at all: at least the head, at most [`MAX_CONTENTS_LEN`],
/// the head plus whole entries. Carriers check this before they decrypt (lengths are public:
/// a ciphertext is as long as its contents).
pub(crate) fn check_contents_len(len: usize) -> Result<(), ContentsError> {
    if len < CONTENTS_HEAD {
        return Err(ContentsError::Truncated {
            expected: CONTENTS_HEAD,
            got: len,
        });
    }
    if len > MAX_CONTENTS_LEN {
        return Err(ContentsError::TooLong {
            len,
            max: MAX_CONTENTS_LEN,
        });
    }
    let partial = (len - CONTENTS_HEAD) % ENTRY_LEN;
    if partial != 0 {
        return Err(ContentsError::Truncated {
            expected: len + ENTRY_LEN - partial,
            got: len,
        });
    }
    Ok(())
}

/// The contents' fields, checked: the count matches the length and the entries are canonical.
/// `c` must be at least [`CONTENTS_HEAD`] bytes ([`check_contents_len`]).
pub(crate) fn read_contents(c: &[u8]) -> Result<KeySet, ContentsError> {
    let (head, body) = c.split_at(CONTENTS_HEAD);
    let digest_key = DigestKey::from_bytes(head[..DIGEST_KEY_LEN].try_into().expect("length"));
    let count = u16::from_be_bytes([head[DIGEST_KEY_LEN], head[DIGEST_KEY_LEN + 1]]) as usize;
    if count > MAX_ENTRIES {
        return Err(ContentsError::TooManyEntries { count });
    }
    let want = CONTENTS_HEAD + count * ENTRY_LEN;
    if c.len() < want {
        return Err(ContentsError::Truncated {
            expected: want,
            got: c.len(),
        });
    }
    if c.len() > want {
        return Err(ContentsError::TooLong {
            len: c.len(),
            max: want,
        });
    }
    let mut entries: Vec<KeyEntry> = Vec::with_capacity(count);
    for e in body.chunks_exact(ENTRY_LEN) {
        let scope = ScopeDigest(e[..SCOPE_DIGEST_LEN].try_into().expect("length"));
        let epoch = u32::from_be_bytes(
            e[SCOPE_DIGEST_LEN..SCOPE_DIGEST_LEN + 4]
                .try_into()
                .expect("length"),
        );
        let key = ScopeKey::new(epoch, e[SCOPE_DIGEST_LEN + 4..].try_into().expect("length"))
            .ok_or(ContentsError::NotCanonical)?;
        if entries
            .last()
            .is_some_and(|p| (p.scope, p.key.epoch()) >= (scope, epoch))
        {
            return Err(ContentsError::NotCanonical);
        }
        entries.push(KeyEntry { scope, key });
    }
    Ok(KeySet {
        digest_key,
        entries,
    })
}
