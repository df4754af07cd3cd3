//! The highest own seq a relay acknowledged holding: what "synced" means per row
//! (`outpost_row_status`, `outpost_pending`).
//!
//! Every own change with a seq at or below it is held by a hub or the cloud; a change above it
//! is pending. It only grows, and it is contiguous: a relay's acknowledgement of a push covers
//! the seqs from where its hello said it stood, and a hello's vector entry for this database
//! says it holds every seq up to that number. The sync store (`sync/store.rs`) records both: the
//! hello's entry when the push is planned (so a push whose ack was lost to a cut counts at the
//! next hello), the ack when it arrives. Each record is one statement in autocommit, like every
//! other write of a sync (`outpost_sync` refuses to run inside a transaction).
//!
//! Stored in `_outpost_meta` under [`KEY`]; a database that never synced has none (0).

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::message::Covered;
use outpost_protocol::SiteId;

/// The `_outpost_meta` key.
const KEY: &str = "acked_seq";

/// The highest own seq acknowledged (0: none).
pub(crate) fn acked(conn: Conn) -> Result<u64, Error> {
    Ok(crate::schema::meta_get(conn, KEY)?.unwrap_or(0).max(0) as u64)
}

/// Raises the acknowledged seq to `seq` (never lowers it).
pub(crate) fn record(conn: Conn, seq: u64) -> Result<(), Error> {
    if seq == 0 {
        return Ok(());
    }
    let mut s = conn.prepare(
        "INSERT INTO _outpost_meta(k, v) VALUES (?1, ?2) \
         ON CONFLICT(k) DO UPDATE SET v = max(coalesce(v, 0), excluded.v)",
    )?;
    s.bind_text(1, KEY)?;
    s.bind_i64(2, i64::try_from(seq).unwrap_or(i64::MAX))?;
    s.run()
}

/// The acknowledged seq after a relay acknowledged `covered`, starting from `from`: the ranges of
/// `site`'s origin extend it while they leave no gap, never past `issued` (the seqs this database
/// issued: a relay cannot hold more of them).
pub(crate) fn extended(from: u64, site: SiteId, covered: &[Covered], issued: u64) -> u64 {
    let mut ranges: Vec<(u64, u64)> = covered
        .iter()
        .filter(|c| c.origin == site)
        .map(|c| (c.range.lo, c.range.hi))
        .collect();
    ranges.sort_unstable();
    let mut top = from;
    for (lo, hi) in ranges {
        if lo <= top.saturating_add(1) {
            top = top.max(hi);
        }
    }
    top.min(issued)
}

#[cfg(test)]
mod tests {
    use super::extended;
    use outpost_protocol::message::Covered;
    use outpost_protocol::vector::SeqRange;
    use outpost_protocol::SiteId;

    fn c(origin: u8, lo: u64, hi: u64) -> Covered {
        Covered {
            origin: SiteId([origin; 16]),
            scope: String::new(),
            range: SeqRange { lo, hi },
            batch_sha256: [0; 32],
        }
    }

    #[test]
    fn acks_extend_only_without_gaps_and_never_past_what_was_issued() {
        let me = SiteId([1; 16]);
        assert_eq!(extended(4, me, &[c(1, 5, 9), c(1, 10, 12)], 20), 12);
        assert_eq!(extended(4, me, &[c(1, 10, 12), c(1, 5, 9)], 20), 12);
        assert_eq!(extended(4, me, &[c(1, 6, 9)], 20), 4, "a gap at 5");
        assert_eq!(extended(4, me, &[c(2, 5, 9)], 20), 4, "another origin");
        assert_eq!(extended(4, me, &[c(1, 5, 90)], 20), 20, "capped");
        assert_eq!(extended(30, me, &[c(1, 5, 9)], 40), 30, "never lowered");
    }
}
