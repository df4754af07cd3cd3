//! Which held batches to send a peer, for one origin.
//!
//! The mailbox never splits a batch (it cannot read bodies), so when held batches overlap, covering
//! a peer's missing seqs may force sending a seq the peer already has. The plan is a shortest path
//! over coverage positions: from the peer's coverage `c`, a batch `lo..=hi` with `lo <= c + 1 < hi + 1`
//! moves the peer to `hi` and costs `c + 1 - lo` repeated seqs. The plan reaches the furthest
//! position the held batches allow and, among the ways to get there, repeats the fewest seqs, then
//! uses the fewest batches. When the held batches form a gapless chain from `c + 1` (what pushes from
//! the server's coverage produce), the plan is exactly that chain and repeats nothing.
//!
//! Positions only grow along a path, so they are settled in increasing order (a DAG, no heap of
//! distances needed). Work is proportional to the candidate batches times how many of them overlap
//! one position; memory holds only `(lo, hi, id)` per candidate, never a body.

use std::collections::BTreeMap;

/// One held batch of the origin being planned: its range and row id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub lo: u64,
    pub hi: u64,
    pub id: i64,
}

#[derive(Clone, Copy, Debug)]
struct Reached {
    repeated: u64,
    batches: u64,
    from: u64,
    via: i64,
}

impl Reached {
    fn better_than(&self, other: &Reached) -> bool {
        (self.repeated, self.batches) < (other.repeated, other.batches)
    }
}

/// The row ids to send, in send order, to take a peer from coverage `covered` as far as the
/// `candidates` allow. `candidates` must be sorted by `lo` (any `hi`); those entirely at or below
/// `covered` are ignored.
pub(crate) fn plan(covered: u64, candidates: &[Candidate]) -> Vec<i64> {
    let mut reached: BTreeMap<u64, Reached> = BTreeMap::new();
    reached.insert(
        covered,
        Reached {
            repeated: 0,
            batches: 0,
            from: covered,
            via: 0,
        },
    );
    let mut next = 0usize; // first candidate not yet considered (sorted by lo)
    let mut active: Vec<Candidate> = Vec::new(); // lo <= position + 1 and hi > position
    let mut position = covered;
    loop {
        let here = reached[&position];
        while next < candidates.len() && candidates[next].lo <= position.saturating_add(1) {
            active.push(candidates[next]);
            next += 1;
        }
        active.retain(|c| c.hi > position);
        for c in &active {
            let step = Reached {
                repeated: here.repeated + (position + 1 - c.lo),
                batches: here.batches + 1,
                from: position,
                via: c.id,
            };
            match reached.get(&c.hi) {
                Some(old) if !step.better_than(old) => {}
                _ => {
                    reached.insert(c.hi, step);
                }
            }
        }
        match reached.range(position + 1..).next() {
            Some((&p, _)) => position = p,
            None => break,
        }
    }
    // `position` is now the furthest reachable coverage; walk back to `covered`.
    let mut ids = Vec::new();
    let mut at = position;
    while at != covered {
        let r = reached[&at];
        ids.push(r.via);
        at = r.from;
    }
    ids.reverse();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(ranges: &[(u64, u64)]) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = ranges
            .iter()
            .enumerate()
            .map(|(i, &(lo, hi))| Candidate {
                lo,
                hi,
                id: i as i64 + 1,
            })
            .collect();
        v.sort_by_key(|c| (c.lo, c.hi));
        v
    }

    fn ranges_of(plan: &[i64], ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
        plan.iter().map(|&id| ranges[id as usize - 1]).collect()
    }

    #[test]
    fn a_gapless_chain_is_served_whole_and_in_order() {
        let r = [(1, 4), (5, 9), (10, 10)];
        assert_eq!(
            ranges_of(&plan(0, &cands(&r)), &r),
            vec![(1, 4), (5, 9), (10, 10)]
        );
        assert_eq!(ranges_of(&plan(4, &cands(&r)), &r), vec![(5, 9), (10, 10)]);
        assert!(plan(10, &cands(&r)).is_empty());
    }

    #[test]
    fn serving_stops_at_a_gap() {
        let r = [(1, 4), (7, 9)];
        assert_eq!(ranges_of(&plan(0, &cands(&r)), &r), vec![(1, 4)]);
        assert!(plan(5, &cands(&r)).is_empty());
    }

    #[test]
    fn a_chain_is_preferred_to_a_longer_first_step() {
        // Exact continuations both: [5..9] reaches further at once but forces repeating 7..9.
        let r = [(5, 6), (5, 9), (7, 20)];
        assert_eq!(ranges_of(&plan(4, &cands(&r)), &r), vec![(5, 6), (7, 20)]);
        // And the other way round: the longer batch is the chain.
        let r = [(5, 6), (5, 9), (10, 20)];
        assert_eq!(ranges_of(&plan(4, &cands(&r)), &r), vec![(5, 9), (10, 20)]);
    }

    #[test]
    fn a_covering_batch_beats_a_partial_chain() {
        let r = [(5, 6), (3, 12)];
        // [5..6] then [3..12] would repeat 3..6; [3..12] alone repeats only 3..4.
        assert_eq!(ranges_of(&plan(4, &cands(&r)), &r), vec![(3, 12)]);
    }

    #[test]
    fn a_forced_overlap_is_as_small_as_possible() {
        let r = [(1, 4), (3, 8), (2, 8)];
        assert_eq!(ranges_of(&plan(0, &cands(&r)), &r), vec![(1, 4), (3, 8)]);
    }

    #[test]
    fn batches_already_covered_are_never_planned() {
        let r = [(1, 2), (1, 5), (3, 5), (6, 7)];
        assert_eq!(ranges_of(&plan(5, &cands(&r)), &r), vec![(6, 7)]);
    }
}
