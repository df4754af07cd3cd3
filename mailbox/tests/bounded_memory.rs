//! Serving streams bodies: iterating over many large batches must not hold them all in memory.
//! Alone in its test binary so the process's peak RSS is this test's.

mod support;

use outpost_protocol::VersionVector;
use support::{batch, site};

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[test]
fn serving_many_large_batches_keeps_memory_bounded() {
    const BATCHES: u64 = 64;
    const SIZE: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("big.db"));
    let a = site(3);
    for seq in 1..=BATCHES {
        mb.store(vec![batch(a, seq, seq, SIZE)]).unwrap();
    }
    let before = peak_rss_kib();
    let mut total = 0u64;
    let mut count = 0;
    for b in mb
        .batches_for(
            &VersionVector::new(),
            None,
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap()
    {
        let b = b.unwrap();
        total += b.bytes.len() as u64;
        count += 1;
    }
    let grown = peak_rss_kib().saturating_sub(before);
    assert_eq!(count, BATCHES);
    assert!(total >= BATCHES * SIZE as u64);
    // Holding them all would add 64 MiB; streaming adds about one batch.
    assert!(
        grown < 16 * 1024,
        "peak RSS grew by {grown} KiB while serving {total} bytes"
    );
    println!("served {total} bytes; peak RSS grew by {grown} KiB");
}
