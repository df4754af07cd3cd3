//! Batch codec: round trips, and every way a damaged batch is refused.

use outpost_protocol::batch::codec::{
    decode, decode_header, encode, finish_batch, try_encode, verify, BodyProblem, DecodeError,
    EncodeError, HeaderProblem, Limits,
};
use outpost_protocol::batch::{
    BodyWriter, CellChange, CellPayload, ColumnSchema, Compression, RowChange, TableChanges,
    TableSchema,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, Value};

fn col(name: &str, strategy: Strategy) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: "TEXT".into(),
        strategy,
        not_null: false,
    }
}

fn table(n_values: usize) -> TableSchema {
    let mut columns = vec![col("id", Strategy::Lww)];
    columns.extend((0..n_values).map(|i| {
        let s = match i % 4 {
            0 => Strategy::Lww,
            1 => Strategy::RowLww,
            2 => Strategy::Counter,
            _ => Strategy::Review,
        };
        col(&format!("c{i}"), s)
    }));
    TableSchema {
        scope: None,
        name: "t".into(),
        columns,
        primary_key: vec![0],
        foreign_keys: vec![],
    }
}

fn payload_for(column: u16, v: Value) -> CellPayload {
    match column % 4 {
        0 | 1 => CellPayload::Value(v),
        2 => CellPayload::Counter(-(column as i64) * 1000 - 7),
        _ => CellPayload::Review {
            value: v,
            context: vec![
                (SiteId([7; 16]), Hlc::new(1_700_000_000_000, 3)),
                (SiteId([9; 16]), Hlc::new(1_800_000_000_000, 0)),
            ],
        },
    }
}

fn sample_changes() -> Vec<TableChanges> {
    let t0 = Hlc::new(1_700_000_000_000, 0);
    let values = [
        Value::Null,
        Value::Integer(-3),
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer(1 << 60),
        Value::Real(-0.0),
        Value::Real(2.5e300),
        Value::Text("héllo".into()),
        Value::Text("0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4f5".into()),
        Value::Text("0F1E2D3C-4B5A-4697-8879-A0B1C2D3E4F5".into()),
        Value::Blob(vec![0, 1, 2, 255]),
        Value::Text(String::new()),
    ];
    let rows = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let key = match i % 3 {
                0 => Value::Text(format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7)),
                1 => Value::Integer(i as i64 * 1000),
                _ => Value::Text(format!("key {i}")),
            };
            let cells = (0..4u16)
                .filter(|c| (i + *c as usize) % 2 == 0 || i % 5 == 0)
                .map(|c| CellChange {
                    column: c,
                    hlc: if i % 4 == 3 {
                        Hlc::new(t0.millis() + i as u64 * 3 + c as u64, c * 2)
                    } else {
                        Hlc::new(t0.millis() + i as u64, i as u16)
                    },
                    payload: payload_for(c, v.clone()),
                })
                .collect();
            RowChange {
                key: vec![key],
                existence: [1, 2, 3, u64::MAX][i % 4],
                cells,
            }
        })
        .collect();
    vec![
        TableChanges {
            credit: None,
            table: 0,
            rows,
        },
        TableChanges {
            credit: None,
            table: 1,
            rows: vec![RowChange {
                key: vec![Value::Integer(1), Value::Text("b".into())],
                existence: 2,
                cells: vec![],
            }],
        },
        TableChanges {
            credit: None,
            table: 0,
            rows: vec![],
        },
    ]
}

fn sample_tables() -> Vec<TableSchema> {
    let mut composite = table(0);
    composite.name = "link".into();
    composite.columns.push(col("other", Strategy::Lww));
    composite.primary_key = vec![1, 0];
    vec![table(4), composite]
}

fn origin() -> SiteId {
    SiteId([0xa5; 16])
}

fn range() -> SeqRange {
    SeqRange::new(10, 42).unwrap()
}

#[test]
fn every_value_kind_and_strategy_round_trips_in_both_compressions() {
    for compression in [Compression::None, Compression::Deflate] {
        let changes = sample_changes();
        let bytes = encode(origin(), range(), sample_tables(), &changes, compression);
        let batch = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(batch.tables, changes);
        assert_eq!(batch.header.origin, origin());
        assert_eq!(batch.header.range, range());
        assert_eq!(batch.header.tables, sample_tables());
        assert_eq!(batch.header.compression, compression);
        assert_eq!(batch.header.base_hlc, Hlc::new(1_700_000_000_000, 0));
        assert_eq!(
            decode_header(&bytes, &Limits::default()).unwrap(),
            batch.header
        );
        assert_eq!(verify(&bytes, &Limits::default()).unwrap(), batch.header);
        // Deterministic.
        assert_eq!(
            bytes,
            encode(origin(), range(), sample_tables(), &changes, compression)
        );
    }
}

#[test]
fn uppercase_uuid_text_is_restored_exactly() {
    let changes = sample_changes();
    let bytes = encode(
        origin(),
        range(),
        sample_tables(),
        &changes,
        Compression::None,
    );
    let batch = decode(&bytes, &Limits::default()).unwrap();
    let texts: Vec<&Value> = batch.tables[0]
        .rows
        .iter()
        .flat_map(|r| r.cells.iter())
        .filter_map(|c| match &c.payload {
            CellPayload::Value(v @ Value::Text(t)) if t.contains('-') => Some(v),
            _ => None,
        })
        .collect();
    assert!(texts.contains(&&Value::Text("0F1E2D3C-4B5A-4697-8879-A0B1C2D3E4F5".into())));
    assert!(texts.contains(&&Value::Text("0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4f5".into())));
}

#[test]
fn wide_tables_use_the_column_list_form() {
    let t = table(100);
    let cells = [3u16, 63, 64, 99]
        .iter()
        .map(|&c| CellChange {
            column: c,
            hlc: Hlc::new(5, 1),
            payload: payload_for(c, Value::Integer(c as i64)),
        })
        .collect();
    let changes = vec![TableChanges {
        credit: None,
        table: 0,
        rows: vec![RowChange {
            key: vec![Value::Integer(1)],
            existence: 1,
            cells,
        }],
    }];
    let bytes = encode(origin(), range(), vec![t], &changes, Compression::None);
    assert_eq!(decode(&bytes, &Limits::default()).unwrap().tables, changes);
}

#[test]
fn body_writer_len_is_the_exact_body_length() {
    let mut w = BodyWriter::new(sample_tables()).unwrap();
    assert_eq!(w.len(), 1);
    for group in sample_changes() {
        w.begin_table(group.table).unwrap();
        for row in &group.rows {
            w.push_row(row).unwrap();
        }
    }
    let len = w.len();
    let bytes = finish_batch(w, origin(), range(), Compression::None).unwrap();
    let header = decode_header(&bytes, &Limits::default()).unwrap();
    assert_eq!(header.body_len as usize, len);
}

#[test]
fn changes_that_do_not_fit_their_tables_are_refused() {
    let row = |cells: Vec<CellChange>, key: Vec<Value>| {
        vec![TableChanges {
            credit: None,
            table: 0,
            rows: vec![RowChange {
                key,
                existence: 1,
                cells,
            }],
        }]
    };
    let cell = |column: u16, payload: CellPayload| CellChange {
        column,
        hlc: Hlc::new(1, 0),
        payload,
    };
    let enc = |changes: &[TableChanges]| {
        try_encode(
            origin(),
            range(),
            sample_tables(),
            changes,
            Compression::None,
        )
    };
    let one_key = vec![Value::Integer(1)];
    assert_eq!(
        enc(&row(vec![], vec![])),
        Err(EncodeError::KeyArity {
            got: 0,
            expected: 1
        })
    );
    assert_eq!(
        enc(&row(
            vec![cell(4, CellPayload::Value(Value::Null))],
            one_key.clone()
        )),
        Err(EncodeError::BadColumn { column: 4 })
    );
    assert_eq!(
        enc(&row(
            vec![
                cell(1, CellPayload::Value(Value::Null)),
                cell(0, CellPayload::Value(Value::Null))
            ],
            one_key.clone()
        )),
        Err(EncodeError::BadColumn { column: 0 })
    );
    assert_eq!(
        enc(&row(
            vec![cell(2, CellPayload::Value(Value::Null))],
            one_key
        )),
        Err(EncodeError::PayloadMismatch { column: 2 })
    );
    let mut bad_table = sample_changes();
    bad_table[0].table = 9;
    assert_eq!(
        enc(&bad_table),
        Err(EncodeError::UnknownTable {
            table: 9,
            tables: 2
        })
    );
}

fn small_batch(compression: Compression) -> Vec<u8> {
    encode(
        origin(),
        range(),
        sample_tables(),
        &sample_changes(),
        compression,
    )
}

#[test]
fn damaged_batches_get_typed_errors() {
    let limits = Limits::default();
    let good = small_batch(Compression::None);
    let header_len = good.len() - decode_header(&good, &limits).unwrap().body_len as usize;

    assert_eq!(decode(b"XYZ\x01", &limits), Err(DecodeError::BadMagic));
    assert_eq!(
        decode(b"OP", &limits),
        Err(DecodeError::Truncated {
            expected: 4,
            got: 2
        })
    );
    let mut newer = good.clone();
    newer[3] = 3;
    assert_eq!(
        decode(&newer, &limits),
        Err(DecodeError::UnsupportedFormat {
            found: 3,
            supported: 2
        })
    );
    // A first-wave batch (format 1, unsigned, no clear header) gets "made by an older version".
    let mut older = good.clone();
    older[3] = 1;
    let err = decode(&older, &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnsupportedFormat {
            found: 1,
            supported: 2
        }
    );
    assert!(err.to_string().contains("older version"), "{err}");
    assert_eq!(
        decode(&good[..good.len() - 5], &limits),
        Err(DecodeError::Truncated {
            expected: good.len(),
            got: good.len() - 5
        })
    );
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0]);
    assert_eq!(
        decode(&trailing, &limits),
        Err(DecodeError::TrailingBytes { count: 2 })
    );
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(decode(&tampered, &limits), Err(DecodeError::HashMismatch));
    assert_eq!(verify(&tampered, &limits), Err(DecodeError::HashMismatch));
    // The hub reads the header of a tampered batch; only verify/decode see the damage.
    assert!(decode_header(&tampered, &limits).is_ok());
    assert_eq!(
        decode(
            &good,
            &Limits {
                max_batch_bytes: 10,
                ..limits
            }
        ),
        Err(DecodeError::TooLarge {
            len: good.len(),
            max: 10
        })
    );
    assert!(matches!(
        decode(
            &good,
            &Limits {
                max_body_bytes: 10,
                ..limits
            }
        ),
        Err(DecodeError::BodyTooLarge { max: 10, .. })
    ));
    assert!(header_len > 4);
}

#[test]
fn damaged_compressed_bodies_get_typed_errors() {
    let limits = Limits::default();
    let good = small_batch(Compression::Deflate);
    decode(&good, &limits).unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        decode(&trailing, &limits),
        Err(DecodeError::TrailingBytes { count: 1 })
    );
    // The clear header states the length of the body as sent: a cut is caught before inflating.
    let truncated = &good[..good.len() - 3];
    assert_eq!(
        decode(truncated, &limits),
        Err(DecodeError::Truncated {
            expected: good.len(),
            got: good.len() - 3
        })
    );
    // A body that is not DEFLATE, with a consistent length and hash, is caught when inflating.
    let mut header = decode_header(&good, &limits).unwrap();
    header.signature = None;
    let not_deflate = outpost_protocol::batch::codec::assemble(&header, &[0xff; 16]);
    assert_eq!(
        decode(&not_deflate, &limits),
        Err(DecodeError::BadCompression)
    );
}

#[test]
fn a_forged_header_with_a_bad_range_is_refused() {
    // Build a batch by hand whose header claims range 0..=0.
    let good = small_batch(Compression::None);
    let limits = Limits::default();
    let header = decode_header(&good, &limits).unwrap();
    let mut forged_header = header.clone();
    forged_header.range = SeqRange { lo: 0, hi: 0 };
    let body = &good[good.len() - header.body_len as usize..];
    let forged = outpost_protocol::batch::codec::assemble(&forged_header, body);
    assert_eq!(
        decode(&forged, &limits),
        Err(DecodeError::BadHeader(HeaderProblem::BadRange))
    );
    // A forged base_hlc is caught too.
    let mut forged_header = header;
    forged_header.base_hlc = Hlc::new(1, 0);
    let forged = outpost_protocol::batch::codec::assemble(&forged_header, body);
    assert!(matches!(
        decode(&forged, &limits),
        Err(DecodeError::BaseHlcMismatch { .. })
    ));
    // And so is a forged max_hlc.
    let mut forged_header = decode_header(&good, &limits).unwrap();
    forged_header.max_hlc = Hlc::new(u64::from(u32::MAX), 0);
    let forged = outpost_protocol::batch::codec::assemble(&forged_header, body);
    assert!(matches!(
        decode(&forged, &limits),
        Err(DecodeError::MaxHlcMismatch { .. })
    ));
}

#[test]
fn a_body_with_a_reserved_value_type_is_refused_at_its_offset() {
    let tables = vec![table(1)];
    // One group, table 0, one row: flags existence 1 mask form, key Integer 1 (0x09),
    // mask 1, clock (0, 0), then a value with the reserved type 7.
    let body = [0x01, 0x00, 0x01, 0x10, 0x09, 0x01, 0x00, 0x00, 0x07];
    let header = outpost_protocol::batch::BatchHeader::crafted(
        origin(),
        range(),
        Hlc::ZERO,
        tables,
        Compression::None,
        body.len() as u32,
    );
    let bytes = outpost_protocol::batch::codec::assemble(&header, &body);
    assert_eq!(
        decode(&bytes, &Limits::default()),
        Err(DecodeError::BadBody {
            offset: 8,
            problem: BodyProblem::BadValueType
        })
    );
}

/// A transfer batch (docs/design.md section 10, "Moves") carries, per group, the site its
/// cells are credited to: a row's whole merge state moves into the new scope's stream with its
/// original credits. No other batch carries credits, and a writer of one kind cannot finish a
/// batch of the other.
#[test]
fn transfer_batches_carry_a_credit_per_group_and_no_other_batch_does() {
    use outpost_protocol::batch::codec::encode_transfer;
    use outpost_protocol::batch::{BatchFlags, BatchMeta, Direction};
    let (cloud, amina, baraka) = (SiteId([0xc0; 16]), SiteId([1; 16]), SiteId([2; 16]));
    let mut changes = sample_changes();
    changes.truncate(1);
    let mut other = changes[0].clone();
    changes[0].credit = Some(amina);
    other.credit = Some(baraka);
    changes.push(other);
    let range = SeqRange::new(1, 1).unwrap();
    for compression in [Compression::None, Compression::Deflate] {
        let bytes =
            encode_transfer(cloud, "tanga", range, vec![table(8)], &changes, compression).unwrap();
        let batch = decode(&bytes, &Limits::default()).unwrap();
        assert!(batch.header.flags.transfer);
        assert_eq!(batch.header.stream, "tanga");
        assert_eq!(batch.tables, changes, "credits survive the round trip");
    }
    // The group header: table index, then the 16-byte credit, then the row count.
    let bytes = encode_transfer(
        cloud,
        "tanga",
        range,
        vec![table(8)],
        &changes[..1],
        Compression::None,
    )
    .unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == amina.as_bytes())
        .expect("the credit is in the body");
    assert_eq!(
        bytes[at - 2..at],
        [0x01, 0x00],
        "1 group, table 0, then the credit"
    );

    // Credits outside a transfer, or a transfer without them: refused when writing.
    assert_eq!(
        try_encode(cloud, range, vec![table(8)], &changes, Compression::None).unwrap_err(),
        EncodeError::Credit
    );
    let mut uncredited = changes.clone();
    uncredited[0].credit = None;
    assert_eq!(
        encode_transfer(
            cloud,
            "tanga",
            range,
            vec![table(8)],
            &uncredited,
            Compression::None
        )
        .unwrap_err(),
        EncodeError::Credit
    );
    let mut w = BodyWriter::new_transfer(vec![table(8)]).unwrap();
    assert_eq!(w.begin_table(0).unwrap_err(), EncodeError::Credit);
    let mut plain = BodyWriter::new(vec![table(8)]).unwrap();
    assert_eq!(
        plain.begin_credited(0, amina).unwrap_err(),
        EncodeError::Credit
    );
    w.begin_credited(0, amina).unwrap();
    let meta = BatchMeta {
        flags: BatchFlags {
            direction: Direction::Both,
            transfer: false,
        },
        ..BatchMeta::default()
    };
    assert_eq!(
        outpost_protocol::batch::codec::finish_batch_with(
            w,
            cloud,
            range,
            &meta,
            Compression::None
        )
        .unwrap_err(),
        EncodeError::TransferMismatch
    );
}
