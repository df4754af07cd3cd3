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
    /// `run --postgres URL` for a data directory whose tenant is SQLite.
    NotInitialized {
        /// The data directory.
        path: PathBuf,
        /// The database named (`None`: the URL does not parse).
        given: Option<Box<Target>>,
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
            SetupError::NotInitialized { path, given } => {
                write!(
                    f,
                    "{}'s tenant is SQLite, not in PostgreSQL",
                    path.display()
                )?;
                if let Some(t) = given {
                    write!(f, " ({t})")?;
                }
                f.write_str(
                    ": a tenant's store is chosen by `outpost-cloud init --postgres URL` on a new \
                     data directory; run without --postgres (and OUTPOST_POSTGRES_URL unset) to \
                     serve it",
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
            | SetupError::NotInitialized { .. } => None,
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
        Some(stored) => check_same_database(&stored, given)?,
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

/// Refuses `given` unless it names the database of the `stored` URL (host, port and database:
/// the role and password may change). A stored URL that no longer parses is replaced.
fn check_same_database(stored: &str, given: Target) -> Result<(), SetupError> {
    match connect::target(stored) {
        Ok(stored)
            if (&stored.host, stored.port, &stored.database)
                != (&given.host, given.port, &given.database) =>
        {
            Err(SetupError::OtherDatabase {
                stored: Box::new(stored),
                given: Box::new(given),
            })
        }
        _ => Ok(()),
    }
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

/// The PostgreSQL database `run` serves `dir`'s tenant from: the URL `init --postgres` recorded,
/// or `given` (`run --postgres URL`, `OUTPOST_POSTGRES_URL`: e.g. a new password) when it names
/// the same database; `None` for a SQLite tenant. A URL given for a SQLite tenant, or naming
/// another database, is refused: `run` never moves a tenant.
pub fn serving_url(dir: &DataDir, given: Option<&str>) -> Result<Option<String>, SetupError> {
    let stored = dir.control()?.setting(POSTGRES_URL)?;
    match (stored, given) {
        (None, None) => Ok(None),
        (None, Some(url)) => Err(SetupError::NotInitialized {
            path: dir.path.clone(),
            given: connect::target(url).ok().map(Box::new),
        }),
        (Some(stored), None) => Ok(Some(stored)),
        (Some(stored), Some(url)) => {
            check_same_database(&stored, connect::target(url).map_err(SetupError::Connect)?)?;
            Ok(Some(url.to_string()))
        }
    }
}
