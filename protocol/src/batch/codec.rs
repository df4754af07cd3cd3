//! Encoding and decoding of batches (layout: `docs/wire-format.md`).
//!
//! PLACEHOLDER SIGNATURES: the bodies are being written now (wire-format work of the foundation
//! issue); until then every call panics. Do not rely on this module yet.

use super::{Batch, BatchHeader, Compression, TableChanges, TableSchema};
use crate::site::SiteId;
use crate::vector::SeqRange;
use alloc::vec::Vec;

/// Limits a decoder enforces before allocating.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest encoded batch accepted.
    pub max_batch_bytes: usize,
    /// Largest uncompressed body accepted.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_bytes: 64 << 20,
            max_body_bytes: 256 << 20,
        }
    }
}

/// Encodes a batch. Computes `base_hlc`, `body_len` and `body_sha256`.
pub fn encode(
    _origin: SiteId,
    _range: SeqRange,
    _tables: Vec<TableSchema>,
    _changes: &[TableChanges],
    _compression: Compression,
) -> Vec<u8> {
    unimplemented!("batch encoding is being written")
}

/// Decodes the header only (routing: hub and mailbox never read bodies).
pub fn decode_header(_bytes: &[u8], _limits: &Limits) -> Result<BatchHeader, DecodeError> {
    unimplemented!("batch decoding is being written")
}

/// Decodes and verifies a whole batch (hash, lengths, every value).
pub fn decode(_bytes: &[u8], _limits: &Limits) -> Result<Batch, DecodeError> {
    unimplemented!("batch decoding is being written")
}

/// Why a batch could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Placeholder until the codec lands.
    Unimplemented,
}
