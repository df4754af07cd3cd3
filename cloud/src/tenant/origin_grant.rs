//! Relayed batches judged by their origin's grant (docs/design.md section 10, "Scopes"): a
//! relay refuses a device's *direct* push outside its grant, but a batch can reach the cloud
//! through a hub whose copy of the grant is older, or from a hub that admitted it wrongly. The
//! cloud, the scope authority, refuses such a batch alone (recorded with its reason, its stream's
//! later batches go on), so nothing written outside a grant reaches the tenant's tables or, from
//! there, any other replica.
//!
//! The grant is the one the directory holds for the origin now (a cloud entry beats a hub's; no
//! entry is every scope, as in a tenant that declares none). Judging against the grant version
//! the batch names, so that a later regrant never turns an accepted batch into a refused one,
//! needs the directory to keep every version of a grant; it keeps the highest only.

use outpost_protocol::control::Directory;
use outpost_protocol::scope::Scopes;
use outpost_protocol::SiteId;

/// Why a batch of `origin` in stream `stream` is outside its origin's grant, if it is.
pub(crate) fn outside(directory: &Directory, origin: SiteId, stream: &str) -> Option<String> {
    let scopes = directory
        .grant_of(&origin)
        .map_or(&Scopes::All, |g| &g.scopes);
    (!scopes.contains(stream)).then(|| {
        format!(
            "origin {origin} wrote into scope {stream:?}, which its grant ({scopes}) does not hold"
        )
    })
}
