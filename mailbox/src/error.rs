//! The mailbox's one error type.

use outpost_protocol::batch::codec::DecodeError;
use outpost_protocol::{SeqRange, SiteId, StreamId};
use std::fmt;
use std::path::PathBuf;

/// Why a mailbox operation failed. Every failure leaves the stored data as it was: a commit either
/// happens whole or not at all.
#[derive(Debug)]
#[non_exhaustive]
pub enum MailboxError {
    /// SQLite reported an error on the mailbox file.
    Sqlite {
        /// The mailbox file.
        path: PathBuf,
        /// SQLite's error.
        source: outpost_sql::Error,
    },
    /// The store could not be reached (a cloud's mailbox in PostgreSQL: its server is down or
    /// refuses the connection); nothing was read or stored.
    Unreachable {
        /// What was tried, and why it failed.
        detail: String,
    },
    /// Incoming bytes are not a valid batch header; nothing was stored.
    Decode {
        /// Position of the batch in the set being staged (0-based).
        index: usize,
        /// The codec's reason.
        source: DecodeError,
    },
    /// A batch names a seq the store cannot represent (SQLite integers are signed 64-bit).
    SeqTooLarge {
        /// The batch's origin.
        origin: SiteId,
        /// Its range.
        range: SeqRange,
    },
    /// A push would leave this batch beyond a gap in the origin's coverage; nothing was stored.
    NotCovered {
        /// The batch's stream.
        origin: StreamId,
        /// Its range.
        range: SeqRange,
    },
    /// The file was written by a newer mailbox schema than this build understands.
    SchemaVersion {
        /// The mailbox file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The version this build writes.
        supported: i64,
    },
    /// The mailbox was made by an older version of Outpost (schema 1-4: batches of format 1,
    /// which this build neither reads nor relays).
    OlderVersion {
        /// The mailbox file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
    },
    /// A stored record (an id grant, a push record) does not decode: the file was changed by
    /// something else.
    Record {
        /// The mailbox file.
        path: PathBuf,
        /// Which record.
        what: String,
        /// The decoder's report.
        source: postcard::Error,
    },
    /// The box's own control entry could not be written: the mailbox's owner (its site and
    /// key) was not set ([`crate::Mailbox::set_control_owner`]).
    NoControlOwner {
        /// The mailbox file.
        path: PathBuf,
    },
    /// The box's own control stream holds fewer entries than its owner saw stored before
    /// ([`crate::Mailbox::set_control_floor`]): restored behind its peers, it is not appended to.
    ControlBehind {
        /// The mailbox file.
        path: PathBuf,
        /// Entries held.
        held: u64,
        /// Entries seen stored before.
        floor: u64,
    },
    /// A sealed tenant's key or envelope could not be made (no randomness from the system, or
    /// a key set an envelope cannot carry).
    Random {
        /// What was being made.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A stored row breaks the mailbox's own invariants (found by [`crate::Mailbox::check`] or
    /// while reading): the file was changed by something else.
    Corrupt {
        /// The mailbox file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::Unreachable { detail } => write!(f, "mailbox: {detail}"),
            MailboxError::Sqlite { path, source } => {
                write!(f, "mailbox {}: {source}", path.display())
            }
            MailboxError::Decode { index, source } => {
                write!(f, "batch #{index} is not a valid batch: {source}")
            }
            MailboxError::SeqTooLarge { origin, range } => write!(
                f,
                "batch {}..={} of origin {origin}: seqs above {} cannot be stored",
                range.lo,
                range.hi,
                i64::MAX
            ),
            MailboxError::NotCovered { origin, range } => write!(
                f,
                "batch {}..={} of {origin} would sit beyond a gap in its coverage; \
                 nothing was stored",
                range.lo, range.hi
            ),
            MailboxError::SchemaVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "mailbox {}: schema version {found} is newer than this build ({supported}); \
                 upgrade outpost before opening it",
                path.display()
            ),
            MailboxError::OlderVersion { path, found } => write!(
                f,
                "mailbox {} was made by an older version of Outpost (schema {found}, batch format \
                 1): this build cannot read or relay its batches; move the data directory aside \
                 and start again (devices push their changes again, the cloud serves its own)",
                path.display()
            ),
            MailboxError::Record { path, what, source } => {
                write!(f, "mailbox {} is damaged: {what}: {source}", path.display())
            }
            MailboxError::ControlBehind { path, held, floor } => write!(
                f,
                "mailbox {}: its own control stream holds {held} entries, but {floor} were stored \
                 before: it was restored behind its peers, and an entry appended now could take \
                 a seq they hold for another; nothing is written to it until a hub's next \
                 session brings the entries back",
                path.display()
            ),
            MailboxError::NoControlOwner { path } => write!(
                f,
                "mailbox {}: no owner key set, so it cannot write its own control entries",
                path.display()
            ),
            MailboxError::Corrupt { path, detail } => {
                write!(f, "mailbox {} is damaged: {detail}", path.display())
            }
            MailboxError::Random { what, detail } => write!(f, "making {what}: {detail}"),
        }
    }
}

impl std::error::Error for MailboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MailboxError::Sqlite { source, .. } => Some(source),
            MailboxError::Decode { source, .. } => Some(source),
            MailboxError::Record { source, .. } => Some(source),
            _ => None,
        }
    }
}
