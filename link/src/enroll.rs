//! The end of an enrollment, on the client's side: after the handshake that spent the token, the
//! client sends its hello and waits for the peer's, which confirms it was admitted and must name
//! the site the enrollment code promised. The device and the hub's uplink both finish this way;
//! what each does with the peer's hello (its role, pinning it) is theirs.

use crate::{Link, LinkError, Wire};
use outpost_protocol::message::{ErrorCode, Hello, Message};
use outpost_protocol::SiteId;
use std::fmt;

/// Why an enrollment was not confirmed after the token's handshake.
#[derive(Debug)]
pub enum Unconfirmed {
    /// The link failed while waiting for the confirmation.
    Link(LinkError),
    /// The peer's hello names another site than the code.
    WrongSite {
        /// In the hello.
        hello: SiteId,
        /// In the code.
        code: SiteId,
    },
    /// The peer answered with an `Error` message.
    Peer {
        /// Its code.
        code: ErrorCode,
        /// Its text.
        message: String,
    },
    /// The peer answered another message than its hello.
    Unexpected {
        /// The message's wire tag.
        tag: u64,
    },
}

impl fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unconfirmed::Link(e) => write!(f, "waiting for the enrollment's confirmation: {e}"),
            Unconfirmed::WrongSite { hello, code } => write!(
                f,
                "the peer's hello names site {hello} but the enrollment code names {code}"
            ),
            Unconfirmed::Peer { code, message } => {
                write!(f, "the peer answered an error ({code:?}): {message}")
            }
            Unconfirmed::Unexpected { tag } => {
                write!(
                    f,
                    "the peer answered message tag {tag} instead of its hello"
                )
            }
        }
    }
}

impl std::error::Error for Unconfirmed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unconfirmed::Link(e) => Some(e),
            _ => None,
        }
    }
}

impl<W: Wire> Link<W> {
    /// Sends `hello` and waits for the peer's, which must name `site` (the enrollment code's).
    /// Returns the peer's hello; the caller says `Bye` when it is done with the link.
    pub fn confirm_enrollment(
        &mut self,
        hello: &Message,
        site: SiteId,
    ) -> Result<Hello, Unconfirmed> {
        self.send(hello).map_err(Unconfirmed::Link)?;
        match self.recv().map_err(Unconfirmed::Link)? {
            Message::Hello(h) if h.site == site => Ok(h),
            Message::Hello(h) => Err(Unconfirmed::WrongSite {
                hello: h.site,
                code: site,
            }),
            Message::Error { code, message } => Err(Unconfirmed::Peer { code, message }),
            other => Err(Unconfirmed::Unexpected { tag: other.tag() }),
        }
    }
}
