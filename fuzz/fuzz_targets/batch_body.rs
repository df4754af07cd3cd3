//! The batch body parser, reached directly: the first bytes choose a table (key columns, value
//! columns and their strategies) and the compression, the rest is the body; the target writes a
//! correct header for it (length, SHA-256), so the fuzzer explores rows, cells and values instead
//! of stopping at the hash check. `decode` never panics and keeps to its memory budget (the
//! parser charges every allocation first; `-malloc_limit_mb` in `run-short` catches a miss);
//! whatever decodes re-encodes to the same changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::codec::{decode, encode, Limits};
use outpost_protocol::batch::{BatchHeader, ColumnSchema, Compression, TableSchema};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy};

const STRATEGIES: [Strategy; 4] = [
    Strategy::Lww,
    Strategy::RowLww,
    Strategy::Counter,
    Strategy::Review,
];

fuzz_target!(|data: &[u8]| {
    let [shape, values, rest @ ..] = data else {
        return;
    };
    let keys = (shape & 3) as usize;
    let deflate = shape & 4 != 0;
    let n_values = (*values % 80) as usize;
    let (picks, body) = rest.split_at(n_values.min(rest.len()));
    let column = |name: String, strategy: Strategy| ColumnSchema {
        name,
        decl_type: "TEXT".into(),
        strategy,
        not_null: false,
    };
    let mut columns: Vec<_> = (0..keys)
        .map(|k| column(format!("k{k}"), Strategy::Lww))
        .collect();
    columns.extend((0..n_values).map(|v| {
        column(
            format!("v{v}"),
            STRATEGIES[(picks.get(v).copied().unwrap_or(0) & 3) as usize],
        )
    }));
    let table = TableSchema {
        name: "t".into(),
        columns,
        primary_key: (0..keys as u16).collect(),
        foreign_keys: vec![],
        scope: None,
    };
    let header = BatchHeader::crafted(
        SiteId([1; 16]),
        SeqRange::new(1, 1).unwrap(),
        Hlc::ZERO,
        vec![table],
        if deflate {
            Compression::Deflate
        } else {
            Compression::None
        },
        body.len() as u32,
    );
    let wire_body = if deflate {
        miniz_oxide::deflate::compress_to_vec(body, 1)
    } else {
        body.to_vec()
    };
    let bytes = outpost_protocol::batch::codec::assemble(&header, &wire_body);
    // `base_hlc` is zero: a body with cells fails that check after parsing, which is fine here
    // (the parser ran); a body without cells decodes.
    if let Ok(batch) = decode(&bytes, &Limits::default()) {
        let h = &batch.header;
        let again = encode(
            h.origin,
            h.range,
            h.tables.clone(),
            &batch.tables,
            h.compression,
        );
        let round = decode(&again, &Limits::default()).expect("a re-encoded batch decodes");
        assert_eq!(round.tables, batch.tables);
    }
});
