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

use outpost_mailbox::{Mailbox, MailboxError};
use outpost_relay::allowlist::{Allowlist, AllowlistError};
use outpost_relay::identity::{Identity, IdentityError};
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
        Stores {
            identity: self.identity.clone(),
            mailbox: self.path.join(MAILBOX),
            allowlist: self.path.join(ALLOWLIST),
        }
    }

    /// A new connection to the mailbox (one per thread).
    pub fn mailbox(&self) -> Result<Mailbox, MailboxError> {
        Mailbox::open(self.path.join(MAILBOX))
    }

    /// A new connection to the allowlist (one per thread).
    pub fn allowlist(&self) -> Result<Allowlist, AllowlistError> {
        Allowlist::open(self.path.join(ALLOWLIST))
    }
}

/// Now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
