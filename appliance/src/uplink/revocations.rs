//! The cloud's revocations, applied to the hub's allowlist.
//!
//! A `revoked: true` Key entry of the cloud (`outpost-cloud revoke`) reaches the hub's mailbox
//! over the uplink; the directory then binds that device as revoked, certified by the cloud.
//! Admission reads the allowlist, not the directory, so the uplink revokes the device there too:
//! its next handshake is refused (`Revoked`), and the hub's revocation watcher ends its live
//! session. Only the cloud's statement counts: a revocation the hub made itself is already in
//! its allowlist, and another hub's entry never revokes a device here.

use super::UplinkError;
use outpost_mailbox::Mailbox;
use outpost_protocol::SiteId;
use outpost_relay::allowlist::{Allowlist, Device};

/// Revokes in `allowlist`, at `now`, every unrevoked device whose binding in `mailbox`'s
/// directory the cloud `cloud` certified as revoked for the same key; returns them (each is
/// logged). Costs one allowlist scan and one directory lookup per enrolled device.
pub(super) fn apply(
    mailbox: &mut Mailbox,
    allowlist: &mut Allowlist,
    cloud: &SiteId,
    now: u64,
) -> Result<Vec<Device>, UplinkError> {
    let devices = allowlist.devices()?;
    let directory = mailbox.directory()?;
    let revoked: Vec<SiteId> = devices
        .iter()
        .filter(|d| d.revoked_at.is_none())
        .filter(|d| {
            directory.binding(&d.site).is_some_and(|b| {
                b.revoked && b.certified_by == *cloud && b.key.as_bytes() == d.key.as_bytes()
            })
        })
        .map(|d| d.site)
        .collect();
    let mut done = Vec::with_capacity(revoked.len());
    for site in revoked {
        // The full site id selects exactly one device.
        let d = allowlist.revoke(&site.to_string(), now)?;
        log::info!(
            "uplink: revoked device site={} key={}: the cloud's control stream revokes it",
            d.site,
            d.key.fingerprint()
        );
        done.push(d);
    }
    Ok(done)
}
