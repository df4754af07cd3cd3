//! Connections to one of a serving process's SQLite files, kept for reuse by whichever relay
//! needs one next: [`Pool`].
//!
//! A relay used to open its own mailbox and allowlist connections and keep them for as long as
//! its peer stayed connected. An SQLite connection costs a few hundred KiB once used (its
//! lookaside buffers, the first slab of its page cache, the parsed schema, cached statements),
//! and a device in live mode stays connected for hours while using it only when it pushes or
//! pulls: 49 idle live sessions cost the hub about 20 MiB that way (docs/performance.md, "Hub
//! memory per live session"). Relays now take a connection for the duration of one step (a
//! handshake, one message, one output window) and give it back; the pool keeps a few idle ones
//! so that steps do not reopen the file each time, and closes the rest.

use std::sync::Mutex;

/// Idle connections kept for reuse, at most `keep`.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    idle: Mutex<Vec<T>>,
    keep: usize,
}

impl<T> Pool<T> {
    /// An empty pool keeping at most `keep` idle connections.
    pub(crate) fn new(keep: usize) -> Pool<T> {
        Pool {
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A panic while holding the lock leaves a plain list of connections: still usable.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, or a new one from `open` when none is idle.
    pub(crate) fn take<E>(&self, open: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let idle = self.lock().pop();
        match idle {
            Some(c) => Ok(c),
            None => open(),
        }
    }

    /// Gives a connection back: kept when fewer than `keep` are idle, else closed. A connection
    /// whose last use failed should be dropped instead (its state is unknown).
    pub(crate) fn give(&self, conn: T) {
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }

    /// Idle connections held now.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_keep_idle_connections_and_reuses_them() {
        let pool = Pool::new(2);
        let opened = std::cell::Cell::new(0);
        let open = || -> Result<u32, ()> {
            opened.set(opened.get() + 1);
            Ok(opened.get())
        };
        let (a, b, c) = (
            pool.take(open).unwrap(),
            pool.take(open).unwrap(),
            pool.take(open).unwrap(),
        );
        assert_eq!((a, b, c), (1, 2, 3));
        pool.give(a);
        pool.give(b);
        pool.give(c);
        assert_eq!(pool.idle(), 2, "the third is closed");
        assert_eq!(pool.take(open).unwrap(), 2);
        assert_eq!(pool.take(open).unwrap(), 1);
        assert_eq!(opened.get(), 3);
    }
}
