//! A scope's sealing key: 32 bytes for AES-256-GCM, and the epoch it belongs to.

use super::primitives::KEY_LEN;
use core::fmt;
use zeroize::Zeroize;

/// A scope's AES-256-GCM key of one epoch (docs/design.md section 10, "Sealed batches"). Epochs
/// count from 1 per scope; 0 in a batch's clear header means "not sealed", so no key has it. The
/// key bytes never appear in `Debug` and are wiped when the key is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopeKey {
    epoch: u32,
    key: [u8; KEY_LEN],
}

impl ScopeKey {
    /// The key of `epoch` (from 1; `None` for 0, which means "not sealed").
    pub fn new(epoch: u32, key: [u8; KEY_LEN]) -> Option<ScopeKey> {
        (epoch != 0).then_some(ScopeKey { epoch, key })
    }

    /// Its epoch (at least 1).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The key bytes, for storing it (as carefully as an identity key) and wrapping it.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl Drop for ScopeKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}
