//! Why a REST pull or push failed or was refused, and the HTTP status each answers with.

use crate::changelog::ChangelogError;
use crate::schema::SchemaError;
use std::fmt;

/// Why the server could not serve a pull or push (HTTP 500; nothing was written).
#[derive(Debug)]
pub enum RestError {
    /// The REST change log or its triggers failed.
    Changelog(ChangelogError),
    /// Reading a REST table's columns failed.
    Schema(SchemaError),
    /// SQLite failed on the tenant database.
    Sqlite(rusqlite::Error),
    /// Writing the answer as JSON failed.
    Encode(serde_json::Error),
    /// Reading the tenant's table settings from the mailbox failed.
    Mailbox(outpost_mailbox::MailboxError),
    /// Reading the token's rights from the control file failed.
    Control(crate::control::ControlError),
    /// PostgreSQL failed on the tenant database.
    Postgres {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// The PostgreSQL tenant's REST change log could not be installed or read.
    RestLog(crate::postgres::rest_log::RestLogError),
}

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestError::Changelog(e) => e.fmt(f),
            RestError::Schema(e) => e.fmt(f),
            RestError::Sqlite(_) => f.write_str("the tenant database failed"),
            RestError::Encode(_) => f.write_str("writing the answer as JSON"),
            RestError::Mailbox(_) => f.write_str("reading the tenant's table settings"),
            RestError::Control(_) => f.write_str("reading the api token's rights"),
            RestError::Postgres { doing, .. } => write!(f, "the tenant database failed {doing}"),
            RestError::RestLog(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: these say what failed themselves.
            RestError::Changelog(e) => e.source(),
            RestError::Schema(e) => e.source(),
            RestError::Sqlite(e) => Some(e),
            RestError::Encode(e) => Some(e),
            RestError::Mailbox(e) => Some(e),
            RestError::Control(e) => Some(e),
            RestError::Postgres { source, .. } => Some(source),
            RestError::RestLog(e) => e.source(),
        }
    }
}

impl From<ChangelogError> for RestError {
    fn from(e: ChangelogError) -> Self {
        RestError::Changelog(e)
    }
}

impl From<crate::postgres::rest_log::RestLogError> for RestError {
    fn from(e: crate::postgres::rest_log::RestLogError) -> Self {
        RestError::RestLog(e)
    }
}

impl From<SchemaError> for RestError {
    fn from(e: SchemaError) -> Self {
        RestError::Schema(e)
    }
}

impl From<rusqlite::Error> for RestError {
    fn from(e: rusqlite::Error) -> Self {
        RestError::Sqlite(e)
    }
}

/// What is wrong with a push body (found before anything is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidPush {
    /// The body is not a JSON object.
    NotAnObject,
    /// A table the REST API does not serve.
    UnknownTable {
        /// The table.
        table: String,
    },
    /// A table's value is not an object.
    NotATable {
        /// The table.
        table: String,
    },
    /// A table's object has a key other than `created`, `updated` and `deleted`.
    UnknownKey {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// `created`, `updated` or `deleted` is not an array.
    NotAnArray {
        /// The table.
        table: String,
        /// Which list.
        list: &'static str,
    },
    /// A created or updated record is not an object.
    RecordNotAnObject {
        /// The table.
        table: String,
        /// Which list.
        list: &'static str,
    },
    /// A created or updated record has no non-empty string `id`.
    NoId {
        /// The table.
        table: String,
        /// Which list.
        list: &'static str,
    },
    /// A record names a column the table does not have.
    UnknownColumn {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The column.
        column: String,
    },
    /// A record's value is an array or an object.
    NotAScalar {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The column.
        column: String,
    },
    /// `deleted` holds something other than non-empty strings.
    DeletedNotIds {
        /// The table.
        table: String,
    },
    /// A table the tenant declares `down`: only the cloud's operator writes it (HTTP 403).
    DownTable {
        /// The table.
        table: String,
    },
    /// A table the token's rights do not let it write (HTTP 403).
    NotWritable {
        /// The table.
        table: String,
    },
    /// A record of a scoped table in a scope the token is not granted: a created row's scope,
    /// or the current scope of a row it updates or deletes (HTTP 403).
    ScopeNotGranted {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The scope (`None`: the row has none).
        scope: Option<String>,
    },
    /// A created or updated record's scope cell holds no scope name (NULL, `''`, `*`, more
    /// than 64 bytes or a character outside `[A-Za-z0-9_.-]`), or a created row gives none.
    BadScope {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The scope column.
        column: String,
    },
    /// A created record of a table scoped `via` a parent names no parent row with a scope.
    NoParentScope {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The `via` column.
        column: String,
    },
    /// A value the column's PostgreSQL type cannot hold (a PostgreSQL tenant keeps real types:
    /// text into a `bigint` column, a real into `bigint`, text that is not hex into `bytea`,
    /// text with NUL).
    DoesNotFit {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// The column.
        column: String,
        /// The column's type.
        pg_type: String,
    },
    /// More records (created, updated and deleted, all tables) than one push may hold (HTTP 413).
    TooManyRecords {
        /// [`MAX_PUSH_RECORDS`](super::MAX_PUSH_RECORDS).
        limit: usize,
    },
}

impl fmt::Display for InvalidPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidPush::NotAnObject => f.write_str("the body must be a JSON object of tables"),
            InvalidPush::UnknownTable { table } => write!(
                f,
                "unknown table {table:?} (the REST API serves tracked tables whose primary key \
                 is `id`)"
            ),
            InvalidPush::NotATable { table } => {
                write!(f, "{table}: expected {{created, updated, deleted}}")
            }
            InvalidPush::UnknownKey { table, key } => write!(f, "{table}: unknown key {key:?}"),
            InvalidPush::NotAnArray { table, list } => write!(f, "{table}.{list} must be an array"),
            InvalidPush::RecordNotAnObject { table, list } => {
                write!(f, "{table}.{list}: records are objects")
            }
            InvalidPush::NoId { table, list } => {
                write!(f, "{table}.{list}: a record without a string `id`")
            }
            InvalidPush::UnknownColumn { table, id, column } => {
                write!(f, "{table}/{id}: unknown column {column:?}")
            }
            InvalidPush::NotAScalar { table, id, column } => write!(
                f,
                "{table}/{id}: column {column:?} holds an array or object; values are strings, \
                 numbers, booleans or null"
            ),
            InvalidPush::DeletedNotIds { table } => {
                write!(f, "{table}.deleted holds ids (strings)")
            }
            InvalidPush::DownTable { table } => write!(
                f,
                "table {table:?} is declared down: it is written on the cloud only, never by an \
                 app"
            ),
            InvalidPush::NotWritable { table } => write!(
                f,
                "this api token may not write table {table:?} (its rights: outpost-cloud grant \
                 --token NAME --tables ...)"
            ),
            InvalidPush::ScopeNotGranted {
                table,
                id,
                scope: Some(scope),
            } => write!(
                f,
                "scope '{scope}' is not granted to this token ({table}/{id}; its scopes: \
                 outpost-cloud grant --token NAME --scopes ...)"
            ),
            InvalidPush::ScopeNotGranted {
                table,
                id,
                scope: None,
            } => write!(
                f,
                "{table}/{id} belongs to no scope: only a token granted every scope writes it"
            ),
            InvalidPush::BadScope { table, id, column } => write!(
                f,
                "{table}/{id}: column {column:?} must hold a scope name (1-64 of A-Z a-z 0-9 _ . \
                 -; not null, '' or '*')"
            ),
            InvalidPush::NoParentScope { table, id, column } => write!(
                f,
                "{table}/{id}: column {column:?} must name a parent row that has a scope (the \
                 record belongs to its parent's scope)"
            ),
            InvalidPush::DoesNotFit {
                table,
                id,
                column,
                pg_type,
            } => write!(
                f,
                "{table}/{id}: column {column:?} holds PostgreSQL {pg_type}, which this value does \
                 not fit (bigint: integers; double precision and numeric: numbers; text: strings \
                 without NUL; bytea: hex strings)"
            ),
            InvalidPush::TooManyRecords { limit } => write!(
                f,
                "more than {limit} records in one push; push them in several parts"
            ),
        }
    }
}

/// The tenant database's refusal of a push's write or commit (a constraint), as the answer
/// quotes it.
#[derive(Debug)]
pub enum Refusal {
    /// SQLite's.
    Sqlite(rusqlite::Error),
    /// PostgreSQL's.
    Postgres(::postgres::Error),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Sqlite(e) => e.fmt(f),
            // The server's message ("null value in column ... violates not-null constraint")
            // and its detail, without the client library's wrapping.
            Refusal::Postgres(e) => match e.as_db_error() {
                Some(db) => match db.detail() {
                    Some(detail) => write!(f, "{} ({detail})", db.message()),
                    None => f.write_str(db.message()),
                },
                None => e.fmt(f),
            },
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::Sqlite(e) => Some(e),
            Refusal::Postgres(e) => Some(e),
        }
    }
}

/// Why a push was refused. Nothing was written in any case.
#[derive(Debug)]
pub enum PushError {
    /// The body is not JSON (HTTP 400).
    NotJson(serde_json::Error),
    /// The request is malformed or names what the tables do not have (HTTP 400).
    Invalid(InvalidPush),
    /// Writing a record failed on a constraint (NOT NULL, CHECK, UNIQUE, ...) (HTTP 400).
    Rejected {
        /// The write, as `table/id` or `deleting table/id`.
        write: String,
        /// The database's refusal.
        source: Refusal,
    },
    /// The commit failed, usually on a deferred foreign key (HTTP 400).
    Commit(Refusal),
    /// A pushed record changed on the server after `last_pulled_at` (HTTP 409).
    Conflict {
        /// The table.
        table: String,
        /// The record.
        id: String,
        /// Its change time on the server.
        changed_at: i64,
        /// The push's `last_pulled_at`.
        last_pulled_at: i64,
    },
    /// The server failed (HTTP 500).
    Internal(RestError),
}

impl PushError {
    /// The HTTP status the REST API answers with.
    pub fn status(&self) -> u16 {
        match self {
            PushError::Invalid(InvalidPush::TooManyRecords { .. }) => 413,
            PushError::Invalid(
                InvalidPush::DownTable { .. }
                | InvalidPush::NotWritable { .. }
                | InvalidPush::ScopeNotGranted { .. },
            ) => 403,
            PushError::NotJson(_)
            | PushError::Invalid(_)
            | PushError::Rejected { .. }
            | PushError::Commit(_) => 400,
            PushError::Conflict { .. } => 409,
            PushError::Internal(_) => 500,
        }
    }

    /// The `error` text the REST API answers with: what was refused and the database's reason, never
    /// the server's internals.
    pub fn answer(&self) -> String {
        match self {
            PushError::Rejected { source, .. } | PushError::Commit(source) => {
                format!("{self}: {source}")
            }
            PushError::NotJson(e) => format!("{self}: {e}"),
            PushError::Internal(_) => "server error".into(),
            PushError::Invalid(_) | PushError::Conflict { .. } => self.to_string(),
        }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::NotJson(_) => f.write_str("the body is not JSON"),
            PushError::Invalid(why) => write!(f, "invalid push: {why}"),
            PushError::Rejected { write, .. } => write!(f, "invalid push: {write}"),
            PushError::Commit(_) => f.write_str("invalid push: at commit (a foreign key?)"),
            PushError::Conflict {
                table,
                id,
                changed_at,
                last_pulled_at,
            } => write!(
                f,
                "conflict: {table}/{id} changed on the server at {changed_at}, after \
                 last_pulled_at {last_pulled_at}; pull, then push again"
            ),
            PushError::Internal(_) => f.write_str("server error"),
        }
    }
}

impl std::error::Error for PushError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PushError::Rejected { source, .. } | PushError::Commit(source) => Some(source),
            PushError::Internal(e) => Some(e),
            PushError::NotJson(e) => Some(e),
            PushError::Invalid(_) | PushError::Conflict { .. } => None,
        }
    }
}

impl From<RestError> for PushError {
    fn from(e: RestError) -> Self {
        PushError::Internal(e)
    }
}

/// The database failing on anything but a record's write or the commit is the server's failure.
impl From<rusqlite::Error> for PushError {
    fn from(e: rusqlite::Error) -> Self {
        PushError::Internal(RestError::Sqlite(e))
    }
}

impl From<ChangelogError> for PushError {
    fn from(e: ChangelogError) -> Self {
        PushError::Internal(RestError::Changelog(e))
    }
}

impl From<SchemaError> for PushError {
    fn from(e: SchemaError) -> Self {
        PushError::Internal(RestError::Schema(e))
    }
}

impl From<InvalidPush> for PushError {
    fn from(e: InvalidPush) -> Self {
        PushError::Invalid(e)
    }
}
