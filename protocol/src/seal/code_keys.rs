//! The keys inside a two-part enrolment code (docs/design.md section 10, "Offline enrolment"):
//! the tenant's digest key and scope keys, sealed under a key derived from the code's secret (the
//! part the device never sends) and bound to the code's admission (the part it presents to the
//! hub). The code itself is `crate::enroll_code::TwoPartCode`.
//!
//! ```text
//! sealed keys = AES-256-GCM(K, nonce = 12 zero bytes, aad = empty)(contents) ‖ tag (16)
//! K           = HKDF-SHA256(salt = "outpost code keys v1", ikm = secret (32),
//!                           info = SHA-256(admission bytes, signature included))
//! contents    = a key set's one layout (`seal::key_set`): digest key ‖ count ‖ sorted entries
//! ```
//!
//! **Why a fixed nonce is safe.** A code's secret is 32 fresh random bytes from the minter's
//! CSPRNG, made for that code alone, and K also depends on the admission (whose token is fresh
//! too): each K encrypts exactly one message, so no (key, nonce) pair ever repeats. The hub sees
//! the admission, never the secret, so it cannot derive K; the device, holding both, can.
//! Binding the admission into K (rather than into the AAD) means a code's keys open only next to
//! the admission they were minted with: swapping in another admission makes the keys unopenable.

use super::key_set::{check_contents_len, read_contents, write_contents, ContentsError, KeySet};
use super::key_set::{CONTENTS_HEAD, MAX_CONTENTS_LEN};
use super::primitives::{aes_256_gcm_open, aes_256_gcm_seal, hkdf_sha256, KEY_LEN, TAG_LEN};
use super::ScopeDigest;
use alloc::vec::Vec;
use core::fmt;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// The HKDF salt: makes K mean "the keys of an Outpost enrolment code, version 1" and nothing
/// else.
pub const KDF_SALT: &[u8] = b"outpost code keys v1";
/// Bytes of a code's secret.
pub const SECRET_LEN: usize = 32;
/// The shortest sealed keys (a digest key and no scope key).
pub const MIN_LEN: usize = CONTENTS_HEAD + TAG_LEN;
/// The longest sealed keys the layout allows (a code is bounded tighter by its own size).
pub const MAX_LEN: usize = MAX_CONTENTS_LEN + TAG_LEN;

/// A code's secret: 32 random bytes that unseal the code's keys. The device keeps it and never
/// sends it. Never shown in `Debug`; wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeSecret([u8; SECRET_LEN]);

impl CodeSecret {
    /// A secret from its bytes: 32 fresh bytes from the minter's CSPRNG, for one code only.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> CodeSecret {
        CodeSecret(bytes)
    }

    /// The secret's bytes, for writing the code.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl Drop for CodeSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for CodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeSecret(..)")
    }
}

/// Why a code's keys could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeKeysError {
    /// Shorter than the smallest sealed keys, or than their count of entries needs.
    Truncated {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// Longer than the largest sealed keys, or than their count of entries needs.
    TooLong {
        /// Bytes present.
        len: usize,
        /// Bytes they may have.
        max: usize,
    },
    /// More scope keys than one key set carries.
    TooManyEntries {
        /// How many.
        count: usize,
    },
    /// Sealing: two keys with the same scope and epoch.
    DuplicateEntry {
        /// The scope.
        scope: ScopeDigest,
        /// The epoch.
        epoch: u32,
    },
    /// The keys do not open: a wrong secret, another code's admission, or altered bytes.
    TagMismatch,
    /// Opened keys out of order, repeated, or of epoch 0 (the minter broke the layout's rules).
    NotCanonical,
}

impl fmt::Display for CodeKeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeKeysError::Truncated { expected, got } => write!(
                f,
                "enrolment code's keys truncated: expected {expected} bytes, got {got}"
            ),
            CodeKeysError::TooLong { len, max } => write!(
                f,
                "enrolment code's keys are {len} bytes: at most {max} here"
            ),
            CodeKeysError::TooManyEntries { count } => write!(
                f,
                "enrolment code with {count} scope keys: at most {}",
                super::key_set::MAX_ENTRIES
            ),
            CodeKeysError::DuplicateEntry { scope, epoch } => {
                write!(f, "two keys for scope {scope} epoch {epoch}")
            }
            CodeKeysError::TagMismatch => f.write_str(
                "enrolment code's keys do not open: the code was altered, or its parts come from \
                 different codes; ask for a new code",
            ),
            CodeKeysError::NotCanonical => f.write_str(
                "enrolment code's keys are out of order, repeated, or of epoch 0; ask for a new code",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodeKeysError {}

// By its message: a scope digest has no defmt form of its own.
#[cfg(feature = "defmt")]
impl defmt::Format for CodeKeysError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// A contents error in the sealed keys' terms (lengths with the tag).
fn from_contents(e: ContentsError) -> CodeKeysError {
    match e {
        ContentsError::TooManyEntries { count } => CodeKeysError::TooManyEntries { count },
        ContentsError::DuplicateEntry { scope, epoch } => {
            CodeKeysError::DuplicateEntry { scope, epoch }
        }
        ContentsError::Truncated { expected, got } => CodeKeysError::Truncated {
            expected: expected + TAG_LEN,
            got: got + TAG_LEN,
        },
        ContentsError::TooLong { len, max } => CodeKeysError::TooLong {
            len: len + TAG_LEN,
            max: max + TAG_LEN,
        },
        ContentsError::NotCanonical => CodeKeysError::NotCanonical,
    }
}

/// Seals `keys` for a code whose secret is `secret` and whose admission is `admission` (its
/// exact bytes, signature included).
pub fn seal_code_keys(
    keys: &KeySet,
    secret: &CodeSecret,
    admission: &[u8],
) -> Result<Vec<u8>, CodeKeysError> {
    let mut out = Vec::new();
    write_contents(keys, &mut out).map_err(from_contents)?;
    // The contents are at most MAX_CONTENTS_LEN bytes, far below AES-GCM's limit.
    let tag = aes_256_gcm_seal(&code_key(secret, admission), &[0; 12], &[], &mut out)
        .expect("a key set's size");
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Checks that `len` bytes can be sealed keys at all (a decoder of codes refuses any other length
/// before it keeps them).
pub fn check_sealed_len(len: usize) -> Result<(), CodeKeysError> {
    if len < MIN_LEN {
        return Err(CodeKeysError::Truncated {
            expected: MIN_LEN,
            got: len,
        });
    }
    if len > MAX_LEN {
        return Err(CodeKeysError::TooLong { len, max: MAX_LEN });
    }
    check_contents_len(len - TAG_LEN).map_err(from_contents)
}

/// Opens a code's sealed keys with its secret and its admission's bytes. Checks the length
/// before allocating anything (a copy of `sealed`, no more), then the tag, then the contents'
/// canonical form.
pub fn open_code_keys(
    sealed: &[u8],
    secret: &CodeSecret,
    admission: &[u8],
) -> Result<KeySet, CodeKeysError> {
    let len = sealed.len();
    check_sealed_len(len)?;
    let (ciphertext, tag) = sealed.split_at(len - TAG_LEN);
    let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN from the end");
    // Wiped once read: it holds the keys in the clear.
    let mut contents = Zeroizing::new(ciphertext.to_vec());
    aes_256_gcm_open(
        &code_key(secret, admission),
        &[0; 12],
        &[],
        &mut contents,
        tag,
    )
    .map_err(|_| CodeKeysError::TagMismatch)?;
    read_contents(&contents).map_err(from_contents)
}

/// K (see the module doc), wiped when dropped.
fn code_key(secret: &CodeSecret, admission: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let info: [u8; 32] = Sha256::digest(admission).into();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    // 32 bytes is one HKDF block.
    hkdf_sha256(KDF_SALT, secret.as_bytes(), &info, &mut *key).expect("32 bytes of HKDF output");
    key
}
