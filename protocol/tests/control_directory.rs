//! The key directory (issue 16 item 2, DESIGN section 10 "control streams"): who may write which
//! entries, cloud entries beating hub entries, and one decision whatever the arrival order.

use outpost_protocol::batch::Direction;
use outpost_protocol::control::{
    decode_entry, encode_entry, grant_item, key_item, table_item, void_item, ControlEntry,
    ControlError, ControlItem, Directory, Refusal, Root, VoidReason,
};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_protocol::{SeqRange, SiteId, StreamId};

fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32]).unwrap()
}

const CLOUD: SiteId = SiteId([0xc0; 16]);
const HUB: SiteId = SiteId([0x40; 16]);
const HUB2: SiteId = SiteId([0x41; 16]);
const DEV1: SiteId = SiteId([0x01; 16]);
const DEV2: SiteId = SiteId([0x02; 16]);

fn entry(writer: SiteId, wkey: u8, seq: u64, site: SiteId, k: u8, role: PeerRole) -> ControlEntry {
    decode_entry(&encode_entry(
        writer,
        seq,
        &key_item(site, key(k).public(), role, false),
        &key(wkey),
    ))
    .unwrap()
}

fn cloud_root() -> Root {
    Root {
        site: CLOUD,
        key: *key(0xc0).public(),
        role: PeerRole::Cloud,
    }
}

/// The cloud certifies HUB (key 0x40) and DEV1; HUB admits DEV2.
fn stream() -> Vec<ControlEntry> {
    vec![
        entry(CLOUD, 0xc0, 1, HUB, 0x40, PeerRole::Hub),
        entry(CLOUD, 0xc0, 2, DEV1, 0x01, PeerRole::Device),
        entry(HUB, 0x40, 1, DEV2, 0x02, PeerRole::Device),
    ]
}

#[test]
fn a_hub_the_cloud_certified_binds_its_devices_whatever_the_order() {
    for order in [[0, 1, 2], [2, 1, 0], [2, 0, 1], [1, 2, 0]] {
        let all = stream();
        let mut d = Directory::new([cloud_root()]);
        let left = d.admit(order.iter().map(|&i| all[i].clone()).collect());
        assert!(left.is_empty(), "{order:?}: {left:?}");
        assert_eq!(d.key_of(&DEV1), Some(*key(1).public()));
        assert_eq!(d.key_of(&DEV2), Some(*key(2).public()));
        assert_eq!(d.binding(&DEV2).unwrap().certified_by, HUB);
        assert_eq!(d.vector().get(&CLOUD), 2);
        assert_eq!(d.vector().get(&HUB), 1);
    }
}

#[test]
fn what_a_writer_may_not_say_is_refused() {
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(stream()).is_empty());
    // A hub binding a hub (taken into its stream, given no weight), a stranger writing, a forged
    // signature, a gap.
    let bad = vec![
        entry(HUB, 0x40, 2, HUB2, 0x41, PeerRole::Hub),
        entry(HUB2, 0x41, 1, DEV1, 0x09, PeerRole::Device),
        entry(CLOUD, 0x40, 3, DEV1, 0x09, PeerRole::Device),
    ];
    let left = d.admit(bad);
    let why: Vec<Refusal> = left.iter().map(|(_, r)| *r).collect();
    assert_eq!(why.len(), 2, "{why:?}");
    assert!(why.contains(&Refusal::UnknownWriter), "{why:?}");
    assert!(why.contains(&Refusal::BadSignature), "{why:?}");
    let gap = d.admit(vec![entry(CLOUD, 0xc0, 5, DEV1, 0x09, PeerRole::Device)]);
    assert_eq!(gap[0].1, Refusal::NotNext { have: 2 });
    // Nothing changed.
    assert_eq!(d.key_of(&DEV1), Some(*key(1).public()));
    assert_eq!(d.key_of(&HUB2), None);
}

#[test]
fn the_clouds_entry_beats_a_hubs_and_a_hub_cannot_rebind_a_cloud_bound_site() {
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(stream()).is_empty());
    // The hub claims DEV1 (cloud-bound) for its own key: no effect.
    assert!(d
        .admit(vec![entry(HUB, 0x40, 2, DEV1, 0x40, PeerRole::Device)])
        .is_empty());
    assert_eq!(d.key_of(&DEV1), Some(*key(1).public()));
    // The cloud binds DEV2 to another key: the cloud wins over the hub's entry.
    assert!(d
        .admit(vec![entry(CLOUD, 0xc0, 3, DEV2, 0x22, PeerRole::Device)])
        .is_empty());
    assert_eq!(d.key_of(&DEV2), Some(*key(0x22).public()));
    assert_eq!(d.binding(&DEV2).unwrap().certified_by, CLOUD);
}

#[test]
fn a_revoked_hubs_devices_lose_their_keys_unless_the_cloud_certified_them() {
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(stream()).is_empty());
    let revoke = decode_entry(&encode_entry(
        CLOUD,
        3,
        &key_item(HUB, key(0x40).public(), PeerRole::Hub, true),
        &key(0xc0),
    ))
    .unwrap();
    assert!(d.admit(vec![revoke]).is_empty());
    assert!(d.binding(&HUB).unwrap().revoked, "the key stays, marked");
    assert_eq!(d.key_of(&DEV2), None);
    assert_eq!(d.key_of(&DEV1), Some(*key(1).public()));
}

#[test]
fn a_device_enrolled_at_a_hub_without_a_cloud_trusts_that_hub() {
    let mut d = Directory::new([Root {
        site: HUB,
        key: *key(0x40).public(),
        role: PeerRole::Hub,
    }]);
    assert!(d
        .admit(vec![entry(HUB, 0x40, 1, DEV2, 0x02, PeerRole::Device)])
        .is_empty());
    assert_eq!(d.key_of(&DEV2), Some(*key(2).public()));
    // The same entries from a cloud it does not know mean nothing.
    let left = d.admit(vec![entry(CLOUD, 0xc0, 1, DEV1, 0x01, PeerRole::Device)]);
    assert_eq!(left[0].1, Refusal::UnknownWriter);
}

/// A device enrolled at a hub before the hub's uplink was enrolled has no cloud anchor: its hub
/// introduces the cloud (the code came from that hub too), and then the cloud's entries count.
/// A hub that is not the device's own cannot, nor can any hub where a cloud root exists.
#[test]
fn a_devices_own_hub_introduces_its_cloud_when_the_code_had_none() {
    let hub_root = Root {
        site: HUB,
        key: *key(0x40).public(),
        role: PeerRole::Hub,
    };
    let introduce = entry(HUB, 0x40, 1, CLOUD, 0xc0, PeerRole::Cloud);
    let cloud_binds = entry(CLOUD, 0xc0, 1, DEV1, 0x01, PeerRole::Device);
    let mut d = Directory::new([hub_root]);
    // In either order.
    assert!(d
        .admit(vec![cloud_binds.clone(), introduce.clone()])
        .is_empty());
    assert_eq!(d.binding(&CLOUD).unwrap().role, PeerRole::Cloud);
    assert_eq!(d.key_of(&DEV1), Some(*key(1).public()));
    // With a cloud root, a hub's word about a cloud counts for nothing.
    let mut with_root = Directory::new([hub_root, cloud_root()]);
    let fake = entry(HUB, 0x40, 1, SiteId([0xc9; 16]), 0x09, PeerRole::Cloud);
    assert!(with_root.admit(vec![fake]).is_empty());
    assert_eq!(with_root.key_of(&SiteId([0xc9; 16])), None);
}

#[test]
fn damaged_entries_get_typed_errors() {
    let good = encode_entry(
        CLOUD,
        1,
        &key_item(DEV1, key(1).public(), PeerRole::Device, false),
        &key(0xc0),
    );
    decode_entry(&good).unwrap();
    assert_eq!(
        decode_entry(&good[..good.len() - 1]),
        Err(ControlError::Truncated)
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(decode_entry(&trailing), Err(ControlError::TrailingBytes));
    assert_eq!(decode_entry(&[]), Err(ControlError::Malformed));
    assert!(matches!(
        decode_entry(&vec![0; 2100]),
        Err(ControlError::TooLong { len: 2100 })
    ));
    // The key's first byte (0x04, uncompressed) changed: not a point.
    let at = good.windows(2).position(|w| w == [65, 4]).unwrap() + 1;
    let mut bad_key = good.clone();
    bad_key[at] = 5;
    assert_eq!(decode_entry(&bad_key), Err(ControlError::BadKey));
    // Entry 0 does not exist.
    let zero = encode_entry(
        CLOUD,
        0,
        &key_item(DEV1, key(1).public(), PeerRole::Device, false),
        &key(0xc0),
    );
    assert_eq!(decode_entry(&zero), Err(ControlError::BadSeq));
}

fn table(writer: SiteId, wkey: u8, seq: u64, name: &str, direction: Direction) -> ControlEntry {
    decode_entry(&encode_entry(
        writer,
        seq,
        &table_item(name, direction, None),
        &key(wkey),
    ))
    .unwrap()
}

/// Table settings are the cloud's to declare (issue 16 item 5): the cloud's latest entry per
/// table counts; a hub's, accepted into its stream, is given no weight; undeclared tables travel
/// both ways.
#[test]
fn table_settings_come_from_the_cloud_alone_and_the_latest_wins() {
    let mut entries = stream();
    entries.push(table(CLOUD, 0xc0, 3, "forms", Direction::Up));
    entries.push(table(CLOUD, 0xc0, 4, "forms", Direction::Down));
    entries.push(table(HUB, 0x40, 2, "forms", Direction::Both));
    entries.push(table(HUB, 0x40, 3, "patients", Direction::Down));
    for reversed in [false, true] {
        let mut all = entries.clone();
        if reversed {
            all.reverse();
        }
        let mut d = Directory::new([cloud_root()]);
        assert!(d.admit(all).is_empty());
        assert!(d.has_cloud());
        assert_eq!(d.table_direction("forms"), Direction::Down);
        assert_eq!(
            d.table_direction("FORMS"),
            Direction::Down,
            "names ignore ASCII case"
        );
        assert_eq!(d.table_direction("patients"), Direction::Both);
        assert_eq!(
            d.tables().collect::<Vec<_>>(),
            vec![("forms", Direction::Down)]
        );
        assert!(d.is_cloud(&CLOUD) && !d.is_cloud(&HUB));
    }
    // Names the engine reserves cannot be declared.
    let bad = encode_entry(
        CLOUD,
        5,
        &table_item("_outpost_rows", Direction::Down, None),
        &key(0xc0),
    );
    assert_eq!(decode_entry(&bad), Err(ControlError::BadTableName));
    assert!(!Directory::new([]).has_cloud());
}

fn grant(
    writer: SiteId,
    wkey: u8,
    seq: u64,
    site: SiteId,
    version: u64,
    scopes: &[&str],
) -> ControlEntry {
    decode_entry(&encode_entry(
        writer,
        seq,
        &grant_item(
            site,
            version,
            Scopes::parse(scopes.iter().copied()).unwrap(),
            false,
        ),
        &key(wkey),
    ))
    .unwrap()
}

/// Grants (issue 19 item 3): the cloud's highest version wins whatever the order; a hub's grant
/// counts for a device it admitted, within the hub's own grant, until the cloud grants it.
#[test]
fn grants_the_clouds_highest_version_then_a_hubs_within_its_own() {
    let names = |d: &Directory, s: &SiteId| d.grant_of(s).map(|g| g.scopes.names());
    let mut entries = stream(); // cloud 1..=2, hub 1
    entries.push(grant(CLOUD, 0xc0, 3, HUB, 1, &["moshi", "arusha"]));
    entries.push(grant(CLOUD, 0xc0, 4, DEV1, 2, &["moshi"]));
    entries.push(grant(CLOUD, 0xc0, 5, DEV1, 1, &["*"])); // older version, later entry
    entries.push(grant(HUB, 0x40, 2, DEV2, 1, &["arusha"]));
    for reversed in [false, true] {
        let mut all = entries.clone();
        if reversed {
            all.reverse();
        }
        let mut d = Directory::new([cloud_root()]);
        assert!(d.admit(all).is_empty());
        assert_eq!(names(&d, &DEV1), Some(vec!["moshi".to_string()]));
        assert_eq!(d.grant_of(&DEV1).unwrap().version, 2);
        assert_eq!(names(&d, &DEV2), Some(vec!["arusha".to_string()]));
        assert_eq!(d.grant_of(&DEV2).unwrap().granted_by, HUB);
        assert_eq!(names(&d, &HUB).unwrap(), ["arusha", "moshi"]);
    }
    // Beyond the hub's own grant: no weight. The cloud's grant replaces the hub's.
    let mut wider = entries.clone();
    wider.push(grant(HUB, 0x40, 3, DEV2, 2, &["pemba"]));
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(wider.clone()).is_empty());
    assert_eq!(names(&d, &DEV2), Some(vec!["arusha".to_string()]));
    wider.push(grant(CLOUD, 0xc0, 6, DEV2, 1, &["pemba"]));
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(wider).is_empty());
    assert_eq!(names(&d, &DEV2), Some(vec!["pemba".to_string()]));
    assert_eq!(d.grant_of(&DEV2).unwrap().granted_by, CLOUD);
    // A hub's `*` (a code minted before the hub learnt its grant) means all the hub holds.
    let mut star = entries.clone();
    star.push(grant(HUB, 0x40, 3, DEV2, 2, &["*"]));
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(star).is_empty());
    assert_eq!(names(&d, &DEV2).unwrap(), ["arusha", "moshi"]);
    assert_eq!(d.grant_of(&DEV2).unwrap().version, 2);
    // A grant of no scope, or version 0, does not decode.
    let zero = encode_entry(
        CLOUD,
        7,
        &grant_item(DEV1, 0, Scopes::All, false),
        &key(0xc0),
    );
    assert_eq!(decode_entry(&zero), Err(ControlError::BadGrant));
}

/// Every version of a grant stays known (batches are judged by the version they name): the
/// cloud's word for a version, else the hub's within its own grant; new versions go above every
/// version any writer stated.
#[test]
fn every_grant_version_is_kept_for_judging_the_batches_that_name_it() {
    let at = |d: &Directory, s: &SiteId, v: u64| d.grant_at(s, v).map(Scopes::names);
    let mut entries = stream(); // cloud 1..=2, hub 1
    entries.push(grant(CLOUD, 0xc0, 3, HUB, 1, &["moshi", "arusha"]));
    entries.push(grant(HUB, 0x40, 2, DEV2, 1, &["moshi"]));
    entries.push(grant(CLOUD, 0xc0, 4, DEV2, 2, &["tanga"]));
    entries.push(grant(CLOUD, 0xc0, 5, DEV1, 1, &["moshi"]));
    entries.push(grant(CLOUD, 0xc0, 6, DEV1, 2, &["arusha"]));
    for reversed in [false, true] {
        let mut all = entries.clone();
        if reversed {
            all.reverse();
        }
        let mut d = Directory::new([cloud_root()]);
        assert!(d.admit(all).is_empty());
        assert_eq!(at(&d, &DEV1, 1), Some(vec!["moshi".to_string()]));
        assert_eq!(at(&d, &DEV1, 2), Some(vec!["arusha".to_string()]));
        assert_eq!(at(&d, &DEV1, 3), None);
        // The hub's version 1, narrowed to its own grant; the cloud's version 2 is current.
        assert_eq!(at(&d, &DEV2, 1), Some(vec!["moshi".to_string()]));
        assert_eq!(at(&d, &DEV2, 2), Some(vec!["tanga".to_string()]));
        assert_eq!(d.grant_of(&DEV2).unwrap().version, 2);
        assert_eq!(d.highest_grant_version(&DEV2), 2);
        assert_eq!(d.highest_grant_version(&SiteId([9; 16])), 0);
    }
}

/// A regrant of a hub narrows what its devices hold now, never what a version of their grant
/// meant (one decision everywhere): a batch a device wrote under the hub's grant, which the hub
/// accepted, is judged the same after the hub lost the scope, on every replica.
#[test]
fn a_hubs_regrant_narrows_its_devices_grants_but_not_their_past_versions() {
    let at = |d: &Directory, s: &SiteId, v: u64| d.grant_at(s, v).map(Scopes::names);
    let mut entries = stream(); // cloud 1..=2, hub 1
    entries.push(grant(CLOUD, 0xc0, 3, HUB, 1, &["moshi", "tanga"]));
    entries.push(grant(HUB, 0x40, 2, DEV2, 1, &["tanga"]));
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(entries.clone()).is_empty());
    assert_eq!(at(&d, &DEV2, 1), Some(vec!["tanga".to_string()]));
    assert_eq!(d.grant_of(&DEV2).unwrap().scopes.names(), ["tanga"]);
    // The cloud takes tanga from the hub.
    entries.push(grant(CLOUD, 0xc0, 4, HUB, 2, &["moshi"]));
    for reversed in [false, true] {
        let mut all = entries.clone();
        if reversed {
            all.reverse();
        }
        let mut d = Directory::new([cloud_root()]);
        assert!(d.admit(all).is_empty());
        assert_eq!(
            at(&d, &DEV2, 1),
            Some(vec!["tanga".to_string()]),
            "what version 1 meant stays"
        );
        let now = d.grant_of(&DEV2).unwrap();
        assert!(
            !now.scopes.contains("tanga") && !now.scopes.contains("moshi"),
            "nothing of it is the hub's now, and that is no scope, not every scope"
        );
        assert!(
            now.scopes.contains(""),
            "the unscoped stream is every grant's"
        );
    }
}

fn void(
    writer: SiteId,
    wkey: u8,
    seq: u64,
    origin: SiteId,
    stream: &str,
    lo: u64,
    hi: u64,
) -> ControlEntry {
    decode_entry(&encode_entry(
        writer,
        seq,
        &void_item(
            origin,
            stream,
            SeqRange::new(lo, hi).unwrap(),
            VoidReason::OutsideGrant,
        ),
        &key(wkey),
    ))
    .unwrap()
}

/// Voided ranges (issue 19 item 4, DESIGN section 10 "One decision everywhere"): the cloud's
/// alone count, whatever the order; a replica's coverage reaches over the voids that touch it,
/// chained, and never over one beyond a gap.
#[test]
fn voided_ranges_come_from_the_cloud_alone_and_count_as_covered() {
    let mut entries = stream();
    entries.push(void(CLOUD, 0xc0, 3, DEV1, "moshi", 5, 7));
    entries.push(void(CLOUD, 0xc0, 4, DEV1, "moshi", 8, 8));
    entries.push(void(CLOUD, 0xc0, 5, DEV1, "moshi", 12, 13));
    // A hub cannot void anyone's history.
    entries.push(void(HUB, 0x40, 2, DEV2, "", 1, 40));
    let moshi = StreamId::new(DEV1, "moshi");
    for reversed in [false, true] {
        let mut all = entries.clone();
        if reversed {
            all.reverse();
        }
        let mut d = Directory::new([cloud_root()]);
        assert!(d.admit(all).is_empty());
        assert_eq!(d.void_count(), 3);
        assert!(d.is_voided(&moshi, SeqRange::new(6, 7).unwrap()));
        assert!(!d.is_voided(&moshi, SeqRange::new(7, 9).unwrap()));
        assert!(!d.is_voided(&StreamId::new(DEV2, ""), SeqRange::new(1, 1).unwrap()));
        assert_eq!(d.covered_over_voids(&moshi, 4), 8, "5..=7 then 8..=8");
        assert_eq!(d.covered_over_voids(&moshi, 6), 8);
        assert_eq!(d.covered_over_voids(&moshi, 3), 3, "seq 4 is missing");
        assert_eq!(d.covered_over_voids(&moshi, 10), 10);
        assert_eq!(d.covered_over_voids(&moshi, 11), 13);
        assert_eq!(d.covered_over_voids(&StreamId::new(DEV1, ""), 4), 4);
    }
    // A range that is not `1 <= lo <= hi`, or a stream that is no scope id, does not decode.
    let mut bad = encode_entry(
        CLOUD,
        6,
        &void_item(
            DEV1,
            "moshi",
            SeqRange::new(3, 3).unwrap(),
            VoidReason::Invalid,
        ),
        &key(0xc0),
    );
    let at = bad.windows(2).position(|w| w == [3, 3]).unwrap();
    bad[at] = 4;
    assert_eq!(decode_entry(&bad), Err(ControlError::BadVoid));
    let star = encode_entry(
        CLOUD,
        6,
        &void_item(DEV1, "*", SeqRange::new(3, 3).unwrap(), VoidReason::Invalid),
        &key(0xc0),
    );
    assert_eq!(decode_entry(&star), Err(ControlError::BadVoid));
}

/// The golden void entry of docs/wire-format.md section 4.8.
#[test]
fn a_void_entry_emits_its_golden_bytes() {
    let bytes = encode_entry(
        CLOUD,
        7,
        &void_item(
            DEV1,
            "moshi",
            SeqRange::new(5, 7).unwrap(),
            VoidReason::OutsideGrant,
        ),
        &key(0xc0),
    );
    let body = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0 07 03 01010101010101010101010101010101 \
                05 6d6f736869 05 07 00";
    let body = hex::decode(body.replace(' ', "")).unwrap();
    assert_eq!(&bytes[..body.len()], &body[..]);
    assert_eq!(bytes.len(), body.len() + 64);
    assert_eq!(
        encode_entry(
            CLOUD,
            7,
            &void_item(
                DEV1,
                "moshi",
                SeqRange::new(5, 7).unwrap(),
                VoidReason::OutsideGrant
            ),
            &key(0xc0),
        ),
        bytes,
        "deterministic signature"
    );
    let e = decode_entry(&bytes).unwrap();
    e.verify(key(0xc0).public()).unwrap();
}

/// A tenant is strict once its cloud says so (docs/design.md section 11); a hub's word on it
/// counts for nothing.
#[test]
fn only_a_clouds_strict_entry_makes_the_tenant_strict() {
    let strict = |writer: SiteId, wkey: u8, seq: u64| {
        decode_entry(&encode_entry(writer, seq, &ControlItem::Strict, &key(wkey))).unwrap()
    };
    let mut d = Directory::new([cloud_root()]);
    assert!(d.admit(stream()).is_empty());
    assert!(!d.is_strict());
    assert!(d.admit(vec![strict(HUB, 0x40, 2)]).is_empty());
    assert!(
        !d.is_strict(),
        "a hub's entry is taken into its stream, given no weight"
    );
    assert!(d.admit(vec![strict(CLOUD, 0xc0, 3)]).is_empty());
    assert!(d.is_strict());
    // Whatever the order entries arrive in.
    let mut later = Directory::new([cloud_root()]);
    let mut all = stream();
    all.insert(0, strict(CLOUD, 0xc0, 3));
    assert!(later.admit(all).is_empty());
    assert!(later.is_strict());
}

/// The golden strict entry of docs/wire-format.md section 4.8.
#[test]
fn a_strict_entry_emits_its_golden_bytes() {
    let bytes = encode_entry(CLOUD, 8, &ControlItem::Strict, &key(0xc0));
    let body = hex::decode("c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0 08 07".replace(' ', "")).unwrap();
    assert_eq!(&bytes[..body.len()], &body[..]);
    assert_eq!(bytes.len(), body.len() + 64);
    assert_eq!(
        encode_entry(CLOUD, 8, &ControlItem::Strict, &key(0xc0)),
        bytes,
        "deterministic signature"
    );
    let e = decode_entry(&bytes).unwrap();
    assert_eq!(e.item, ControlItem::Strict);
    e.verify(key(0xc0).public()).unwrap();
    // No fields: a byte after the tag is a trailing byte where the signature starts.
    let mut long = body.clone();
    long.push(0);
    long.extend_from_slice(&bytes[body.len()..]);
    assert_eq!(decode_entry(&long), Err(ControlError::TrailingBytes));
}

/// A cloud restored behind its peers takes a new origin (DESIGN section 11, "Durability"): an
/// entry of its stream binds the new site to its own key as a cloud. Every peer then verifies the
/// new origin's batches with that key, knows it as the cloud (it may write `down` tables), and
/// treats the earlier origin as retired, whatever order the entries arrive in. A site bound to
/// another key, or a hub's word, retires nothing.
#[test]
fn a_new_origin_the_cloud_binds_to_its_own_key_retires_the_one_before() {
    const NEXT: SiteId = SiteId([0xc1; 16]);
    const THIRD: SiteId = SiteId([0xc2; 16]);
    let all = [
        entry(CLOUD, 0xc0, 1, HUB, 0x40, PeerRole::Hub),
        entry(CLOUD, 0xc0, 2, NEXT, 0xc0, PeerRole::Cloud),
        // A hub's word binds no cloud.
        entry(HUB, 0x40, 1, THIRD, 0xc0, PeerRole::Cloud),
    ];
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let mut d = Directory::new([cloud_root()]);
        let left = d.admit(order.iter().map(|&i| all[i].clone()).collect());
        assert!(left.is_empty(), "{order:?}: {left:?}");
        assert_eq!(d.key_of(&NEXT), Some(*key(0xc0).public()));
        assert!(d.is_cloud(&NEXT));
        assert!(d.is_retired(&CLOUD), "{order:?}");
        assert!(!d.is_retired(&NEXT) && !d.is_retired(&THIRD) && !d.is_retired(&HUB));
        assert!(!d.is_cloud(&THIRD));
    }
    // A second restore: the origin before the latest is retired too.
    let mut d = Directory::new([cloud_root()]);
    let left = d.admit(vec![
        entry(CLOUD, 0xc0, 1, NEXT, 0xc0, PeerRole::Cloud),
        entry(CLOUD, 0xc0, 2, THIRD, 0xc0, PeerRole::Cloud),
    ]);
    assert!(left.is_empty(), "{left:?}");
    assert!(d.is_retired(&CLOUD) && d.is_retired(&NEXT) && !d.is_retired(&THIRD));
    // A cloud bound under another key is another cloud's: nothing retires.
    let mut d = Directory::new([cloud_root()]);
    assert!(d
        .admit(vec![entry(CLOUD, 0xc0, 1, NEXT, 0xc1, PeerRole::Cloud)])
        .is_empty());
    assert!(!d.is_retired(&CLOUD) && !d.is_retired(&NEXT));
}
