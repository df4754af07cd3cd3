//! Typed errors of the extension, and the one place they become SQLite code + message
//! ([`Error::code`], used by `functions.rs`; [`LoadError`] for the entry point's `pzErrMsg`).
//!
//! This module imports nothing else of the crate: every other module, `ffi.rs` included, reports
//! through it, so it sits below all of them.

use outpost_protocol::batch::codec::{DecodeError, EncodeError};
use outpost_protocol::id_range::IdRangeError;
use outpost_protocol::SiteId;
use std::fmt;

mod sync;

pub use sync::{KeyFileProblem, SyncError};

/// SQLite's generic error (`SQLITE_ERROR`).
pub(crate) const SQLITE_ERROR: i32 = 1;
/// A bug in SQLite or in an extension (`SQLITE_INTERNAL`).
pub(crate) const SQLITE_INTERNAL: i32 = 2;
/// The database file or its content is damaged (`SQLITE_CORRUPT`).
pub(crate) const SQLITE_CORRUPT: i32 = 11;
/// A string or blob past SQLite's size limit (`SQLITE_TOOBIG`).
pub(crate) const SQLITE_TOOBIG: i32 = 18;
/// A constraint failed (`SQLITE_CONSTRAINT`, the primary code of `SQLITE_CONSTRAINT_*`).
pub(crate) const SQLITE_CONSTRAINT: i32 = 19;

/// Everything an Outpost SQL function can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A function was called with a wrong argument (arity is checked by SQLite; type and content
    /// here). Names the function and the argument.
    Argument(String),
    /// A function's JSON options argument does not parse.
    OptionsJson {
        /// The function called.
        function: &'static str,
        /// The parser's report.
        source: serde_json::Error,
    },
    /// A function's sequence-name argument is not a valid id sequence name.
    SequenceName {
        /// The function called.
        function: &'static str,
        /// What is wrong with the name.
        source: IdRangeError,
    },
    /// `outpost_track` refused a table (no primary key, integer rowid key without opt-in, ...).
    Track(String),
    /// The app's INSERT or UPDATE of a scoped table broke a scope rule (the triggers refuse it
    /// through `outpost_check_scope`; reported as a constraint failure). Boxed: every function
    /// returns this type, and a wider `Error` costs every call of the per-row trigger functions.
    ScopeWrite(Box<ScopeWriteError>),
    /// The app's INSERT or UPDATE of a tracked table of a strict tenant wrote a value that does
    /// not fit its column (refused by `outpost_strict_check` for an insert, by reading
    /// `outpost_strict_refusal` for an update; reported as a constraint failure). Boxed, as
    /// [`Error::ScopeWrite`].
    StrictWrite(Box<StrictWriteError>),
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
    /// Stored bookkeeping kept as JSON (a table definition, a counter or review cell, a
    /// quarantined change) does not parse.
    CorruptJson {
        /// What was being read.
        what: &'static str,
        /// The parser's report.
        source: serde_json::Error,
    },
    /// A bug: an invariant of this crate did not hold. The message says which.
    Internal(String),
    /// A bug: the crate's own data did not convert to or from JSON.
    InternalJson {
        /// What was being converted.
        what: &'static str,
        /// The converter's report.
        source: serde_json::Error,
    },
    /// A bug: an export did not fit the batch format's rules for the schemas it declared.
    Export {
        /// The table whose row was being written, when the failure concerns a row.
        table: Option<String>,
        /// The encoder's report.
        source: EncodeError,
    },
    /// The operating system gave no random bytes (for a site id, a UUID, an id request).
    NoRandomness {
        /// What needed them.
        what: &'static str,
        /// The operating system's report.
        source: getrandom::Error,
    },
}

/// Why a write to a scoped table was refused (docs/design.md section 10, "Scopes").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeWriteError {
    /// The row's scope column holds no scope name (1-64 of `[A-Za-z0-9_.-]`): NULL, `''`, `'*'`,
    /// another character, or a value that is not text.
    NotAName {
        /// The table written.
        table: String,
        /// Its scope column.
        column: String,
        /// What it held, as the message shows it (`NULL`, `'*'`, `the integer 5`).
        found: String,
    },
    /// A row inserted into a scope this device's grant does not hold.
    NotGranted {
        /// The scope.
        scope: String,
    },
    /// A write to a row of a scope removed from this device's grant, which drains until its
    /// rows leave the device (docs/design.md section 10, "Regrants").
    Draining {
        /// The scope.
        scope: String,
    },
}

impl fmt::Display for ScopeWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeWriteError::NotAName {
                table,
                column,
                found,
            } => write!(
                f,
                "outpost: scope column \"{column}\" of \"{table}\" must hold a scope name (1-64 of A-Z a-z 0-9 _ . -), not {found}"
            ),
            ScopeWriteError::NotGranted { scope } => {
                write!(f, "outpost: scope '{scope}' is not granted to this device")
            }
            ScopeWriteError::Draining { scope } => write!(
                f,
                "outpost: scope '{scope}' was removed from this device's grant: its rows are \
                 read-only until they leave this device (after its next sync)"
            ),
        }
    }
}

impl std::error::Error for ScopeWriteError {}

/// Why the app's write of a tracked table was refused in a strict tenant (docs/design.md section
/// 11, "Values must fit PostgreSQL's types": the tenant's cloud keeps its tables in PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StrictWriteError {
    /// The value's SQLite type does not fit the PostgreSQL type of the column's declared type.
    Type {
        /// The table written.
        table: String,
        /// The column.
        column: String,
        /// Its declared type, as the table declares it.
        declared: String,
        /// The PostgreSQL type the cloud keeps it in.
        postgres: &'static str,
        /// What was written, as the message shows it (`'abc'`, `the real 1.5`).
        found: String,
    },
    /// Text holding a NUL character, which PostgreSQL text cannot store.
    Nul {
        /// The table written.
        table: String,
        /// The column.
        column: String,
    },
}

impl fmt::Display for StrictWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrictWriteError::Type {
                table,
                column,
                declared,
                postgres,
                found,
            } => write!(
                f,
                "outpost: {table}.{column} takes {declared} (PostgreSQL {postgres}): {found} does not fit"
            ),
            StrictWriteError::Nul { table, column } => write!(
                f,
                "outpost: {table}.{column} takes text without NUL characters (PostgreSQL text): the text written holds one"
            ),
        }
    }
}

impl std::error::Error for StrictWriteError {}

/// Why a batch was refused as a whole (the database is unchanged).
#[derive(Debug)]
#[non_exhaustive]
pub enum ApplyError {
    /// The blob is not a batch: truncated, bad hash, unknown version, ... (the decoder's report).
    Decode(DecodeError),
    /// The argument was not a blob.
    NotABlob,
    /// The batch's origin is this database: its own changes never come back.
    OwnOrigin,
    /// The batch starts past what the vector covers: applying it would record knowledge of
    /// changes not held.
    Gap(outpost_protocol::vector::VectorGap),
    /// A table in the header is described inconsistently (e.g. a cell names a column it lacks).
    BadSchema(String),
    /// The database is enrolled with a relay and the batch is not signed.
    Unsigned {
        /// The origin the batch names.
        origin: SiteId,
    },
    /// The batch's signature does not verify with the key the directory holds for its origin.
    BadSignature {
        /// The origin the batch names.
        origin: SiteId,
        /// Its first seq.
        lo: u64,
        /// Its last seq.
        hi: u64,
    },
    /// The database is enrolled with a relay and its key directory has no key for the origin.
    UnknownOrigin {
        /// The origin the batch names.
        origin: SiteId,
    },
    /// A sealed batch could not be opened: no key of its epoch is held, or it does not
    /// authenticate.
    Sealed(outpost_protocol::seal::SealError),
    /// The batch names a version of its origin's grant the key directory does not state yet.
    UnknownGrant {
        /// The origin the batch names.
        origin: SiteId,
        /// The grant version it names.
        version: u64,
    },
}

/// Why the extension could not initialize on a connection. The entry point hands its text to
/// SQLite through `pzErrMsg`, which shows it after "error during initialization: ".
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// SQLite passed a null routines table to the entry point.
    NoRoutines,
    /// The routines table lacks a function this crate calls (a SQLite older than 3.14).
    MissingRoutine(&'static str),
    /// SQLite refused to register one of the SQL functions or the `outpost_clock` table.
    Register {
        /// The function or table.
        name: &'static str,
        /// SQLite's result code.
        code: i32,
        /// SQLite's message for it.
        message: String,
    },
    /// The initialization panicked (a bug).
    Panicked,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Decode(e) => write!(f, "not a valid Outpost batch: {e}"),
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
            ApplyError::Unsigned { origin } => write!(
                f,
                "batch of origin {origin} refused: it is not signed, and this database is enrolled \
                 with a relay, so it applies only batches signed by their origin; nothing was \
                 applied. Export it from a database that has enrolled or synced (outpost_changes \
                 signs there), or let it travel through outpost_sync"
            ),
            ApplyError::BadSignature { origin, lo, hi } => write!(
                f,
                "batch of origin {origin} seqs {lo}..={hi} refused: its signature does not verify \
                 with the key this database's key directory holds for {origin}, so it was not made \
                 by that site (forged or tampered); nothing was applied"
            ),
            ApplyError::UnknownOrigin { origin } => write!(
                f,
                "batch of origin {origin} refused: this database does not know that site's key \
                 yet, so it cannot check the batch was made by it; nothing was applied. Run \
                 outpost_sync (the key directory brings the key), then apply it again"
            ),
            ApplyError::Sealed(e) => write!(f, "sealed batch refused: {e}; nothing was applied"),
            ApplyError::UnknownGrant { origin, version } => write!(
                f,
                "batch of origin {origin} refused: it names version {version} of that site's \
                 grant, which this database's control stream does not state yet, so it cannot \
                 judge whether the batch was written within the grant; nothing was applied. Run \
                 outpost_sync (the control stream brings the grant), then apply it again"
            ),
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Decode(e) => Some(e),
            ApplyError::Gap(g) => Some(g),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Argument(m) => f.write_str(m),
            Error::OptionsJson { function, source } => {
                write!(f, "{function}: options are not valid JSON: {source}")
            }
            Error::SequenceName { function, source } => {
                write!(f, "{function}: sequence: {source}")
            }
            Error::Track(m) => f.write_str(m),
            Error::ScopeWrite(e) => write!(f, "{e}"),
            Error::StrictWrite(e) => write!(f, "{e}"),
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
            Error::CorruptJson { what, source } => {
                write!(f, "outpost: bookkeeping unreadable: {what}: {source}")
            }
            Error::Internal(m) => write!(f, "outpost internal error (please report): {m}"),
            Error::InternalJson { what, source } => {
                write!(f, "outpost internal error (please report): {what}: {source}")
            }
            Error::Export { table, source } => {
                f.write_str("outpost internal error (please report): ")?;
                if let Some(t) = table {
                    write!(f, "exporting a row of {t}: ")?;
                }
                write!(f, "{source}")
            }
            Error::NoRandomness { what, source } => write!(
                f,
                "outpost internal error (please report): {what}: no randomness: {source}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sync { error, .. } => Some(&**error),
            Error::OptionsJson { source, .. }
            | Error::CorruptJson { source, .. }
            | Error::InternalJson { source, .. } => Some(source),
            Error::SequenceName { source, .. } => Some(source),
            Error::Apply(e) => Some(e),
            Error::ScopeWrite(e) => Some(&**e),
            Error::StrictWrite(e) => Some(&**e),
            Error::Export { source, .. } => Some(source),
            Error::NoRandomness { source, .. } => Some(source),
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
            Error::TooBig(_) => SQLITE_TOOBIG,
            Error::Corrupt(_) | Error::CorruptJson { .. } => SQLITE_CORRUPT,
            Error::ScopeWrite(_) | Error::StrictWrite(_) => SQLITE_CONSTRAINT,
            Error::Internal(_)
            | Error::InternalJson { .. }
            | Error::Export { .. }
            | Error::NoRandomness { .. } => SQLITE_INTERNAL,
            Error::InTransaction(_)
            | Error::Argument(_)
            | Error::OptionsJson { .. }
            | Error::SequenceName { .. }
            | Error::Track(_)
            | Error::Apply(_)
            | Error::Sync { .. } => SQLITE_ERROR,
        }
    }

    /// An export's encoding failure that concerns no row in particular.
    pub(crate) fn export(source: EncodeError) -> Error {
        Error::Export {
            table: None,
            source,
        }
    }

    /// True for a constraint violation (UNIQUE, CHECK, NOT NULL, FOREIGN KEY).
    pub fn is_constraint(&self) -> bool {
        matches!(self, Error::Sqlite { code, .. } if code & 0xff == SQLITE_CONSTRAINT)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NoRoutines => {
                f.write_str("outpost: SQLite passed no API routines table to the entry point")
            }
            LoadError::MissingRoutine(name) => write!(
                f,
                "outpost: this SQLite lacks sqlite3_{name}; Outpost needs SQLite 3.14 or later"
            ),
            LoadError::Register {
                name,
                code,
                message,
            } => write!(
                f,
                "outpost: could not register {name} (SQLite code {code}): {message}"
            ),
            LoadError::Panicked => {
                f.write_str("outpost: initialization failed on an internal error (please report)")
            }
        }
    }
}

impl std::error::Error for LoadError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn json_error(text: &str) -> serde_json::Error {
        match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) => e,
            Ok(v) => panic!("{text:?} parsed as {v}"),
        }
    }

    #[test]
    fn bad_options_name_the_function_and_keep_the_parsers_report() {
        let e = Error::OptionsJson {
            function: "outpost_track",
            source: json_error("{\"direction\": "),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("outpost_track: options are not valid JSON: EOF while parsing"),
            "{text}"
        );
        assert_eq!(e.code(), SQLITE_ERROR);
        let source = e.source().map(ToString::to_string).unwrap_or_default();
        assert!(text.ends_with(&source), "{text} / {source}");
    }

    #[test]
    fn unreadable_bookkeeping_is_reported_as_corrupt_with_what_was_read() {
        let e = Error::CorruptJson {
            what: "table definition",
            source: json_error("[1,"),
        };
        assert_eq!(e.code(), SQLITE_CORRUPT);
        assert!(e
            .to_string()
            .starts_with("outpost: bookkeeping unreadable: table definition: "));
        assert!(e.source().is_some());
    }

    #[test]
    fn a_refused_registration_names_the_function_and_sqlites_reason() {
        let e = LoadError::Register {
            name: "outpost_version",
            code: 5,
            message: "unable to delete/modify user-function due to active statements".into(),
        };
        assert_eq!(
            e.to_string(),
            "outpost: could not register outpost_version (SQLite code 5): \
             unable to delete/modify user-function due to active statements"
        );
    }
}
