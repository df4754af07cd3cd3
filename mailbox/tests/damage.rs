//! Stored batches damaged on disk (issue 20, "Tamper"): one bit flipped in a stored body with
//! rusqlite, on real SQLite files. The damaged batch is never served, its stream's coverage
//! drops below it, status counts it, the file checks clean afterwards, and the hub's uplink
//! fetches the range again from the cloud's mailbox.

mod support;

use outpost_mailbox::Mailbox;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_protocol::{Hlc, SiteId, VersionVector};
use outpost_testkit::batch::text_rows;
use outpost_testkit::keys::site_keypair;
use std::path::Path;
use support::uplink::{key, owner, CLOUD, HUB};
use support::{batch, site};

const DEVICE: SiteId = SiteId([0xd1; 16]);

/// Flips the lowest bit of the last byte (in the body) of the stored batch `origin` `lo..`, as
/// a failing SD card or an editor would, through a connection of its own.
fn flip_body_bit(path: &Path, origin: SiteId, lo: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let (id, mut bytes): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT id, bytes FROM batches WHERE origin = ?1 AND lo = ?2",
            rusqlite::params![origin.as_bytes(), lo as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    conn.execute(
        "UPDATE batches SET bytes = ?1 WHERE id = ?2",
        rusqlite::params![bytes, id],
    )
    .unwrap();
    // As a minute passing does: the next serve checks again.
    Mailbox::forget_checked();
}

/// What a peer with `vector` is served: (origin, lo, hi) in order.
fn served(mb: &Mailbox, vector: &VersionVector) -> Vec<(SiteId, u64, u64)> {
    mb.batches_for(vector, None, &Scopes::All)
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            (b.origin, b.range.lo, b.range.hi)
        })
        .collect()
}

fn covered(mb: &Mailbox, origin: SiteId) -> u64 {
    mb.vector().unwrap().get(&origin.into())
}

#[test]
fn a_flipped_bit_in_a_stored_body_is_never_served_and_its_stream_stops_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailbox.db");
    let (a, b) = (site(1), site(2));
    let good_4_6 = batch(a, 4, 6, 300);
    {
        let mut mb = Mailbox::open(&path).unwrap();
        mb.store(vec![
            batch(a, 1, 3, 300),
            good_4_6.clone(),
            batch(a, 7, 9, 300),
            batch(b, 1, 5, 300),
        ])
        .unwrap();
    }
    flip_body_bit(&path, a, 4);

    let mb = Mailbox::open(&path).unwrap();
    assert_eq!(
        mb.status().unwrap().damaged,
        0,
        "found when served, not before"
    );
    // Origin a's stream stops below the damaged batch (7..9 is not sent past the hole); the
    // pull goes on with origin b's.
    assert_eq!(
        served(&mb, &VersionVector::new()),
        vec![(a, 1, 3), (b, 1, 5)]
    );
    assert_eq!((covered(&mb, a), covered(&mb, b)), (3, 5));
    let status = mb.status().unwrap();
    assert_eq!(status.damaged, 1);
    assert_eq!(
        status.batches, 3,
        "the damaged batch is gone, the rest stays"
    );
    let a_status = status.origins.iter().find(|o| o.origin == a).unwrap();
    assert_eq!(
        (a_status.covered, a_status.highest),
        (3, 9),
        "7..9 held beyond the gap"
    );
    mb.check().unwrap();
    // Served again: the same, and nothing more counted.
    assert_eq!(
        served(&mb, &VersionVector::new()),
        vec![(a, 1, 3), (b, 1, 5)]
    );
    assert_eq!(mb.status().unwrap().damaged, 1);
    drop(mb);

    // The good copy fetched again fills the hole; the stream is whole again.
    let mut mb = Mailbox::open(&path).unwrap();
    let receipts = mb.store(vec![good_4_6.clone()]).unwrap();
    assert!(receipts[0].stored && receipts[0].covered, "{receipts:?}");
    assert_eq!(covered(&mb, a), 9);
    let bytes: Vec<Vec<u8>> = mb
        .batches_for(&VersionVector::new(), Some(b), &Scopes::All)
        .unwrap()
        .map(|b| b.unwrap().bytes)
        .collect();
    assert_eq!(bytes.len(), 3);
    assert_eq!(bytes[1], good_4_6, "the good copy is served, byte for byte");
    mb.check().unwrap();
}

#[test]
fn removing_the_batch_with_the_highest_clock_lowers_the_figure_to_what_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailbox.db");
    let (a, b) = (site(1), site(2));
    let mut mb = Mailbox::open(&path).unwrap();
    // support::batch stamps its change at 1_700_000_000_000 + hi.
    mb.store(vec![
        batch(a, 1, 6, 50),
        batch(a, 7, 9, 50),
        batch(b, 1, 5, 50),
    ])
    .unwrap();
    assert_eq!(
        mb.clock_admission().unwrap().highest_admitted,
        Hlc::new(1_700_000_000_009, 0)
    );
    // Truncated rather than flipped: the header may be what is damaged, so the figure is
    // recomputed from what is held.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE batches SET bytes = substr(bytes, 1, length(bytes) - 1) WHERE lo = 7",
        [],
    )
    .unwrap();
    Mailbox::forget_checked();
    assert_eq!(
        served(&mb, &VersionVector::new()),
        vec![(a, 1, 6), (b, 1, 5)]
    );
    assert_eq!(
        mb.clock_admission().unwrap().highest_admitted,
        Hlc::new(1_700_000_000_006, 0),
        "the highest clock names a batch that is held"
    );
    assert_eq!(mb.status().unwrap().damaged, 1);
    mb.check().unwrap();
}

#[test]
fn two_connections_serving_the_same_damaged_batch_remove_and_count_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailbox.db");
    let a = site(1);
    let mut first = Mailbox::open(&path).unwrap();
    first
        .store(vec![
            batch(a, 1, 2, 40),
            batch(a, 3, 4, 40),
            batch(a, 5, 6, 40),
        ])
        .unwrap();
    let second = Mailbox::open(&path).unwrap();
    flip_body_bit(&path, a, 3);
    // Both plan before either serves (two devices pulling at once on the hub).
    let mut one = first
        .pull_plan(&VersionVector::new(), None, &Scopes::All)
        .unwrap();
    let mut two = second
        .pull_plan(&VersionVector::new(), None, &Scopes::All)
        .unwrap();
    let drain = |mb: &Mailbox, plan: &mut outpost_mailbox::PullPlan| {
        let mut got = Vec::new();
        while let Some(b) = mb.next_batch(plan).unwrap() {
            got.push(b.range.lo);
        }
        got
    };
    assert_eq!(drain(&first, &mut one), vec![1]);
    assert_eq!(
        drain(&second, &mut two),
        vec![1],
        "gone already: skipped, no error"
    );
    assert_eq!(second.status().unwrap().damaged, 1);
    assert_eq!(covered(&second, a), 2);
    second.check().unwrap();
}

/// A device's batch with a real body (signed with its test key).
fn device_batch(lo: u64, hi: u64) -> Vec<u8> {
    let rows = (lo..=hi).map(|s| {
        (
            s as i64,
            Hlc::new(1_800_000_000_000 + s, 0),
            format!("row {s}"),
        )
    });
    text_rows(DEVICE, lo, hi, "patients", "name", rows)
}

/// A cloud that knows the hub and the device, and a hub that knows the cloud as its root.
fn cloud_and_hub(dir: &Path) -> (Mailbox, Mailbox, Keypair) {
    let (cloud_key, hub_key) = (key(1), key(2));
    let mut cloud = Mailbox::open(dir.join("cloud.db")).unwrap();
    cloud.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    cloud
        .certify(HUB, hub_key.public(), PeerRole::Hub, false)
        .unwrap();
    cloud
        .certify(
            DEVICE,
            site_keypair(DEVICE).public(),
            PeerRole::Device,
            false,
        )
        .unwrap();
    let mut hub = Mailbox::open(dir.join("hub.db")).unwrap();
    let root = outpost_protocol::control::Root {
        site: CLOUD,
        key: *cloud_key.public(),
        role: PeerRole::Cloud,
    };
    hub.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, Some(root)));
    (cloud, hub, hub_key)
}

#[test]
fn the_uplink_fetches_a_damaged_range_again_from_the_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cloud, mut hub, hub_key) = cloud_and_hub(dir.path());
    let held = vec![device_batch(1, 2), device_batch(3, 4), device_batch(5, 6)];
    cloud.store(held.clone()).unwrap();
    let (moved, _) = support::uplink::uplink_session(&mut hub, &mut cloud, &hub_key);
    assert_eq!(moved.batches_pulled, 3, "{moved:?}");

    flip_body_bit(hub.path(), DEVICE, 3);
    // A device of the clinic pulls from the hub: the damaged batch is not served, nor what
    // follows it in the stream.
    let tablet = site(0x7a);
    let pulled: Vec<u64> = hub
        .batches_for(&VersionVector::new(), Some(tablet), &Scopes::All)
        .unwrap()
        .map(|b| b.unwrap().range.lo)
        .collect();
    assert_eq!(pulled, vec![1]);
    assert_eq!(covered(&hub, DEVICE), 2);
    assert_eq!(hub.status().unwrap().damaged, 1);
    hub.check().unwrap();

    // The uplink's hello states the lower vector; the cloud serves the range again.
    let (moved, _) = support::uplink::uplink_session(&mut hub, &mut cloud, &hub_key);
    assert!(moved.batches_pulled >= 1, "{moved:?}");
    assert_eq!(covered(&hub, DEVICE), 6);
    let served: Vec<Vec<u8>> = hub
        .batches_for(&VersionVector::new(), Some(tablet), &Scopes::All)
        .unwrap()
        .map(|b| b.unwrap().bytes)
        .collect();
    assert_eq!(served, held, "the good copies, byte for byte");
    assert_eq!(hub.status().unwrap().damaged, 1);
    hub.check().unwrap();
}

#[test]
fn the_uplink_never_pushes_a_damaged_batch_nor_what_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cloud, mut hub, hub_key) = cloud_and_hub(dir.path());
    cloud.store(vec![device_batch(1, 2)]).unwrap();
    // The hub took the device's whole stream; the cloud has only its start.
    hub.store(vec![
        device_batch(1, 2),
        device_batch(3, 4),
        device_batch(5, 6),
    ])
    .unwrap();
    flip_body_bit(hub.path(), DEVICE, 3);

    let (moved, _) = support::uplink::uplink_session(&mut hub, &mut cloud, &hub_key);
    assert_eq!(moved.batches_pushed, 0, "{moved:?}");
    assert_eq!(covered(&cloud, DEVICE), 2, "no gap reached the cloud");
    assert_eq!(covered(&hub, DEVICE), 2, "the device pushes 3.. again");
    assert_eq!(hub.status().unwrap().damaged, 1);
    hub.check().unwrap();
    cloud.check().unwrap();
}
