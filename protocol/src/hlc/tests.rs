//! Tests for the hybrid logical clock: the ordering guarantees every write relies on, and the skew
//! decision taken at hello.
use super::*;
use alloc::vec::Vec;
use proptest::prelude::*;

/// 2024-01-01T00:00:00Z, a plausible wall clock.
const NOW: u64 = 1_704_067_200_000;

/// Wall readings as field devices produce them: mostly near `NOW`, sometimes far in the past
/// (dead RTC), far in the future (manual time), 0, or past the 48-bit range.
fn wall() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (NOW - 10_000)..(NOW + 10_000),
        1 => 0..100_000u64,
        1 => (MAX_MILLIS - 1_000)..=MAX_MILLIS,
        1 => any::<u64>(),
    ]
}

fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => Just(0i64),
        2 => -100_000_000i64..100_000_000,
        1 => any::<i64>(),
    ]
}

#[derive(Debug, Clone)]
enum Event {
    Tick(u64),
    Observe(Hlc),
    SetOffset(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        5 => wall().prop_map(Event::Tick),
        2 => (wall(), any::<u16>()).prop_map(|(ms, c)| Event::Observe(Hlc::new(ms, c))),
        1 => offset().prop_map(Event::SetOffset),
    ]
}

proptest! {
    #[test]
    fn local_writes_are_strictly_ordered_whatever_the_wall_clock_does(
        // A clock resumes from what it issued or adopted: never above the ceiling.
        start in (wall().prop_map(|w| w.min(CEILING_MILLIS)), any::<u16>()),
        walls in proptest::collection::vec(wall(), 1..100),
    ) {
        let mut clock = Clock::resume(Hlc::new(start.0, start.1));
        let mut previous = clock.last();
        for wall in walls {
            let t = clock.tick(wall);
            prop_assert!(t > previous, "tick {t} after {previous} at wall {wall}");
            prop_assert_eq!(clock.last(), t);
            previous = t;
        }
    }

    #[test]
    fn a_local_write_is_never_stamped_before_the_corrected_wall_clock(
        last in (wall(), any::<u16>()),
        offset in offset(),
        wall in wall(),
    ) {
        let mut clock = Clock::resume(Hlc::new(last.0, last.1));
        clock.set_offset(offset);
        let t = clock.tick(wall);
        prop_assert!(t >= Hlc::new(clock.corrected(wall), 0));
        prop_assert!(t.millis() >= clock.corrected(wall));
    }

    #[test]
    fn observing_never_lowers_the_clock_and_later_writes_order_after_what_was_seen(
        events in proptest::collection::vec(event(), 1..100),
    ) {
        let mut clock = Clock::default();
        let mut highest_seen = Hlc::ZERO;
        for event in events {
            let before = clock.last();
            match event {
                Event::Tick(wall) => {
                    let t = clock.tick(wall);
                    prop_assert!(t > before);
                    prop_assert!(t > highest_seen, "write {t} not after observed {highest_seen}");
                    highest_seen = t;
                }
                Event::Observe(remote) => {
                    clock.observe(remote);
                    // Adopted up to the ceiling; later writes order after what was adopted.
                    let adopted = remote.min(Hlc::new(CEILING_MILLIS, 0));
                    prop_assert_eq!(clock.last(), before.max(adopted));
                    highest_seen = highest_seen.max(adopted);
                }
                Event::SetOffset(ms) => {
                    clock.set_offset(ms);
                    prop_assert_eq!(clock.last(), before);
                }
            }
            prop_assert!(clock.last() >= before);
        }
    }

    #[test]
    fn stamps_order_by_clock_then_site(
        a in (any::<u64>(), any::<[u8; 16]>()),
        b in (any::<u64>(), any::<[u8; 16]>()),
    ) {
        let sa = Stamp { hlc: Hlc::from_u64(a.0), site: SiteId(a.1) };
        let sb = Stamp { hlc: Hlc::from_u64(b.0), site: SiteId(b.1) };
        prop_assert_eq!(sa.cmp(&sb), a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    }

    #[test]
    fn a_skewed_device_adopts_the_peers_time_exactly(
        peer in 0..=MAX_MILLIS,
        distance in 1..=MAX_MILLIS,
        ahead in any::<bool>(),
    ) {
        let policy = SkewPolicy::default();
        let local = if ahead { peer.saturating_add(distance) } else { peer.saturating_sub(distance) };
        let skew = local as i128 - peer as i128;
        match assess_skew(local, peer, policy) {
            SkewVerdict::WithinBound { skew_ms } => {
                prop_assert!(skew.unsigned_abs() <= policy.max_skew_ms as u128);
                prop_assert_eq!(skew_ms as i128, skew);
            }
            SkewVerdict::UsePeerTime { offset_ms } => {
                prop_assert!(skew.unsigned_abs() > policy.max_skew_ms as u128);
                let mut clock = Clock::default();
                clock.set_offset(offset_ms);
                prop_assert_eq!(clock.corrected(local), peer.min(CEILING_MILLIS));
                // A moment later, the corrected clock moves with the local one.
                prop_assert_eq!(clock.corrected(local + 1_000), (peer + 1_000).min(CEILING_MILLIS));
            }
        }
    }

    #[test]
    fn skew_assessment_never_panics_on_any_peer_reading(local in any::<u64>(), peer in any::<u64>()) {
        match assess_skew(local, peer, SkewPolicy::default()) {
            SkewVerdict::WithinBound { skew_ms } => prop_assert_eq!(skew_ms as i128, local as i128 - peer as i128),
            SkewVerdict::UsePeerTime { offset_ms } => {
                // The offset points from local toward peer, as far as an i64 reaches.
                let want = (peer as i128 - local as i128).clamp(i64::MIN as i128, i64::MAX as i128);
                prop_assert_eq!(offset_ms as i128, want);
            }
        }
    }
}

#[test]
fn counter_overflow_carries_into_the_milliseconds() {
    let full = Hlc::new(1_000, 0xffff);
    assert_eq!(full.successor(), Hlc::new(1_001, 0));

    // The wall clock is stuck behind: the next write still moves forward, into the next millisecond.
    let mut clock = Clock::resume(full);
    let t = clock.tick(999);
    assert_eq!(t, Hlc::new(1_001, 0));
    assert_eq!((t.millis(), t.counter()), (1_001, 0));
    assert!(clock.tick(999) > t);
}

#[test]
fn a_burst_of_writes_in_one_millisecond_uses_the_counter() {
    let mut clock = Clock::default();
    let stamps: Vec<Hlc> = (0..5).map(|_| clock.tick(NOW)).collect();
    for (i, t) in stamps.iter().enumerate() {
        assert_eq!((t.millis(), t.counter()), (NOW, i as u16));
    }
}

#[test]
fn a_clock_from_the_far_future_is_accepted_and_later_writes_follow_it() {
    // A peer whose RTC says year 9000: its changes are still taken, never refused.
    let future = Hlc::new(221_845_392_000_000, 7);
    let mut clock = Clock::resume(Hlc::new(NOW, 0));
    clock.observe(future);
    assert_eq!(clock.last(), future);
    let t = clock.tick(NOW);
    assert!(t > future);
    assert_eq!(t, future.successor());

    // Even the largest representable clock is accepted, but adopted only up to the ceiling, so
    // later writes keep increasing instead of saturating at one shared stamp.
    let max = Hlc::from_u64(u64::MAX);
    clock.observe(max);
    assert_eq!(clock.last(), Hlc::new(CEILING_MILLIS, 0));
    assert_eq!(clock.tick(NOW), Hlc::new(CEILING_MILLIS, 1));
}

#[test]
fn writes_after_a_clock_at_the_top_of_the_range_stay_strictly_increasing() {
    // Found by the `observing_never_lowers..` property: a peer's clock at the largest millisecond
    // with its counter near 0xffff used to leave 36 writes before every later write got the
    // same, saturated stamp (equal stamps are kept as they are by receivers: divergence).
    let mut clock = Clock::default();
    clock.observe(Hlc::new(MAX_MILLIS, 65_500));
    let mut previous = clock.last();
    for wall in [NOW, u64::MAX, MAX_MILLIS, 0]
        .into_iter()
        .cycle()
        .take(300_000)
    {
        let t = clock.tick(wall);
        assert!(t > previous, "tick {t} after {previous} at wall {wall}");
        previous = t;
    }
    // A wall clock stuck past the range behaves the same way.
    let mut clock = Clock::resume(Hlc::new(NOW, 0));
    let mut previous = clock.last();
    for _ in 0..300_000 {
        let t = clock.tick(u64::MAX);
        assert!(t > previous);
        assert!(t.millis() < MAX_MILLIS);
        previous = t;
    }
}

#[test]
fn an_older_remote_clock_does_not_move_the_clock_back() {
    let mut clock = Clock::resume(Hlc::new(NOW, 5));
    clock.observe(Hlc::new(NOW - 60_000, 0));
    assert_eq!(clock.last(), Hlc::new(NOW, 5));
}

#[test]
fn milliseconds_past_48_bits_are_clamped_not_wrapped() {
    assert_eq!(Hlc::new(u64::MAX, 3).millis(), MAX_MILLIS);
    assert_eq!(Hlc::new(u64::MAX, 3).counter(), 3);
    assert!(Hlc::new(MAX_MILLIS + 1, 0) > Hlc::new(MAX_MILLIS - 1, 0));
    assert_eq!(Hlc::from_u64(Hlc::new(NOW, 9).as_u64()), Hlc::new(NOW, 9));
}

#[test]
fn stamps_with_equal_clocks_are_ordered_by_site() {
    let hlc = Hlc::new(NOW, 0);
    let low = Stamp {
        hlc,
        site: SiteId([1; 16]),
    };
    let high = Stamp {
        hlc,
        site: SiteId([2; 16]),
    };
    assert!(low < high);
    // The clock decides before the site does.
    let earlier_high_site = Stamp {
        hlc: Hlc::new(NOW - 1, 0),
        site: SiteId([0xff; 16]),
    };
    assert!(earlier_high_site < low);
}

#[test]
fn skew_within_the_bound_keeps_the_local_clock_in_both_directions() {
    let policy = SkewPolicy { max_skew_ms: 1_000 };
    assert_eq!(
        assess_skew(NOW + 1_000, NOW, policy),
        SkewVerdict::WithinBound { skew_ms: 1_000 }
    );
    assert_eq!(
        assess_skew(NOW - 1_000, NOW, policy),
        SkewVerdict::WithinBound { skew_ms: -1_000 }
    );
    assert_eq!(
        assess_skew(NOW, NOW, policy),
        SkewVerdict::WithinBound { skew_ms: 0 }
    );
}

#[test]
fn skew_over_the_bound_uses_the_peers_time_in_both_directions() {
    let policy = SkewPolicy { max_skew_ms: 1_000 };

    // Local clock ahead (manual time set to next year).
    let ahead = assess_skew(NOW + 1_001, NOW, policy);
    assert_eq!(ahead, SkewVerdict::UsePeerTime { offset_ms: -1_001 });

    // Local clock behind (dead RTC booted at the epoch).
    let behind = assess_skew(0, NOW, policy);
    assert_eq!(
        behind,
        SkewVerdict::UsePeerTime {
            offset_ms: NOW as i64
        }
    );
    let mut clock = Clock::default();
    clock.set_offset(NOW as i64);
    assert_eq!(clock.corrected(0), NOW);
    assert_eq!(clock.corrected(2_500), NOW + 2_500);
    assert_eq!(clock.tick(2_500), Hlc::new(NOW + 2_500, 0));
}

#[test]
fn the_default_skew_bound_is_five_minutes() {
    let policy = SkewPolicy::default();
    assert_eq!(policy.max_skew_ms, 300_000);
    assert!(matches!(
        assess_skew(NOW + 300_001, NOW, policy),
        SkewVerdict::UsePeerTime { .. }
    ));
}

#[test]
fn the_corrected_clock_stays_within_the_representable_range() {
    let mut clock = Clock::default();
    assert_eq!(clock.offset_ms(), 0);
    assert_eq!(clock.corrected(NOW), NOW);

    clock.set_offset(-(NOW as i64) - 5_000);
    assert_eq!(clock.corrected(NOW), 0);
    clock.set_offset(i64::MIN);
    assert_eq!(clock.corrected(0), 0);

    clock.set_offset(i64::MAX);
    assert_eq!(clock.corrected(NOW), CEILING_MILLIS);
    clock.set_offset(0);
    assert_eq!(clock.corrected(u64::MAX), CEILING_MILLIS);
    assert_eq!(clock.offset_ms(), 0);
}

#[test]
fn a_date_prints_as_utc() {
    use alloc::string::ToString;
    assert_eq!(UtcDate(NOW).to_string(), "2024-01-01T00:00:00Z");
    assert_eq!(UtcDate(0).to_string(), "1970-01-01T00:00:00Z");
    assert_eq!(
        UtcDate(1_709_210_096_789).to_string(),
        "2024-02-29T12:34:56Z"
    );
}

#[test]
fn the_admission_limit_is_a_day_past_trusted_time_or_a_second_past_what_is_held() {
    let day = MAX_CLOCK_AHEAD_MS;
    assert_eq!(admission_limit_ms(NOW, day, Hlc::ZERO), NOW + day);
    let far = Hlc::new(NOW + 10 * day, 7);
    assert_eq!(admission_limit_ms(NOW, day, far), NOW + 10 * day + 1000);
}
