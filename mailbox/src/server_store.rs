//! The protocol's server storage ([`ServerStore`]) over the mailbox: what a hub or the cloud
//! plugs into `outpost_protocol::session::ServerSession`.
//!
//! A commit stores the staged batches and the ack's record in one fsynced transaction
//! ([`Mailbox::commit_push`]); the record is the postcard encoding of the ack's `covered` list, so
//! a retried commit is answered byte for byte as the first one was. Id grants come from
//! [`Mailbox::grant_ids`] (root counters or the delegated pool, recorded per peer and request).
//! Control entries and origin keys come from the mailbox's key directory (`control.rs`): a
//! relayed batch is verified with the key the directory holds for its origin, and refused as
//! `KeyUnknown` by the session when it holds none.

use crate::error::MailboxError;
use crate::ids::DEVICE_ID_QUOTA;
use crate::mailbox::{BatchRef, Mailbox, PullPlan, PushRecord};
use outpost_protocol::handshake::PublicKey;
use outpost_protocol::id_range::{IdRange, IdRequest};
use outpost_protocol::message::{Covered, Drain, Regain, SessionId};
use outpost_protocol::scope::Scopes;
use outpost_protocol::session::{CommitRecord, ServerStore, StagedBatch};
use outpost_protocol::{ControlVector, Hlc, SiteId, VersionVector};
use std::time::{SystemTime, UNIX_EPOCH};

impl ServerStore for Mailbox {
    type Error = MailboxError;
    type PullPlan = PullPlan;

    fn keys_for(
        &mut self,
        hello: &outpost_protocol::message::Hello,
    ) -> Result<Vec<outpost_protocol::message::SealedKeys>, MailboxError> {
        self.envelope_for(hello)
    }

    fn retired_origin(&mut self, origin: &SiteId) -> Result<bool, MailboxError> {
        Ok(self.directory()?.is_retired(origin))
    }

    fn sealed_tenant(&mut self) -> Result<bool, MailboxError> {
        Ok(self.directory()?.is_sealed() || self.digest_key()?.is_some())
    }

    fn current_epoch(&mut self, scope: &str) -> Result<u32, MailboxError> {
        Ok(self.directory()?.current_epoch(scope))
    }

    fn vector(&mut self) -> Result<VersionVector, MailboxError> {
        Mailbox::vector(self)
    }

    fn committed(&mut self, session: &SessionId) -> Result<Option<CommitRecord>, MailboxError> {
        let Some(record) = self.push_record(&session.0)? else {
            return Ok(None);
        };
        let covered: Vec<Covered> =
            postcard::from_bytes(&record.record).map_err(|source| MailboxError::Record {
                path: self.path().to_path_buf(),
                what: format!("push record of session {:02x?}", &session.0[..4]),
                source,
            })?;
        Ok(Some(CommitRecord {
            digest: record.digest,
            covered,
        }))
    }

    fn commit(
        &mut self,
        session: &SessionId,
        record: &CommitRecord,
        batches: &[StagedBatch],
    ) -> Result<(), MailboxError> {
        // Borrowed, not copied: a push may be tens of MiB, all of it already in memory once.
        let staged: Vec<BatchRef<'_>> = batches
            .iter()
            .map(|b| BatchRef {
                origin: b.header.origin,
                scope: &b.header.stream,
                range: b.header.range,
                sha256: b.header.body_sha256,
                max_hlc: b.header.max_hlc,
                bytes: &b.bytes,
            })
            .collect();
        let record = PushRecord {
            digest: record.digest,
            record: postcard::to_allocvec(&record.covered).expect("postcard into a Vec"),
        };
        let receipts = self.commit_inner(&staged, Some((&session.0, &record)))?;
        let written = receipts.iter().filter(|r| r.stored).count();
        log::info!(
            "mailbox={} push committed: {} batches, {written} new",
            self.path().display(),
            receipts.len()
        );
        Ok(())
    }

    fn batches_for(
        &mut self,
        vector: &VersionVector,
        exclude_origin: &SiteId,
        regain: &[Regain],
        grant: &Scopes,
    ) -> Result<PullPlan, MailboxError> {
        // The peer's hello, read for what it proves of this store (`behind.rs`).
        self.note_peer_coverage(exclude_origin, vector)?;
        self.pull_plan_regaining(vector, Some(*exclude_origin), regain, grant)
    }

    fn next_batch(&mut self, plan: &mut PullPlan) -> Result<Option<Vec<u8>>, MailboxError> {
        Ok(Mailbox::next_batch(self, plan)?.map(|b| b.bytes))
    }

    fn pull_size(&mut self, plan: &PullPlan) -> Result<Option<(u64, u64)>, MailboxError> {
        Ok(Some(plan.size()))
    }

    fn grant_ids(
        &mut self,
        peer: &SiteId,
        metered: bool,
        request: &IdRequest,
    ) -> Result<Vec<IdRange>, MailboxError> {
        let ranges = if metered {
            // The quota's period is in wall time; a hub whose clock is wrong still caps each
            // period it believes in, which is all the quota needs.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.grant_ids_metered(peer, request, DEVICE_ID_QUOTA, now)?
        } else {
            Mailbox::grant_ids(self, peer, request)?
        };
        log::info!(
            "mailbox={} ids: {} of {:?} for {peer}: {}",
            self.path().display(),
            request.count,
            request.sequence,
            if ranges.is_empty() {
                "not now (pool short, or the device's quota used)".to_string()
            } else {
                format!(
                    "{}..={} in {} range(s)",
                    ranges[0].first,
                    ranges[ranges.len() - 1].last,
                    ranges.len()
                )
            }
        );
        Ok(ranges)
    }

    fn origin_key(&mut self, origin: &SiteId) -> Result<Option<PublicKey>, MailboxError> {
        self.key_of(origin)
    }

    fn grant_at(&mut self, site: &SiteId, version: u64) -> Result<Option<Scopes>, MailboxError> {
        Ok(self.directory()?.grant_at(site, version).cloned())
    }

    fn drains_declared(&mut self, site: &SiteId, drains: &[Drain]) -> Result<(), MailboxError> {
        self.record_drains(site, drains)
    }

    fn drain_of(&mut self, site: &SiteId, scope: &str) -> Result<Option<u64>, MailboxError> {
        Mailbox::drain_of(self, site, scope)
    }

    fn control_vector(&mut self) -> Result<ControlVector, MailboxError> {
        Mailbox::control_vector(self)
    }

    fn control_for(&mut self, peer: &ControlVector) -> Result<Vec<Vec<u8>>, MailboxError> {
        Mailbox::control_for(self, peer)
    }

    fn control_received(&mut self, entries: Vec<Vec<u8>>) -> Result<(), MailboxError> {
        Mailbox::control_received(self, entries).map(|_| ())
    }

    fn highest_admitted(&mut self) -> Result<Hlc, MailboxError> {
        Mailbox::highest_admitted(self)
    }
}
