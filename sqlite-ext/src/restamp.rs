//! Re-stamping the changes that never left this database, after a clock correction
//! (docs/design.md sections 3 and 10, "Time"; the rule is stated in docs/sql-api.md,
//! "Re-stamping after a clock correction").
//!
//! When a check against a trusted peer moves the skew offset by `delta` (`skew.rs`), the own
//! changes no peer can hold yet get the clocks they would have had with the new offset. Taken in
//! their original order (their local seq: the order they were committed in), each gets
//!
//! ```text
//! new = max(old + delta,  min(fixed + 1, old),  previous new + 1)
//! ```
//!
//! where `fixed` is the highest clock that can no longer change: of any cell received from a peer
//! (applied or not) and of any own change that left. The middle term keeps every re-stamped
//! change above whatever it was ever compared with (a received version it replaced or beat, or its
//! own earlier write a peer holds: those were all below `old`, and at most `fixed`), so it still
//! wins everywhere it won here; the last term keeps the changes strictly in their order. A shift
//! forward (the device was behind) is therefore exact; a shift back stops at `fixed`.
//!
//! **What "left" means.** A change has left once it was put in a batch: the sync's push (sent,
//! acknowledged or not) and the manual `outpost_changes` alike (the app may have shipped it).
//! Export raises [`SENT_SEQ_KEY`] to the highest own seq of the batch, and the sent clock mark,
//! in the same transaction that builds the batch, before any byte of it can go anywhere. A batch
//! may carry later seqs of a row than its range says (`export.rs`): the mark covers those too.
//! Own changes with a seq at or below it are never re-stamped; neither is a received change (its
//! version has another site, or seq 0).
//!
//! **Where own clocks live.** The log (folded first, so only its newest row remains: its clock is
//! set to the new stored clock), the per-cell versions in `_outpost_rows`, a counter's own
//! contribution and a review cell's own sibling (with its context's own entry, which names own
//! writes this one superseded: it is lowered to the sent clock mark, so it still covers every own
//! write a peer can hold and never this write or a later one). All in the caller's transaction.
//!
//! **The clock after.** The stored clock becomes the highest of the re-stamped clocks, the sent
//! clock mark and the received one (capped at a day ahead of trusted time, as
//! `clock.rs` caps what it observes); [`clock_epoch`] is bumped so every connection resumes from
//! it within a second (`clock.rs`). A connection that writes in that second still uses its older
//! clock: such a write is not re-stamped, only ordered by that clock (fold keeps it above what it
//! replaces), and a connection resuming later resumes above it (the log's newest clocks count).
//! Checking the epoch on every write would cost a statement per written row.
//!
//! **After a relay refused a push as stamped too far ahead** (`clock_ahead.rs`): a write made
//! by a connection that had not read the new offset yet still carries the wrong clock, and the
//! relay refuses it. The push stored nothing, so the marks its export raised are put back
//! ([`put_back`], only if nothing else was exported since), and the own changes that have not
//! left are re-stamped by [`restamp_ahead`]: each clock past trusted time comes down to it, with
//! the same floor and order as above (`new = max(min(old, now), min(fixed + 1, old), previous
//! new + 1)`), so an edit of a far-future version still stays above that version.
//!
//! **Databases created before the marks.** They have none: at their first re-stamp everything
//! issued so far counts as left and every clock stored as fixed, so nothing older is rewritten.

use crate::cells;
use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::Call;
use crate::schema::{self, meta_get, meta_set};
use crate::sites::Sites;
use crate::state::{RowStore, Version};
use outpost_protocol::hlc::{CEILING_MILLIS, COUNTER_BITS};
use outpost_protocol::merge::{CounterCell, ReviewCell};
use outpost_protocol::{Hlc, Strategy};
use std::collections::{BTreeMap, HashMap};

/// `_outpost_meta` key: the highest own seq of stream `""` ever put in a batch (pushed or
/// exported); a scoped stream's is its `_outpost_stream_marks` entry [`SENT_MARK`].
pub(crate) const SENT_SEQ_KEY: &str = "sent_seq";
/// `_outpost_stream_marks` key: a scoped stream's highest seq ever put in a batch.
const SENT_MARK: &str = "sent";
/// `_outpost_meta` key: the highest clock of an own change put in a batch.
const SENT_HLC_KEY: &str = "sent_hlc";
/// `_outpost_meta` key: the highest clock of a cell received from a peer.
const RECEIVED_HLC_KEY: &str = "received_hlc";
/// `_outpost_meta` key: bumped by each re-stamp (connections resume their clocks from storage).
const EPOCH_KEY: &str = "clock_epoch";

/// Records that a fresh database has sent and received nothing (`schema::ensure`, only when it
/// creates the bookkeeping: a database created before the marks must not start from 0).
pub(crate) fn start(conn: Conn) -> Result<(), Error> {
    for key in [SENT_SEQ_KEY, SENT_HLC_KEY, RECEIVED_HLC_KEY] {
        meta_set(conn, key, 0)?;
    }
    Ok(())
}

/// Raises a mark to `value` (no-op for a database created before the marks: see the module doc).
fn raise(conn: Conn, key: &str, value: u64) -> Result<(), Error> {
    let mut s = conn.prepare("UPDATE _outpost_meta SET v = max(v, ?2) WHERE k = ?1")?;
    s.bind_text(1, key)?;
    s.bind_i64(2, i64::try_from(value).unwrap_or(i64::MAX))?;
    s.run()
}

/// An export put own changes of `stream` up to its seq `seq`, with clocks up to `hlc`, in a
/// batch: they have left.
pub(crate) fn note_sent(conn: Conn, stream: &str, seq: u64, hlc: u64) -> Result<(), Error> {
    if stream.is_empty() {
        raise(conn, SENT_SEQ_KEY, seq)?;
    } else if meta_get(conn, SENT_SEQ_KEY)?.is_some() {
        crate::streams::set_mark(conn, stream, SENT_MARK, seq, true)?;
    }
    raise(conn, SENT_HLC_KEY, hlc)
}

/// An apply received cells with clocks up to `hlc`.
pub(crate) fn note_received(conn: Conn, hlc: u64) -> Result<(), Error> {
    raise(conn, RECEIVED_HLC_KEY, hlc)
}

/// The re-stamp generation (0 before any).
pub(crate) fn clock_epoch(conn: Conn) -> Result<i64, Error> {
    Ok(meta_get(conn, EPOCH_KEY)?.unwrap_or(0))
}

/// What the sent marks were at one moment (`None` in [`sent`]: a database created before them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Per own stream, the highest seq sent (a stream missing: none).
    seqs: BTreeMap<String, u64>,
    hlc: u64,
}

/// The sent seq of every own stream, stream `""` included (module documentation).
fn sent_seqs(conn: Conn, unscoped: u64) -> Result<BTreeMap<String, u64>, Error> {
    let mut seqs: BTreeMap<String, u64> = crate::streams::marks(conn, SENT_MARK)?
        .into_iter()
        .collect();
    seqs.insert(String::new(), unscoped);
    Ok(seqs)
}

/// The sent marks as they stand.
pub(crate) fn sent(conn: Conn) -> Result<Option<Sent>, Error> {
    let get = |k| -> Result<Option<u64>, Error> {
        Ok(meta_get(conn, k)?.map(|v| u64::try_from(v).unwrap_or(0)))
    };
    Ok(match (get(SENT_SEQ_KEY)?, get(SENT_HLC_KEY)?) {
        (Some(seq), Some(hlc)) => Some(Sent {
            seqs: sent_seqs(conn, seq)?,
            hlc,
        }),
        _ => None,
    })
}

/// Puts the sent marks back to `before` if they still are `after` (what a refused push's export
/// set: nothing was exported since, in any stream). In the caller's transaction. Returns
/// whether it did.
pub(crate) fn put_back(conn: Conn, before: &Sent, after: &Sent) -> Result<bool, Error> {
    if sent(conn)?.as_ref() != Some(after) || before == after {
        return Ok(false);
    }
    for stream in after.seqs.keys() {
        let seq = before.seqs.get(stream).copied().unwrap_or(0);
        if stream.is_empty() {
            meta_set(conn, SENT_SEQ_KEY, to_i64(seq))?;
        } else {
            crate::streams::set_mark(conn, stream, SENT_MARK, seq, false)?;
        }
    }
    meta_set(conn, SENT_HLC_KEY, to_i64(before.hlc))?;
    Ok(true)
}

/// The marks, set now for a database created before them (module documentation).
struct Marks {
    /// Per own stream, the highest seq sent.
    sent: HashMap<String, u64>,
    sent_hlc: u64,
    received_hlc: u64,
}

impl Marks {
    fn read(call: &Call) -> Result<Marks, Error> {
        let conn = call.conn;
        let get = |k| -> Result<Option<u64>, Error> {
            Ok(meta_get(conn, k)?.map(|v| u64::try_from(v).unwrap_or(0)))
        };
        if let (Some(sent_seq), Some(sent_hlc), Some(received_hlc)) = (
            get(SENT_SEQ_KEY)?,
            get(SENT_HLC_KEY)?,
            get(RECEIVED_HLC_KEY)?,
        ) {
            return Ok(Marks {
                sent: sent_seqs(conn, sent_seq)?.into_iter().collect(),
                sent_hlc,
                received_hlc,
            });
        }
        // Everything issued so far counts as sent, in every stream (folded first: all assigned).
        let tops = crate::streams::tops(conn)?;
        for (stream, &top) in tops.iter().filter(|(s, _)| !s.is_empty()) {
            crate::streams::set_mark(conn, stream, SENT_MARK, top, true)?;
        }
        let marks = Marks {
            sent: tops.into_iter().collect(),
            sent_hlc: call.session.clock.last(conn)?,
            received_hlc: call.session.clock.last(conn)?,
        };
        let unscoped = marks.sent.get("").copied().unwrap_or(0);
        meta_set(conn, SENT_SEQ_KEY, to_i64(unscoped))?;
        meta_set(conn, SENT_HLC_KEY, to_i64(marks.sent_hlc))?;
        meta_set(conn, RECEIVED_HLC_KEY, to_i64(marks.received_hlc))?;
        Ok(marks)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `old` moved by `delta_ms` milliseconds (the counter kept), within 0 and the clock's ceiling.
fn shift(old: u64, delta_ms: i64) -> u64 {
    let moved = i128::from(old) + (i128::from(delta_ms) << COUNTER_BITS);
    let top = i128::from(Hlc::new(CEILING_MILLIS, 0).as_u64());
    if i128::from(old) > top {
        // Already above the ceiling (a clock raised past a far-future version): left as it is.
        return old;
    }
    moved.clamp(0, top) as u64
}

/// How a re-stamp moves the clocks: by the move of the skew offset (`delta_ms`), and no
/// higher than `cap` (a raw clock: trusted time after a relay's refusal, else no cap).
#[derive(Clone, Copy, Debug)]
struct Move {
    delta_ms: i64,
    cap: u64,
}

/// The new clocks of the own changes `(seq, old clock)`, sorted by seq (module documentation).
fn new_clocks(changes: &[(u64, u64)], by: Move, fixed: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(changes.len());
    let mut previous: Option<u64> = None;
    for &(_, old) in changes {
        let mut new = shift(old, by.delta_ms)
            .min(by.cap)
            .max(fixed.saturating_add(1).min(old));
        if let Some(p) = previous {
            new = new.max(p.saturating_add(1));
        }
        out.push(new);
        previous = Some(new);
    }
    out
}

/// Re-stamps the own changes that never left by `delta_ms` (the move of the skew offset);
/// `now_ms` is trusted time. Runs inside the caller's transaction. Returns how many changes
/// (local seqs) were re-stamped.
pub(crate) fn restamp(call: &Call, delta_ms: i64, now_ms: u64) -> Result<u64, Error> {
    let by = Move {
        delta_ms,
        cap: u64::MAX,
    };
    schema::with_bulk_cache(call.conn, || restamp_inner(call, by, now_ms))
}

/// Brings every own change that never left and is stamped after trusted time `now_ms` down to
/// it (module documentation: after a relay's refusal). Runs inside the caller's transaction.
/// Returns how many changes (local seqs) were re-stamped.
pub(crate) fn restamp_ahead(call: &Call, now_ms: u64) -> Result<u64, Error> {
    let by = Move {
        delta_ms: 0,
        cap: Hlc::new(now_ms, 0).as_u64(),
    };
    schema::with_bulk_cache(call.conn, || restamp_inner(call, by, now_ms))
}

fn restamp_inner(call: &Call, by: Move, now_ms: u64) -> Result<u64, Error> {
    let conn = call.conn;
    // Every own change in `_outpost_rows`: the log keeps only its newest row after this.
    if crate::fold::fold(call)?.columns_added {
        crate::apply::retry_all(call)?;
    }
    let marks = Marks::read(call)?;
    let fixed = marks.sent_hlc.max(marks.received_hlc);
    let runs = crate::streams::Runs::load(conn)?;
    let unsent = |v: &Version| v.site == 0 && v.seq > 0 && !runs.covered(&marks.sent, v.seq);

    // The rows holding an own change above the mark (by the `seq` index), and those changes.
    let mut rows_to_do: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut changes: Vec<(u64, u64)> = Vec::new();
    {
        let mut s = conn.prepare(
            "SELECT tbl, key, exist, exist_seq, clocks FROM _outpost_rows WHERE seq > ?1 AND seq > 0",
        )?;
        s.bind_i64(1, to_i64(runs.floor(&marks.sent)))?;
        while s.step()? {
            let st = crate::state::RowState::decode(s.i64(2) as u64, s.i64(3) as u64, &s.blob(4))?;
            let before = changes.len();
            changes.extend(
                st.cells
                    .iter()
                    .flatten()
                    .filter(|v| unsent(v))
                    .map(|v| (v.seq, v.hlc)),
            );
            if changes.len() > before {
                rows_to_do.push((s.i64(0), s.blob(1)));
            }
        }
    }
    changes.sort_unstable();
    changes.dedup();
    let new = new_clocks(&changes, by, fixed);
    let new_of =
        |seq: u64, old: u64| -> u64 { changes.binary_search(&(seq, old)).map_or(old, |i| new[i]) };

    let tables = schema::load_tracked(conn)?;
    let me = Sites::load(conn)?.me();
    let mut rows = RowStore::new(conn)?;
    // Only the clocks change (not the seq the index holds): an UPDATE, in key order (a sweep of
    // the B-tree instead of the seq index's random order).
    let mut put =
        conn.prepare("UPDATE _outpost_rows SET clocks = ?3 WHERE tbl = ?1 AND key = ?2")?;
    let mut encoded = Vec::new();
    rows_to_do.sort_unstable();
    for (tbl, key) in &rows_to_do {
        let Some(t) = tables.iter().find(|t| t.id == *tbl) else {
            continue;
        };
        let Some(mut st) = rows.get(*tbl, key)? else {
            continue;
        };
        for c in 0..st.cells.len() {
            let Some(v) = st.cells[c].filter(|v| unsent(v)) else {
                continue;
            };
            let to = new_of(v.seq, v.hlc);
            if to == v.hlc {
                continue;
            }
            match t.def.columns.get(c).map(|col| col.strategy) {
                Some(Strategy::Counter) => {
                    let cell = cells::load_counter(conn, t.id, key, c)?;
                    let mut out = CounterCell::new();
                    for x in cell.contributions() {
                        let mut x = *x;
                        if x.site == me && x.epoch == v.epoch && x.hlc.as_u64() == v.hlc {
                            x.hlc = Hlc::from_u64(to);
                        }
                        out.merge(x);
                    }
                    cells::save_counter(conn, t.id, key, c, &out)?;
                }
                Some(Strategy::Review) => {
                    let cell = cells::load_review(conn, t.id, key, c)?;
                    let mut out = ReviewCell::new();
                    for w in cell.siblings() {
                        let mut w = w.clone();
                        let stamp = &mut w.version.stamp;
                        if stamp.site == me
                            && w.version.epoch == v.epoch
                            && stamp.hlc.as_u64() == v.hlc
                        {
                            stamp.hlc = Hlc::from_u64(to);
                            for (site, h) in &mut w.context {
                                if *site == me && h.as_u64() > marks.sent_hlc {
                                    *h = Hlc::from_u64(marks.sent_hlc);
                                }
                            }
                        }
                        out.merge(w);
                    }
                    cells::save_review(conn, t, key, c, &out)?;
                }
                _ => {}
            }
            st.cells[c] = Some(Version { hlc: to, ..v });
        }
        encoded.clear();
        st.encode_into(&mut encoded);
        put.bind_i64(1, *tbl)?;
        put.bind_blob(2, key)?;
        put.bind_blob(3, &encoded)?;
        put.run()?;
    }

    // The stored clock: never below what left or was received (a far-future received clock only
    // up to a day ahead of trusted time, as `clock.rs` observes), nor, after a shift forward,
    // below where it stood.
    let cap = Hlc::new(now_ms.saturating_add(crate::skew::FUTURE_BOUND_MS), 0).as_u64();
    let mut clock = new
        .iter()
        .copied()
        .fold(marks.sent_hlc, u64::max)
        .max(marks.received_hlc.min(cap));
    if by.delta_ms > 0 {
        clock = clock.max(call.session.clock.last(conn)?);
    }
    meta_set(conn, "hlc", to_i64(clock))?;
    let mut s = conn.prepare(
        "UPDATE _outpost_log SET hlc = ?1 WHERE seq = (SELECT max(seq) FROM _outpost_log)",
    )?;
    s.bind_i64(1, to_i64(clock))?;
    s.run()?;
    meta_set(conn, EPOCH_KEY, clock_epoch(conn)?.wrapping_add(1))?;
    let mut seqs: Vec<u64> = changes.iter().map(|c| c.0).collect();
    seqs.dedup();
    Ok(seqs.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::{new_clocks, shift, Move};
    use outpost_protocol::Hlc;

    const DAY: i64 = 24 * 60 * 60 * 1000;

    fn at(ms: u64, counter: u16) -> u64 {
        Hlc::new(ms, counter).as_u64()
    }

    #[test]
    fn a_shift_keeps_the_counter_and_stays_within_the_clock() {
        assert_eq!(shift(at(5_000, 3), 2_000), at(7_000, 3));
        assert_eq!(shift(at(5_000, 3), -2_000), at(3_000, 3));
        assert_eq!(shift(at(5_000, 3), -9_000), 0);
    }

    #[test]
    fn changes_keep_their_order_and_never_fall_to_or_below_what_they_beat() {
        let t = 10 * DAY as u64;
        // Written a day ahead, in seq order; one of them (seq 3) by a connection whose clock lagged.
        let changes = [
            (1, at(t, 0)),
            (2, at(t + 10, 0)),
            (3, at(t + 5, 0)),
            (4, at(t + 20, 1)),
        ];
        // Nothing fixed in the way: a full day back, strictly increasing in seq order.
        let by = |delta_ms| Move {
            delta_ms,
            cap: u64::MAX,
        };
        let back = new_clocks(&changes, by(-DAY), 0);
        assert_eq!(back[0], at(t - DAY as u64, 0));
        assert_eq!(back[1], at(t - DAY as u64 + 10, 0));
        assert_eq!(
            back[2],
            back[1] + 1,
            "seq 3 after seq 2, though its old clock was lower"
        );
        assert_eq!(back[3], at(t - DAY as u64 + 20, 1));
        // A received clock between: every change stays above it (or where it was, if below it).
        let fixed = at(t + 7, 0);
        let held = new_clocks(&changes, by(-DAY), fixed);
        assert_eq!(held[0], at(t, 0), "below the fixed clock: not moved");
        assert_eq!(held[1], fixed + 1);
        assert_eq!(held[2], fixed + 2);
        assert_eq!(held[3], fixed + 3);
        assert!(held.windows(2).all(|w| w[0] < w[1]));
        // Forward (the device was behind): exact, whatever is fixed.
        let ahead = new_clocks(&changes, by(DAY), u64::MAX >> 1);
        assert_eq!(ahead[0], at(t + DAY as u64, 0));
        assert_eq!(ahead[3], at(t + DAY as u64 + 20, 1));
    }

    #[test]
    fn a_cap_brings_only_the_clocks_past_it_down_and_keeps_the_order() {
        let now = 10 * DAY as u64;
        // Written at trusted time, then one by a connection still three days ahead, then on.
        let changes = [
            (1, at(now - 10, 0)),
            (2, at(now + 3 * DAY as u64, 0)),
            (3, at(now - 5, 0)),
        ];
        let capped = Move {
            delta_ms: 0,
            cap: at(now, 0),
        };
        let new = new_clocks(&changes, capped, 0);
        assert_eq!(new[0], at(now - 10, 0), "below the cap: not moved");
        assert_eq!(new[1], at(now, 0));
        assert_eq!(new[2], at(now, 0) + 1, "still after seq 2");
        // An edit of a far-future version keeps above it (the floor) whatever the cap says.
        let fixed = at(now + 5 * DAY as u64, 0);
        let floored = new_clocks(&[(1, fixed + 1)], capped, fixed);
        assert_eq!(floored[0], fixed + 1);
    }
}
