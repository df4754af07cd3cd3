//! Waiting for a condition with a deadline: a closure polled until it holds, and a test failure
//! naming what was awaited when it never does.

use std::time::{Duration, Instant};

/// Polls `f` every `every` until it returns `Some` (its value), for at most `within`; panics
/// naming `what` after that.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({within:?})"
        );
        std::thread::sleep(every);
    }
}

/// Polls `ok` every 50 ms until it holds, for at most `limit`; panics naming `what` after that.
/// Returns how long it took.
pub fn within(what: &str, limit: Duration, ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    wait_until(what, limit, Duration::from_millis(50), ok);
    start.elapsed()
}

/// Polls `ok` every `every` until it holds, for at most `within`; panics naming `what` after
/// that.
pub fn wait_until(what: &str, within: Duration, every: Duration, mut ok: impl FnMut() -> bool) {
    wait_for(what, within, every, || ok().then_some(()))
}
