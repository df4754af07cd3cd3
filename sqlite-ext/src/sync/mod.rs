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
//! Files: `identity.rs` (the device key and the handshake counter), `peers.rs` (the pinned peers
//! and the sync bookkeeping tables), `transport.rs` (TCP with timeouts, the handshake, the
//! encrypted message channel), `store.rs` (the protocol's `ClientStore` over the engine's
//! export and apply), `client.rs` (`outpost_sync`), `live.rs` (its `live_seconds` wait),
//! `enroll.rs` (`outpost_enroll`), `progress.rs` (`outpost_sync_progress`: the running sync's
//! announced total and what was applied, for any connection of the process). Id reservations
//! (`crate::id_blocks`) are asked for after each pull; `store.rs` stores their grants.
//!
//! **Atomicity.** Both functions refuse to run inside an open transaction. Every write they make
//! is its own transaction: the counter bump (committed before message 1 leaves), each group of
//! up to 16 pulled chunks (8 MiB) with their vector advances (the engine's `outpost_apply_many`;
//! a group is applied when full and when the pull ends, never held open across a network wait),
//! the peer row. A cut or error at any byte leaves the database at one of those commit points;
//! chunks received but not yet applied are dropped with the session and pulled again by the
//! next sync, which resumes from the vectors both sides hold.

mod client;
mod discover;
mod enroll;
mod identity;
mod live;
mod peers;
mod progress;
mod store;
mod transport;

pub(crate) use client::sql_sync;
pub(crate) use enroll::sql_enroll;
pub(crate) use progress::sql_sync_progress;

use crate::error::Error;
use outpost_protocol::channel::ChannelError;
use outpost_protocol::enroll_code::CodeError;
use outpost_protocol::handshake::{HandshakeError, Refusal};
use outpost_protocol::message::{ErrorCode, MessageError};
use outpost_protocol::session::SessionError;
use std::fmt;

/// Why enrolling or syncing failed. Each message says what to do; none contains a secret.
#[derive(Debug)]
pub(crate) enum SyncError {
    /// The enrollment code does not decode.
    Code(CodeError),
    /// No peer is enrolled (or none matches the argument).
    NotEnrolled {
        /// What the caller asked for (`None`: any peer).
        wanted: Option<String>,
    },
    /// No address of the peer accepted a TCP connection.
    Unreachable {
        /// The peer (`hub 3f2a…`), or `enrollment` for a code.
        peer: String,
        /// Each address tried, with what happened.
        tried: Vec<(String, String)>,
    },
    /// The reply to message 1 did not prove the pinned key.
    KeyMismatch {
        /// The peer.
        peer: String,
        /// The address that answered.
        address: String,
    },
    /// The peer closed without answering message 1: what a responder that cannot read it (it
    /// lacks the pinned key) does.
    Unanswered {
        /// The peer.
        peer: String,
        /// The address.
        address: String,
    },
    /// The peer refused this device, authenticated (revoked, re-enroll, unknown key, ...).
    Refused {
        /// The peer.
        peer: String,
        /// Why.
        refusal: Refusal,
    },
    /// Enrollment: the peer did not accept the token.
    EnrollmentRefused {
        /// The code's expiry, when this device's clock says it passed.
        expired_at: Option<u64>,
    },
    /// Enrollment: the peer closed after the token proof instead of confirming.
    EnrollmentUnconfirmed {
        /// What happened.
        detail: String,
    },
    /// Another handshake failure.
    Handshake(HandshakeError),
    /// The encrypted channel failed (altered, replayed, or cut inside a frame).
    Channel(ChannelError),
    /// The connection broke or timed out.
    Connection {
        /// The peer.
        peer: String,
        /// What happened.
        detail: String,
    },
    /// A message from the peer does not decode.
    Message(MessageError),
    /// The sync session failed (the peer's error, or a protocol violation).
    Session(SessionError),
    /// The peer holds more of this database's own changes than it issued: a restored backup
    /// would reuse sequence numbers and lose writes.
    Restored {
        /// What the peer holds of this site.
        peer_has: u64,
        /// What this database issued.
        issued: u64,
    },
    /// The key file is unusable.
    KeyFile {
        /// Its path.
        path: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A bad argument or option.
    Argument(String),
    /// The engine failed (SQLite, bookkeeping).
    Engine(Error),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Code(e) => write!(f, "{e}"),
            SyncError::NotEnrolled { wanted: None } => f.write_str(
                "not enrolled: this database has no hub or cloud to sync with; run outpost_enroll('outpost:...') with an enrollment code first",
            ),
            SyncError::NotEnrolled { wanted: Some(w) } => write!(
                f,
                "not enrolled with {w:?}: no enrolled peer matches (give \"hub\", \"cloud\" or 4+ leading hex digits of its site id); enroll with outpost_enroll first"
            ),
            SyncError::Unreachable { peer, tried } => {
                write!(f, "peer unreachable: {peer}; tried ")?;
                if tried.is_empty() {
                    f.write_str("no address (the enrollment code lists none)")?;
                }
                for (i, (addr, why)) in tried.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{addr} ({why})")?;
                }
                f.write_str("; check the network and retry")
            }
            SyncError::KeyMismatch { peer, address } => write!(
                f,
                "key mismatch: this is not the hub you enrolled with: the peer at {address} does not prove the key pinned for {peer}; nothing was sent or changed"
            ),
            SyncError::Unanswered { peer, address } => write!(
                f,
                "key mismatch: the peer at {address} closed the connection without answering the handshake, which is what a peer without the key pinned for {peer} does: this is probably not the hub you enrolled with (or the connection was cut); nothing was changed"
            ),
            SyncError::Refused { peer, refusal } => match refusal {
                Refusal::SiteReused => write!(
                    f,
                    "re-enroll: {peer} refused this database: its site id is bound to another key (a copied or restored database file, or a lost key file); enroll this device again with a new code"
                ),
                Refusal::Revoked => write!(
                    f,
                    "revoked: {peer} says this device's access was revoked; ask the operator to enroll it again"
                ),
                Refusal::UnknownKey => write!(
                    f,
                    "not enrolled: {peer} does not know this device's key (its key file was replaced, or the peer forgot it); re-enroll with a new code"
                ),
                other => write!(f, "refused by {peer}: {other}"),
            },
            SyncError::EnrollmentRefused { expired_at } => {
                write!(f, "{}", HandshakeError::EnrollmentRefused)?;
                if let Some(at) = expired_at {
                    write!(
                        f,
                        " (by this device's clock the code expired at unix time {at})"
                    )?;
                }
                Ok(())
            }
            SyncError::EnrollmentUnconfirmed { detail } => write!(
                f,
                "enrollment not confirmed: {detail}; the token may have been used meanwhile: ask for a new code"
            ),
            SyncError::Handshake(e) => write!(f, "handshake failed: {e}"),
            SyncError::Channel(e) => write!(f, "connection failed: {e}; retry"),
            SyncError::Connection { peer, detail } => {
                write!(f, "connection to {peer} lost: {detail}; retry")
            }
            SyncError::Message(e) => write!(f, "the peer sent a malformed message: {e}"),
            SyncError::Session(SessionError::Peer { code, message }) => match code {
                ErrorCode::SiteIdReused => write!(f, "re-enroll: {message}"),
                ErrorCode::Unauthorized => write!(f, "not authorized (revoked?): {message}"),
                _ => write!(f, "the peer ended the session ({code:?}): {message}"),
            },
            SyncError::Session(e) => write!(f, "sync session failed: {e}"),
            SyncError::Restored { peer_has, issued } => write!(
                f,
                "re-enroll: the peer holds changes of this database up to seq {peer_has} but this database issued only {issued}: it was restored from an older copy, and new writes would reuse sequence numbers; enroll this database again (it needs a new site id)"
            ),
            SyncError::KeyFile { path, detail } => write!(f, "device key file {path}: {detail}"),
            SyncError::Argument(m) => f.write_str(m),
            SyncError::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for SyncError {
    fn from(e: Error) -> Self {
        SyncError::Engine(e)
    }
}

impl SyncError {
    /// The extension's error for `function`: engine errors keep their SQLite code; argument
    /// errors stay argument errors; the rest are sync errors (`SQLITE_ERROR`), each with the
    /// function's name in front.
    pub(crate) fn into_error(self, function: &'static str) -> Error {
        let named = |m: String| {
            if m.starts_with(function) {
                m
            } else {
                format!("{function}: {m}")
            }
        };
        match self {
            SyncError::Engine(e) => e,
            SyncError::Argument(m) => Error::Argument(named(m)),
            other => Error::Sync(named(other.to_string())),
        }
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
