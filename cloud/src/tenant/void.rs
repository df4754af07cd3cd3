//! Voided ranges (docs/design.md section 10, "One decision everywhere"): a batch the cloud
//! refuses alone is published as a voided range in its control stream, which every replica
//! applies before any batch. Relays then count the range as covered and stop serving it (the
//! mailbox's `voids.rs`), and devices cover it without applying anything, so a refused batch
//! neither stalls anyone's coverage nor reaches a replica that did not have it yet.
//!
//! The entry carries a reason code, not the refusal's text (which names tables and scopes; a
//! sealed tenant's control stream must not). The text stays in the tenant's record
//! (`refused.rs`) and in `outpost-cloud status`.

use super::refused::RefusedBatch;
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::control::{void_item, VoidReason};
use outpost_protocol::{SeqRange, SiteId, StreamId};

/// Writes the cloud's entry voiding `range` of `origin`'s stream `scope`, unless the directory
/// holds one already (a refusal judged again after an interruption, or by another process
/// serving the tenant: decided inside the write). Returns whether it wrote.
pub(crate) fn publish(
    mailbox: &mut Mailbox,
    origin: SiteId,
    scope: &str,
    range: SeqRange,
    why: VoidReason,
) -> Result<bool, MailboxError> {
    let stream = StreamId::new(origin, scope);
    if mailbox.directory()?.is_voided(&stream, range) {
        return Ok(false);
    }
    let Some(seq) = mailbox.append_control_unless(&void_item(origin, scope, range, why), |d| {
        d.is_voided(&stream, range)
    })?
    else {
        return Ok(false);
    };
    log::info!(
        "tenant voided batch origin={origin} stream={scope:?} seqs={}..={} ({}): control entry {seq}",
        range.lo,
        range.hi,
        why.as_str()
    );
    Ok(true)
}

/// Publishes the batches refused before refusals were published (a tenant made by an earlier
/// build), each once. The reason code is read back from the recorded text, which
/// `origin_grant.rs` words.
pub(crate) fn publish_recorded(
    mailbox: &mut Mailbox,
    refused: &[RefusedBatch],
) -> Result<usize, MailboxError> {
    let mut written = 0;
    for r in refused {
        let Some(range) = SeqRange::new(r.range.0, r.range.1) else {
            continue;
        };
        let why = if r.reason.contains("does not hold") || r.reason.contains("names version") {
            VoidReason::OutsideGrant
        } else {
            VoidReason::Invalid
        };
        written += usize::from(publish(mailbox, r.origin, &r.stream, range, why)?);
    }
    Ok(written)
}
