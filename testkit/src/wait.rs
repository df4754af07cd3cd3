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

/// Polls `ok` every `every` until it holds, for at most `within`; panics naming `what` after
/// that.
pub fn wait_until(what: &str, within: Duration, every: Duration, mut ok: impl FnMut() -> bool) {
    wait_for(what, within, every, || ok().then_some(()))
}
