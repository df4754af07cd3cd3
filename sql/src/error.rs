//! What a statement can fail with, from either engine.

use std::fmt;

/// A failed statement.
#[derive(Debug)]
pub enum Error {
    /// SQLite's error.
    Sqlite(rusqlite::Error),
    /// PostgreSQL's error.
    #[cfg(feature = "postgres")]
    Postgres(postgres::Error),
    /// `query_row` found no row.
    NoRows,
    /// A column holds another type than the one read.
    Type {
        /// The column's index in the row.
        column: usize,
        /// What was read.
        wanted: &'static str,
        /// What it holds.
        found: &'static str,
    },
    /// A column index past the row's end.
    Column(usize),
    /// A stored value does not read back as what the store wrote (a damaged store).
    Invalid {
        /// The column's index in the row.
        column: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// PostgreSQL returned a column type the stores do not use.
    UnsupportedType {
        /// The type's name.
        name: String,
    },
}

/// A statement's result.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sqlite(e) => e.fmt(f),
            #[cfg(feature = "postgres")]
            Error::Postgres(e) => match e.as_db_error() {
                Some(db) => f.write_str(db.message()),
                None => e.fmt(f),
            },
            Error::NoRows => f.write_str("the query returned no row"),
            Error::Type {
                column,
                wanted,
                found,
            } => write!(f, "column {column} holds {found}, read as {wanted}"),
            Error::Column(i) => write!(f, "no column {i} in the row"),
            Error::Invalid { column, detail } => write!(f, "column {column}: {detail}"),
            Error::UnsupportedType { name } => {
                write!(
                    f,
                    "a column of PostgreSQL type {name}, which the stores do not use"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sqlite(e) => e.source(),
            #[cfg(feature = "postgres")]
            Error::Postgres(e) => e.source(),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NoRows,
            e => Error::Sqlite(e),
        }
    }
}

#[cfg(feature = "postgres")]
impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Postgres(e)
    }
}

impl Error {
    /// Whether a constraint refused the write (UNIQUE, PRIMARY KEY, CHECK, NOT NULL).
    pub fn is_constraint(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            #[cfg(feature = "postgres")]
            Error::Postgres(e) => e.code().is_some_and(|c| c.code().starts_with("23")),
            _ => false,
        }
    }
}
