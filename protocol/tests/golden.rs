//! Golden bytes for every session message and for a small batch: construct, emit, parse, round
//! trip. The same bytes are the worked examples of `docs/wire-format.md`; change both together,
//! and only with a new protocol version or batch format (see "Versioning" there).

use outpost_protocol::batch::codec::{decode, encode, Limits};
use outpost_protocol::batch::{
    CellChange, CellPayload, ColumnSchema, Compression, RowChange, TableChanges, TableSchema,
};
use outpost_protocol::frame::encode_message;
use outpost_protocol::id_range::{IdGrant, IdRange, IdRequest, RequestId};
use outpost_protocol::message::{
    Bytes, Covered, Drain, ErrorCode, Hello, Message, PeerRole, PushAgainReason, SessionId,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, StreamId, Value, VersionVector};

const MAX: usize = 1 << 20;
const SESSION: SessionId = SessionId([0x44; 16]);

fn vector() -> VersionVector {
    let mut v = VersionVector::new();
    v.set(SiteId([0x33; 16]).into(), 5);
    v.set(StreamId::new(SiteId([0x33; 16]), "moshi"), 3);
    v
}

fn golden() -> Vec<(Message, &'static str)> {
    vec![
        (
            Message::Hello(Hello {
                protocol_version: 2,
                site: SiteId([0x11; 16]),
                role: PeerRole::Device,
                fingerprint: [0x22; 32],
                wall_clock_ms: 1_760_000_000_000,
                vector: vector(),
                session: SESSION,
                control: {
                    let mut c = outpost_protocol::ControlVector::new();
                    c.set(SiteId([0xc0; 16]), 2);
                    c
                },
                drains: vec![Drain {
                    scope: "arusha".into(),
                    last: 7,
                }],
            }),
            "00 02 11111111111111111111111111111111 00 \
             2222222222222222222222222222222222222222222222222222222222222222 \
             8080b3c19c33 02 33333333333333333333333333333333 00 05 \
             33333333333333333333333333333333 05 6d6f736869 03 \
             44444444444444444444444444444444 01 c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0 02 \
             01 06 617275736861 07",
        ),
        (
            Message::Push {
                session: SESSION,
                batch: Bytes(b"OPB\x01".to_vec()),
            },
            "01 44444444444444444444444444444444 04 4f504201",
        ),
        (
            Message::Commit { session: SESSION },
            "02 44444444444444444444444444444444",
        ),
        (
            Message::Ack {
                session: SESSION,
                covered: vec![Covered {
                    origin: SiteId([0x33; 16]),
                    scope: "moshi".into(),
                    range: SeqRange::new(1, 5).unwrap(),
                    batch_sha256: [0x55; 32],
                }],
            },
            "03 44444444444444444444444444444444 01 33333333333333333333333333333333 \
             05 6d6f736869 01 05 \
             5555555555555555555555555555555555555555555555555555555555555555",
        ),
        (
            Message::PushAgain {
                session: SESSION,
                reason: PushAgainReason::DifferentContent,
            },
            "04 44444444444444444444444444444444 02",
        ),
        (
            Message::Pull { vector: vector() },
            "05 02 33333333333333333333333333333333 00 05 \
             33333333333333333333333333333333 05 6d6f736869 03",
        ),
        (
            Message::Chunk {
                batch: Bytes(b"OPB\x01".to_vec()),
            },
            "06 04 4f504201",
        ),
        (
            Message::PullDone { vector: vector() },
            "07 02 33333333333333333333333333333333 00 05 \
             33333333333333333333333333333333 05 6d6f736869 03",
        ),
        (Message::Notify, "08"),
        (
            Message::Error {
                code: ErrorCode::ConfigMismatch,
                message: "schema differs".into(),
            },
            "09 01 0e 736368656d612064696666657273",
        ),
        (Message::Bye, "0a"),
        (Message::Ping { nonce: 300 }, "0b ac02"),
        (Message::Pong { nonce: 300 }, "0c ac02"),
        (
            Message::IdRequest(IdRequest {
                request: RequestId([0x66; 16]),
                sequence: "patients".into(),
                count: 500,
                above: 0,
            }),
            "0d 66666666666666666666666666666666 08 70617469656e7473 f403 00",
        ),
        (
            Message::IdGrant(IdGrant {
                request: RequestId([0x66; 16]),
                sequence: "patients".into(),
                ranges: vec![
                    IdRange {
                        first: 1,
                        last: 100,
                    },
                    IdRange {
                        first: 201,
                        last: 600,
                    },
                ],
            }),
            "0e 66666666666666666666666666666666 08 70617469656e7473 02 01 64 c901 d804",
        ),
        (
            Message::PullSize {
                batches: 3,
                bytes: 70000,
            },
            "0f 03 f0a204",
        ),
        (
            Message::Control {
                entries: vec![Bytes(vec![0xaa, 0xbb])],
            },
            "10 01 02 aabb",
        ),
    ]
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

#[test]
fn every_message_emits_and_parses_its_golden_bytes() {
    let all = golden();
    assert_eq!(
        all.len() as u64,
        outpost_protocol::message::MESSAGE_TAGS,
        "a golden vector per message tag"
    );
    for (i, (message, hex)) in all.into_iter().enumerate() {
        let bytes = unhex(hex);
        assert_eq!(message.tag(), i as u64);
        assert_eq!(message.encode(), bytes, "emit {message:?}");
        assert_eq!(Message::decode(&bytes, MAX), Ok(message.clone()), "parse");
        // And through the framing layer: a whole frame.
        let mut framed = vec![0, bytes.len() as u8 + 1, 0];
        framed.extend_from_slice(&bytes);
        assert_eq!(encode_message(&bytes), framed);
    }
}

fn batch_tables() -> Vec<TableSchema> {
    let col = |name: &str, decl: &str, strategy, not_null| ColumnSchema {
        name: name.into(),
        decl_type: decl.into(),
        strategy,
        not_null,
    };
    vec![TableSchema {
        // Rows get their scope from `name` (a scoped table; tag 0, column 1).
        scope: Some(outpost_protocol::scope::ScopeColumn::Column(1)),
        name: "t".into(),
        columns: vec![
            col("id", "TEXT", Strategy::Lww, true),
            col("name", "TEXT", Strategy::Lww, false),
            col("n", "INTEGER", Strategy::Counter, false),
        ],
        primary_key: vec![0],
        foreign_keys: vec![],
    }]
}

fn batch_changes() -> Vec<TableChanges> {
    let hlc = Hlc::new(1_760_000_000_000, 0);
    vec![TableChanges {
        credit: None,
        table: 0,
        rows: vec![
            RowChange {
                key: vec![Value::Text("0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4f5".into())],
                existence: 1,
                cells: vec![
                    CellChange {
                        column: 0,
                        hlc,
                        payload: CellPayload::Value(Value::Text("Amina".into())),
                    },
                    CellChange {
                        column: 1,
                        hlc,
                        payload: CellPayload::Counter(3),
                    },
                ],
            },
            RowChange {
                key: vec![Value::Text("0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4f6".into())],
                existence: 2,
                cells: vec![],
            },
        ],
    }]
}

/// The batch format 2 golden vector (docs/wire-format.md, "Batches"): the clear header, the
/// signature slot (zeros: unsigned), then the body as sent (payload header and raw body).
const GOLDEN_BATCH: &str = "\
    4f5042 02 \
    01010101010101010101010101010101 00 01 02 00 00 00 80808080cc85f2cc01 \
    6b 106f5032506726709b4483ef58f63e2f5076f60b110260768f2cad04ecb2c1e2 \
    00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000 \
    80808080cc85f2cc01 \
    01 01 74 03 \
      02 6964 04 54455854 00 01 \
      04 6e616d65 04 54455854 00 00 \
      01 6e 07 494e5445474552 02 00 \
      01 00 00 01 00 01 \
    00 34 \
    01 00 02 \
      16 0f1e2d3c4b5a46978879a0b1c2d3e4f5 8080e682b966 00 2b 416d696e61 06 \
      22 0f1e2d3c4b5a46978879a0b1c2d3e4f6 00";

/// The golden batch signed with the secret scalar `42 42 .. 42` (RFC 6979: the same every run).
const GOLDEN_SIGNATURE: &str = "\
    43f9a335d1c0dfceb7536d010ada20863425c9478fce96d0efce32e821791da2\
    567f7af41b065ab55e454e49b0a3dfb4e688e540438ae0b7f7b14893895730fb";

#[test]
fn a_small_batch_emits_and_parses_its_golden_bytes() {
    let bytes = unhex(GOLDEN_BATCH);
    let emitted = encode(
        SiteId([0x01; 16]),
        SeqRange::new(1, 2).unwrap(),
        batch_tables(),
        &batch_changes(),
        Compression::None,
    );
    assert_eq!(hex::encode(&emitted), hex::encode(&bytes));
    let batch = decode(&bytes, &Limits::default()).unwrap();
    assert_eq!(batch.tables, batch_changes());
    assert_eq!(batch.header.tables, batch_tables());
    assert_eq!(batch.header.body_len, 52);
    assert_eq!(batch.header.base_hlc, Hlc::new(1_760_000_000_000, 0));
    assert_eq!(batch.header.max_hlc, Hlc::new(1_760_000_000_000, 0));
    assert_eq!(batch.header.sent_len, 0x6b);
    assert_eq!(batch.header.signature, None);
}

#[test]
fn the_golden_batch_signs_to_its_golden_signature() {
    use outpost_protocol::batch::signature;
    use outpost_protocol::handshake::Keypair;
    let key = Keypair::from_secret(&[0x42; 32]).unwrap();
    let mut bytes = unhex(GOLDEN_BATCH);
    signature::sign(&mut bytes, &key).unwrap();
    let header = outpost_protocol::batch::codec::decode_header(&bytes, &Limits::default()).unwrap();
    assert_eq!(
        hex::encode(header.signature.unwrap()),
        GOLDEN_SIGNATURE.replace(' ', "")
    );
    signature::verify(&header, key.public()).unwrap();
}

#[test]
fn the_golden_batch_survives_deflate() {
    let emitted = encode(
        SiteId([0x01; 16]),
        SeqRange::new(1, 2).unwrap(),
        batch_tables(),
        &batch_changes(),
        Compression::Deflate,
    );
    let batch = decode(&emitted, &Limits::default()).unwrap();
    assert_eq!(batch.tables, batch_changes());
    // The payload header is the raw one but for the compression tag; the hash is of the body as
    // sent, so it differs.
    let raw = decode(&unhex(GOLDEN_BATCH), &Limits::default()).unwrap();
    assert_eq!(batch.header.body_len, raw.header.body_len);
    assert_ne!(batch.header.body_sha256, raw.header.body_sha256);
}

#[test]
fn malformed_messages_get_their_own_errors() {
    use outpost_protocol::message::MessageError as E;
    let hello = unhex(golden()[0].1);
    assert_eq!(Message::decode(&[], MAX), Err(E::Empty));
    assert_eq!(
        Message::decode(&[0x11], MAX),
        Err(E::UnknownTag { tag: 17 })
    );
    assert_eq!(
        Message::decode(&[0x08, 0x00], MAX),
        Err(E::TrailingBytes { count: 1 })
    );
    assert_eq!(Message::decode(&hello[..40], MAX), Err(E::Truncated));
    assert_eq!(
        Message::decode(&hello, 10),
        Err(E::TooLarge {
            len: hello.len(),
            max: 10
        })
    );
    // A batch length of 2^20 in a 3-byte message: refused before allocating.
    assert_eq!(
        Message::decode(&[0x06, 0x80, 0x80, 0x40], MAX),
        Err(E::Truncated)
    );
    assert_eq!(
        Message::decode(&unhex("09 01 02 c328"), MAX),
        Err(E::InvalidUtf8)
    );
    assert_eq!(
        Message::decode(&unhex("04 44444444444444444444444444444444 09"), MAX),
        Err(E::UnknownInnerTag)
    );
    assert_eq!(
        Message::decode(&unhex("05 01 33333333333333333333333333333333 00 00"), MAX),
        Err(E::InvalidField {
            what: "vector has a zero entry"
        })
    );
    // A stream whose scope is not a scope id (a space): no peer keys a cursor by it.
    assert_eq!(
        Message::decode(
            &unhex("05 01 33333333333333333333333333333333 03 612062 01"),
            MAX
        ),
        Err(E::InvalidField {
            what: "vector names a stream that is not a scope id"
        })
    );
    assert_eq!(
        Message::decode(&unhex("0b ac82 00"), MAX),
        Err(E::NonCanonical)
    );
    assert_eq!(
        Message::decode(&unhex("0b ffffffffffffffffff7f"), MAX),
        Err(E::BadVarint)
    );
}

#[test]
fn id_messages_with_impossible_fields_are_refused() {
    use outpost_protocol::message::MessageError as E;
    let field = |what| Err(E::InvalidField { what });
    let id = "66666666666666666666666666666666";
    // IdRequest: count 0, count above 1000000, an empty name, a name with a space.
    let request = |name: &str, count: &str| {
        unhex(&format!(
            "0d {id} {:02x} {} {count} 00",
            name.len(),
            hex::encode(name)
        ))
    };
    assert_eq!(
        Message::decode(&request("patients", "00"), MAX),
        field("id count is not between 1 and 1000000")
    );
    assert_eq!(
        Message::decode(&request("patients", "c1843d"), MAX),
        field("id count is not between 1 and 1000000")
    );
    assert_eq!(
        Message::decode(&request("", "01"), MAX),
        field("sequence name is empty")
    );
    assert_eq!(
        Message::decode(&request("a b", "01"), MAX),
        field("sequence name has a character other than A-Z a-z 0-9 _ . -")
    );
    assert!(Message::decode(&request("a-b.c_9", "01"), MAX).is_ok());
    // IdGrant: overlapping ranges, a range starting at 0, a reversed range.
    let grant = |ranges: &str| unhex(&format!("0e {id} 01 78 {ranges}"));
    assert_eq!(
        Message::decode(&grant("02 01 0a 0a 0c"), MAX),
        field("id ranges are not ascending and disjoint")
    );
    assert_eq!(
        Message::decode(&grant("01 00 05"), MAX),
        field("id range is empty or starts at 0")
    );
    assert_eq!(
        Message::decode(&grant("01 05 04"), MAX),
        field("id range is empty or starts at 0")
    );
    assert!(Message::decode(&grant("00"), MAX).is_ok(), "an empty grant");
}
