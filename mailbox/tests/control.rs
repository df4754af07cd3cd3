//! The control streams a mailbox keeps: its own entries, what it accepts of a peer's, and the
//! key directory both make, on real SQLite files.

mod support;
use outpost_mailbox::Mailbox;
use outpost_protocol::control::{encode_entry, key_item, void_item, Root, VoidReason};
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_protocol::{ControlVector, SeqRange, SiteId, VersionVector};
use outpost_testkit::batch::batch;
use outpost_testkit::keys::site_keypair;
use support::uplink::{key, owner, uplink_session, CLOUD, HUB};

const DEVICE: SiteId = SiteId([0xd1; 16]);

#[test]
fn own_entries_are_numbered_signed_kept_and_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let hub_key = key(2);
    let device_key = key(3);
    let mut mb = support::store::open(&path);
    mb.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, None));
    assert_eq!(
        mb.certify(DEVICE, device_key.public(), PeerRole::Device, false)
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        mb.certify(DEVICE, device_key.public(), PeerRole::Device, false)
            .unwrap(),
        None,
        "the same statement is not written twice"
    );
    assert_eq!(mb.key_of(&DEVICE).unwrap(), Some(*device_key.public()));
    // Another connection (the operator's revoke runs in another process) sees it and adds to it.
    let mut other = support::store::open(&path);
    other.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, None));
    assert_eq!(
        other
            .certify(DEVICE, device_key.public(), PeerRole::Device, true)
            .unwrap(),
        Some(2)
    );
    let b = *mb.directory().unwrap().binding(&DEVICE).unwrap();
    assert!(b.revoked, "the first connection sees the revocation");
    drop((mb, other));
    let mut reopened = support::store::open(&path);
    reopened.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, None));
    let mut v = ControlVector::new();
    v.set(HUB, 2);
    assert_eq!(reopened.control_vector().unwrap(), v);
    assert_eq!(
        reopened.control_for(&ControlVector::new()).unwrap().len(),
        2
    );
    let mut has_one = ControlVector::new();
    has_one.set(HUB, 1);
    assert_eq!(reopened.control_for(&has_one).unwrap().len(), 1);
}

/// A stream restored behind what its owner saw stored is not appended to (its next seq may be one
/// peers hold for another entry), until the entries are back: here they come back as a peer
/// would pass them on, the exact bytes the owner signed.
#[test]
fn an_own_stream_restored_behind_its_floor_is_not_appended_to_until_its_entries_are_back() {
    let dir = tempfile::tempdir().unwrap();
    let hub_key = key(2);
    let device_key = key(3);
    let mut mb = support::store::open(&dir.path().join("m.db"));
    mb.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, None));
    mb.certify(DEVICE, device_key.public(), PeerRole::Device, false)
        .unwrap();
    mb.certify(DEVICE, device_key.public(), PeerRole::Device, true)
        .unwrap();
    let held = mb.control_for(&ControlVector::new()).unwrap();
    // The "restore": a mailbox holding the first entry only, whose owner saw two stored.
    let mut restored = support::store::open(&dir.path().join("r.db"));
    restored.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, None));
    restored.control_received(held[..1].to_vec()).unwrap();
    restored.set_control_floor(2);
    let e = restored
        .certify(SiteId([0xd2; 16]), key(4).public(), PeerRole::Device, false)
        .unwrap_err();
    assert!(e.to_string().contains("restored behind its peers"), "{e}");
    assert_eq!(
        restored.control_vector().unwrap().get(&HUB),
        1,
        "nothing written"
    );
    restored.control_received(held[1..].to_vec()).unwrap();
    assert_eq!(
        restored
            .certify(SiteId([0xd2; 16]), key(4).public(), PeerRole::Device, false)
            .unwrap(),
        Some(3)
    );
}

#[test]
fn the_cloud_takes_a_hubs_entries_once_it_certified_the_hub_and_recertifies_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud_key, hub_key, device_key) = (key(1), key(2), key(3));
    let mut hub = support::store::open(&dir.path().join("hub.db"));
    hub.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, None));
    hub.certify(DEVICE, device_key.public(), PeerRole::Device, false)
        .unwrap();
    let entries = hub.control_for(&ControlVector::new()).unwrap();

    let mut cloud = support::store::open(&dir.path().join("cloud.db"));
    cloud.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    // Not certified yet: the hub's entry is refused (logged, not stored, not an error).
    let report = cloud.control_received(entries.clone()).unwrap();
    assert_eq!(report.accepted, 0);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(cloud.key_of(&DEVICE).unwrap(), None);
    // Garbage and forgeries change nothing either.
    let forged = encode_entry(
        HUB,
        1,
        &key_item(DEVICE, key(9).public(), PeerRole::Device, false),
        &key(9),
    );
    let report = cloud
        .control_received(vec![vec![1, 2, 3], forged.clone()])
        .unwrap();
    assert_eq!((report.accepted, report.refused.len()), (0, 2));

    cloud
        .certify(HUB, hub_key.public(), PeerRole::Hub, false)
        .unwrap();
    let report = cloud.control_received(vec![forged]).unwrap();
    assert_eq!(report.accepted, 0, "signed by another key than the hub's");
    let report = cloud.control_received(entries.clone()).unwrap();
    assert_eq!(report.accepted, 1);
    assert_eq!(report.written, 1, "the cloud certified the hub's device");
    let b = *cloud.directory().unwrap().binding(&DEVICE).unwrap();
    assert_eq!(b.key, *device_key.public());
    assert_eq!(b.certified_by, CLOUD, "the cloud's entry beats the hub's");
    let report = cloud.control_received(entries).unwrap();
    assert_eq!((report.accepted, report.known), (0, 1), "{report:?}");

    // The hub, with the cloud as a root, takes everything the cloud holds.
    hub.set_control_owner(owner(
        HUB,
        &hub_key,
        PeerRole::Hub,
        Some(Root {
            site: CLOUD,
            key: *cloud_key.public(),
            role: PeerRole::Cloud,
        }),
    ));
    let hub_vector = hub.control_vector().unwrap();
    let report = hub
        .control_received(cloud.control_for(&hub_vector).unwrap())
        .unwrap();
    assert_eq!(report.accepted, 2, "{report:?}");
    assert_eq!(
        hub.control_vector().unwrap(),
        cloud.control_vector().unwrap()
    );
}

#[test]
fn the_uplink_holds_a_pulled_batch_of_an_origin_no_entry_names_until_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud_key, hub_key) = (key(1), key(2));
    let (named, unnamed) = (SiteId([0x71; 16]), SiteId([0x72; 16]));
    let cloud_root = Root {
        site: CLOUD,
        key: *cloud_key.public(),
        role: PeerRole::Cloud,
    };
    let mut cloud = support::store::open(&dir.path().join("cloud.db"));
    cloud.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    cloud
        .certify(HUB, hub_key.public(), PeerRole::Hub, false)
        .unwrap();
    cloud
        .certify(named, site_keypair(named).public(), PeerRole::Device, false)
        .unwrap();
    cloud
        .store(vec![
            batch(named, 1, 2),
            batch(unnamed, 1, 1),
            batch(unnamed, 2, 3),
        ])
        .unwrap();
    let mut hub = support::store::open(&dir.path().join("hub.db"));
    hub.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, Some(cloud_root)));

    let (moved, held) = uplink_session(&mut hub, &mut cloud, &hub_key);
    assert_eq!((moved.batches_pulled, held), (1, 1), "{moved:?}");
    let v = hub.vector().unwrap();
    assert_eq!(
        (v.get(&named.into()), v.get(&unnamed.into())),
        (2, 0),
        "held: not stored"
    );

    // Once the cloud's entry names it, the next pull brings it.
    cloud
        .certify(
            unnamed,
            site_keypair(unnamed).public(),
            PeerRole::Device,
            false,
        )
        .unwrap();
    let (moved, held) = uplink_session(&mut hub, &mut cloud, &hub_key);
    assert_eq!((moved.batches_pulled, held), (2, 0), "{moved:?}");
    assert_eq!(hub.vector().unwrap().get(&unnamed.into()), 3);
}

/// Two entries claiming the same place in a writer's stream (one forged): the mailbox stores the
/// bytes of the one its directory accepted, whatever their order, so the stream reloads intact.
#[test]
fn a_forged_twin_of_an_accepted_entry_is_never_what_gets_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    let (cloud_key, hub_key) = (key(1), key(2));
    let mut cloud = support::store::open(&path);
    cloud.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    cloud
        .certify(HUB, hub_key.public(), PeerRole::Hub, false)
        .unwrap();
    let item = key_item(DEVICE, key(3).public(), PeerRole::Device, false);
    let real = encode_entry(HUB, 1, &item, &hub_key);
    let forged = encode_entry(HUB, 1, &item, &key(9));
    let report = cloud.control_received(vec![real, forged]).unwrap();
    assert_eq!(report.accepted, 1, "{report:?}");
    drop(cloud);
    let mut reopened = support::store::open(&path);
    reopened.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    assert_eq!(
        reopened.key_of(&DEVICE).unwrap(),
        Some(*key(3).public()),
        "the stored entry is the real one"
    );
}

/// A grant's version goes above every version any writer stated for the site: the cloud's
/// regrant of a device its hub granted version 1 is version 2, so a batch naming a version
/// means one grant everywhere.
#[test]
fn a_regrant_takes_a_version_above_every_writers() {
    use outpost_protocol::scope::Scopes;
    let dir = tempfile::tempdir().unwrap();
    let (cloud_key, hub_key, device_key) = (key(1), key(2), key(3));
    let mut hub = support::store::open(&dir.path().join("hub.db"));
    hub.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, None));
    hub.certify(DEVICE, device_key.public(), PeerRole::Device, false)
        .unwrap();
    let moshi = Scopes::parse(["moshi"]).unwrap();
    hub.grant_scopes(DEVICE, &moshi, false).unwrap().unwrap();
    let mut cloud = support::store::open(&dir.path().join("cloud.db"));
    cloud.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    cloud
        .certify(HUB, hub_key.public(), PeerRole::Hub, false)
        .unwrap();
    // The hub's own grant (a hub grants within it).
    cloud.grant_scopes(HUB, &Scopes::All, false).unwrap();
    cloud
        .control_received(hub.control_for(&ControlVector::new()).unwrap())
        .unwrap();
    assert_eq!(
        cloud.directory().unwrap().grant_at(&DEVICE, 1),
        Some(&moshi)
    );
    let tanga = Scopes::parse(["tanga"]).unwrap();
    cloud.grant_scopes(DEVICE, &tanga, false).unwrap().unwrap();
    let d = cloud.directory().unwrap();
    let g = d.grant_of(&DEVICE).unwrap();
    assert_eq!((g.version, &g.scopes), (2, &tanga));
    assert_eq!(
        d.grant_at(&DEVICE, 1),
        Some(&moshi),
        "the hub's version stays"
    );
}

/// Voided ranges (issue 19 item 4): a range the cloud voids counts as covered in every mailbox
/// and is never served, by the cloud or by a hub that held it before the entry came; the
/// origin's later batches are served past it, and a hub that never held it is not stuck below
/// it.
#[test]
fn a_voided_range_counts_as_covered_and_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud_key, hub_key) = (key(1), key(2));
    let origin = SiteId([0x71; 16]);
    let cloud_root = Root {
        site: CLOUD,
        key: *cloud_key.public(),
        role: PeerRole::Cloud,
    };
    let mut cloud = support::store::open(&dir.path().join("cloud.db"));
    cloud.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    cloud
        .certify(HUB, hub_key.public(), PeerRole::Hub, false)
        .unwrap();
    cloud
        .certify(
            origin,
            site_keypair(origin).public(),
            PeerRole::Device,
            false,
        )
        .unwrap();
    cloud
        .store(vec![batch(origin, 1, 2), batch(origin, 3, 4)])
        .unwrap();
    // A hub that pulled 3..=4 before the cloud judged it.
    let mut early = support::store::open(&dir.path().join("early.db"));
    early.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, Some(cloud_root)));
    uplink_session(&mut early, &mut cloud, &hub_key);
    assert_eq!(early.vector().unwrap().get(&origin.into()), 4);

    cloud
        .append_control(&void_item(
            origin,
            "",
            SeqRange::new(3, 4).unwrap(),
            VoidReason::Invalid,
        ))
        .unwrap();
    // A second connection (another process serving the tenant) that judged the same batch
    // writes no second entry: what the directory states is decided inside the write.
    let mut twin = support::store::open(&dir.path().join("cloud.db"));
    twin.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    let stream = outpost_protocol::StreamId::new(origin, "");
    let voided = SeqRange::new(3, 4).unwrap();
    let again = twin
        .append_control_unless(&void_item(origin, "", voided, VoidReason::Invalid), |d| {
            d.is_voided(&stream, voided)
        })
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(cloud.control_vector().unwrap().get(&CLOUD), 3);
    cloud.store(vec![batch(origin, 5, 5)]).unwrap();
    let served = |m: &Mailbox| -> Vec<(u64, u64)> {
        m.batches_for(&VersionVector::new(), None, &Scopes::All)
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                (b.range.lo, b.range.hi)
            })
            .collect()
    };
    assert_eq!(served(&cloud), [(1, 2), (5, 5)]);

    // A hub that never held it covers it from the entry and pulls what follows.
    let mut late = support::store::open(&dir.path().join("late.db"));
    late.set_control_owner(owner(HUB, &hub_key, PeerRole::Hub, Some(cloud_root)));
    let (moved, _) = uplink_session(&mut late, &mut cloud, &hub_key);
    assert_eq!(moved.batches_pulled, 2, "{moved:?}");
    assert_eq!(late.vector().unwrap().get(&origin.into()), 5);
    assert_eq!(served(&late), [(1, 2), (5, 5)]);

    // The hub that held it keeps it in its file but serves it no more.
    uplink_session(&mut early, &mut cloud, &hub_key);
    assert_eq!(early.vector().unwrap().get(&origin.into()), 5);
    assert_eq!(served(&early), [(1, 2), (5, 5)]);
    let mut from_two = VersionVector::new();
    from_two.set(origin.into(), 2);
    let after: Vec<_> = early
        .batches_for(&from_two, None, &Scopes::All)
        .unwrap()
        .map(|b| b.unwrap().range.lo)
        .collect();
    assert_eq!(after, [5]);
    for m in [&cloud, &early, &late] {
        m.check().unwrap();
    }
    assert_eq!(early.status().unwrap().batches, 3, "nothing is deleted");
}

/// What peers state of the box's own streams is kept, only ever raised, and other origins'
/// streams say nothing; a stream latched behind stays as first latched.
#[test]
fn peers_claims_on_the_boxs_own_streams_are_kept_and_a_latch_stays() {
    use outpost_protocol::session::ServerStore;
    use outpost_protocol::StreamId;
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("cloud.db"));
    let cloud_key = key(1);
    mb.set_control_owner(owner(CLOUD, &cloud_key, PeerRole::Cloud, None));
    // The cloud holds seqs 1..=3 of its own unscoped stream (only streams it holds are kept).
    mb.store(vec![batch(CLOUD, 1, 3)]).unwrap();
    let mut hello = VersionVector::new();
    hello.set(StreamId::new(HUB, ""), 40); // another origin's: nothing to keep
    hello.set(StreamId::new(CLOUD, "madeup"), 99); // a stream the cloud never wrote: ignored
    ServerStore::batches_for(&mut mb, &hello, &DEVICE, &[], &Scopes::All).unwrap();
    assert!(mb.own_claims().unwrap().is_empty());
    hello.set(StreamId::new(CLOUD, ""), 9);
    ServerStore::batches_for(&mut mb, &hello, &DEVICE, &[], &Scopes::All).unwrap();
    let claims = mb.own_claims().unwrap();
    assert_eq!(
        claims
            .iter()
            .map(|c| (c.stream.as_str(), c.peer_has, c.peer))
            .collect::<Vec<_>>(),
        [("", 9, DEVICE)]
    );
    // A peer that covers less lowers nothing.
    hello.set(StreamId::new(CLOUD, ""), 5);
    ServerStore::batches_for(&mut mb, &hello, &HUB, &[], &Scopes::All).unwrap();
    assert_eq!(mb.own_claims().unwrap()[0].peer_has, 9);
    assert!(
        mb.behind().unwrap().is_empty(),
        "a claim alone latches nothing"
    );
    mb.latch_behind(&claims[0], 3).unwrap();
    let mut later = claims[0].clone();
    later.peer_has = 12;
    mb.latch_behind(&later, 7).unwrap();
    let behind = mb.behind().unwrap();
    assert_eq!(behind.len(), 1);
    assert_eq!(
        (behind[0].peer_has, behind[0].held),
        (9, 3),
        "the first latch stays"
    );
}
