//! Property tests: every value, batch and message round trips; no decoder panics on any input.

use outpost_protocol::batch::codec::{decode, decode_header, encode, verify, Limits};
use outpost_protocol::batch::{
    CellChange, CellPayload, ColumnSchema, Compression, RowChange, TableChanges, TableSchema,
};
use outpost_protocol::frame::{split_message, FrameDecoder, MessageDecoder, Reassembler};
use outpost_protocol::message::{
    Bytes, Covered, ErrorCode, Hello, Message, PeerRole, PushAgainReason, SessionId,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy as Merge, StreamId, Value, VersionVector};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(-(1 << 60)),
            Just(1 << 60)
        ]
        .prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("SQLite has no NaN", |f| !f.is_nan())
            .prop_map(Value::Real),
        ".{0,40}".prop_map(Value::Text),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(Value::Text),
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
            .prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
    ]
}

fn hlc() -> impl Strategy<Value = Hlc> {
    prop_oneof![
        any::<u64>().prop_map(Hlc::from_u64),
        (1_700_000_000_000u64..1_700_000_100_000, 0u16..5).prop_map(|(m, c)| Hlc::new(m, c)),
    ]
}

const STRATEGIES: [Merge; 4] = [Merge::Lww, Merge::RowLww, Merge::Counter, Merge::Review];

/// Tables: a key of 1-2 columns and 0-70 value columns with random strategies.
fn tables() -> impl Strategy<Value = Vec<TableSchema>> {
    proptest::collection::vec(
        (1usize..3, proptest::collection::vec(0usize..4, 0..70)),
        1..3,
    )
    .prop_map(|ts| {
        ts.into_iter()
            .enumerate()
            .map(|(i, (keys, strategies))| {
                let mut columns: Vec<ColumnSchema> = (0..keys)
                    .map(|k| ColumnSchema {
                        name: format!("k{k}"),
                        decl_type: "TEXT".into(),
                        strategy: Merge::Lww,
                        not_null: true,
                    })
                    .collect();
                columns.extend(strategies.iter().enumerate().map(|(c, &s)| ColumnSchema {
                    name: format!("c{c}"),
                    decl_type: String::new(),
                    strategy: STRATEGIES[s],
                    not_null: false,
                }));
                TableSchema {
                    scope: None,
                    name: format!("t{i}"),
                    columns,
                    // Keys last, to exercise value-column numbering around key columns.
                    primary_key: (0..keys as u16).rev().collect(),
                    foreign_keys: vec![],
                }
            })
            .collect()
    })
}

fn payload(strategy: Merge) -> BoxedStrategy<CellPayload> {
    match strategy {
        Merge::Lww | Merge::RowLww => value().prop_map(CellPayload::Value).boxed(),
        Merge::Counter => any::<i64>().prop_map(CellPayload::Counter).boxed(),
        Merge::Review => (
            value(),
            proptest::collection::vec((any::<[u8; 16]>().prop_map(SiteId), hlc()), 0..3),
        )
            .prop_map(|(value, context)| CellPayload::Review { value, context })
            .boxed(),
    }
}

fn row(table: &TableSchema) -> BoxedStrategy<RowChange> {
    let value_strategies: Vec<Merge> = table
        .value_columns()
        .map(|c| table.columns[c as usize].strategy)
        .collect();
    let keys = table.primary_key.len();
    let n = value_strategies.len();
    (
        proptest::collection::vec(value(), keys),
        any::<u64>(),
        proptest::collection::btree_set(0..n.max(1) as u16, 0..=n.min(8)),
        hlc(),
        any::<bool>(),
    )
        .prop_flat_map(move |(key, existence, cols, base, mixed)| {
            let cols: Vec<u16> = cols.into_iter().filter(|&c| (c as usize) < n).collect();
            let cells: Vec<BoxedStrategy<CellChange>> = cols
                .iter()
                .map(|&c| {
                    let h = if mixed {
                        hlc().boxed()
                    } else {
                        Just(base).boxed()
                    };
                    (payload(value_strategies[c as usize]), h)
                        .prop_map(move |(payload, hlc)| CellChange {
                            column: c,
                            hlc,
                            payload,
                        })
                        .boxed()
                })
                .collect();
            (Just(key), Just(existence), cells).prop_map(|(key, existence, cells)| RowChange {
                key,
                existence,
                cells,
            })
        })
        .boxed()
}

fn batch() -> impl Strategy<Value = (Vec<TableSchema>, Vec<TableChanges>)> {
    tables().prop_flat_map(|tables| {
        let groups: Vec<BoxedStrategy<TableChanges>> = (0..tables.len())
            .map(|i| {
                proptest::collection::vec(row(&tables[i]), 0..6)
                    .prop_map(move |rows| TableChanges {
                        credit: None,
                        table: i as u16,
                        rows,
                    })
                    .boxed()
            })
            .collect();
        (Just(tables), groups)
    })
}

fn vector() -> impl Strategy<Value = VersionVector> {
    proptest::collection::btree_map((any::<[u8; 16]>(), 0usize..3), 1u64.., 0..4).prop_map(|m| {
        let mut v = VersionVector::new();
        for ((s, scope), n) in m {
            v.set(StreamId::new(SiteId(s), ["", "moshi", "a.b-c_9"][scope]), n);
        }
        v
    })
}

fn message() -> impl Strategy<Value = Message> {
    let session = any::<[u8; 16]>().prop_map(SessionId);
    let bytes = proptest::collection::vec(any::<u8>(), 0..100).prop_map(Bytes);
    prop_oneof![
        (
            any::<u16>(),
            any::<[u8; 16]>(),
            0..3usize,
            any::<[u8; 32]>(),
            any::<u64>(),
            vector(),
            session.clone(),
            proptest::collection::vec(("[a-z][a-z0-9_.-]{0,10}", any::<u64>()), 0..4)
        )
            .prop_map(
                |(v, site, role, fingerprint, wall, vector, session, drains)| {
                    Message::Hello(Hello {
                        protocol_version: v,
                        site: SiteId(site),
                        role: [PeerRole::Device, PeerRole::Hub, PeerRole::Cloud][role],
                        fingerprint,
                        wall_clock_ms: wall,
                        vector,
                        session,
                        control: outpost_protocol::ControlVector::new(),
                        regain: drains
                            .iter()
                            .map(|(scope, since)| outpost_protocol::message::Regain {
                                scope: scope.clone(),
                                since: *since,
                            })
                            .collect(),
                        keys: drains
                            .iter()
                            .map(|(scope, _)| outpost_protocol::message::SealedKeys {
                                site: SiteId(site),
                                envelope: Bytes(scope.as_bytes().to_vec()),
                            })
                            .collect(),
                        drains: drains
                            .into_iter()
                            .map(|(scope, last)| outpost_protocol::message::Drain { scope, last })
                            .collect(),
                    })
                }
            ),
        (session.clone(), bytes.clone())
            .prop_map(|(session, batch)| Message::Push { session, batch }),
        session
            .clone()
            .prop_map(|session| Message::Commit { session }),
        (
            session.clone(),
            proptest::collection::vec(
                (any::<[u8; 16]>(), 1u64..1000, 0u64..1000, any::<[u8; 32]>()),
                0..4
            )
        )
            .prop_map(|(session, c)| Message::Ack {
                session,
                covered: c
                    .into_iter()
                    .map(|(o, lo, len, h)| Covered {
                        origin: SiteId(o),
                        // The unscoped stream or a scope, by the range's parity.
                        scope: if lo % 2 == 0 {
                            String::new()
                        } else {
                            "moshi".into()
                        },
                        range: SeqRange::new(lo, lo + len).unwrap(),
                        batch_sha256: h,
                    })
                    .collect(),
            }),
        (session.clone(), 0..4usize).prop_map(|(session, r)| Message::PushAgain {
            session,
            reason: [
                PushAgainReason::UnknownSession,
                PushAgainReason::SessionExpired,
                PushAgainReason::DifferentContent,
                PushAgainReason::Gap
            ][r],
        }),
        vector().prop_map(|vector| Message::Pull { vector }),
        bytes.prop_map(|batch| Message::Chunk { batch }),
        vector().prop_map(|vector| Message::PullDone { vector }),
        Just(Message::Notify),
        (0..13usize, ".{0,30}").prop_map(|(c, message)| Message::Error {
            code: [
                ErrorCode::UnsupportedVersion,
                ErrorCode::ConfigMismatch,
                ErrorCode::SiteIdReused,
                ErrorCode::Unauthorized,
                ErrorCode::BadMessage,
                ErrorCode::BadBatch,
                ErrorCode::TooLarge,
                ErrorCode::Busy,
                ErrorCode::Internal,
                ErrorCode::ForeignOrigin,
                ErrorCode::BadSignature,
                ErrorCode::KeyUnknown,
                ErrorCode::ClockAhead
            ][c],
            message,
        }),
        Just(Message::Bye),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
    ]
}

proptest! {
    #[test]
    fn batches_round_trip((tables, changes) in batch(), deflate in any::<bool>()) {
        let compression = if deflate { Compression::Deflate } else { Compression::None };
        let origin = SiteId([3; 16]);
        let range = SeqRange::new(1, 9).unwrap();
        let bytes = encode(origin, range, tables.clone(), &changes, compression);
        let decoded = decode(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(&decoded.tables, &changes);
        prop_assert_eq!(decoded.header.tables, tables);
    }

    #[test]
    fn values_round_trip_bit_exactly(v in value()) {
        let tables = vec![TableSchema { scope: None,
            name: "t".into(),
            columns: ["k", "v"].iter().map(|n| ColumnSchema {
                name: (*n).into(), decl_type: String::new(), strategy: Merge::Lww, not_null: false,
            }).collect(),
            primary_key: vec![0],
            foreign_keys: vec![],
        }];
        let changes = vec![TableChanges { credit: None, table: 0, rows: vec![RowChange {
            key: vec![v.clone()],
            existence: 1,
            cells: vec![CellChange { column: 0, hlc: Hlc::new(1, 1), payload: CellPayload::Value(v.clone()) }],
        }]}];
        let bytes = encode(SiteId([0; 16]), SeqRange::new(1, 1).unwrap(), tables, &changes, Compression::None);
        let decoded = decode(&bytes, &Limits::default()).unwrap();
        let CellPayload::Value(got) = &decoded.tables[0].rows[0].cells[0].payload else {
            panic!("not a value");
        };
        // Value's PartialEq compares reals by total order; compare bits too.
        if let (Value::Real(a), Value::Real(b)) = (&v, got) {
            prop_assert_eq!(a.to_bits(), b.to_bits());
        }
        prop_assert_eq!(got, &v);
        prop_assert_eq!(&decoded.tables[0].rows[0].key[0], &v);
    }

    #[test]
    fn messages_round_trip_through_frames(m in message(), max_payload in 38usize..300) {
        let bytes = m.encode();
        prop_assert_eq!(Message::decode(&bytes, 1 << 20), Ok(m.clone()));
        let mut r = Reassembler::default();
        let mut out = None;
        for f in split_message(&bytes, max_payload) {
            prop_assert!(f.len() <= max_payload);
            if let Some(done) = r.push(&f).unwrap() {
                out = Some(done);
            }
        }
        prop_assert_eq!(out, Some(bytes));
    }

    #[test]
    fn batch_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let limits = Limits::default();
        let _ = decode_header(&bytes, &limits);
        let _ = verify(&bytes, &limits);
        let _ = decode(&bytes, &limits);
        let mut prefixed = b"OPB\x01".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = decode(&prefixed, &limits);
    }

    #[test]
    fn damaged_batches_never_panic_and_damaged_bodies_are_refused(
        (tables, changes) in batch(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encode(SiteId([3; 16]), SeqRange::new(1, 9).unwrap(), tables, &changes, Compression::None);
        let body_len = decode_header(&bytes, &Limits::default()).unwrap().body_len as usize;
        let body_start = bytes.len() - body_len;
        let mut damaged = bytes.clone();
        for (i, x) in &flips {
            let i = i.index(damaged.len());
            damaged[i] ^= x;
            // Never panics, wherever the damage is.
            let _ = decode(&damaged, &Limits::default());
        }
        // Damage to the body is always caught (the header is protected by the secure channel
        // and by the hash the acks carry, not by the batch itself).
        if body_len > 0 {
            let mut damaged_body = bytes.clone();
            let (i, x) = flips[0];
            damaged_body[body_start + i.index(body_len)] ^= x;
            prop_assert!(decode(&damaged_body, &Limits::default()).is_err());
        }
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(decode(truncated, &Limits::default()).is_err());
    }

    #[test]
    fn message_and_frame_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&bytes, 1 << 20);
        let mut d = FrameDecoder::new();
        let mut input = &bytes[..];
        while let Ok(Some(_)) = d.decode(&mut input) {}
        let _ = d.finish();
        let mut r = Reassembler::new(1000);
        let _ = r.push(&bytes);
        let mut m = MessageDecoder::new(1000);
        let mut input = &bytes[..];
        while let Ok(Some(_)) = m.decode(&mut input) {}
    }
}
