//! The tenant database: the app's real tables, written only through the engine.
//!
//! Two directions, both idempotent and restartable at any point:
//! - **ingest** (mailbox → tables): the batches the mailbox holds and the tenant's version vector
//!   lacks, per origin in seq order, each applied with `outpost_apply` (one transaction with the
//!   vector advance) after its header's tables were created or widened (`schema.rs`). A batch
//!   refused for what its bytes alone say (it does not decode within its memory budget, or its
//!   header's schema is refused) is recorded with its reason and skipped (`tenant/refused.rs`): the
//!   same decision on every replica, and the origin's later batches go on. A batch that fails to
//!   apply for any other reason (SQLite, a table here with another key) stays in the mailbox
//!   (nothing is ever removed from it) and stops its origin for this round; the next round
//!   retries it. Changes the engine cannot apply go to its `outpost_quarantine` and never block.
//! - **export** (tables → mailbox): the cloud's own changes (operator writes, REST pushes, parents
//!   the engine restored) with `outpost_changes`, from the mailbox's coverage of the cloud's
//!   origin, stored as batches of that origin so hubs and devices pull them like any other.

use crate::changelog::{self, ChangelogError};
use crate::error_chain::Chain;
use crate::schema::{self, SchemaError};
use crate::scope_rules::TenantRules;
use outpost_embed::EngineError;
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::batch::codec;
use outpost_protocol::batch::{BatchFlags, Direction};
use outpost_protocol::control::{Directory, VoidReason};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::scope::Scopes;
use outpost_protocol::{SiteId, StreamId, VersionVector};
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod keys;
mod origin_grant;
mod refused;
mod void;

pub use refused::RefusedBatch;

/// Largest batch the cloud exports (the engine cuts at a seq boundary).
pub const EXPORT_BATCH_BYTES: i64 = 1 << 20;

/// Milliseconds since the Unix epoch (when a batch was refused; informative only).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The tenant's table settings, from the cloud's control stream.
fn declared_directions(mailbox: &mut Mailbox) -> Result<BTreeMap<String, Direction>, TenantError> {
    Ok(directions_of(mailbox.directory()?))
}

/// The table directions `directory` states.
fn directions_of(directory: &Directory) -> BTreeMap<String, Direction> {
    directory
        .tables()
        .map(|(n, d)| (n.to_string(), d))
        .collect()
}

/// The tenant database connection.
#[derive(Debug)]
pub struct Tenant {
    conn: Connection,
    path: PathBuf,
    site: SiteId,
    /// The batches refused by an earlier build were published as voided (once per open).
    voids_published: bool,
}

/// Why the tenant database could not be opened, read, ingested into or exported from. (A batch
/// that fails to apply is not an error of the ingest: it is listed in [`Ingested::failures`].)
#[derive(Debug)]
pub enum TenantError {
    /// The engine could not be registered with SQLite.
    Engine(EngineError),
    /// Opening or configuring the tenant database failed.
    Open {
        /// The tenant database.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// `outpost_vector()` failed.
    ReadVector {
        /// The tenant database.
        path: PathBuf,
        /// The engine's error.
        source: rusqlite::Error,
    },
    /// `outpost_vector()` did not answer a JSON object.
    VectorJson {
        /// The parser's error.
        source: serde_json::Error,
    },
    /// `outpost_vector()` named something that is not a stream (`SITE` or `SITE/SCOPE`).
    VectorSite {
        /// What it named.
        site: String,
    },
    /// `outpost_vector()` gave a site a coverage that is not a seq.
    VectorCoverage {
        /// The site.
        site: SiteId,
    },
    /// The mailbox failed (planning, reading, staging or committing batches).
    Mailbox(MailboxError),
    /// Listing the tracked tables failed.
    Schema(SchemaError),
    /// `outpost_changes()` failed.
    Export {
        /// The seq the export started above.
        since: u64,
        /// The engine's error.
        source: rusqlite::Error,
    },
    /// A batch the engine exported could not be read to set its direction flag.
    Flags {
        /// The seq the export started above.
        since: u64,
        /// Why it could not be decoded.
        source: codec::DecodeError,
    },
    /// A batch the engine exported could not be signed (it is not a batch this build writes).
    Sign {
        /// The seq the export started above.
        since: u64,
        /// Why its clear header could not be read.
        source: codec::DecodeError,
    },
    /// The engine exported a batch of another origin than the tenant's site (the tenant
    /// database was replaced under the running cloud).
    ForeignOrigin {
        /// The batch's origin.
        origin: SiteId,
        /// The tenant's site.
        site: SiteId,
    },
    /// The engine exported a batch of another stream than the one asked for.
    WrongStream {
        /// The scope asked for.
        asked: String,
        /// The batch's stream.
        got: String,
    },
    /// The engine exported seqs that leave a gap after what the mailbox holds.
    ExportGap {
        /// The batch's first seq.
        lo: u64,
        /// Its last seq.
        hi: u64,
        /// What the mailbox covers of the cloud's origin.
        covered: u64,
    },
    /// Counting a table's rows failed.
    Count {
        /// The table.
        table: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Counting the engine's quarantined changes failed.
    Quarantine {
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Listing the refused batches failed.
    Refused {
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A sealed tenant's keys could not be copied into the tenant database.
    Keys(keys::KeysError),
    /// The cloud's own batch could not be sealed.
    Seal {
        /// The seq it was exported after.
        since: u64,
        /// Why.
        source: outpost_protocol::seal::SealError,
    },
}

impl fmt::Display for TenantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantError::Engine(e) => e.fmt(f),
            TenantError::Open { path, .. } => write!(f, "tenant database {}", path.display()),
            TenantError::ReadVector { path, .. } => {
                write!(f, "reading the vector of {}", path.display())
            }
            TenantError::VectorJson { .. } => f.write_str("outpost_vector() is not a JSON object"),
            TenantError::VectorSite { site } => write!(f, "outpost_vector(): bad stream {site:?}"),
            TenantError::VectorCoverage { site } => {
                write!(f, "outpost_vector(): bad coverage of site {site}")
            }
            TenantError::Mailbox(e) => e.fmt(f),
            TenantError::Schema(e) => e.fmt(f),
            TenantError::Export { since, .. } => {
                write!(f, "exporting the tenant's changes above seq {since}")
            }
            TenantError::Sign { since, .. } => {
                write!(f, "signing the tenant's batch above seq {since}")
            }
            TenantError::Flags { since, .. } => write!(
                f,
                "reading the tenant's batch above seq {since} for its direction flag"
            ),
            TenantError::ForeignOrigin { origin, site } => write!(
                f,
                "the tenant exported a batch of origin {origin} but its site is {site}"
            ),
            TenantError::WrongStream { asked, got } => write!(
                f,
                "the tenant exported a batch of stream {got:?} when asked for stream {asked:?}"
            ),
            TenantError::ExportGap { lo, hi, covered } => write!(
                f,
                "the tenant exported seqs {lo}..={hi} but the mailbox covers only up to {covered}"
            ),
            TenantError::Count { table, .. } => write!(f, "counting the rows of table {table:?}"),
            TenantError::Quarantine { .. } => f.write_str("counting the quarantined changes"),
            TenantError::Refused { .. } => f.write_str("listing the refused batches"),
            TenantError::Keys(e) => e.fmt(f),
            TenantError::Seal { since, .. } => {
                write!(f, "sealing the cloud's own batch after seq {since}")
            }
        }
    }
}

impl std::error::Error for TenantError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TenantError::Open { source, .. }
            | TenantError::ReadVector { source, .. }
            | TenantError::Export { source, .. }
            | TenantError::Count { source, .. }
            | TenantError::Quarantine { source }
            | TenantError::Refused { source } => Some(source),
            TenantError::VectorJson { source } => Some(source),
            TenantError::Sign { source, .. } | TenantError::Flags { source, .. } => Some(source),
            // Transparent: these say what failed themselves.
            TenantError::Engine(e) => e.source(),
            TenantError::Mailbox(e) => e.source(),
            TenantError::Schema(e) => e.source(),
            TenantError::Keys(e) => e.source(),
            TenantError::Seal { source, .. } => Some(source),
            TenantError::VectorSite { .. }
            | TenantError::VectorCoverage { .. }
            | TenantError::ForeignOrigin { .. }
            | TenantError::WrongStream { .. }
            | TenantError::ExportGap { .. } => None,
        }
    }
}

impl From<EngineError> for TenantError {
    fn from(e: EngineError) -> Self {
        TenantError::Engine(e)
    }
}

impl From<MailboxError> for TenantError {
    fn from(e: MailboxError) -> Self {
        TenantError::Mailbox(e)
    }
}

impl From<SchemaError> for TenantError {
    fn from(e: SchemaError) -> Self {
        TenantError::Schema(e)
    }
}

/// Why one batch could not be applied (recorded as an [`ApplyFailure`]; the batch stays in the
/// mailbox and the next round retries).
#[derive(Debug)]
enum ApplyError {
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
enum Outcome {
    /// Applied: the engine's counts of changes applied and quarantined.
    Applied(u64, u64),
    /// Refused whole, for this reason (see `tenant/refused.rs`).
    Refused(String),
}

/// The cloud's clock is the time source (docs/design.md section 10, "Time"): its engine records
/// trusted time at offset 0, as a device does once a trusted peer's hello matched its clock, so a
/// received clock more than a day ahead of the cloud's never advances the engine's clock, and
/// the cloud's own writes (operator, REST) are never dragged after it. Written once; a later open
/// only reads it (`status` writes nothing).
fn trust_own_clock(conn: &Connection) -> rusqlite::Result<()> {
    // Any engine function creates its bookkeeping, `_outpost_meta` included.
    conn.query_row("SELECT outpost_db_version()", [], |_| Ok(()))?;
    let set: Option<i64> = conn
        .query_row(
            "SELECT v FROM _outpost_meta WHERE k = 'clock_offset_ms'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if set.is_none() {
        conn.execute(
            "INSERT INTO _outpost_meta(k, v) VALUES ('clock_offset_ms', 0) ON CONFLICT(k) DO NOTHING",
            [],
        )?;
    }
    Ok(())
}

/// The cloud is the scope authority (docs/design.md section 10, "Moves"): its engine queues a
/// transfer of each row a merged change leaves in another scope than the stream it came in, and
/// `export` stores it like the cloud's own changes (the engine's `transfer.rs`).
/// Written once, like the clock's offset.
fn be_scope_authority(conn: &Connection) -> rusqlite::Result<()> {
    let set: Option<i64> = conn
        .query_row(
            "SELECT v FROM _outpost_meta WHERE k = 'scope_authority'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if set != Some(1) {
        conn.execute(
            "INSERT INTO _outpost_meta(k, v) VALUES ('scope_authority', 1) \
             ON CONFLICT(k) DO UPDATE SET v = 1",
            [],
        )?;
    }
    Ok(())
}

impl Tenant {
    /// Opens the tenant database (the engine must be registered: `outpost_embed::register`).
    pub fn open(path: &Path, site: SiteId) -> Result<Tenant, TenantError> {
        outpost_embed::register()?;
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            Ok(conn)
        };
        let conn = open().map_err(|source| TenantError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        trust_own_clock(&conn)
            .and_then(|()| be_scope_authority(&conn))
            .map_err(|source| TenantError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Tenant {
            voids_published: false,
            conn,
            path: path.to_path_buf(),
            site,
        })
    }

    /// Installs or refreshes the REST change-log triggers (`changelog.rs`); run before every
    /// ingest, pull and push so a table tracked meanwhile (by an operator) is logged too.
    pub fn refresh_triggers(&mut self) -> Result<(), ChangelogError> {
        for t in changelog::ensure_triggers(&mut self.conn)? {
            log::info!("tenant REST change log now follows table {t:?}");
        }
        Ok(())
    }

    /// The connection (REST pull and push run on it).
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The tenant's version vector (its own entry is its db version).
    pub fn vector(&self) -> Result<VersionVector, TenantError> {
        let text: String = self
            .conn
            .query_row("SELECT outpost_vector()", [], |r| r.get(0))
            .map_err(|source| TenantError::ReadVector {
                path: self.path.clone(),
                source,
            })?;
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|source| TenantError::VectorJson { source })?;
        let mut v = VersionVector::new();
        // Keys are stream texts: `SITE` (unscoped) or `SITE/SCOPE`.
        for (key, covered) in json {
            let Ok(stream) = key.parse::<StreamId>() else {
                return Err(TenantError::VectorSite { site: key });
            };
            let covered = covered.as_u64().ok_or(TenantError::VectorCoverage {
                site: stream.origin,
            })?;
            v.set(stream, covered);
        }
        Ok(v)
    }

    /// Applies what `mailbox` holds and the tenant lacks (see the module doc).
    pub fn ingest(&mut self, mailbox: &mut Mailbox) -> Result<Ingested, TenantError> {
        let mut done = Ingested::default();
        let mut stopped: BTreeSet<SiteId> = BTreeSet::new();
        if !self.voids_published {
            void::publish_recorded(mailbox, &self.refused()?)?;
            self.voids_published = true;
        }
        keys::install(&self.conn, mailbox).map_err(TenantError::Keys)?;
        let directory = mailbox.directory()?.clone();
        let declared = directions_of(&directory);
        let mut rules = TenantRules::load(&self.conn, &directory)?;
        let mut plan = mailbox.pull_plan(&self.vector()?, Some(self.site), &Scopes::All)?;
        while let Some(batch) = mailbox.next_batch(&mut plan)? {
            if stopped.contains(&batch.origin) {
                continue;
            }
            let range = (batch.range.lo, batch.range.hi);
            // The grant version the batch was written under (a header that does not decode is
            // refused by the apply step below, whatever this says).
            let version = codec::decode_header(&batch.bytes, &codec::Limits::default())
                .map_or(0, |h| h.grant_version);
            let outside = origin_grant::outside(&directory, batch.origin, &batch.scope, version);
            let why = match outside {
                Some(_) => VoidReason::OutsideGrant,
                None => VoidReason::Invalid,
            };
            let judged = match outside {
                Some(reason) => Ok(Outcome::Refused(reason)),
                None => self.apply_one(&batch.bytes, &declared, &mut rules, mailbox, &directory),
            };
            let outcome = judged.and_then(|o| match o {
                Outcome::Refused(reason) => {
                    // Published first: if the cloud stops before the refusal is recorded, the
                    // batch is judged again and the entry is not written twice.
                    void::publish(mailbox, batch.origin, &batch.scope, batch.range, why)
                        .map_err(ApplyError::Void)?;
                    refused::refuse(
                        &self.conn,
                        batch.origin,
                        &batch.scope,
                        batch.range,
                        &reason,
                        now_ms(),
                    )
                    .map_err(ApplyError::Refuse)?;
                    Ok(Outcome::Refused(reason))
                }
                applied => Ok(applied),
            });
            match outcome {
                Ok(Outcome::Refused(reason)) => {
                    log::warn!(
                        "tenant refused batch origin={} stream={:?} seqs={}..={} (recorded, skipped): {reason}",
                        batch.origin,
                        batch.scope,
                        range.0,
                        range.1
                    );
                    done.refused.push(RefusedBatch {
                        origin: batch.origin,
                        stream: batch.scope.clone(),
                        range,
                        reason,
                    });
                }
                Ok(Outcome::Applied(applied, quarantined)) => {
                    done.batches += 1;
                    done.applied += applied;
                    done.quarantined += quarantined;
                    log::info!(
                        "tenant applied batch origin={} stream={:?} seqs={}..={} applied={applied} quarantined={quarantined}",
                        batch.origin, batch.scope, range.0, range.1
                    );
                }
                Err(e) => {
                    let error = Chain(&e).to_string();
                    log::warn!(
                        "tenant could not apply batch origin={} stream={:?} seqs={}..={} (kept in the mailbox): {error}",
                        batch.origin, batch.scope, range.0, range.1
                    );
                    stopped.insert(batch.origin);
                    done.failures.push(ApplyFailure {
                        origin: batch.origin,
                        range,
                        error,
                    });
                }
            }
        }
        Ok(done)
    }

    fn apply_one(
        &mut self,
        bytes: &[u8],
        declared: &BTreeMap<String, Direction>,
        rules: &mut TenantRules,
        mailbox: &mut Mailbox,
        directory: &Directory,
    ) -> Result<Outcome, ApplyError> {
        // What the bytes and the tenant's settings alone decide, before anything is written: the
        // whole batch decodes within its memory budget (the engine decodes it again to apply
        // it; the first copy is dropped before), its rows match the tenant's table directions,
        // its header's schema is acceptable and states the tenant's scope rules.
        let decoded = match codec::decode_header(bytes, &codec::Limits::default()) {
            Ok(h) if h.key_epoch != 0 => match mailbox.digest_key().ok().flatten() {
                Some(dk) => outpost_protocol::seal::decode_sealed(
                    bytes,
                    &codec::Limits::default(),
                    &dk,
                    |s, e| mailbox.scope_key_at(s, e).ok().flatten(),
                )
                .map(|opened| {
                    // Status and commands show the scope by name from now on.
                    if let Err(e) =
                        mailbox.learn_scope_name(&opened.batch.header.stream, &opened.scope)
                    {
                        log::warn!("tenant could not remember a scope's name: {e}");
                    }
                    opened.batch
                })
                .map_err(|e| e.to_string()),
                None => Err("a sealed batch in an unsealed tenant".to_string()),
            },
            _ => codec::decode(bytes, &codec::Limits::default()).map_err(|e| e.to_string()),
        };
        let header = match decoded {
            Ok(batch) => {
                if let Some(reason) = crate::tables::mismatch(&batch, declared) {
                    return Ok(Outcome::Refused(reason));
                }
                batch.header
            }
            Err(e) => return Ok(Outcome::Refused(format!("not a valid batch: {e}"))),
        };
        if let Err(e) = schema::validate_all(&header.tables) {
            return Ok(Outcome::Refused(e.to_string()));
        }
        let adopted = match rules.judge(&header.tables) {
            Ok(adopted) => adopted,
            Err(reason) => return Ok(Outcome::Refused(reason)),
        };
        // The entry first: if the cloud stops before the table is made, the next batch is
        // judged against the rule all the same.
        for (table, rule) in adopted {
            let item = mailbox
                .table_item(
                    &table,
                    directory.table_direction(&table),
                    Some(rule.clone()),
                )
                .map_err(|source| ApplyError::Publish {
                    table: table.clone(),
                    source,
                })?;
            let seq = mailbox
                .append_control(&item)
                .map_err(|source| ApplyError::Publish {
                    table: table.clone(),
                    source,
                })?;
            log::info!(
                "tenant learnt the scope rule of table {table:?} from a batch header ({}): control entry {seq}",
                crate::scope_rules::describe(Some(&rule))
            );
        }
        let changes = schema::ensure(&self.conn, &header.tables).map_err(ApplyError::Schema)?;
        rules.learn(&header.tables);
        if !changes.is_empty() {
            for c in &changes {
                log::info!("tenant schema from batch header: {c:?}");
            }
            self.refresh_triggers().map_err(ApplyError::Changelog)?;
        }
        let out: String = self
            .conn
            .query_row("SELECT outpost_apply(?1)", [bytes], |r| r.get(0))
            .map_err(ApplyError::Apply)?;
        let counts: serde_json::Value = serde_json::from_str(&out).map_err(ApplyError::Counts)?;
        let n = |k: &str| {
            counts
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Ok(Outcome::Applied(n("applied"), n("quarantined")))
    }

    /// The batches refused whole so far (`tenant/refused.rs`).
    pub fn refused(&self) -> Result<Vec<RefusedBatch>, TenantError> {
        refused::list(&self.conn).map_err(|source| TenantError::Refused { source })
    }

    /// Stores the cloud's own changes the mailbox lacks as batches of the cloud's origin, each
    /// signed with the cloud's key (the tenant database has no key of its own: its site is the
    /// cloud's), stream by stream: the cloud's writes to each scope (REST, the operator) are
    /// numbered in that scope's stream like a device's. Returns how many batches were stored.
    pub fn export(&mut self, mailbox: &mut Mailbox, key: &Keypair) -> Result<usize, TenantError> {
        let declared = declared_directions(mailbox)?;
        let held = mailbox.vector()?;
        let mut stored = 0;
        let own: Vec<String> = self
            .vector()?
            .iter()
            .filter(|(s, &written)| s.origin == self.site && written > held.get(s))
            .map(|(s, _)| s.scope.clone())
            .collect();
        for scope in own {
            let since = held.get(&StreamId::new(self.site, scope.as_str()));
            stored += self.export_stream(mailbox, key, &declared, &scope, since)?;
        }
        Ok(stored)
    }

    /// [`Tenant::export`] of one of the cloud's streams, from `since`.
    fn export_stream(
        &mut self,
        mailbox: &mut Mailbox,
        key: &Keypair,
        declared: &BTreeMap<String, Direction>,
        scope: &str,
        mut since: u64,
    ) -> Result<usize, TenantError> {
        let mut stored = 0;
        loop {
            let blob: Option<Vec<u8>> = self
                .conn
                .query_row(
                    "SELECT outpost_changes(?1, ?2, ?3)",
                    rusqlite::params![since as i64, EXPORT_BATCH_BYTES, scope],
                    |r| r.get(0),
                )
                .map_err(|source| TenantError::Export { since, source })?;
            let Some(mut blob) = blob else { break };
            if !declared.is_empty() {
                // The engine flags every batch `both`; the tenant's settings decide.
                let batch = codec::decode(&blob, &codec::Limits::default())
                    .map_err(|source| TenantError::Flags { since, source })?;
                let flags = BatchFlags {
                    direction: crate::tables::direction_of(&batch, declared),
                    ..batch.header.flags
                };
                codec::set_flags(&mut blob, flags)
                    .map_err(|source| TenantError::Flags { since, source })?;
            }
            // A sealed tenant's batches are sealed before they are signed: the signature covers
            // the sealed body's hash.
            // `scope` is the stream's wire id, as the tenant's vector and the mailbox name it.
            if let (Some(scope_key), Some(dk)) = (mailbox.scope_key(scope)?, mailbox.digest_key()?)
            {
                let mut nonce = [0u8; outpost_protocol::seal::NONCE_LEN];
                getrandom::getrandom(&mut nonce).map_err(|e| {
                    TenantError::Mailbox(MailboxError::Random {
                        what: "a sealing nonce",
                        detail: e.to_string(),
                    })
                })?;
                blob = outpost_protocol::seal::seal_batch(&blob, &scope_key, &dk, nonce)
                    .map_err(|source| TenantError::Seal { since, source })?;
            }
            outpost_protocol::batch::signature::sign(&mut blob, key)
                .map_err(|source| TenantError::Sign { since, source })?;
            let staged = mailbox.stage(0, blob)?;
            if staged.scope != scope {
                return Err(TenantError::WrongStream {
                    asked: scope.to_string(),
                    got: staged.scope,
                });
            }
            if staged.origin != self.site {
                return Err(TenantError::ForeignOrigin {
                    origin: staged.origin,
                    site: self.site,
                });
            }
            if staged.range.hi <= since {
                break;
            }
            if staged.range.lo > since + 1 {
                return Err(TenantError::ExportGap {
                    lo: staged.range.lo,
                    hi: staged.range.hi,
                    covered: since,
                });
            }
            let hi = staged.range.hi;
            mailbox.commit(std::slice::from_ref(&staged))?;
            log::info!(
                "tenant exported batch origin={} stream={scope:?} seqs={}..={hi} bytes={}",
                self.site,
                staged.range.lo,
                staged.bytes.len()
            );
            since = hi;
            stored += 1;
        }
        Ok(stored)
    }

    /// The tenant's scope rules: the cloud's control entries (`directory`) and the tracked
    /// tables' definitions (`scope_rules.rs`).
    pub fn scope_rules(&self, directory: &Directory) -> Result<TenantRules, TenantError> {
        Ok(TenantRules::load(&self.conn, directory)?)
    }

    /// The tracked tables and their row counts.
    pub fn tables(&self) -> Result<Vec<(String, u64)>, TenantError> {
        let mut out = Vec::new();
        for t in schema::tracked_tables(&self.conn)? {
            let n: i64 = self
                .conn
                .query_row(
                    &format!("SELECT count(*) FROM {}", schema::quote(&t)),
                    [],
                    |r| r.get(0),
                )
                .map_err(|source| TenantError::Count {
                    table: t.clone(),
                    source,
                })?;
            out.push((t, n as u64));
        }
        Ok(out)
    }

    /// Rows in `outpost_quarantine` (0 before the engine's bookkeeping exists).
    pub fn quarantined(&self) -> Result<u64, TenantError> {
        let count = || -> rusqlite::Result<u64> {
            let has: i64 = self.conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'outpost_quarantine'",
                [],
                |r| r.get(0),
            )?;
            if has == 0 {
                return Ok(0);
            }
            Ok(self
                .conn
                .query_row("SELECT count(*) FROM outpost_quarantine", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64)
        };
        count().map_err(|source| TenantError::Quarantine { source })
    }
}
