//! The manual API's signature rule (docs/security.md, "Batch signatures"): a database enrolled
//! with any relay (a row in `_outpost_peers`) applies only batches signed by their origin's key
//! as its key directory knows it; a database enrolled with none (a standalone pair exchanging
//! `outpost_changes` blobs) accepts unsigned and signed batches alike, as before signatures.
//!
//! A batch naming a version of its origin's grant the directory does not state yet is refused
//! the same way, to be applied again once the directory has it (`grant.rs`).
//!
//! Every batch of a call is checked before anything is applied, so a refused one leaves the
//! database unchanged. `outpost_sync` does not come through here: its session verified each
//! pulled batch with the same directory (`sync/store.rs`).

use crate::error::{ApplyError, Error};
use crate::functions::Call;
use outpost_protocol::batch::BatchHeader;
use outpost_protocol::control::Directory;
use outpost_protocol::signing::SignatureError;

/// Checks `headers` (of the batches one call applies) against the directory, when enrolled.
/// Returns that directory (`None`: not enrolled), which the apply judges directions with
/// (`direction.rs`).
pub(super) fn check<'h>(
    call: &Call,
    headers: impl IntoIterator<Item = &'h BatchHeader>,
) -> Result<Option<Directory>, Error> {
    if !crate::sync::control::enrolled(call.conn)? {
        return Ok(None);
    }
    let directory = crate::sync::control::load(call)?;
    for h in headers {
        let origin = h.origin;
        let Some(key) = directory.key_of(&origin) else {
            return Err(ApplyError::UnknownOrigin { origin }.into());
        };
        match outpost_protocol::batch::signature::verify(h, &key) {
            Ok(()) => {}
            Err(SignatureError::Missing) => return Err(ApplyError::Unsigned { origin }.into()),
            Err(_) => {
                return Err(ApplyError::BadSignature {
                    origin,
                    lo: h.range.lo,
                    hi: h.range.hi,
                }
                .into())
            }
        }
        // Judged by a grant version the directory states, never on a guess (`grant.rs`).
        if let super::grant::Verdict::Unknown = super::grant::judge(h, &directory) {
            return Err(ApplyError::UnknownGrant {
                origin,
                version: h.grant_version,
            }
            .into());
        }
    }
    Ok(Some(directory))
}
