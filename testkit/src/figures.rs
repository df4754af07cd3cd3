//! How the benchmarks print a set of latencies.

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
