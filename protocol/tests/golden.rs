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
    Bytes, Covered, Drain, ErrorCode, Hello, Message, PeerRole, PushAgainReason, Regain,
    SealedKeys, SessionId,
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
                regain: vec![Regain {
                    scope: "moshi".into(),
                    since: 2,
                }],
                keys: vec![SealedKeys {
                    site: SiteId([0x55; 16]),
                    envelope: Bytes(vec![0xaa, 0xbb]),
                }],
            }),
            "00 02 11111111111111111111111111111111 00 \
             2222222222222222222222222222222222222222222222222222222222222222 \
             8080b3c19c33 02 33333333333333333333333333333333 00 05 \
             33333333333333333333333333333333 05 6d6f736869 03 \
             44444444444444444444444444444444 01 c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0 02 \
             01 06 617275736861 07 01 05 6d6f736869 02 \
             01 55555555555555555555555555555555 02 aabb",
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
        (
            Message::Keys {
                keys: vec![SealedKeys {
                    site: SiteId([0x55; 16]),
                    envelope: Bytes(vec![0xaa, 0xbb]),
                }],
            },
            "11 01 55555555555555555555555555555555 02 aabb",
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
        Message::decode(&[0x12], MAX),
        Err(E::UnknownTag { tag: 18 })
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

// Sealed batches and key envelopes (issue 20; docs/wire-format.md, "Sealed batches").

/// The tenant's digest key of the sealed goldens.
const GOLDEN_DIGEST_KEY: [u8; 32] = [0x5d; 32];
/// The scope `moshi`'s digest under [`GOLDEN_DIGEST_KEY`]: its stream name on the wire.
const GOLDEN_MOSHI: &str = "6624553d243a6b54ebe6b1a776340f6a";

/// The golden batch's changes in the stream of `moshi` (by digest), written under grant version
/// 3, sealed under epoch 1's key `5e 5e .. 5e` with the nonce `4e 4e .. 4e`, signed with the
/// secret scalar `42 42 .. 42`.
/// The clear header names the scope by its digest, epoch 1 and the sealed body's length (141:
/// nonce, `05 "moshi"` and the 107 bytes, tag) and hash; the body as sent is the nonce, the
/// scope name and the golden batch's body as sent encrypted, and the tag.
const GOLDEN_SEALED: &str = "\
    4f5042 02 \
    01010101010101010101010101010101 \
    20 3636323435353364323433613662353465626536623161373736333430663661 \
    010200 01 03 80808080cc85f2cc01 8d01 \
    c873fc203bc53d3b416556a7c88d21317814932eb1d84f849599d3a8448b8f88 \
    329f571de9c071d968461da3a6521875ae1a7c7f5086a8095c2ce49f5e49c818 \
    6951c88c6665347f236ba7726e2f31adef352ac6d0eca9cd9c229c51cf9b3672 \
    4e4e4e4e4e4e4e4e4e4e4e4e \
    1015d5dbada7cc9641a24fe87692b3b7560601ca06c18af82c9f017277586667 \
    9fef3d70d12ea43588234d5f75fd12e3e9bb9b6c4080a6f1b8b8ec175dd30853 \
    5f098bb6d2805fb2c4d985cf5603e5c45249775052e55a43ab3b3e8a7783692b \
    26537ecef67cef0466eabaab0aa62a45ea \
    29c8672ba42713fee674a9b74ed4227a";

/// [`golden_key_set`] wrapped to the device whose secret scalar is `31 31 .. 31`, with the
/// ephemeral secret scalar `55 55 .. 55`: magic, version, the ephemeral public key, then the
/// contents (138 bytes: digest key, count 2, two entries of 52 bytes) encrypted, and the tag.
const GOLDEN_ENVELOPE: &str = "\
    4f504b 01 \
    0457e977f6db7e33c3fe7acf2842ed987009caf56d458682fca447b7d3d762ab34\
    c5ab3770ba573bdff5414065640ffb5b346dfa84dec4db4d68e5f59cc471c2ec \
    6c8641bb614cf488784ed1fc0e83f34b0885fdd2b40c80ded7e0157479f2f801\
    106b5de36d6befc114514aa66930541409a2ace0301fb67704fa56f618bb9b36\
    9788df733e16c142cc58a3fd3040222ed623845b1ad017d8e34a8609d7ff74fc\
    b0549ea589e3198a93b5319235931d5dec21c9ba6036657938ebb91ef549e9d5\
    5eefb10d9b18bce848bf \
    6d97952d9048dffd7d0235f0ddc4bef4";

fn golden_scope_key() -> outpost_protocol::seal::ScopeKey {
    outpost_protocol::seal::ScopeKey::new(1, [0x5e; 32]).unwrap()
}

fn golden_sealed_batch() -> Vec<u8> {
    use outpost_protocol::batch::{codec, signature, BatchMeta, BodyWriter};
    use outpost_protocol::seal::{seal_batch, DigestKey};
    let stream = String::from("moshi");
    let mut w = BodyWriter::new(batch_tables()).unwrap();
    for group in batch_changes() {
        w.begin_table(group.table).unwrap();
        for row in &group.rows {
            w.push_row(row).unwrap();
        }
    }
    let meta = BatchMeta {
        stream,
        grant_version: 3,
        ..BatchMeta::default()
    };
    let plain = codec::finish_batch_with(
        w,
        SiteId([0x01; 16]),
        SeqRange::new(1, 2).unwrap(),
        &meta,
        Compression::None,
    )
    .unwrap();
    let dk = DigestKey::from_bytes(GOLDEN_DIGEST_KEY);
    let mut sealed = seal_batch(&plain, &golden_scope_key(), &dk, [0x4e; 12]).unwrap();
    let key = outpost_protocol::handshake::Keypair::from_secret(&[0x42; 32]).unwrap();
    signature::sign(&mut sealed, &key).unwrap();
    sealed
}

fn golden_key_set() -> outpost_protocol::seal::envelope::KeySet {
    use outpost_protocol::seal::envelope::{KeyEntry, KeySet};
    use outpost_protocol::seal::{DigestKey, ScopeKey};
    let moshi = DigestKey::from_bytes(GOLDEN_DIGEST_KEY).digest("moshi");
    KeySet {
        digest_key: DigestKey::from_bytes(GOLDEN_DIGEST_KEY),
        entries: vec![
            KeyEntry {
                scope: moshi,
                key: golden_scope_key(),
            },
            KeyEntry {
                scope: moshi,
                key: ScopeKey::new(2, [0x5f; 32]).unwrap(),
            },
        ],
    }
}

#[test]
fn a_scope_digest_is_its_golden_stream_name() {
    use outpost_protocol::seal::{DigestKey, ScopeDigest};
    let d = DigestKey::from_bytes(GOLDEN_DIGEST_KEY).digest("moshi");
    assert_eq!(d.to_stream(), GOLDEN_MOSHI);
    assert_eq!(GOLDEN_MOSHI.parse::<ScopeDigest>(), Ok(d));
    // HMAC-SHA256(key, "moshi"), first 16 bytes.
    let mac = outpost_protocol::seal::primitives::hmac_sha256(&GOLDEN_DIGEST_KEY, b"moshi");
    assert_eq!(hex::encode(&mac[..16]), GOLDEN_MOSHI);
}

#[test]
fn a_sealed_batch_emits_and_opens_its_golden_bytes() {
    use outpost_protocol::batch::signature;
    use outpost_protocol::handshake::Keypair;
    use outpost_protocol::seal::decode_sealed;
    let bytes = unhex(GOLDEN_SEALED);
    assert_eq!(hex::encode(golden_sealed_batch()), hex::encode(&bytes));
    let header = outpost_protocol::batch::codec::verify(&bytes, &Limits::default()).unwrap();
    assert_eq!(
        (header.key_epoch, header.sent_len, header.stream.as_str()),
        (1, 141, GOLDEN_MOSHI)
    );
    let key = Keypair::from_secret(&[0x42; 32]).unwrap();
    signature::verify(&header, key.public()).unwrap();
    let dk = outpost_protocol::seal::DigestKey::from_bytes(GOLDEN_DIGEST_KEY);
    let opened = decode_sealed(&bytes, &Limits::default(), &dk, |stream, epoch| {
        (stream == GOLDEN_MOSHI && epoch == 1).then(golden_scope_key)
    })
    .unwrap();
    assert_eq!(opened.scope, "moshi");
    let batch = opened.batch;
    assert_eq!(batch.tables, batch_changes());
    assert_eq!(batch.header.tables, batch_tables());
    // The sealed body is the golden batch's body as sent (107 bytes) plus nonce, scope name
    // (6 bytes) and tag; the clear header is the golden batch's plus the stream's digest (32
    // bytes) and one byte of sent_len (141 takes two); the key epoch 1 takes one byte, as 0 did.
    let plain = unhex(GOLDEN_BATCH);
    assert_eq!(bytes.len() - 141, plain.len() - 0x6b + 32 + 1);
}

#[test]
fn the_golden_sealed_body_is_aes_256_gcm_of_the_golden_body_as_sent() {
    // Rebuilt from the documented layout with the primitive alone: nonce, then AES-256-GCM of
    // the scope name (length byte, then `moshi`) and the body as sent under AAD = "outpost
    // sealed body v1\n" || the clear header with sent_len 0 and a zero hash, then the tag.
    use outpost_protocol::seal::primitives::aes_256_gcm_seal;
    let sealed = unhex(GOLDEN_SEALED);
    let plain = unhex(GOLDEN_BATCH);
    let body_as_sent = &plain[plain.len() - 0x6b..];
    let clear = &sealed[4..4 + 16 + 1 + 32 + 5 + 9 + 2 + 32];
    let mut aad = b"outpost sealed body v1\n".to_vec();
    aad.extend_from_slice(&clear[..clear.len() - 2 - 32]);
    aad.push(0); // sent_len 0
    aad.extend_from_slice(&[0; 32]);
    let mut buf = b"\x05moshi".to_vec();
    buf.extend_from_slice(body_as_sent);
    let tag = aes_256_gcm_seal(&[0x5e; 32], &[0x4e; 12], &aad, &mut buf).unwrap();
    let mut want = vec![0x4e; 12];
    want.extend_from_slice(&buf);
    want.extend_from_slice(&tag);
    assert_eq!(
        hex::encode(&sealed[sealed.len() - 141..]),
        hex::encode(want)
    );
}

#[test]
fn a_key_envelope_emits_and_opens_its_golden_bytes() {
    use outpost_protocol::handshake::Keypair;
    use outpost_protocol::seal::envelope::{unwrap_keys, wrap_keys};
    let device = Keypair::from_secret(&[0x31; 32]).unwrap();
    let ephemeral = Keypair::from_secret(&[0x55; 32]).unwrap();
    let bytes = unhex(GOLDEN_ENVELOPE);
    assert_eq!(
        hex::encode(wrap_keys(&golden_key_set(), device.public(), ephemeral).unwrap()),
        hex::encode(&bytes)
    );
    assert_eq!(unwrap_keys(&bytes, &device), Ok(golden_key_set()));
}

/// The contents of an envelope as the layout says: digest key, count (u16 BE), entries.
fn envelope_contents(entries: &[([u8; 16], u32, [u8; 32])]) -> Vec<u8> {
    let mut c = GOLDEN_DIGEST_KEY.to_vec();
    c.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for (scope, epoch, key) in entries {
        c.extend_from_slice(scope);
        c.extend_from_slice(&epoch.to_be_bytes());
        c.extend_from_slice(key);
    }
    c
}

/// An envelope built from the documented layout with the primitives alone.
fn envelope_by_hand(contents: &[u8]) -> Vec<u8> {
    use outpost_protocol::handshake::Keypair;
    use outpost_protocol::seal::primitives::{aes_256_gcm_seal, ecdh, hkdf_sha256};
    let device = Keypair::from_secret(&[0x31; 32]).unwrap();
    let ephemeral = Keypair::from_secret(&[0x55; 32]).unwrap();
    let mut info = ephemeral.public().as_bytes().to_vec();
    info.extend_from_slice(device.public().as_bytes());
    let mut kek = [0u8; 32];
    let shared = ecdh(&ephemeral, device.public());
    hkdf_sha256(b"outpost key envelope v1", &shared, &info, &mut kek).unwrap();
    let mut out = b"OPK\x01".to_vec();
    out.extend_from_slice(ephemeral.public().as_bytes());
    let mut buf = contents.to_vec();
    let tag = aes_256_gcm_seal(&kek, &[0; 12], &out, &mut buf).unwrap();
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    out
}

#[test]
fn the_golden_envelope_follows_the_documented_layout() {
    use outpost_protocol::handshake::Keypair;
    use outpost_protocol::seal::envelope::{unwrap_keys, EnvelopeError};
    let moshi: [u8; 16] = unhex(GOLDEN_MOSHI).try_into().unwrap();
    let contents = envelope_contents(&[(moshi, 1, [0x5e; 32]), (moshi, 2, [0x5f; 32])]);
    assert_eq!(
        hex::encode(envelope_by_hand(&contents)),
        GOLDEN_ENVELOPE.replace(' ', "")
    );
    // Authentic contents that break the layout's rules are refused all the same.
    let device = Keypair::from_secret(&[0x31; 32]).unwrap();
    for bad in [
        [(moshi, 2, [0x5f; 32]), (moshi, 1, [0x5e; 32])],
        [(moshi, 1, [0x5e; 32]), (moshi, 1, [0x5f; 32])],
        [(moshi, 0, [0x5e; 32]), (moshi, 1, [0x5f; 32])],
    ] {
        let env = envelope_by_hand(&envelope_contents(&bad));
        assert_eq!(unwrap_keys(&env, &device), Err(EnvelopeError::NotCanonical));
    }
    let mut miscounted = contents.clone();
    miscounted[33] = 3;
    assert!(matches!(
        unwrap_keys(&envelope_by_hand(&miscounted), &device),
        Err(EnvelopeError::Truncated { .. })
    ));
}
