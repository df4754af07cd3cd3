//! Why a session with a hub or the cloud did not complete, as a test sees it: the socket, the
//! handshake, the channel, a message that did not decode, or the session machine. Tests that
//! assert a refusal match on the variant (a used token is `Handshake(EnrollmentRefused)`).

use outpost_protocol::channel::ChannelError;
use outpost_protocol::handshake::HandshakeError;
use outpost_protocol::message::{ErrorCode, MessageError};
use outpost_protocol::session::SessionError;
use std::fmt;

/// Why a session did not complete.
#[derive(Debug)]
pub enum SyncError {
    /// The connection failed: refused, reset, closed by the peer, or no answer in time.
    Io(std::io::Error),
    /// The handshake failed: refused (unknown, revoked, replayed), a key mismatch, a used token.
    Handshake(HandshakeError),
    /// The secure channel failed after the handshake.
    Channel(ChannelError),
    /// A message from the peer did not decode.
    Message(MessageError),
    /// The session machine refused something, or the device's store failed.
    Session(SessionError),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Io(e) => write!(f, "connection: {e}"),
            SyncError::Handshake(e) => write!(f, "handshake: {e}"),
            SyncError::Channel(e) => write!(f, "channel: {e}"),
            SyncError::Message(e) => write!(f, "message from the peer: {e}"),
            SyncError::Session(e) => write!(f, "session: {e}"),
        }
    }
}

/// The message of the peer's `Error` a session ended with, when its code is `code`; panics with
/// what happened otherwise (a test expecting one refusal).
pub fn refused_with<T: fmt::Debug>(r: Result<T, SyncError>, code: ErrorCode) -> String {
    match r {
        Err(SyncError::Session(SessionError::Peer { code: got, message })) if got == code => {
            message
        }
        other => panic!("expected the peer to refuse with {code:?}, got {other:?}"),
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Io(e) => Some(e),
            SyncError::Handshake(e) => Some(e),
            SyncError::Channel(e) => Some(e),
            SyncError::Message(e) => Some(e),
            SyncError::Session(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for SyncError {
    fn from(e: std::io::Error) -> Self {
        SyncError::Io(e)
    }
}

impl From<HandshakeError> for SyncError {
    fn from(e: HandshakeError) -> Self {
        SyncError::Handshake(e)
    }
}

impl From<ChannelError> for SyncError {
    fn from(e: ChannelError) -> Self {
        SyncError::Channel(e)
    }
}

impl From<MessageError> for SyncError {
    fn from(e: MessageError) -> Self {
        SyncError::Message(e)
    }
}

impl From<SessionError> for SyncError {
    fn from(e: SessionError) -> Self {
        SyncError::Session(e)
    }
}
