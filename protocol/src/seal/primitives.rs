//! The primitive steps sealing and key envelopes are built from, each one call into a maintained
//! RustCrypto crate, public so that `protocol/tests/seal_wycheproof.rs` runs the Wycheproof
//! vectors through exactly these functions (not through the crates directly).
//!
//! - [`aes_256_gcm_seal`] / [`aes_256_gcm_open`]: AES-256-GCM (`aes-gcm` 0.10), 96-bit nonce,
//!   128-bit tag, in place.
//! - [`ecdh`]: P-256 ECDH (`p256`), the shared secret's x coordinate.
//! - [`hkdf_sha256`]: HKDF-SHA256 (RFC 5869, `hkdf` 0.12), extract then expand.
//! - [`hmac_sha256`]: HMAC-SHA256 (`hmac` 0.12).

use crate::handshake::{Keypair, PublicKey};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use core::fmt;
use hmac::Mac;
use sha2::Sha256;

/// Bytes of an AES-256-GCM key.
pub const KEY_LEN: usize = 32;
/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// A ciphertext that does not authenticate: altered, or under another key, nonce or associated
/// data (AES-GCM cannot tell which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

impl fmt::Display for Unauthentic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ciphertext does not authenticate (altered, or another key)")
    }
}

/// More output than HKDF-SHA256 can give (255 × 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputTooLong;

/// Encrypts `buf` in place under `key` and `nonce`, authenticating `aad` too; returns the tag.
/// `None` only for a buffer beyond AES-GCM's limit (2^36 - 32 bytes).
pub fn aes_256_gcm_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Option<[u8; TAG_LEN]> {
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(nonce.into(), aad, buf)
        .ok()?;
    Some(tag.into())
}

/// Decrypts `buf` in place when `tag` authenticates it and `aad` under `key` and `nonce`; on
/// failure `buf` is left as it was (the ciphertext).
pub fn aes_256_gcm_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), Unauthentic> {
    Aes256Gcm::new(key.into())
        .decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
        .map_err(|_| Unauthentic)
}

/// P-256 Diffie-Hellman: the x coordinate of `secret` · `public`. Both halves are validated when
/// they are made ([`Keypair::from_secret`], [`PublicKey::from_sec1`]), so it cannot fail.
pub fn ecdh(secret: &Keypair, public: &PublicKey) -> [u8; 32] {
    // A `Keypair` holds a valid scalar and a `PublicKey` a point on the curve (checked when made).
    let sk = p256::SecretKey::from_slice(secret.secret_bytes()).expect("a Keypair's scalar");
    let pk = p256::PublicKey::from_sec1_bytes(public.as_bytes()).expect("a PublicKey's point");
    let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
    (*shared.raw_secret_bytes()).into()
}

/// HKDF-SHA256: extract with `salt` (empty = 32 zero bytes, as RFC 5869 says), expand with
/// `info` into all of `okm`.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    okm: &mut [u8],
) -> Result<(), OutputTooLong> {
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm)
        .map_err(|_| OutputTooLong)
}

/// HMAC-SHA256 of `msg` under `key` (any length).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length (a long one is hashed first).
    let mut mac =
        <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}
