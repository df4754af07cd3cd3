//! Retry delays after failed syncs: exponential from `min` to `max`, each drawn in the upper
//! quarter below its step (`[0.75, 1.0] x min·2^n`, clamped to `[min, max]`), so delays grow
//! until the cap while retries of many devices do not fall in step.

use std::time::Duration;

/// Failed attempts so far and the bounds.
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn fail(&mut self) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << self.failures.min(30))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let mut b = [0u8; 4];
        let r = getrandom::getrandom(&mut b)
            .map_or(0.5, |()| u32::from_le_bytes(b) as f64 / u32::MAX as f64);
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

    #[test]
    fn delays_grow_until_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<u128> = (0..6).map(|_| b.fail().as_millis()).collect();
        assert_eq!(d[0], 100, "{d:?}");
        assert!(d.windows(2).take(3).all(|w| w[1] > w[0]), "{d:?}");
        assert!(d.iter().all(|&x| (100..=1000).contains(&x)), "{d:?}");
        assert!(d[5] >= 750, "{d:?}");
        b.reset();
        assert_eq!(b.fail().as_millis(), 100);
    }
}
