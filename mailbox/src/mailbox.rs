//! The store: one SQLite file in WAL mode, `synchronous=FULL`.
//!
//! Tables (schema version 1, in `PRAGMA user_version`):
//! - `batches(id, origin, lo, hi, sha256, bytes, stream)`: every batch held, as received. Indexed
//!   by `(origin, stream, lo, hi)` (serving plans) and `(origin, stream, hi)` (coverage and
//!   overlap checks).
//! - `coverage(origin, stream, covered)`: per stream, the contiguous coverage the held ranges
//!   give. It is
//!   derived data, updated in the same transaction as the rows it derives from, and
//!   [`Mailbox::check`] recomputes it from the ranges to prove it (and the highest clock
//!   admitted from the batches' headers, `clock_bound.rs`).
//! - `pushes(session, digest, record)` (version 2): what a committed push session was answered
//!   with, written in the same transaction as its batches, so a retried commit gets the same ack
//!   ([`Mailbox::commit_push`], [`Mailbox::push_record`]). The record is opaque to the mailbox.
//! - Version 3, id blocks (`ids.rs`): `id_settings` (the allocation mode), `id_counters` (root:
//!   the next number per sequence), `id_grants` (every grant by (peer, request id), for retries),
//!   `id_pool` (delegated: ranges the cloud granted, not handed out yet), `id_demand` (requests
//!   the pool could not cover), `id_refills` (the uplink's own request per sequence, kept from
//!   before it is sent until its grant is stored).
//! - Version 4: `id_grants.granted_at` (unix seconds) for the devices' id quota, and
//!   `id_over_quota` (per sequence, the requests refused for it), shown in status.
//! - Version 5: the same tables, holding batches of format 2 (signed clear headers). A file of
//!   versions 1-4 holds format-1 batches and is refused as made by an older version
//!   ([`MailboxError::OlderVersion`]); nothing in it is changed. Also
//!   `control_entries(writer, seq, bytes)`: the accepted control entries (`control.rs`), a table
//!   created on every open (version 5 files made before it gain it empty), and
//!   `clock_admission` (`clock_bound.rs`): the highest clock of any batch stored and the pushes
//!   refused as stamped too far ahead, created at open (filled from the held batches) where
//!   missing.
//! - Version 6: streams (docs/design.md section 10): `batches.stream` (the clear header's scope
//!   id, `''` unscoped) and coverage keyed by `(origin, stream)`. A version-5 file is upgraded in
//!   place: every batch it holds is of the unscoped stream (no peer exported another before
//!   version 6), so its coverage carries over as the unscoped stream's. Also `drains(origin,
//!   scope, last)` (`drains.rs`): the drains devices declared, created at every open where
//!   missing (a file made before it gains it empty).
//! - `damaged(origin, stream, lo, hi, found_at)` (`damage.rs`): the damaged batches found before
//!   serving and removed, created at every open where missing.

use crate::control::{ControlCache, CONTROL_SCHEMA};
use crate::damage;
use crate::error::MailboxError;
use crate::plan::{plan, Candidate};
use outpost_protocol::batch::codec::{verify, Limits};
use outpost_protocol::message::Regain;
use outpost_protocol::scope::Scopes;
use outpost_protocol::{Hlc, SeqRange, SiteId, StreamId, VersionVector};
use outpost_sql::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCHEMA_VERSION: i64 = 6;

/// The PostgreSQL channel a mailbox there notifies at each commit that stored batches, so that
/// every process serving from it tells its live peers (one process's relay cannot).
pub const COMMIT_CHANNEL: &str = "outpost_mailbox";
/// Versions 1-4 were the first wave's, holding format-1 batches (unsigned, no clear header) that
/// no peer of this build reads: such a file is refused, never upgraded.
const FIRST_FORMAT_2_VERSION: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY,
    origin BLOB NOT NULL CHECK (length(origin) = 16),
    lo INTEGER NOT NULL CHECK (lo >= 1),
    hi INTEGER NOT NULL CHECK (hi >= lo),
    sha256 BLOB NOT NULL CHECK (length(sha256) = 32),
    bytes BLOB NOT NULL,
    stream TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS batches_by_stream_lo ON batches(origin, stream, lo, hi);
CREATE INDEX IF NOT EXISTS batches_by_stream_hi ON batches(origin, stream, hi);
CREATE TABLE IF NOT EXISTS coverage(
    origin BLOB NOT NULL CHECK (length(origin) = 16),
    stream TEXT NOT NULL DEFAULT '',
    covered INTEGER NOT NULL CHECK (covered >= 1),
    PRIMARY KEY (origin, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pushes(
    session BLOB PRIMARY KEY CHECK (length(session) = 16),
    digest BLOB NOT NULL CHECK (length(digest) = 32),
    record BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_settings(
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_counters(
    sequence TEXT PRIMARY KEY,
    next INTEGER NOT NULL CHECK (next >= 1)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_grants(
    peer BLOB NOT NULL CHECK (length(peer) = 16),
    request BLOB NOT NULL CHECK (length(request) = 16),
    sequence TEXT NOT NULL,
    count INTEGER NOT NULL,
    ranges BLOB NOT NULL,
    granted_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, request)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_pool(
    sequence TEXT NOT NULL,
    first INTEGER NOT NULL CHECK (first >= 1),
    last INTEGER NOT NULL CHECK (last >= first),
    PRIMARY KEY (sequence, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_demand(
    peer BLOB NOT NULL CHECK (length(peer) = 16),
    request BLOB NOT NULL CHECK (length(request) = 16),
    sequence TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (peer, request)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_refills(
    request BLOB PRIMARY KEY CHECK (length(request) = 16),
    sequence TEXT NOT NULL UNIQUE,
    count INTEGER NOT NULL,
    above INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_over_quota(
    sequence TEXT PRIMARY KEY,
    refused INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 5 to 6: batches gain their stream, coverage is keyed by stream. Every batch a
/// version-5 file holds is of the unscoped stream.
const TO_STREAMS: &str = "
ALTER TABLE batches ADD COLUMN stream TEXT NOT NULL DEFAULT '';
DROP INDEX IF EXISTS batches_by_lo;
DROP INDEX IF EXISTS batches_by_hi;
ALTER TABLE coverage RENAME TO coverage_v5;
CREATE TABLE coverage(
    origin BLOB NOT NULL CHECK (length(origin) = 16),
    stream TEXT NOT NULL DEFAULT '',
    covered INTEGER NOT NULL CHECK (covered >= 1),
    PRIMARY KEY (origin, stream)
) WITHOUT ROWID;
INSERT INTO coverage(origin, stream, covered) SELECT origin, '', covered FROM coverage_v5;
DROP TABLE coverage_v5;
";

/// What a push session was committed with: the digest of its content and the caller's record
/// (for the protocol, the ack it sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRecord {
    /// The digest of the pushed content, as the caller computed it.
    pub digest: [u8; 32],
    /// The caller's record, stored and returned as is.
    pub record: Vec<u8>,
}

/// A batch whose header was validated, ready to commit. Built by [`Mailbox::stage`]; holds the
/// encoded bytes unchanged (the mailbox stores and serves exactly what it received).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedBatch {
    /// The origin named by the header.
    pub origin: SiteId,
    /// The stream (scope id) named by the header.
    pub scope: String,
    /// The seq range named by the header.
    pub range: SeqRange,
    /// The header's body hash: the batch's identity in acks.
    pub sha256: [u8; 32],
    /// The header's largest clock (raises the highest clock admitted, `clock_bound.rs`).
    pub max_hlc: Hlc,
    /// The encoded batch, as received.
    pub bytes: Vec<u8>,
}

/// A batch to commit, borrowed: what [`Mailbox::commit_inner`] writes. The protocol's server
/// commits its staged batches through this, so a commit does not copy a whole push (up to the
/// relay's staging cap) before writing it.
pub(crate) struct BatchRef<'a> {
    pub(crate) origin: SiteId,
    pub(crate) scope: &'a str,
    pub(crate) range: SeqRange,
    pub(crate) sha256: [u8; 32],
    pub(crate) max_hlc: Hlc,
    pub(crate) bytes: &'a [u8],
}

impl Receipt {
    /// The batch's stream.
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(self.origin, self.scope.as_str())
    }
}

impl OriginStatus {
    /// The stream these figures are of.
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(self.origin, self.scope.as_str())
    }
}

impl StoredBatch {
    /// The batch's stream.
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(self.origin, self.scope.as_str())
    }
}

impl StagedBatch {
    fn borrowed(&self) -> BatchRef<'_> {
        BatchRef {
            origin: self.origin,
            scope: &self.scope,
            range: self.range,
            sha256: self.sha256,
            max_hlc: self.max_hlc,
            bytes: &self.bytes,
        }
    }
}

/// What a commit did with one staged batch, in staging order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The batch's origin.
    pub origin: SiteId,
    /// The batch's stream.
    pub scope: String,
    /// The batch's range.
    pub range: SeqRange,
    /// The batch's body hash.
    pub sha256: [u8; 32],
    /// True when the batch was written; false when every seq of it was already held (a retry or
    /// a duplicate), in which case nothing changed.
    pub stored: bool,
    /// True when the mailbox's contiguous coverage of the stream now includes the whole range:
    /// only such ranges may be acknowledged to a client. False for a batch held beyond a gap.
    pub covered: bool,
}

/// One batch as served: header fields the router used, and the bytes as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    /// The origin.
    pub origin: SiteId,
    /// The stream.
    pub scope: String,
    /// The seq range.
    pub range: SeqRange,
    /// The body hash.
    pub sha256: [u8; 32],
    /// The encoded batch.
    pub bytes: Vec<u8>,
}

/// Per-stream figures for status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginStatus {
    /// The origin.
    pub origin: SiteId,
    /// The stream (scope id; `""` unscoped).
    pub scope: String,
    /// Batches held.
    pub batches: u64,
    /// Encoded bytes held.
    pub bytes: u64,
    /// Contiguous coverage (what the mailbox can serve).
    pub covered: u64,
    /// The highest seq held, beyond a gap when larger than `covered`.
    pub highest: u64,
}

/// Figures for status pages.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    /// Batches held, all origins.
    pub batches: u64,
    /// Encoded bytes held, all origins.
    pub bytes: u64,
    /// Per stream, in (origin, stream) order.
    pub origins: Vec<OriginStatus>,
    /// Damaged batches found before serving and removed so far (`damage.rs`): each one's
    /// range was fetched again, or will be.
    pub damaged: u64,
}

/// The durable batch store. One connection; open one per thread (SQLite serialises writers and
/// lets readers run beside them in WAL mode).
pub struct Mailbox {
    pub(crate) conn: Connection,
    path: PathBuf,
    limits: Limits,
    pub(crate) control: ControlCache,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("path", &self.path).finish()
    }
}

fn to_i64(origin: SiteId, range: SeqRange) -> Result<(i64, i64), MailboxError> {
    match (i64::try_from(range.lo), i64::try_from(range.hi)) {
        (Ok(lo), Ok(hi)) => Ok((lo, hi)),
        _ => Err(MailboxError::SeqTooLarge { origin, range }),
    }
}

/// Has PostgreSQL store the batches' bytes uncompressed: peers send them so (devices encode
/// without compression), and the default storage compressed each with pglz as it was stored and
/// inflated it at every read, the mailbox's largest cost in the cloud's ingest (3.5 s of the
/// server's time for 81 MB, docs/performance.md). Set once: the statement takes the table's
/// strongest lock, so an open that finds it set sends nothing. Only the table's owner may set
/// it: a process running as another role serves as before (compressing), and says why.
#[cfg(feature = "postgres")]
fn store_uncompressed(conn: &Connection) {
    let compressed = conn.query_row(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('batches') \
         AND attname = 'bytes' AND attstorage <> 'e'",
        (),
        |r| r.get::<_, i64>(0),
    );
    let set = match compressed {
        Ok(0) => return,
        Ok(_) => conn.execute_batch("ALTER TABLE batches ALTER COLUMN bytes SET STORAGE EXTERNAL"),
        Err(e) => Err(e),
    };
    if let Err(e) = set {
        log::warn!(
            "the mailbox's batches stay compressed by PostgreSQL (the table's owner can store \
             them uncompressed): {e}"
        );
    }
}

impl Mailbox {
    /// Opens (creating if needed) the mailbox at `path`, with the codec's default limits.
    pub fn open(path: impl AsRef<Path>) -> Result<Mailbox, MailboxError> {
        Self::open_with_limits(path, Limits::default())
    }

    /// Opens (creating if needed) the mailbox at `path`; `limits` bound what [`Mailbox::stage`]
    /// accepts.
    pub fn open_with_limits(
        path: impl AsRef<Path>,
        limits: Limits,
    ) -> Result<Mailbox, MailboxError> {
        let path = path.as_ref().to_path_buf();
        let sql = |source: rusqlite::Error| MailboxError::Sqlite {
            path: path.clone(),
            source: source.into(),
        };
        let conn = rusqlite::Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(MailboxError::Corrupt {
                path,
                detail: format!("could not switch to WAL mode (journal_mode is {mode})"),
            });
        }
        // FULL: in WAL mode every commit fsyncs the WAL, so a commit that returned survives power
        // loss. Every mailbox commit precedes an ack, so there is no cheaper commit to allow.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if found > SCHEMA_VERSION {
            return Err(MailboxError::SchemaVersion {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found != 0 && found < FIRST_FORMAT_2_VERSION {
            return Err(MailboxError::OlderVersion { path, found });
        }
        if found < SCHEMA_VERSION {
            let upgrade = if found == 5 { TO_STREAMS } else { "" };
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {upgrade} {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sql)?;
        }
        Mailbox::with_tables(conn.into(), path, limits)
    }

    /// The mailbox of a cloud whose tenant is in PostgreSQL: its tables in schema `schema` of
    /// `client`'s database (made if missing), shared by every process serving the tenant. Its
    /// write transactions take the schema's advisory lock, as SQLite's file takes one writer.
    /// `location` names it in errors (never with a password).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(
        client: postgres::Client,
        schema: &str,
        location: &str,
        limits: Limits,
    ) -> Result<Mailbox, MailboxError> {
        let path = PathBuf::from(location);
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::postgres(client, schema).map_err(sql)?;
        let found = conn
            .make_postgres_tables(SCHEMA, SCHEMA_VERSION)
            .map_err(sql)?;
        if found != SCHEMA_VERSION {
            return Err(MailboxError::SchemaVersion {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        store_uncompressed(&conn);
        Mailbox::with_tables(conn, path, limits)
    }

    /// Makes the tables every open adds where missing, over `conn`.
    fn with_tables(
        conn: Connection,
        path: PathBuf,
        limits: Limits,
    ) -> Result<Mailbox, MailboxError> {
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        conn.execute_batch(CONTROL_SCHEMA).map_err(sql)?;
        conn.execute_batch(crate::behind::BEHIND_SCHEMA)
            .map_err(sql)?;
        conn.execute_batch(crate::drains::DRAINS_SCHEMA)
            .map_err(sql)?;
        conn.execute_batch(crate::voids::VOIDS_SCHEMA)
            .map_err(sql)?;
        conn.execute_batch(crate::scope_keys::KEYS_SCHEMA)
            .map_err(sql)?;
        conn.execute_batch(crate::damage::DAMAGE_SCHEMA)
            .map_err(sql)?;
        let mut conn = conn;
        crate::clock_bound::ensure(&mut conn).map_err(sql)?;
        Ok(Mailbox {
            conn,
            path,
            limits,
            control: ControlCache::default(),
        })
    }

    /// The mailbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn sql(&self, source: outpost_sql::Error) -> MailboxError {
        MailboxError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Validates one incoming batch and keeps its bytes for [`Mailbox::commit`]: the header, the
    /// body's length and its SHA-256 against the header (`codec::verify`; rows are never parsed),
    /// so the mailbox never stores, acknowledges or relays a batch that no peer could apply. `index` is the batch's position in what the peer sent, for
    /// error messages.
    pub fn stage(&self, index: usize, bytes: Vec<u8>) -> Result<StagedBatch, MailboxError> {
        let header = verify(&bytes, &self.limits)
            .map_err(|source| MailboxError::Decode { index, source })?;
        to_i64(header.origin, header.range)?;
        Ok(StagedBatch {
            origin: header.origin,
            scope: header.stream,
            range: header.range,
            sha256: header.body_sha256,
            max_hlc: header.max_hlc,
            bytes,
        })
    }

    /// Stores `batches` in one transaction, fsynced before returning, and reports, per batch in
    /// order, whether it was written and whether the origin's coverage now includes it.
    ///
    /// Idempotent: a batch every seq of which is already held (by one or several held batches) is
    /// not written again and is reported with `stored: false`. A batch overlapping held ones only
    /// in part is written (it is the only way to hold its other seqs); serving then chooses among
    /// overlapping batches (see [`Mailbox::batches_for`]). On error nothing is stored.
    pub fn commit(&mut self, batches: &[StagedBatch]) -> Result<Vec<Receipt>, MailboxError> {
        let batches: Vec<BatchRef<'_>> = batches.iter().map(StagedBatch::borrowed).collect();
        self.commit_inner(&batches, None)
    }

    /// Like [`Mailbox::commit`], and records `record` under push session `session` in the same
    /// transaction, but only if every batch is covered afterwards: a push that would leave any of
    /// its batches beyond a gap stores nothing and fails with [`MailboxError::NotCovered`], so
    /// nothing is ever acknowledged that a peer could not be served.
    pub fn commit_push(
        &mut self,
        session: &[u8; 16],
        record: &PushRecord,
        batches: &[StagedBatch],
    ) -> Result<Vec<Receipt>, MailboxError> {
        let batches: Vec<BatchRef<'_>> = batches.iter().map(StagedBatch::borrowed).collect();
        self.commit_inner(&batches, Some((session, record)))
    }

    /// The record of a committed push session, if any.
    pub fn push_record(&self, session: &[u8; 16]) -> Result<Option<PushRecord>, MailboxError> {
        let row = self
            .conn
            .prepare_cached("SELECT digest, record FROM pushes WHERE session = ?1")
            .and_then(|mut st| {
                st.query_row([session], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()
            })
            .map_err(|e| self.sql(e))?;
        row.map(|(digest, record)| {
            Ok(PushRecord {
                digest: <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| {
                    MailboxError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("push record with a {}-byte digest", digest.len()),
                    }
                })?,
                record,
            })
        })
        .transpose()
    }

    pub(crate) fn commit_inner(
        &mut self,
        batches: &[BatchRef<'_>],
        push: Option<(&[u8; 16], &PushRecord)>,
    ) -> Result<Vec<Receipt>, MailboxError> {
        let path = self.path.clone();
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let mut stored = Vec::with_capacity(batches.len());
        let mut touched = BTreeSet::new();
        let mut highest = Hlc::ZERO;
        // Verified when staged: served without checking again (`damage.rs`).
        let mut good = Vec::new();
        for b in batches {
            let (lo, hi) = to_i64(b.origin, b.range)?;
            let held = fully_held(&tx, &b.origin, b.scope, lo, hi).map_err(sql)?;
            if !held {
                let id: i64 = tx
                    .query_row(
                        "INSERT INTO batches(origin, stream, lo, hi, sha256, bytes) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                        params![b.origin.as_bytes(), b.scope, lo, hi, b.sha256, b.bytes],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                good.push((id, b.sha256));
                touched.insert((b.origin, b.scope));
                highest = highest.max(b.max_hlc);
            }
            stored.push(!held);
        }
        crate::clock_bound::raise(&tx, highest).map_err(sql)?;
        if !tx.is_sqlite() && !good.is_empty() {
            // Delivered at the commit, to every listening session of every process.
            tx.execute("SELECT pg_notify(?1, '')", [COMMIT_CHANNEL])
                .map_err(sql)?;
        }
        for (origin, scope) in &touched {
            advance_coverage(&tx, origin, scope).map_err(sql)?;
        }
        let mut receipts = Vec::with_capacity(batches.len());
        for (b, stored) in batches.iter().zip(stored) {
            let covered = coverage_of(&tx, &b.origin, b.scope).map_err(sql)?;
            receipts.push(Receipt {
                origin: b.origin,
                scope: b.scope.to_string(),
                range: b.range,
                sha256: b.sha256,
                stored,
                covered: covered >= b.range.hi,
            });
        }
        if let Some((session, record)) = push {
            if let Some(r) = receipts.iter().find(|r| !r.covered) {
                return Err(MailboxError::NotCovered {
                    origin: r.stream_id(),
                    range: r.range,
                });
            }
            tx.execute(
                "INSERT INTO pushes(session, digest, record) VALUES (?1, ?2, ?3)",
                params![session, record.digest, record.record],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        damage::note_good(&self.path, good);
        Ok(receipts)
    }

    /// Validates and commits in one call: [`Mailbox::stage`] each of `batches`, then
    /// [`Mailbox::commit`] them together. Any invalid batch fails the whole set, storing nothing.
    pub fn store(&mut self, batches: Vec<Vec<u8>>) -> Result<Vec<Receipt>, MailboxError> {
        let staged = batches
            .into_iter()
            .enumerate()
            .map(|(i, b)| self.stage(i, b))
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(&staged)
    }

    /// The mailbox's version vector: per stream, the contiguous coverage of the held ranges.
    pub fn vector(&self) -> Result<VersionVector, MailboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT origin, stream, covered FROM coverage")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map((), |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut v = VersionVector::new();
        for row in rows {
            let (origin, scope, covered) = row.map_err(|e| self.sql(e))?;
            v.set(StreamId::new(self.site(&origin)?, scope), covered as u64);
        }
        Ok(v)
    }

    fn site(&self, bytes: &[u8]) -> Result<SiteId, MailboxError> {
        SiteId::from_slice(bytes).ok_or_else(|| MailboxError::Corrupt {
            path: self.path.clone(),
            detail: format!("an origin of {} bytes instead of 16", bytes.len()),
        })
    }

    /// The held batches a peer whose vector is `vector` lacks, in stream order and, per stream, in
    /// seq order; never batches of `exclude` (the requester's own origin), and only streams of
    /// scopes in `grant` (the unscoped stream is every grant's).
    ///
    /// Per stream, serving starts at the peer's coverage + 1 and follows held batches as far as
    /// they reach without a gap, choosing among overlapping batches the way that repeats the fewest
    /// seqs the peer already has or was just sent (see the `plan` module): a gapless chain of held
    /// batches is served exactly, with no seq twice. A batch wholly covered by `vector` is never
    /// sent. Bodies are read one row at a time as the iterator advances; the plan itself (row ids,
    /// 8 bytes per batch) is made up front, so its size is known before the first batch.
    pub fn batches_for(
        &self,
        vector: &VersionVector,
        exclude: Option<SiteId>,
        grant: &Scopes,
    ) -> Result<Batches<'_>, MailboxError> {
        Ok(Batches {
            mailbox: self,
            plan: self.pull_plan(vector, exclude, grant)?,
        })
    }

    /// The same as [`Mailbox::batches_for`], as an owned plan to advance with
    /// [`Mailbox::next_batch`] (for callers that hold the plan and the mailbox apart).
    pub fn pull_plan(
        &self,
        vector: &VersionVector,
        exclude: Option<SiteId>,
        grant: &Scopes,
    ) -> Result<PullPlan, MailboxError> {
        self.pull_plan_regaining(vector, exclude, &[], grant)
    }

    /// [`Mailbox::pull_plan`] for a device regaining dropped scopes (docs/design.md section
    /// 10, "Regrants"): of origin `exclude` (the device's own), the streams of the scopes in
    /// `regain` are planned too, from their `since` rather than from `vector` (which states the
    /// device's own tops, all it ever wrote); the rest of that origin stays excluded.
    pub fn pull_plan_regaining(
        &self,
        vector: &VersionVector,
        exclude: Option<SiteId>,
        regain: &[Regain],
        grant: &Scopes,
    ) -> Result<PullPlan, MailboxError> {
        let mine = self.vector()?;
        let from = |s: &StreamId| match Some(s.origin) == exclude {
            false => Some(vector.get(s)),
            true => regain.iter().find(|r| r.scope == s.scope).map(|r| r.since),
        };
        let mut ids = Vec::new();
        for (n, (stream, &covered)) in mine.iter().filter(|(s, _)| in_grant(grant, s)).enumerate() {
            match from(stream) {
                Some(from) if covered > from => {
                    let planned = self.plan_stream(stream, from)?;
                    ids.extend(planned.into_iter().map(|id| (n, id)));
                }
                _ => {}
            }
        }
        // The stored lengths, not the bodies: SQLite answers `length()` of a blob from its
        // record header without reading overflow pages.
        let mut length = self
            .conn
            .prepare_cached("SELECT length(bytes) FROM batches WHERE id = ?1")
            .map_err(|e| self.sql(e))?;
        let mut bytes = 0u64;
        for (_, id) in &ids {
            let n: i64 = length
                .query_row([id], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            bytes += n as u64;
        }
        Ok(PullPlan {
            batches: ids.len() as u64,
            bytes,
            ids: ids.into_iter(),
            cut: BTreeSet::new(),
        })
    }

    /// The next batch of `plan`, read from the file now and checked against its stored hash
    /// (`damage.rs`); `None` when the plan is done. A damaged batch is never served: it is
    /// removed, its stream's coverage drops below it, and the rest of that stream is left out
    /// of this plan (a peer is never sent a gap); the other streams go on.
    pub fn next_batch(&self, plan: &mut PullPlan) -> Result<Option<StoredBatch>, MailboxError> {
        for (stream, id) in plan.ids.by_ref() {
            if plan.cut.contains(&stream) {
                continue;
            }
            match self.batch_by_id(id)? {
                Some(batch) => return Ok(Some(batch)),
                None => {
                    plan.cut.insert(stream);
                }
            }
        }
        Ok(None)
    }

    /// The held batches to serve of `stream` above `from`. A voided range (`voids.rs`) is a
    /// step of the plan that sends nothing (id 0): the batches inside it are never served, and
    /// those after it are.
    fn plan_stream(&self, stream: &StreamId, from: u64) -> Result<Vec<i64>, MailboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT lo, hi, id FROM batches b WHERE origin = ?1 AND stream = ?2 AND hi > ?3 \
                 AND NOT EXISTS (SELECT 1 FROM voids v WHERE v.origin = b.origin \
                     AND v.stream = b.stream AND v.lo <= b.lo AND b.hi <= v.hi) \
                 UNION ALL \
                 SELECT lo, hi, 0 FROM voids WHERE origin = ?1 AND stream = ?2 AND hi > ?3 \
                 ORDER BY 1, 2",
            )
            .map_err(|e| self.sql(e))?;
        let from_i = i64::try_from(from).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![stream.origin.as_bytes(), stream.scope, from_i],
                |r| {
                    Ok(Candidate {
                        lo: r.get::<_, i64>(0)? as u64,
                        hi: r.get::<_, i64>(1)? as u64,
                        id: r.get(2)?,
                    })
                },
            )
            .map_err(|e| self.sql(e))?;
        let candidates = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        let mut ids = plan(from, &candidates);
        ids.retain(|&id| id != 0);
        Ok(ids)
    }

    /// The batch of row `id`, checked (`damage.rs`); `None` when it was damaged (and is now
    /// removed) or is gone (another connection removed it as damaged since the plan was made).
    fn batch_by_id(&self, id: i64) -> Result<Option<StoredBatch>, MailboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT origin, lo, hi, sha256, bytes, stream FROM batches WHERE id = ?1",
            )
            .map_err(|e| self.sql(e))?;
        let row = stmt
            .query_row([id], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        let Some((origin, lo, hi, sha, bytes, scope)) = row else {
            return Ok(None);
        };
        let corrupt = |detail: String| MailboxError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let batch = StoredBatch {
            origin: self.site(&origin)?,
            scope,
            range: SeqRange::new(lo as u64, hi as u64)
                .ok_or_else(|| corrupt(format!("batch row {id} has range {lo}..={hi}")))?,
            sha256: <[u8; 32]>::try_from(sha.as_slice())
                .map_err(|_| corrupt(format!("batch row {id} has a {}-byte hash", sha.len())))?,
            bytes,
        };
        let row = damage::Row {
            id,
            origin: batch.origin,
            stream: &batch.scope,
            range: batch.range,
            sha256: &batch.sha256,
            bytes: &batch.bytes,
        };
        if damage::known_good(&self.path, id, &batch.sha256) {
            return Ok(Some(batch));
        }
        match damage::check(&row) {
            Ok(()) => {
                damage::note_good(&self.path, [(id, batch.sha256)]);
                Ok(Some(batch))
            }
            Err(damage) => {
                self.remove_damaged(&row, &damage)?;
                Ok(None)
            }
        }
    }

    /// What a peer whose vector is `vector` lacks of this mailbox's coverage, never counting
    /// origin `exclude`: (seqs, batches holding some of them), over every stream. For status
    /// pages (the hub's uplink backlog); reads no batch body.
    pub fn backlog(
        &self,
        vector: &VersionVector,
        exclude: Option<SiteId>,
    ) -> Result<(u64, u64), MailboxError> {
        let mut seqs = 0;
        let mut batches = 0;
        let mut count = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM batches \
                 WHERE origin = ?1 AND stream = ?2 AND hi > ?3 AND lo <= ?4",
            )
            .map_err(|e| self.sql(e))?;
        for (stream, &covered) in self.vector()?.iter() {
            let theirs = vector.get(stream);
            if Some(stream.origin) == exclude || covered <= theirs {
                continue;
            }
            seqs += covered - theirs;
            let n: i64 = count
                .query_row(
                    outpost_sql::params![
                        stream.origin.as_bytes(),
                        stream.scope,
                        theirs as i64,
                        covered as i64
                    ],
                    |r| r.get(0),
                )
                .map_err(|e| self.sql(e))?;
            batches += n as u64;
        }
        Ok((seqs, batches))
    }

    /// Figures for status pages: batches and bytes held, per origin and in all.
    pub fn status(&self) -> Result<MailboxStatus, MailboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT b.origin, count(*), sum(length(b.bytes)), max(b.hi), \
                 coalesce((SELECT covered FROM coverage c \
                           WHERE c.origin = b.origin AND c.stream = b.stream), 0), b.stream \
                 FROM batches b GROUP BY b.origin, b.stream ORDER BY b.origin, b.stream",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map((), |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut status = MailboxStatus::default();
        for row in rows {
            let (origin, batches, bytes, highest, covered, scope) = row.map_err(|e| self.sql(e))?;
            let o = OriginStatus {
                origin: self.site(&origin)?,
                scope,
                batches: batches as u64,
                bytes: bytes as u64,
                covered: covered as u64,
                highest: highest as u64,
            };
            status.batches += o.batches;
            status.bytes += o.bytes;
            status.origins.push(o);
        }
        status.damaged = self.damaged_count()?;
        Ok(status)
    }

    /// Verifies the file: SQLite's `integrity_check`, then the stored coverage against coverage
    /// recomputed from the held ranges. Read-only.
    pub fn check(&self) -> Result<(), MailboxError> {
        let corrupt = |detail: String| MailboxError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let verdict: String = self.conn.integrity_check().map_err(|e| self.sql(e))?;
        if verdict != "ok" {
            return Err(corrupt(format!("integrity_check: {verdict}")));
        }
        // Voided ranges count as held (`voids.rs`).
        let mut stmt = self
            .conn
            .prepare(
                "SELECT origin, stream, lo, hi FROM batches \
                 UNION ALL SELECT origin, stream, lo, hi FROM voids ORDER BY 1, 2, 3",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map((), |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut recomputed = VersionVector::new();
        for row in rows {
            let (origin, scope, lo, hi) = row.map_err(|e| self.sql(e))?;
            let stream = StreamId::new(self.site(&origin)?, scope);
            let range = SeqRange::new(lo, hi)
                .ok_or_else(|| corrupt(format!("a batch of {stream} has range {lo}..={hi}")))?;
            // Rows come in lo order, so a gap stops coverage for good; later ranges are ignored.
            let _ = recomputed.advance(stream, range);
        }
        let stored = self.vector()?;
        if stored != recomputed {
            return Err(corrupt(format!(
                "stored coverage {stored:?} differs from the held ranges' {recomputed:?}"
            )));
        }
        crate::clock_bound::check(&self.conn).map_err(|e| match e {
            crate::clock_bound::CheckError::Sqlite(e) => self.sql(e),
            crate::clock_bound::CheckError::Differs { stored, held } => corrupt(format!(
                "highest clock admitted {stored:?} differs from the held batches' {held:?}"
            )),
        })?;
        Ok(())
    }
}

/// True when `stream` is served to a peer granted `grant`: the unscoped stream always.
fn in_grant(grant: &Scopes, stream: &StreamId) -> bool {
    stream.is_unscoped() || grant.contains(&stream.scope)
}

/// True when every seq of `lo..=hi` of the stream `(origin, scope)` is in some held batch.
fn fully_held(
    conn: &Connection,
    origin: &SiteId,
    scope: &str,
    lo: i64,
    hi: i64,
) -> Result<bool, outpost_sql::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT lo, hi FROM batches WHERE origin = ?1 AND stream = ?2 AND hi >= ?3 AND lo <= ?4 \
         ORDER BY lo",
    )?;
    let rows = stmt.query_map(params![origin.as_bytes(), scope, lo, hi], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut need = lo; // first seq not yet known to be held
    for row in rows {
        let (l, h) = row?;
        if l > need {
            return Ok(false);
        }
        if h >= need {
            need = h + 1;
            if need > hi {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn coverage_of(conn: &Connection, origin: &SiteId, scope: &str) -> Result<u64, outpost_sql::Error> {
    Ok(conn
        .prepare_cached("SELECT covered FROM coverage WHERE origin = ?1 AND stream = ?2")?
        .query_row(params![origin.as_bytes(), scope], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0) as u64)
}

/// Extends the stored coverage of the stream `(origin, scope)` over held ranges, and voided
/// ones (`voids.rs`), that now touch it.
pub(crate) fn advance_coverage(
    conn: &Connection,
    origin: &SiteId,
    scope: &str,
) -> Result<(), outpost_sql::Error> {
    let before = coverage_of(conn, origin, scope)? as i64;
    let mut covered = before;
    let mut held = conn.prepare_cached(
        "SELECT max(hi) FROM batches WHERE origin = ?1 AND stream = ?2 AND hi > ?3 AND lo <= ?3 + 1",
    )?;
    let mut voided = conn.prepare_cached(
        "SELECT max(hi) FROM voids WHERE origin = ?1 AND stream = ?2 AND hi > ?3 AND lo <= ?3 + 1",
    )?;
    loop {
        let at = params![origin.as_bytes(), scope, covered];
        let next = match held.query_row(at, |r| r.get::<_, Option<i64>>(0))? {
            Some(hi) => Some(hi),
            None => voided.query_row(at, |r| r.get::<_, Option<i64>>(0))?,
        };
        match next {
            Some(hi) => covered = hi,
            None => break,
        }
    }
    if covered > before {
        conn.execute(
            "INSERT INTO coverage(origin, stream, covered) VALUES (?1, ?2, ?3) \
             ON CONFLICT(origin, stream) DO UPDATE SET covered = excluded.covered",
            params![origin.as_bytes(), scope, covered],
        )?;
    }
    Ok(())
}

/// A pull in progress: the row ids still to serve (planned when the pull starts, so its size is
/// known up front; bodies are read one at a time).
#[derive(Debug)]
pub struct PullPlan {
    /// (the stream's position in the plan, row id), in send order.
    ids: std::vec::IntoIter<(usize, i64)>,
    /// The streams in which a damaged batch was found during this pull: nothing more of them
    /// is served by it.
    cut: BTreeSet<usize>,
    batches: u64,
    bytes: u64,
}

impl PullPlan {
    /// The whole plan's size as planned: (batches, encoded bytes).
    pub fn size(&self) -> (u64, u64) {
        (self.batches, self.bytes)
    }
}

/// The batches a peer lacks, read one at a time: see [`Mailbox::batches_for`].
pub struct Batches<'m> {
    mailbox: &'m Mailbox,
    plan: PullPlan,
}

impl Iterator for Batches<'_> {
    type Item = Result<StoredBatch, MailboxError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.mailbox.next_batch(&mut self.plan).transpose()
    }
}
