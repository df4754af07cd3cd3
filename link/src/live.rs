//! The live wait: after a live session's pull, stay connected and pull again on the peer's
//! `Notify`, until a deadline or until the caller has local news to push.
//!
//! ```text
//! LiveWait::next, one short read at a time (≤ poll):
//!   Notify          → the session pulls (Pull, Chunk × n, PullDone) → Event::Received each
//!   Ping            → Pong (the session answers)                     → Event::Received
//!   between pulls, every poll                                        → Event::Poll: local news?
//!   nothing sent for keepalive                                       → Ping
//!   nothing received for silence                                     → Err(LinkError::Silent)
//!   deadline                                                         → Event::Deadline
//!   the peer's Bye                                                   → Event::Done
//! ```
//!
//! The caller owns the loop: between events it checks its own news (a device its database's
//! change sequence, a hub its commit counter and id pool), and ends the session with `Bye`
//! when it has something to push (the protocol has no push after a live pull: the next session
//! pushes it). The wait holds nothing between reads, so a device's database stays free for its
//! app's other connections.

use crate::error::LinkError;
use crate::link::Link;
use crate::wire::Wire;
use outpost_protocol::message::Message;
use outpost_protocol::session::{ClientSession, ClientStore};
use std::time::{Duration, Instant};

/// The timing of a live wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveConfig {
    /// The longest single read, so also how often [`Event::Poll`] comes between pulls.
    pub poll: Duration,
    /// A `Ping` after this long without sending anything (peers close idle links).
    pub keepalive: Duration,
    /// The link is taken for dead after this long without receiving any byte (a large message
    /// still arriving keeps it alive). Longer than `keepalive` plus a round trip: the peer
    /// answers every `Ping`.
    pub silence: Duration,
}

/// What happened in one step of the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// No pull is in progress and `poll` passed since the last such event: check for local
    /// news now (and end the session to push it).
    Poll,
    /// A message arrived and the session handled it (and sent its answers): the store may hold
    /// what it pulled.
    Received,
    /// The deadline passed (perhaps inside a pull: what the store kept is the caller's to
    /// flush before `Bye`).
    Deadline,
    /// The session ended (the peer said `Bye`).
    Done,
}

/// A live wait in progress; see the module's documentation.
#[derive(Debug)]
pub struct LiveWait {
    config: LiveConfig,
    deadline: Instant,
    last_sent: Instant,
    /// When the wait started: silence counts from here at the earliest.
    started: Instant,
    last_poll: Option<Instant>,
    nonce: u64,
}

impl LiveWait {
    /// A wait that ends at `deadline`, starting now (as if a message was just sent and
    /// received: the session's pull just completed).
    pub fn new(config: LiveConfig, deadline: Instant) -> LiveWait {
        let now = Instant::now();
        LiveWait {
            config,
            deadline,
            last_sent: now,
            started: now,
            last_poll: None,
            nonce: 0,
        }
    }

    /// Waits for the next event. Between pulls the first call returns [`Event::Poll`] at once.
    pub fn next<W: Wire, C: ClientStore>(
        &mut self,
        link: &mut Link<W>,
        client: &mut ClientSession<C>,
        store: &mut C,
    ) -> Result<Event, LinkError> {
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return Ok(Event::Deadline);
            }
            let poll_due = self
                .last_poll
                .is_none_or(|at| now.duration_since(at) >= self.config.poll);
            if client.is_live() && poll_due {
                self.last_poll = Some(now);
                return Ok(Event::Poll);
            }
            let silent = now.saturating_duration_since(link.last_heard().max(self.started));
            if silent >= self.config.silence {
                return Err(LinkError::Silent {
                    at: link.endpoint().clone(),
                    silence: silent,
                });
            }
            if now.duration_since(self.last_sent) >= self.config.keepalive {
                self.nonce += 1;
                link.send(&Message::Ping { nonce: self.nonce })?;
                self.last_sent = now;
            }
            // Never past the deadline, nor past the silence limit.
            let wait = self
                .config
                .poll
                .min(self.deadline - now)
                .min(self.config.silence - silent);
            let Some(msg) = link.recv_within(wait)? else {
                continue;
            };
            client
                .handle(msg, store)
                .map_err(|e| LinkError::session(link.endpoint(), e))?;
            let mut sent = false;
            while let Some(m) = client
                .poll(store)
                .map_err(|e| LinkError::session(link.endpoint(), e))?
            {
                link.send(&m)?;
                sent = true;
            }
            if sent {
                self.last_sent = Instant::now();
            }
            if client.is_done() {
                return Ok(Event::Done);
            }
            return Ok(Event::Received);
        }
    }
}
