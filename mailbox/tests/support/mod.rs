//! Real encoded batches for the mailbox tests, built with the protocol's codec.

#![allow(dead_code)]

pub mod store;
pub mod uplink;

use outpost_protocol::batch::codec::encode;
use outpost_protocol::batch::{
    CellChange, CellPayload, ColumnSchema, Compression, RowChange, TableChanges, TableSchema,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, Value};

pub fn site(n: u8) -> SiteId {
    SiteId([n; 16])
}

/// An encoded batch of `origin` covering `lo..=hi`, whose body carries `payload` bytes of data
/// (uncompressed) so size-related tests can make big batches.
pub fn batch(origin: SiteId, lo: u64, hi: u64, payload: usize) -> Vec<u8> {
    let table = TableSchema {
        scope: None,
        name: "patients".into(),
        columns: vec![
            ColumnSchema {
                name: "id".into(),
                decl_type: "TEXT".into(),
                strategy: Strategy::Lww,
                not_null: true,
            },
            ColumnSchema {
                name: "notes".into(),
                decl_type: "BLOB".into(),
                strategy: Strategy::Lww,
                not_null: false,
            },
        ],
        primary_key: vec![0],
        foreign_keys: vec![],
    };
    let fill = (lo as u8).wrapping_mul(31) ^ (hi as u8);
    let changes = TableChanges {
        credit: None,
        table: 0,
        rows: vec![RowChange {
            key: vec![Value::Text(format!("p-{origin}-{lo}-{hi}"))],
            existence: 1,
            cells: vec![CellChange {
                column: 0,
                hlc: Hlc::new(1_700_000_000_000 + hi, 0),
                payload: CellPayload::Value(Value::Blob(vec![fill; payload])),
            }],
        }],
    };
    encode(
        origin,
        SeqRange::new(lo, hi).expect("test ranges are valid"),
        vec![table],
        &[changes],
        Compression::None,
    )
}
