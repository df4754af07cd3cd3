//! Id blocks on real mailbox files: root counters, the delegated pool and its refills, grants
//! recorded per (peer, request id), concurrent grantors never overlapping, and pull sizes.

mod support;

use outpost_mailbox::{IdMode, Mailbox, DEVICE_ID_QUOTA, HUB_BLOCK};
use outpost_protocol::id_range::{IdRange, IdRequest, RequestId};
use outpost_protocol::VersionVector;
use support::{batch, site};

fn request(id: u8, sequence: &str, count: u64, above: u64) -> IdRequest {
    IdRequest {
        request: RequestId([id; 16]),
        sequence: sequence.into(),
        count,
        above,
    }
}

fn r(first: u64, last: u64) -> IdRange {
    IdRange { first, last }
}

#[test]
fn root_counts_from_one_per_sequence_and_honours_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    assert_eq!(mb.id_mode().unwrap(), IdMode::Root);
    let (a, b) = (site(1), site(2));
    assert_eq!(
        mb.grant_ids(&a, &request(1, "patients", 10, 0)).unwrap(),
        vec![r(1, 10)]
    );
    assert_eq!(
        mb.grant_ids(&b, &request(1, "patients", 5, 0)).unwrap(),
        vec![r(11, 15)]
    );
    assert_eq!(
        mb.grant_ids(&a, &request(2, "visits", 3, 0)).unwrap(),
        vec![r(1, 3)]
    );
    // A floor above the counter moves it; one below changes nothing.
    assert_eq!(
        mb.grant_ids(&b, &request(2, "patients", 10, 100)).unwrap(),
        vec![r(101, 110)]
    );
    assert_eq!(
        mb.grant_ids(&b, &request(3, "patients", 1, 7)).unwrap(),
        vec![r(111, 111)]
    );
    let status = mb.id_status().unwrap();
    assert_eq!(status[0].sequence, "patients");
    assert_eq!(status[0].next, 112);
    assert_eq!(status[1].next, 4);
}

#[test]
fn a_repeated_request_gets_the_recorded_grant_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let (a, b) = (site(1), site(2));
    let first = {
        let mut mb = support::store::open(&path);
        mb.grant_ids(&a, &request(7, "patients", 50, 0)).unwrap()
    };
    let mut mb = support::store::open(&path);
    assert_eq!(
        mb.grant_ids(&a, &request(7, "patients", 50, 0)).unwrap(),
        first
    );
    // The same request id from another peer is another request.
    assert_eq!(
        mb.grant_ids(&b, &request(7, "patients", 50, 0)).unwrap(),
        vec![r(51, 100)]
    );
    assert_eq!(
        mb.id_status().unwrap()[0].next,
        101,
        "nothing granted twice"
    );
}

#[test]
fn delegated_grants_come_from_the_pool_lowest_first_and_record_unmet_demand() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let device = site(1);
    // Root first: numbers 1..=20 issued before the hub joined a cloud.
    mb.grant_ids(&device, &request(1, "patients", 20, 0))
        .unwrap();
    mb.set_id_mode(IdMode::Delegated).unwrap();
    assert!(!mb.id_refill_wanted().unwrap());
    // No pool yet: nothing granted, the demand is recorded, the uplink is woken.
    assert_eq!(
        mb.grant_ids(&device, &request(2, "patients", 30, 0))
            .unwrap(),
        vec![]
    );
    assert!(mb.id_refill_wanted().unwrap());
    let refills = mb.id_refills(100, 25).unwrap();
    assert_eq!(refills.len(), 1);
    assert_eq!(refills[0].sequence, "patients");
    assert_eq!(refills[0].count, 100, "max(block, 2 x demand)");
    assert_eq!(refills[0].above, 20, "above what it issued as root");
    assert!(!mb.id_refill_wanted().unwrap(), "a refill is outstanding");
    // Asked again (a cut before the grant arrived): the same stored request.
    assert_eq!(mb.id_refills(100, 25).unwrap(), refills);
    // The cloud's grant, in two ranges; a duplicate of it adds nothing; an empty one keeps it.
    let grant = [r(1001, 1040), r(2001, 2060)];
    assert_eq!(mb.id_refill_granted(&refills[0], &[]).unwrap(), 0);
    assert_eq!(mb.id_refills(100, 25).unwrap(), refills);
    assert_eq!(mb.id_refill_granted(&refills[0], &grant).unwrap(), 100);
    assert_eq!(mb.id_refill_granted(&refills[0], &grant).unwrap(), 0);
    assert_eq!(mb.id_status().unwrap()[0].pool, 100);
    // The device's retry is granted from the pool, lowest first, spanning both ranges.
    assert_eq!(
        mb.grant_ids(&device, &request(2, "patients", 50, 0))
            .unwrap(),
        vec![r(1001, 1040), r(2001, 2010)],
        "the recorded demand's count is what the request says"
    );
    let s = &mb.id_status().unwrap()[0];
    assert_eq!((s.pool, s.demand, s.refilling), (50, 0, 0));
    // 50 left, low water 60: a refill of the block is due even without demand.
    let refills = mb.id_refills(100, 60).unwrap();
    assert_eq!(refills[0].count, 100);
    // A request larger than the pool: nothing, not a part.
    assert_eq!(
        mb.grant_ids(&device, &request(3, "patients", 51, 0))
            .unwrap(),
        vec![]
    );
    assert_eq!(
        mb.grant_ids(&device, &request(4, "patients", 50, 0))
            .unwrap(),
        vec![r(2011, 2060)]
    );
}

#[test]
fn concurrent_grantors_on_one_file_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    support::store::open(&path);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut mb = support::store::open(&path);
                let mut got = Vec::new();
                for i in 0..40u8 {
                    let count = 1 + (t as u64 * 7 + i as u64 * 13) % 50;
                    let ranges = mb
                        .grant_ids(&site(t + 1), &request(i, "patients", count, 0))
                        .unwrap();
                    assert_eq!(ranges.iter().map(IdRange::len).sum::<u64>(), count);
                    got.extend(ranges);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .flat_map(|g| g.first..=g.last)
        .collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a number granted twice");
    assert_eq!(all, (1..=n as u64).collect::<Vec<_>>(), "and none skipped");
}

#[test]
fn a_pull_plan_knows_its_size_before_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let (a, b) = (site(1), site(2));
    let held = vec![
        batch(a, 1, 3, 100),
        batch(a, 4, 4, 10),
        batch(b, 1, 2, 5000),
    ];
    let total: u64 = held.iter().map(|b| b.len() as u64).sum();
    mb.store(held.clone()).unwrap();
    let plan = mb
        .pull_plan(
            &VersionVector::new(),
            None,
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap();
    assert_eq!(plan.size(), (3, total));
    let plan = mb
        .pull_plan(
            &VersionVector::new(),
            Some(b),
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap();
    assert_eq!(plan.size(), (2, (held[0].len() + held[1].len()) as u64));
    let mut v = VersionVector::new();
    v.set(a.into(), 4);
    v.set(b.into(), 2);
    assert_eq!(
        mb.pull_plan(&v, None, &outpost_protocol::scope::Scopes::All)
            .unwrap()
            .size(),
        (0, 0)
    );
}

#[test]
fn a_device_that_asks_again_and_again_is_held_to_its_quota_and_a_hub_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    mb.set_id_mode(IdMode::Delegated).unwrap();
    let device = site(9);
    let (quota, now) = (DEVICE_ID_QUOTA, 1_800_000_000);
    let million = quota.numbers;
    let metered = |mb: &mut Mailbox, who, id, count, at| {
        mb.grant_ids_metered(&who, &request(id, "patients", count, 0), quota, at)
            .unwrap()
    };
    // A first million: the pool is empty, the demand goes to the cloud, which refills it.
    assert_eq!(metered(&mut mb, device, 1, million, now), vec![]);
    let refills = mb.id_refills(HUB_BLOCK, HUB_BLOCK).unwrap();
    mb.id_refill_granted(&refills[0], &[r(1, 2 * million)])
        .unwrap();
    let first = metered(&mut mb, device, 1, million, now);
    assert_eq!(first, vec![r(1, million)]);
    // Asking again the same day is refused, and asks the cloud for nothing.
    for id in 2..5 {
        assert_eq!(metered(&mut mb, device, id, 10, now + 60), vec![]);
    }
    let status = &mb.id_status().unwrap()[0];
    assert_eq!((status.over_quota, status.demand), (3, 0));
    assert!(!mb.id_refill_wanted().unwrap());
    // A retry of the granted request still gets its ranges; another device is not affected;
    // a day later the device is served again.
    assert_eq!(metered(&mut mb, device, 1, million, now + 60), first);
    assert_eq!(metered(&mut mb, site(8), 1, 10, now).len(), 1);
    assert_eq!(
        metered(&mut mb, device, 9, 10, now + quota.period_secs + 1).len(),
        1
    );
    // Unmetered grants (a hub's refills at the cloud) have no quota.
    for id in 20..23 {
        assert!(!mb
            .grant_ids(&site(7), &request(id, "patients", million / 4, 0))
            .unwrap()
            .is_empty());
    }
}
