//! # outpost-testkit
//!
//! One copy of what Outpost's tests share, so a change to the protocol or to a binary's command
//! line is made once for every test that drives it. Dev-only: crates list it under
//! `[dev-dependencies]`, nothing ships it.
//!
//! Always here, the protocol-level device (what the protocol's, the relay's, the hub's and the
//! cloud's tests use to act as a peer whose every push and pull they can count):
//! - [`mod@batch`]: small encoded batches and their headers, signed by [`keys`]: each test
//!   site's key, derived from its site id;
//! - [`device`]: an in-memory device database implementing the protocol's `ClientStore`;
//!   [`peer`]: the key a handshake needs, paired with any store;
//! - [`dial`]: the Noise initiator handshake over TCP and enrollment; [`session`]: one session
//!   over it (`sync`, a cut pull, live mode, the push/pull round of the hub tests);
//! - [`gate`]: an allowlist in memory, the protocol's `Gatekeeper` for handshake tests;
//! - [`wait`]: waiting for a condition with a deadline; [`mod@env`]: a test's seed and tuning
//!   numbers from its environment;
//! - [`flood`]: a stranger holding many idle or trickling connections from one address;
//! - [`netns`]: network namespaces for the tests that need a LAN of their own (root);
//! - [`require`]: skipping a test without root or a tool (failing under `CI=true`).
//!
//! With the `e2e` feature, module `e2e`: the end-to-end wrappers (the `outpost-tests` crate and the
//! CLI's tests): the release-built binaries, `outpost-hub` and `outpost-cloud` processes, device
//! databases with the built extension loaded, the mailbox check, a connection-cutting proxy.
//!
//! With the `pg` feature, module `pg`: a PostgreSQL database of a test's own on the test cluster
//! (`OUTPOST_TEST_POSTGRES_URL`; missing fails the test under `CI=true`).
//!
//! Everything here panics on the unexpected, as a test would: a failure names what it waited
//! for or ran. The session driver returns typed errors ([`SyncError`]) where tests assert that a
//! session fails.

#![warn(missing_docs)]

pub mod batch;
pub mod device;
pub mod dial;
pub mod env;
pub mod error;
pub mod flood;
pub mod gate;
pub mod keys;
pub mod netns;
pub mod peer;
pub mod require;
pub mod session;
pub mod wait;

#[cfg(feature = "e2e")]
pub mod e2e;

#[cfg(feature = "pg")]
pub mod pg;

pub use batch::{batch, header};
pub use device::{Device, MemStore};
pub use dial::{connect, enroll, enroll_token, handshake, HubInfo};
pub use error::{refused_with, SyncError};
pub use peer::{Keyed, Peer};
pub use session::{exchange, live_until, sync, sync_cut};
pub use wait::{wait_for, wait_until};
