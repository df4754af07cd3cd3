//! # outpost-relay
//!
//! The serving side that the hub and the cloud share: what a box needs to answer peers' sessions
//! without knowing how its bytes travel or how its data directory is laid out.
//!
//! - [`identity`]: the box's static P-256 key and site id (`identity.key`, `site-id`).
//! - [`allowlist`]: enrolled peers, one-time enrollment tokens, handshake counters, settings and
//!   peers' last known vectors (their text form: [`vector_text`]).
//! - [`certify`]: the box's own control stream: a Key entry for every peer it admits, a revoked
//!   one for every peer it revokes (the relay certifies each peer as its handshake completes).
//! - [`enroll`]: the `outpost:` enrollment code: issuing one, its terminal QR rendering.
//! - [`Serving`]: what one serving process shares between connections, built from [`Stores`]
//!   (the identity and the two SQLite files, which each box locates in its own directory).
//! - [`Relay`]: one connection as a socket-independent machine (Noise responder admitting from
//!   the allowlist, then the protocol's `ServerSession` over the mailbox), and
//!   [`serve_connection`] / [`serve_stream`], which drive it over a blocking [`Stream`].
//! - [`admission`]: who gets a connection slot under load (pending connections per address,
//!   sessions per key, the busy notice), shared by the std front and the hub's own stack.
//! - [`staging`]: the memory budget all connections' pushes share, and its `Busy` refusal.
//! - [`listener`]: the std TCP front with its connection limits, and revocation of live sessions.
//! - [`logging`]: structured stderr lines and the recent warnings a status shows.
//! - [`private_file`]: creating a box's files: mode 0600, or written whole at once.
//! - [`command`]: the front both boxes' command lines share (help, errors, exit status).
//!
//! **API boundary:** nothing here knows embassy, the hub's firmware or the cloud's engine; a box
//! hands in its [`Stores`] and a byte stream.
#![warn(missing_docs)]

pub mod admission;
pub mod allowlist;
pub mod certify;
pub mod command;
mod connection;
pub mod enroll;
mod gate;
pub mod identity;
pub mod listener;
pub mod logging;
mod minters;
mod pool;
pub mod private_file;
mod serving;
pub mod staging;
mod stream;
pub mod vector_text;

pub use connection::{ConnectionError, Event, Relay};
pub use serving::{OpenStores, Serving, Stores, Time, TrustedTime};
pub use stream::{serve_connection, serve_stream, Stream, NOTIFY_TICK};
