//! Waking on captured writes: every captured write notifies channel [`CHANNEL`] with its stream
//! (`pg_notify` in `capture.sql`, delivered when the writing transaction commits, once per
//! stream and transaction), so a serving process can push to live devices within a second of a
//! back-office commit instead of polling the outbox.
//!
//! A [`Listener`] owns a connection of its own: notifications arrive on the connection that
//! `LISTEN`s, between the statements it runs, so it must not be the one serving queries.

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::Client;
use std::fmt;
use std::time::Duration;

/// The channel captured writes notify.
pub const CHANNEL: &str = "outpost_changes";

/// Why listening failed.
#[derive(Debug)]
pub struct ListenError {
    /// What was being done.
    pub doing: &'static str,
    /// PostgreSQL's error.
    pub source: ::postgres::Error,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.doing)
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A connection listening on [`CHANNEL`].
pub struct Listener {
    client: Client,
}

impl Listener {
    /// Starts listening on `client` (a connection of its own) for captured writes.
    pub fn new(client: Client) -> Result<Listener, ListenError> {
        Listener::on(client, CHANNEL)
    }

    /// Starts listening on `client` (a connection of its own) on `channel` (an identifier):
    /// [`CHANNEL`], or the mailbox's commits (`outpost_mailbox::COMMIT_CHANNEL`), which another
    /// process serving the tenant notifies.
    pub fn on(mut client: Client, channel: &str) -> Result<Listener, ListenError> {
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .map_err(|source| ListenError {
                doing: "listening for notifications (LISTEN)",
                source,
            })?;
        Ok(Listener { client })
    }

    /// Waits until a captured write commits or `timeout` passes. Returns the streams named by
    /// the notifications that had arrived (each once, in arrival order; empty: the timeout
    /// passed).
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<String>, ListenError> {
        let failed = |source| ListenError {
            doing: "waiting for captured writes' notifications",
            source,
        };
        let mut streams: Vec<String> = Vec::new();
        let mut note = |payload: &str| {
            if !streams.iter().any(|s| s == payload) {
                streams.push(payload.to_string());
            }
        };
        let mut notifications = self.client.notifications();
        if let Some(n) = notifications.timeout_iter(timeout).next().map_err(failed)? {
            note(n.payload());
        }
        // Whatever else already arrived, without waiting.
        let mut pending = notifications.iter();
        while let Some(n) = pending.next().map_err(failed)? {
            note(n.payload());
        }
        Ok(streams)
    }
}
