//! The serving stores' SQL over SQLite or PostgreSQL (docs/design.md section 11): the hub keeps
//! its mailbox and allowlist in SQLite files; a cloud whose tenant is in PostgreSQL keeps them in
//! that database, so several `outpost-cloud run` processes serve one tenant. Both run the same
//! code and the same statements through this crate's [`Connection`], whose surface is the part
//! of rusqlite's the stores use (`execute`, `query_row`, `query_map`, `prepare_cached`,
//! transactions, [`params!`], [`OptionalExtension`]).
//!
//! Statements are written in the dialect both engines share, with SQLite's `?N` parameters;
//! [`dialect`] rewrites what differs for PostgreSQL (`$N`, `INSERT OR IGNORE`, column types in
//! DDL). A write transaction ([`TransactionBehavior::Immediate`]) is SQLite's single writer on
//! both: on PostgreSQL it takes an advisory lock named by the store's schema, so the stores'
//! read-then-write logic (coverage, counters, single-use tokens) stays correct across processes.

pub mod connection;
pub mod dialect;
pub mod error;
#[cfg(feature = "postgres")]
mod pg;
pub mod value;

pub use connection::{Connection, OptionalExtension, Statement, Transaction, TransactionBehavior};
pub use error::{Error, Result};
pub use value::{FromValue, Param, Params, Row, RowIndex, ToParam, Value};

/// Parameters for a statement, as rusqlite's macro of the same name: `params![a, b]`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::ToParam]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::ToParam),+] as &[&dyn $crate::ToParam]
    };
}
