//! # outpost-mailbox
//!
//! The durable batch store and router shared by the hub and the cloud. It routes by batch
//! **headers** only (origin, seq range, body hash) and never interprets app data: bodies are
//! stored and served as the bytes received. Before storing, it checks each batch with
//! `outpost_protocol::batch::codec::verify` (header, body length, SHA-256 of the body; rows are
//! never parsed), so it never acknowledges or relays a batch no peer could apply.
//!
//! ## What it guarantees
//! - **Durable acks.** [`Mailbox::commit`] writes a set of batches in one SQLite transaction and
//!   returns only after it is fsynced (WAL mode, `synchronous=FULL`): whatever a commit reported
//!   survives `kill -9` and power loss, and a failed or interrupted commit stores nothing.
//! - **Idempotence.** Storing a batch every seq of which is already held changes nothing and
//!   still reports whether it is covered, so a retried push gets the same answer.
//! - **Coverage, not possession.** [`Mailbox::vector`] is per origin the contiguous coverage of
//!   the held ranges. Batches beyond a gap are kept (nothing is thrown away) but neither counted nor
//!   served until the gap fills.
//! - **Routing.** [`Mailbox::batches_for`] streams what a peer's vector lacks, per origin in seq
//!   order, never the requester's own origin, and never a batch the peer's vector covers. Among
//!   overlapping held batches it picks the way that repeats the fewest seqs (none when the held
//!   batches chain without overlap).
//!
//! - **Nothing damaged is served.** Every batch read to be served (a pull, the uplink's
//!   export) is checked first: its bytes against the body hash its clear header states and the
//!   header against the row it was stored under. A damaged one is removed in one transaction
//!   with its stream's coverage recomputed and the event counted ([`MailboxStatus::damaged`]);
//!   the pull goes on without the rest of that stream, and the range is fetched again from
//!   whoever holds it (the `damage` module).
//!
//! - **Client side.** [`MailboxClient`] is the protocol's `ClientStore` over a mailbox: the hub's
//!   uplink pushes what the cloud's vector lacks (never the cloud's own origin) and stores what
//!   it pulls.
//! - **Control streams** (`control` module): the accepted control entries and the key directory
//!   they make with the owner's roots ([`ControlOwner`]); both stores serve, take and check
//!   them, and verify relayed batches with the directory's keys.
//! - **The time bound's figures** (`clock_bound` module): the highest clock of any batch stored,
//!   raised in the transaction that stores it, which the relay's session admits a device's push
//!   up to a second past whatever its trusted time says; and the pushes refused as stamped too
//!   far ahead ([`Mailbox::clock_admission`]).
//! - **Id blocks.** [`Mailbox::grant_ids`] grants numbers of named sequences to peers, as the
//!   root (the cloud) or from a pool the uplink refills (a hub with a cloud), durably and
//!   idempotently per (peer, request id); see the `ids` module.
//!
//! ## Why SQLite rather than an append-only log
//! An append-only log with checksums would also survive power loss with one fsync per commit. But
//! the mailbox also needs an index by `(origin, lo, hi)` to route, an atomic commit of a *set* of
//! batches (a push is all-or-nothing), recovery of a torn tail, and a way to check the file.
//! SQLite in WAL mode gives all four, tested far beyond what we would write: a commit appends
//! pages to the WAL and fsyncs it once (the same cost as a log append), readers never block the
//! writer, and `PRAGMA integrity_check` plus [`Mailbox::check`] verify a file after a crash.
//!
//! ## What does not work yet
//! No pruning (the hub keeps every batch until cloud snapshots exist).
#![warn(missing_docs)]

mod behind;
mod client_store;
mod clock_bound;
mod control;
mod damage;
mod drains;
mod error;
mod ids;
mod mailbox;
mod plan;
mod scope_counts;
mod scope_keys;
mod server_store;
mod voids;

pub use behind::Behind;
pub use client_store::{ExportPlan, MailboxClient, Moved, PUSH_BUDGET};
pub use clock_bound::ClockAdmission;
pub use control::{ControlOwner, ControlReport};
pub use error::MailboxError;
pub use ids::{IdMode, IdQuota, IdSequenceStatus, DEVICE_ID_QUOTA, HUB_BLOCK};
pub use mailbox::{
    Batches, Mailbox, MailboxStatus, OriginStatus, PullPlan, PushRecord, Receipt, StagedBatch,
    StoredBatch, COMMIT_CHANNEL,
};
pub use outpost_protocol::batch::codec::Limits;
pub use scope_counts::{scope_counts, ScopeCount};
