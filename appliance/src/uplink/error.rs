//! [`UplinkError`]: why an uplink round, its configuration or its state file failed. The link's
//! own failures stay typed inside ([`LinkError`]): a silent cloud, a cut, a refusal.

use outpost_link::{LinkError, Unconfirmed};
use outpost_mailbox::MailboxError;
use outpost_protocol::enroll_code::CodeError;
use outpost_protocol::handshake::KeyError;
use outpost_protocol::message::PeerRole;
use outpost_protocol::site::ParseSiteIdError;
use outpost_relay::allowlist::AllowlistError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why the uplink failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum UplinkError {
    /// An enrollment code (`--cloud`, or the one stored) does not decode, or its key is not a
    /// key.
    Code {
        /// Which code, and what of it.
        what: &'static str,
        /// The decoder's error.
        error: CodeError,
    },
    /// Neither a cloud is pinned nor an enrollment code stored.
    NoCode,
    /// The backoff bounds are not `0 < min <= max`.
    Backoff {
        /// `--uplink-min-ms`.
        min: Duration,
        /// `--uplink-max-ms`.
        max: Duration,
    },
    /// The allowlist (the uplink's settings: code, pinned cloud, handshake counter) failed.
    Allowlist(AllowlistError),
    /// The mailbox failed.
    Mailbox(MailboxError),
    /// The pinned cloud (setting `uplink_cloud`) is unusable.
    Pinned(PinnedError),
    /// The state file could not be read or written.
    StateFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The state file does not hold the uplink's state.
    StateJson {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The link to the cloud failed (unreachable, refused, cut, silent, ...).
    Link(LinkError),
    /// Enrollment: connecting or the handshake with the code's token failed (and the hub's key
    /// is not admitted either).
    Enrolling {
        /// The code's expiry, when it passed by the hub's clock.
        expired_at: Option<u64>,
        /// What failed.
        source: Box<UplinkError>,
    },
    /// Enrollment: the cloud did not confirm after the token proof.
    Unconfirmed(Unconfirmed),
    /// The enrollment code's peer confirmed it, but it is not a cloud.
    NotCloud {
        /// What it is.
        role: PeerRole,
    },
    /// The operating system's random source failed.
    Randomness {
        /// What the randomness was for.
        purpose: &'static str,
        /// getrandom's error.
        error: getrandom::Error,
    },
    /// The uplink's thread could not start.
    Thread(io::Error),
}

/// Why the pinned cloud setting is unusable.
#[derive(Debug)]
#[non_exhaustive]
pub enum PinnedError {
    /// The setting is not (or could not be written as) a pinned cloud.
    Json(serde_json::Error),
    /// Its key is not hex.
    KeyNotHex,
    /// Its key is not a P-256 public key.
    Key(KeyError),
    /// Its site id does not parse.
    Site(ParseSiteIdError),
}

impl fmt::Display for UplinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UplinkError::Code { what, error } => write!(f, "{what}: {error}"),
            UplinkError::NoCode => f.write_str("no cloud enrollment code stored (run --cloud CODE)"),
            UplinkError::Backoff { min, max } => write!(
                f,
                "uplink backoff: 0 < --uplink-min-ms <= --uplink-max-ms required (got {} and {} ms)",
                min.as_millis(),
                max.as_millis()
            ),
            UplinkError::Allowlist(e) => write!(f, "{e}"),
            UplinkError::Mailbox(e) => write!(f, "{e}"),
            UplinkError::Pinned(e) => write!(f, "{e}"),
            UplinkError::StateFile { path, source } => write!(f, "{}: {source}", path.display()),
            UplinkError::StateJson { path, source } => {
                write!(f, "{}: not the uplink's state: {source}", path.display())
            }
            UplinkError::Link(e) => write!(f, "{e}"),
            UplinkError::Enrolling { expired_at, source } => {
                f.write_str("enrolling with the cloud")?;
                if let Some(at) = expired_at {
                    write!(f, " (the code expired at unix {at})")?;
                }
                write!(f, ": {source}")
            }
            UplinkError::NotCloud { role } => write!(
                f,
                "enrollment: the code's peer is a {role:?}, not a cloud (use outpost-cloud enroll-code --hub)"
            ),
            UplinkError::Unconfirmed(why) => match why {
                Unconfirmed::Link(e) => {
                    write!(f, "waiting for the cloud to confirm the enrollment: {e}")
                }
                Unconfirmed::WrongSite { hello, code } => write!(
                    f,
                    "enrollment: the peer's hello names site {hello} but the code names {code}"
                ),
                Unconfirmed::Peer { code, message } => {
                    write!(f, "enrollment: the cloud answered an error ({code:?}): {message}")
                }
                Unconfirmed::Unexpected { tag } => {
                    write!(f, "enrollment: the cloud answered message tag {tag}")
                }
            },
            UplinkError::Randomness { purpose, error } => {
                write!(f, "no randomness for {purpose}: {error}")
            }
            UplinkError::Thread(e) => write!(f, "starting the uplink thread: {e}"),
        }
    }
}

impl fmt::Display for PinnedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinnedError::Json(e) => write!(f, "the pinned cloud setting: {e}"),
            PinnedError::KeyNotHex => f.write_str("the pinned cloud key is not hex"),
            PinnedError::Key(e) => write!(f, "the pinned cloud key: {e}"),
            PinnedError::Site(e) => write!(f, "the pinned cloud site id: {e}"),
        }
    }
}

impl std::error::Error for UplinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UplinkError::Code { error, .. } => Some(error),
            UplinkError::Allowlist(e) => Some(e),
            UplinkError::Mailbox(e) => Some(e),
            UplinkError::Pinned(e) => Some(e),
            UplinkError::StateFile { source, .. } | UplinkError::Thread(source) => Some(source),
            UplinkError::StateJson { source, .. } => Some(source),
            UplinkError::Link(e) | UplinkError::Unconfirmed(Unconfirmed::Link(e)) => Some(e),
            UplinkError::Enrolling { source, .. } => Some(&**source),
            UplinkError::Randomness { error, .. } => Some(error),
            UplinkError::NoCode
            | UplinkError::Backoff { .. }
            | UplinkError::NotCloud { .. }
            | UplinkError::Unconfirmed(_) => None,
        }
    }
}

impl std::error::Error for PinnedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PinnedError::Json(e) => Some(e),
            PinnedError::Key(e) => Some(e),
            PinnedError::Site(e) => Some(e),
            PinnedError::KeyNotHex => None,
        }
    }
}

impl From<AllowlistError> for UplinkError {
    fn from(e: AllowlistError) -> Self {
        UplinkError::Allowlist(e)
    }
}

impl From<MailboxError> for UplinkError {
    fn from(e: MailboxError) -> Self {
        UplinkError::Mailbox(e)
    }
}

impl From<LinkError> for UplinkError {
    fn from(e: LinkError) -> Self {
        UplinkError::Link(e)
    }
}
