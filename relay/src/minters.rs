//! Who may mint the two-part codes this box admits (docs/design.md section 10, "Offline
//! enrolment"), from its key directory: its cloud, within this box's own grant; a device whose
//! grant has the `enroll` flag (a clinic supervisor's tablet), within its grant and this box's;
//! never a revoked key, a hub, or a device without the flag. A box reads this from what it
//! already holds, so a hub that has not synced since the code was minted still admits it.

use crate::gate::Minter;
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_protocol::SiteId;

/// `site` as a minter of codes for the box `own`, or `None`.
pub fn minter(
    mailbox: &mut Mailbox,
    own: SiteId,
    site: &SiteId,
) -> Result<Option<Minter>, MailboxError> {
    let d = mailbox.directory()?;
    let Some(b) = d.binding(site).filter(|b| !b.revoked) else {
        return Ok(None);
    };
    let own_grant = d.grant_of(&own).map_or(Scopes::All, |g| g.scopes.clone());
    Ok(match b.role {
        PeerRole::Cloud => Some(Minter {
            key: b.key,
            scopes: own_grant,
            may_grant_enroll: true,
        }),
        PeerRole::Device => d.grant_of(site).filter(|g| g.enroll).map(|g| Minter {
            key: b.key,
            scopes: both(&g.scopes, &own_grant),
            may_grant_enroll: false,
        }),
        PeerRole::Hub => None,
    })
}

/// The scopes in both grants.
fn both(a: &Scopes, b: &Scopes) -> Scopes {
    match (a, b) {
        (Scopes::All, x) | (x, Scopes::All) => x.clone(),
        (Scopes::Only(a), Scopes::Only(b)) => Scopes::Only(a.intersection(b).cloned().collect()),
    }
}
