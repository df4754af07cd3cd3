//! The tenant database: the app's real tables, written only through the engine.
//!
//! Two directions, both idempotent and restartable at any point:
//! - **ingest** (mailbox → tables): the batches the mailbox holds and the tenant's version vector
//!   lacks, per origin in seq order, each judged and its header's tables created or widened
//!   (`schema.rs`), then applied with its vector advance: up to [`GROUP`] accepted batches in one
//!   transaction (`outpost_apply_many`, `tenant/group.rs`). A batch
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
use crate::schema::{self, SchemaError};
use crate::scope_rules::TenantRules;
use outpost_embed::EngineError;
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::batch::codec;
use outpost_protocol::batch::{Batch, TableSchema};
use outpost_protocol::control::Directory;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::{SeqRange, SiteId, StreamId, VersionVector};
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod export;
mod group;
pub mod ingest;
mod judge;
mod keys;
mod origin_grant;
mod refused;
mod void;

pub use group::{GroupLimit, Grouped};
pub use ingest::{ApplyError, ApplyFailure, Ingested, TenantStore};
pub use refused::RefusedBatch;

/// Largest batch the cloud exports (the engine cuts at a seq boundary).
pub const EXPORT_BATCH_BYTES: i64 = 1 << 20;

/// The tenant connection's page cache (KiB): the tables' and the engine's random-key B-trees
/// of a few hundred thousand rows, and the REST change log's.
pub const TENANT_CACHE_KIB: i64 = 128 * 1024;

/// Accepted batches the SQLite tenant applies in one transaction (`outpost_apply_many`) at most:
/// 16 batches of a device's 512 KiB, as a device groups its pulled chunks (`tenant/group.rs`).
pub const GROUP: GroupLimit = GroupLimit {
    batches: 16,
    bytes: 8 << 20,
    decoded: false,
};

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
    /// The rows the engine applied could not be logged in the REST change log (kept listed).
    Changelog(ChangelogError),
    /// The PostgreSQL tenant failed (its error names the database and what was being done).
    Store(Box<dyn std::error::Error + Send + Sync>),
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
            TenantError::Changelog(e) => e.fmt(f),
            TenantError::Store(e) => e.fmt(f),
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
            TenantError::Changelog(e) => e.source(),
            TenantError::Store(e) => e.source(),
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
            // Kept warm between rounds: the engine raises a smaller cache to 40 MiB for each
            // apply and gives it back after, and the random-key B-trees were read again from
            // the file at every group (docs/performance.md, "Cloud").
            conn.pragma_update(None, "cache_size", -TENANT_CACHE_KIB)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| TenantError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        trust_own_clock(&conn)
            .and_then(|()| be_scope_authority(&conn))
            .and_then(|()| changelog::list_applied_rows(&conn))
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
        let mut published = self.voids_published;
        let done = ingest::ingest(self, mailbox, &mut published);
        self.voids_published = published;
        done
    }

    /// Stores the cloud's own changes the mailbox lacks as batches of the cloud's origin
    /// (`tenant/export.rs`). Returns how many batches were stored.
    pub fn export(&mut self, mailbox: &mut Mailbox, key: &Keypair) -> Result<usize, TenantError> {
        export::export(self, mailbox, key)
    }

    /// The batches refused whole so far (`tenant/refused.rs`).
    pub fn refused(&self) -> Result<Vec<RefusedBatch>, TenantError> {
        refused::list(&self.conn).map_err(|source| TenantError::Refused { source })
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

impl TenantStore for Tenant {
    fn site(&self) -> SiteId {
        self.site
    }

    fn vector(&mut self) -> Result<VersionVector, TenantError> {
        Tenant::vector(self)
    }

    fn rules(&mut self, directory: &Directory) -> Result<TenantRules, TenantError> {
        self.scope_rules(directory)
    }

    fn refused(&mut self) -> Result<Vec<RefusedBatch>, TenantError> {
        Tenant::refused(self)
    }

    fn before_round(&mut self, mailbox: &mut Mailbox) -> Result<(), TenantError> {
        // The engine opens sealed batches itself, with the keys copied into its database.
        keys::install(&self.conn, mailbox)
            .map(drop)
            .map_err(TenantError::Keys)
    }

    fn after_round(&mut self) -> Result<(), TenantError> {
        let logged = changelog::log_applied(&mut self.conn).map_err(TenantError::Changelog)?;
        if logged > 0 {
            log::debug!("REST change log: {logged} applied rows logged");
        }
        Ok(())
    }

    fn make_tables(&mut self, tables: &[TableSchema]) -> Result<(), ApplyError> {
        let changes = schema::ensure(&self.conn, tables).map_err(ApplyError::Schema)?;
        if !changes.is_empty() {
            for c in &changes {
                log::info!("tenant schema from batch header: {c:?}");
            }
            self.refresh_triggers().map_err(ApplyError::Changelog)?;
        }
        Ok(())
    }

    fn apply(&mut self, bytes: &[u8], batch: Batch) -> Result<(u64, u64), ApplyError> {
        // The engine decodes the batch again to apply it: the judged copy goes first.
        drop(batch);
        self.apply_group(&[Grouped { bytes, batch: None }])
    }

    fn group_limit(&self) -> Option<GroupLimit> {
        Some(GROUP)
    }

    fn apply_group(&mut self, batches: &[Grouped<'_>]) -> Result<(u64, u64), ApplyError> {
        let sql = match batches.len() {
            1 => "SELECT outpost_apply(?1)".to_string(),
            n => format!(
                "SELECT outpost_apply_many({})",
                (1..=n)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let out: String = self
            .conn
            .query_row(
                &sql,
                rusqlite::params_from_iter(batches.iter().map(|g| g.bytes)),
                |r| r.get(0),
            )
            .map_err(ApplyError::Apply)?;
        let counts: serde_json::Value = serde_json::from_str(&out).map_err(ApplyError::Counts)?;
        let n = |k: &str| {
            counts
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Ok((n("applied"), n("quarantined")))
    }

    fn refuse(
        &mut self,
        origin: SiteId,
        scope: &str,
        range: SeqRange,
        reason: &str,
    ) -> Result<(), ApplyError> {
        refused::refuse(&self.conn, origin, scope, range, reason, ingest::now_ms())
            .map_err(ApplyError::Refuse)
    }

    fn own_streams(
        &mut self,
        _mailbox: &mut Mailbox,
        held: &VersionVector,
    ) -> Result<Vec<(String, String)>, TenantError> {
        // The engine's vector names its own streams by wire id, and exports by it.
        Ok(Tenant::vector(self)?
            .iter()
            .filter(|(s, &written)| s.origin == self.site && written > held.get(s))
            .map(|(s, _)| (s.scope.clone(), s.scope.clone()))
            .collect())
    }

    fn own_tops(&mut self, _mailbox: &mut Mailbox) -> Result<BTreeMap<String, u64>, TenantError> {
        Ok(Tenant::vector(self)?
            .iter()
            .filter(|(s, _)| s.origin == self.site)
            .map(|(s, &n)| (s.scope.clone(), n))
            .collect())
    }

    fn export_batch(
        &mut self,
        name: &str,
        since: u64,
        max_bytes: i64,
    ) -> Result<Option<Vec<u8>>, TenantError> {
        self.conn
            .query_row(
                "SELECT outpost_changes(?1, ?2, ?3)",
                rusqlite::params![since as i64, max_bytes, name],
                |r| r.get(0),
            )
            .map_err(|source| TenantError::Export { since, source })
    }
}
