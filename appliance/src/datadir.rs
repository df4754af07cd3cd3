//! The hub's `--data` directory: created on first use, mode 0700.
//!
//! ```text
//! identity.key   the static P-256 private key (mode 0600, never logged)   outpost_relay::identity
//! site-id        the hub's site id (hex)                                   outpost_relay::identity
//! mailbox.db     the batches (outpost-mailbox)
//! allowlist.db   devices, one-time enrollment tokens, handshake counters, settings
//! run-state.json the running hub's heartbeat (crate::status)
//! uplink-state.json  what the uplink last did (crate::uplink)
//! ```
//!
//! This module owns the hub's layout: the relay is handed its files as [`Stores`]
//! ([`DataDir::stores`]).
//!
//! The directory is 0700 and the databases 0600 (with their `-wal`/`-shm` files, which SQLite
//! creates with the database's mode) whatever existed before: `mailbox.db` holds patient data and
//! `allowlist.db` unused enrollment tokens. A directory or file found wider (made by hand, by an
//! older version, under another umask) is narrowed at open, and the change logged.

use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::control::{Grant, Root};
use outpost_protocol::message::PeerRole;
use outpost_relay::allowlist::{Allowlist, AllowlistError};
use outpost_relay::identity::{Identity, IdentityError};
use outpost_relay::private_file::{self, create_private_file, make_database_private, FileError};
use outpost_relay::Stores;
use std::fmt;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The setting holding the `--net` address of the last `run`, the default enrollment address.
pub const LAST_NET: &str = "last_net";
/// The mailbox file.
const MAILBOX: &str = "mailbox.db";
/// The allowlist file.
const ALLOWLIST: &str = "allowlist.db";

/// Why the data directory could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataDirError {
    /// The directory could not be created.
    Create {
        /// The directory.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The identity files could not be read or created.
    Identity(IdentityError),
    /// A file's or the directory's permissions could not be made private.
    Private(FileError),
    /// The mailbox could not be opened.
    Mailbox(MailboxError),
    /// The allowlist could not be opened.
    Allowlist(AllowlistError),
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::Create { path, source } => {
                write!(f, "creating data directory {}: {source}", path.display())
            }
            DataDirError::Identity(e) => e.fmt(f),
            DataDirError::Private(e) => e.fmt(f),
            DataDirError::Mailbox(e) => e.fmt(f),
            DataDirError::Allowlist(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DataDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataDirError::Create { source, .. } => Some(source),
            // Transparent: the inner error's text is this one's.
            DataDirError::Identity(e) => e.source(),
            DataDirError::Private(e) => e.source(),
            DataDirError::Mailbox(e) => e.source(),
            DataDirError::Allowlist(e) => e.source(),
        }
    }
}

impl From<IdentityError> for DataDirError {
    fn from(e: IdentityError) -> Self {
        DataDirError::Identity(e)
    }
}

impl From<MailboxError> for DataDirError {
    fn from(e: MailboxError) -> Self {
        DataDirError::Mailbox(e)
    }
}

impl From<AllowlistError> for DataDirError {
    fn from(e: AllowlistError) -> Self {
        DataDirError::Allowlist(e)
    }
}

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    /// The hub's identity.
    pub identity: Identity,
}

impl DataDir {
    /// Opens `path`, creating the directory, identity and databases on first use.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| DataDirError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        make_private(path)?;
        let (identity, created) = Identity::load_or_create(path)?;
        if created {
            log::info!(
                "data={} created hub identity key={} site={}",
                path.display(),
                identity.public().fingerprint(),
                identity.site
            );
        }
        let dir = DataDir {
            path: path.to_path_buf(),
            identity,
        };
        dir.mailbox()?;
        dir.allowlist()?;
        Ok(dir)
    }

    /// What the relay serves from: the identity and the two stores' files.
    pub fn stores(&self) -> Stores {
        Stores::files(
            self.identity.clone(),
            self.path.join(MAILBOX),
            self.path.join(ALLOWLIST),
        )
    }

    /// A new connection to the mailbox (one per thread).
    pub fn mailbox(&self) -> Result<Mailbox, MailboxError> {
        Mailbox::open(self.path.join(MAILBOX))
    }

    /// What this hub is granted, as its mailbox's control streams say (the cloud's grant, learnt
    /// over the uplink); `None` until the cloud's entry arrived. `cloud`: the pinned cloud's
    /// root (`uplink::cloud_root`), without which no cloud entry is trusted.
    pub fn own_grant(&self, cloud: Option<Root>) -> Result<Option<Grant>, MailboxError> {
        let mut mailbox = self.directory_mailbox(cloud)?;
        Ok(mailbox.directory()?.grant_of(&self.identity.site).cloned())
    }

    /// Whether the tenant is sealed, as the cloud's control stream this hub holds says.
    pub fn sealed_tenant(&self, cloud: Option<Root>) -> Result<bool, MailboxError> {
        Ok(self.directory_mailbox(cloud)?.directory()?.is_sealed())
    }

    /// The mailbox with this hub's directory roots set (itself, and its cloud when enrolled).
    fn directory_mailbox(&self, cloud: Option<Root>) -> Result<Mailbox, MailboxError> {
        let mut mailbox = self.mailbox()?;
        mailbox.set_control_owner(outpost_relay::certify::owner(
            &self.identity,
            PeerRole::Hub,
            cloud,
        ));
        Ok(mailbox)
    }

    /// A new connection to the allowlist (one per thread).
    pub fn allowlist(&self) -> Result<Allowlist, AllowlistError> {
        Allowlist::open(self.path.join(ALLOWLIST))
    }
}

/// The directory 0700, the databases 0600 (created so before SQLite opens them: SQLite would
/// create them under the process's umask), their `-wal`/`-shm` files narrowed too.
fn make_private(path: &Path) -> Result<(), DataDirError> {
    private_file::make_private(path, 0o700).map_err(DataDirError::Private)?;
    for db in [MAILBOX, ALLOWLIST] {
        let file = path.join(db);
        create_private_file(&file).map_err(DataDirError::Private)?;
        make_database_private(&file).map_err(DataDirError::Private)?;
    }
    Ok(())
}

/// Now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_data_directory_that_already_exists_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        // As `mkdir` under the usual umask leaves it, with a mailbox an older version made 0644.
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        drop(Mailbox::open(dir.join(MAILBOX)).unwrap());
        fs::set_permissions(dir.join(MAILBOX), fs::Permissions::from_mode(0o644)).unwrap();
        let opened = DataDir::open(&dir).unwrap();
        drop(opened.mailbox().unwrap());
        assert_eq!(mode(&dir), 0o700);
        for f in [MAILBOX, ALLOWLIST, "identity.key"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        for entry in fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.to_string_lossy();
            if name.ends_with("-wal") || name.ends_with("-shm") {
                assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
            }
        }
    }
}
