//! The box's own control stream: what it says about the peers it admitted (docs/design.md
//! section 10, "Who writes control entries").
//!
//! A hub writes a Key entry (role device) for every device it admits; the cloud one for every
//! peer it admits, devices and hubs, with the role of the code they enrolled with; each followed
//! by a Grant entry with the scopes of that code (or of `grant` since). Revoking a
//! peer writes a `revoked: true` entry for its key. Each is written once: [`certify_device`]
//! writes only when the stream's latest statement about the site differs, so running
//! [`certify_admitted`] at every start fills in what an older data directory lacks and
//! otherwise changes nothing. The relay also certifies each peer when its handshake completes,
//! before its session's first message.

use crate::allowlist::{Allowlist, AllowlistError, Device, Role};
use crate::identity::Identity;
use outpost_mailbox::{ControlOwner, Mailbox, MailboxError};
use outpost_protocol::control::Root;
use outpost_protocol::message::PeerRole;
use std::fmt;

/// Why certifying admitted peers failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CertifyError {
    /// Reading the admitted peers failed.
    Allowlist(AllowlistError),
    /// Writing the entries failed.
    Mailbox(MailboxError),
}

impl fmt::Display for CertifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertifyError::Allowlist(e) => write!(f, "reading the admitted peers: {e}"),
            CertifyError::Mailbox(e) => write!(f, "writing control entries: {e}"),
        }
    }
}

impl std::error::Error for CertifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertifyError::Allowlist(e) => Some(e),
            CertifyError::Mailbox(e) => Some(e),
        }
    }
}

/// The owner of a box's control streams: the box itself (a root as `role`), plus `cloud` (a
/// hub's pinned uplink). The cloud re-certifies what its hubs bind.
pub fn owner(identity: &Identity, role: PeerRole, cloud: Option<Root>) -> ControlOwner {
    let mut roots = vec![Root {
        site: identity.site,
        key: *identity.public(),
        role,
    }];
    roots.extend(cloud);
    ControlOwner {
        site: identity.site,
        keypair: identity.keypair().clone(),
        roots,
        recertify: role == PeerRole::Cloud,
    }
}

/// What a box of role `by` says `device` is: a hub binds devices only (`None` for a hub
/// enrolled with a hub, which cannot happen through its codes).
pub fn role_of(device: &Device, by: PeerRole) -> Option<PeerRole> {
    match (device.role, by) {
        (Role::Device, _) => Some(PeerRole::Device),
        (Role::Hub, PeerRole::Cloud) => Some(PeerRole::Hub),
        (Role::Hub, _) => None,
    }
}

/// Writes the entries `device` lacks in the box's own stream (its key and role, revoked when it
/// is; then its grant), if any; returns the last seq written.
pub fn certify_device(
    mailbox: &mut Mailbox,
    device: &Device,
    by: PeerRole,
) -> Result<Option<u64>, MailboxError> {
    let Some(role) = role_of(device, by) else {
        return Ok(None);
    };
    let key = mailbox.certify(device.site, &device.key, role, device.revoked_at.is_some())?;
    let grant = mailbox.grant_scopes(device.site, &device.grant.scopes, device.grant.enroll)?;
    Ok(grant.or(key))
}

/// Writes the entries the box's own stream lacks for every peer `allowlist` admitted (at
/// start: data directories made before control streams). Returns how many were written.
pub fn certify_admitted(
    mailbox: &mut Mailbox,
    allowlist: &Allowlist,
    by: PeerRole,
) -> Result<usize, CertifyError> {
    let mut written = 0;
    for device in allowlist.devices().map_err(CertifyError::Allowlist)? {
        if certify_device(mailbox, &device, by)
            .map_err(CertifyError::Mailbox)?
            .is_some()
        {
            written += 1;
        }
    }
    Ok(written)
}
