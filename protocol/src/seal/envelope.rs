//! Key envelopes: scope keys and the digest key, wrapped to one device's static P-256 key
//! (ECDH-ES: an ephemeral key per envelope, HKDF-SHA256, AES-256-GCM).
//!
//! ```text
//! envelope  = "OPK" ‖ version (1) ‖ ephemeral public key (65, uncompressed SEC1)
//!             ‖ AES-256-GCM(KEK, nonce = 12 zero bytes, aad = the 69 bytes before it)(contents) ‖ tag (16)
//! KEK       = HKDF-SHA256(salt = "outpost key envelope v1", ikm = ECDH(ephemeral, recipient).x,
//!                         info = ephemeral public key (65) ‖ recipient public key (65))
//! contents  = a key set's one layout (`seal::key_set`): digest key ‖ count ‖ sorted entries
//! ```
//!
//! The KEK encrypts exactly one message (a fresh ephemeral key per envelope), so its nonce is
//! fixed. Only the recipient's secret key opens it; binding both public keys into the KEK means an
//! envelope cannot be re-targeted. The encoding is canonical (sorted, no duplicates, no epoch 0,
//! exact lengths): one key set has one envelope per ephemeral key.

use super::digest::ScopeDigest;
use super::key_set::{check_contents_len, read_contents, write_contents, ContentsError};
use super::key_set::{CONTENTS_HEAD, MAX_CONTENTS_LEN};
use super::primitives::{aes_256_gcm_open, aes_256_gcm_seal, ecdh, hkdf_sha256, KEY_LEN, TAG_LEN};
use crate::handshake::{Keypair, PublicKey, PUBLIC_KEY_LEN};
use alloc::vec::Vec;
use core::fmt;
use zeroize::Zeroizing;

pub use super::key_set::{KeyEntry, KeySet, ENTRY_LEN, MAX_ENTRIES};

/// The magic every envelope starts with.
pub const MAGIC: [u8; 3] = *b"OPK";
/// The envelope layout this build writes and reads.
pub const VERSION: u8 = 1;
/// The HKDF salt: makes the KEK mean "an Outpost key envelope, version 1" and nothing else.
pub const KDF_SALT: &[u8] = b"outpost key envelope v1";

/// Bytes before the ciphertext: magic, version, ephemeral public key (also the AAD).
pub const PREFIX_LEN: usize = MAGIC.len() + 1 + PUBLIC_KEY_LEN;
/// The shortest envelope (no entries).
pub const MIN_LEN: usize = PREFIX_LEN + CONTENTS_HEAD + TAG_LEN;
/// The longest envelope ([`MAX_ENTRIES`] entries).
pub const MAX_LEN: usize = PREFIX_LEN + MAX_CONTENTS_LEN + TAG_LEN;

/// Why an envelope could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes do not start with `OPK`: not a key envelope.
    BadMagic,
    /// The version byte names a layout this build does not read.
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// Shorter than the smallest envelope, or than its entries need.
    Truncated {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// Longer than the largest envelope, or than its count of entries needs.
    TooLong {
        /// Bytes present.
        len: usize,
        /// Bytes the envelope may have.
        max: usize,
    },
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries {
        /// How many.
        count: usize,
    },
    /// The ephemeral public key is not a valid uncompressed P-256 point.
    BadEphemeralKey,
    /// The contents do not authenticate: the envelope is for another device's key, or was
    /// altered.
    TagMismatch,
    /// Entries out of order, a repeated (scope, epoch), or an epoch 0 (unwrapping: the wrapper
    /// broke the layout's rules).
    NotCanonical,
    /// Wrapping: two entries with the same scope and epoch.
    DuplicateEntry {
        /// The scope.
        scope: ScopeDigest,
        /// The epoch.
        epoch: u32,
    },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::BadMagic => f.write_str("not a key envelope: missing the `OPK` magic"),
            EnvelopeError::UnsupportedVersion { found } => write!(
                f,
                "key envelope version {found}: this build reads version {VERSION} only"
            ),
            EnvelopeError::Truncated { expected, got } => {
                write!(
                    f,
                    "key envelope truncated: expected {expected} bytes, got {got}"
                )
            }
            EnvelopeError::TooLong { len, max } => {
                write!(f, "key envelope of {len} bytes: at most {max} here")
            }
            EnvelopeError::TooManyEntries { count } => {
                write!(f, "key envelope with {count} keys: at most {MAX_ENTRIES}")
            }
            EnvelopeError::BadEphemeralKey => {
                f.write_str("key envelope's ephemeral key is not a valid P-256 point")
            }
            EnvelopeError::TagMismatch => f.write_str(
                "key envelope does not open with this device's key: it is for another device, \
                 or was altered",
            ),
            EnvelopeError::NotCanonical => {
                f.write_str("key envelope's keys are out of order, repeated, or of epoch 0")
            }
            EnvelopeError::DuplicateEntry { scope, epoch } => {
                write!(f, "two keys for scope {scope} epoch {epoch}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EnvelopeError {}

/// Wraps `keys` to `recipient`'s static key. `ephemeral` must be a fresh key pair from the
/// caller's CSPRNG, used for this envelope only ([`Keypair::generate_with`]); it is consumed so
/// it is not reused by mistake.
pub fn wrap_keys(
    keys: &KeySet,
    recipient: &PublicKey,
    ephemeral: Keypair,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::with_capacity(MIN_LEN + keys.entries.len() * ENTRY_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(ephemeral.public().as_bytes());
    write_contents(keys, &mut out).map_err(from_contents)?;
    let kek = kek(&ecdh(&ephemeral, recipient), ephemeral.public(), recipient);
    let (prefix, contents) = out.split_at_mut(PREFIX_LEN);
    // The contents are at most MAX_LEN bytes, far below AES-GCM's limit.
    let tag = aes_256_gcm_seal(&kek, &[0; 12], prefix, contents).expect("an envelope's size");
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens an envelope with the recipient's static key. Checks the magic, the version and the
/// lengths before allocating anything, then the ephemeral key, the tag, and the contents'
/// canonical form.
pub fn unwrap_keys(envelope: &[u8], recipient: &Keypair) -> Result<KeySet, EnvelopeError> {
    let len = envelope.len();
    if len < MAGIC.len() + 1 {
        return Err(if MAGIC.starts_with(envelope) {
            EnvelopeError::Truncated {
                expected: MIN_LEN,
                got: len,
            }
        } else {
            EnvelopeError::BadMagic
        });
    }
    if envelope[..MAGIC.len()] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if envelope[MAGIC.len()] != VERSION {
        return Err(EnvelopeError::UnsupportedVersion {
            found: envelope[MAGIC.len()],
        });
    }
    if len < MIN_LEN {
        return Err(EnvelopeError::Truncated {
            expected: MIN_LEN,
            got: len,
        });
    }
    if len > MAX_LEN {
        return Err(EnvelopeError::TooLong { len, max: MAX_LEN });
    }
    // Lengths are public (the ciphertext is as long as the contents): a length no count of
    // entries gives is refused before any work.
    check_contents_len(len - PREFIX_LEN - TAG_LEN).map_err(from_contents)?;
    let (prefix, rest) = envelope.split_at(PREFIX_LEN);
    let ephemeral = &prefix[MAGIC.len() + 1..];
    let ephemeral = PublicKey::from_sec1(ephemeral)
        .ok()
        .filter(|k| k.as_bytes()[..] == ephemeral[..])
        .ok_or(EnvelopeError::BadEphemeralKey)?;
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN from the end");
    let kek = kek(&ecdh(recipient, &ephemeral), &ephemeral, recipient.public());
    // Bounded by MAX_LEN (checked above); wiped once read, as it holds the keys in the clear.
    let mut contents = Zeroizing::new(ciphertext.to_vec());
    aes_256_gcm_open(&kek, &[0; 12], prefix, &mut contents, tag)
        .map_err(|_| EnvelopeError::TagMismatch)?;
    read_contents(&contents).map_err(from_contents)
}

/// A contents error in the envelope's terms (lengths of the whole envelope).
fn from_contents(e: ContentsError) -> EnvelopeError {
    let whole = |n: usize| PREFIX_LEN + n + TAG_LEN;
    match e {
        ContentsError::TooManyEntries { count } => EnvelopeError::TooManyEntries { count },
        ContentsError::DuplicateEntry { scope, epoch } => {
            EnvelopeError::DuplicateEntry { scope, epoch }
        }
        ContentsError::Truncated { expected, got } => EnvelopeError::Truncated {
            expected: whole(expected),
            got: whole(got),
        },
        ContentsError::TooLong { len, max } => EnvelopeError::TooLong {
            len: whole(len),
            max: whole(max),
        },
        ContentsError::NotCanonical => EnvelopeError::NotCanonical,
    }
}

/// The key-encryption key of one envelope (see the module doc); it and the shared secret are
/// wiped when dropped.
fn kek(
    shared: &[u8; 32],
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> Zeroizing<[u8; KEY_LEN]> {
    let shared = Zeroizing::new(*shared);
    let mut info = [0u8; 2 * PUBLIC_KEY_LEN];
    info[..PUBLIC_KEY_LEN].copy_from_slice(ephemeral.as_bytes());
    info[PUBLIC_KEY_LEN..].copy_from_slice(recipient.as_bytes());
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    // 32 bytes is one HKDF block.
    hkdf_sha256(KDF_SALT, &*shared, &info, &mut *kek).expect("32 bytes of HKDF output");
    kek
}
