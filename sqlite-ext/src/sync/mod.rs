//! The device's sync client: `outpost_enroll(code)` and `outpost_sync([peer [, options]])`.
//!
//! ```text
//! outpost_enroll(code)                     outpost_sync()
//!   decode code (protocol::enroll_code)      pick enrolled peers: hubs, then clouds
//!   identity: key file + DB counter          identity, counter += 1 (committed first)
//!   TCP to the code's addresses              TCP to the pinned addresses
//!   Noise IKpsk2 with the token              Noise IK to the pinned key
//!   Hello ⇄ Hello, Bye (admission proven)    ClientSession: push, commit, pull, Bye
//!   pin key + addresses in _outpost_peers    JSON counts
//! ```
//!
//! The connection itself (TCP with timeouts, the Noise handshake, the encrypted messages, the
//! live wait's timers) is the `outpost-link` crate's, shared with the hub's uplink. Files here:
//! `identity.rs` (the device key and the handshake counter), `peers.rs` (the pinned peers and
//! the sync bookkeeping tables), `control.rs` (the control entries received, the roots, and the
//! key directory they make: which key each origin's batches must be signed with), `discover.rs` (a moved hub found on the LAN), `session.rs`
//! (connecting to a pinned peer, and one session over the link), `store.rs` (the protocol's
//! `ClientStore` over the engine's export and apply), `table_settings.rs` (the tenant's table
//! directions against the tracked tables', checked before each push), `live.rs` (the device's side of the live
//! wait: its news is its own change sequence), `client.rs` (`outpost_sync`), `enroll.rs`
//! (`outpost_enroll`), `progress.rs` (`outpost_sync_progress`: the running sync's announced
//! total and what was applied, for any connection of the process). Their
//! errors are `crate::error::SyncError` (`error/sync.rs`). Id reservations
//! (`crate::id_blocks`) are asked for after each pull; `store.rs` stores their grants.
//!
//! **Atomicity.** Both functions refuse to run inside an open transaction. Every write they make
//! is its own transaction: the counter bump (committed before message 1 leaves), the clock check
//! at the peer's hello with the re-stamp it may make (`skew.rs`, `restamp.rs`; before the push is
//! planned, so the push carries the new clocks), each group of up to 16 pulled chunks (8 MiB)
//! with their vector advances (the engine's `outpost_apply_many`;
//! a group is applied when full and when the pull ends, never held open across a network wait),
//! the peer row. A cut or error at any byte leaves the database at one of those commit points;
//! chunks received but not yet applied are dropped with the session and pulled again by the
//! next sync, which resumes from the vectors both sides hold.

mod client;
pub(crate) mod control;
mod discover;
mod enroll;
pub(crate) mod identity;
mod live;
mod mint_code;
mod peers;
mod progress;
mod session;
mod store;
mod table_settings;

pub(crate) use client::sql_sync;
pub(crate) use enroll::sql_enroll;
pub(crate) use mint_code::sql_enroll_code;
pub(crate) use progress::sql_sync_progress;
