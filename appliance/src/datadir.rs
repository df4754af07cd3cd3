//! The hub's `--data` directory: created on first use, mode 0700.
//!
//! ```text
//! identity.key   the static P-256 private key (mode 0600, never logged)
//! site-id        the hub's site id (hex)
//! mailbox.db     the batches (outpost-mailbox)
//! allowlist.db   devices, one-time enrollment tokens, handshake counters, settings
//! ```

use crate::allowlist::Allowlist;
use crate::identity::{fingerprint, Identity};
use anyhow::{Context, Result};
use outpost_mailbox::Mailbox;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The setting holding the `--net` address of the last `run`, the default enrollment address.
pub const LAST_NET: &str = "last_net";

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
    pub fn open(path: &Path) -> Result<DataDir> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .with_context(|| format!("creating data directory {}", path.display()))?;
        }
        let (identity, created) = Identity::load_or_create(path)?;
        if created {
            log::info!(
                "data={} created hub identity key={} site={}",
                path.display(),
                fingerprint(&identity.public),
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

    /// A new connection to the mailbox (one per thread).
    pub fn mailbox(&self) -> Result<Mailbox> {
        Ok(Mailbox::open(self.path.join("mailbox.db"))?)
    }

    /// A new connection to the allowlist (one per thread).
    pub fn allowlist(&self) -> Result<Allowlist> {
        Ok(Allowlist::open(self.path.join("allowlist.db"))?)
    }
}

/// Now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
