//! What the benchmarks measure and print: commit-to-seen latencies between live devices, and a
//! set of them as median, p90, min and max.

use crate::e2e::device_db::{appears, n, DeviceDb};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Median, p90, min and max of `ms` (milliseconds), as text. Panics on an empty set.
pub fn summary(ms: &[f64]) -> String {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((p * (sorted.len() - 1) as f64).round()) as usize];
    format!(
        "median {:.0} ms, p90 {:.0} ms, min {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.9),
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

/// Commit-to-seen latencies in ms: `samples` rows `{tag}{i}` inserted into `from`'s `patients`,
/// each timed until `to` holds it (polled every 2 ms; panics after `wait`), then `pause(i)`
/// before the next (spread over the poll and notify periods, not phase-locked to them).
pub fn propagation(
    from: &DeviceDb,
    to: &DeviceDb,
    tag: &str,
    samples: u64,
    wait: Duration,
    pause: impl Fn(u64) -> Duration,
) -> Vec<f64> {
    let mut ms = Vec::new();
    for i in 0..samples {
        let id = format!("{tag}{i}");
        let t0 = Instant::now();
        from.exec(&format!(
            "INSERT INTO patients(id, name, village) VALUES ('{id}', 'n', 'v')"
        ));
        appears(to, "patients", &id, wait, Duration::from_millis(2))
            .unwrap_or_else(|| panic!("{id} did not arrive within {wait:?}"));
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(pause(i));
    }
    ms
}

/// Prints what the live calls of devices A and B reported: pushed, pulled, live sessions.
pub fn print_live_calls(a: &Value, b: &Value) {
    println!(
        "A: pushed {} in {} live sessions; B: pulled {} ({} live sessions)",
        n(a, "pushed"),
        n(a, "live_sessions"),
        n(b, "pulled"),
        n(b, "live_sessions")
    );
}
