//! Sealed table settings (docs/design.md section 10, S5): in a sealed tenant the cloud's table
//! settings (table and column names, direction, scope rule) travel in the control stream sealed
//! ([`crate::control::ControlItem::SealedTable`]), so a hub's control stream names no table or
//! column. Every device and the cloud hold the tenant's digest key, from which the settings key
//! is derived; they open each entry into the [`TableEntry`] an unsealed tenant sends in clear.
//!
//! ```text
//! sealed = nonce (12) ‖ AES-256-GCM(postcard(TableEntry)) ‖ tag (16)
//! key    = HKDF-SHA256(salt = "", ikm = digest key, info = "outpost sealed table settings v1")
//! aad    = "outpost sealed table v1\n"
//! ```
//!
//! **Contract.** [`open_table`] accepts any bytes and returns a typed error; it reads at most
//! [`crate::control::MAX_ENTRY_BYTES`], and the opened entry passes the checks a clear `Table`
//! entry passes ([`crate::control::decode_entry`]).

use super::digest::DigestKey;
use super::primitives::{aes_256_gcm_open, aes_256_gcm_seal, hkdf_sha256, NONCE_LEN, TAG_LEN};
use crate::control::TableEntry;
use alloc::vec::Vec;
use core::fmt;
use zeroize::Zeroize;

/// The HKDF `info` of the settings key.
pub const TABLE_KEY_INFO: &[u8] = b"outpost sealed table settings v1";
/// What the tag authenticates besides the entry.
pub const TABLE_AAD: &[u8] = b"outpost sealed table v1\n";

/// Why sealed table settings do not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSealError {
    /// Shorter than a nonce and a tag, or longer than a control entry.
    BadLength,
    /// The tag does not authenticate them under this tenant's key (another tenant's, or altered).
    Unauthentic,
    /// They authenticate but do not hold a valid table entry.
    Malformed,
}

impl fmt::Display for TableSealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableSealError::BadLength => "sealed table settings have an impossible length",
            TableSealError::Unauthentic => {
                "sealed table settings do not open under this tenant's key"
            }
            TableSealError::Malformed => "sealed table settings hold no valid table entry",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TableSealError {}

fn settings_key(dk: &DigestKey) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf_sha256(b"", dk.as_bytes(), TABLE_KEY_INFO, &mut key).expect("32 bytes of HKDF output");
    key
}

/// `entry` sealed under the settings key of `dk`, with a fresh random `nonce`.
pub fn seal_table(dk: &DigestKey, entry: &TableEntry, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
    let mut key = settings_key(dk);
    let mut out = nonce.to_vec();
    let start = out.len();
    out.extend(postcard::to_allocvec(entry).expect("postcard into a Vec"));
    let tag = aes_256_gcm_seal(&key, &nonce, TABLE_AAD, &mut out[start..])
        .expect("a table entry is far below AES-GCM's limit");
    out.extend_from_slice(&tag);
    key.zeroize();
    out
}

/// Opens sealed table settings with the settings key of `dk`.
pub fn open_table(dk: &DigestKey, sealed: &[u8]) -> Result<TableEntry, TableSealError> {
    if sealed.len() < NONCE_LEN + TAG_LEN || sealed.len() > crate::control::MAX_ENTRY_BYTES {
        return Err(TableSealError::BadLength);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN from the end");
    let mut key = settings_key(dk);
    let mut plain = ciphertext.to_vec();
    let opened = aes_256_gcm_open(&key, nonce, TABLE_AAD, &mut plain, tag);
    key.zeroize();
    opened.map_err(|_| TableSealError::Unauthentic)?;
    let entry: TableEntry = postcard::from_bytes(&plain).map_err(|_| TableSealError::Malformed)?;
    if !crate::control::table_entry_ok(&entry) {
        return Err(TableSealError::Malformed);
    }
    Ok(entry)
}
