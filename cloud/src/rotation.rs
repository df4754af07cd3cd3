//! Revocation rotates (docs/design.md section 10, "Sealed batches"; issue 20 item 4): revoking a
//! device, or removing a scope from anyone's grant, starts a new key epoch for each scope the
//! device or grantee could read, published in the control stream (`ControlItem::Epoch`). Every
//! device still granted the scope gets the new epoch's key in the answer to its next hello (its
//! key set changed, so its envelope is made again; a live device at once, with the control
//! entry), and seals what it pushes from then on under it. The revoked device never receives it:
//! envelopes are made only for keys the directory does not mark revoked. Every epoch stays
//! handed to every device granted the scope, so history stays readable; nothing is re-sealed.
//!
//! In an unsealed tenant nothing happens.

use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::control::{ControlItem, EpochEntry};
use outpost_protocol::scope::Scopes;

/// Starts a new epoch for each scope of `readable` (`*`: every scope with a key), and for the
/// unscoped stream with `unscoped` (a revocation: a regrant leaves the device the unscoped
/// stream). Returns the scopes and their new epochs.
pub fn rotate(
    mailbox: &mut Mailbox,
    readable: &Scopes,
    unscoped: bool,
) -> Result<Vec<(String, u32)>, MailboxError> {
    if mailbox.digest_key()?.is_none() {
        return Ok(Vec::new());
    }
    let mut scopes: Vec<String> = Vec::new();
    if unscoped {
        scopes.push(String::new());
    }
    match readable {
        Scopes::All => scopes.extend(
            mailbox
                .scope_key_epochs()?
                .into_iter()
                .map(|(s, _)| s)
                .filter(|s| !s.is_empty()),
        ),
        Scopes::Only(names) => scopes.extend(names.iter().cloned()),
    }
    let mut rotated = Vec::with_capacity(scopes.len());
    for scope in scopes {
        // A scope no device ever held a key of has nothing to rotate.
        if mailbox.scope_key_epochs()?.iter().all(|(s, _)| *s != scope) {
            continue;
        }
        let epoch = mailbox.rotate_scope_key(&scope)?;
        mailbox.append_control(&ControlItem::Epoch(EpochEntry {
            scope: scope.clone(),
            epoch,
        }))?;
        log::info!("scope {scope:?}: key epoch {epoch} started");
        rotated.push((scope, epoch));
    }
    Ok(rotated)
}

/// The scopes `old` holds and `new` does not (what a regrant removed), as a grant to rotate:
/// `None` when it removed nothing. From `*`, every scope with a key that `new` lacks.
pub fn removed(
    mailbox: &Mailbox,
    old: &Scopes,
    new: &Scopes,
) -> Result<Option<Scopes>, MailboxError> {
    let had: Vec<String> = match old {
        Scopes::All => mailbox
            .scope_key_epochs()?
            .into_iter()
            .map(|(s, _)| s)
            .filter(|s| !s.is_empty())
            .collect(),
        Scopes::Only(names) => names.iter().cloned().collect(),
    };
    let gone: Vec<&str> = had
        .iter()
        .map(String::as_str)
        .filter(|s| !new.contains(s))
        .collect();
    if gone.is_empty() {
        return Ok(None);
    }
    Ok(Scopes::parse(gone).ok())
}
