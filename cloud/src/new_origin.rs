//! The recovery of a cloud whose tenant was restored behind its peers (docs/design.md section
//! 11, "Durability"; detection: `high_water.rs`). Reusing the latched streams' (site, seq)
//! pairs would lose writes, so the cloud takes a **new origin**: a random site id for its
//! changes from now on, bound to its own key as a cloud by an entry of its control stream.
//! Every peer verifies the new origin's batches with that key and treats the old origin as
//! retired (`Directory::is_retired`): to everyone, the cloud included, the old origin's batches
//! are another origin's. Hubs push back up the ones the cloud lacks (mailbox
//! `client_store.rs`; the relay takes them, `retired_origin`), and the tenant applies them as it
//! applies any peer's, so what the restore lost comes back from the peers that hold it.
//!
//! In order, each step safe to repeat if the process stops between two:
//! 1. wait while the cloud's own control stream is behind what this process saw stored
//!    (`own_control`): an entry appended there now could take a seq peers hold for another
//!    entry, and they would never take it. Hubs pass the lost entries back at their next hello.
//! 2. bind the new site to the cloud's key (a control entry; written once: a later round that
//!    finds the tenant still on its old origin binds another, and the unused one is retired
//!    too);
//! 3. move the tenant to the new origin (`postgres/new_origin.rs`: one transaction);
//! 4. release the latches: the new origin's streams start clean.
//!
//! Only the PostgreSQL tenant does this; a SQLite tenant stays latched (its engine's site id is
//! the database's own), and `status` says so.
//!
//! The old origin's captured writes above what the mailbox held are not issued again under
//! their seqs (peers may hold those for other changes) nor dropped: each row they wrote goes to
//! peers as a transfer under the new origin, its merge state credited to the sites that wrote it
//! (`postgres/new_origin.rs`), so a back-office write made between a restore and the recovery
//! reaches devices too.
//!
use crate::control::Control;
use crate::high_water::{self, HighWaterError};
use crate::postgres::PgTenant;
use outpost_mailbox::Mailbox;
use outpost_protocol::message::PeerRole;
use outpost_protocol::{SiteId, StreamId};
use outpost_relay::identity::Identity;
use std::collections::BTreeMap;
use std::fmt;

/// What [`recover`] did this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// No stream is latched behind.
    NotNeeded,
    /// The control stream is behind what this process saw stored: waiting for peers to bring
    /// its entries back.
    WaitingForControl {
        /// Entries held.
        held: u64,
        /// Entries this process saw stored.
        recorded: u64,
    },
    /// The tenant writes under `new` now.
    Taken {
        /// The origin retired.
        old: SiteId,
        /// The new one.
        new: SiteId,
    },
}

/// Why the recovery failed this round (it is tried again at the next).
#[derive(Debug)]
pub enum RecoveryError {
    /// The mailbox or the control file failed.
    HighWater(HighWaterError),
    /// No random site id could be drawn.
    Random(getrandom::Error),
    /// The tenant could not move to the new origin.
    Tenant(crate::postgres::tenant::PgTenantError),
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::HighWater(e) => write!(f, "recovering from a restore: {e}"),
            RecoveryError::Random(e) => {
                write!(f, "recovering from a restore: drawing a new site id: {e}")
            }
            RecoveryError::Tenant(e) => write!(f, "recovering from a restore: {e}"),
        }
    }
}

impl std::error::Error for RecoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecoveryError::HighWater(e) => Some(e),
            RecoveryError::Random(e) => Some(e),
            RecoveryError::Tenant(e) => Some(e),
        }
    }
}

impl From<HighWaterError> for RecoveryError {
    fn from(e: HighWaterError) -> Self {
        RecoveryError::HighWater(e)
    }
}

impl From<outpost_mailbox::MailboxError> for RecoveryError {
    fn from(e: outpost_mailbox::MailboxError) -> Self {
        RecoveryError::HighWater(e.into())
    }
}

/// Takes a new origin for `tenant` when a stream is latched behind (module documentation).
pub fn recover(
    tenant: &mut PgTenant,
    mailbox: &mut Mailbox,
    control: &Control,
    identity: &Identity,
) -> Result<Recovery, RecoveryError> {
    let latched = mailbox.behind()?;
    if latched.is_empty() {
        return Ok(Recovery::NotNeeded);
    }
    // A latch names the origin it was found behind in: one another process serving the tenant
    // has moved away from already needs nothing more than its release.
    let old = tenant.refresh_origin().map_err(RecoveryError::Tenant)?;
    if latched.iter().all(|b| b.peer != old) {
        mailbox.release_behind()?;
        return Ok(Recovery::NotNeeded);
    }
    let held = mailbox.control_vector()?.get(&identity.site);
    let recorded = high_water::control_recorded(control)?;
    if held < recorded {
        return Ok(Recovery::WaitingForControl { held, recorded });
    }
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(RecoveryError::Random)?;
    let new = SiteId(bytes);
    mailbox.certify(new, identity.public(), PeerRole::Cloud, false)?;
    high_water::record_control(control, mailbox, identity.site)?;
    let vector = mailbox.vector()?;
    let mut streams = BTreeMap::new();
    for name in tenant.own_stream_names().map_err(RecoveryError::Tenant)? {
        let wire = mailbox.wire_scope(&name)?;
        let covered = vector.get(&StreamId::new(old, wire.as_str()));
        streams.insert(name, (wire, covered));
    }
    let Some(taken) = tenant
        .take_new_origin(new, &streams)
        .map_err(RecoveryError::Tenant)?
    else {
        // Another process took one first. The site bound just now stays unused; being the
        // latest bound, peers' directories count the origin in use as retired, which only lets
        // relays push back batches of it the cloud lacks (it lacks none).
        mailbox.release_behind()?;
        return Ok(Recovery::NotNeeded);
    };
    let released = mailbox.release_behind()?;
    log::warn!(
        "restored behind its peers: the cloud writes under a new origin {new} from now on; its \
         old origin {old} is retired, and what peers hold of it beyond this database comes back \
         from them ({} latched streams released, {} captured writes folded first, {} captured \
         writes of the old origin above what the mailbox held: the {} rows they and pending \
         transfers wrote are sent again as transfers under the new origin)",
        released.len(),
        taken.folded,
        taken.above_held,
        taken.reissued
    );
    Ok(Recovery::Taken { old, new })
}
