//! A batch applied to the PostgreSQL tenant: the apply core ([`outpost_apply_core`]) over
//! [`PgStore`], in one transaction that keeps capture's contract (docs/cloud.md, "PostgreSQL"):
//! - `SET LOCAL outpost.applying = 'on'`: the writes are devices' changes, not captured again;
//! - `outpost.capture_rows` kept current (the store writes a row's causal length there);
//! - `outpost.clock_observe(hlc)` with the largest clock received, so the back office's next
//!   captured write orders after it;
//!
//! and DESIGN section 11's serialisation: applies of a tenant take one advisory lock
//! ([`APPLY_LOCK`]) for their transaction, so UNIQUE and parent decisions see every earlier
//! apply, as on SQLite. They also hold capture's clock row (`outpost.clock_hold`) from their
//! start, as every capturing transaction does from its first statement on a tracked table: an
//! apply and a back-office transaction take turns. The apply then folds the back office's
//! captured writes into the merge state (`store/fold.rs`) before merging anything, so a device's
//! older write never overwrites a newer back-office value. Foreign keys are deferred to the commit (`SET CONSTRAINTS ALL
//! DEFERRED`: the app tables' keys are `DEFERRABLE`), as the engine defers them.
//!
//! A row PostgreSQL refuses (a CHECK, a UNIQUE index) aborts the transaction: the batch is
//! rolled back and applied again carefully, each row write in a savepoint, so that row is
//! quarantined and the rest applies (the engine redoes a batch strictly the same way when a
//! foreign key fails at its commit).
//!
//! The cloud is the scope authority: the core queues the transfers an apply calls for in the
//! same transaction (`outpost.transfer`, `store/transfer.rs`), and [`super::transfer`] makes
//! their batches when the outbox is read.
//!
//! The tables must exist first ([`super::app_tables::ensure`] with the batch's header, as the
//! SQLite tenant makes them before its apply): a table the header names that is not tracked
//! here is quarantined, as on a device.

use super::store::{refusal, PgStore, StoreError};
use ::postgres::Client;
use outpost_apply_core::{apply_batch, ApplyError, Stats};
use outpost_protocol::batch::Batch;
use outpost_protocol::seal::DigestKey;
use outpost_protocol::SiteId;

/// The advisory lock serialising a tenant's applies (the app tables' schema changes take
/// another: `app_tables.rs`).
pub const APPLY_LOCK: i64 = 0x6f75_7470_6f73_7402;

/// Applies `batch` to the tenant in `client`'s database, whose cloud is `site`, in one
/// transaction: all of it or nothing.
pub fn apply(
    client: &mut Client,
    site: SiteId,
    batch: &Batch,
) -> Result<Stats, ApplyError<StoreError>> {
    apply_many(client, site, std::slice::from_ref(batch))
}

/// Applies `batches` in order in one transaction: all of them or nothing (the engine's
/// `outpost_apply_many`: a first sync's chunks commit together, one commit's cost for several).
/// Returns the summed counts.
pub fn apply_many(
    client: &mut Client,
    site: SiteId,
    batches: &[Batch],
) -> Result<Stats, ApplyError<StoreError>> {
    apply_in(client, site, None, batches)
}

/// [`apply_many`] in a sealed tenant, whose batches name their streams by the digest `digest`
/// makes of a scope's name (the core compares them with rows' scopes to queue transfers).
pub fn apply_in(
    client: &mut Client,
    site: SiteId,
    digest: Option<&DigestKey>,
    batches: &[Batch],
) -> Result<Stats, ApplyError<StoreError>> {
    let batches: Vec<&Batch> = batches.iter().collect();
    apply_refs(client, site, digest, &batches)
}

/// [`apply_in`] over batches held elsewhere (the ingest's group keeps the judged copies).
pub fn apply_refs(
    client: &mut Client,
    site: SiteId,
    digest: Option<&DigestKey>,
    batches: &[&Batch],
) -> Result<Stats, ApplyError<StoreError>> {
    match apply_once(client, site, digest, batches, false) {
        Err(ApplyError::Store(e)) if refused_row(&e) => {
            apply_once(client, site, digest, batches, true)
        }
        r => r,
    }
}

/// Whether `e` is a row's refusal a careful apply would quarantine.
fn refused_row(e: &StoreError) -> bool {
    match e {
        StoreError::Sql { source, .. } => refusal(source),
        _ => false,
    }
}

fn apply_once(
    client: &mut Client,
    site: SiteId,
    digest: Option<&DigestKey>,
    batches: &[&Batch],
    careful: bool,
) -> Result<Stats, ApplyError<StoreError>> {
    let sql = |doing: &str| {
        let doing = doing.to_string();
        move |source| ApplyError::Store(StoreError::Sql { doing, source })
    };
    let mut tx = client
        .transaction()
        .map_err(sql("starting a transaction"))?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({APPLY_LOCK}); \
         SET LOCAL outpost.applying = 'on'; \
         SET CONSTRAINTS ALL DEFERRED; \
         SET LOCAL enable_seqscan = off; \
         SET LOCAL enable_hashjoin = off; \
         SET LOCAL enable_mergejoin = off; \
         SELECT outpost.clock_hold();"
    ))
    .map_err(sql("taking the tenant's apply lock and the clock row"))?;
    // The origin under the lock: another process may have taken a new one since this one read
    // it (`new_origin.rs`), and the back office's writes fold as the current origin's.
    let site = super::new_origin::current(&mut tx, site).map_err(|e| match e {
        super::new_origin::NewOriginError::Sql { doing, source } => {
            ApplyError::Store(StoreError::Sql { doing, source })
        }
        super::new_origin::NewOriginError::Fold(e) => ApplyError::Store(e),
    })?;
    let mut stats = Stats::default();
    {
        // One store for the transaction: what it read ahead and prepared serves every batch.
        let mut store = PgStore::new(&mut tx, site, careful).with_digest(digest.cloned());
        // The back office's writes committed before the clock row was held are the cloud's
        // local writes: merge state before anything is merged against it.
        store.fold_captured().map_err(ApplyError::Store)?;
        for batch in batches {
            stats += apply_batch(&mut store, batch)?;
        }
    }
    tx.commit().map_err(sql("committing the batches"))?;
    Ok(stats)
}
