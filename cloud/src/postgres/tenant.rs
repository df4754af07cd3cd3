//! The PostgreSQL tenant serving (docs/design.md section 11): the shared ingest and export
//! (`tenant/ingest.rs`, `tenant/export.rs`) over the app's real tables in PostgreSQL. A batch the
//! round accepts makes its tables ([`super::app_tables`]) and is merged by the store-agnostic
//! apply core ([`super::apply`]); what the back office wrote is read from the outbox capture
//! fills ([`super::outbox`]), so the cloud's own stream carries it to devices like an operator's
//! write. Refused batches are recorded in `outpost.refused`, with the vector advanced over them
//! in the same transaction.

use super::app_tables;
use super::apply::{self, APPLY_LOCK};
use super::capture;
use super::connect::{self, ConnectError, Target};
use super::meta::{self, MetaError};
use super::new_origin;
use super::outbox;
use crate::scope_rules::TenantRules;
use crate::tenant::{ApplyError, GroupLimit, Grouped, RefusedBatch, TenantError, TenantStore};
use ::postgres::Client;
use outpost_mailbox::Mailbox;
use outpost_protocol::batch::{Batch, TableSchema};
use outpost_protocol::control::Directory;
use outpost_protocol::{SeqRange, SiteId, StreamId, VersionVector};
use std::collections::BTreeMap;
use std::fmt;

/// The table of refused batches (the SQLite tenant's `_cloud_refused_batches`).
const REFUSED: &str = "CREATE TABLE IF NOT EXISTS outpost.refused(
  origin bytea NOT NULL,
  stream text NOT NULL,
  lo bigint NOT NULL,
  hi bigint NOT NULL,
  reason text NOT NULL,
  refused_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (origin, stream, lo))";

/// Accepted batches applied in one transaction at most (`tenant/group.rs`), from the judge's
/// decoded copies (the store decodes nothing itself). Fewer than the SQLite tenant's 16: the
/// group holds its batches decoded until its commit, several times their encoded size, and a
/// PostgreSQL transaction's fixed statements cost little (docs/performance.md, "The cloud on
/// PostgreSQL: ingest end to end"); 4 still make a quarter of the commits.
pub const GROUP: GroupLimit = GroupLimit {
    batches: 4,
    bytes: 2 << 20,
    decoded: true,
};

/// Why the PostgreSQL tenant could not be opened or read.
#[derive(Debug)]
pub enum PgTenantError {
    /// The database could not be reached.
    Connect(ConnectError),
    /// `outpost.meta` could not be read.
    Meta(MetaError),
    /// The database holds no tenant (`init --postgres` was not run against it).
    NotPrepared {
        /// The database.
        target: Target,
    },
    /// The database is another cloud's tenant.
    OtherTenant {
        /// The database.
        target: Target,
        /// The site id it is bound to.
        found: String,
        /// This cloud's.
        ours: SiteId,
    },
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// The tenant's vector names something that is not a site id.
    BadVector {
        /// What it holds.
        found: String,
    },
    /// The captured changes could not be read.
    Outbox(outbox::OutboxError),
    /// The captured tables' definitions could not be read.
    Capture(capture::CaptureError),
    /// The origin could not be read or a new one taken.
    NewOrigin(new_origin::NewOriginError),
}

impl fmt::Display for PgTenantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgTenantError::Connect(e) => e.fmt(f),
            PgTenantError::Meta(e) => e.fmt(f),
            PgTenantError::NotPrepared { target } => write!(
                f,
                "PostgreSQL database {target} holds no Outpost tenant: run `outpost-cloud init \
                 --data DIR --postgres URL` first"
            ),
            PgTenantError::OtherTenant {
                target,
                found,
                ours,
            } => write!(
                f,
                "PostgreSQL database {target} is the tenant of cloud site {found}, not of this \
                 cloud ({ours})"
            ),
            PgTenantError::Sql { doing, source } => match source.as_db_error() {
                Some(db) => write!(f, "{doing}: {}", db.message()),
                None => f.write_str(doing),
            },
            PgTenantError::BadVector { found } => {
                write!(f, "outpost.vector names {found:?}, which is not a site id")
            }
            PgTenantError::Outbox(e) => e.fmt(f),
            PgTenantError::Capture(e) => e.fmt(f),
            PgTenantError::NewOrigin(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PgTenantError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgTenantError::Sql { source, .. } => Some(source),
            // Transparent: these say what failed themselves.
            PgTenantError::Connect(e) => e.source(),
            PgTenantError::Meta(e) => e.source(),
            PgTenantError::Outbox(e) => e.source(),
            PgTenantError::Capture(e) => e.source(),
            PgTenantError::NewOrigin(e) => e.source(),
            PgTenantError::NotPrepared { .. }
            | PgTenantError::OtherTenant { .. }
            | PgTenantError::BadVector { .. } => None,
        }
    }
}

fn sql(doing: impl Into<String>) -> impl FnOnce(::postgres::Error) -> PgTenantError {
    let doing = doing.into();
    move |source| PgTenantError::Sql { doing, source }
}

impl From<PgTenantError> for TenantError {
    fn from(e: PgTenantError) -> Self {
        TenantError::Store(Box::new(e))
    }
}

fn refused_apply(e: impl std::error::Error + Send + Sync + 'static) -> ApplyError {
    ApplyError::Store(Box::new(e))
}

/// The tenant in PostgreSQL, on one connection of its own.
pub struct PgTenant {
    client: Client,
    target: Target,
    site: SiteId,
    /// The batches refused by an earlier run were published as voided (once per open).
    pub(crate) voids_published: bool,
    /// A sealed tenant's digest key, read from the mailbox before each round: batches name
    /// their streams by digest, and the apply's transfers compare them with rows' scopes.
    digest: Option<outpost_protocol::seal::DigestKey>,
    /// When the outbox was last pruned (`prune_outbox`: at most once a minute, not every round).
    pruned_at: Option<std::time::Instant>,
}

impl fmt::Debug for PgTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTenant")
            .field("target", &self.target)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl PgTenant {
    /// Connects to the tenant `url` names, which must be `site`'s (`init --postgres`).
    pub fn open(url: &str, site: SiteId) -> Result<PgTenant, PgTenantError> {
        let (mut client, target) = connect::connect(url).map_err(PgTenantError::Connect)?;
        let meta = meta::read(&mut client).map_err(PgTenantError::Meta)?;
        let Some(meta) = meta else {
            return Err(PgTenantError::NotPrepared { target });
        };
        if !meta.site.eq_ignore_ascii_case(&site.to_string()) {
            return Err(PgTenantError::OtherTenant {
                target,
                found: meta.site,
                ours: site,
            });
        }
        // Nothing acknowledged may be lost to a crash of the server (docs/design.md 11).
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(sql("turning synchronous_commit on"))?;
        // The origin it writes under: its site id, until a restore made it take another.
        let site = new_origin::current(&mut client, site).map_err(PgTenantError::NewOrigin)?;
        Ok(PgTenant {
            client,
            target,
            site,
            voids_published: false,
            pruned_at: None,
            digest: None,
        })
    }

    /// Takes origin `new` in place of the one it writes under (`new_origin.rs`); `held` is what
    /// the mailbox holds of each of the old origin's streams (by capture's name: wire id, seq).
    pub fn take_new_origin(
        &mut self,
        new: SiteId,
        held: &BTreeMap<String, (String, u64)>,
    ) -> Result<Option<new_origin::Taken>, PgTenantError> {
        let taken = new_origin::take(&mut self.client, self.site, new, held)
            .map_err(PgTenantError::NewOrigin)?;
        self.refresh_origin()?;
        Ok(taken)
    }

    /// The origin the tenant writes under: the cloud's site id, until a restore made it take
    /// another.
    pub fn origin(&self) -> SiteId {
        self.site
    }

    /// Reads the origin again from `outpost.meta`: another process serving the tenant may have
    /// taken a new one. Returns it.
    pub fn refresh_origin(&mut self) -> Result<SiteId, PgTenantError> {
        self.site =
            new_origin::current(&mut self.client, self.site).map_err(PgTenantError::NewOrigin)?;
        Ok(self.site)
    }

    /// The names capture gives the cloud's own streams.
    pub fn own_stream_names(&mut self) -> Result<Vec<String>, PgTenantError> {
        Ok(outbox::tops(&mut self.client)
            .map_err(PgTenantError::Outbox)?
            .into_keys()
            .collect())
    }

    /// Where the tenant is.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The connection (tests and `status` read through it).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Whether `outpost.<table>` exists yet (the merge state is made by the first apply).
    fn has(&mut self, table: &str) -> Result<bool, PgTenantError> {
        Ok(self
            .client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("outpost.{table}")],
            )
            .map_err(sql(format!("looking for outpost.{table}")))?
            .get(0))
    }

    fn read_vector(&mut self) -> Result<VersionVector, PgTenantError> {
        let mut v = VersionVector::new();
        if !self.has("vector")? {
            return Ok(v);
        }
        let rows = self
            .client
            .query("SELECT origin, stream, covered FROM outpost.vector", &[])
            .map_err(sql("reading the tenant's vector (outpost.vector)"))?;
        for r in rows {
            let origin: Vec<u8> = r.get(0);
            let origin = SiteId::from_slice(&origin).ok_or_else(|| PgTenantError::BadVector {
                found: format!("{origin:02x?}"),
            })?;
            let stream: String = r.get(1);
            v.set(StreamId::new(origin, stream), r.get::<_, i64>(2) as u64);
        }
        Ok(v)
    }

    fn read_refused(&mut self) -> Result<Vec<RefusedBatch>, PgTenantError> {
        if !self.has("refused")? {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(
                "SELECT origin, stream, lo, hi, reason FROM outpost.refused ORDER BY 1, 2, 3",
                &[],
            )
            .map_err(sql("reading outpost.refused"))?;
        rows.iter()
            .map(|r| {
                let origin: Vec<u8> = r.get(0);
                Ok(RefusedBatch {
                    origin: SiteId::from_slice(&origin).ok_or_else(|| {
                        PgTenantError::BadVector {
                            found: format!("{origin:02x?}"),
                        }
                    })?,
                    stream: r.get(1),
                    range: (r.get::<_, i64>(2) as u64, r.get::<_, i64>(3) as u64),
                    reason: r.get(4),
                })
            })
            .collect()
    }

    /// The tables the tenant holds, each with its row count.
    pub fn tables(&mut self) -> Result<Vec<(String, u64)>, PgTenantError> {
        let tables = capture::captured(&mut self.client).map_err(PgTenantError::Capture)?;
        let mut out = Vec::new();
        for t in tables {
            let n: i64 = self
                .client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {}.{}",
                        crate::schema::quote(app_tables::SCHEMA),
                        crate::schema::quote(&t.def.name)
                    ),
                    &[],
                )
                .map_err(sql(format!("counting the rows of table {:?}", t.def.name)))?
                .get(0);
            out.push((t.def.name, n as u64));
        }
        Ok(out)
    }

    /// Changes held in quarantine.
    pub fn quarantined(&mut self) -> Result<u64, PgTenantError> {
        if !self.has("quarantine")? {
            return Ok(0);
        }
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM outpost.quarantine", &[])
            .map_err(sql("counting outpost.quarantine"))?
            .get(0);
        Ok(n as u64)
    }

    /// Applies what `mailbox` holds and the tenant lacks (`tenant/ingest.rs`).
    pub fn ingest(
        &mut self,
        mailbox: &mut Mailbox,
    ) -> Result<crate::tenant::Ingested, TenantError> {
        // Another process may have taken a new origin since (`new_origin.rs`).
        self.refresh_origin()?;
        let mut published = self.voids_published;
        let done = crate::tenant::ingest::ingest(self, mailbox, &mut published);
        self.voids_published = published;
        done
    }

    /// Stores the cloud's own changes (the back office's, captured) the mailbox lacks as
    /// batches of the cloud's origin (`tenant/export.rs`).
    pub fn export(
        &mut self,
        mailbox: &mut Mailbox,
        key: &outpost_protocol::handshake::Keypair,
    ) -> Result<usize, TenantError> {
        let stored = crate::tenant::export::export(self, mailbox, key)?;
        self.prune_outbox(mailbox)?;
        Ok(stored)
    }

    /// Drops from the outbox what the mailbox holds as the cloud's batches, once folded and old
    /// enough (`outbox::prune`): the mailbox is the history peers are served from, so the outbox
    /// would otherwise keep a second copy of every back-office write for good.
    fn prune_outbox(&mut self, mailbox: &mut Mailbox) -> Result<(), TenantError> {
        // Rows become prunable ten minutes after they are written: a round every 500 ms need
        // not look each time.
        if self
            .pruned_at
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60))
        {
            return Ok(());
        }
        self.pruned_at = Some(std::time::Instant::now());
        let held = mailbox.vector()?;
        let now_ms = crate::tenant::ingest::now_ms() as u64;
        for name in self.own_stream_names()? {
            let wire = mailbox.wire_scope(&name)?;
            let covered = held.get(&StreamId::new(self.site, wire.as_str()));
            if covered > 1 {
                outbox::prune(&mut self.client, &name, covered, now_ms)
                    .map_err(PgTenantError::Outbox)?;
            }
        }
        Ok(())
    }
}

impl TenantStore for PgTenant {
    fn site(&self) -> SiteId {
        self.site
    }

    fn vector(&mut self) -> Result<VersionVector, TenantError> {
        Ok(self.read_vector()?)
    }

    fn rules(&mut self, directory: &Directory) -> Result<TenantRules, TenantError> {
        let known: BTreeMap<String, _> = capture::captured(&mut self.client)
            .map_err(PgTenantError::Capture)?
            .into_iter()
            .map(|t| (t.def.name.to_ascii_lowercase(), t.def.scope_rule()))
            .collect();
        Ok(TenantRules::from_known(known, directory))
    }

    fn refused(&mut self) -> Result<Vec<RefusedBatch>, TenantError> {
        Ok(self.read_refused()?)
    }

    fn before_round(&mut self, mailbox: &mut Mailbox) -> Result<(), TenantError> {
        // Sealed batches arrive opened: the judge opened them with the mailbox's keys. Their
        // streams stay digests, which transfers compare with rows' scopes by this key.
        self.digest = mailbox.digest_key()?;
        Ok(())
    }

    fn make_tables(&mut self, tables: &[TableSchema]) -> Result<(), ApplyError> {
        for c in app_tables::ensure(&mut self.client, tables).map_err(refused_apply)? {
            log::info!("tenant schema from batch header: {c:?}");
        }
        Ok(())
    }

    fn apply(&mut self, _bytes: &[u8], batch: Batch) -> Result<(u64, u64), ApplyError> {
        let stats = apply::apply_in(
            &mut self.client,
            self.site,
            self.digest.as_ref(),
            std::slice::from_ref(&batch),
        )
        .map_err(refused_apply)?;
        Ok((stats.applied, stats.quarantined))
    }

    fn group_limit(&self) -> Option<GroupLimit> {
        Some(GROUP)
    }

    fn apply_group(&mut self, batches: &[Grouped<'_>]) -> Result<(u64, u64), ApplyError> {
        let decoded = batches
            .iter()
            .map(|g| g.batch)
            .collect::<Option<Vec<&Batch>>>()
            .ok_or_else(|| {
                ApplyError::Store("a grouped batch came without its decoded copy".into())
            })?;
        let stats = apply::apply_refs(&mut self.client, self.site, self.digest.as_ref(), &decoded)
            .map_err(refused_apply)?;
        Ok((stats.applied, stats.quarantined))
    }

    fn refuse(
        &mut self,
        origin: SiteId,
        scope: &str,
        range: SeqRange,
        reason: &str,
    ) -> Result<(), ApplyError> {
        let mut record = || -> Result<(), ::postgres::Error> {
            let mut tx = self.client.transaction()?;
            tx.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock({APPLY_LOCK}); {REFUSED}; \
                 CREATE TABLE IF NOT EXISTS outpost.vector(origin bytea NOT NULL, \
                 stream text NOT NULL, covered bigint NOT NULL, PRIMARY KEY (origin, stream))"
            ))?;
            tx.execute(
                "INSERT INTO outpost.refused(origin, stream, lo, hi, reason) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &origin.0.as_slice(),
                    &scope,
                    &(range.lo as i64),
                    &(range.hi as i64),
                    &reason,
                ],
            )?;
            tx.execute(
                "INSERT INTO outpost.vector(origin, stream, covered) VALUES ($1, $2, $3) \
                 ON CONFLICT (origin, stream) DO UPDATE \
                 SET covered = greatest(outpost.vector.covered, excluded.covered)",
                &[&origin.0.as_slice(), &scope, &(range.hi as i64)],
            )?;
            tx.commit()
        };
        record()
            .map_err(sql("recording a refused batch in outpost.refused"))
            .map_err(refused_apply)
    }

    fn own_streams(
        &mut self,
        mailbox: &mut Mailbox,
        held: &VersionVector,
    ) -> Result<Vec<(String, String)>, TenantError> {
        let tops = outbox::tops(&mut self.client).map_err(PgTenantError::Outbox)?;
        let mut out = Vec::new();
        for (name, top) in tops {
            // Capture names streams by scope; a sealed tenant's mailbox by its digest.
            let wire = mailbox.wire_scope(&name)?;
            if top > held.get(&StreamId::new(self.site, wire.as_str())) {
                out.push((wire, name));
            }
        }
        Ok(out)
    }

    fn own_tops(&mut self, mailbox: &mut Mailbox) -> Result<BTreeMap<String, u64>, TenantError> {
        let mut out = BTreeMap::new();
        for (name, top) in outbox::tops(&mut self.client).map_err(PgTenantError::Outbox)? {
            out.insert(mailbox.wire_scope(&name)?, top);
        }
        Ok(out)
    }

    fn own_stamps(
        &mut self,
        mailbox: &mut Mailbox,
        at: &BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, u64>, TenantError> {
        let mut out = BTreeMap::new();
        if at.is_empty() {
            return Ok(out);
        }
        for name in outbox::tops(&mut self.client)
            .map_err(PgTenantError::Outbox)?
            .into_keys()
        {
            let wire = mailbox.wire_scope(&name)?;
            let Some(&seq) = at.get(&wire) else {
                continue;
            };
            if let Some(hlc) =
                outbox::stamp(&mut self.client, &name, seq).map_err(PgTenantError::Outbox)?
            {
                out.insert(wire, hlc);
            }
        }
        Ok(out)
    }

    fn export_batch(
        &mut self,
        name: &str,
        since: u64,
        max_bytes: i64,
    ) -> Result<Option<Vec<u8>>, TenantError> {
        let Some(range) = SeqRange::new(since + 1, i64::MAX as u64) else {
            return Ok(None);
        };
        let got = outbox::batch(&mut self.client, name, range, Some(max_bytes as usize))
            .map_err(PgTenantError::Outbox)?;
        Ok(got.map(|e| e.bytes))
    }
}
