//! Revoking a device the cloud never admitted itself: one enrolled at a hub, which the cloud
//! knows only from the key directory (the hub's entry, and the cloud's re-certification).
//!
//! `outpost-cloud revoke DEVICE` first looks in the allowlist (peers enrolled with the cloud);
//! when no peer there matches, [`revoke_relayed`] finds the device among the directory's
//! bindings and writes the cloud's `revoked: true` entry for its key. Every hub receives that
//! entry with its next uplink session and revokes the device in its own allowlist.

use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::control::ControlItem;
use outpost_protocol::handshake::PublicKey;
use outpost_protocol::message::PeerRole;
use outpost_protocol::SiteId;
use std::collections::BTreeSet;
use std::fmt;

/// Why a relayed device could not be revoked.
#[derive(Debug)]
#[non_exhaustive]
pub enum RevocationError {
    /// No device in the key directory has a site id starting with the selector (at least 4
    /// hex digits).
    NoSuchDevice {
        /// What the operator typed.
        selector: String,
    },
    /// More than one device matches: type more digits.
    Ambiguous {
        /// What the operator typed.
        selector: String,
        /// How many devices match.
        matches: usize,
    },
    /// The mailbox (the directory, or writing the entry) failed.
    Mailbox(MailboxError),
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevocationError::NoSuchDevice { selector } => write!(
                f,
                "no enrolled device (hub or device), nor one known from a hub's control stream, \
                 matches {selector:?} (4 or more leading hex digits of its site id)"
            ),
            RevocationError::Ambiguous { selector, matches } => write!(
                f,
                "{matches} devices known from hubs' control streams match {selector:?}: give \
                 more digits"
            ),
            RevocationError::Mailbox(_) => f.write_str("writing the revocation entry"),
        }
    }
}

impl std::error::Error for RevocationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RevocationError::Mailbox(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MailboxError> for RevocationError {
    fn from(e: MailboxError) -> Self {
        RevocationError::Mailbox(e)
    }
}

/// Writes, in `mailbox`'s own stream (its control owner must be the cloud), a `revoked: true`
/// entry for the one device of the key directory whose site id (hex) starts with `selector`;
/// returns its site and key. Revoking a revoked device writes nothing more.
pub fn revoke_relayed(
    mailbox: &mut Mailbox,
    selector: &str,
) -> Result<(SiteId, PublicKey), RevocationError> {
    let (site, key) = find_relayed(mailbox, selector)?;
    mailbox.certify(site, &key, PeerRole::Device, true)?;
    Ok((site, key))
}

/// The one device of the key directory whose site id (hex) starts with `selector` (4 or more
/// digits): its site and key.
pub fn find_relayed(
    mailbox: &mut Mailbox,
    selector: &str,
) -> Result<(SiteId, PublicKey), RevocationError> {
    let wanted = selector.trim().to_ascii_lowercase();
    let directory = mailbox.directory()?;
    let mut sites = BTreeSet::new();
    if wanted.len() >= 4 {
        for writer in directory.writers() {
            for e in directory.entries_after(writer, 0) {
                let ControlItem::Key(k) = &e.item else {
                    continue;
                };
                if k.site.to_string().starts_with(&wanted) {
                    sites.insert(k.site);
                }
            }
        }
    }
    let devices: Vec<(SiteId, PublicKey)> = sites
        .into_iter()
        .filter_map(|s| {
            let b = directory.binding(&s)?;
            (b.role == PeerRole::Device).then_some((s, b.key))
        })
        .collect();
    let (site, key) = match devices.as_slice() {
        [] => {
            return Err(RevocationError::NoSuchDevice {
                selector: selector.to_string(),
            })
        }
        [one] => *one,
        more => {
            return Err(RevocationError::Ambiguous {
                selector: selector.to_string(),
                matches: more.len(),
            })
        }
    };
    Ok((site, key))
}
