//! The highest own seq a relay acknowledged holding, per own stream (`streams.rs`): what
//! "synced" means per row (`outpost_row_status`, `outpost_pending`).
//!
//! Every own change with a seq at or below it is held by a hub or the cloud; a change above it
//! is pending. It only grows, and it is contiguous: a relay's acknowledgement of a push covers
//! the seqs from where its hello said it stood, and a hello's vector entry for this database
//! says it holds every seq up to that number. The sync store (`sync/store.rs`) records both: the
//! hello's entry when the push is planned (so a push whose ack was lost to a cut counts at the
//! next hello), the ack when it arrives. Each record is one statement in autocommit, like every
//! other write of a sync (`outpost_sync` refuses to run inside a transaction).
//!
//! Stream `""`'s is stored in `_outpost_meta` under [`KEY`] (where it was before streams), a
//! scoped stream's in `_outpost_stream_marks`; a stream never acknowledged has none (0).

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::message::Covered;
use outpost_protocol::StreamId;
use std::collections::HashMap;

/// The `_outpost_meta` key.
const KEY: &str = "acked_seq";
/// The `_outpost_stream_marks` key.
const MARK: &str = "acked";

/// The highest seq acknowledged per own stream (a stream missing: none).
pub(crate) fn acked(conn: Conn) -> Result<HashMap<String, u64>, Error> {
    let mut all = crate::streams::marks(conn, MARK)?;
    all.insert(String::new(), acked_in(conn, "")?);
    Ok(all)
}

/// The highest seq of own stream `stream` acknowledged (0: none).
pub(crate) fn acked_in(conn: Conn, stream: &str) -> Result<u64, Error> {
    if !stream.is_empty() {
        return Ok(crate::streams::mark(conn, stream, MARK)?.unwrap_or(0));
    }
    Ok(crate::schema::meta_get(conn, KEY)?.unwrap_or(0).max(0) as u64)
}

/// Raises the acknowledged seq of own stream `stream` to `seq` (never lowers it).
pub(crate) fn record(conn: Conn, stream: &str, seq: u64) -> Result<(), Error> {
    if seq == 0 {
        return Ok(());
    }
    if !stream.is_empty() {
        return crate::streams::set_mark(conn, stream, MARK, seq, true);
    }
    let mut s = conn.prepare(
        "INSERT INTO _outpost_meta(k, v) VALUES (?1, ?2) \
         ON CONFLICT(k) DO UPDATE SET v = max(coalesce(v, 0), excluded.v)",
    )?;
    s.bind_text(1, KEY)?;
    s.bind_i64(2, i64::try_from(seq).unwrap_or(i64::MAX))?;
    s.run()
}

/// The acknowledged seq of `stream` after a relay acknowledged `covered`, starting from `from`:
/// the ranges of that stream extend it while they leave no gap, never past `issued` (the seqs
/// this database issued in it: a relay cannot hold more of them).
pub(crate) fn extended(from: u64, stream: &StreamId, covered: &[Covered], issued: u64) -> u64 {
    let mut ranges: Vec<(u64, u64)> = covered
        .iter()
        .filter(|c| c.origin == stream.origin && c.scope == stream.scope)
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
    use outpost_protocol::{SiteId, StreamId};

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
        let me = StreamId::unscoped(SiteId([1; 16]));
        let me = &me;
        assert_eq!(extended(4, me, &[c(1, 5, 9), c(1, 10, 12)], 20), 12);
        assert_eq!(extended(4, me, &[c(1, 10, 12), c(1, 5, 9)], 20), 12);
        assert_eq!(extended(4, me, &[c(1, 6, 9)], 20), 4, "a gap at 5");
        assert_eq!(extended(4, me, &[c(2, 5, 9)], 20), 4, "another origin");
        assert_eq!(extended(4, me, &[c(1, 5, 90)], 20), 20, "capped");
        assert_eq!(extended(30, me, &[c(1, 5, 9)], 40), 30, "never lowered");
        let moshi = Covered {
            scope: "moshi".into(),
            ..c(1, 5, 9)
        };
        assert_eq!(extended(4, me, &[moshi], 20), 4, "another stream");
    }
}
