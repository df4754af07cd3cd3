//! A store restored behind its peers (docs/design.md section 11, "Durability"): a cloud's
//! database restored from a backup, or failed over to a replica that missed its last commits,
//! holds fewer of the cloud's own seqs than the peers that pulled them. Writing on from there
//! would issue those (site, seq) pairs again for other changes, which every peer holding the
//! first ones would ignore: a silent divergence.
//!
//! So every hello's coverage of the box's own origin is kept here (`own_claims`: per stream, the
//! most any peer stated, which peer, when). A claim is a peer's word, not proof: a stolen tablet
//! could claim any coverage, so a claim alone latches nothing (it would let one device stop the
//! cloud's exports); it is kept for `status` and for the recovery, which must be shown the
//! cloud's own signed batches before it believes one. What latches a stream as `behind` (what
//! was exported, what the store had issued) for good is the writer's own record: the cloud's
//! process keeps the highest seq it exported outside the database (`cloud/src/high_water.rs`). The cloud's export refuses to store a batch of such a
//! stream (`cloud/src/tenant/export.rs`), `status` names it, and the recovery (a new site id, the
//! lost batches pulled back from peers as another origin's) starts from the record. Claims are
//! only ever raised: a later peer covering less says nothing.

use crate::error::MailboxError;
use crate::mailbox::Mailbox;
use outpost_protocol::{SiteId, VersionVector};
use outpost_sql::params;
use std::time::{SystemTime, UNIX_EPOCH};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) const BEHIND_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS own_claims(
    stream TEXT PRIMARY KEY,
    peer_has INTEGER NOT NULL,
    peer BLOB NOT NULL,
    seen_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS behind(
    stream TEXT PRIMARY KEY,
    peer_has INTEGER NOT NULL,
    held INTEGER NOT NULL,
    peer BLOB NOT NULL,
    seen_at INTEGER NOT NULL
);";

/// One of the box's own streams that a peer covers beyond the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    /// The stream (its scope's wire id; `""` unscoped).
    pub stream: String,
    /// What the peer covers of it.
    pub peer_has: u64,
    /// What the box's writer had issued when it was latched (0 in a claim).
    pub held: u64,
    /// The peer.
    pub peer: SiteId,
    /// When (unix seconds).
    pub seen_at: u64,
}

impl Mailbox {
    /// Keeps what `peer`'s hello (`vector`) covers of the box's own origin, where it is more
    /// than any peer stated before. Nothing for a box without an owner.
    pub fn note_peer_coverage(
        &mut self,
        peer: &SiteId,
        vector: &VersionVector,
    ) -> Result<(), MailboxError> {
        let Some(own) = self.control_owner().map(|o| o.site) else {
            return Ok(());
        };
        // Only streams the store holds of its own origin: a hello may name any number of made-up
        // ones, and none of them may grow this table.
        let held = self.vector()?;
        let now = unix_now();
        for (s, &peer_has) in vector
            .iter()
            .filter(|(s, _)| s.origin == own && held.get(s) > 0)
        {
            self.conn
                .execute(
                    "INSERT INTO own_claims(stream, peer_has, peer, seen_at) \
                     VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(stream) DO UPDATE SET peer_has = excluded.peer_has, \
                     peer = excluded.peer, seen_at = excluded.seen_at \
                     WHERE excluded.peer_has > own_claims.peer_has",
                    params![
                        s.scope,
                        i64::try_from(peer_has).unwrap_or(i64::MAX),
                        peer.as_bytes(),
                        now as i64
                    ],
                )
                .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// The most any peer stated it covers of each of the box's own streams.
    pub fn own_claims(&self) -> Result<Vec<Behind>, MailboxError> {
        self.read_behind(
            "SELECT stream, peer_has, 0, peer, seen_at FROM own_claims ORDER BY stream",
        )
    }

    /// Latches `claim` (a peer's coverage of a stream beyond the `issued` seqs of the box's own
    /// writer) as the store being behind. Returns the record kept (the first latched stays).
    pub fn latch_behind(&mut self, claim: &Behind, issued: u64) -> Result<(), MailboxError> {
        log::error!(
            "mailbox={} peer {} covers seqs up to {} of this box's own stream {:?}, whose writer \
             issued up to {issued}: the store was restored behind its peers; the stream is not \
             written on until it is recovered",
            self.path().display(),
            claim.peer,
            claim.peer_has,
            claim.stream
        );
        self.conn
            .execute(
                "INSERT OR IGNORE INTO behind(stream, peer_has, held, peer, seen_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    claim.stream,
                    i64::try_from(claim.peer_has).unwrap_or(i64::MAX),
                    i64::try_from(issued).unwrap_or(i64::MAX),
                    claim.peer.as_bytes(),
                    unix_now() as i64
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The box's own streams latched behind a peer's coverage.
    pub fn behind(&self) -> Result<Vec<Behind>, MailboxError> {
        self.read_behind("SELECT stream, peer_has, held, peer, seen_at FROM behind ORDER BY stream")
    }

    /// Lets go of every latch: the writer took a new origin (the cloud's recovery,
    /// `cloud/src/new_origin.rs`), so the latched streams' (site, seq) pairs are never issued
    /// again and its new streams start clean. Returns the latches released.
    pub fn release_behind(&mut self) -> Result<Vec<Behind>, MailboxError> {
        let released = self.behind()?;
        self.conn
            .execute("DELETE FROM behind", ())
            .map_err(|e| self.sql(e))?;
        Ok(released)
    }

    fn read_behind(&self, sql: &str) -> Result<Vec<Behind>, MailboxError> {
        let rows = self
            .conn
            .query_map(sql, (), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (stream, peer_has, held, peer, seen_at) = row.map_err(|e| self.sql(e))?;
            out.push(Behind {
                stream,
                peer_has: peer_has as u64,
                held: held as u64,
                peer: SiteId::from_slice(&peer).unwrap_or_default(),
                seen_at: seen_at as u64,
            });
        }
        Ok(out)
    }
}
