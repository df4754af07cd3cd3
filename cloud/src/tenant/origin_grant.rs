//! Relayed batches judged by their origin's grant (docs/design.md section 10, "Scopes"): a
//! relay refuses a device's *direct* push outside its grant, but a batch can reach the cloud
//! through a hub whose copy of the grant is older, or from a hub that admitted it wrongly. The
//! cloud, the scope authority, refuses such a batch alone (recorded with its reason, its stream's
//! later batches go on), so nothing written outside a grant reaches the tenant's tables or, from
//! there, any other replica.
//!
//! A batch is judged by the grant version its clear header names ("One decision everywhere"):
//! the directory keeps every version (`Directory::grant_at`), so a later regrant never turns an
//! accepted batch into a refused one, and a device's changes written before a regrant still come
//! up (the removed scope drains). A batch naming version 0 (written before grants had versions
//! on devices) is judged by the grant the directory holds for the origin now (a cloud entry
//! beats a hub's; no entry is every scope, as in a tenant that declares none). A version no
//! entry states is refused: a hub relays the control entries before the batches they cover, so
//! the cloud holds every version a device could have been granted.

use outpost_protocol::control::Directory;
use outpost_protocol::scope::Scopes;
use outpost_protocol::SiteId;

/// Why a batch of `origin` in stream `stream`, written under grant version `version`, is
/// outside its origin's grant, if it is.
pub(crate) fn outside(
    directory: &Directory,
    origin: SiteId,
    stream: &str,
    version: u64,
) -> Option<String> {
    let scopes = if version == 0 {
        directory
            .grant_of(&origin)
            .map_or(&Scopes::All, |g| &g.scopes)
    } else {
        match directory.grant_at(&origin, version) {
            Some(scopes) => scopes,
            None => {
                return Some(format!(
                    "origin {origin} names version {version} of its grant, which no control \
                     entry states"
                ))
            }
        }
    };
    (!scopes.contains(stream)).then(|| {
        format!(
            "origin {origin} wrote into scope {stream:?}, which its grant ({scopes}) does not hold"
        )
    })
}
