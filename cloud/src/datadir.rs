//! The cloud's `--data` directory (one tenant, i.e. one organisation, per directory), mode 0700.
//!
//! ```text
//! identity.key   the static P-256 private key (mode 0600, never logged)
//! site-id        the cloud's site id: the tenant database's own (hex)
//! tenant.db      the app's real tables, written through the engine (query it with sqlite3)
//! mailbox.db     every batch held (outpost-mailbox), so the cloud can serve any vector
//! allowlist.db   hubs and devices, one-time enrollment tokens, handshake counters
//! control.db     REST API token digests, enrollment kinds, settings
//! tls/           cert.pem + key.pem (0600), self-signed on first `run` unless configured
//! ```
//! A tenant in PostgreSQL (`init --postgres`) keeps its tables, mailbox, allowlist and API tokens
//! in that database: its directory has no `mailbox.db` or `allowlist.db`, and `tenant.db` only
//! holds the site id.
//! Every file is created mode 0600 (SQLite gives its `-wal`/`-shm` files the same mode): the
//! tenant and mailbox hold patient data, the allowlist unused enrollment tokens.

use crate::control::{Control, ControlError};
use outpost_embed::EngineError;
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::message::PeerRole;
use outpost_protocol::SiteId;
use outpost_relay::allowlist::{Allowlist, AllowlistError};
use outpost_relay::identity::{Identity, IdentityError};
use outpost_relay::private_file::{
    self, create_private_file, make_database_private, write_new_file, FileError,
};
use outpost_relay::{OpenStores, Stores};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    /// The cloud's identity (its site id is the tenant database's).
    pub identity: Identity,
}

/// Why a data directory could not be created or opened.
#[derive(Debug)]
pub enum DataDirError {
    /// The directory could not be created.
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// One of its files could not be created.
    File(FileError),
    /// `site-id` or `identity.key` is missing: not a directory `init` made.
    NotInitialized {
        /// The directory.
        path: PathBuf,
    },
    /// `identity.key` or `site-id` could not be created or read.
    Identity(IdentityError),
    /// `site-id` names another site than the tenant database's own.
    SiteMismatch {
        /// The directory.
        path: PathBuf,
        /// What `site-id` says.
        site_file: SiteId,
        /// The tenant database's site id.
        tenant: SiteId,
    },
    /// The engine could not be registered with SQLite.
    Engine(EngineError),
    /// The tenant database could not be opened.
    TenantOpen {
        /// The tenant database.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The engine could not give the tenant database's site id.
    TenantSite {
        /// The tenant database.
        path: PathBuf,
        /// The engine's error.
        source: rusqlite::Error,
    },
    /// The engine gave a site id of the wrong length.
    TenantSiteLength {
        /// The tenant database.
        path: PathBuf,
        /// The length it gave.
        len: usize,
    },
    /// The mailbox could not be opened.
    Mailbox(MailboxError),
    /// The allowlist could not be opened.
    Allowlist(AllowlistError),
    /// The control file could not be opened.
    Control(ControlError),
    /// The tenant's PostgreSQL database, which holds the mailbox and allowlist, is unreachable.
    Postgres(crate::postgres::ConnectError),
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::CreateDir { path, .. } => {
                write!(f, "creating data directory {}", path.display())
            }
            DataDirError::File(e) => e.fmt(f),
            DataDirError::NotInitialized { path } => write!(
                f,
                "{} is not an initialized cloud data directory; run `outpost-cloud init --data {}` \
                 first",
                path.display(),
                path.display()
            ),
            DataDirError::Identity(e) => e.fmt(f),
            DataDirError::SiteMismatch {
                path,
                site_file,
                tenant,
            } => write!(
                f,
                "{}: site-id says {site_file} but tenant.db is site {tenant}: the tenant database \
                 was replaced; restore the matching files (a database under another site id \
                 would reuse seqs)",
                path.display()
            ),
            DataDirError::Engine(e) => e.fmt(f),
            DataDirError::TenantOpen { path, .. } => {
                write!(f, "opening tenant database {}", path.display())
            }
            DataDirError::TenantSite { path, .. } => {
                write!(f, "reading the site id of {}", path.display())
            }
            DataDirError::TenantSiteLength { path, len } => {
                write!(f, "{}: site id of {len} bytes", path.display())
            }
            DataDirError::Mailbox(e) => e.fmt(f),
            DataDirError::Allowlist(e) => e.fmt(f),
            DataDirError::Control(e) => e.fmt(f),
            DataDirError::Postgres(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DataDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataDirError::CreateDir { source, .. } => Some(source),
            DataDirError::TenantOpen { source, .. } | DataDirError::TenantSite { source, .. } => {
                Some(source)
            }
            // Transparent: these say what failed themselves.
            DataDirError::File(e) => e.source(),
            DataDirError::Identity(e) => e.source(),
            DataDirError::Engine(e) => e.source(),
            DataDirError::Mailbox(e) => e.source(),
            DataDirError::Allowlist(e) => e.source(),
            DataDirError::Control(e) => e.source(),
            DataDirError::Postgres(e) => e.source(),
            DataDirError::NotInitialized { .. }
            | DataDirError::SiteMismatch { .. }
            | DataDirError::TenantSiteLength { .. } => None,
        }
    }
}

const FILES: [&str; 4] = ["tenant.db", "mailbox.db", "allowlist.db", "control.db"];

/// Narrows what a directory made by hand, a copy or an earlier version left wider: the directory
/// (and `tls/`) to 0700, the databases with their `-wal`/`-shm`, the identity key and the TLS key
/// to 0600, each change logged. (`site-id` and the certificate are public.)
fn make_private(path: &Path) -> Result<(), DataDirError> {
    let narrow =
        |p: &Path, mode: u32| private_file::make_private(p, mode).map_err(DataDirError::File);
    narrow(path, 0o700)?;
    narrow(&path.join("tls"), 0o700)?;
    narrow(&path.join("identity.key"), 0o600)?;
    narrow(&path.join("tls").join("key.pem"), 0o600)?;
    for f in FILES {
        make_database_private(&path.join(f)).map_err(DataDirError::File)?;
    }
    Ok(())
}

impl DataDir {
    /// Creates the directory, the tenant database, the identity and the other stores; an
    /// initialized directory is opened unchanged. Returns it and whether anything was created.
    pub fn init(path: &Path) -> Result<(DataDir, bool), DataDirError> {
        let (dir, created) = DataDir::init_identity(path)?;
        for f in ["mailbox.db", "allowlist.db"] {
            create_private_file(&path.join(f)).map_err(DataDirError::File)?;
        }
        dir.mailbox()?;
        dir.allowlist()?;
        Ok((dir, created))
    }

    /// Creates the directory, the identity, the site id (the tenant database's) and the control
    /// file, but not the mailbox and allowlist: a tenant in PostgreSQL keeps those there, once
    /// `init --postgres` recorded the database in the control file. An initialized directory is
    /// opened unchanged. Returns it and whether anything was created.
    pub fn init_identity(path: &Path) -> Result<(DataDir, bool), DataDirError> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| DataDirError::CreateDir {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        for f in ["tenant.db", "control.db"] {
            create_private_file(&path.join(f)).map_err(DataDirError::File)?;
        }
        make_private(path)?;
        let site = tenant_site(path)?;
        let site_path = path.join("site-id");
        let mut created = false;
        if !site_path.exists() {
            write_new_file(&site_path, format!("{site}\n").as_bytes(), 0o644)
                .map_err(DataDirError::File)?;
            created = true;
        }
        let (identity, new_key) = load_identity(path)?;
        created |= new_key;
        let dir = DataDir::checked(path, identity, site)?;
        dir.control()?;
        if created {
            log::info!(
                "data={} created cloud identity key={} site={}",
                path.display(),
                dir.identity.public().fingerprint(),
                dir.identity.site
            );
        }
        Ok((dir, created))
    }

    /// Opens an initialized directory.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        if !path.join("site-id").exists() || !path.join("identity.key").exists() {
            return Err(DataDirError::NotInitialized {
                path: path.to_path_buf(),
            });
        }
        make_private(path)?;
        let (identity, _) = load_identity(path)?;
        let site = tenant_site(path)?;
        DataDir::checked(path, identity, site)
    }

    fn checked(path: &Path, identity: Identity, tenant: SiteId) -> Result<DataDir, DataDirError> {
        if identity.site != tenant {
            return Err(DataDirError::SiteMismatch {
                path: path.to_path_buf(),
                site_file: identity.site,
                tenant,
            });
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            identity,
        })
    }

    /// The tenant database file.
    pub fn tenant_path(&self) -> PathBuf {
        self.path.join("tenant.db")
    }

    /// The PostgreSQL database holding the tenant (and then the mailbox and allowlist too), if
    /// `init --postgres` chose one.
    pub fn postgres_url(&self) -> Result<Option<String>, DataDirError> {
        Control::open(&self.path.join("control.db"))
            .and_then(|c| c.setting(crate::control::POSTGRES_URL))
            .map_err(DataDirError::Control)
    }

    /// Where the mailbox and allowlist are: this directory's files, or the tenant's PostgreSQL
    /// database (schemas [`MAILBOX_SCHEMA`] and [`ALLOWLIST_SCHEMA`]).
    fn stores_at(&self) -> Result<Option<PgStores>, DataDirError> {
        Ok(self.postgres_url()?.map(|url| PgStores {
            url,
            identity: self.identity.clone(),
        }))
    }

    /// A new connection to the mailbox, owned by the cloud: its key is the root its control
    /// stream is judged with (table settings, certifications), and what it appends is signed
    /// with it.
    pub fn mailbox(&self) -> Result<Mailbox, DataDirError> {
        match self.stores_at()? {
            Some(pg) => {
                let mut mailbox = pg.open_mailbox()?;
                mailbox.set_control_floor(self.control_floor()?);
                Ok(mailbox)
            }
            None => {
                let mut mailbox =
                    Mailbox::open(self.path.join("mailbox.db")).map_err(DataDirError::Mailbox)?;
                mailbox.set_control_owner(owner(&self.identity));
                mailbox.set_control_floor(self.control_floor()?);
                Ok(mailbox)
            }
        }
    }

    /// How many entries of its own control stream this directory's processes saw stored
    /// (`high_water.rs`): a mailbox holding fewer was restored behind and is not appended to.
    fn control_floor(&self) -> Result<u64, DataDirError> {
        Ok(self
            .control()?
            .setting(crate::high_water::CONTROL)
            .map_err(DataDirError::Control)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// A new connection to the allowlist.
    pub fn allowlist(&self) -> Result<Allowlist, DataDirError> {
        match self.stores_at()? {
            Some(pg) => pg.open_allowlist(),
            None => {
                Allowlist::open(self.path.join("allowlist.db")).map_err(DataDirError::Allowlist)
            }
        }
    }

    /// What the session listener's relay serves from: the identity and the two stores.
    pub fn stores(&self) -> Result<Stores, DataDirError> {
        let mut stores = Stores::files(
            self.identity.clone(),
            self.path.join("mailbox.db"),
            self.path.join("allowlist.db"),
        );
        stores.elsewhere = self
            .stores_at()?
            .map(|pg| Arc::new(pg) as Arc<dyn OpenStores>);
        Ok(stores)
    }

    /// A new connection to the control file; for a tenant in PostgreSQL, with the API tokens
    /// in its database (every process serving the tenant checks the same tokens).
    pub fn control(&self) -> Result<Control, DataDirError> {
        let control =
            Control::open(&self.path.join("control.db")).map_err(DataDirError::Control)?;
        let Some(url) = control
            .setting(crate::control::POSTGRES_URL)
            .map_err(DataDirError::Control)?
        else {
            return Ok(control);
        };
        let (client, target) =
            crate::postgres::connect::connect(&url).map_err(DataDirError::Postgres)?;
        control
            .keep_tokens_in(
                client,
                &format!("postgres {target} schema {}", crate::control::TOKENS_SCHEMA),
            )
            .map_err(DataDirError::Control)
    }
}

/// The PostgreSQL schema of a cloud's mailbox when its tenant is in PostgreSQL.
pub const MAILBOX_SCHEMA: &str = "outpost_mailbox";
/// The PostgreSQL schema of a cloud's allowlist when its tenant is in PostgreSQL.
pub const ALLOWLIST_SCHEMA: &str = "outpost_allowlist";

/// The cloud's control owner (its key and role) for a mailbox connection.
fn owner(identity: &Identity) -> outpost_mailbox::ControlOwner {
    outpost_relay::certify::owner(identity, PeerRole::Cloud, None)
}

/// The mailbox and allowlist of a cloud whose tenant is in PostgreSQL: every connection is a
/// session of its own on the tenant's database, so every process serving the tenant shares them.
#[derive(Clone)]
struct PgStores {
    url: String,
    identity: Identity,
}

impl fmt::Debug for PgStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold the password.
        match crate::postgres::connect::target(&self.url) {
            Ok(t) => write!(f, "PgStores({t})"),
            Err(_) => f.write_str("PgStores(?)"),
        }
    }
}

impl PgStores {
    fn connect(&self) -> Result<(postgres::Client, String), DataDirError> {
        let (client, target) =
            crate::postgres::connect::connect(&self.url).map_err(DataDirError::Postgres)?;
        Ok((client, target.to_string()))
    }

    fn open_mailbox(&self) -> Result<Mailbox, DataDirError> {
        let (client, target) = self.connect()?;
        let mut mailbox = Mailbox::open_postgres(
            client,
            MAILBOX_SCHEMA,
            &format!("postgres {target} schema {MAILBOX_SCHEMA}"),
            Default::default(),
        )
        .map_err(DataDirError::Mailbox)?;
        mailbox.set_control_owner(owner(&self.identity));
        Ok(mailbox)
    }

    fn open_allowlist(&self) -> Result<Allowlist, DataDirError> {
        let (client, target) = self.connect()?;
        Allowlist::open_postgres(
            client,
            ALLOWLIST_SCHEMA,
            &format!("postgres {target} schema {ALLOWLIST_SCHEMA}"),
        )
        .map_err(DataDirError::Allowlist)
    }
}

impl OpenStores for PgStores {
    fn mailbox(&self) -> Result<Mailbox, MailboxError> {
        self.open_mailbox().map_err(|e| match e {
            DataDirError::Mailbox(e) => e,
            other => MailboxError::Unreachable {
                detail: other.to_string(),
            },
        })
    }

    fn allowlist(&self) -> Result<Allowlist, AllowlistError> {
        self.open_allowlist().map_err(|e| match e {
            DataDirError::Allowlist(e) => e,
            other => AllowlistError::Unreachable {
                detail: other.to_string(),
            },
        })
    }
}

/// The identity of `path` (`identity.key` and `site-id`), the key created on first use.
fn load_identity(path: &Path) -> Result<(Identity, bool), DataDirError> {
    Identity::load_or_create(path).map_err(DataDirError::Identity)
}

/// The tenant database's site id (created by the engine on first use).
fn tenant_site(path: &Path) -> Result<SiteId, DataDirError> {
    outpost_embed::register().map_err(DataDirError::Engine)?;
    let db = path.join("tenant.db");
    let conn = rusqlite::Connection::open(&db).map_err(|source| DataDirError::TenantOpen {
        path: db.clone(),
        source,
    })?;
    let bytes: Vec<u8> = conn
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .map_err(|source| DataDirError::TenantSite {
            path: db.clone(),
            source,
        })?;
    SiteId::from_slice(&bytes).ok_or(DataDirError::TenantSiteLength {
        path: db,
        len: bytes.len(),
    })
}

/// Now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
