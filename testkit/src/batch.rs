//! Encoded batches for tests. [`batch`]: small ones for tests that route batches without reading
//! them, an empty body (the hub, the mailbox and the session never read bodies) and a table named
//! for the range, so every batch's bytes, and so its hash, are distinct. [`text_rows`]: batches
//! with a real body, as big as a test needs (chunking, throughput).

use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{
    BatchFlags, BatchHeader, BatchMeta, BodyWriter, CellChange, CellPayload, ColumnSchema,
    Compression, Direction, RowChange, TableSchema,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, Value, VersionVector};

/// An encoded batch of `origin` for `lo..=hi`, signed with the origin's test key
/// ([`crate::keys`]). Panics on `lo > hi` or `lo == 0`.
pub fn batch(origin: SiteId, lo: u64, hi: u64) -> Vec<u8> {
    let table = TableSchema {
        scope: None,
        name: format!("t{lo}_{hi}"),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
    };
    crate::keys::signed(codec::encode(
        origin,
        SeqRange::new(lo, hi).expect("a test batch's range"),
        vec![table],
        &[],
        Compression::None,
    ))
}

/// [`batch`] with the clear header's direction flag set to `direction` (signed after).
pub fn directed(origin: SiteId, lo: u64, hi: u64, direction: Direction) -> Vec<u8> {
    let meta = BatchMeta {
        flags: BatchFlags {
            direction,
            transfer: false,
        },
        ..BatchMeta::default()
    };
    with_meta(origin, lo, hi, &meta)
}

/// [`batch`] in the stream of `scope` (the clear header's stream; signed after).
pub fn scoped(origin: SiteId, scope: &str, lo: u64, hi: u64) -> Vec<u8> {
    let meta = BatchMeta {
        stream: scope.into(),
        ..BatchMeta::default()
    };
    with_meta(origin, lo, hi, &meta)
}

/// [`scoped`], written under version `grant_version` of its origin's grant.
pub fn scoped_under(origin: SiteId, scope: &str, grant_version: u64, lo: u64, hi: u64) -> Vec<u8> {
    let meta = BatchMeta {
        stream: scope.into(),
        grant_version,
        ..BatchMeta::default()
    };
    with_meta(origin, lo, hi, &meta)
}

/// [`batch`] with the clear header's fields from `meta`, signed.
fn with_meta(origin: SiteId, lo: u64, hi: u64, meta: &BatchMeta) -> Vec<u8> {
    let table = TableSchema {
        scope: None,
        name: format!("t{lo}_{hi}"),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
    };
    let writer = BodyWriter::new(vec![table]).expect("a test batch's tables");
    crate::keys::signed(
        codec::finish_batch_with(
            writer,
            origin,
            SeqRange::new(lo, hi).expect("a test batch's range"),
            meta,
            Compression::None,
        )
        .expect("a test batch"),
    )
}

/// An encoded batch of `origin` covering `lo..=hi` whose body changes `rows` of table `table`
/// (an INTEGER key `id` and one TEXT column named `column`, both last-writer-wins): each row
/// `(key, hlc, text)` is created with one cell set to `text` at `hlc`. Signed like [`batch`].
pub fn text_rows(
    origin: SiteId,
    lo: u64,
    hi: u64,
    table: &str,
    column: &str,
    rows: impl IntoIterator<Item = (i64, Hlc, String)>,
) -> Vec<u8> {
    text_rows_in(origin, "", lo, hi, table, column, rows)
}

/// [`text_rows`] in the stream of `scope` (the clear header's stream; signed after).
pub fn text_rows_in(
    origin: SiteId,
    scope: &str,
    lo: u64,
    hi: u64,
    table: &str,
    column: &str,
    rows: impl IntoIterator<Item = (i64, Hlc, String)>,
) -> Vec<u8> {
    let col = |name: &str, decl_type: &str, not_null: bool| ColumnSchema {
        name: name.into(),
        decl_type: decl_type.into(),
        strategy: Strategy::Lww,
        not_null,
    };
    let schema = TableSchema {
        scope: None,
        name: table.into(),
        columns: vec![col("id", "INTEGER", true), col(column, "TEXT", false)],
        primary_key: vec![0],
        foreign_keys: vec![],
    };
    let rows: Vec<RowChange> = rows
        .into_iter()
        .map(|(key, hlc, text)| RowChange {
            key: vec![Value::Integer(key)],
            existence: 1,
            cells: vec![CellChange {
                column: 0,
                hlc,
                payload: CellPayload::Value(Value::Text(text)),
            }],
        })
        .collect();
    let mut writer = BodyWriter::new(vec![schema]).expect("a test batch's tables");
    writer.begin_table(0).expect("its table");
    for row in &rows {
        writer.push_row(row).expect("its rows");
    }
    let meta = BatchMeta {
        stream: scope.into(),
        ..BatchMeta::default()
    };
    crate::keys::signed(
        codec::finish_batch_with(
            writer,
            origin,
            SeqRange::new(lo, hi).expect("a test batch's range"),
            &meta,
            Compression::None,
        )
        .expect("a test batch"),
    )
}

/// The header of an encoded batch. Panics when it does not decode.
pub fn header(bytes: &[u8]) -> BatchHeader {
    codec::decode_header(bytes, &Limits::default()).expect("a test batch's header")
}

/// What holding `batches` covers: each origin's ranges advanced in seq order (ranges that leave
/// a gap are skipped, as a store would refuse them).
pub fn vector_of(batches: &[Vec<u8>]) -> VersionVector {
    let mut headers: Vec<BatchHeader> = batches.iter().map(|b| header(b)).collect();
    headers.sort_by_key(|h| (h.stream_id(), h.range.lo));
    let mut v = VersionVector::new();
    for h in headers {
        let _ = v.advance(h.stream_id(), h.range);
    }
    v
}
