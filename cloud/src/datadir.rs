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
//! Every file is created mode 0600 (SQLite gives its `-wal`/`-shm` files the same mode): the
//! tenant and mailbox hold patient data, the allowlist unused enrollment tokens.

use crate::control::Control;
use crate::engine;
use anyhow::{bail, Context, Result};
use outpost_mailbox::Mailbox;
use outpost_protocol::SiteId;
use outpost_relay::allowlist::Allowlist;
use outpost_relay::identity::Identity;
use outpost_relay::Stores;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    /// The cloud's identity (its site id is the tenant database's).
    pub identity: Identity,
}

/// Creates `path` empty with mode 0600 unless it exists.
pub(crate) fn create_private_file(path: &Path) -> Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Writes `bytes` to a new file `path` with `mode`: temporary file, fsync, rename, fsync of the
/// directory, so a crash never leaves a half-written file.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("a data file has a directory")?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

const FILES: [&str; 4] = ["tenant.db", "mailbox.db", "allowlist.db", "control.db"];

impl DataDir {
    /// Creates the directory, the tenant database, the identity and the other stores; an
    /// initialized directory is opened unchanged. Returns it and whether anything was created.
    pub fn init(path: &Path) -> Result<(DataDir, bool)> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .with_context(|| format!("creating data directory {}", path.display()))?;
        }
        for f in FILES {
            create_private_file(&path.join(f))?;
        }
        let site = tenant_site(path)?;
        let site_path = path.join("site-id");
        let mut created = false;
        if !site_path.exists() {
            write_new_file(&site_path, format!("{site}\n").as_bytes(), 0o644)?;
            created = true;
        }
        let (identity, new_key) = Identity::load_or_create(path)?;
        created |= new_key;
        let dir = DataDir::checked(path, identity, site)?;
        dir.mailbox()?;
        dir.allowlist()?;
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
    pub fn open(path: &Path) -> Result<DataDir> {
        if !path.join("site-id").exists() || !path.join("identity.key").exists() {
            bail!(
                "{} is not an initialized cloud data directory; run `outpost-cloud init --data {}` first",
                path.display(),
                path.display()
            );
        }
        let (identity, _) = Identity::load_or_create(path)?;
        let site = tenant_site(path)?;
        DataDir::checked(path, identity, site)
    }

    fn checked(path: &Path, identity: Identity, tenant: SiteId) -> Result<DataDir> {
        if identity.site != tenant {
            bail!(
                "{}: site-id says {} but tenant.db is site {}: the tenant database was replaced; \
                 restore the matching files (a database under another site id would reuse seqs)",
                path.display(),
                identity.site,
                tenant
            );
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

    /// A new connection to the mailbox.
    pub fn mailbox(&self) -> Result<Mailbox> {
        Ok(Mailbox::open(self.path.join("mailbox.db"))?)
    }

    /// A new connection to the allowlist.
    pub fn allowlist(&self) -> Result<Allowlist> {
        Ok(Allowlist::open(self.path.join("allowlist.db"))?)
    }

    /// What the session listener's relay serves from: the identity and the two stores' files.
    pub fn stores(&self) -> Stores {
        Stores {
            identity: self.identity.clone(),
            mailbox: self.path.join("mailbox.db"),
            allowlist: self.path.join("allowlist.db"),
        }
    }

    /// A new connection to the control file.
    pub fn control(&self) -> Result<Control> {
        Control::open(&self.path.join("control.db"))
    }
}

/// The tenant database's site id (created by the engine on first use).
fn tenant_site(path: &Path) -> Result<SiteId> {
    engine::register()?;
    let db = path.join("tenant.db");
    let conn = rusqlite::Connection::open(&db)
        .with_context(|| format!("opening tenant database {}", db.display()))?;
    let bytes: Vec<u8> = conn
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .with_context(|| format!("reading the site id of {}", db.display()))?;
    SiteId::from_slice(&bytes)
        .with_context(|| format!("{}: site id of {} bytes", db.display(), bytes.len()))
}

/// Now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
