//! The protocol's client storage ([`ClientStore`]) over the mailbox: what a hub plugs into
//! `outpost_protocol::session::ClientSession` to sync with the cloud (its uplink).
//!
//! **What goes up.** Everything the mailbox covers and the server's vector lacks, per origin from
//! the server's coverage, in seq order ([`Mailbox::pull_plan`]), except batches of the server's
//! own origin. That one rule is the whole of "never send back what came from the cloud": a batch
//! of the cloud's origin is excluded by name, and a batch of any other origin that the hub pulled
//! from the cloud is covered by the cloud's vector (the cloud served it from its contiguous
//! coverage), so the plan never includes it. Batches the hub holds for its devices, and for
//! devices of other clinics that reached it some other way, go up when the cloud lacks them.
//!
//! **What comes down.** Each pulled batch is stored in the mailbox with one fsynced commit
//! ([`Mailbox::store`]) before the next is read, so an interrupted pull resumes from the
//! mailbox's vector and local devices are served what arrived. The mailbox never interprets it.
//! The same holds for the pulls of a live session (on the server's `Notify`): between them the
//! client holds no transaction, and [`MailboxClient::server_vector`] follows what was pulled.
//!
//! **Held batches.** A pulled batch whose origin the mailbox's key directory does not know yet is
//! not stored: it and the rest of its origin in this pull are held ([`MailboxClient::held`]),
//! the vector does not advance for them, and a later pull brings them again once the control
//! entries naming the origin arrived. The control entries themselves come first in every
//! session (the server's after its hello; the hub's own before its push, so the cloud knows
//! the keys of the batches the hub relays before it judges them).
//!
//! **Id pool.** In delegated id mode (a hub with an uplink, see `ids.rs`) the session asks, after
//! the pull, for the refills [`Mailbox::id_refills`] finds due (each stored before it is sent),
//! and puts each grant into the pool in one transaction with the refill's removal.
//!
//! A push is bounded by [`MailboxClient::push_budget`] bytes per session (the server stages a push
//! in memory until commit); [`MailboxClient::more_to_push`] then says to run another session.

use crate::error::MailboxError;
use crate::ids::HUB_BLOCK;
use crate::mailbox::{Mailbox, PullPlan};
use outpost_protocol::batch::codec::{decode_header, Limits};
use outpost_protocol::batch::signature;
use outpost_protocol::batch::BatchHeader;
use outpost_protocol::handshake::PublicKey;
use outpost_protocol::id_range::{IdRange, IdRequest};
use outpost_protocol::message::Covered;
use outpost_protocol::scope::Scopes;
use outpost_protocol::session::ClientStore;
use outpost_protocol::{ControlVector, SeqRange, SiteId, VersionVector};
use std::collections::BTreeMap;

/// What one session's push may make the server hold at its peak, by default. A relay counts
/// the batches staged so far and, while a batch's message arrives, that message twice (decoding
/// copies the batch out of it), so a session stops before its next batch could pass this, as a
/// device's does (`sqlite-ext/src/sync/store.rs`): two sessions then fit at once in the 32 MiB a
/// relay stages for all its peers.
pub const PUSH_BUDGET: usize = 16 << 20;
/// The largest batch a device exports (`sqlite-ext`'s `BATCH_BYTES`), with room for what wraps
/// it in a push message: the next relayed batch is assumed this large (a single larger row can
/// still pass the budget by its excess, as on a device).
const NEXT_BATCH_BYTES: usize = 512 * 1024 + 4 * 1024;

/// What one session moved, in seqs and batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Seqs the server acknowledged.
    pub pushed: u64,
    /// Batches the server acknowledged.
    pub batches_pushed: u64,
    /// Seqs pulled and stored.
    pub pulled: u64,
    /// Batches pulled and stored.
    pub batches_pulled: u64,
}

/// The mailbox as the client of one session with `server`.
#[derive(Debug)]
pub struct MailboxClient<'m> {
    mailbox: &'m mut Mailbox,
    server: SiteId,
    /// The server's pinned key: its own changes (the cloud's) must carry its signature.
    pub server_key: Option<PublicKey>,
    /// Bytes a session pushes at most (a single larger batch still goes alone).
    pub push_budget: usize,
    /// The last export stopped at the budget: run another session.
    pub more_to_push: bool,
    /// What the session moved so far.
    pub moved: Moved,
    /// The server's vector as it announced it, advanced by what it acknowledged and sent.
    pub server_vector: Option<VersionVector>,
    /// Numbers asked of the server per refill at least (delegated id mode).
    pub id_block: u64,
    /// Refill a sequence's pool when it holds fewer numbers than this.
    pub id_low_water: u64,
    /// Numbers the server granted into the pool in this session.
    pub ids_granted: u64,
    /// Pulled batches held back because the directory knows no key for their origin: per
    /// origin, the first range held (the rest of that origin was skipped for this pull).
    pub held: BTreeMap<SiteId, SeqRange>,
    /// Check each exported batch's signature with the directory before sending it, and hold
    /// back an origin whose batch does not verify (set after the server refused a push as
    /// badly signed, so one forged batch does not stop every other origin's).
    pub check_exports: bool,
    /// Origins held back from the push by [`MailboxClient::check_exports`], with the first
    /// range that did not verify.
    pub withheld: BTreeMap<SiteId, SeqRange>,
    /// Control entries the server sent that the directory accepted in this session (the hub's
    /// uplink then applies the cloud's revocations to its allowlist).
    pub control_accepted: usize,
}

/// An export in progress.
#[derive(Debug)]
pub struct ExportPlan {
    plan: PullPlan,
    bytes: usize,
    done: bool,
}

impl<'m> MailboxClient<'m> {
    /// A client store over `mailbox` for a session with the server whose site id is `server`.
    pub fn new(mailbox: &'m mut Mailbox, server: SiteId) -> MailboxClient<'m> {
        MailboxClient {
            mailbox,
            server,
            server_key: None,
            push_budget: PUSH_BUDGET,
            more_to_push: false,
            moved: Moved::default(),
            server_vector: None,
            id_block: HUB_BLOCK,
            id_low_water: HUB_BLOCK / 4,
            ids_granted: 0,
            held: BTreeMap::new(),
            check_exports: false,
            withheld: BTreeMap::new(),
            control_accepted: 0,
        }
    }
}

impl MailboxClient<'_> {
    /// The mailbox, to change (between messages, e.g. to read the key directory after control
    /// entries arrived: its cache reloads through `&mut`).
    pub fn mailbox_mut(&mut self) -> &mut Mailbox {
        self.mailbox
    }

    /// The mailbox (between messages, e.g. to read the id pool while a live session waits).
    pub fn mailbox(&self) -> &Mailbox {
        self.mailbox
    }

    /// True when `bytes` is signed with the key the directory holds for its origin.
    fn verifies(&mut self, bytes: &[u8]) -> Result<bool, MailboxError> {
        let Ok(header) = decode_header(bytes, &Limits::default()) else {
            return Ok(false);
        };
        Ok(match self.mailbox.key_of(&header.origin)? {
            Some(key) => signature::verify(&header, &key).is_ok(),
            None => false,
        })
    }
}

impl ClientStore for MailboxClient<'_> {
    type Error = MailboxError;
    type ExportPlan = ExportPlan;

    fn vector(&mut self) -> Result<VersionVector, MailboxError> {
        self.mailbox.vector()
    }

    fn origin_key(&mut self, origin: &SiteId) -> Result<Option<PublicKey>, MailboxError> {
        if *origin == self.server {
            if let Some(key) = self.server_key {
                return Ok(Some(key));
            }
        }
        self.mailbox.key_of(origin)
    }

    fn control_vector(&mut self) -> Result<ControlVector, MailboxError> {
        self.mailbox.control_vector()
    }

    fn control_for(&mut self, peer: &ControlVector) -> Result<Vec<Vec<u8>>, MailboxError> {
        self.mailbox.control_for(peer)
    }

    fn control_received(&mut self, entries: Vec<Vec<u8>>) -> Result<(), MailboxError> {
        let report = self.mailbox.control_received(entries)?;
        self.control_accepted += report.accepted;
        Ok(())
    }

    fn plan_export(&mut self, server_vector: &VersionVector) -> Result<ExportPlan, MailboxError> {
        self.server_vector = Some(server_vector.clone());
        // The server's own batches never go back up to it, unless it took another origin
        // since (restored behind its peers): then they are what it lost and pulls back.
        let skip = (!self.mailbox.directory()?.is_retired(&self.server)).then_some(self.server);
        Ok(ExportPlan {
            // Every stream goes up: the cloud judges each batch by its origin's grant.
            plan: self.mailbox.pull_plan(server_vector, skip, &Scopes::All)?,
            bytes: 0,
            done: false,
        })
    }

    fn next_export(&mut self, plan: &mut ExportPlan) -> Result<Option<Vec<u8>>, MailboxError> {
        if plan.done {
            return Ok(None);
        }
        let batch = loop {
            let Some(batch) = self.mailbox.next_batch(&mut plan.plan)? else {
                plan.done = true;
                return Ok(None);
            };
            if self.withheld.contains_key(&batch.origin) {
                continue;
            }
            if self.check_exports && !self.verifies(&batch.bytes)? {
                log::warn!(
                    "mailbox={} uplink: batch {}..={} of origin {} does not verify with the key \
                     the directory holds for it: held back with the rest of that origin",
                    self.mailbox.path().display(),
                    batch.range.lo,
                    batch.range.hi,
                    batch.origin
                );
                self.withheld.insert(batch.origin, batch.range);
                continue;
            }
            break batch;
        };
        plan.bytes += batch.bytes.len();
        if plan.bytes + 2 * NEXT_BATCH_BYTES > self.push_budget {
            // The plan follows each origin in seq order, so stopping anywhere leaves no gap in
            // what the server receives; the next session starts from its new coverage.
            plan.done = true;
            self.more_to_push = true;
        }
        Ok(Some(batch.bytes))
    }

    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), MailboxError> {
        let server = self.server_vector.get_or_insert_with(VersionVector::new);
        for c in covered {
            self.moved.pushed += c.range.hi - c.range.lo + 1;
            self.moved.batches_pushed += 1;
            let _ = server.advance(c.stream_id(), c.range);
        }
        Ok(())
    }

    fn apply_chunk(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<(), MailboxError> {
        // Held, not taken on the server's word: a batch whose origin no entry names yet waits
        // for a later pull, by when the entries naming it have arrived. The rest of that origin
        // follows it in seq order, so it waits too; nothing is stored and the vector stays.
        if self.held.contains_key(&header.origin) {
            return Ok(());
        }
        if header.origin != self.server && self.mailbox.key_of(&header.origin)?.is_none() {
            log::warn!(
                "mailbox={} uplink: held batch {}..={} of origin {}: no control entry names \
                 its key yet; it comes again with a later pull",
                self.mailbox.path().display(),
                header.range.lo,
                header.range.hi,
                header.origin
            );
            self.held.insert(header.origin, header.range);
            return Ok(());
        }
        self.mailbox.store(vec![batch.to_vec()])?;
        // The server holds what it sends: its vector covers the batch (the uplink's backlog
        // must not count it as something to push).
        if let Some(v) = &mut self.server_vector {
            let _ = v.advance(header.stream_id(), header.range);
        }
        self.moved.pulled += header.range.hi - header.range.lo + 1;
        self.moved.batches_pulled += 1;
        Ok(())
    }

    fn keys_received(
        &mut self,
        keys: &[outpost_protocol::message::SealedKeys],
    ) -> Result<(), MailboxError> {
        // A sealed tenant's hub keeps its devices' envelopes to hand on (`scope_keys.rs`).
        let own = self.mailbox.control_owner().map_or(self.server, |o| o.site);
        let kept = self.mailbox.keep_envelopes(keys, &own)?;
        log::debug!(
            "mailbox={} uplink: kept {kept} devices' key envelopes",
            self.mailbox.path().display()
        );
        Ok(())
    }

    fn id_requests(&mut self) -> Result<Vec<IdRequest>, MailboxError> {
        self.mailbox.id_refills(self.id_block, self.id_low_water)
    }

    fn ids_granted(&mut self, request: &IdRequest, ranges: &[IdRange]) -> Result<(), MailboxError> {
        self.ids_granted += self.mailbox.id_refill_granted(request, ranges)?;
        Ok(())
    }
}
