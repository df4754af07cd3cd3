//! Reading a two-part enrolment code allocates in proportion to the code's text, never to a
//! length or count the code claims: at most [`budget`] of the text's length, whatever the text
//! (random text, the golden code with any byte changed, admissions that claim a million
//! addresses or list thousands, the widest grant, the largest keys). Text longer than any code
//! is refused before anything is allocated. Opening a code's keys allocates at most twice their
//! length. Plain codes (format 2) are read as before, within the same 8 KiB cap, and have their
//! own, looser bound ([`plain_budget`]). A counting global allocator (this test binary's own, as in `seal_memory.rs`) measures
//! the peak of live bytes each call adds on its thread.

use outpost_protocol::enroll_code::{
    base64url_encode, Admission, Code, CodeError, MAX_CODE_BYTES, MAX_CODE_CHARS, PREFIX,
};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::seal::code_keys::{open_code_keys, CodeSecret};
use outpost_protocol::seal::{DigestKey, KeyEntry, KeySet, ScopeKey};
use outpost_protocol::varint::write_u64;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
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

/// What reading a code of `chars` characters may allocate: its decoded bytes (three quarters of
/// the text), a second copy of them at most (the sealed keys, the admission's re-encoding for the
/// canonical check, the opened fields), and the fixed part of the admission's bounded lists (16
/// address and 64 scope-name headers, the grant's B-tree).
fn budget(chars: usize) -> usize {
    2 * chars + 8 * 1024
}

/// Reads `text` as a code and checks the peak stays within [`budget`]; returns the outcome and
/// the peak.
fn read_bounded(text: &str) -> (Result<Code, CodeError>, usize) {
    let (result, peak) = peak_of(|| Code::decode(text));
    let limit = budget(text.len());
    assert!(
        peak <= limit,
        "reading a code of {} characters allocated {peak} bytes, the budget is {limit}",
        text.len()
    );
    (result, peak)
}

/// A code's text around `content` (format byte first).
fn framed(content: &[u8]) -> String {
    let mut bytes = content.to_vec();
    bytes.extend_from_slice(&Sha256::digest(content)[..4]);
    format!("{PREFIX}{}", base64url_encode(&bytes))
}

/// A format-3 content around `admission`, with a secret and `keys` as its sealed keys.
fn two_part(admission: &[u8], keys: &[u8]) -> Vec<u8> {
    let mut out = vec![3u8];
    write_u64(&mut out, admission.len() as u64);
    out.extend_from_slice(admission);
    out.extend_from_slice(&[0x5c; 32]);
    out.extend_from_slice(keys);
    out
}

/// Admission fields by hand: `addresses` as given (with their count, or `claimed` instead), a
/// grant of `names` (every scope when empty), then a signature's worth of bytes.
fn admission(addresses: &[&[u8]], claimed: Option<u64>, names: &[Vec<u8>]) -> Vec<u8> {
    let hub = Keypair::from_secret(&[7; 32]).unwrap();
    let mut out = vec![0x5a; 16];
    out.push(65);
    out.extend_from_slice(hub.public().as_bytes());
    write_u64(&mut out, claimed.unwrap_or(addresses.len() as u64));
    for a in addresses {
        write_u64(&mut out, a.len() as u64);
        out.extend_from_slice(a);
    }
    out.extend_from_slice(&[0x77; 32]);
    write_u64(&mut out, 1_800_000_900);
    out.push(0); // no cloud
    if names.is_empty() {
        out.push(0);
    } else {
        out.push(1);
        write_u64(&mut out, names.len() as u64);
        for n in names {
            write_u64(&mut out, n.len() as u64);
            out.extend_from_slice(n);
        }
    }
    out.push(0); // enroll
    out.extend_from_slice(&[0xc1; 16]);
    out.extend_from_slice(&[0x42; 64]);
    out
}

/// A key set of `n` epochs of one scope.
fn keys(n: u32) -> KeySet {
    let digest = DigestKey::from_bytes([0x5d; 32]).digest("moshi");
    KeySet {
        digest_key: DigestKey::from_bytes([0x5d; 32]),
        entries: (1..=n)
            .map(|e| KeyEntry {
                scope: digest,
                key: ScopeKey::new(e, [e as u8; 32]).unwrap(),
            })
            .collect(),
    }
}

fn sealed_keys(n: u32, admission: &[u8]) -> Vec<u8> {
    outpost_protocol::seal::code_keys::seal_code_keys(
        &keys(n),
        &CodeSecret::from_bytes([0x5c; 32]),
        admission,
    )
    .unwrap()
}

#[test]
fn text_longer_than_any_code_is_refused_before_anything_is_allocated() {
    let text = format!("{PREFIX}{}", "A".repeat(4 << 20));
    let (result, peak) = peak_of(|| Code::decode(&text));
    assert_eq!(result, Err(CodeError::TooLong { chars: 4 << 20 }));
    assert_eq!(peak, 0);
    let longest = format!("{PREFIX}{}", "A".repeat(MAX_CODE_CHARS));
    assert!(read_bounded(&longest).0.is_err());
}

#[test]
fn hostile_admissions_are_read_within_the_budget() {
    let mut peaks = Vec::new();
    // A million addresses claimed, none present.
    let a = admission(&[], Some(1_000_000), &[]);
    let keys = sealed_keys(1, &a);
    let (r, peak) = read_bounded(&framed(&two_part(&a, &keys)));
    assert!(r.is_err());
    peaks.push(("a million addresses claimed", peak));
    // 1,900 one-byte addresses: counted, 16 kept, refused.
    let many: Vec<&[u8]> = vec![b"a"; 1_900];
    let a = admission(&many, None, &[]);
    assert!(a.len() <= 4096, "{}", a.len());
    let (r, peak) = read_bounded(&framed(&two_part(&a, &keys)));
    assert!(matches!(r, Err(CodeError::Admission(_))), "{r:?}");
    peaks.push(("1,900 addresses", peak));
    // 1,000 distinct two-byte scope names: counted, 64 kept, refused.
    let names: Vec<Vec<u8>> = (0..1_000u32)
        .map(|i| vec![b'a' + (i / 26 % 26) as u8, b'a' + (i % 26) as u8])
        .collect();
    let a = admission(&[], None, &names);
    let (r, peak) = read_bounded(&framed(&two_part(&a, &keys)));
    assert!(matches!(r, Err(CodeError::Admission(_))), "{r:?}");
    peaks.push(("1,000 scope names", peak));
    // The widest grant, 64 names of 16 bytes, and 16 long addresses, with the most keys that
    // fit: a code near the largest.
    let names: Vec<Vec<u8>> = (0..64)
        .map(|i| format!("scope-{i:010}").into_bytes())
        .collect();
    let long = [b'h'; 100];
    let addresses: Vec<&[u8]> = vec![&long; 16];
    let a = admission(&addresses, None, &names);
    let room = MAX_CODE_BYTES - 5 - 3 - a.len() - 32;
    let n = ((room - 50) / 52) as u32;
    let content = two_part(&a, &sealed_keys(n, &a));
    let text = framed(&content);
    let (r, peak) = read_bounded(&text);
    // The signature is not the minter's, but reading does not verify it.
    let Ok(Code::TwoPart(code)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(code.admission().scopes.names().len(), 64);
    assert!(content.len() + 4 > MAX_CODE_BYTES - 52, "{}", content.len());
    peaks.push(("the largest code", peak));
    for (what, peak) in peaks {
        println!("{what}: {peak} bytes");
    }
}

#[test]
fn every_changed_byte_of_a_code_is_read_within_the_budget() {
    let a = admission(&[b"192.168.1.20:7420"], None, &[b"moshi".to_vec()]);
    let content = two_part(&a, &sealed_keys(3, &a));
    let mut worst = 0;
    for i in 0..content.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut c = content.clone();
            c[i] ^= x;
            worst = worst.max(read_bounded(&framed(&c)).1);
        }
    }
    println!(
        "{} bytes of content: at most {worst} bytes allocated",
        content.len()
    );
}

#[test]
fn opening_keys_allocates_at_most_twice_their_length() {
    let adm = admission(&[], None, &[]);
    assert!(Admission::decode(&adm).is_ok());
    for n in [0, 1, 10, 150] {
        let sealed = sealed_keys(n, &adm);
        let secret = CodeSecret::from_bytes([0x5c; 32]);
        let (r, peak) = peak_of(|| open_code_keys(&sealed, &secret, &adm));
        assert_eq!(r.unwrap().entries.len(), n as usize);
        assert!(
            peak <= 2 * sealed.len(),
            "{n} keys: {peak} bytes for {}",
            sealed.len()
        );
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        let (r, peak) = peak_of(|| open_code_keys(&bad, &secret, &adm));
        assert!(r.is_err());
        assert!(peak <= sealed.len(), "{peak}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_text_is_read_within_the_budget(
        bytes in proptest::collection::vec(any::<u8>(), 0..9000),
        format in prop::sample::select(vec![0u8, 1, 3, 4, 255]),
    ) {
        let mut content = bytes;
        if let Some(first) = content.first_mut() {
            *first = format;
        }
        let _ = read_bounded(&framed(&content));
        let _ = read_bounded(&format!("{PREFIX}{}", base64url_encode(&content)));
    }

    #[test]
    fn any_plain_text_is_read_within_its_own_bound(
        bytes in proptest::collection::vec(any::<u8>(), 0..9000),
    ) {
        let mut content = vec![2u8];
        content.extend(bytes);
        let text = framed(&content);
        let (_, peak) = peak_of(|| Code::decode(&text));
        prop_assert!(peak <= plain_budget(text.len()), "{} characters: {}", text.len(), peak);
    }
}

/// Plain codes (format 2) decode as they always have (postcard into `EnrollCode`, addresses
/// unbounded in number), now within the 8 KiB cap: one byte of a code can be one empty address,
/// 24 bytes of list in memory, so their bound is 18 bytes per character, not [`budget`].
fn plain_budget(chars: usize) -> usize {
    18 * chars + 8 * 1024
}

#[test]
fn a_plain_code_listing_thousands_of_addresses_stays_within_its_own_bound() {
    let hub = Keypair::from_secret(&[7; 32]).unwrap();
    let mut content = vec![2u8, 65];
    content.extend_from_slice(hub.public().as_bytes());
    content.extend_from_slice(&[0x5a; 16]);
    write_u64(&mut content, 6_000);
    content.extend(std::iter::repeat_n(0u8, 6_000));
    content.extend_from_slice(&[0x77; 32]);
    write_u64(&mut content, 1_800_000_900);
    content.push(0);
    let text = framed(&content);
    let (r, peak) = peak_of(|| Code::decode(&text));
    assert!(matches!(r, Ok(Code::Plain(_))), "{r:?}");
    println!(
        "plain, 6,000 addresses, {} characters: {peak} bytes",
        text.len()
    );
    assert!(peak <= plain_budget(text.len()), "{peak}");
}
