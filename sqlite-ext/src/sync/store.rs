//! The protocol's `ClientStore` over the extension's engine: the session reads the vector from
//! the bookkeeping, exports through `outpost_changes`' code and applies through
//! `outpost_apply_many`'s, so a sync writes exactly what those functions would, with their
//! transactions.
//!
//! **Pulled chunks are applied in groups.** Each chunk is verified when it arrives (header, body
//! length, SHA-256) and kept in memory; up to [`GROUP_CHUNKS`] chunks or [`GROUP_BYTES`] bytes
//! are applied together in one transaction with their vector advances (`outpost_apply_many`'s
//! code: decoded one at a time, all or nothing). One commit per chunk wrote every page the chunk
//! dirtied to the WAL, and random UUID keys dirty most index pages in every chunk: a first sync
//! ran at about a third of the grouped rate (docs/performance.md, W4). The group is applied when
//! it is full, and at the session's flushes (`PullDone`, before a `Pull`, before `Bye`; see the
//! protocol's `session.rs`); nothing is held open while the session waits on the network. A cut
//! loses only the kept chunks, for which the vector did not advance: the next sync pulls them
//! again. Counts and progress count what was applied (committed), and progress shows the kept
//! chunks apart.
//!
//! **Signed batches and held ones.** The key directory (`control.rs`) is loaded once per session,
//! at the hello; control entries the peer sends are admitted into it and stored in one
//! transaction. The session verifies each pulled batch with the key [`EngineStore`] gives for its
//! origin (`origin_key`); a batch whose origin has no key yet, or that names a version of its
//! origin's grant the directory does not state yet, is held: not applied, not
//! quarantined, its origin's later batches in the pull held too, the vector not advanced, and
//! counted in [`EngineStore::held`] for the sync result. Since the session checked the
//! signatures, groups are applied without checking them again (`apply::apply_pulled`), with the
//! directory for the receiver's direction and grant checks (`apply/direction.rs`: a batch
//! writing what only the cloud writes, from another origin, and `apply/grant.rs`: one written
//! outside the grant version it names, are quarantined whole and their range covered). The
//! ranges the cloud voided count as covered (`apply.rs`, `follows`).
//!
//! **Withheld batches.** A relay serves a device an `up` batch (tables only the cloud reads) as
//! its signed clear header alone (`codec::withhold`). The session checks its signature like any
//! (or holds it, its origin unknown); it is kept in the group and covers its range in the
//! group's transaction, applying nothing.

use crate::apply::{apply_pulled, Pulled};
use crate::error::Error;
use crate::error::SyncError;
use crate::export::sql_changes;
use crate::functions::{Arg, Call};
use crate::wire_scope::WireScopes;
use outpost_link::LinkError;
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{BatchHeader, Direction};
use outpost_protocol::control::{ControlItem, Directory};
use outpost_protocol::handshake::PublicKey;
use outpost_protocol::id_range::{IdRange, IdRequest};
use outpost_protocol::message::{Covered, SealedKeys};
use outpost_protocol::session::SessionError;
use outpost_protocol::{ControlVector, SiteId, StreamId, Value, VersionVector};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Largest batch exported (bytes); a larger single row still goes alone.
pub(crate) const BATCH_BYTES: usize = 512 * 1024;
/// What one session's push may make the relay hold at its peak: the rest goes in the next
/// session of the same `outpost_sync` (a relay stages a push in memory until commit). A relay
/// counts the batches staged so far and, while a batch's message arrives, that message twice
/// (decoding copies the batch out of it), so a session stops before its next batch could pass
/// this: it pushes at most `PUSH_BUDGET - BATCH_BYTES` (about 15.5 MiB). Two devices' sessions
/// then fit at once in the 32 MiB a relay stages for all its peers
/// (`outpost_relay::staging::DEFAULT_STAGING_BUDGET`).
pub(crate) const PUSH_BUDGET: usize = 16 << 20;
/// Room left per batch for what wraps it (the push message, a sealed batch's nonce, tag and
/// signature).
const PUSH_MESSAGE_SLACK: usize = 4 * 1024;
/// Pulled chunks applied per transaction at most. 16 chunks of [`BATCH_BYTES`] is what the W4
/// benchmark measured best (`outpost_apply_many`: 129k rows/s, against 46-51k with one
/// transaction per chunk; 12 chunks 113k, 20 chunks 123k at 65.6 MiB, over the memory goal).
pub(crate) const GROUP_CHUNKS: usize = 16;
/// Bytes of pulled chunks kept before they are applied: 16 chunks of 512 KiB. They are held in
/// memory (one copy; the apply decodes one at a time), so this bounds what grouping costs: about
/// 60 MiB peak for the whole apply, under the 64 MiB goal. A larger chunk (one big row) goes
/// alone.
pub(crate) const GROUP_BYTES: usize = 8 << 20;

/// What one sync did, summed over its sessions.
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Counts {
    /// Own changes (seqs) the peer acknowledged.
    pub pushed: u64,
    /// Changes (seqs) of other origins received.
    pub pulled: u64,
    pub batches_pushed: u64,
    pub batches_pulled: u64,
    /// Encoded bytes of the pulled batches applied.
    pub bytes_pulled: u64,
    pub applied: u64,
    pub unchanged: u64,
    pub conflicts: u64,
    pub quarantined: u64,
    /// Pulled batches of a scoped stream outside this device's grant: not applied, their
    /// stream's vector kept (relays serve a peer only its grant's streams, so none should come).
    pub outside_grant: u64,
    /// Control entries accepted (and stored) from the peer.
    pub control_accepted: u64,
    /// Control entries refused (undecodable, unknown writer, bad signature, out of order, not
    /// the writer's to say): dropped, they come again.
    pub control_refused: u64,
    /// Scopes removed from this device's grant whose rows were dropped, their drain complete.
    pub scopes_dropped: u64,
    /// Scope keys newly received in the relay's hello (a sealed tenant's; `scope_keys.rs`).
    pub keys_received: u64,
    /// Own streams not pushed because no key of their scope is held yet (a sealed tenant's):
    /// they go with a later sync, once the key arrives.
    pub keys_missing: u64,
    /// Sessions run again because the peer answered busy (`client.rs`).
    pub busy_retries: u64,
}

impl Counts {
    /// Adds `c` (another session's counts) to these.
    pub(crate) fn add(&mut self, c: &Counts) {
        self.pushed += c.pushed;
        self.pulled += c.pulled;
        self.batches_pushed += c.batches_pushed;
        self.batches_pulled += c.batches_pulled;
        self.bytes_pulled += c.bytes_pulled;
        self.applied += c.applied;
        self.unchanged += c.unchanged;
        self.conflicts += c.conflicts;
        self.quarantined += c.quarantined;
        self.outside_grant += c.outside_grant;
        self.control_accepted += c.control_accepted;
        self.control_refused += c.control_refused;
        self.scopes_dropped += c.scopes_dropped;
        self.keys_received += c.keys_received;
        self.keys_missing += c.keys_missing;
        self.busy_retries += c.busy_retries;
    }
}

/// Batches of one origin held in a pull: its key is not known yet, so they were neither applied
/// nor quarantined, and the vector did not advance for them.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldOrigin {
    /// Batches held.
    pub batches: u64,
    /// Seqs they cover.
    pub seqs: u64,
}

/// What the last pull held, per origin.
pub(crate) type Held = BTreeMap<SiteId, HeldOrigin>;

/// What the session sees of a store failure: the typed error stays in
/// [`EngineStore::failed`], for [`EngineStore::typed`] (the session keeps only a text).
#[derive(Debug)]
pub(crate) struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the database failed (its error is kept for the sync's result)")
    }
}

/// The engine as a `ClientStore`, for the duration of one session.
pub(crate) struct EngineStore<'c> {
    call: &'c Call<'c>,
    site: SiteId,
    pub counts: Counts,
    /// The last export stopped at [`PUSH_BUDGET`]: run another session.
    pub more_to_push: bool,
    /// The typed error behind the last `SessionError::Store` (the session keeps only its text).
    pub failed: Option<SyncError>,
    /// Numbers granted and stored in this session, per sequence.
    pub ids_granted: Vec<(String, u64)>,
    /// Pulled chunks verified and kept, not applied yet: (header, encoded batch).
    kept: Vec<(BatchHeader, Vec<u8>)>,
    kept_bytes: usize,
    /// This database's `outpost_sync_progress` entry, resolved once per session (not per chunk).
    progress: Option<String>,
    /// The key directory, loaded once per session (it is small) when first needed.
    directory: Option<Directory>,
    /// Batches the current pull held (their origin's key is not known): a held origin's later
    /// batches in the same pull are held too, since applying them would leave a gap.
    pub held: Held,
    /// The sent marks before this session's first export and after its last one: what a push
    /// the relay refused as stamped too far ahead puts back (`clock_ahead.rs`).
    pub sent_marks: Option<SentMarks>,
    /// The largest clock (ms) of the batches this session exported.
    pub pushed_max_ms: u64,
    /// The peer's trusted time as its hello stated it (ms; 0: it has none).
    pub peer_clock_ms: u64,
    /// The push was planned: a later vector read is for a `Pull`.
    planned: bool,
    /// This database's static key pair, read at the first need (opening key envelopes,
    /// signing sealed batches).
    keypair: Option<outpost_protocol::handshake::Keypair>,
    /// The bulk page cache the push's export holds from its plan to its last batch (not during
    /// the pull: the apply raises its own, and a cache kept across its groups would add to
    /// what it holds in memory).
    export_cache: Option<crate::schema::BulkCache>,
}

/// The sent marks around a session's export (`restamp.rs`).
#[derive(Clone, Debug)]
pub(crate) struct SentMarks {
    pub before: Option<crate::restamp::Sent>,
    pub after: Option<crate::restamp::Sent>,
}

/// An export in progress: each own stream's changes above what the server holds of it, one
/// stream after the other (`streams[0]` is the one being exported).
pub(crate) struct ExportPlan {
    /// (scope, seq the server holds of it, last seq to push), still to export.
    streams: std::collections::VecDeque<(String, u64, u64)>,
    bytes: usize,
    done: bool,
}

impl<'c> EngineStore<'c> {
    pub(crate) fn new(call: &'c Call<'c>, site: SiteId) -> EngineStore<'c> {
        EngineStore {
            call,
            site,
            counts: Counts::default(),
            more_to_push: false,
            failed: None,
            ids_granted: Vec::new(),
            kept: Vec::new(),
            kept_bytes: 0,
            progress: super::progress::key(call.conn),
            directory: None,
            held: Held::new(),
            sent_marks: None,
            pushed_max_ms: 0,
            peer_clock_ms: 0,
            planned: false,
            keypair: None,
            export_cache: None,
        }
    }

    /// This database's static key pair (it has one once enrolled: sessions need it).
    fn keypair(&mut self) -> Result<outpost_protocol::handshake::Keypair, SyncError> {
        if let Some(k) = &self.keypair {
            return Ok(k.clone());
        }
        let k = super::identity::existing(self.call.conn, self.site)?.ok_or_else(|| {
            SyncError::Engine(Error::Internal(
                "this database has no static key: enroll it first".into(),
            ))
        })?;
        Ok(self.keypair.insert(k).clone())
    }

    /// Opens the key envelopes meant for this site and keeps their keys
    /// ([`crate::scope_keys::keep_envelopes`]).
    fn keys_received_inner(&mut self, keys: &[SealedKeys]) -> Result<(), SyncError> {
        if keys.iter().all(|k| k.site != self.site) {
            return Ok(());
        }
        let keypair = self.keypair()?;
        let added = crate::scope_keys::keep_envelopes(self.call.conn, self.site, &keypair, keys)?;
        self.counts.keys_received += added as u64;
        // The digest key may be new: the table settings it opens count from now on.
        if let (Some(d), Some(dk)) = (
            self.directory.as_mut(),
            crate::scope_keys::digest_key(self.call.conn)?,
        ) {
            d.set_table_key(&dk);
        }
        Ok(())
    }

    /// Keeps a typed error for the caller; the session gets [`Failed`].
    fn keep<T>(&mut self, r: Result<T, SyncError>) -> Result<T, Failed> {
        r.map_err(|e| {
            self.failed = Some(e);
            Failed
        })
    }

    /// A link error, or the store's typed error behind a `SessionError::Store`.
    pub(crate) fn typed(&mut self, e: LinkError) -> SyncError {
        match (&e, self.failed.take()) {
            (
                LinkError::Session {
                    error: SessionError::Store(_),
                    ..
                },
                Some(failed),
            ) => failed,
            _ => SyncError::Link(e),
        }
    }

    /// Applies the chunks kept so far (a session ending cleanly inside a pull: its deadline).
    pub(crate) fn apply_kept(&mut self) -> Result<(), SyncError> {
        self.flush_inner()
    }
}

impl Drop for EngineStore<'_> {
    /// A session that ended without its flush (a cut, an error) loses the kept chunks: the
    /// vector did not advance for them, so the next pull brings them again.
    fn drop(&mut self) {
        if !self.kept.is_empty() {
            super::progress::discarded(
                self.progress.as_deref(),
                self.kept.len() as u64,
                self.kept_bytes as u64,
            );
        }
    }
}

/// SHA-256 over the tracked tables' definitions (names, columns, strategies, direction), in name
/// order: two databases configuring a column differently differ here.
pub(crate) fn fingerprint(call: &Call) -> Result<[u8; 32], SyncError> {
    let mut s = call
        .conn
        .prepare("SELECT name, def FROM _outpost_tables ORDER BY name")?;
    let mut h = Sha256::new();
    h.update(b"outpost-schema-v1");
    while s.step()? {
        for part in [s.text(0), s.text(1)] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
    }
    Ok(h.finalize().into())
}

/// This database's vector, by wire id (`wire_scope.rs`): the top of each own stream and the
/// coverage of every other origin's streams.
pub(crate) fn vector(call: &Call, site: SiteId) -> Result<VersionVector, Error> {
    let mut v = VersionVector::new();
    let wire = WireScopes::load(call.conn)?;
    for (scope, top) in crate::streams::tops(call.conn)? {
        v.set(StreamId::new(site, wire.of(&scope)), top);
    }
    let mut s = call
        .conn
        .prepare("SELECT site, stream, covered FROM _outpost_vector")?;
    while s.step()? {
        let origin = SiteId::from_slice(&s.blob(0))
            .ok_or_else(|| Error::Corrupt("vector site id".into()))?;
        if origin != site {
            v.set(StreamId::new(origin, s.text(1)), s.i64(2).max(0) as u64);
        }
    }
    Ok(v)
}

/// The last seq of own stream `scope` (`issued`: its top, the log not folded yet included) that
/// may be pushed: relays judge a batch by the grant version it names (`streams.rs`) and refuse
/// the whole push when that version does not hold its stream, so a stream is pushed up to the
/// end of its first stretch written under a version that does not hold it. Such seqs stay here,
/// pending: only writes to a row this device referred elsewhere, made after the referral, land
/// there. A scope removed by a regrant is still pushed up to its last seq written under a
/// version that held it: it drains (`drain.rs`). The log's entries not folded yet will be
/// numbered under the grant held now.
fn pushable_top(
    runs: &crate::streams::Runs,
    directory: &Directory,
    wire: &WireScopes,
    site: SiteId,
    scope: &str,
    issued: u64,
) -> u64 {
    let current = directory.grant_of(&site);
    let holds = |version: u64| {
        scope.is_empty()
            || match version {
                // Written with no grant known: judged by the grant the relay holds now.
                0 => current.is_none_or(|g| wire.holds(&g.scopes, scope)),
                v => directory
                    .grant_at(&site, v)
                    .is_some_and(|g| wire.holds(g, scope)),
            }
    };
    let mut upto = 0;
    for (version, last) in runs.stretches(scope) {
        if !holds(version) {
            return upto;
        }
        upto = last;
    }
    if holds(current.map_or(0, |g| g.version)) {
        upto = issued;
    }
    upto
}

/// This device's grant changed from `old` to `new` (admitted in `directory`): scopes it lost
/// start draining, and those with nothing left to push drop at once (`drain.rs`), in one
/// savepoint. Returns how many scopes dropped.
fn regranted(
    call: &Call,
    directory: &Directory,
    site: SiteId,
    old: Option<&outpost_protocol::scope::Scopes>,
    new: Option<&outpost_protocol::scope::Scopes>,
) -> Result<u64, Error> {
    call.conn.exec("SAVEPOINT outpost_drain")?;
    let r = (|| {
        let runs = crate::streams::Runs::load(call.conn)?;
        let wire = WireScopes::load(call.conn)?;
        crate::drain::regranted(call, old, new, |scope| {
            pushable_top(&runs, directory, &wire, site, scope, runs.top(scope))
        })?;
        crate::drain::drop_drained(call).map(|d| d.len() as u64)
    })();
    crate::schema::finish_savepoint(call.conn, "outpost_drain", r)
}

/// Folds the log in its own savepoint, as an export would.
fn fold_now(call: &Call) -> Result<(), Error> {
    crate::schema::with_bulk_cache(call.conn, || {
        call.conn.exec("SAVEPOINT outpost_fold")?;
        let r = (|| {
            if crate::fold::fold(call)?.columns_added {
                crate::apply::retry_all(call)?;
            }
            Ok(())
        })();
        crate::schema::finish_savepoint(call.conn, "outpost_fold", r)
    })
}

fn header(bytes: &[u8]) -> Result<BatchHeader, SyncError> {
    codec::decode_header(bytes, &Limits::default())
        .map_err(|e| SyncError::Engine(Error::Internal(format!("own batch does not decode: {e}"))))
}

fn count(json: &serde_json::Value, key: &str) -> u64 {
    json.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

impl EngineStore<'_> {
    fn vector_inner(&mut self) -> Result<VersionVector, SyncError> {
        // The vector is read for the hello and for each `Pull`: a new pull brings the held
        // batches again (the vector did not advance for them), and counts them afresh.
        self.held.clear();
        if self.planned {
            self.drop_drained()?;
        }
        Ok(vector(self.call, self.site)?)
    }

    /// The key directory, loaded at the session's first need.
    fn directory(&mut self) -> Result<&mut Directory, SyncError> {
        let directory = match self.directory.take() {
            Some(d) => d,
            None => super::control::load(self.call)?,
        };
        Ok(self.directory.insert(directory))
    }

    fn control_received_inner(&mut self, entries: Vec<Vec<u8>>) -> Result<(), SyncError> {
        let call = self.call;
        super::identity::ensure_tables(call.conn)?;
        let regrant = entries.iter().any(|bytes| {
            matches!(
                outpost_protocol::control::decode_entry(bytes).map(|e| e.item),
                Ok(ControlItem::Grant(g)) if g.site == self.site
            )
        });
        if !regrant {
            return self.admit(entries, None);
        }
        // A change of this device's own grant: the fold before it, the entries and the drains
        // it starts are one transaction, so no write of another connection falls between the
        // fold and the drain's write refusal (it would be numbered under the new grant, in a
        // scope about to be dropped).
        call.conn.exec("SAVEPOINT outpost_regrant")?;
        let r = (|| {
            // Every write made under the grant held now is numbered under it before an entry
            // may change it (`streams.rs`): the batches that carry them name the old version.
            fold_now(call)?;
            let site = self.site;
            let old = self.directory()?.grant_of(&site).map(|g| g.scopes.clone());
            self.admit(entries, Some(old))
        })();
        match r {
            Ok(()) => Ok(call.conn.exec("RELEASE outpost_regrant")?),
            Err(e) => {
                let _ = call
                    .conn
                    .exec("ROLLBACK TO outpost_regrant; RELEASE outpost_regrant");
                // The directory in memory may hold entries the rollback took back.
                self.directory = None;
                call.session.grant.forget();
                Err(e)
            }
        }
    }

    /// Admits and stores control entries; `old`: this device's grant before them, when they
    /// may change it (its scopes it no longer holds then start draining, `drain.rs`).
    fn admit(
        &mut self,
        entries: Vec<Vec<u8>>,
        old: Option<Option<outpost_protocol::scope::Scopes>>,
    ) -> Result<(), SyncError> {
        let call = self.call;
        let site = self.site;
        let directory = self.directory()?;
        let r = super::control::receive(call.conn, directory, entries)?;
        if r.accepted > 0 {
            super::control::remember(call, directory)?;
            // A strict tenant's tables refuse values PostgreSQL could not hold from now on.
            crate::strict::follow(call.conn, directory)?;
            // A grant received here decides which rows the pull's applies let go
            // (`apply/exits.rs`): the connection reads it again.
            call.session.grant.forget();
        }
        if let Some(old) = old {
            let new = directory.grant_of(&site).map(|g| g.scopes.clone());
            if old != new {
                let directory = directory.clone();
                let dropped = regranted(call, &directory, site, old.as_ref(), new.as_ref())?;
                self.counts.scopes_dropped += dropped;
            }
        }
        self.counts.control_accepted += r.accepted;
        self.counts.control_refused += r.refused;
        Ok(())
    }

    /// How many control entries a server whose hello states `theirs` sends right after it: each
    /// writer's entries above what this database's directory holds (the hello this database
    /// sent stated that vector, and a server sends exactly what it lacks).
    pub(crate) fn control_announced(&mut self, theirs: &ControlVector) -> Result<u64, SyncError> {
        let ours = self.directory()?.vector();
        Ok(theirs
            .iter()
            .map(|(writer, &seq)| seq.saturating_sub(ours.get(writer)))
            .sum())
    }

    /// The tenant's table settings against the tracked tables (`table_settings.rs`), with the
    /// directory as it stands (the entries received in this session included).
    pub(crate) fn check_table_settings(&mut self) -> Result<(), SyncError> {
        let conn = self.call.conn;
        super::table_settings::check(conn, self.directory()?)
    }

    /// Whether a pulled batch of `origin` is held: its key, the version of its grant it names
    /// (`apply/grant.rs`), or the scope key it is sealed under (`scope_keys.rs`) is not known
    /// yet, or an earlier batch of its origin was held in this pull.
    fn holds(&mut self, header: &BatchHeader) -> Result<bool, SyncError> {
        let origin = header.origin;
        let directory = self.directory()?;
        let known = directory.key_of(&origin).is_some()
            && !matches!(
                crate::apply::grant::judge(header, directory),
                crate::apply::grant::Verdict::Unknown
            )
            && crate::scope_keys::can_open(self.call.conn, &header.stream, header.key_epoch)?;
        if known && !self.held.contains_key(&origin) {
            return Ok(false);
        }
        let h = self.held.entry(origin).or_default();
        h.batches += 1;
        h.seqs += header.range.hi - header.range.lo + 1;
        Ok(true)
    }

    /// [`pushable_top`] of each own stream.
    fn pushable(
        &mut self,
        tops: &BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, u64>, SyncError> {
        let runs = crate::streams::Runs::load(self.call.conn)?;
        let wire = WireScopes::load(self.call.conn)?;
        let site = self.site;
        let directory = self.directory()?;
        Ok(tops
            .iter()
            .map(|(scope, &issued)| {
                let top = pushable_top(&runs, directory, &wire, site, scope, issued);
                (scope.clone(), top)
            })
            .collect())
    }

    fn plan_inner(&mut self, server: &VersionVector) -> Result<ExportPlan, SyncError> {
        let tops = crate::streams::tops(self.call.conn)?;
        let pushable = self.pushable(&tops)?;
        let wire = WireScopes::load(self.call.conn)?;
        let mut streams = std::collections::VecDeque::new();
        for (scope, issued) in tops {
            let upto = pushable.get(&scope).copied().unwrap_or(0);
            if upto < issued {
                log::warn!(
                    "outpost_sync: own stream {scope:?} seqs {}..={issued} were written outside \
                     this device's grant: not pushed",
                    upto + 1
                );
            }
            let since = server.get(&StreamId::new(self.site, wire.of(&scope)));
            if since > issued {
                return Err(SyncError::Restored {
                    peer_has: since,
                    issued,
                });
            }
            // The relay's hello says it holds every own seq of the stream up to `since`: a
            // push of an earlier session whose ack was lost to a cut counts from here
            // (`acked.rs`).
            crate::acked::record(self.call.conn, &scope, since)?;
            if since < upto {
                streams.push_back((scope, since, upto));
            }
        }
        // The relay's hello may say a draining scope's last seqs are held already: the drain
        // ends at the pull (`vector_inner`), once this session's control entries are in (one
        // may grant the scope again).
        self.planned = true;
        if !streams.is_empty() && self.export_cache.is_none() {
            self.export_cache = Some(crate::schema::BulkCache::raise(self.call.conn)?);
        }
        if self.sent_marks.is_none() {
            let now = crate::restamp::sent(self.call.conn)?;
            self.sent_marks = Some(SentMarks {
                before: now.clone(),
                after: now,
            });
        }
        Ok(ExportPlan {
            streams,
            bytes: 0,
            done: false,
        })
    }

    fn next_inner(&mut self, plan: &mut ExportPlan) -> Result<Option<Vec<u8>>, SyncError> {
        let bytes = loop {
            if plan.done {
                return Ok(None);
            }
            let Some((scope, since, upto)) = plan.streams.front() else {
                plan.done = true;
                return Ok(None);
            };
            // Batches end where the grant version changes, so one never passes `upto`.
            if since >= upto {
                plan.streams.pop_front();
                continue;
            }
            // A sealed tenant's stream waits for its scope's key: nothing of it is exported
            // (marked sent) before it can be sealed. The tenant is known sealed from the
            // control stream (from enrolment on), before any key arrived.
            let conn = self.call.conn;
            let dk = crate::scope_keys::digest_key(conn)?;
            let sealed = dk.is_some() || self.directory()?.is_sealed();
            let held = match &dk {
                Some(dk) => {
                    crate::scope_keys::current(conn, &crate::scope_keys::scope_of(dk, scope))?
                        .is_some()
                }
                None => false,
            };
            if sealed && !held {
                self.counts.keys_missing += 1;
                plan.streams.pop_front();
                continue;
            }
            let args = [
                Arg::Integer(*since as i64),
                Arg::Integer(BATCH_BYTES as i64),
                Arg::Text(scope),
            ];
            match sql_changes(self.call, &args)? {
                Value::Blob(b) => break b,
                _ => {
                    plan.streams.pop_front();
                }
            }
        };
        let h = header(&bytes)?;
        if let Some((_, since, _)) = plan.streams.front_mut() {
            *since = h.range.hi;
        }
        let signer = match crate::scope_keys::digest_key(self.call.conn)? {
            Some(_) => Some(self.keypair()?),
            None => None,
        };
        let bytes =
            crate::scope_keys::seal_for_push(self.call.conn, bytes, &h.stream, signer.as_ref())?
                .ok_or_else(|| {
                    SyncError::Engine(Error::Internal(format!(
                        "the key of stream {:?} went missing while exporting it",
                        h.stream
                    )))
                })?;
        self.pushed_max_ms = self.pushed_max_ms.max(h.max_hlc.millis());
        if let Some(m) = &mut self.sent_marks {
            m.after = crate::restamp::sent(self.call.conn)?;
        }
        plan.bytes += bytes.len();
        // The next batch (at most BATCH_BYTES, unless one row is larger) would be staged on top
        // of these while its message is counted twice.
        if plan.bytes + 2 * (BATCH_BYTES + PUSH_MESSAGE_SLACK) > PUSH_BUDGET {
            plan.done = true;
            self.more_to_push = true;
        }
        Ok(Some(bytes))
    }

    /// Records what the relay acknowledged holding (`acked.rs`): the rows whose changes it
    /// covers are synced from now on.
    fn acknowledged_inner(&mut self, covered: &[Covered]) -> Result<(), SyncError> {
        let conn = self.call.conn;
        let tops = crate::streams::tops(conn)?;
        let wire = WireScopes::load(conn)?;
        let mut ids: Vec<&str> = covered
            .iter()
            .filter(|c| c.origin == self.site)
            .map(|c| c.scope.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // Acks name own streams by wire id; only streams this device wrote count.
        for id in ids {
            let Some(scope) = wire.name_of(id, tops.keys().map(String::as_str)) else {
                continue;
            };
            let from = crate::acked::acked_in(conn, scope)?;
            let issued = tops.get(scope).copied().unwrap_or(0);
            let stream = StreamId::new(self.site, id);
            let top = crate::acked::extended(from, &stream, covered, issued);
            if top > from {
                crate::acked::record(conn, scope, top)?;
            }
        }
        self.drop_drained()
    }

    /// [`crate::regain::declared`] under the grant this device holds now.
    fn regain_inner(&mut self) -> Result<Vec<outpost_protocol::message::Regain>, SyncError> {
        let site = self.site;
        let grant = self.directory()?.grant_of(&site).map(|g| g.scopes.clone());
        Ok(crate::regain::declared(
            self.call.conn,
            site,
            grant.as_ref(),
        )?)
    }

    /// Drops the draining scopes whose own changes the relay now holds all of (`drain.rs`).
    fn drop_drained(&mut self) -> Result<(), SyncError> {
        let call = self.call;
        call.conn.exec("SAVEPOINT outpost_drop")?;
        let r = crate::drain::drop_drained(call);
        let dropped = crate::schema::finish_savepoint(call.conn, "outpost_drop", r)?;
        self.counts.scopes_dropped += dropped.len() as u64;
        Ok(())
    }

    /// Whether a pulled batch is of a scoped stream this device's grant does not hold
    /// (docs/design.md section 10, S1: a replica never advances its vector for such a stream).
    /// Without a grant known every stream is held, as the write checks take any scope then.
    fn outside_grant(&mut self, header: &BatchHeader) -> Result<bool, SyncError> {
        if header.stream.is_empty() {
            return Ok(false);
        }
        let site = self.site;
        Ok(self
            .directory()?
            .grant_of(&site)
            .is_some_and(|g| !g.scopes.contains(&header.stream)))
    }

    /// Verifies a pulled chunk and keeps it; applies the group once it is full.
    fn keep_inner(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<(), SyncError> {
        if self.outside_grant(header)? {
            log::warn!(
                "outpost_sync: batch {}..={} of stream {} is outside this device's grant: not applied",
                header.range.lo,
                header.range.hi,
                header.stream_id()
            );
            self.counts.outside_grant += 1;
            return Ok(());
        }
        // The session verified the signature of every batch whose origin `origin_key` knew; the
        // others wait for their key (docs/security.md, "Held batches").
        if self.holds(header)? {
            return Ok(());
        }
        // An `up` batch served as its signed clear header alone (its signature checked like
        // any): kept to cover its range in the group's transaction, with nothing to apply.
        let withheld = header.withheld && header.flags.direction == Direction::Up;
        if header.withheld && !withheld {
            self.flush_inner()?;
            return Err(SyncError::Engine(Error::Internal(format!(
                "the peer served batch {}..={} of origin {} as a withheld header, which only `up` \
                 batches may be",
                header.range.lo, header.range.hi, header.origin
            ))));
        }
        let verified = match withheld {
            true => Ok(()),
            false => codec::verify(batch, &Limits::default()).map(drop),
        };
        if let Err(e) = verified {
            // The chunks before it are good: apply them, then report the bad one.
            self.flush_inner()?;
            return Err(SyncError::Engine(
                crate::error::ApplyError::Decode(e).into(),
            ));
        }
        self.kept.push((header.clone(), batch.to_vec()));
        self.kept_bytes += batch.len();
        super::progress::kept(self.progress.as_deref(), batch.len() as u64);
        if self.kept.len() >= GROUP_CHUNKS || self.kept_bytes >= GROUP_BYTES {
            self.flush_inner()?;
        }
        Ok(())
    }

    /// Applies the kept chunks in one transaction with their vector advances. If a batch of the
    /// group is refused (not a SQLite failure or an interrupt), the chunks are applied one at a
    /// time, so those before the refused one are kept (as when each chunk was its own
    /// transaction) and the error names the refused one.
    fn flush_inner(&mut self) -> Result<(), SyncError> {
        if self.kept.is_empty() {
            return Ok(());
        }
        let kept = std::mem::take(&mut self.kept);
        self.kept_bytes = 0;
        let directory = self.directory()?.clone();
        let pulled = |chunks: &[(BatchHeader, Vec<u8>)]| -> Result<Value, Error> {
            let batches: Vec<Pulled> = chunks
                .iter()
                .map(|(h, b)| match h.withheld {
                    true => Pulled::Withheld(h),
                    false => Pulled::Whole(b),
                })
                .collect();
            apply_pulled(self.call, &batches, &directory)
        };
        let grouped = pulled(&kept);
        let mut done = 0;
        let r = match grouped {
            Ok(out) => {
                done = kept.len();
                self.applied(&kept, out)
            }
            Err(Error::Apply(_)) if kept.len() > 1 => kept.chunks(1).try_for_each(|one| {
                let out = pulled(one)?;
                done += 1;
                self.applied(one, out)
            }),
            Err(e) => Err(e.into()),
        };
        if done < kept.len() {
            let rest = &kept[done..];
            let bytes = rest.iter().map(|(_, b)| b.len() as u64).sum();
            super::progress::discarded(self.progress.as_deref(), rest.len() as u64, bytes);
        }
        r
    }

    /// Counts `chunks`, committed with the apply counts `out`.
    fn applied(&mut self, chunks: &[(BatchHeader, Vec<u8>)], out: Value) -> Result<(), SyncError> {
        let Value::Text(json) = out else {
            return Err(SyncError::Engine(Error::Internal(
                "outpost_apply returned no counts".into(),
            )));
        };
        let json: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| SyncError::Engine(Error::Internal(format!("apply counts: {e}"))))?;
        let c = &mut self.counts;
        c.applied += count(&json, "applied");
        c.unchanged += count(&json, "unchanged");
        c.conflicts += count(&json, "conflicts");
        c.quarantined += count(&json, "quarantined");
        let mut bytes = 0;
        for (header, batch) in chunks {
            c.pulled += header.range.hi - header.range.lo + 1;
            c.batches_pulled += 1;
            bytes += batch.len() as u64;
        }
        c.bytes_pulled += bytes;
        super::progress::applied(self.progress.as_deref(), chunks.len() as u64, bytes);
        Ok(())
    }
}

impl outpost_protocol::session::ClientStore for EngineStore<'_> {
    type Error = Failed;
    type ExportPlan = ExportPlan;

    fn vector(&mut self) -> Result<VersionVector, Failed> {
        let r = self.vector_inner();
        self.keep(r)
    }

    /// The key the directory knows for `origin` (its roots included): a pulled batch of a known
    /// origin must carry its signature. `None`: the batch is held (`apply_chunk`).
    fn origin_key(&mut self, origin: &SiteId) -> Result<Option<PublicKey>, Failed> {
        let r = self.directory().map(|d| d.key_of(origin));
        self.keep(r)
    }

    fn control_vector(&mut self) -> Result<ControlVector, Failed> {
        let r = self.directory().map(|d| d.vector());
        self.keep(r)
    }

    /// Accepted entries are stored in one transaction; refused ones are counted, never an
    /// error (the peer's stream brings them again).
    fn control_received(&mut self, entries: Vec<Vec<u8>>) -> Result<(), Failed> {
        let r = self.control_received_inner(entries);
        self.keep(r)
    }

    /// The draining scopes and their drain seqs (`drain.rs`).
    fn drains(&mut self) -> Result<Vec<outpost_protocol::message::Drain>, Failed> {
        let r = crate::drain::declared(self.call.conn).map_err(SyncError::from);
        self.keep(r)
    }

    /// The dropped scopes granted again whose own past batches to ask back (`regain.rs`).
    fn regain(&mut self) -> Result<Vec<outpost_protocol::message::Regain>, Failed> {
        let r = self.regain_inner();
        self.keep(r)
    }

    fn plan_export(&mut self, server: &VersionVector) -> Result<ExportPlan, Failed> {
        let r = self.plan_inner(server);
        self.keep(r)
    }

    fn next_export(&mut self, plan: &mut ExportPlan) -> Result<Option<Vec<u8>>, Failed> {
        let r = self.next_inner(plan).and_then(|next| {
            if next.is_none() {
                if let Some(mut cache) = self.export_cache.take() {
                    cache.release()?;
                }
            }
            Ok(next)
        });
        self.keep(r)
    }

    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), Failed> {
        for c in covered {
            self.counts.pushed += c.range.hi - c.range.lo + 1;
            self.counts.batches_pushed += 1;
        }
        let r = self.acknowledged_inner(covered);
        self.keep(r)
    }

    fn apply_chunk(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<(), Failed> {
        let r = self.keep_inner(header, batch);
        self.keep(r)
    }

    fn keys_received(&mut self, keys: &[SealedKeys]) -> Result<(), Failed> {
        let r = self.keys_received_inner(keys);
        self.keep(r)
    }

    fn flush(&mut self) -> Result<(), Failed> {
        let r = self.flush_inner();
        self.keep(r)
    }

    fn pull_size(&mut self, batches: u64, bytes: u64) -> Result<(), Failed> {
        super::progress::announced(self.progress.as_deref(), batches, bytes);
        Ok(())
    }

    fn id_requests(&mut self) -> Result<Vec<IdRequest>, Failed> {
        let r = crate::id_blocks::pending_requests(self.call.conn).map_err(SyncError::from);
        self.keep(r)
    }

    fn ids_granted(&mut self, request: &IdRequest, ranges: &[IdRange]) -> Result<(), Failed> {
        let r =
            crate::id_blocks::store_grant(self.call.conn, request, ranges).map_err(SyncError::from);
        let added = self.keep(r)?;
        if added > 0 {
            self.ids_granted.push((request.sequence.clone(), added));
        }
        Ok(())
    }
}
