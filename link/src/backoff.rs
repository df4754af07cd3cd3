//! Retry delays after failed attempts: exponential from `min` to `max`, each drawn in the upper
//! quarter below its step (`[0.75, 1.0] × min·2^n`, clamped to `[min, max]`), so delays grow
//! until the cap while the retries of many clients cut off together do not fall in step.
//!
//! Why this jitter (the CLI's) and not the hub uplink's former "upper half of the step": it
//! keeps every delay inside the bounds the operator configured (`--backoff-min-ms`,
//! `--uplink-min-ms` are floors: the first retry waits exactly `min`, never half of it), and a
//! quarter of the step already spreads a crowd of retries over seconds once the steps grow.

use std::time::Duration;

/// Failed attempts in a row and the bounds of the delay after the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays from `min` to `max` (`max` below `min` is taken as `min`), no failure yet.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The same bounds, continuing after `failures` failures in a row (a restarted process
    /// that recorded them).
    pub fn with_failures(self, failures: u32) -> Backoff {
        Backoff { failures, ..self }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// One more failure: the delay before the next attempt, drawn from the OS's randomness
    /// (the middle of the range if it fails).
    pub fn fail(&mut self) -> Duration {
        let mut b = [0u8; 4];
        let random = match getrandom::getrandom(&mut b) {
            Ok(()) => u32::from_le_bytes(b),
            Err(_) => u32::MAX / 2,
        };
        self.fail_with(random)
    }

    /// [`Backoff::fail`] with the randomness given: `0` draws the bottom of the step's range,
    /// `u32::MAX` its top.
    pub fn fail_with(&mut self, random: u32) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << self.failures.min(30))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let r = f64::from(random) / f64::from(u32::MAX);
        step.mul_f64(0.75 + 0.25 * r).clamp(self.min, self.max)
    }

    /// A success (or a sign the network came back): start again from `min`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn delays_double_from_min_to_max_drawn_in_the_upper_quarter_of_each_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for step in [100, 200, 400, 800, 1000, 1000] {
            let mut low = b.clone();
            let mut high = b.clone();
            let (lo, hi) = (ms(low.fail_with(0)), ms(high.fail_with(u32::MAX)));
            assert_eq!(hi, step);
            assert_eq!(lo, (step * 3 / 4).max(100), "step {step}");
            let d = ms(b.fail_with(0x1234_5678));
            assert!((lo..=hi).contains(&d), "step {step}: {d}");
        }
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn the_first_delay_is_min_and_a_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<u128> = (0..6).map(|_| ms(b.fail())).collect();
        assert_eq!(d[0], 100, "{d:?}");
        assert!(d.windows(2).take(3).all(|w| w[1] > w[0]), "{d:?}");
        assert!(d.iter().all(|&x| (100..=1000).contains(&x)), "{d:?}");
        assert!(d[5] >= 750, "{d:?}");
        b.reset();
        assert_eq!(ms(b.fail()), 100);
    }

    #[test]
    fn a_restarted_backoff_continues_and_the_steps_never_overflow() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let mut resumed = b.clone().with_failures(3);
        assert_eq!(resumed.fail_with(u32::MAX), Duration::from_secs(8));
        let mut far = b.with_failures(u32::MAX);
        assert_eq!(far.fail_with(u32::MAX), Duration::from_secs(300));
        assert_eq!(far.failures(), u32::MAX);
        let mut inverted = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(inverted.fail_with(0), Duration::from_secs(2));
    }
}
