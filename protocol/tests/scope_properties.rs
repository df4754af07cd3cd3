//! Scopes as properties (issue 19's acceptance; docs/design.md section 10, invariants S2, S3,
//! S6, "One decision everywhere"):
//! - whatever order and however split a replica receives the control entries (grants of the
//!   cloud and of a hub, voided ranges), its directory decides every grant, every grant version
//!   and every voided range the same: replicas that hold the same entries judge every batch
//!   alike (S3);
//! - a relay's push session stores a device's batch exactly when the grant version it names
//!   holds its stream (or names none and the current grant does), the device still holds the
//!   scope or drains it no further than it declared, and the batch is the device's own, not a
//!   transfer and not `down`: nothing outside the pusher's grant is stored (S2), and nothing
//!   credited to another origin is (S6).

mod session_support;

use outpost_protocol::batch::codec::finish_batch_with;
use outpost_protocol::batch::{
    BatchFlags, BatchMeta, BodyWriter, Compression, Direction, TableSchema,
};
use outpost_protocol::control::{
    decode_entry, encode_entry, grant_item, key_item, void_item, ControlEntry, ControlItem,
    Directory, Root, VoidReason,
};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::{Bytes, Drain, Message, PeerRole, SessionId};
use outpost_protocol::scope::Scopes;
use outpost_protocol::session::ServerSession;
use outpost_protocol::{SeqRange, SiteId, StreamId};
use outpost_testkit::keys::signed;
use proptest::prelude::*;
use session_support::*;
use std::collections::BTreeMap;

const CLOUD: SiteId = SiteId([0xc0; 16]);
const HUB_SITE: SiteId = SiteId([0x40; 16]);
const DEVS: [SiteId; 3] = [SiteId([1; 16]), SiteId([2; 16]), SiteId([3; 16])];
const NAMES: [&str; 3] = ["a", "b", "c"];
const STREAMS: [&str; 3] = ["", "a", "b"];

fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32]).unwrap()
}

/// Every scope, or a non-empty subset of a, b, c.
fn scopes() -> impl Strategy<Value = Scopes> {
    prop_oneof![
        1 => Just(Scopes::All),
        4 => (1u8..8).prop_map(|mask| {
            let names: Vec<&str> = (0..3)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| NAMES[i])
                .collect();
            Scopes::parse(names).unwrap()
        }),
    ]
}

/// What a writer says after its key entries: a grant (site index: 0-2 devices, 3 the hub) or
/// a void (origin index, stream, lo, length).
#[derive(Clone, Debug)]
enum Said {
    Grant(usize, u64, Scopes),
    Void(usize, usize, u64, u64),
}

fn said() -> impl Strategy<Value = Said> {
    prop_oneof![
        3 => (0usize..4, 1u64..5, scopes()).prop_map(|(s, v, g)| Said::Grant(s, v, g)),
        1 => (0usize..3, 0usize..3, 1u64..10, 0u64..3)
            .prop_map(|(o, s, lo, n)| Said::Void(o, s, lo, n)),
    ]
}

fn site(i: usize) -> SiteId {
    if i == 3 {
        HUB_SITE
    } else {
        DEVS[i]
    }
}

/// The cloud binds the hub and device 0; the hub admits devices 1 and 2. Then each says what
/// it was given (a hub's voids and grants of itself are accepted into its stream and given no
/// weight, as any replica must).
fn streams(cloud: &[Said], hub: &[Said]) -> Vec<ControlEntry> {
    let mut out = Vec::new();
    let mut write = |writer: SiteId, wkey: u8, items: Vec<ControlItem>| {
        for (i, item) in items.iter().enumerate() {
            let bytes = encode_entry(writer, i as u64 + 1, item, &key(wkey));
            out.push(decode_entry(&bytes).unwrap());
        }
    };
    let item = |s: &Said| match s {
        Said::Grant(i, v, g) => grant_item(site(*i), *v, g.clone(), false),
        Said::Void(o, s, lo, n) => void_item(
            DEVS[*o],
            STREAMS[*s],
            SeqRange::new(*lo, lo + n).unwrap(),
            VoidReason::Invalid,
        ),
    };
    let mut c = vec![
        key_item(HUB_SITE, key(0x40).public(), PeerRole::Hub, false),
        key_item(DEVS[0], key(1).public(), PeerRole::Device, false),
    ];
    c.extend(cloud.iter().map(item));
    write(CLOUD, 0xc0, c);
    let mut h = vec![
        key_item(DEVS[1], key(2).public(), PeerRole::Device, false),
        key_item(DEVS[2], key(3).public(), PeerRole::Device, false),
    ];
    h.extend(hub.iter().map(item));
    write(HUB_SITE, 0x40, h);
    out
}

/// Everything the directory decides about grants and voids, in a comparable form.
fn decisions(d: &Directory) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..4 {
        let s = site(i);
        out.push(format!(
            "{i} now {:?}",
            d.grant_of(&s)
                .map(|g| (g.version, g.scopes.names(), g.granted_by))
        ));
        for v in 0..6 {
            out.push(format!(
                "{i} v{v} {:?}",
                d.grant_at(&s, v).map(Scopes::names)
            ));
        }
    }
    for o in DEVS {
        for s in STREAMS {
            let stream = StreamId::new(o, s);
            let reach: Vec<u64> = (0..14).map(|c| d.covered_over_voids(&stream, c)).collect();
            out.push(format!("{o} {s:?} {reach:?}"));
        }
    }
    out
}

/// Admits `entries` in the order of `keys` (entry i sorts by `keys[i % len]`), in `parts`
/// calls; entries a call could not place yet come again with the next, as a writer's stream
/// brings them again.
fn admit_shuffled(entries: &[ControlEntry], keys: &[u32], parts: usize) -> Directory {
    let mut order: Vec<(u32, usize)> = (0..entries.len())
        .map(|i| (keys[i % keys.len()], i))
        .collect();
    order.sort();
    let shuffled: Vec<ControlEntry> = order.iter().map(|&(_, i)| entries[i].clone()).collect();
    let mut d = Directory::new([Root {
        site: CLOUD,
        key: *key(0xc0).public(),
        role: PeerRole::Cloud,
    }]);
    let size = shuffled.len().div_ceil(parts.max(1)).max(1);
    let mut left: Vec<ControlEntry> = Vec::new();
    for chunk in shuffled.chunks(size) {
        left.extend(chunk.iter().cloned());
        left = d.admit(left).into_iter().map(|(e, _)| e).collect();
    }
    assert!(left.is_empty(), "every entry is accepted once all arrived");
    d
}

/// The batch `origin` signs of `stream`, `range`, under grant `version`, flagged as given.
fn pushed_batch(
    origin: SiteId,
    stream: &str,
    range: SeqRange,
    version: u64,
    transfer: bool,
    down: bool,
) -> Vec<u8> {
    let tables = vec![TableSchema {
        scope: None,
        name: "t".into(),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
    }];
    let writer = match transfer {
        true => BodyWriter::new_transfer(tables),
        false => BodyWriter::new(tables),
    }
    .unwrap();
    let meta = BatchMeta {
        stream: stream.into(),
        flags: BatchFlags {
            direction: if down {
                Direction::Down
            } else {
                Direction::Both
            },
            transfer,
        },
        key_epoch: 0,
        grant_version: version,
    };
    signed(finish_batch_with(writer, origin, range, &meta, Compression::None).unwrap())
}

/// One push a device tries: its own or another origin's, a stream, a grant version, the
/// transfer and `down` flags, how many seqs.
#[derive(Clone, Debug)]
struct Try {
    own: bool,
    stream: usize,
    version: u64,
    transfer: bool,
    down: bool,
    len: u64,
}

fn tries() -> impl Strategy<Value = Vec<Try>> {
    proptest::collection::vec(
        (
            prop::bool::weighted(0.85),
            0usize..3,
            0u64..5,
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
            1u64..3,
        )
            .prop_map(|(own, stream, version, transfer, down, len)| Try {
                own,
                stream,
                version,
                transfer,
                down,
                len,
            }),
        1..24,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn directory_decisions_do_not_depend_on_arrival_order(
        cloud in proptest::collection::vec(said(), 0..10),
        hub in proptest::collection::vec(said(), 0..6),
        keys_a in proptest::collection::vec(any::<u32>(), 1..40),
        keys_b in proptest::collection::vec(any::<u32>(), 1..40),
        parts in 1usize..4,
    ) {
        let entries = streams(&cloud, &hub);
        let in_order = admit_shuffled(&entries, &[0], 1);
        let a = admit_shuffled(&entries, &keys_a, parts);
        let b = admit_shuffled(&entries, &keys_b, 1);
        prop_assert_eq!(decisions(&in_order), decisions(&a));
        prop_assert_eq!(decisions(&in_order), decisions(&b));
        // A hub never voids: only the cloud's voids count.
        let cloud_voids = cloud.iter().filter(|s| matches!(s, Said::Void(..))).count();
        prop_assert!(in_order.void_count() <= cloud_voids);
    }

    #[test]
    fn a_relay_stores_a_devices_batch_exactly_when_its_grant_version_holds_it(
        now in scopes(),
        versions in proptest::collection::btree_map(1u64..5, scopes(), 0..4),
        declared in proptest::collection::vec((1usize..3, 0u64..6), 0..2),
        pushes in tries(),
    ) {
        let mut store = MemServer::default();
        for (v, g) in &versions {
            store.grant_versions.insert((DEVICE, *v), g.clone());
        }
        let drains: Vec<Drain> = declared
            .iter()
            .map(|&(s, last)| Drain { scope: STREAMS[s].into(), last })
            .collect();
        let mut covered: BTreeMap<(SiteId, usize), u64> = BTreeMap::new();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for (n, t) in pushes.iter().enumerate() {
            let origin = if t.own { DEVICE } else { SiteId([0x22; 16]) };
            let lo = covered.get(&(origin, t.stream)).copied().unwrap_or(0) + 1;
            let range = SeqRange::new(lo, lo + t.len - 1).unwrap();
            let stream = STREAMS[t.stream];
            let bytes = pushed_batch(origin, stream, range, t.version, t.transfer, t.down);

            // The rule, stated independently of the session's code.
            let written_within = stream.is_empty()
                || match t.version {
                    0 => now.contains(stream),
                    v => versions.get(&v).is_some_and(|g| g.contains(stream)),
                };
            let drains_ok = stream.is_empty()
                || now.contains(stream)
                || drains
                    .iter()
                    .rev()
                    .find(|d| d.scope == stream)
                    .is_none_or(|d| range.hi <= d.last);
            let allowed = t.own && !t.transfer && !t.down && written_within && drains_ok;

            let mut config = server_config();
            config.peer_grant = now.clone();
            let mut server = ServerSession::<MemServer>::new(config);
            let session = SessionId([n as u8 + 1; 16]);
            let hello = device_hello(session, drains.clone());
            server.handle(hello, 0, &mut store).unwrap();
            while server.poll(&mut store).unwrap().is_some() {}
            let pushed = server
                .handle(Message::Push { session, batch: Bytes(bytes.clone()) }, 0, &mut store)
                .and_then(|()| server.handle(Message::Commit { session }, 0, &mut store));
            let mut acked = false;
            if pushed.is_ok() {
                while let Some(m) = server.poll(&mut store).unwrap() {
                    acked |= matches!(m, Message::Ack { .. });
                }
            }
            prop_assert_eq!(acked, allowed, "push {} {:?}: {:?}", n, t, pushed);
            if allowed {
                covered.insert((origin, t.stream), range.hi);
                expected.push(bytes);
            }
        }
        prop_assert_eq!(store.batches, expected);
    }
}
