//! A batch's signature: its origin's static key signs the clear header (docs/design.md section
//! 10), which names the body as sent by length and SHA-256; so one signature covers the whole
//! batch, and a relay checks it without reading the body.
//!
//! The signed digest is SHA-256 of [`DOMAIN`] followed by the batch's bytes from the magic to the
//! end of the clear header. Every relay and receiver verifies it against the key its directory
//! holds for the origin before storing or applying; nobody else's key, not even a relay's, makes
//! it valid.

use super::codec::{self, DecodeError};
use super::BatchHeader;
use crate::handshake::{Keypair, PublicKey};
pub use crate::signing::{SignatureError, SIGNATURE_LEN};
use sha2::{Digest, Sha256};

/// The label that makes a batch signature mean "this batch" and nothing else.
pub const DOMAIN: &[u8] = b"outpost batch v2\n";

/// The digest a batch's signature covers, from the bytes up to the end of its clear header.
pub(crate) fn signed_digest(magic_to_clear_end: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(magic_to_clear_end);
    h.finalize().into()
}

/// Signs an encoded batch in place with its origin's key (its signature slot, zeros or an older
/// signature, is overwritten). Only the clear header is read.
pub fn sign(batch: &mut [u8], key: &Keypair) -> Result<(), DecodeError> {
    let clear_end = codec::clear_header_end(batch)?;
    let digest = signed_digest(&batch[..clear_end]);
    batch[clear_end..clear_end + SIGNATURE_LEN]
        .copy_from_slice(&crate::signing::sign_digest(&digest, key));
    Ok(())
}

/// Checks a decoded batch's signature against its origin's key.
pub fn verify(header: &BatchHeader, origin_key: &PublicKey) -> Result<(), SignatureError> {
    let Some(signature) = &header.signature else {
        return Err(SignatureError::Missing);
    };
    crate::signing::verify_digest(&header.signed_digest, signature, origin_key)
}
