//! Decoding a sealed batch keeps the issue-16 goal: opening and decoding a sealed batch of W bytes
//! allocates at most `codec::decoded_budget(W)`, the opened copy of the body included. A counting
//! global allocator (this test binary's own, as in `decode_memory.rs`) measures the peak of live
//! bytes `decode_sealed` adds on its thread, over random sealed batches and sealed bodies made to
//! inflate (many empty groups behind DEFLATE, large raw bodies).
//!
//! An allocation that would take a thread's live bytes over 1 GiB fails (the process aborts), so
//! an unbounded decoder fails this test instead of exhausting the machine.

use outpost_protocol::batch::codec::{self, decoded_budget, DecodeError, Limits};
use outpost_protocol::batch::{BatchHeader, Compression, TableSchema};
use outpost_protocol::seal::{decode_sealed, seal_batch, DigestKey, ScopeKey, SealError};
use outpost_protocol::varint::write_u64;
use outpost_protocol::{Hlc, SeqRange, SiteId};
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

/// Opens `sealed` and checks the peak stays within its budget; returns the outcome.
fn open_bounded(sealed: &[u8]) -> Result<(), SealError> {
    let limit = decoded_budget(sealed.len());
    let key = |_: &str, epoch: u32| ScopeKey::new(epoch, [3; 32]);
    let (result, peak) =
        peak_of(|| decode_sealed(sealed, &Limits::default(), &dk(), key).map(drop));
    assert!(
        peak <= limit,
        "decode_sealed of a {}-byte batch allocated {peak} bytes, the budget is {limit}",
        sealed.len()
    );
    result
}

fn dk() -> DigestKey {
    DigestKey::from_bytes([0x5d; 32])
}

fn key() -> ScopeKey {
    ScopeKey::new(1, [3; 32]).unwrap()
}

/// An unsealed batch whose one table has no columns and whose body is `groups` empty groups of
/// it, compressed as asked (a correct header: lengths and hash).
fn empty_groups(groups: u64, compression: Compression) -> Vec<u8> {
    let mut body = Vec::new();
    write_u64(&mut body, groups);
    for _ in 0..groups {
        body.extend_from_slice(&[0, 0]); // table 0, no rows
    }
    let wire = match compression {
        Compression::None => body.clone(),
        Compression::Deflate => miniz_oxide::deflate::compress_to_vec(&body, 9),
    };
    let table = TableSchema {
        scope: None,
        name: "t".into(),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
    };
    let header = BatchHeader::crafted(
        SiteId([7; 16]),
        SeqRange::new(1, 1).unwrap(),
        Hlc::ZERO,
        vec![table],
        compression,
        body.len() as u32,
    );
    codec::assemble(&header, &wire)
}

#[test]
fn a_sealed_body_of_empty_groups_is_refused_within_its_budget() {
    // 3 M empty groups: 6 MB inflated, 144 MB decoded, about 6 KB sealed and compressed.
    let plain = empty_groups(3_000_000, Compression::Deflate);
    let sealed = seal_batch(&plain, &key(), &dk(), [1; 12]).unwrap();
    assert!(sealed.len() < 20_000, "{}", sealed.len());
    assert!(matches!(
        open_bounded(&sealed),
        Err(SealError::Decode(DecodeError::DecodedTooLarge { .. }))
    ));
}

#[test]
fn a_large_raw_sealed_body_decodes_within_its_budget() {
    // 1.5 M empty groups raw: 3 MB on the wire, 72 MB of groups, under 64 x 3 MB with the copy.
    let plain = empty_groups(1_500_000, Compression::None);
    let sealed = seal_batch(&plain, &key(), &dk(), [2; 12]).unwrap();
    open_bounded(&sealed).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_sealed_batches_and_corruptions_stay_within_budget(
        groups in 0u64..5_000,
        deflate in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let compression = if deflate { Compression::Deflate } else { Compression::None };
        let sealed = seal_batch(&empty_groups(groups, compression), &key(), &dk(), [4; 12]).unwrap();
        prop_assert!(open_bounded(&sealed).is_ok());
        let mut bad = sealed.clone();
        for (at, x) in flips {
            let i = at.index(bad.len());
            bad[i] ^= x;
        }
        let _ = open_bounded(&bad);
    }
}
