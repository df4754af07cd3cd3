//! The export (tables → mailbox) both tenant stores share: the cloud's own changes the mailbox
//! lacks, stored as batches of the cloud's origin, each flagged with the tenant's table
//! directions, sealed in a sealed tenant and signed with the cloud's key (the tenant has no key
//! of its own: its site is the cloud's), stream by stream: the cloud's writes to each scope
//! (REST, the operator, the back office) are numbered in that scope's stream like a device's.

use super::ingest::{directions_of, TenantStore};
use super::{TenantError, EXPORT_BATCH_BYTES};
use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::batch::{codec, BatchFlags, Direction};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::StreamId;
use std::collections::BTreeMap;

/// Stores what `store` wrote that `mailbox` lacks. Returns how many batches were stored.
pub fn export(
    store: &mut impl TenantStore,
    mailbox: &mut Mailbox,
    key: &Keypair,
) -> Result<usize, TenantError> {
    let declared = directions_of(mailbox.directory()?);
    let held = mailbox.vector()?;
    // Streams latched as restored behind (`high_water.rs`, from this process's own record: a
    // peer's hello claim alone latches nothing, or one enrolled device could stop the cloud's
    // exports by claiming a large coverage; see mailbox `behind.rs`).
    let behind = mailbox.behind()?;
    let mut stored = 0;
    for (wire, name) in store.own_streams(mailbox, &held)? {
        // A store restored behind its peers would issue their seqs again (mailbox `behind.rs`,
        // which logged it when it latched; `status` shows it): nothing more of it is stored.
        if behind.iter().any(|b| b.stream == wire) {
            continue;
        }
        let since = held.get(&StreamId::new(store.site(), wire.as_str()));
        stored += export_stream(store, mailbox, key, &declared, &wire, &name, since)?;
    }
    Ok(stored)
}

/// [`export`] of one of the cloud's streams (`wire` as the mailbox names it, `name` as the
/// store does), from `since`.
fn export_stream(
    store: &mut impl TenantStore,
    mailbox: &mut Mailbox,
    key: &Keypair,
    declared: &BTreeMap<String, Direction>,
    wire: &str,
    name: &str,
    mut since: u64,
) -> Result<usize, TenantError> {
    let site = store.site();
    let mut stored = 0;
    while let Some(mut blob) = store.export_batch(name, since, EXPORT_BATCH_BYTES)? {
        if !declared.is_empty() {
            // The stores flag every batch `both`; the tenant's settings decide.
            let batch = codec::decode(&blob, &codec::Limits::default())
                .map_err(|source| TenantError::Flags { since, source })?;
            let flags = BatchFlags {
                direction: crate::tables::direction_of(&batch, declared),
                ..batch.header.flags
            };
            codec::set_flags(&mut blob, flags)
                .map_err(|source| TenantError::Flags { since, source })?;
        }
        // A sealed tenant's batches are sealed before they are signed: the signature covers the
        // sealed body's hash.
        if let (Some(scope_key), Some(dk)) = (mailbox.scope_key(wire)?, mailbox.digest_key()?) {
            let mut nonce = [0u8; outpost_protocol::seal::NONCE_LEN];
            getrandom::getrandom(&mut nonce).map_err(|e| {
                TenantError::Mailbox(MailboxError::Random {
                    what: "a sealing nonce",
                    detail: e.to_string(),
                })
            })?;
            blob = outpost_protocol::seal::seal_batch(&blob, &scope_key, &dk, nonce)
                .map_err(|source| TenantError::Seal { since, source })?;
        }
        outpost_protocol::batch::signature::sign(&mut blob, key)
            .map_err(|source| TenantError::Sign { since, source })?;
        let staged = mailbox.stage(0, blob)?;
        if staged.scope != wire {
            return Err(TenantError::WrongStream {
                asked: wire.to_string(),
                got: staged.scope,
            });
        }
        if staged.origin != site {
            return Err(TenantError::ForeignOrigin {
                origin: staged.origin,
                site,
            });
        }
        if staged.range.hi <= since {
            break;
        }
        if staged.range.lo > since + 1 {
            return Err(TenantError::ExportGap {
                lo: staged.range.lo,
                hi: staged.range.hi,
                covered: since,
            });
        }
        let hi = staged.range.hi;
        mailbox.commit(std::slice::from_ref(&staged))?;
        log::info!(
            "tenant exported batch origin={site} stream={wire:?} seqs={}..={hi} bytes={}",
            staged.range.lo,
            staged.bytes.len()
        );
        since = hi;
        stored += 1;
    }
    Ok(stored)
}
