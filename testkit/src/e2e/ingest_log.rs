//! What a cloud's log (`Cloud::start` appends its stderr to `DATA.log`) says about its applies:
//! the window from the first to the last applied batch and the transactions they took, which the
//! ingest benchmarks print beside the end-to-end time.

/// The applies a cloud's log records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applies {
    /// Batches applied ("tenant applied batch" lines).
    pub batches: usize,
    /// Seconds from the first to the last applied batch (the last is logged just after its
    /// commit made the rows visible); 0 with fewer than two.
    pub window_s: f64,
    /// The batches of each group applied in one transaction (`tenant/group.rs`).
    pub groups: Vec<usize>,
    /// Batches applied alone, in a transaction of their own.
    pub alone: usize,
}

/// Reads `log`, the text of a cloud's log file.
pub fn applies(log: &str) -> Applies {
    let applied: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("tenant applied batch"))
        .filter_map(seconds_of_day)
        .collect();
    let groups = log
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("tenant applied ")?;
            rest.split_once(" batches in one transaction")?
                .0
                .parse()
                .ok()
        })
        .collect();
    let alone = log
        .lines()
        .filter(|l| l.contains("tenant applied batch") && !l.contains("(in a group of"))
        .count();
    Applies {
        batches: applied.len(),
        window_s: match (applied.first(), applied.last()) {
            (Some(first), Some(last)) => last - first,
            _ => 0.0,
        },
        groups,
        alone,
    }
}

/// A log line's time (`2026-11-23T11:33:02.231Z ...`) as seconds of the day.
fn seconds_of_day(line: &str) -> Option<f64> {
    let t = line.get(11..23)?;
    let h: f64 = t.get(0..2)?.parse().ok()?;
    let m: f64 = t.get(3..5)?.parse().ok()?;
    let s: f64 = t.get(6..12)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_groups_come_from_the_apply_lines() {
        let log = "2026-11-23T11:33:02.231Z INFO tenant applied batch a 1-5 (in a group of 2)\n\
                   2026-11-23T11:33:02.731Z INFO tenant applied batch b 1-5 (in a group of 2)\n\
                   2026-11-23T11:33:02.731Z INFO tenant applied 2 batches in one transaction\n\
                   2026-11-23T11:33:04.000Z INFO tenant applied batch a 6-9\n";
        let a = applies(log);
        assert_eq!(a.batches, 3);
        assert!((a.window_s - 1.769).abs() < 1e-6, "{}", a.window_s);
        assert_eq!(a.groups, vec![2]);
        assert_eq!(a.alone, 1);
    }
}
