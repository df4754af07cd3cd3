//! Typed errors of the extension, and the one place they become SQLite code + message
//! ([`Error::code`], used by `functions.rs`).

use std::fmt;

mod sync;

pub use sync::{KeyFileProblem, SyncError, Unconfirmed};

/// Everything an Outpost SQL function can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A function was called with a wrong argument (arity is checked by SQLite; type and content
    /// here). Names the function and the argument.
    Argument(String),
    /// `outpost_track` refused a table (no primary key, integer rowid key without opt-in, ...).
    Track(String),
    /// `outpost_apply` / `outpost_track` / `outpost_resolve` was called inside an open transaction.
    InTransaction(&'static str),
    /// A batch could not be applied (decode failure, foreign origin, gap in the vector, ...).
    Apply(ApplyError),
    /// Enrolling or syncing with a peer failed (not enrolled, unreachable, key mismatch, revoked,
    /// re-enroll, ...), or no reserved id is left. The message starts with the function's name
    /// and says what to do.
    Sync {
        /// The SQL function that failed (`outpost_sync`, ...).
        function: &'static str,
        /// Why.
        error: Box<SyncError>,
    },
    /// SQLite reported an error while running one of our statements.
    Sqlite {
        /// The primary or extended result code.
        code: i32,
        /// SQLite's message.
        message: String,
        /// The start of the statement (for the report).
        sql: String,
    },
    /// A value too large for SQLite's C API (more than 2 GiB).
    TooBig(usize),
    /// Stored bookkeeping could not be read back (corrupt or from a newer version).
    Corrupt(String),
    /// A bug: an invariant of this crate did not hold. The message says which.
    Internal(String),
}

/// Why a batch was refused as a whole (the database is unchanged).
#[derive(Debug)]
#[non_exhaustive]
pub enum ApplyError {
    /// The blob is not a batch: truncated, bad hash, unknown version, ... (the decoder's words).
    Malformed(String),
    /// The argument was not a blob.
    NotABlob,
    /// The batch's origin is this database: its own changes never come back.
    OwnOrigin,
    /// The batch starts past what the vector covers: applying it would record knowledge of
    /// changes not held.
    Gap(outpost_protocol::vector::VectorGap),
    /// A table in the header is described inconsistently (e.g. a cell names a column it lacks).
    BadSchema(String),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Malformed(m) => write!(f, "not a valid Outpost batch: {m}"),
            ApplyError::NotABlob => {
                f.write_str("outpost_apply expects a batch blob (from outpost_changes)")
            }
            ApplyError::OwnOrigin => f.write_str(
                "this batch was made by this database: its own changes are never applied back",
            ),
            ApplyError::Gap(g) => write!(
                f,
                "batch refused: {g}; apply the earlier changes of that origin first"
            ),
            ApplyError::BadSchema(m) => write!(f, "batch refused: {m}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Argument(m) => f.write_str(m),
            Error::Track(m) => f.write_str(m),
            Error::InTransaction(func) => write!(
                f,
                "{func} must run outside a transaction (it owns its own transaction for atomicity); COMMIT or ROLLBACK first"
            ),
            Error::Apply(e) => write!(f, "outpost_apply: {e}"),
            Error::Sync { function, error } => {
                let m = error.to_string();
                if m.starts_with(function) {
                    f.write_str(&m)
                } else {
                    write!(f, "{function}: {m}")
                }
            }
            Error::Sqlite { code, message, sql } => {
                write!(f, "outpost: SQLite error {code}: {message}")?;
                if !sql.is_empty() {
                    write!(f, " (in: {sql})")?;
                }
                Ok(())
            }
            Error::TooBig(n) => write!(f, "outpost: value of {n} bytes exceeds SQLite's limit"),
            Error::Corrupt(m) => write!(f, "outpost: bookkeeping unreadable: {m}"),
            Error::Internal(m) => write!(f, "outpost internal error (please report): {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sync { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl From<ApplyError> for Error {
    fn from(e: ApplyError) -> Self {
        Error::Apply(e)
    }
}

impl Error {
    /// The SQLite result code this error is reported with.
    pub fn code(&self) -> i32 {
        match self {
            Error::Sqlite { code, .. } => *code,
            Error::TooBig(_) => 18,  // SQLITE_TOOBIG
            Error::Corrupt(_) => 11, // SQLITE_CORRUPT
            Error::Internal(_) => 2, // SQLITE_INTERNAL
            Error::InTransaction(_)
            | Error::Argument(_)
            | Error::Track(_)
            | Error::Apply(_)
            | Error::Sync { .. } => crate::ffi::SQLITE_ERROR,
        }
    }

    /// True for a constraint violation (UNIQUE, CHECK, NOT NULL, FOREIGN KEY).
    pub fn is_constraint(&self) -> bool {
        matches!(self, Error::Sqlite { code, .. } if code & 0xff == crate::ffi::SQLITE_CONSTRAINT)
    }
}
