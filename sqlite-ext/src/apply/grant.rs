//! The receiver's grant check (docs/design.md section 10, "One decision everywhere"): a batch is
//! judged against the version of its origin's grant that it names, the same way the first relay
//! and the cloud judge it, so a batch written outside its origin's grant is refused on every
//! replica, even one that got it from a relay whose grant was stale or wrong.
//!
//! The cloud's batches, and the unscoped stream (every grant's), are not judged. A batch naming
//! version 0 (written before its origin knew a grant) is judged by the grant the directory holds
//! for its origin now, or passes when it holds none (a tenant that declares no scope). A version
//! the directory does not state yet is *unknown*: the batch is held until the control stream
//! brings it (`sync/store.rs`), or refused by the manual API with a retry-later error
//! (`signatures.rs`); it is not judged on a guess.

use outpost_protocol::batch::BatchHeader;
use outpost_protocol::control::Directory;

/// What the grant check says of a batch.
pub(crate) enum Verdict {
    /// It may be applied.
    Granted,
    /// Written outside its origin's grant: refused whole, with why.
    Outside(String),
    /// The version it names is not known here yet.
    Unknown,
}

/// Judges `h` against `directory`.
pub(crate) fn judge(h: &BatchHeader, directory: &Directory) -> Verdict {
    if h.stream.is_empty() || directory.is_cloud(&h.origin) {
        return Verdict::Granted;
    }
    let scopes = if h.grant_version == 0 {
        match directory.grant_of(&h.origin) {
            Some(g) => &g.scopes,
            None => return Verdict::Granted,
        }
    } else {
        match directory.grant_at(&h.origin, h.grant_version) {
            Some(scopes) => scopes,
            None => return Verdict::Unknown,
        }
    };
    if scopes.contains(&h.stream) {
        return Verdict::Granted;
    }
    Verdict::Outside(format!(
        "origin {} wrote into scope {:?}, which its grant version {} ({scopes}) does not hold",
        h.origin, h.stream, h.grant_version
    ))
}
