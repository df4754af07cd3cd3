//! Sealed bodies: a batch's body as sent, encrypted under its scope's key at push time, with
//! the stream's scope name in front of it: the clear header names the scope by its digest only
//! (`DigestKey::wire_scope`), and a holder of the key learns the name by opening the body.

use super::digest::DigestKey;
use super::key::ScopeKey;
use super::primitives::{aes_256_gcm_open, aes_256_gcm_seal, NONCE_LEN, TAG_LEN};
use crate::batch::codec::{self, DecodeError, Limits, FORMAT, MAGIC};
use crate::batch::signature::SIGNATURE_LEN;
use crate::batch::{Batch, BatchHeader};
use alloc::vec::Vec;
use core::fmt;
use sha2::{Digest, Sha256};

/// What sealing adds to a body besides its scope name: its nonce and its tag (28 bytes). The
/// sealed plaintext starts with the scope name (one length byte, then at most 64 bytes), and
/// the clear header names the scope by its 32-character digest instead and grows by the key
/// epoch's and `sent_len`'s varints: a sealed batch is at most 28 + 1 + 32 + 5 = 66 bytes
/// larger than the unsealed one (`stream` 32 characters and the name inside for any name).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// What a sealed body's tag authenticates besides the body: this label, then the clear header
/// as sealed but with `sent_len` 0 and `sent_sha256` zeros (those two name the sealed bytes
/// themselves, and the signature covers them).
pub const AAD_DOMAIN: &[u8] = b"outpost sealed body v1\n";

/// Why a batch could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The batch is malformed: its clear header, its lengths or its hash (sealing or opening),
    /// or the opened body (a sealed body that authenticates but does not decode: its writer is
    /// at fault, the batch is quarantined like any malformed one).
    Decode(DecodeError),
    /// Sealing: the batch is sealed already.
    AlreadySealed {
        /// The epoch it is sealed under.
        epoch: u32,
    },
    /// Opening: the batch is not sealed (key epoch 0); decode it with `codec::decode`.
    NotSealed,
    /// Opening: no key of the batch's epoch is held for its stream (not received yet: keep the
    /// batch and open it when the key arrives).
    NoKey {
        /// The batch's key epoch.
        epoch: u32,
    },
    /// Opening: the key given for the batch is of another epoch.
    WrongEpoch {
        /// The batch's key epoch.
        batch: u32,
        /// The key's epoch.
        key: u32,
    },
    /// Opening: the sealed body does not authenticate under the key of its epoch: the body or
    /// its clear header was altered, or it was sealed under another key.
    TagMismatch {
        /// The batch's key epoch.
        epoch: u32,
    },
    /// Sealing: the sealed body would exceed 4 GiB (`sent_len` is a `u32`).
    TooLarge,
    /// Sealing: the batch's stream is no scope name (`scope::check_name`) nor the unscoped `""`.
    BadStream,
    /// Opening: the scope name sealed inside is malformed, or its digest is not the clear
    /// header's stream (a writer holding the key named another scope inside than outside).
    ScopeMismatch,
}

impl From<DecodeError> for SealError {
    fn from(e: DecodeError) -> Self {
        SealError::Decode(e)
    }
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Decode(e) => e.fmt(f),
            SealError::AlreadySealed { epoch } => {
                write!(f, "batch is sealed already (key epoch {epoch})")
            }
            SealError::NotSealed => {
                f.write_str("batch is not sealed (key epoch 0): decode it without a key")
            }
            SealError::NoKey { epoch } => write!(
                f,
                "no key of epoch {epoch} for this batch's scope: keep the batch until it arrives"
            ),
            SealError::WrongEpoch { batch, key } => write!(
                f,
                "batch is sealed under key epoch {batch}, the key given is of epoch {key}"
            ),
            SealError::TagMismatch { epoch } => write!(
                f,
                "sealed body does not authenticate under the scope's key of epoch {epoch}: the \
                 body or its clear header was altered, or it was sealed under another key"
            ),
            SealError::TooLarge => f.write_str("sealed batch body would exceed 4 GiB"),
            SealError::BadStream => {
                f.write_str("the batch's stream is not a scope name: it cannot be sealed")
            }
            SealError::ScopeMismatch => f.write_str(
                "the scope name sealed inside the body is malformed or is not the one its clear \
                 header's stream digest names",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SealError {}

/// What sealing reads: a batch made by this build's encoder, however large (it is checked
/// whole, hash included, so a damaged body is never sealed into an authentic one).
const ANY_SIZE: Limits = Limits {
    max_batch_bytes: usize::MAX,
    max_body_bytes: usize::MAX,
};

/// Seals an encoded, unsealed batch (signed or not) under its stream's key: the body as sent
/// (everything after the signature), with the stream's scope name in front (one length byte,
/// then the name), becomes `nonce ‖ AES-256-GCM(name ‖ body) ‖ tag`, authenticated with the
/// clear header ([`AAD_DOMAIN`]); the clear header names the stream by its wire id
/// ([`DigestKey::wire_scope`]) and gets the key's epoch and the sealed body's length and
/// SHA-256. The result is **unsigned**: sign it with [`crate::batch::signature::sign`], so the
/// signature covers the sealed body's hash.
///
/// `nonce` must be fresh random bytes for every call (a repeated nonce under one key gives away
/// both bodies' XOR and lets a holder of the two forge tags): 2^32 sealings per key keep the
/// chance of a repeat below 2^-32.
pub fn seal_batch(
    batch: &[u8],
    key: &ScopeKey,
    digest_key: &DigestKey,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, SealError> {
    let mut header = codec::verify(batch, &ANY_SIZE)?;
    if header.key_epoch != 0 {
        return Err(SealError::AlreadySealed {
            epoch: header.key_epoch,
        });
    }
    let name = core::mem::take(&mut header.stream);
    if !name.is_empty() && crate::scope::check_name(&name).is_err() {
        return Err(SealError::BadStream);
    }
    header.stream = digest_key.wire_scope(&name);
    let sent = &batch[batch.len() - header.sent_len as usize..];
    let plain_len = 1 + name.len() + sent.len();
    let sealed_len = u32::try_from(plain_len + SEAL_OVERHEAD).map_err(|_| SealError::TooLarge)?;
    let aad = aad(&header, key.epoch());
    // The clear header's length depends on `sent_len` only (the hash is 32 bytes whatever it
    // is), so the batch is written once and its hash filled in last.
    let clear = codec::clear_header_bytes(&header, key.epoch(), sealed_len, [0; 32]);
    let start = MAGIC.len() + 1 + clear.len() + SIGNATURE_LEN;
    let mut out = Vec::with_capacity(start + sealed_len as usize);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&clear);
    out.extend_from_slice(&[0; SIGNATURE_LEN]);
    out.extend_from_slice(&nonce);
    // `check_name` bounds a name to 64 bytes: its length is one byte.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(sent);
    let tag = aes_256_gcm_seal(key.as_bytes(), &nonce, &aad, &mut out[start + NONCE_LEN..])
        .ok_or(SealError::TooLarge)?;
    out.extend_from_slice(&tag);
    let hash: [u8; 32] = Sha256::digest(&out[start..]).into();
    out[start - SIGNATURE_LEN - 32..start - SIGNATURE_LEN].copy_from_slice(&hash);
    Ok(out)
}

/// A sealed batch opened: the batch (its header the sealed batch's clear one: stream the wire
/// id, key epoch, `sent_len`, hash and signature, so [`crate::batch::signature::verify`] works
/// on it; with the opened body's payload fields) and the scope name sealed inside, whose wire
/// id is the header's stream (`""` for the unscoped stream).
#[derive(Clone, PartialEq, Debug)]
pub struct Opened {
    /// The batch.
    pub batch: Batch,
    /// Its stream's scope name.
    pub scope: alloc::string::String,
}

/// Opens and decodes a sealed batch: checks it as a relay does ([`codec::verify`]: clear header,
/// lengths, the sealed body's hash), asks `keys` for the key of its stream (the wire id) and
/// epoch, checks the tag and that the scope name sealed inside has the clear stream as its
/// wire id under `digest_key`, then decodes the opened body with the same checks and the same
/// memory budget as [`codec::decode`] (the budget of the sealed batch's length, less the
/// opened copy).
///
/// Nothing but the tag is checked cryptographically: callers verify the signature on the sealed
/// form first, as for any batch.
pub fn decode_sealed(
    bytes: &[u8],
    limits: &Limits,
    digest_key: &DigestKey,
    keys: impl FnOnce(&str, u32) -> Option<ScopeKey>,
) -> Result<Opened, SealError> {
    let clear = codec::verify(bytes, limits)?;
    let epoch = clear.key_epoch;
    if epoch == 0 {
        return Err(SealError::NotSealed);
    }
    let key = keys(&clear.stream, epoch).ok_or(SealError::NoKey { epoch })?;
    if key.epoch() != epoch {
        return Err(SealError::WrongEpoch {
            batch: epoch,
            key: key.epoch(),
        });
    }
    // `verify` checked the body holds at least a nonce and a tag.
    let sealed = &bytes[bytes.len() - clear.sent_len as usize..];
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN from the end");
    // This copy is the one allocation opening adds; `decode_opened` charges it to the budget.
    let mut opened = ciphertext.to_vec();
    aes_256_gcm_open(key.as_bytes(), nonce, &aad(&clear, epoch), &mut opened, tag)
        .map_err(|_| SealError::TagMismatch { epoch })?;
    let scope = sealed_scope(&opened, digest_key, &clear.stream)?;
    let body_start = 1 + scope.len();
    let batch = codec::decode_opened(clear, &opened[body_start..], bytes.len(), limits)?;
    Ok(Opened { batch, scope })
}

/// The scope name in front of an opened body, checked against the clear header's `stream`.
fn sealed_scope(
    opened: &[u8],
    digest_key: &DigestKey,
    stream: &str,
) -> Result<alloc::string::String, SealError> {
    let (&len, rest) = opened.split_first().ok_or(SealError::ScopeMismatch)?;
    let len = usize::from(len);
    if len > crate::scope::MAX_SCOPE_LEN || rest.len() < len {
        return Err(SealError::ScopeMismatch);
    }
    let name = core::str::from_utf8(&rest[..len]).map_err(|_| SealError::ScopeMismatch)?;
    if !name.is_empty() && crate::scope::check_name(name).is_err() {
        return Err(SealError::ScopeMismatch);
    }
    if digest_key.wire_scope(name) != stream {
        return Err(SealError::ScopeMismatch);
    }
    Ok(name.into())
}

/// The associated data of a body sealed under `epoch` with `header`'s clear fields.
fn aad(header: &BatchHeader, epoch: u32) -> Vec<u8> {
    let clear = codec::clear_header_bytes(header, epoch, 0, [0; 32]);
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + clear.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(&clear);
    aad
}
