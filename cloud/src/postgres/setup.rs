//! Which store a data directory's tenant lives in, and preparing a PostgreSQL one: what `init
//! --postgres URL`, `run` and `status` do with it.
//!
//! The URL is kept in `control.db`'s settings ([`crate::control::POSTGRES_URL`]) once the database
//! is prepared, so a refused or unreachable database is never recorded. A tenant's store is
//! chosen when it is made: a data directory whose SQLite tenant already holds tables is not moved
//! to PostgreSQL (nothing would copy its rows), and one bound to a database is not silently
//! pointed at another (re-running `init` with the same host, port and database replaces the URL,
//! e.g. for a new password).

use super::connect::{self, ConnectError, Target};
use super::meta::{self, MetaError, Prepared};
use super::rights::{self, RightsError};
use crate::control::{ControlError, POSTGRES_URL};
use crate::datadir::{DataDir, DataDirError};
use crate::schema::{self, SchemaError};
use std::fmt;
use std::path::PathBuf;

/// Where the tenant lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    /// The embedded SQLite tenant (`tenant.db` in the data directory).
    Sqlite {
        /// The tenant database.
        path: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// Where (`None`: the stored URL no longer parses).
        target: Option<Target>,
    },
}

/// Why a data directory's PostgreSQL tenant could not be prepared, or why it cannot run.
#[derive(Debug)]
pub enum SetupError {
    /// The data directory's stores failed.
    DataDir(DataDirError),
    /// The control file failed.
    Control(ControlError),
    /// Reading the SQLite tenant's tables failed.
    SqliteTenant {
        /// The tenant database.
        path: PathBuf,
        /// Why.
        source: Box<SchemaError>,
    },
    /// The data directory's SQLite tenant already holds tables.
    HoldsSqliteTenant {
        /// The data directory.
        path: PathBuf,
        /// How many tables.
        tables: usize,
    },
    /// The data directory's tenant is in another PostgreSQL database.
    OtherDatabase {
        /// The database it uses.
        stored: Box<Target>,
        /// The one given.
        given: Box<Target>,
    },
    /// The database could not be reached.
    Connect(ConnectError),
    /// The role lacks a right.
    Rights(RightsError),
    /// The `outpost` schema could not be made, or belongs to another tenant.
    Meta(MetaError),
    /// `run` on a PostgreSQL tenant: it cannot serve yet.
    CannotServeYet {
        /// Where it is (`None`: the URL does not parse).
        target: Option<Target>,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::DataDir(e) => e.fmt(f),
            SetupError::Control(e) => e.fmt(f),
            SetupError::SqliteTenant { path, .. } => {
                write!(f, "reading the tables of {}", path.display())
            }
            SetupError::HoldsSqliteTenant { path, tables } => write!(
                f,
                "{} holds a SQLite tenant with {tables} tables: a tenant's store is chosen when it \
                 is made; init a new data directory with --postgres",
                path.display()
            ),
            SetupError::OtherDatabase { stored, given } => write!(
                f,
                "this data directory's tenant is in PostgreSQL at {stored}, not {given}: a \
                 tenant's database is not replaced by init"
            ),
            SetupError::Connect(e) => e.fmt(f),
            SetupError::Rights(e) => e.fmt(f),
            SetupError::Meta(e) => e.fmt(f),
            SetupError::CannotServeYet { target } => {
                match target {
                    Some(t) => write!(f, "the tenant is in PostgreSQL ({t}), ")?,
                    None => f.write_str("the tenant is in PostgreSQL, ")?,
                }
                f.write_str(
                    "and the PostgreSQL tenant cannot serve yet (issue 21: applying batches, the \
                     mailbox and sync state in PostgreSQL are not built); `run` serves the SQLite \
                     tenant of a data directory made without --postgres",
                )
            }
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::SqliteTenant { source, .. } => Some(source.as_ref()),
            // Transparent: these say what failed themselves.
            SetupError::DataDir(e) => e.source(),
            SetupError::Control(e) => e.source(),
            SetupError::Connect(e) => e.source(),
            SetupError::Rights(e) => e.source(),
            SetupError::Meta(e) => e.source(),
            SetupError::HoldsSqliteTenant { .. }
            | SetupError::OtherDatabase { .. }
            | SetupError::CannotServeYet { .. } => None,
        }
    }
}

impl From<DataDirError> for SetupError {
    fn from(e: DataDirError) -> Self {
        SetupError::DataDir(e)
    }
}

impl From<ControlError> for SetupError {
    fn from(e: ControlError) -> Self {
        SetupError::Control(e)
    }
}

/// What [`init`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initialized {
    /// The database.
    pub target: Target,
    /// Whether the `outpost` schema's rows were made now.
    pub prepared: Prepared,
}

/// Prepares the database `url` names for `dir`'s tenant (rights, the `outpost` schema bound to
/// the cloud's site id) and records the URL in `dir`. Idempotent.
pub fn init(dir: &DataDir, url: &str) -> Result<Initialized, SetupError> {
    let given = connect::target(url).map_err(SetupError::Connect)?;
    let control = dir.control()?;
    match control.setting(POSTGRES_URL)? {
        Some(stored) => {
            if let Ok(stored) = connect::target(&stored) {
                let same = (&stored.host, stored.port, &stored.database)
                    == (&given.host, given.port, &given.database);
                if !same {
                    return Err(SetupError::OtherDatabase {
                        stored: Box::new(stored),
                        given: Box::new(given),
                    });
                }
            }
        }
        None => {
            let path = dir.tenant_path();
            let failed = |source| SetupError::SqliteTenant {
                path: path.clone(),
                source: Box::new(source),
            };
            let conn = rusqlite::Connection::open(&path)
                .map_err(|source| failed(SchemaError::ReadTracked { source }))?;
            let tables = schema::tracked_tables(&conn).map_err(failed)?;
            if !tables.is_empty() {
                return Err(SetupError::HoldsSqliteTenant {
                    path: dir.path.clone(),
                    tables: tables.len(),
                });
            }
        }
    }
    let (mut client, target) = connect::connect(url).map_err(SetupError::Connect)?;
    rights::check_init(&mut client, super::app_tables::SCHEMA).map_err(SetupError::Rights)?;
    let prepared = meta::prepare(&mut client, dir.identity.site).map_err(SetupError::Meta)?;
    control.set_setting(POSTGRES_URL, Some(url))?;
    Ok(Initialized { target, prepared })
}

/// Where `dir`'s tenant lives.
pub fn store(dir: &DataDir) -> Result<Store, SetupError> {
    Ok(match dir.control()?.setting(POSTGRES_URL)? {
        Some(url) => Store::Postgres {
            target: connect::target(&url).ok(),
        },
        None => Store::Sqlite {
            path: dir.tenant_path(),
        },
    })
}

/// Refuses to serve a PostgreSQL tenant: one recorded in `dir`, or named by `url` (`run
/// --postgres URL`, `OUTPOST_POSTGRES_URL`).
pub fn check_servable(dir: &DataDir, url: Option<&str>) -> Result<(), SetupError> {
    let target = match (url, store(dir)?) {
        (Some(url), _) => connect::target(url).ok(),
        (None, Store::Postgres { target }) => target,
        (None, Store::Sqlite { .. }) => return Ok(()),
    };
    Err(SetupError::CannotServeYet { target })
}
