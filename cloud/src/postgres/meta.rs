//! The `outpost` schema: the cloud's own state beside the app's tables. For now it holds
//! `outpost.meta` (name/value rows: the layout's version and the cloud's site id); the mailbox,
//! vectors, merge state, grants and id counters move here with the PostgreSQL tenant's apply core
//! (issue 21).
//!
//! The site id binds a database to one tenant: a database whose `outpost.meta` names another
//! site id belongs to another cloud (or to this one's earlier life), and preparing it is refused,
//! so two tenants never write one database and a restored database is never adopted silently.

use ::postgres::Client;
use outpost_protocol::SiteId;
use std::fmt;

/// The schema holding the cloud's own tables.
pub const SCHEMA: &str = "outpost";

/// The version of the `outpost` schema's layout this build writes.
pub const LAYOUT_VERSION: i64 = 1;

/// Keys of `outpost.meta`.
const SITE_ID: &str = "site_id";
const VERSION: &str = "schema_version";

/// What [`prepare`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// The schema or its `meta` rows were made now.
    Created,
    /// The database was this tenant's already (nothing changed).
    Existing,
}

/// What `outpost.meta` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The layout version.
    pub version: i64,
    /// The site id of the cloud whose database this is, as stored (hex).
    pub site: String,
}

/// Why the `outpost` schema could not be prepared or read.
#[derive(Debug)]
pub enum MetaError {
    /// The database belongs to another tenant's cloud.
    OtherTenant {
        /// The site id `outpost.meta` holds.
        found: String,
        /// This cloud's.
        ours: SiteId,
    },
    /// The database was prepared by a newer build.
    NewerLayout {
        /// The version found.
        found: i64,
    },
    /// A row of `outpost.meta` is not what this build writes.
    Damaged {
        /// The row.
        name: &'static str,
    },
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: &'static str,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::OtherTenant { found, ours } => write!(
                f,
                "this database belongs to another tenant: {SCHEMA}.meta names site {found}, this \
                 cloud is site {ours}; give each tenant a database of its own (or restore the \
                 data directory that made this one)"
            ),
            MetaError::NewerLayout { found } => write!(
                f,
                "{SCHEMA}.meta says layout version {found}, this build knows up to \
                 {LAYOUT_VERSION}: upgrade outpost-cloud"
            ),
            MetaError::Damaged { name } => {
                write!(f, "{SCHEMA}.meta row {name:?} is damaged or missing")
            }
            MetaError::Sql { doing, .. } => f.write_str(doing),
        }
    }
}

impl std::error::Error for MetaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetaError::Sql { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn sql(doing: &'static str) -> impl FnOnce(::postgres::Error) -> MetaError {
    move |source| MetaError::Sql { doing, source }
}

/// Makes the `outpost` schema and its `meta` rows for the cloud `site`, in one transaction, or
/// checks that they are this tenant's. Idempotent; concurrent callers are serialised by a lock
/// on `outpost.meta`.
pub fn prepare(client: &mut Client, site: SiteId) -> Result<Prepared, MetaError> {
    let mut tx = client
        .transaction()
        .map_err(sql("starting a transaction"))?;
    // `IF NOT EXISTS` would log PostgreSQL's "already exists, skipping" notice on every run.
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS {SCHEMA};
         CREATE TABLE IF NOT EXISTS {SCHEMA}.meta(name text PRIMARY KEY, value text NOT NULL);
         LOCK TABLE {SCHEMA}.meta IN SHARE ROW EXCLUSIVE MODE;"
    ))
    .map_err(sql("creating schema outpost and table outpost.meta"))?;
    let found = read_in(&mut tx)?;
    let prepared = match found {
        Some(meta) => {
            if meta.site != site.to_string() {
                return Err(MetaError::OtherTenant {
                    found: meta.site,
                    ours: site,
                });
            }
            if meta.version > LAYOUT_VERSION {
                return Err(MetaError::NewerLayout {
                    found: meta.version,
                });
            }
            Prepared::Existing
        }
        None => {
            tx.execute(
                &format!("INSERT INTO {SCHEMA}.meta(name, value) VALUES ($1, $2), ($3, $4)"),
                &[
                    &SITE_ID,
                    &site.to_string(),
                    &VERSION,
                    &LAYOUT_VERSION.to_string(),
                ],
            )
            .map_err(sql("writing outpost.meta"))?;
            Prepared::Created
        }
    };
    tx.commit().map_err(sql("committing outpost.meta"))?;
    Ok(prepared)
}

/// What `outpost.meta` says, or `None` when the database was not prepared.
pub fn read(client: &mut Client) -> Result<Option<Meta>, MetaError> {
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .map_err(sql("starting a transaction"))?;
    read_in(&mut tx)
}

fn read_in(tx: &mut ::postgres::Transaction<'_>) -> Result<Option<Meta>, MetaError> {
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{SCHEMA}.meta")],
        )
        .map_err(sql("looking for outpost.meta"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = tx
        .query(&format!("SELECT name, value FROM {SCHEMA}.meta"), &[])
        .map_err(sql("reading outpost.meta"))?;
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.get::<_, &str>(0) == name)
            .map(|r| r.get::<_, String>(1))
    };
    let (site, version) = match (get(SITE_ID), get(VERSION)) {
        (None, None) => return Ok(None),
        (Some(s), Some(v)) => (s, v),
        (None, _) => return Err(MetaError::Damaged { name: SITE_ID }),
        (_, None) => return Err(MetaError::Damaged { name: VERSION }),
    };
    let version = version
        .parse()
        .map_err(|_| MetaError::Damaged { name: VERSION })?;
    Ok(Some(Meta { version, site }))
}
