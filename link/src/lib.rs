//! The blocking client side of an Outpost sync session, shared by the device (the SQLite
//! extension's `outpost_sync`) and the hub's uplink to the cloud.
//!
//! ```text
//! connect (std TCP, every address tried)   or the caller's own Wire (the hub's embassy bridge)
//!   → Link::open: Noise IK / IKpsk2 initiator (message 1 after the caller persisted its counter)
//!   → Link::drive: the protocol's ClientSession to its end, or to its live wait
//!     (or, ending an enrollment, Link::confirm_enrollment: the peer's hello confirms it)
//!   → LiveWait::next: Notify → pull, Ping → Pong, keepalive pings, a silent link dropped,
//!                     the caller's news checked between pulls, the deadline
//! Backoff: the delay before the next attempt after failures
//! ```
//!
//! Both clients had their own copy of this, and the copies drifted: the device's live wait did
//! not notice a silent peer, the uplink did not notice a stream cut inside a frame. Here each
//! exists once, with the stricter behaviour.
//!
//! **Time and randomness.** The protocol crate reads no clock; this one does, at the edge: the
//! channel's milliseconds come from a monotonic clock started at the handshake, and the live
//! wait's timers from `Instant`. The handshake's randomness ([`Ephemeral`]) is the caller's, so
//! tests can fix it; [`Backoff::fail_with`] takes its randomness too.
//!
//! **Errors.** One [`LinkError`], naming the peer and keeping the protocol's typed errors
//! (handshake, channel, message, session, the peer's `Error` code): callers match on variants.
//!
//! [`Ephemeral`]: outpost_protocol::handshake::Ephemeral

#![warn(missing_docs)]

mod backoff;
mod connect;
mod enroll;
mod error;
mod link;
mod live;
mod wire;

pub use backoff::Backoff;
pub use connect::{connect, Attempt, ConnectFailure, Timeouts};
pub use enroll::Unconfirmed;
pub use error::{Endpoint, LinkError};
pub use link::Link;
pub use live::{Event, LiveConfig, LiveWait};
pub use wire::Wire;

#[cfg(test)]
mod tests;
