//! Tests for version vectors: gaps are never recorded, merging knowledge is a join, and
//! `missing_from` names exactly what a peer must send.
use super::*;
use proptest::prelude::*;

fn site(n: u8) -> SiteId {
    SiteId([n; 16])
}

fn range(lo: u64, hi: u64) -> SeqRange {
    SeqRange::new(lo, hi).unwrap()
}

/// Vectors over a handful of streams (origins, each unscoped and in two scopes), so that random
/// vectors overlap on most of them.
fn vector() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((0u8..5, 0usize..3, 0u64..30), 0..8).prop_map(|entries| {
        let mut v = VersionVector::new();
        for (origin, scope, seq) in entries {
            v.set(StreamId::new(site(origin), ["", "a", "b"][scope]), seq);
        }
        v
    })
}

#[test]
fn streams_of_one_origin_are_covered_apart() {
    let mut v = VersionVector::new();
    let moshi = StreamId::new(site(1), "moshi");
    v.advance(site(1).into(), range(1, 4)).unwrap();
    assert_eq!(v.get(&moshi), 0);
    assert!(v.advance(moshi.clone(), range(2, 2)).is_err());
    v.advance(moshi.clone(), range(1, 2)).unwrap();
    assert_eq!((v.get(&site(1).into()), v.get(&moshi)), (4, 2));
    assert_eq!(
        alloc::format!("{moshi}"),
        alloc::format!("{}/moshi", site(1))
    );
    assert_eq!(
        alloc::format!("{moshi}").parse::<StreamId>(),
        Ok(moshi.clone())
    );
    assert_eq!(
        alloc::format!("{}", site(1)).parse::<StreamId>(),
        Ok(site(1).into())
    );
    for bad in ["x/moshi", "0101/", "01010101010101010101010101010101/a b"] {
        assert!(bad.parse::<StreamId>().is_err(), "{bad}");
    }
}

fn merged(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = a.clone();
    out.merge(b);
    out
}

#[test]
fn contiguous_ranges_advance_the_vector() {
    let mut v = VersionVector::new();
    assert_eq!(v.advance(site(1).into(), range(1, 3)), Ok(true));
    assert_eq!(v.advance(site(1).into(), range(4, 4)), Ok(true));
    assert_eq!(v.advance(site(2).into(), range(1, 10)), Ok(true));
    assert_eq!(v.get(&site(1).into()), 4);
    assert_eq!(v.get(&site(2).into()), 10);
    assert_eq!(v.get(&site(3).into()), 0);
    assert_eq!(v.len(), 2);
}

#[test]
fn overlapping_ranges_are_replays_and_only_the_new_part_counts() {
    let mut v = VersionVector::new();
    v.advance(site(1).into(), range(1, 5)).unwrap();
    // Entirely held: a replay, nothing changes.
    assert_eq!(v.advance(site(1).into(), range(2, 4)), Ok(false));
    assert_eq!(v.advance(site(1).into(), range(1, 5)), Ok(false));
    assert_eq!(v.get(&site(1).into()), 5);
    // Partly held: coverage grows to the end of the range.
    assert_eq!(v.advance(site(1).into(), range(3, 9)), Ok(true));
    assert_eq!(v.get(&site(1).into()), 9);
}

#[test]
fn a_range_past_a_gap_is_refused_and_changes_nothing() {
    let mut v = VersionVector::new();
    v.advance(site(1).into(), range(1, 5)).unwrap();
    let before = v.clone();

    let err = v.advance(site(1).into(), range(7, 9)).unwrap_err();
    assert_eq!(
        err,
        VectorGap {
            origin: site(1).into(),
            covered: 5,
            range: range(7, 9)
        }
    );
    assert_eq!(v, before);

    // An unknown origin must start at seq 1.
    let err = v.advance(site(2).into(), range(2, 2)).unwrap_err();
    assert_eq!(err.covered, 0);
    assert_eq!(v, before);
    assert_eq!(
        alloc::string::ToString::to_string(&err),
        "changes 2..=2 of 02020202020202020202020202020202 leave a gap: only 1..=0 are held"
    );
}

#[test]
fn covers_means_every_seq_of_the_range_is_held() {
    let mut v = VersionVector::new();
    v.advance(site(1).into(), range(1, 5)).unwrap();
    assert!(v.covers(&site(1).into(), range(1, 5)));
    assert!(v.covers(&site(1).into(), range(3, 4)));
    assert!(!v.covers(&site(1).into(), range(5, 6)));
    assert!(!v.covers(&site(2).into(), range(1, 1)));
}

#[test]
fn setting_zero_forgets_an_origin() {
    let mut v = VersionVector::new();
    v.set(site(1).into(), 4);
    v.set(site(1).into(), 0);
    assert!(v.is_empty());
    assert_eq!(v, VersionVector::new());
}

#[test]
fn seq_ranges_are_never_empty() {
    assert_eq!(SeqRange::new(0, 3), None);
    assert_eq!(SeqRange::new(4, 3), None);
    let r = range(3, 5);
    assert_eq!(r.len(), 3);
    assert!(!r.is_empty());
}

#[test]
fn a_vector_at_the_last_seq_misses_nothing() {
    let mut full = VersionVector::new();
    full.set(site(1).into(), u64::MAX);
    assert!(full.missing_from(&full.clone()).is_empty());
    let mut other = VersionVector::new();
    other.set(site(1).into(), 3);
    assert!(full.missing_from(&other).is_empty());
    assert_eq!(
        other.missing_from(&full),
        [(site(1).into(), range(4, u64::MAX))]
    );
}

proptest! {
    #[test]
    fn merge_is_commutative(a in vector(), b in vector()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in vector(), b in vector(), c in vector()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent(a in vector(), b in vector()) {
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &b), ab);
    }

    #[test]
    fn a_merged_vector_dominates_both_and_is_the_least_such(a in vector(), b in vector()) {
        let m = merged(&a, &b);
        prop_assert!(m.dominates(&a));
        prop_assert!(m.dominates(&b));
        for (origin, &seq) in m.iter() {
            prop_assert_eq!(seq, a.get(origin).max(b.get(origin)));
        }
        // dominates is the order merge joins in.
        prop_assert_eq!(a.dominates(&b), merged(&a, &b) == a);
    }

    #[test]
    fn the_missing_ranges_are_exactly_what_closes_the_gap(mine in vector(), theirs in vector()) {
        let missing = mine.missing_from(&theirs);
        prop_assert_eq!(missing.is_empty(), mine.dominates(&theirs));

        let mut caught_up = mine.clone();
        let mut origins = alloc::vec::Vec::new();
        for (origin, r) in &missing {
            // Nothing already held is sent again...
            prop_assert_eq!(r.lo, mine.get(origin) + 1);
            // ...nothing the sender lacks is promised...
            prop_assert_eq!(r.hi, theirs.get(origin));
            // ...and each range applies without a gap.
            prop_assert_eq!(caught_up.advance(origin.clone(), *r), Ok(true));
            origins.push(origin.clone());
        }
        // One range per origin, in origin order.
        prop_assert!(origins.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(caught_up.dominates(&theirs));
        prop_assert_eq!(caught_up, merged(&mine, &theirs));
    }

    #[test]
    fn advancing_never_skips_a_seq(
        steps in proptest::collection::vec((0u8..3, 1u64..12, 0u64..6), 1..40),
    ) {
        let mut v = VersionVector::new();
        for (origin, lo, extra) in steps {
            let r = range(lo, lo + extra);
            let before = v.clone();
            let covered = before.get(&site(origin).into());
            match v.advance(site(origin).into(), r) {
                Ok(grew) => {
                    prop_assert!(r.lo <= covered + 1);
                    prop_assert_eq!(grew, r.hi > covered);
                    prop_assert_eq!(v.get(&site(origin).into()), covered.max(r.hi));
                    prop_assert!(v.covers(&site(origin).into(), r));
                }
                Err(gap) => {
                    prop_assert!(r.lo > covered + 1);
                    prop_assert_eq!(gap.covered, covered);
                    prop_assert_eq!(&v, &before);
                }
            }
        }
    }
}

#[test]
fn merging_a_vector_with_a_zero_entry_does_not_store_it() {
    // `set` never stores 0, but a vector built field by field (a decoder) could; merging it must
    // still leave a vector equal to one that never heard of the origin.
    let mut odd = VersionVector::new();
    odd.0.insert(site(1).into(), 0);
    let mut v = VersionVector::new();
    v.merge(&odd);
    assert_eq!(v, VersionVector::new());
}
