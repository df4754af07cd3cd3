//! The store-agnostic apply core (issue 21, DESIGN section 11): a peer's batch merged into any
//! store through the [`Store`] trait, deciding with `outpost_protocol::merge` exactly as the
//! SQLite engine's `outpost_apply` does (`sqlite-ext/src/apply.rs`, whose rules are copied here
//! case by case and cite it). The PostgreSQL tenant's store is `outpost_cloud::postgres::store`;
//! a differential test (`cloud/tests/cloud_postgres_apply.rs`) runs the same random batches
//! through the engine and through this core and compares every row, cell, quarantine entry and
//! conflict.
//!
//! What it decides, as the engine does:
//! - **last-writer-wins** cells (`lww`, `row_lww`) by `(epoch, hlc, site)`;
//! - **counters**: per-site contributions per epoch, the value their sum in the row's epoch;
//! - **review** cells: siblings, a conflict record while more than one, the shown value the
//!   greatest; siblings of earlier epochs dropped when the row's causal length grows;
//! - **existence** by causal length: an update never revives a deleted row, a re-insert starts
//!   a new epoch in which earlier cells are dead;
//! - **parents first**: rows that end alive applied with tables sorted by foreign keys, deleted
//!   ones children first; a row referencing a parent the store lacks is quarantined;
//! - **quarantine** (with the engine's reason texts) of rows of unknown tables, of tables
//!   declared with another scope rule, with another key shape, with cells of unknown columns
//!   (those cells only), with a payload of another kind than the column's strategy, or refused
//!   by the store (a constraint);
//! - **vectors**: a batch whose range is held changes nothing, one past a gap is refused;
//!   the largest clock received is observed;
//! - **UNIQUE collisions** (`unique.rs`, the engine's `apply/unique.rs`): the row whose latest
//!   write to a UNIQUE column is earlier by `(epoch, hlc, site)` keeps the value whichever
//!   arrives first, the later is held aside (its values in a tombstone, one quarantine entry per
//!   writing site with the engine's reason), and comes back after every apply once its value
//!   is free ([`Store::uniques`] and the calls after it); the rows of tracked tables
//!   referencing a row held aside are held aside with it and come back after it (`cascade.rs`,
//!   [`Store::referencing`]); a claim whose own write the store refuses (a CHECK) leaves its
//!   holders in their table and is set aside as that write, as the engine's SQLite meets the
//!   CHECK first;
//! - **parent restore** (`restore.rs`, the engine's `apply/restore.rs`): a delete of a row live
//!   children reference keeps the row, and a child arriving for a parent deleted here brings
//!   the parent back from its tombstone (a deleted row's last values, kept for every table),
//!   both re-sent as the store's own write
//!   ([`Store::restore`]; a store that cannot make one keeps the row and quarantines the change);
//!   a parent back from its tombstone whose UNIQUE values another row holds now is written
//!   all the same (the holders make way for the store's write), then held aside when a holder
//!   ranks earlier, as the engine's restore claims after its local write;
//! - the **quarantine retry** (`retry.rs`, the engine's `apply/retry.rs`): after each apply,
//!   rows held aside claim their values again and every quarantine entry is merged again, going
//!   once its change applies (a parent that arrived, a value freed), in the apply that removed
//!   its cause ([`Store::quarantined`]).
//!
//! **Not in the core yet** (the engine does them; a store of the core does not):
//! - the clock of a restore after the engine's strict redo: the engine's redo of a batch whose
//!   first run failed a foreign key at commit ticks after that run observed the batch's
//!   clock; the core's restore ticks before (the rows it writes are the same).
//!
//! **Left out on purpose**: a *partial* UNIQUE index (`CREATE UNIQUE INDEX ... WHERE ...`),
//! which the engine reads as one (only rows its predicate selects collide), is not a
//! [`Unique`] here. No peer can put one on the cloud's tables, the one user of the core: both
//! tenants make their tables from batch headers, which carry no UNIQUE at all
//! (`cloud/src/schema.rs` on SQLite, `cloud/src/postgres/app_tables.rs`); only an operator can
//! add one. PostgreSQL's store leaves such an index out of [`Store::uniques`], so a write
//! colliding on one is refused by PostgreSQL and quarantined with its message (the careful
//! redo of `cloud/src/postgres/apply.rs`), where the engine holds the later row aside: an
//! operator who wants rows held aside by rank adds a whole UNIQUE index, on both tenants.
//!
//! **Scopes** (DESIGN section 10, "Moves" and "Holding a row"). Of what the engine does with
//! scopes, only transfers concern a store of this core, whose one user is the cloud: the scope
//! authority, which holds every scope.
//! - *Transfers* are the authority's alone: after a merge, a row of a scoped table whose scope is
//!   now another than the batch's stream (a referral, a late write to a row that moved, a `via`
//!   child written in its parent's old scope) is written into its scope's stream whole, as the
//!   authority's own write crediting every cell to the site that wrote it; a row whose scope
//!   cell the batch wrote also goes to every stream it was transferred to before
//!   (`transfer.rs`: the core decides, a store that says it is the authority queues them with
//!   [`Store::transfer`], and [`transfer::credited`] reads a row's merge state for the batch).
//!   A deleted row's scope is read from its tombstone (kept for every table, as the engine
//!   keeps them), so a late delete of a row that moved is copied on. A row the quarantine retry
//!   brings in is not transferred by that apply, as the engine queues its transfers before its
//!   retry. Not yet as the engine: a row a UNIQUE collision holds aside is not transferred
//!   until it is back.
//! - *Exits* and *returns* (`apply/exits.rs`) happen where a row's scope leaves the replica's
//!   grant: the cloud's grant is every scope, so no row ever leaves it (it keeps the row and
//!   sends it on).
//! - *Directions* and *grants* (`apply/direction.rs`, `grant.rs`) are a receiver's judgement of
//!   a batch as a whole; the cloud judges every batch before any store applies it
//!   (`cloud/src/tenant/judge.rs`, `origin_grant.rs`), as the engine skips them on the cloud's
//!   tenant database.
//! - *Regains* (`regain.rs`) bring a device's own batches back after it dropped a scope; the
//!   cloud drops none.
//!
//! **A store's own writes** (the engine's local writes; a PostgreSQL back office's) are the
//! store's to put into the merge state before an apply merges against it, as the engine folds
//! its log first: versions of the store's [`Store::site`], its counter contributions, its
//! review siblings. The core then treats them as any site's (and keeps the store's own version
//! in a review cell's row state while it is still a sibling, as the engine does).

mod apply;
mod cascade;
mod error;
mod merge_row;
mod reasons;
mod restore;
mod retry;
pub mod row_state;
pub mod store;
mod tables;
pub mod transfer;
mod unique;

pub use apply::{apply_batch, Stats};
pub use error::ApplyError;
pub use row_state::RowState;
pub use store::{Column, Entry, Parent, Quarantined, Store, Table, Tombstone, Unique, Written};
