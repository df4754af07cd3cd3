//! What a test reads from its environment: the seed of a randomized test (`OUTPOST_SEED`, else
//! a fresh one, printed so a failure can be replayed) and the numbers benchmarks and long tests
//! are tuned with (`OUTPOST_OPS`, `OUTPOST_BENCH_RUNS`, ...).

use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::time::SystemTime;

/// `var` parsed, or `default` when it is unset or does not parse.
pub fn number<T: FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The seed of a randomized test: `OUTPOST_SEED`, else a fresh one. Printed (the harness shows
/// it with a failure) with how to replay the run.
pub fn seed() -> u64 {
    let seed = std::env::var("OUTPOST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one(SystemTime::now()));
    eprintln!("seed {seed} (OUTPOST_SEED={seed} repeats this run)");
    seed
}
