//! Accepted batches applied together: a store that can ([`TenantStore::apply_group`], the
//! SQLite tenant's `outpost_apply_many`, the PostgreSQL tenant's `apply_many`) applies up to
//! [`GroupLimit`] of them in one transaction, as a device applies its pulled chunks (the
//! engine's `sync/store.rs`). One commit per batch wrote every index page the batch dirtied to
//! the WAL and fsync'd it, and random UUID keys dirty most of them in every batch
//! (docs/performance.md, "Cloud": 130 commits became 10, the cloud's apply 20% less CPU); on
//! PostgreSQL each transaction also pays its fixed statements (the apply lock, the clock row, the
//! back office's writes folded, the statements prepared again).
//!
//! The SQLite engine decodes the batches again from their bytes; the PostgreSQL store applies
//! the copy the judge decoded (and opened, when sealed), which the group keeps when
//! [`GroupLimit::decoded`] says so.
//!
//! A group is all or nothing. When it fails, its batches are applied again one at a time, so the
//! round records the same outcome as if each had been applied alone: the batches before the one
//! that fails are applied, the one that fails stops its origin for the round, other origins go
//! on.

use super::TenantStore;
use outpost_protocol::batch::Batch;
use outpost_protocol::{SeqRange, SiteId};

/// How much a group holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimit {
    /// Batches.
    pub batches: usize,
    /// Encoded bytes (a larger batch goes alone).
    pub bytes: usize,
    /// Whether the store applies the judged, decoded batches ([`Grouped::batch`]) rather than
    /// decoding their bytes again.
    pub decoded: bool,
}

/// One batch of a group as the store gets it.
#[derive(Clone, Copy)]
pub struct Grouped<'a> {
    /// The encoded batch, as the mailbox holds it.
    pub bytes: &'a [u8],
    /// The batch decoded (opened when sealed) by the judge, when [`GroupLimit::decoded`].
    pub batch: Option<&'a Batch>,
}

/// An accepted batch waiting for its group's transaction.
pub(crate) struct Pending {
    /// Its origin.
    pub origin: SiteId,
    /// Its stream.
    pub scope: String,
    /// Its seqs.
    pub range: SeqRange,
    /// The encoded batch, as the mailbox holds it.
    pub bytes: Vec<u8>,
    /// The judged copy, decoded, when the store applies that ([`GroupLimit::decoded`]).
    pub decoded: Option<Box<Batch>>,
}

impl Pending {
    /// The batch as [`TenantStore::apply_group`] takes it.
    pub fn grouped(&self) -> Grouped<'_> {
        Grouped {
            bytes: &self.bytes,
            batch: self.decoded.as_deref(),
        }
    }
}

/// The accepted batches not applied yet, in the round's order.
pub(crate) struct Group {
    limit: GroupLimit,
    pending: Vec<Pending>,
    bytes: usize,
}

impl Group {
    /// An empty group that holds at most `limit`.
    pub fn new(limit: GroupLimit) -> Group {
        Group {
            limit,
            pending: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a batch; `true` when the group is full now and must be applied.
    pub fn push(&mut self, batch: Pending) -> bool {
        self.bytes += batch.bytes.len();
        self.pending.push(batch);
        self.pending.len() >= self.limit.batches || self.bytes >= self.limit.bytes
    }

    /// Whether the store applies the decoded batches ([`GroupLimit::decoded`]).
    pub fn keeps_decoded(&self) -> bool {
        self.limit.decoded
    }

    /// Takes the batches out, leaving the group empty.
    pub fn take(&mut self) -> Vec<Pending> {
        self.bytes = 0;
        std::mem::take(&mut self.pending)
    }
}

/// Whether `store` applies groups, and how large.
pub(crate) fn limit(store: &impl TenantStore) -> Option<GroupLimit> {
    store.group_limit().filter(|l| l.batches > 1)
}
