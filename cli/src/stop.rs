//! SIGTERM and SIGINT: a flag the worker checks between syncs. A sync in progress is interrupted
//! at its next SQLite statement (`sqlite3_interrupt`, from a watcher thread, not the handler):
//! SQLite rolls back the transaction that statement belongs to, so the database keeps every
//! chunk committed before and nothing of the one in flight, and the next sync resumes from the
//! vectors. A sync blocked on the network stops when its read times out.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers (once, at start).
pub fn install() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// True once SIGTERM or SIGINT arrived.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
