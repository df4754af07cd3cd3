//! Small encoded batches for tests that route batches without reading them: an empty body (the
//! hub, the mailbox and the session never read bodies) and a table named for the range, so every
//! batch's bytes, and so its hash, are distinct.

use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{BatchHeader, Compression, TableSchema};
use outpost_protocol::{SeqRange, SiteId, VersionVector};

/// An encoded batch of `origin` for `lo..=hi`. Panics on `lo > hi` or `lo == 0`.
pub fn batch(origin: SiteId, lo: u64, hi: u64) -> Vec<u8> {
    let table = TableSchema {
        name: format!("t{lo}_{hi}"),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
    };
    codec::encode(
        origin,
        SeqRange::new(lo, hi).expect("a test batch's range"),
        vec![table],
        &[],
        Compression::None,
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
    headers.sort_by_key(|h| (h.origin, h.range.lo));
    let mut v = VersionVector::new();
    for h in headers {
        let _ = v.advance(h.origin, h.range);
    }
    v
}
