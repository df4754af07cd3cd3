//! The ingest (mailbox → tables) both tenant stores share: which batches a round applies, in
//! what order, what is refused whole and recorded, what stops an origin for the round. A store
//! ([`TenantStore`]: the SQLite tenant, `tenant.rs`, or the PostgreSQL one,
//! `postgres/tenant.rs`) only makes tables, applies a batch the round accepted, and records a
//! refusal, so the two decide every batch alike.

use super::group::{self, Group, GroupLimit, Grouped, Pending};
use super::judge::{self, Judged};
use super::origin_grant;
use super::refused::RefusedBatch;
use super::void;
use super::TenantError;
use crate::changelog::ChangelogError;
use crate::error_chain::Chain;
use crate::schema::SchemaError;
use crate::scope_rules::TenantRules;
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::batch::{codec, Batch, Direction, TableSchema};
use outpost_protocol::control::{Directory, VoidReason};
use outpost_protocol::scope::Scopes;
use outpost_protocol::{SeqRange, SiteId, VersionVector};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a tenant store does for the shared ingest and export (`export.rs`).
pub trait TenantStore {
    /// The cloud's site: the tenant's own origin.
    fn site(&self) -> SiteId;
    /// What the tenant has applied, per stream (the wire ids the mailbox uses).
    fn vector(&mut self) -> Result<VersionVector, TenantError>;
    /// The scope rules of the tables the tenant holds, with the cloud's control entries'.
    fn rules(&mut self, directory: &Directory) -> Result<TenantRules, TenantError>;
    /// The batches refused whole so far.
    fn refused(&mut self) -> Result<Vec<RefusedBatch>, TenantError>;
    /// Work before a round (a sealed tenant's keys, for a store that opens batches itself).
    fn before_round(&mut self, mailbox: &mut Mailbox) -> Result<(), TenantError>;
    /// Work after a round's batches were applied (the SQLite tenant logs the rows the engine
    /// wrote in its REST change log: `changelog.rs`). A failure is logged, not the round's: what
    /// it left undone must be done again later (the SQLite tenant's list waits for its next
    /// drain).
    fn after_round(&mut self) -> Result<(), TenantError> {
        Ok(())
    }
    /// Makes or widens the tables a header states.
    fn make_tables(&mut self, tables: &[TableSchema]) -> Result<(), ApplyError>;
    /// Applies an accepted batch: `bytes` as the mailbox holds it, `batch` decoded (opened when
    /// sealed). Returns the changes applied and quarantined.
    fn apply(&mut self, bytes: &[u8], batch: Batch) -> Result<(u64, u64), ApplyError>;
    /// How many accepted batches the store applies together in one transaction
    /// ([`TenantStore::apply_group`]); `None` (the default) applies each alone with
    /// [`TenantStore::apply`].
    fn group_limit(&self) -> Option<GroupLimit> {
        None
    }
    /// Applies accepted batches (in the round's order: their bytes as the mailbox holds them,
    /// and decoded when [`GroupLimit::decoded`]) in one transaction, all or nothing. Returns the
    /// changes applied and quarantined. Called only when [`TenantStore::group_limit`] is set.
    fn apply_group(&mut self, batches: &[Grouped<'_>]) -> Result<(u64, u64), ApplyError> {
        Err(ApplyError::Store(
            format!(
                "this tenant store applies batches one at a time, not {} together",
                batches.len()
            )
            .into(),
        ))
    }
    /// Records `range` of `origin`'s stream `scope` as refused for `reason`, and covers it.
    fn refuse(
        &mut self,
        origin: SiteId,
        scope: &str,
        range: SeqRange,
        reason: &str,
    ) -> Result<(), ApplyError>;
    /// The cloud's own streams holding seqs above `held`: (the stream's wire id, the name to
    /// export it by).
    fn own_streams(
        &mut self,
        mailbox: &mut Mailbox,
        held: &VersionVector,
    ) -> Result<Vec<(String, String)>, TenantError>;
    /// The highest seq the tenant issued in each of the cloud's own streams, by wire id.
    fn own_tops(&mut self, mailbox: &mut Mailbox) -> Result<BTreeMap<String, u64>, TenantError>;
    /// The clock of the cloud's own change at the seq `at` gives for each stream (by wire id),
    /// for the streams whose store keeps its changes one per seq and holds that one (the
    /// PostgreSQL outbox). The SQLite tenant's engine keeps rows, not changes: it gives none,
    /// and restore detection there compares counts only (`high_water.rs`).
    fn own_stamps(
        &mut self,
        _mailbox: &mut Mailbox,
        _at: &BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, u64>, TenantError> {
        Ok(BTreeMap::new())
    }
    /// The cloud's own batch of stream `name` from seq `since + 1`, at most about
    /// `max_bytes`; `None` when the stream holds nothing above `since`.
    fn export_batch(
        &mut self,
        name: &str,
        since: u64,
        max_bytes: i64,
    ) -> Result<Option<Vec<u8>>, TenantError>;
}

/// Milliseconds since the Unix epoch (when a batch was refused; informative only).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The table directions `directory` states.
pub(crate) fn directions_of(directory: &Directory) -> BTreeMap<String, Direction> {
    directory
        .tables()
        .map(|(n, d)| (n.to_string(), d))
        .collect()
}

/// Applies what `mailbox` holds and `store` lacks (see `tenant.rs`'s module doc). Accepted
/// batches are applied in groups when the store can (`group.rs`).
pub fn ingest(
    store: &mut impl TenantStore,
    mailbox: &mut Mailbox,
    voids_published: &mut bool,
) -> Result<Ingested, TenantError> {
    let mut round = Round::default();
    if !*voids_published {
        void::publish_recorded(mailbox, &store.refused()?)?;
        *voids_published = true;
    }
    store.before_round(mailbox)?;
    let directory = mailbox.directory()?.clone();
    let declared = directions_of(&directory);
    let mut rules = store.rules(&directory)?;
    let site = store.site();
    let mut group = group::limit(store).map(Group::new);
    let mut plan = mailbox.pull_plan(&store.vector()?, Some(site), &Scopes::All)?;
    while let Some(batch) = mailbox.next_batch(&mut plan)? {
        if round.stopped.contains(&batch.origin) {
            continue;
        }
        // The grant version the batch was written under (a header that does not decode is
        // refused by the judge below, whatever this says).
        let version = codec::decode_header(&batch.bytes, &codec::Limits::default())
            .map_or(0, |h| h.grant_version);
        let outside = origin_grant::outside(&directory, batch.origin, &batch.scope, version);
        let why = match outside {
            Some(_) => VoidReason::OutsideGrant,
            None => VoidReason::Invalid,
        };
        let judged = match outside {
            Some(reason) => Ok(Judged::Refused(reason)),
            None => accept(
                store,
                &batch.bytes,
                &declared,
                &mut rules,
                mailbox,
                &directory,
            ),
        };
        let judged = match (group.as_mut(), judged) {
            (Some(group), Ok(Judged::Accepted(decoded))) => {
                // A store that decodes it again in the group's transaction (the SQLite engine)
                // lets the judged copy go.
                let decoded = group.keeps_decoded().then_some(decoded);
                let full = group.push(Pending {
                    origin: batch.origin,
                    scope: batch.scope,
                    range: batch.range,
                    bytes: batch.bytes,
                    decoded,
                });
                if full {
                    apply_group(store, group, &mut round);
                }
                continue;
            }
            (_, judged) => judged,
        };
        // A refusal is recorded, and a failure stops its origin, after the accepted batches
        // before it were applied, as if each had been applied alone.
        if let Some(group) = group.as_mut() {
            apply_group(store, group, &mut round);
            if round.stopped.contains(&batch.origin) {
                continue;
            }
        }
        let outcome = judged.and_then(|judged| match judged {
            Judged::Accepted(decoded) => store
                .apply(&batch.bytes, *decoded)
                .map(|(applied, quarantined)| Outcome::Applied(applied, quarantined)),
            Judged::Refused(reason) => {
                // Published first: if the cloud stops before the refusal is recorded, the
                // batch is judged again and the entry is not written twice.
                void::publish(mailbox, batch.origin, &batch.scope, batch.range, why)
                    .map_err(ApplyError::Void)?;
                store.refuse(batch.origin, &batch.scope, batch.range, &reason)?;
                Ok(Outcome::Refused(reason))
            }
        });
        round.record(&batch.origin, &batch.scope, batch.range, outcome);
    }
    if let Some(group) = group.as_mut() {
        apply_group(store, group, &mut round);
    }
    // The round's batches are committed: a store's follow-up failing (the REST log) is told,
    // not taken for the round's failure; the store tries again (`TenantStore::after_round`).
    if let Err(e) = store.after_round() {
        log::warn!("after the ingest round: {}", Chain(&e));
    }
    Ok(round.done)
}

/// What a round did so far, and the origins it stopped.
#[derive(Default)]
struct Round {
    done: Ingested,
    stopped: BTreeSet<SiteId>,
}

impl Round {
    /// Records one batch's outcome (logged).
    fn record(
        &mut self,
        origin: &SiteId,
        stream: &str,
        range: SeqRange,
        outcome: Result<Outcome, ApplyError>,
    ) {
        let (lo, hi) = (range.lo, range.hi);
        match outcome {
            Ok(Outcome::Refused(reason)) => {
                log::warn!(
                    "tenant refused batch origin={origin} stream={stream:?} seqs={lo}..={hi} (recorded, skipped): {reason}"
                );
                self.done.refused.push(RefusedBatch {
                    origin: *origin,
                    stream: stream.to_string(),
                    range: (lo, hi),
                    reason,
                });
            }
            Ok(Outcome::Applied(applied, quarantined)) => {
                self.done.batches += 1;
                self.done.applied += applied;
                self.done.quarantined += quarantined;
                log::info!(
                    "tenant applied batch origin={origin} stream={stream:?} seqs={lo}..={hi} applied={applied} quarantined={quarantined}"
                );
            }
            Err(e) => {
                let error = Chain(&e).to_string();
                log::warn!(
                    "tenant could not apply batch origin={origin} stream={stream:?} seqs={lo}..={hi} (kept in the mailbox): {error}"
                );
                self.stopped.insert(*origin);
                self.done.failures.push(ApplyFailure {
                    origin: *origin,
                    range: (lo, hi),
                    error,
                });
            }
        }
    }
}

/// Applies the batches `group` holds, in one transaction when there are several; when that
/// fails, one at a time (`group.rs`).
fn apply_group(store: &mut impl TenantStore, group: &mut Group, round: &mut Round) {
    let pending = group.take();
    if pending.len() > 1 {
        let grouped: Vec<Grouped<'_>> = pending.iter().map(Pending::grouped).collect();
        match store.apply_group(&grouped) {
            Ok((applied, quarantined)) => {
                round.done.batches += pending.len();
                round.done.applied += applied;
                round.done.quarantined += quarantined;
                for p in &pending {
                    log::info!(
                        "tenant applied batch origin={} stream={:?} seqs={}..={} (in a group of {})",
                        p.origin,
                        p.scope,
                        p.range.lo,
                        p.range.hi,
                        pending.len()
                    );
                }
                log::info!(
                    "tenant applied {} batches in one transaction: applied={applied} quarantined={quarantined}",
                    pending.len()
                );
                return;
            }
            Err(e) => log::warn!(
                "tenant could not apply a group of {} batches (applying them one at a time): {}",
                pending.len(),
                Chain(&e)
            ),
        }
    }
    for p in pending {
        if round.stopped.contains(&p.origin) {
            continue;
        }
        let outcome = store
            .apply_group(&[p.grouped()])
            .map(|(applied, quarantined)| Outcome::Applied(applied, quarantined));
        round.record(&p.origin, &p.scope, p.range, outcome);
    }
}

/// One batch judged (`judge.rs`) and, when accepted, its tables made and its rules learnt.
fn accept(
    store: &mut impl TenantStore,
    bytes: &[u8],
    declared: &BTreeMap<String, Direction>,
    rules: &mut TenantRules,
    mailbox: &mut Mailbox,
    directory: &Directory,
) -> Result<Judged, ApplyError> {
    let judged = judge::judge(bytes, declared, rules, mailbox, directory)?;
    if let Judged::Accepted(batch) = &judged {
        store.make_tables(&batch.header.tables)?;
        rules.learn(&batch.header.tables);
    }
    Ok(judged)
}

/// Why one batch could not be applied (recorded as an [`ApplyFailure`]; the batch stays in the
/// mailbox and the next round retries).
#[derive(Debug)]
pub enum ApplyError {
    /// Its tables could not be made.
    Schema(SchemaError),
    /// Recording a refused batch or skipping its seqs failed.
    Refuse(rusqlite::Error),
    /// Writing the control entry that makes a table's scope rule the tenant's failed.
    Publish {
        /// The table.
        table: String,
        /// The mailbox's error.
        source: MailboxError,
    },
    /// Writing the control entry that voids a refused batch's range failed.
    Void(MailboxError),
    /// The REST change log's triggers could not follow its new tables.
    Changelog(ChangelogError),
    /// `outpost_apply` refused it.
    Apply(rusqlite::Error),
    /// `outpost_apply` answered something that is not JSON.
    Counts(serde_json::Error),
    /// The PostgreSQL tenant could not make its tables, apply the batch or record its refusal
    /// (its error names what).
    Store(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Schema(e) => e.fmt(f),
            ApplyError::Refuse(_) => f.write_str("recording a refused batch"),
            ApplyError::Publish { table, .. } => write!(
                f,
                "publishing the scope rule of table {table:?} in the control stream"
            ),
            ApplyError::Void(_) => {
                f.write_str("publishing a refused batch's range as voided in the control stream")
            }
            ApplyError::Changelog(e) => e.fmt(f),
            ApplyError::Apply(e) => e.fmt(f),
            ApplyError::Counts(_) => f.write_str("outpost_apply() did not answer JSON"),
            ApplyError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Refuse(e) => Some(e),
            ApplyError::Publish { source, .. } | ApplyError::Void(source) => Some(source),
            // Transparent: these say what failed themselves.
            ApplyError::Schema(e) => e.source(),
            ApplyError::Changelog(e) => e.source(),
            ApplyError::Apply(e) => e.source(),
            ApplyError::Counts(e) => Some(e),
            ApplyError::Store(e) => e.source(),
        }
    }
}

/// A batch that could not be applied (it stays in the mailbox).
#[derive(Debug, Clone)]
pub struct ApplyFailure {
    /// Its origin.
    pub origin: SiteId,
    /// Its range, `lo..=hi`.
    pub range: (u64, u64),
    /// Why.
    pub error: String,
}

/// What one ingest did.
#[derive(Debug, Default, Clone)]
pub struct Ingested {
    /// Batches applied.
    pub batches: usize,
    /// Changes the engine reported applied.
    pub applied: u64,
    /// Changes the engine quarantined.
    pub quarantined: u64,
    /// Batches that failed (their origins were stopped for this round).
    pub failures: Vec<ApplyFailure>,
    /// Batches refused whole this round (recorded and skipped; their origins go on).
    pub refused: Vec<RefusedBatch>,
}

/// What applying one batch came to.
pub(crate) enum Outcome {
    /// Applied: the engine's counts of changes applied and quarantined.
    Applied(u64, u64),
    /// Refused whole, for this reason (see `tenant/refused.rs`).
    Refused(String),
}

#[cfg(test)]
mod tests;
