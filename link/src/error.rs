//! [`LinkError`]: why a link to a peer failed, with the peer named and the protocol's own error
//! kept typed, so callers match on what happened instead of reading text.

use crate::connect::Attempt;
use outpost_protocol::channel::ChannelError;
use outpost_protocol::handshake::HandshakeError;
use outpost_protocol::message::{ErrorCode, MessageError};
use outpost_protocol::session::SessionError;
use std::fmt;
use std::io;
use std::time::Duration;

/// Who a link talks to, as errors name it: `hub 3f2a9c01b7e4…` at `10.0.0.2:7420`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// How the peer is named to a person (`hub 3f2a…`, `the cloud`).
    pub peer: String,
    /// The address connected to.
    pub address: String,
}

/// Why a link failed. Every failure is final for the connection: close it.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkError {
    /// No address of the peer accepted a connection.
    Unreachable {
        /// The peer.
        peer: String,
        /// Each address tried, with what happened.
        tried: Vec<Attempt>,
    },
    /// The peer closed without answering message 1 of the handshake: what a responder that
    /// cannot read it does (it does not hold the pinned key), or a cut.
    Unanswered {
        /// The peer.
        at: Endpoint,
    },
    /// The peer is too loaded to serve this connection now (too many connections): it sent the
    /// busy notice instead of a handshake reply. Retry later; nothing was refused.
    Busy {
        /// The peer.
        at: Endpoint,
    },
    /// The handshake failed: the reply did not prove the pinned key
    /// ([`HandshakeError::KeyMismatch`]), the peer refused this client
    /// ([`HandshakeError::Refused`]), an enrollment token was refused, ...
    Handshake {
        /// The peer.
        at: Endpoint,
        /// What the handshake said.
        error: HandshakeError,
    },
    /// The connection closed after part of the handshake's reply.
    HandshakeCut {
        /// The peer.
        at: Endpoint,
    },
    /// A read or write waited its whole timeout: the peer stopped answering.
    TimedOut {
        /// The peer.
        at: Endpoint,
    },
    /// Live wait: nothing received for longer than the silence limit (the peer answers every
    /// `Ping`), so the link is taken for dead.
    Silent {
        /// The peer.
        at: Endpoint,
        /// How long nothing arrived.
        silence: Duration,
    },
    /// The peer closed the connection between messages.
    Closed {
        /// The peer.
        at: Endpoint,
    },
    /// The stream ended inside a frame or a chunked message: the connection was cut.
    Cut {
        /// The peer.
        at: Endpoint,
        /// What the channel found unfinished.
        error: ChannelError,
    },
    /// The byte stream failed (reset, broken pipe, ...).
    Io {
        /// The peer.
        at: Endpoint,
        /// The operating system's error.
        source: io::Error,
    },
    /// The encrypted channel failed: a frame altered, replayed or too large, ...
    Channel {
        /// The peer.
        at: Endpoint,
        /// The channel's error.
        error: ChannelError,
    },
    /// A decrypted message does not decode.
    Message {
        /// The peer.
        at: Endpoint,
        /// The decoder's error.
        error: MessageError,
    },
    /// The sync session failed on this side: a protocol violation by the peer, or the local
    /// store's failure ([`SessionError::Store`]: its owner keeps the typed error).
    Session {
        /// The peer.
        at: Endpoint,
        /// The session's error.
        error: SessionError,
    },
    /// The peer ended the session with an `Error` message.
    Peer {
        /// The peer.
        at: Endpoint,
        /// Its code.
        code: ErrorCode,
        /// Its text.
        message: String,
    },
}

impl LinkError {
    /// A session error: the peer's `Error` message becomes [`LinkError::Peer`].
    pub fn session(at: &Endpoint, error: SessionError) -> LinkError {
        match error {
            SessionError::Peer { code, message } => LinkError::Peer {
                at: at.clone(),
                code,
                message,
            },
            error => LinkError::Session {
                at: at.clone(),
                error,
            },
        }
    }

    /// An I/O error of the stream: a timeout is [`LinkError::TimedOut`].
    pub fn io(at: &Endpoint, source: io::Error) -> LinkError {
        match source.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                LinkError::TimedOut { at: at.clone() }
            }
            _ => LinkError::Io {
                at: at.clone(),
                source,
            },
        }
    }

    /// The peer, when the failure happened on a connection.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match self {
            LinkError::Unreachable { .. } => None,
            LinkError::Unanswered { at }
            | LinkError::Busy { at }
            | LinkError::Handshake { at, .. }
            | LinkError::HandshakeCut { at }
            | LinkError::TimedOut { at }
            | LinkError::Silent { at, .. }
            | LinkError::Closed { at }
            | LinkError::Cut { at, .. }
            | LinkError::Io { at, .. }
            | LinkError::Channel { at, .. }
            | LinkError::Message { at, .. }
            | LinkError::Session { at, .. }
            | LinkError::Peer { at, .. } => Some(at),
        }
    }

    /// True when the connection was lost (timed out, silent, closed, cut, broken): retrying
    /// later may work as is.
    pub fn is_lost_connection(&self) -> bool {
        matches!(
            self,
            LinkError::HandshakeCut { .. }
                | LinkError::TimedOut { .. }
                | LinkError::Silent { .. }
                | LinkError::Closed { .. }
                | LinkError::Cut { .. }
                | LinkError::Io { .. }
        )
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lost = |f: &mut fmt::Formatter<'_>, at: &Endpoint| {
            write!(f, "connection to {} at {} lost: ", at.peer, at.address)
        };
        match self {
            LinkError::Unreachable { peer, tried } => {
                write!(f, "peer unreachable: {peer}; tried ")?;
                if tried.is_empty() {
                    f.write_str("no address (none is known)")?;
                }
                for (i, attempt) in tried.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{attempt}")?;
                }
                f.write_str("; check the network and retry")
            }
            LinkError::Unanswered { at } => write!(
                f,
                "key mismatch: the peer at {} closed the connection without answering the handshake, which is what a peer without the key pinned for {} does (or the connection was cut); nothing was sent",
                at.address, at.peer
            ),
            LinkError::Busy { at } => write!(
                f,
                "{} busy (too many connections at {}), retry later",
                at.peer, at.address
            ),
            LinkError::Handshake { at, error } => match error {
                HandshakeError::KeyMismatch => write!(
                    f,
                    "key mismatch: the peer at {} does not prove the key pinned for {}; nothing was sent",
                    at.address, at.peer
                ),
                HandshakeError::Refused(r) => write!(f, "refused by {}: {r}", at.peer),
                HandshakeError::EnrollmentRefused => write!(f, "{error}"),
                _ => write!(
                    f,
                    "handshake with {} at {} failed: {error}",
                    at.peer, at.address
                ),
            },
            LinkError::HandshakeCut { at } => {
                lost(f, at)?;
                f.write_str("closed in the middle of the handshake")
            }
            LinkError::TimedOut { at } => {
                lost(f, at)?;
                f.write_str("the peer stopped answering (timed out)")
            }
            LinkError::Silent { at, silence } => {
                lost(f, at)?;
                write!(
                    f,
                    "the peer stopped answering (nothing received for {} s in a live session)",
                    silence.as_secs()
                )
            }
            LinkError::Closed { at } => {
                lost(f, at)?;
                f.write_str("the peer closed the connection")
            }
            LinkError::Cut { at, error } => {
                lost(f, at)?;
                write!(f, "the connection was cut: {error}")
            }
            LinkError::Io { at, source } => {
                lost(f, at)?;
                write!(f, "{source}")
            }
            LinkError::Channel { at, error } => {
                write!(f, "connection to {} failed: {error}", at.peer)
            }
            LinkError::Message { at, error } => {
                write!(f, "{} sent a malformed message: {error}", at.peer)
            }
            LinkError::Session { at, error } => {
                write!(f, "sync session with {} failed: {error}", at.peer)
            }
            LinkError::Peer { at, code, message } => {
                write!(f, "{} ended the session ({code:?}): {message}", at.peer)
            }
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Handshake { error, .. } => Some(error),
            LinkError::Cut { error, .. } | LinkError::Channel { error, .. } => Some(error),
            LinkError::Io { source, .. } => Some(source),
            LinkError::Message { error, .. } => Some(error),
            LinkError::Session { error, .. } => Some(error),
            LinkError::Unreachable { .. }
            | LinkError::Unanswered { .. }
            | LinkError::Busy { .. }
            | LinkError::HandshakeCut { .. }
            | LinkError::TimedOut { .. }
            | LinkError::Silent { .. }
            | LinkError::Closed { .. }
            | LinkError::Peer { .. } => None,
        }
    }
}
