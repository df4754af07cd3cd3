//! The memory one serving process lets its peers fill with pushes, shared by all its
//! connections: [`StagingBudget`].
//!
//! A pushed batch is held in memory from its first byte until its commit: the part of its message
//! received so far, the whole message once it arrived, then the session's staged copy. Each
//! connection already has its own cap (64 MiB staged), but a cap per connection multiplies by the
//! connections a box accepts (64 × 64 MiB on a Pi-class hub); the budget bounds the sum. Each
//! connection holds a [`Reservation`] it resizes to what it holds after every read
//! ([`Reservation::resize`]); growing past the budget fails with [`StagingFull`], which the relay
//! answers with a `Busy` error (retry later): the bytes are refused before they are kept, and
//! nothing already staged by another connection is touched. Dropping the reservation (the
//! connection ended, or committed) gives its bytes back.
//!
//! The relay counts a message of several frames twice while it is decoded (decoding copies the
//! batch out of it). What the budget does not count is bounded per connection and stated in
//! docs/hub.md ("Memory"): a one-frame message (at most 64 KiB) while it is handled, the one
//! batch at a time SQLite copies while committing, and a pull's output window (about 1 MiB plus
//! one batch).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The staging budget of a serving process unless its box sets another: 32 MiB, so that two
/// devices each pushing a full session (16 MiB, `outpost_sync`'s push budget) are staged at
/// once, and a hub in a 128 MiB guest keeps most of its memory for everything else
/// (docs/hub.md, "Memory").
pub const DEFAULT_STAGING_BUDGET: usize = 32 << 20;

/// Bytes all connections of one serving process may hold for pushes not yet committed.
#[derive(Debug)]
pub struct StagingBudget {
    limit: usize,
    held: AtomicUsize,
}

/// A reservation could not grow: the budget is full (`Busy`, retry later), or the connection
/// alone asks for more than the whole budget (`TooLarge`: retrying will not help).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagingFull {
    /// Bytes this connection asked to hold in total.
    pub wanted: usize,
    /// Bytes held by all connections when it asked (this one's included).
    pub held: usize,
    /// The budget.
    pub limit: usize,
}

impl StagingFull {
    /// True when no other connection's commit can make room: the connection alone wants more
    /// than the budget.
    pub fn exceeds_budget(&self) -> bool {
        self.wanted > self.limit
    }
}

impl fmt::Display for StagingFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exceeds_budget() {
            write!(
                f,
                "push too large: it needs {} bytes in memory, the server stages at most {} for all its peers; push fewer or smaller batches per session",
                self.wanted, self.limit
            )
        } else {
            write!(
                f,
                "busy: the server's memory for pushes is full ({} of {} bytes held by sessions in progress); retry in a few seconds",
                self.held, self.limit
            )
        }
    }
}

impl std::error::Error for StagingFull {}

impl StagingBudget {
    /// A budget of `limit` bytes, nothing held.
    pub fn new(limit: usize) -> Arc<StagingBudget> {
        Arc::new(StagingBudget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now by all connections.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// A connection's empty reservation against this budget.
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }

    fn grow(&self, by: usize, wanted: usize) -> Result<(), StagingFull> {
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(by).filter(|&total| total <= self.limit)
            })
            .map(|_| ())
            .map_err(|held| StagingFull {
                wanted,
                held,
                limit: self.limit,
            })
    }

    fn shrink(&self, by: usize) {
        self.held.fetch_sub(by, Ordering::SeqCst);
    }
}

/// One connection's share of a [`StagingBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<StagingBudget>,
    held: usize,
}

impl Reservation {
    /// Bytes this reservation holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds exactly `bytes` from now on. Shrinking always succeeds; growing fails, holding what
    /// it held before, when the budget cannot give the difference.
    pub fn resize(&mut self, bytes: usize) -> Result<(), StagingFull> {
        if bytes > self.held {
            self.budget.grow(bytes - self.held, bytes)?;
        } else {
            self.budget.shrink(self.held - bytes);
        }
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.shrink(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_limit_and_give_back_on_drop() {
        let budget = StagingBudget::new(100);
        let mut a = budget.reserve();
        let mut b = budget.reserve();
        a.resize(60).unwrap();
        let full = b.resize(50).unwrap_err();
        assert_eq!(
            full,
            StagingFull {
                wanted: 50,
                held: 60,
                limit: 100
            }
        );
        assert!(!full.exceeds_budget());
        assert!(full.to_string().starts_with("busy:"), "{full}");
        assert_eq!(b.held(), 0, "a refused growth keeps what was held");
        b.resize(40).unwrap();
        assert_eq!(budget.held(), 100);
        a.resize(10).unwrap();
        assert_eq!(budget.held(), 50);
        drop(a);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_reservation_larger_than_the_budget_is_too_large_not_busy() {
        let budget = StagingBudget::new(100);
        let full = budget.reserve().resize(101).unwrap_err();
        assert!(full.exceeds_budget());
        assert!(full.to_string().starts_with("push too large"), "{full}");
        assert_eq!(budget.held(), 0);
    }
}
