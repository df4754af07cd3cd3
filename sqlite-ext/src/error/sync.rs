//! [`SyncError`]: why enrolling or syncing failed, in the device's words (what apps and tests
//! match on), with the link's failures kept typed ([`LinkError`]). It and the extension's
//! [`Error`] hold each other (an engine failure during a sync; a sync failure as a SQL
//! function's error), so it lives here, beside `Error`.

use crate::error::Error;
use outpost_link::{LinkError, Unconfirmed};
use outpost_protocol::batch::Direction;
use outpost_protocol::enroll_code::CodeError;
use outpost_protocol::handshake::{HandshakeError, KeyError, Refusal};
use outpost_protocol::hlc::UtcDate;
use outpost_protocol::message::ErrorCode;
use outpost_protocol::SiteId;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why enrolling or syncing failed (or, for [`SyncError::NoIdsLeft`], why no reserved id is
/// left). Each message says what to do; none contains a secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncError {
    /// The enrollment code does not decode.
    Code(CodeError),
    /// No peer is enrolled (or none matches the argument).
    NotEnrolled {
        /// What the caller asked for (`None`: any peer).
        wanted: Option<String>,
    },
    /// The link to the peer failed: unreachable, the wrong key, refused, the connection lost,
    /// the session broken, or the peer's `Error` message (matched on by [`LinkError`]'s
    /// variants; the message speaks of this database and its enrollment).
    Link(LinkError),
    /// Enrollment: the peer did not accept the token, and this device's clock says the code
    /// expired at `expired_at`.
    EnrollmentRefused {
        /// The code's expiry, when this device's clock says it passed.
        expired_at: Option<u64>,
    },
    /// Enrollment: the peer did not confirm after the token proof.
    EnrollmentUnconfirmed(Unconfirmed),
    /// The peer holds more of this database's own changes than it issued: a restored backup
    /// would reuse sequence numbers and lose writes.
    Restored {
        /// What the peer holds of this site.
        peer_has: u64,
        /// What this database issued.
        issued: u64,
    },
    /// The device key file is unusable.
    KeyFile {
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        problem: KeyFileProblem,
    },
    /// The peer's addresses could not be stored.
    PeerAddresses(serde_json::Error),
    /// The operating system's random source failed.
    Randomness {
        /// What the randomness was for.
        purpose: &'static str,
        /// getrandom's error.
        error: getrandom::Error,
    },
    /// Every enrolled peer tried failed: the first (the preferred peer) and the others.
    AllFailed {
        /// The preferred peer's failure.
        first: Box<SyncError>,
        /// Each other peer (its label) with its failure.
        others: Vec<(String, SyncError)>,
    },
    /// `outpost_next_id`: nothing granted is left for `sequence`.
    NoIdsLeft {
        /// The sequence.
        sequence: String,
        /// Numbers reserved, waiting for the next sync (0: none asked for).
        pending: i64,
    },
    /// The tenant (its cloud's control entries) declares a tracked table's direction otherwise
    /// than this database's `outpost_track` options: nothing was pushed in the session that
    /// found it (docs/design.md section 10: directions are the cloud's to declare).
    DirectionMismatch {
        /// The table.
        table: String,
        /// What the tenant declares (`both` when it names the table in no entry).
        tenant: Direction,
        /// What this database tracks it as.
        local: Direction,
    },
    /// The tenant (its cloud's control entries) declares a tracked table's scope rule otherwise
    /// than this database's `outpost_track` options: nothing was pushed in the session that
    /// found it (docs/design.md section 10: the scope rule is part of the tenant's table
    /// settings).
    ScopeRuleMismatch {
        /// The table.
        table: String,
        /// The rule the tenant declares.
        tenant: outpost_protocol::scope::ScopeRule,
        /// The rule this database tracks it with (`None`: unscoped).
        local: Option<outpost_protocol::scope::ScopeRule>,
    },
    /// The peer refused this device's push twice as stamped more than a day ahead of its
    /// trusted time, the second time after the device re-stamped what it could
    /// (`clock_ahead.rs`): what is left are edits of far-future versions the peer does not hold
    /// yet, or changes that already left with those clocks.
    ClockAhead {
        /// The peer's label ("hub", "cloud").
        peer: String,
        /// The largest clock the refused push carried (ms).
        stamped_ms: u64,
        /// The peer's trusted time, as its hello stated it (ms).
        relay_ms: u64,
    },
    /// The peer answered busy (its memory for pushes full, or too many connections) to every
    /// attempt of a session, waiting between them (`client.rs`); the sessions it acknowledged
    /// before stay synced.
    StayedBusy {
        /// The peer's label ("hub", "cloud").
        peer: String,
        /// Attempts made in a row.
        attempts: u32,
        /// Time waited between them.
        waited: std::time::Duration,
        /// The last refusal.
        last: Box<SyncError>,
    },
    /// A bad argument or option.
    Argument(String),
    /// The engine failed (SQLite, bookkeeping).
    Engine(Error),
}

/// What is wrong with the device key file (each text says what to do).
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyFileProblem {
    /// It cannot be read.
    Read(io::Error),
    /// Group or others may read it.
    Readable,
    /// Wrong length or header.
    NotAKey,
    /// It belongs to another database.
    OtherDatabase {
        /// The site id in the file.
        owner: SiteId,
        /// This database's.
        site: SiteId,
    },
    /// The secret is not a P-256 scalar.
    Invalid(KeyError),
    /// No randomness for its temporary file's name.
    Randomness(getrandom::Error),
    /// Another connection created it, then it was gone.
    Vanished,
    /// It cannot be created.
    Create(io::Error),
}

impl fmt::Display for KeyFileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileProblem::Read(e) => write!(f, "cannot read it: {e}"),
            KeyFileProblem::Readable => f.write_str(
                "other users can read it: run chmod 600 on it (or delete it and re-enroll)",
            ),
            KeyFileProblem::NotAKey => f.write_str(
                "not an Outpost device key (wrong length or header); move it away and re-enroll",
            ),
            KeyFileProblem::OtherDatabase { owner, site } => write!(
                f,
                "it belongs to the database with site id {owner}, not to this one ({site}): this database file was copied or replaced; move the key file away and re-enroll"
            ),
            KeyFileProblem::Invalid(e) => write!(f, "invalid key: {e}; move it away and re-enroll"),
            KeyFileProblem::Randomness(e) => write!(f, "no randomness: {e}"),
            KeyFileProblem::Vanished => f.write_str("created by another connection, then vanished"),
            KeyFileProblem::Create(e) => write!(f, "cannot create it: {e}"),
        }
    }
}

/// A link failure, in the device's words (what tests and apps match on: "key mismatch", "not
/// the hub you enrolled with", "re-enroll", "revoked", "peer unreachable").
fn write_link(f: &mut fmt::Formatter<'_>, e: &LinkError) -> fmt::Result {
    match e {
        LinkError::Unanswered { at } => write!(
            f,
            "key mismatch: the peer at {} closed the connection without answering the handshake, which is what a peer without the key pinned for {} does: this is probably not the hub you enrolled with (or the connection was cut); nothing was changed",
            at.address, at.peer
        ),
        LinkError::Handshake { at, error } => match error {
            HandshakeError::KeyMismatch => write!(
                f,
                "key mismatch: this is not the hub you enrolled with: the peer at {} does not prove the key pinned for {}; nothing was sent or changed",
                at.address, at.peer
            ),
            HandshakeError::Refused(Refusal::SiteReused) => write!(
                f,
                "re-enroll: {} refused this database: its site id is bound to another key (a copied or restored database file, or a lost key file); enroll this device again with a new code",
                at.peer
            ),
            HandshakeError::Refused(Refusal::Revoked) => write!(
                f,
                "revoked: {} says this device's access was revoked; ask the operator to enroll it again",
                at.peer
            ),
            HandshakeError::Refused(Refusal::UnknownKey) => write!(
                f,
                "not enrolled: {} does not know this device's key (its key file was replaced, or the peer forgot it); re-enroll with a new code",
                at.peer
            ),
            HandshakeError::Refused(other) => write!(f, "refused by {}: {other}", at.peer),
            HandshakeError::EnrollmentRefused => write!(f, "{error}"),
            _ => write!(f, "handshake failed: {error}"),
        },
        LinkError::Channel { error, .. } => write!(f, "connection failed: {error}; retry"),
        LinkError::Message { error, .. } => {
            write!(f, "the peer sent a malformed message: {error}")
        }
        LinkError::Session { error, .. } => write!(f, "sync session failed: {error}"),
        LinkError::Peer { code, message, .. } => match code {
            ErrorCode::SiteIdReused => write!(f, "re-enroll: {message}"),
            ErrorCode::Unauthorized => write!(f, "not authorized (revoked?): {message}"),
            ErrorCode::ForeignOrigin => write!(
                f,
                "refused: this database pushed changes of another origin (was it copied from \
                 another device?): {message}"
            ),
            ErrorCode::DirectionRefused => write!(
                f,
                "refused: this database pushed changes to a table only the cloud writes (declared \
                 `down` by the tenant): {message}"
            ),
            ErrorCode::ClockAhead => write!(
                f,
                "refused: this device's push carries clocks more than a day ahead of the peer's \
                 trusted time: {message}"
            ),
            _ => write!(f, "the peer ended the session ({code:?}): {message}"),
        },
        e if e.is_lost_connection() => write!(f, "{e}; retry"),
        e => write!(f, "{e}"),
    }
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
            SyncError::Link(e) => write_link(f, e),
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
            SyncError::EnrollmentUnconfirmed(why) => {
                f.write_str("enrollment not confirmed: ")?;
                match why {
                    Unconfirmed::Link(e) => write_link(f, e)?,
                    Unconfirmed::WrongSite { hello, code } => write!(
                        f,
                        "the peer's hello names site {hello} but the code names {code}"
                    )?,
                    Unconfirmed::Peer { code, message } => {
                        write!(f, "the peer answered with an error ({code:?}): {message}")?
                    }
                    Unconfirmed::Unexpected { tag } => {
                        write!(f, "the peer answered message tag {tag}")?
                    }
                }
                f.write_str("; the token may have been used meanwhile: ask for a new code")
            }
            SyncError::Restored { peer_has, issued } => write!(
                f,
                "re-enroll: the peer holds changes of this database up to seq {peer_has} but this database issued only {issued}: it was restored from an older copy, and new writes would reuse sequence numbers; enroll this database again (it needs a new site id)"
            ),
            SyncError::KeyFile { path, problem } => {
                write!(f, "device key file {}: {problem}", path.display())
            }
            SyncError::PeerAddresses(e) => write!(f, "the peer's addresses: {e}"),
            SyncError::Randomness { purpose, error } => {
                write!(f, "no randomness for {purpose}: {error}")
            }
            SyncError::AllFailed { first, others } => {
                write!(f, "{first}")?;
                for (i, (peer, e)) in others.iter().enumerate() {
                    f.write_str(if i == 0 { " (also tried " } else { "; " })?;
                    write!(f, "{peer}: {e}")?;
                }
                if !others.is_empty() {
                    f.write_str(")")?;
                }
                Ok(())
            }
            SyncError::NoIdsLeft { sequence, pending } => {
                write!(f, "no ids left for sequence '{sequence}' (")?;
                if *pending > 0 {
                    write!(f, "{pending} requested, waiting for the next sync")?;
                } else {
                    f.write_str("none requested")?;
                }
                write!(
                    f,
                    "); call outpost_reserve_ids('{sequence}', n) and sync"
                )
            }
            SyncError::DirectionMismatch {
                table,
                tenant,
                local,
            } => write!(
                f,
                "table \"{table}\" is \"{tenant}\" in this tenant but tracked here as \"{local}\": \
                 track it with '{{\"direction\": \"{tenant}\"}}' (nothing was pushed)"
            ),
            SyncError::ScopeRuleMismatch {
                table,
                tenant,
                local,
            } => {
                let local = local
                    .as_ref()
                    .map_or("no scope".to_string(), |r| r.to_string());
                let option = match tenant {
                    outpost_protocol::scope::ScopeRule::Column(c) => format!("{{\"scope\": \"{c}\"}}"),
                    outpost_protocol::scope::ScopeRule::Via(c) => {
                        format!("{{\"scope\": {{\"via\": \"{c}\"}}}}")
                    }
                };
                write!(
                    f,
                    "table \"{table}\" has {tenant} in this tenant but is tracked here with {local}: \
                     track it with '{option}' (nothing was pushed)"
                )
            }
            SyncError::ClockAhead {
                peer,
                stamped_ms,
                relay_ms,
            } => write!(
                f,
                "the {peer} refused changes stamped {}, more than a day ahead of its trusted time \
                 {}, again after this device re-stamped its unsent changes: what is left are \
                 edits of versions stamped that far ahead (an edit stays above the version it \
                 replaced), or changes that already left with those clocks; they go through once \
                 the {peer} holds those versions (sync the hub with the cloud), nothing is lost \
                 meanwhile",
                UtcDate(*stamped_ms),
                UtcDate(*relay_ms)
            ),
            SyncError::StayedBusy {
                peer,
                attempts,
                waited,
                last,
            } => write!(
                f,
                "the {peer} stayed busy: {attempts} attempts in a row over {:.1} s were refused \
                 ({last}); what it acknowledged before is synced, sync again later",
                waited.as_secs_f64()
            ),
            SyncError::Argument(m) => f.write_str(m),
            SyncError::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Code(e) => Some(e),
            SyncError::Link(e) | SyncError::EnrollmentUnconfirmed(Unconfirmed::Link(e)) => Some(e),
            SyncError::Randomness { error, .. } => Some(error),
            SyncError::KeyFile { problem, .. } => match problem {
                KeyFileProblem::Read(e) | KeyFileProblem::Create(e) => Some(e),
                KeyFileProblem::Invalid(e) => Some(e),
                KeyFileProblem::Randomness(e) => Some(e),
                _ => None,
            },
            SyncError::PeerAddresses(e) => Some(e),
            SyncError::AllFailed { first, .. } => Some(&**first),
            SyncError::StayedBusy { last, .. } => Some(&**last),
            SyncError::Engine(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for SyncError {
    fn from(e: Error) -> Self {
        SyncError::Engine(e)
    }
}

impl From<LinkError> for SyncError {
    fn from(e: LinkError) -> Self {
        SyncError::Link(e)
    }
}

impl SyncError {
    /// The extension's error for `function`: engine errors keep their SQLite code; argument
    /// errors stay argument errors (named after `function`); the rest are sync errors
    /// (`SQLITE_ERROR`), shown with the function's name in front.
    pub(crate) fn into_error(self, function: &'static str) -> Error {
        match self {
            SyncError::Engine(e) => e,
            SyncError::Argument(m) if m.starts_with(function) => Error::Argument(m),
            SyncError::Argument(m) => Error::Argument(format!("{function}: {m}")),
            other => Error::Sync {
                function,
                error: Box::new(other),
            },
        }
    }
}
