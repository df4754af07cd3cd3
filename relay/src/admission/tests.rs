use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn limits(max_pending: usize, pending_per_address: usize) -> Limits {
    Limits {
        max_pending,
        pending_per_address,
        ..Limits::HUB
    }
}

fn peer(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// An evict callback counting into `n`.
fn counting(n: &Arc<AtomicUsize>) -> Evict {
    let n = n.clone();
    Box::new(move || {
        n.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn a_newcomer_over_its_address_cap_takes_the_place_of_that_address_s_oldest_idle_one() {
    let pending = Pending::new(limits(10, 2));
    let evicted = Arc::new(AtomicUsize::new(0));
    let a = pending
        .arrive(peer("10.0.0.9", 1), counting(&evicted))
        .unwrap();
    let b = pending
        .arrive(peer("10.0.0.9", 2), counting(&evicted))
        .unwrap();
    let c = pending
        .arrive(peer("10.0.0.9", 3), counting(&evicted))
        .unwrap();
    assert_eq!(evicted.load(Ordering::SeqCst), 1);
    assert!(a.evicted() && !b.evicted() && !c.evicted());
    assert!(
        !a.first_message(),
        "an evicted connection cannot claim its place back"
    );
    assert_eq!(pending.count(), 2);
    // Connections being checked keep their places: with both checking, a newcomer is refused.
    assert!(b.first_message() && c.first_message());
    let e = pending
        .arrive(peer("10.0.0.9", 4), counting(&evicted))
        .unwrap_err();
    assert_eq!(e, Busy::Address { limit: 2 });
    // Another address is not affected.
    let _d = pending
        .arrive(peer("10.0.0.7", 1), counting(&evicted))
        .unwrap();
    drop((b, c));
    assert_eq!(pending.count(), 1);
}

#[test]
fn when_the_pool_is_full_the_heaviest_address_gives_way() {
    let pending = Pending::new(limits(4, 3));
    let evicted = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..3)
        .map(|p| {
            pending
                .arrive(peer("10.0.0.9", p), counting(&evicted))
                .unwrap()
        })
        .collect();
    let other = pending
        .arrive(peer("10.0.0.5", 1), counting(&evicted))
        .unwrap();
    // Full: a third address gets in, the flooding address's oldest idle connection leaves.
    let third = pending
        .arrive(peer("10.0.0.6", 1), counting(&evicted))
        .unwrap();
    assert!(flood[0].evicted() && !flood[1].evicted() && !other.evicted() && !third.evicted());
    assert_eq!(pending.count(), 4);
}

#[test]
fn ipv6_addresses_of_one_64_count_as_one_address() {
    assert_eq!(
        address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
        address_key("2001:db8:1:2:bbbb::7".parse().unwrap())
    );
    assert_ne!(
        address_key("2001:db8:1:2::1".parse().unwrap()),
        address_key("2001:db8:1:3::1".parse().unwrap())
    );
    assert_eq!(
        address_key("::ffff:10.0.0.9".parse().unwrap()),
        address_key("10.0.0.9".parse().unwrap())
    );
}

#[test]
fn busy_travels_inside_an_io_error() {
    let e = Busy::Key { limit: 4 }.into_io();
    assert_eq!(Busy::of_io(&e), Some(Busy::Key { limit: 4 }));
    assert_eq!(Busy::of_io(&std::io::Error::other("x")), None);
    assert!(e.to_string().contains("already has 4 sessions"), "{e}");
}
