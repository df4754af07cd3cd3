//! Sealed batches (docs/design.md section 10, "Sealed batches"): sealing then opening gives the
//! original changes, a relay still reads and checks the clear header, every altered bit is
//! refused with a typed error, and a sealed batch is at most 64 bytes larger.

use outpost_protocol::batch::codec::{self, DecodeError, HeaderProblem, Limits};
use outpost_protocol::batch::{
    signature, BatchFlags, BatchHeader, BatchMeta, BodyWriter, CellChange, CellPayload,
    ColumnSchema, Compression, Direction, RowChange, TableSchema,
};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::seal::{
    decode_sealed, seal_batch, DigestKey, ScopeKey, SealError, SEAL_OVERHEAD,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy as Merge, Value};
use outpost_testkit::batch::text_rows_in;
use proptest::prelude::*;

const ORIGIN: SiteId = SiteId([0x0a; 16]);
/// The batches' scope: sealing names it by its digest under [`dk`] ([`wire`]).
const STREAM: &str = "moshi";

fn dk() -> DigestKey {
    DigestKey::from_bytes([0x5d; 32])
}

/// [`STREAM`]'s id on the wire of a sealed batch.
fn wire() -> String {
    dk().wire_scope(STREAM)
}

fn key(epoch: u32) -> ScopeKey {
    ScopeKey::new(epoch, [epoch as u8; 32]).unwrap()
}

fn origin_key() -> Keypair {
    outpost_testkit::keys::site_keypair(ORIGIN)
}

/// A signed, unsealed batch of `rows` text rows in [`STREAM`].
fn plain(rows: i64) -> Vec<u8> {
    text_rows_in(
        ORIGIN,
        STREAM,
        1,
        rows.max(1) as u64,
        "patients",
        "name",
        (0..rows).map(|i| (i, Hlc::new(1_760_000_000_000, 0), format!("Amina {i}"))),
    )
}

/// `plain` sealed under `key` and signed again (the push-time order).
fn sealed_signed(plain: &[u8], key: &ScopeKey, nonce: u8) -> Vec<u8> {
    let mut sealed = seal_batch(plain, key, &dk(), [nonce; 12]).unwrap();
    signature::sign(&mut sealed, &origin_key()).unwrap();
    sealed
}

fn open(bytes: &[u8], held: &ScopeKey) -> Result<outpost_protocol::batch::Batch, SealError> {
    decode_sealed(bytes, &Limits::default(), &dk(), |stream, epoch| {
        (stream == wire() && epoch == held.epoch()).then(|| held.clone())
    })
    .map(|o| o.batch)
}

#[test]
fn a_sealed_batch_opens_to_the_same_changes_and_verifies_its_signature() {
    let plain = plain(20);
    let want = codec::decode(&plain, &Limits::default()).unwrap();
    let sealed = sealed_signed(&plain, &key(3), 7);
    let header = codec::verify(&sealed, &Limits::default()).unwrap();
    signature::verify(&header, origin_key().public()).unwrap();
    assert_eq!(header.key_epoch, 3);
    let got = open(&sealed, &key(3)).unwrap();
    assert_eq!(got.tables, want.tables);
    assert_eq!(got.header.tables, want.header.tables);
    assert_eq!(got.header.base_hlc, want.header.base_hlc);
    assert_eq!(got.header.body_len, want.header.body_len);
    // The opened header is the sealed batch's: its signature verifies on it.
    assert_eq!(got.header.key_epoch, 3);
    assert_eq!(got.header.body_sha256, header.body_sha256);
    signature::verify(&got.header, origin_key().public()).unwrap();
}

#[test]
fn a_relay_reads_the_clear_header_and_nothing_of_the_body() {
    let plain = plain(5);
    let sealed = sealed_signed(&plain, &key(1), 1);
    let want = codec::decode_header(&plain, &Limits::default()).unwrap();
    let h = codec::decode_header(&sealed, &Limits::default()).unwrap();
    assert_eq!(
        (
            h.origin,
            &h.stream,
            h.range,
            h.flags,
            h.grant_version,
            h.max_hlc
        ),
        (
            want.origin,
            &wire(),
            want.range,
            want.flags,
            want.grant_version,
            want.max_hlc
        )
    );
    assert!(h.tables.is_empty() && h.body_len == 0, "no payload fields");
    assert_eq!(codec::check_limits(&h, sealed.len()), Ok(()));
    codec::verify(&sealed, &Limits::default()).unwrap();
    // Nothing of the schema, the values or the scope's name is in the sealed bytes.
    for marker in [&b"patients"[..], b"name", b"Amina", b"INTEGER", b"moshi"] {
        assert!(
            !plain.windows(marker.len()).all(|w| w != marker),
            "in the plain batch"
        );
        assert!(
            sealed.windows(marker.len()).all(|w| w != marker),
            "leaks {marker:?}"
        );
    }
    assert_eq!(
        codec::decode(&sealed, &Limits::default()),
        Err(DecodeError::Sealed { epoch: 1 })
    );
}

#[test]
fn sealing_adds_at_most_64_bytes() {
    for rows in [0, 1, 30, 3_000] {
        let plain = plain(rows);
        // Below 2^21 an epoch's varint takes at most 3 bytes (a scope would need two million
        // revocations to pass it); the largest epoch costs two bytes more than the goal.
        for (epoch, most) in [(1, 64), (200, 64), ((1 << 21) - 1, 64), (u32::MAX, 66)] {
            let sealed = seal_batch(&plain, &key(epoch), &dk(), [0; 12]).unwrap();
            let grew = sealed.len() - plain.len();
            assert!(grew <= most, "{rows} rows, epoch {epoch}: {grew} bytes");
            assert!(grew >= SEAL_OVERHEAD);
        }
    }
    // The figure for docs/wire-format.md: a 1-row batch, epoch 1: 28 bytes of nonce and tag,
    // 32 of digest in the clear header and the name's length byte inside.
    let plain = plain(1);
    let sealed = seal_batch(&plain, &key(1), &dk(), [0; 12]).unwrap();
    assert_eq!(sealed.len() - plain.len(), 61);
}

#[test]
fn opening_without_the_right_key_is_a_typed_error() {
    let sealed = sealed_signed(&plain(3), &key(2), 9);
    assert_eq!(open(&sealed, &key(1)), Err(SealError::NoKey { epoch: 2 }));
    let r = decode_sealed(&sealed, &Limits::default(), &dk(), |_, _| Some(key(1)));
    assert_eq!(r, Err(SealError::WrongEpoch { batch: 2, key: 1 }));
    let other = ScopeKey::new(2, [0x77; 32]).unwrap();
    let r = decode_sealed(&sealed, &Limits::default(), &dk(), |_, _| {
        Some(other.clone())
    });
    assert_eq!(r, Err(SealError::TagMismatch { epoch: 2 }));
    assert!(r.unwrap_err().to_string().contains("altered"));
    assert_eq!(open(&plain(3), &key(2)), Err(SealError::NotSealed));
    assert_eq!(
        seal_batch(&sealed, &key(2), &dk(), [0; 12]),
        Err(SealError::AlreadySealed { epoch: 2 })
    );
    assert_eq!(ScopeKey::new(0, [1; 32]), None, "epoch 0 means unsealed");
}

#[test]
fn every_flipped_bit_of_the_sealed_body_is_refused() {
    let sealed = sealed_signed(&plain(2), &key(4), 3);
    let h = codec::decode_header(&sealed, &Limits::default()).unwrap();
    let start = sealed.len() - h.sent_len as usize;
    for at in start..sealed.len() {
        for bit in [0, 7] {
            let mut bad = sealed.clone();
            bad[at] ^= 1 << bit;
            // The relay's check already sees it (the hash), and so does the signature.
            assert_eq!(
                codec::verify(&bad, &Limits::default()),
                Err(DecodeError::HashMismatch)
            );
            assert!(matches!(
                open(&bad, &key(4)),
                Err(SealError::Decode(DecodeError::HashMismatch))
            ));
            // With the hash and signature made to match (a writer holding the origin's key but
            // not the scope's), the tag still refuses it.
            let reh = reheader(&bad);
            assert_eq!(
                open(&reh, &key(4)),
                Err(SealError::TagMismatch { epoch: 4 }),
                "byte {at}"
            );
        }
    }
}

/// `bytes` with its sealed body's hash recomputed and signed again by the origin (what a
/// forger holding the origin's key, but not the scope's, could make).
fn reheader(bytes: &[u8]) -> Vec<u8> {
    let h = codec::decode_header(bytes, &Limits::default()).unwrap();
    let mut out = with_body(&h, &bytes[bytes.len() - h.sent_len as usize..]);
    signature::sign(&mut out, &origin_key()).unwrap();
    out
}

/// A batch of `h`'s clear header (its `sent_len` and hash made to match), an empty signature
/// slot, and `body` as the body as sent.
fn with_body(h: &BatchHeader, body: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = h.clone();
    h.signature = None;
    h.sent_len = body.len() as u32;
    h.body_sha256 = Sha256::digest(body).into();
    let mut out = codec::assemble_raw(&h, &[]);
    // `assemble_raw` follows the signature with a payload header for the (empty) payload
    // fields: base_hlc 0, no tables, compression 0, body_len 0, one byte each.
    assert!(h.tables.is_empty() && h.body_len == 0 && h.base_hlc == Hlc::ZERO);
    out.truncate(out.len() - 4);
    out.extend_from_slice(body);
    out
}

#[test]
fn every_clear_header_field_is_bound_to_the_sealed_body() {
    let sealed = sealed_signed(&plain(2), &key(5), 5);
    let good = codec::decode_header(&sealed, &Limits::default()).unwrap();
    let body = &sealed[sealed.len() - good.sent_len as usize..];
    type Edit = Box<dyn Fn(&mut BatchHeader)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("origin", Box::new(|h| h.origin = SiteId([0x22; 16]))),
        (
            "range",
            Box::new(|h| h.range = SeqRange::new(1, 4).unwrap()),
        ),
        (
            "stream",
            Box::new(|h| h.stream = "0000000000000000000000000000dead".into()),
        ),
        ("flags", Box::new(|h| h.flags.direction = Direction::Up)),
        ("key epoch", Box::new(|h| h.key_epoch = 6)),
        ("grant version", Box::new(|h| h.grant_version = 5)),
        ("max hlc", Box::new(|h| h.max_hlc = Hlc::new(1, 0))),
    ];
    for (what, edit) in edits {
        let mut h = good.clone();
        edit(&mut h);
        let mut resigned = with_body(&h, body);
        codec::verify(&resigned, &Limits::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
        // Re-signed by the origin (the old signature covers the old header), the tag refuses it.
        signature::sign(&mut resigned, &origin_key()).unwrap();
        let any_key = |_: &str, epoch: u32| ScopeKey::new(epoch, [5; 32]);
        assert!(
            matches!(
                decode_sealed(&resigned, &Limits::default(), &dk(), any_key),
                Err(SealError::TagMismatch { .. })
            ),
            "{what}"
        );
    }
}

#[test]
fn a_sealed_body_shorter_than_nonce_and_tag_is_refused_by_relays() {
    let sealed = seal_batch(&plain(1), &key(1), &dk(), [0; 12]).unwrap();
    let h = codec::decode_header(&sealed, &Limits::default()).unwrap();
    let short = with_body(&h, &[0u8; SEAL_OVERHEAD - 1]);
    assert_eq!(
        codec::decode_header(&short, &Limits::default()),
        Err(DecodeError::BadHeader(HeaderProblem::SealedTooShort))
    );
}

#[test]
fn a_sealed_batch_keeps_the_decoding_budget() {
    // A sealed body that authenticates but claims more than its budget is refused like an
    // unsealed one: the budget is the sealed batch's, less the opened copy.
    let plain = plain(50);
    let sealed = seal_batch(&plain, &key(1), &dk(), [0; 12]).unwrap();
    let tight = Limits {
        max_batch_bytes: sealed.len(),
        max_body_bytes: 10,
    };
    let r = decode_sealed(&sealed, &tight, &dk(), |_, _| Some(key(1)));
    assert!(
        matches!(r, Err(SealError::Decode(DecodeError::BodyTooLarge { .. }))),
        "{r:?}"
    );
    let smaller = Limits {
        max_batch_bytes: sealed.len() - 1,
        ..Limits::default()
    };
    assert!(matches!(
        decode_sealed(&sealed, &smaller, &dk(), |_, _| Some(key(1))),
        Err(SealError::Decode(DecodeError::TooLarge { .. }))
    ));
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        ".{0,30}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..30).prop_map(Value::Blob),
    ]
}

/// A batch of 0-40 rows of a two-column table, with random clear-header fields.
fn random_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((any::<i64>(), value(), 1u64..1 << 40), 0..40),
        "[a-z0-9]{0,64}",
        any::<u64>(),
        0usize..2,
        any::<bool>(),
    )
        .prop_map(|(rows, stream, grant_version, dir, deflate)| {
            let col = |n: &str| ColumnSchema {
                name: n.into(),
                decl_type: String::new(),
                strategy: Merge::Lww,
                not_null: false,
            };
            let table = TableSchema {
                scope: None,
                name: "t".into(),
                columns: vec![col("k"), col("v")],
                primary_key: vec![0],
                foreign_keys: vec![],
            };
            let mut w = BodyWriter::new(vec![table]).unwrap();
            w.begin_table(0).unwrap();
            for (k, v, ms) in rows {
                w.push_row(&RowChange {
                    key: vec![Value::Integer(k)],
                    existence: 1,
                    cells: vec![CellChange {
                        column: 0,
                        hlc: Hlc::new(ms, 0),
                        payload: CellPayload::Value(v),
                    }],
                })
                .unwrap();
            }
            let meta = BatchMeta {
                stream,
                flags: BatchFlags {
                    direction: [Direction::Both, Direction::Up][dir],
                    transfer: false,
                },
                key_epoch: 0,
                grant_version,
            };
            let compression = if deflate {
                Compression::Deflate
            } else {
                Compression::None
            };
            codec::finish_batch_with(w, ORIGIN, SeqRange::new(1, 3).unwrap(), &meta, compression)
                .unwrap()
        })
}

proptest! {
    #[test]
    fn sealing_then_opening_gives_the_original_batch(
        plain in random_batch(),
        epoch in 1u32..1 << 21,
        key_bytes in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
    ) {
        let key = ScopeKey::new(epoch, key_bytes).unwrap();
        let want = codec::decode(&plain, &Limits::default()).unwrap();
        let sealed = seal_batch(&plain, &key, &dk(), nonce).unwrap();
        prop_assert!(sealed.len() <= plain.len() + 64);
        let opened = decode_sealed(&sealed, &Limits::default(), &dk(), |_, e| (e == epoch).then(|| key.clone())).unwrap();
        let got = &opened.batch;
        prop_assert_eq!(&got.tables, &want.tables);
        prop_assert_eq!(&got.header.tables, &want.header.tables);
        prop_assert_eq!(got.header.max_hlc, want.header.max_hlc);
        prop_assert_eq!(&opened.scope, &want.header.stream);
        prop_assert_eq!(&got.header.stream, &dk().wire_scope(&want.header.stream));
        prop_assert_eq!(got.header.key_epoch, epoch);
    }
}

#[test]
fn the_encoder_refuses_a_key_epoch() {
    let w = BodyWriter::new(vec![]).unwrap();
    let meta = BatchMeta {
        key_epoch: 1,
        ..BatchMeta::default()
    };
    let r = codec::finish_batch_with(
        w,
        ORIGIN,
        SeqRange::new(1, 1).unwrap(),
        &meta,
        Compression::None,
    );
    assert_eq!(r, Err(codec::EncodeError::SealedMeta));
}

#[test]
fn flags_are_set_before_sealing() {
    let mut sealed = seal_batch(&plain(1), &key(2), &dk(), [0; 12]).unwrap();
    let flags = BatchFlags {
        direction: Direction::Up,
        transfer: false,
    };
    assert_eq!(
        codec::set_flags(&mut sealed, flags),
        Err(DecodeError::Sealed { epoch: 2 })
    );
    let mut plain = plain(1);
    codec::set_flags(&mut plain, flags).unwrap();
    let sealed = seal_batch(&plain, &key(2), &dk(), [0; 12]).unwrap();
    assert_eq!(open(&sealed, &key(2)).unwrap().header.flags, flags);
}

#[test]
fn a_scope_name_inside_that_its_clear_digest_does_not_name_is_refused() {
    // Opened under another tenant's digest key, the name sealed inside no longer has the clear
    // stream as its digest: what a writer holding the key sees if it named one scope outside and
    // another inside.
    let sealed = sealed_signed(&plain(2), &key(1), 4);
    let other = DigestKey::from_bytes([0x11; 32]);
    let r = decode_sealed(&sealed, &Limits::default(), &other, |_, _| Some(key(1)));
    assert_eq!(r.map(drop), Err(SealError::ScopeMismatch));
    // Under the right key the name comes out, and the header keeps the wire id.
    let opened = decode_sealed(&sealed, &Limits::default(), &dk(), |_, _| Some(key(1))).unwrap();
    assert_eq!(opened.scope, STREAM);
    assert_eq!(opened.batch.header.stream, wire());
}

#[test]
fn the_unscoped_stream_stays_unnamed_on_the_wire() {
    let plain = text_rows_in(
        ORIGIN,
        "",
        1,
        1,
        "settings",
        "value",
        [(1, Hlc::new(1_760_000_000_000, 0), "x".to_string())],
    );
    let sealed = seal_batch(&plain, &key(1), &dk(), [0; 12]).unwrap();
    assert_eq!(
        codec::verify(&sealed, &Limits::default()).unwrap().stream,
        ""
    );
    let opened = decode_sealed(&sealed, &Limits::default(), &dk(), |s, _| {
        s.is_empty().then(|| key(1))
    })
    .unwrap();
    assert_eq!(opened.scope, "");
}
