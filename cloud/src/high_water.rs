//! What this process has seen exported of the cloud's own streams, kept in the data directory's
//! control file: outside the tenant's database, so a restore of the database alone does not take
//! it back. A tenant that has issued fewer seqs of a stream than this process exported was
//! restored behind what peers may hold, whether or not a peer has said so yet (mailbox
//! `behind.rs` catches it at a peer's hello): the stream is latched behind before anything more
//! of it is exported, so no seq is issued twice.
//!
//! Settings `own_exported:<stream wire id>` hold the highest seq of the stream that the mailbox
//! held after an export round of this process; they only grow.

use crate::control::{Control, ControlError};
use outpost_mailbox::{Behind, Mailbox, MailboxError};
use outpost_protocol::SiteId;
use std::collections::BTreeMap;

const PREFIX: &str = "own_exported:";

/// Latches behind every stream `issued` (the tenant's own tops, by wire id) holds fewer seqs of
/// than this process recorded exporting. Returns how many streams were latched now.
pub(crate) fn check(
    issued: &BTreeMap<String, u64>,
    mailbox: &mut Mailbox,
    control: &Control,
    site: SiteId,
) -> Result<usize, HighWaterError> {
    let latched = mailbox.behind()?;
    let mut now = 0;
    for (name, value) in control.settings_with_prefix(PREFIX)? {
        let stream = name[PREFIX.len()..].to_string();
        let Ok(exported) = value.parse::<u64>() else {
            continue;
        };
        let top = issued.get(&stream).copied().unwrap_or(0);
        if exported > top && !latched.iter().any(|b| b.stream == stream) {
            let claim = Behind {
                stream,
                peer_has: exported,
                held: 0,
                peer: site,
                seen_at: 0,
            };
            mailbox.latch_behind(&claim, top)?;
            now += 1;
        }
    }
    Ok(now)
}

/// Records what the mailbox holds of the cloud's own streams (`site`) where it grew.
pub(crate) fn record(
    mailbox: &Mailbox,
    control: &Control,
    site: SiteId,
) -> Result<(), HighWaterError> {
    let recorded: BTreeMap<String, u64> = control
        .settings_with_prefix(PREFIX)?
        .into_iter()
        .filter_map(|(n, v)| Some((n[PREFIX.len()..].to_string(), v.parse().ok()?)))
        .collect();
    for (stream, &covered) in mailbox.vector()?.iter() {
        if stream.origin != site || recorded.get(&stream.scope).is_some_and(|&r| r >= covered) {
            continue;
        }
        control.set_setting(
            &format!("{PREFIX}{}", stream.scope),
            Some(&covered.to_string()),
        )?;
    }
    Ok(())
}

/// Why the high-water marks could not be checked or recorded.
#[derive(Debug)]
pub enum HighWaterError {
    /// The control file failed.
    Control(ControlError),
    /// The mailbox failed.
    Mailbox(MailboxError),
}

impl std::fmt::Display for HighWaterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HighWaterError::Control(e) => e.fmt(f),
            HighWaterError::Mailbox(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HighWaterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HighWaterError::Control(e) => e.source(),
            HighWaterError::Mailbox(e) => e.source(),
        }
    }
}

impl From<ControlError> for HighWaterError {
    fn from(e: ControlError) -> Self {
        HighWaterError::Control(e)
    }
}

impl From<MailboxError> for HighWaterError {
    fn from(e: MailboxError) -> Self {
        HighWaterError::Mailbox(e)
    }
}
