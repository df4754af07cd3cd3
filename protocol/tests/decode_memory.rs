//! Goal of issue 16: decoding any batch of W bytes on the wire allocates at most
//! min(256 MiB, max(64 MiB, 64·W)) (`codec::decoded_budget`). A counting global allocator (this
//! test binary's own) measures the peak of live bytes each decode adds on its thread, over random
//! valid batches, random corruptions of them, and adversarial batches made to inflate: the 261 KB
//! batch of finding 3 that decoded into about 5 GB, empty groups, empty rows, one-byte cells,
//! review contexts, wide keys.
//!
//! An allocation that would take a thread's live bytes over 1 GiB fails (the process aborts), so
//! a decoder without the budget fails this test instead of exhausting the machine.

use outpost_protocol::batch::codec::{
    self, decode, decode_header, decoded_budget, encode, verify, DecodeError, Limits,
};
use outpost_protocol::batch::{
    CellChange, CellPayload, ColumnSchema, Compression, RowChange, TableChanges, TableSchema,
};
use outpost_protocol::varint::write_u64;
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy as Merge, Value};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts live bytes per thread and their high-water mark.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// No thread of this test may hold more (an unbounded decoder would otherwise take the machine).
const CAP: usize = 1 << 30;

fn grow(bytes: usize) -> bool {
    LIVE.try_with(|live| {
        let now = live.get() + bytes;
        if now > CAP {
            return false;
        }
        live.set(now);
        PEAK.with(|p| p.set(p.get().max(now)));
        true
    })
    .unwrap_or(true)
}

fn shrink(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every method forwards to `System` with the caller's layout; the counters are
// thread-local `Cell`s with no destructor, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as both blocks live at once: a moving realloc holds both.
        if !grow(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `realloc`, passed on.
        let out = unsafe { System.realloc(ptr, layout, new_size) };
        if out.is_null() {
            shrink(new_size);
        } else {
            shrink(layout.size());
        }
        out
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the most live bytes it added on this thread.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

/// Decodes `bytes` every way a peer does and checks each stays within the goal's budget.
fn assert_bounded(bytes: &[u8]) -> Result<(), DecodeError> {
    let limit = decoded_budget(bytes.len());
    let limits = Limits::default();
    let (_, header) = peak_of(|| drop(decode_header(bytes, &limits)));
    let (_, verified) = peak_of(|| drop(verify(bytes, &limits)));
    let (result, decoded) = peak_of(|| decode(bytes, &limits).map(drop));
    for (what, peak) in [
        ("decode_header", header),
        ("verify", verified),
        ("decode", decoded),
    ] {
        assert!(
            peak <= limit,
            "{what} of a {}-byte batch allocated {peak} bytes, the budget is {limit}",
            bytes.len()
        );
    }
    result
}

fn site() -> SiteId {
    SiteId([7; 16])
}

fn column(name: &str, strategy: Merge) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: "TEXT".into(),
        strategy,
        not_null: false,
    }
}

/// A table with `keys` key columns and `values` value columns of `strategy`.
fn table(keys: usize, values: usize, strategy: Merge) -> TableSchema {
    let mut columns: Vec<_> = (0..keys)
        .map(|k| column(&format!("k{k}"), Merge::Lww))
        .collect();
    columns.extend((0..values).map(|v| column(&format!("v{v}"), strategy)));
    TableSchema {
        scope: None,
        name: "t".into(),
        columns,
        primary_key: (0..keys as u16).collect(),
        foreign_keys: vec![],
    }
}

/// A batch with `body` as its (uncompressed) body, compressed as asked, with a correct header
/// (length, hash); `base_hlc` is zero (right for bodies without cells).
fn batch_with_body(tables: Vec<TableSchema>, body: &[u8], compression: Compression) -> Vec<u8> {
    let wire_body = match compression {
        Compression::None => body.to_vec(),
        Compression::Deflate => deflate_zeros_aware(body),
    };
    batch_with_wire_body(tables, body, wire_body, compression)
}

fn batch_with_wire_body(
    tables: Vec<TableSchema>,
    body: &[u8],
    wire_body: Vec<u8>,
    compression: Compression,
) -> Vec<u8> {
    let header = outpost_protocol::batch::BatchHeader::crafted(
        site(),
        SeqRange::new(1, 1).unwrap(),
        Hlc::ZERO,
        tables,
        compression,
        body.len() as u32,
    );
    codec::assemble(&header, &wire_body)
}

fn deflate_zeros_aware(body: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(body, 9)
}

/// Raw DEFLATE of `prefix` followed by `zeros` zero bytes, made without holding the whole body:
/// one sync-flushed stream per MiB (each starts afresh; back-references stay inside it), then an
/// empty final block.
fn deflate_prefix_then_zeros(prefix: &[u8], zeros: usize) -> Vec<u8> {
    use miniz_oxide::deflate::core::{compress, create_comp_flags_from_zip_params};
    use miniz_oxide::deflate::core::{CompressorOxide, TDEFLFlush, TDEFLStatus};
    let chunk = 1 << 20;
    let sync = |data: &[u8]| -> Vec<u8> {
        let mut c = CompressorOxide::new(create_comp_flags_from_zip_params(9, -15, 0));
        let mut out = vec![0u8; data.len() / 100 + 4096];
        let (status, used, written) = compress(&mut c, data, &mut out, TDEFLFlush::Sync);
        assert_eq!((status, used), (TDEFLStatus::Okay, data.len()));
        out.truncate(written);
        out
    };
    let mut first = prefix.to_vec();
    first.resize(prefix.len() + chunk.min(zeros), 0);
    let mut out = sync(&first);
    let mut left = zeros - chunk.min(zeros);
    let whole = sync(&vec![0u8; chunk]);
    while left >= chunk {
        out.extend_from_slice(&whole);
        left -= chunk;
    }
    if left > 0 {
        out.extend_from_slice(&sync(&vec![0u8; left]));
    }
    // An empty final block with fixed codes: BFINAL=1, BTYPE=01, end-of-block (7 zero bits).
    out.extend_from_slice(&[0x03, 0x00]);
    out
}

/// Finding 3, reproduced at full size: a 256 MiB body of 2-byte empty groups, compressed to about
/// 260 KB. Each group decoded into a 32-byte struct: ~4 GiB plus the 256 MiB body, on every hub
/// (which only hashed it), device and cloud. Now every check refuses it from the header and
/// lengths alone, before inflating anything.
#[test]
fn the_261_kb_batch_of_empty_groups_is_refused_before_inflating() {
    let body_len = 256usize << 20;
    let groups = (body_len - 5) / 2;
    let mut prefix = Vec::new();
    write_u64(&mut prefix, groups as u64);
    let zeros = body_len - prefix.len();
    let wire_body = deflate_prefix_then_zeros(&prefix, zeros);
    let header = outpost_protocol::batch::BatchHeader::crafted(
        site(),
        SeqRange::new(1, 1).unwrap(),
        Hlc::ZERO,
        vec![table(1, 1, Merge::Lww)],
        Compression::Deflate,
        body_len as u32,
    );
    let bytes = codec::assemble(&header, &wire_body);
    println!("finding 3 batch: {} bytes on the wire", bytes.len());
    assert!(bytes.len() < 2 << 20, "{} bytes", bytes.len());
    let limit = decoded_budget(bytes.len());
    assert_eq!(limit, 64 << 20);
    assert_eq!(
        codec::check_limits(&header, bytes.len()),
        Err(DecodeError::DecodedTooLarge { limit })
    );
    assert_eq!(
        assert_bounded(&bytes),
        Err(DecodeError::DecodedTooLarge { limit })
    );
}

/// The same attack scaled to fit the old limits' blind spot: a 4 MiB body of empty groups
/// (2 million of them) compressed to a few KB. The old decoder inflated it and allocated 64 MiB of
/// groups on top; now the groups are charged before they are allocated and the batch is refused.
#[test]
fn empty_groups_are_charged_before_they_are_allocated() {
    let groups = 2usize << 20;
    let mut body = Vec::new();
    write_u64(&mut body, groups as u64);
    body.resize(body.len() + 2 * groups, 0);
    let bytes = batch_with_body(vec![table(1, 1, Merge::Lww)], &body, Compression::Deflate);
    let header = decode_header(&bytes, &Limits::default()).unwrap();
    assert_eq!(codec::check_limits(&header, bytes.len()), Ok(()));
    // A relay verifies it (length, SHA-256) through a 32 KiB window, not a 4 MiB buffer.
    let (verified, peak) = peak_of(|| verify(&bytes, &Limits::default()).map(drop));
    assert_eq!(verified, Ok(()));
    assert!(peak < 128 << 10, "verify allocated {peak} bytes");
    let limit = decoded_budget(bytes.len());
    assert_eq!(
        assert_bounded(&bytes),
        Err(DecodeError::DecodedTooLarge { limit })
    );
}

/// Empty rows (one byte each: flags "all columns" of a table without value columns) cost 56 bytes
/// each decoded; one-byte cells 72. Raw bodies of them decode within the budget or are refused,
/// never beyond.
#[test]
fn dense_rows_and_cells_stay_within_the_budget() {
    for (rows, values) in [
        (1usize << 20, 0usize),
        (3 << 20, 0),
        (1 << 14, 64),
        (1 << 16, 64),
    ] {
        let t = table(0, values, Merge::Counter);
        let mut body = Vec::new();
        write_u64(&mut body, 1);
        write_u64(&mut body, 0);
        write_u64(&mut body, rows as u64);
        for _ in 0..rows {
            body.push(1 << 2); // existence 0, form "all"
            if values > 0 {
                body.extend_from_slice(&[0, 0]); // the row clock: delta 0, counter 0
                body.extend(std::iter::repeat_n(0u8, values)); // counters of 0
            }
        }
        for compression in [Compression::None, Compression::Deflate] {
            let bytes = batch_with_body(vec![t.clone()], &body, compression);
            let r = assert_bounded(&bytes);
            println!(
                "{rows} rows x {values} cells, {compression:?}: {} bytes on the wire: {:?}",
                bytes.len(),
                r.as_ref().err()
            );
        }
    }
}

/// Review contexts (18 bytes on the wire, 24 decoded) and wide keys of NULLs (1 byte, 32
/// decoded).
#[test]
fn review_contexts_and_wide_keys_stay_within_the_budget() {
    let mut body = Vec::new();
    write_u64(&mut body, 1);
    write_u64(&mut body, 0);
    write_u64(&mut body, 1);
    body.push(1 << 2);
    body.extend_from_slice(&[0, 0]);
    body.push(0); // NULL value
    let n = 200_000;
    write_u64(&mut body, n);
    for _ in 0..n {
        body.extend_from_slice(&[0u8; 16]);
        body.extend_from_slice(&[0, 0]);
    }
    let bytes = batch_with_body(
        vec![table(0, 1, Merge::Review)],
        &body,
        Compression::Deflate,
    );
    assert_bounded(&bytes).ok();

    let keys = 20_000;
    let mut body = Vec::new();
    write_u64(&mut body, 1);
    write_u64(&mut body, 0);
    write_u64(&mut body, 20);
    for _ in 0..20 {
        body.push(0); // form "mask"
        body.extend(std::iter::repeat_n(0u8, keys)); // NULL key values
        body.push(0); // empty mask
    }
    let bytes = batch_with_body(
        vec![table(keys, 0, Merge::Lww)],
        &body,
        Compression::Deflate,
    );
    assert_bounded(&bytes).ok();
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("SQLite has no NaN", |f| !f.is_nan())
            .prop_map(Value::Real),
        ".{0,40}".prop_map(Value::Text),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..4000).prop_map(Value::Blob),
    ]
}

const STRATEGIES: [Merge; 4] = [Merge::Lww, Merge::RowLww, Merge::Counter, Merge::Review];

/// A random valid batch: one table, its rows, compressed or not.
fn valid_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..3,
        proptest::collection::vec(0usize..4, 0..40),
        proptest::collection::vec((value(), any::<u64>(), any::<u64>()), 0..300),
        any::<bool>(),
    )
        .prop_map(|(keys, strategies, rows, deflate)| {
            let mut t = table(keys, 0, Merge::Lww);
            t.columns.extend(
                strategies
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| column(&format!("v{i}"), STRATEGIES[s])),
            );
            let n_values = strategies.len();
            let rows = rows
                .into_iter()
                .map(|(v, mask, clock)| RowChange {
                    key: (0..keys)
                        .map(|k| if k == 0 { v.clone() } else { Value::Null })
                        .collect(),
                    existence: clock % 3,
                    cells: (0..n_values)
                        .filter(|c| mask >> (c % 64) & 1 == 1)
                        .map(|c| CellChange {
                            column: c as u16,
                            hlc: Hlc::new(1_700_000_000_000 + clock % 1000, 0),
                            payload: match STRATEGIES[strategies[c]] {
                                Merge::Counter => CellPayload::Counter(clock as i64),
                                Merge::Review => CellPayload::Review {
                                    value: v.clone(),
                                    context: vec![(site(), Hlc::new(1, 0))],
                                },
                                _ => CellPayload::Value(v.clone()),
                            },
                        })
                        .collect(),
                })
                .collect();
            let compression = if deflate {
                Compression::Deflate
            } else {
                Compression::None
            };
            encode(
                site(),
                SeqRange::new(1, 9).unwrap(),
                vec![t],
                &[TableChanges {
                    credit: None,
                    table: 0,
                    rows,
                }],
                compression,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn valid_batches_decode_within_the_budget(bytes in valid_batch()) {
        prop_assert!(assert_bounded(&bytes).is_ok());
    }

    #[test]
    fn corrupted_batches_stay_within_the_budget(
        bytes in valid_batch(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = bytes;
        for (at, b) in edits {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        let _ = assert_bounded(&bytes);
    }

    #[test]
    fn random_bytes_stay_within_the_budget(
        tail in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let mut bytes = codec::MAGIC.to_vec();
        bytes.push(codec::FORMAT);
        bytes.extend_from_slice(&tail);
        let _ = assert_bounded(&bytes);
    }
}
