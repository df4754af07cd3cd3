//! Per-connection state: what every Outpost function of one connection shares.
//!
//! One [`Session`] is made when the extension is loaded on a connection and handed to every SQL
//! function and to the `outpost_clock` table registered there (`functions.rs`,
//! `clock_table.rs`). It holds:
//! - the capture switch: false while `outpost_apply` writes a peer's changes, so the triggers'
//!   `WHEN outpost_capturing()` skips them and received writes keep their origin;
//! - the connection's clock ([`ConnClock`], `clock.rs`);
//! - what one call leaves for the next call on the same connection ([`Leftover`]): where a
//!   chunked export stopped (`export.rs`), what an apply learned of rows without state
//!   (`apply/carry.rs`), the key directory (`sync/control.rs`), the device's grant
//!   (`scope_check.rs`). Each owner checks that what it left still holds before using it.
//!
//! It depends on nothing of the engine (only `clock.rs`, `ffi.rs` and `error.rs` lie below it),
//! so the registration wrapper and the virtual table can hold it without depending on the engine
//! modules that use it.

use crate::clock::ConnClock;
use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// State shared by all functions of one connection.
pub(crate) struct Session {
    capturing: AtomicBool,
    /// The clock of this connection's local writes.
    pub(crate) clock: ConnClock,
    /// Where a chunked export stopped (`export.rs`).
    pub(crate) export: Leftover,
    /// What the last apply knew of rows without state (`apply/carry.rs`).
    pub(crate) apply: Leftover,
    /// The per-row sync state last read (`pending.rs`).
    pub(crate) pending: Leftover,
    /// The key directory last loaded, with what it was loaded from (`sync/control.rs`).
    pub(crate) directory: Leftover,
    /// This device's grant as the write-time scope checks last read it (`scope_check.rs`).
    pub(crate) grant: Leftover,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            capturing: AtomicBool::new(true),
            clock: ConnClock::default(),
            export: Leftover::default(),
            apply: Leftover::default(),
            pending: Leftover::default(),
            directory: Leftover::default(),
            grant: Leftover::default(),
        }
    }
}

/// Restores capture when dropped (also on early return or error).
pub(crate) struct Suppress<'a>(&'a Session);

impl Drop for Suppress<'_> {
    fn drop(&mut self) {
        self.0.capturing.store(true, Ordering::SeqCst);
    }
}

impl Session {
    pub(crate) fn capturing(&self) -> bool {
        self.capturing.load(Ordering::Relaxed)
    }

    /// Stops trigger capture until the guard drops.
    pub(crate) fn suppress(&self) -> Suppress<'_> {
        self.capturing.store(false, Ordering::SeqCst);
        Suppress(self)
    }
}

/// What one call leaves on the connection for a later call: a cache, never the only copy of
/// anything. Its owner module alone knows the type it keeps (this module stays below the
/// engine), and taking it as another type finds nothing, which is a cache miss, not an error.
#[derive(Default)]
pub(crate) struct Leftover(Mutex<Option<Box<dyn Any + Send>>>);

impl Leftover {
    /// Takes what was left, if it is a `T`; the slot is empty afterwards either way.
    pub(crate) fn take<T: Any>(&self) -> Option<T> {
        let kept = self.0.lock().ok()?.take()?;
        kept.downcast::<T>().ok().map(|b| *b)
    }

    /// Runs `f` on what was left, in place, if it is a `T` (`None` otherwise): for a cache read
    /// once per written row, where taking and putting back would allocate each time.
    pub(crate) fn with<T: Any, R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        match self.0.lock() {
            Ok(mut slot) => f(slot.as_mut().and_then(|b| b.downcast_mut::<T>())),
            Err(_) => f(None),
        }
    }

    /// Empties the slot: what was left no longer holds.
    pub(crate) fn forget(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }

    /// Leaves `value` for a later call, in place of what was there.
    pub(crate) fn put<T: Any + Send>(&self, value: T) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Box::new(value));
        }
    }
}
