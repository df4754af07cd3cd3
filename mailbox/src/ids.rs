//! Id blocks (`outpost_protocol::id_range`): the numbers a mailbox grants its peers, and, on a
//! hub with an uplink, the pool it refills from the cloud.
//!
//! **Two modes**, stored in the file (`id_settings`), so the relay serving devices needs no
//! configuration of its own:
//! - [`IdMode::Root`] (the cloud, and a hub never configured with a cloud): one counter per
//!   sequence starting at 1; a grant takes the next `count` numbers, first raising the counter
//!   above the request's floor (`above`).
//! - [`IdMode::Delegated`] (a hub with an uplink): grants come from the pool of ranges the cloud
//!   granted this hub, lowest first, possibly spanning ranges. When the pool cannot cover a
//!   request the grant is empty and the demand is recorded; the uplink asks the cloud for a
//!   refill ([`Mailbox::id_refills`]) whenever the pool is below the demand or a low-water mark,
//!   with `above` = the highest number this mailbox ever issued as root.
//!
//! **Never twice.** Every grant is written with the counter or pool change it makes in one
//! `BEGIN IMMEDIATE` transaction (fsynced: the mailbox runs `synchronous=FULL`), under (peer,
//! request id); a repeated request returns the recorded ranges and changes nothing. A refill
//! request is stored (with its random id) before it is sent, and its grant enters the pool in one
//! transaction with the request's removal, so a grant arriving twice adds nothing.
//!
//! **Quota.** A device may be granted at most [`DEVICE_ID_QUOTA`] numbers (all sequences together)
//! per rolling period ([`Mailbox::grant_ids_metered`]); a request beyond it gets an empty grant
//! ("not now": the device keeps it and asks again at a later sync), records no demand (so it
//! cannot make a hub drain the cloud either) and is counted per sequence for status. Hubs'
//! refills are not metered: a hub serves many devices, each metered at the hub.
//!
//! **Known limit.** A hub that issued numbers as root and then joins a cloud is safe only if the
//! cloud hears its floor (`above`) before it grants those numbers to anyone else.

use crate::error::MailboxError;
use crate::mailbox::Mailbox;
use outpost_protocol::id_range::{IdRange, IdRequest, RequestId, MAX_ID_BLOCK};
use outpost_protocol::SiteId;
use outpost_sql::{params, OptionalExtension, TransactionBehavior};

/// Numbers a hub asks the cloud for at least, per refill.
pub const HUB_BLOCK: u64 = 10_000;

/// How many id numbers one peer may be granted per rolling period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdQuota {
    /// Numbers, all sequences together.
    pub numbers: u64,
    /// The period, in seconds.
    pub period_secs: u64,
}

/// A device's quota: one largest block ([`MAX_ID_BLOCK`], a million numbers) per 24 hours, far
/// above what a field app reserves (blocks of hundreds), far below draining a hub's pool by
/// asking again and again.
pub const DEVICE_ID_QUOTA: IdQuota = IdQuota {
    numbers: MAX_ID_BLOCK,
    period_secs: 24 * 60 * 60,
};

/// Where a mailbox's numbers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMode {
    /// It is the root of every sequence: its own counters.
    Root,
    /// It sub-allocates ranges granted by its uplink's server (the cloud).
    Delegated,
}

/// Per-sequence figures for status pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdSequenceStatus {
    /// The sequence.
    pub sequence: String,
    /// Root: the next number it would grant (0 if it never granted as root).
    pub next: u64,
    /// Delegated: numbers left in the pool.
    pub pool: u64,
    /// Delegated: numbers requested by peers that the pool could not cover yet.
    pub demand: u64,
    /// Delegated: numbers asked of the cloud and not granted yet.
    pub refilling: u64,
    /// Requests refused because the asking device had used its [`DEVICE_ID_QUOTA`].
    pub over_quota: u64,
}

fn ranges_blob(ranges: &[IdRange]) -> Vec<u8> {
    postcard::to_allocvec(ranges).expect("postcard into a Vec")
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Mailbox {
    /// The allocation mode (root until set otherwise).
    pub fn id_mode(&self) -> Result<IdMode, MailboxError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM id_settings WHERE name = 'mode'",
                (),
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(match v.as_deref() {
            Some("delegated") => IdMode::Delegated,
            _ => IdMode::Root,
        })
    }

    /// Sets the allocation mode (the hub sets [`IdMode::Delegated`] when its uplink is
    /// configured; the counters are kept, so the highest number issued as root stays known).
    pub fn set_id_mode(&mut self, mode: IdMode) -> Result<(), MailboxError> {
        let value = match mode {
            IdMode::Root => "root",
            IdMode::Delegated => "delegated",
        };
        self.conn
            .execute(
                "INSERT INTO id_settings(name, value) VALUES ('mode', ?1) \
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [value],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Grants `request` to `peer` (see the module doc): the recorded ranges for a repeated
    /// request, new ones otherwise, or none when a delegated pool cannot cover it (the demand is
    /// recorded). Durable before it returns.
    pub fn grant_ids(
        &mut self,
        peer: &SiteId,
        request: &IdRequest,
    ) -> Result<Vec<IdRange>, MailboxError> {
        self.grant(peer, request, None, 0)
    }

    /// [`Mailbox::grant_ids`] for a device, at `now` (unix seconds): a new request that would take
    /// the device past `quota` within its period gets an empty grant, records no demand and is
    /// counted in [`IdSequenceStatus::over_quota`]. A repeated request still gets its recorded
    /// ranges.
    pub fn grant_ids_metered(
        &mut self,
        peer: &SiteId,
        request: &IdRequest,
        quota: IdQuota,
        now: u64,
    ) -> Result<Vec<IdRange>, MailboxError> {
        self.grant(peer, request, Some(quota), now)
    }

    fn grant(
        &mut self,
        peer: &SiteId,
        request: &IdRequest,
        quota: Option<IdQuota>,
        now: u64,
    ) -> Result<Vec<IdRange>, MailboxError> {
        let mode = self.id_mode()?;
        let path = self.path().to_path_buf();
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let recorded: Option<Vec<u8>> = tx
            .query_row(
                "SELECT ranges FROM id_grants WHERE peer = ?1 AND request = ?2",
                params![peer.as_bytes(), request.request.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if let Some(blob) = recorded {
            return postcard::from_bytes(&blob).map_err(|source| MailboxError::Record {
                path: path.clone(),
                what: "id grant record".into(),
                source,
            });
        }
        if let Some(quota) = quota {
            let used: i64 = tx
                .query_row(
                    "SELECT coalesce(sum(count), 0) FROM id_grants \
                     WHERE peer = ?1 AND granted_at > ?2",
                    params![peer.as_bytes(), int(now.saturating_sub(quota.period_secs))],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            if (used as u64).saturating_add(request.count) > quota.numbers {
                tx.execute(
                    "INSERT INTO id_over_quota(sequence, refused) VALUES (?1, 1) \
                     ON CONFLICT(sequence) DO UPDATE SET refused = id_over_quota.refused + 1",
                    [&request.sequence],
                )
                .map_err(sql)?;
                tx.commit().map_err(sql)?;
                return Ok(Vec::new());
            }
        }
        let ranges = match mode {
            IdMode::Root => {
                let next: i64 = tx
                    .query_row(
                        "SELECT next FROM id_counters WHERE sequence = ?1",
                        [&request.sequence],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?
                    .unwrap_or(1);
                let first = (next as u64).max(request.above.saturating_add(1));
                let Some(last) = first
                    .checked_add(request.count - 1)
                    .filter(|&l| l < i64::MAX as u64)
                else {
                    return Err(MailboxError::Corrupt {
                        path: path.clone(),
                        detail: format!("sequence {:?} is exhausted", request.sequence),
                    });
                };
                tx.execute(
                    "INSERT INTO id_counters(sequence, next) VALUES (?1, ?2) \
                     ON CONFLICT(sequence) DO UPDATE SET next = excluded.next",
                    params![request.sequence, int(last + 1)],
                )
                .map_err(sql)?;
                vec![IdRange { first, last }]
            }
            IdMode::Delegated => {
                let pool: Vec<(i64, i64)> = {
                    let mut s = tx
                        .prepare_cached(
                            "SELECT first, last FROM id_pool WHERE sequence = ?1 AND last > ?2 \
                             ORDER BY first",
                        )
                        .map_err(sql)?;
                    let rows = s
                        .query_map(params![request.sequence, int(request.above)], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .map_err(sql)?;
                    rows.collect::<Result<_, _>>().map_err(sql)?
                };
                let mut want = request.count;
                let mut taken = Vec::new();
                for (first, last) in pool {
                    if want == 0 {
                        break;
                    }
                    let (first, last) = (first as u64, last as u64);
                    let from = first.max(request.above + 1);
                    let to = last.min(from + want - 1);
                    taken.push((
                        first,
                        last,
                        IdRange {
                            first: from,
                            last: to,
                        },
                    ));
                    want -= to - from + 1;
                }
                if want > 0 {
                    tx.execute(
                        "INSERT OR IGNORE INTO id_demand(peer, request, sequence, count) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![
                            peer.as_bytes(),
                            request.request.0,
                            request.sequence,
                            int(request.count)
                        ],
                    )
                    .map_err(sql)?;
                    tx.commit().map_err(sql)?;
                    return Ok(Vec::new());
                }
                for (first, last, g) in &taken {
                    tx.execute(
                        "DELETE FROM id_pool WHERE sequence = ?1 AND first = ?2",
                        params![request.sequence, int(*first)],
                    )
                    .map_err(sql)?;
                    // What is left of the pool range on either side of the grant.
                    for (a, b) in [(*first, g.first - 1), (g.last + 1, *last)] {
                        if a <= b {
                            tx.execute(
                                "INSERT INTO id_pool(sequence, first, last) VALUES (?1, ?2, ?3)",
                                params![request.sequence, int(a), int(b)],
                            )
                            .map_err(sql)?;
                        }
                    }
                }
                tx.execute(
                    "DELETE FROM id_demand WHERE peer = ?1 AND request = ?2",
                    params![peer.as_bytes(), request.request.0],
                )
                .map_err(sql)?;
                taken.into_iter().map(|(_, _, g)| g).collect()
            }
        };
        tx.execute(
            "INSERT INTO id_grants(peer, request, sequence, count, ranges, granted_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                peer.as_bytes(),
                request.request.0,
                request.sequence,
                int(request.count),
                ranges_blob(&ranges),
                int(now)
            ],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(ranges)
    }

    /// Delegated mode, the uplink's side: the refill requests to send the cloud now. For every
    /// sequence with a pool, a demand or a grant, when the pool is below `max(demand,
    /// low_water)` and no refill is outstanding, a new request for `max(block, 2 × demand)`
    /// numbers is stored first (retry-safe); then every outstanding one is returned. Root mode:
    /// none.
    pub fn id_refills(
        &mut self,
        block: u64,
        low_water: u64,
    ) -> Result<Vec<IdRequest>, MailboxError> {
        if self.id_mode()? != IdMode::Delegated {
            return Ok(Vec::new());
        }
        let path = self.path().to_path_buf();
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        {
            let mut due = tx
                .prepare(
                    "SELECT s.sequence,
                        coalesce((SELECT sum(last - first + 1) FROM id_pool p
                                  WHERE p.sequence = s.sequence), 0),
                        coalesce((SELECT sum(count) FROM id_demand d
                                  WHERE d.sequence = s.sequence), 0),
                        coalesce((SELECT next - 1 FROM id_counters c
                                  WHERE c.sequence = s.sequence), 0)
                     FROM (SELECT sequence FROM id_pool UNION SELECT sequence FROM id_demand
                           UNION SELECT sequence FROM id_grants) s
                     WHERE s.sequence NOT IN (SELECT sequence FROM id_refills)",
                )
                .map_err(sql)?;
            let rows: Vec<(String, i64, i64, i64)> = due
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?;
            for (sequence, pool, demand, root_high) in rows {
                let (pool, demand) = (pool as u64, demand as u64);
                if pool >= demand.max(low_water) {
                    continue;
                }
                let count = block.max(demand.saturating_mul(2)).clamp(1, MAX_ID_BLOCK);
                let mut request = [0u8; 16];
                getrandom::getrandom(&mut request).map_err(|e| MailboxError::Random {
                    what: "an id request's id",
                    detail: e.to_string(),
                })?;
                tx.execute(
                    "INSERT INTO id_refills(request, sequence, count, above) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![request, sequence, int(count), root_high],
                )
                .map_err(sql)?;
            }
        }
        let mut all = tx
            .prepare("SELECT request, sequence, count, above FROM id_refills ORDER BY sequence")
            .map_err(sql)?;
        let out = all
            .query_map((), |r| {
                let id: Vec<u8> = r.get(0)?;
                let mut request = [0u8; 16];
                request.copy_from_slice(&id);
                Ok(IdRequest {
                    request: RequestId(request),
                    sequence: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    above: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        drop(all);
        tx.commit().map_err(sql)?;
        Ok(out)
    }

    /// True when a sequence's pool is below its demand and no refill is outstanding for it
    /// (delegated mode): [`Mailbox::id_refills`] would ask for one. Read-only; for waking the
    /// uplink when a device asked for more than the pool holds.
    pub fn id_refill_wanted(&self) -> Result<bool, MailboxError> {
        if self.id_mode()? != IdMode::Delegated {
            return Ok(false);
        }
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM
                   (SELECT d.sequence FROM id_demand d
                    WHERE d.sequence NOT IN (SELECT sequence FROM id_refills)
                    GROUP BY d.sequence
                    HAVING sum(d.count) > coalesce((SELECT sum(last - first + 1) FROM id_pool p
                                                    WHERE p.sequence = d.sequence), 0)) short",
                (),
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(n > 0)
    }

    /// The cloud granted `ranges` for the refill `request`: they join the pool and the request is
    /// retired, in one transaction. Empty ranges keep the request (asked again next session); a
    /// request not outstanding (already stored) is ignored. Returns the numbers added.
    pub fn id_refill_granted(
        &mut self,
        request: &IdRequest,
        ranges: &[IdRange],
    ) -> Result<u64, MailboxError> {
        if ranges.is_empty() {
            return Ok(0);
        }
        let path = self.path().to_path_buf();
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let removed = tx
            .execute(
                "DELETE FROM id_refills WHERE request = ?1 AND sequence = ?2",
                params![request.request.0, request.sequence],
            )
            .map_err(sql)?;
        if removed == 0 {
            return Ok(0);
        }
        let mut added = 0;
        for r in ranges {
            tx.execute(
                "INSERT INTO id_pool(sequence, first, last) VALUES (?1, ?2, ?3)",
                params![request.sequence, int(r.first), int(r.last)],
            )
            .map_err(sql)?;
            added += r.len();
        }
        tx.commit().map_err(sql)?;
        Ok(added)
    }

    /// Per-sequence figures (root counters, delegated pool, demand, outstanding refills), in
    /// sequence order.
    pub fn id_status(&self) -> Result<Vec<IdSequenceStatus>, MailboxError> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT s.sequence,
                    coalesce((SELECT next FROM id_counters c WHERE c.sequence = s.sequence), 0),
                    coalesce((SELECT sum(last - first + 1) FROM id_pool p
                              WHERE p.sequence = s.sequence), 0),
                    coalesce((SELECT sum(count) FROM id_demand d WHERE d.sequence = s.sequence), 0),
                    coalesce((SELECT sum(count) FROM id_refills f WHERE f.sequence = s.sequence), 0),
                    coalesce((SELECT refused FROM id_over_quota q WHERE q.sequence = s.sequence), 0)
                 FROM (SELECT sequence FROM id_counters UNION SELECT sequence FROM id_pool
                       UNION SELECT sequence FROM id_demand UNION SELECT sequence FROM id_refills
                       UNION SELECT sequence FROM id_over_quota) s
                 ORDER BY s.sequence",
            )
            .map_err(|e| self.sql(e))?;
        let rows = s
            .query_map((), |r| {
                Ok(IdSequenceStatus {
                    sequence: r.get(0)?,
                    next: r.get::<_, i64>(1)? as u64,
                    pool: r.get::<_, i64>(2)? as u64,
                    demand: r.get::<_, i64>(3)? as u64,
                    refilling: r.get::<_, i64>(4)? as u64,
                    over_quota: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}
