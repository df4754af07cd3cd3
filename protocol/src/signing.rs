//! Signatures by a site's static key: ECDSA over P-256 and SHA-256, with deterministic nonces
//! (RFC 6979), so the same content signed by the same key gives the same bytes (golden tests) and
//! signing needs no randomness (a device without a random source still signs).
//!
//! Callers sign a 32-byte digest that they compute with their own domain label, so a signature
//! made for one purpose (a batch's clear header, a control entry) is never valid for another.
//! Signatures are `r ‖ s`, 64 bytes; verification refuses high-`s` forms too (the one encoding
//! per signature that `p256` produces), so a signature cannot be altered into another valid one.

use crate::handshake::{Keypair, PublicKey};
use core::fmt;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

/// Bytes of a signature (`r ‖ s`).
pub const SIGNATURE_LEN: usize = 64;

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// There is no signature (an unsigned batch).
    Missing,
    /// The bytes are not a signature, or it was not made by this key over this content.
    Invalid,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::Missing => "not signed",
            SignatureError::Invalid => "the signature does not verify with the origin's key",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SignatureError {}

/// Signs `digest` with `key`.
pub fn sign_digest(digest: &[u8; 32], key: &Keypair) -> [u8; SIGNATURE_LEN] {
    // A `Keypair` only ever holds a valid scalar (checked when it was made).
    let sk = SigningKey::from_slice(key.secret_bytes()).expect("a Keypair holds a valid scalar");
    let sig: Signature = sk
        .sign_prehash(digest)
        .expect("a 32-byte prehash is always accepted");
    // `p256` signs with low `s` already; normalizing keeps that true whatever its version does.
    let sig = sig.normalize_s().unwrap_or(sig);
    sig.to_bytes().into()
}

/// Checks that `signature` was made by `key` over `digest` (a high-`s` form is refused).
pub fn verify_digest(
    digest: &[u8; 32],
    signature: &[u8; SIGNATURE_LEN],
    key: &PublicKey,
) -> Result<(), SignatureError> {
    let vk = VerifyingKey::from_sec1_bytes(key.as_bytes()).map_err(|_| SignatureError::Invalid)?;
    let sig = Signature::from_slice(signature).map_err(|_| SignatureError::Invalid)?;
    if sig.normalize_s().is_some() {
        return Err(SignatureError::Invalid);
    }
    vk.verify_prehash(digest, &sig)
        .map_err(|_| SignatureError::Invalid)
}
