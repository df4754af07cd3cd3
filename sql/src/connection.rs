//! [`Connection`]: one SQLite connection, or (feature `postgres`) one PostgreSQL session whose
//! `search_path` is the store's schema, behind the same calls.

use crate::error::{Error, Result};
use crate::value::{Param, Params, Row};
use rusqlite::params_from_iter;

#[cfg(feature = "postgres")]
use crate::pg::PgConn;
#[cfg(feature = "postgres")]
use std::cell::RefCell;

/// How a transaction starts (rusqlite's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionBehavior {
    /// Reads see one snapshot (SQLite `BEGIN DEFERRED`; PostgreSQL `REPEATABLE READ`).
    Deferred,
    /// The store's one writer (SQLite `BEGIN IMMEDIATE`; PostgreSQL: the store's advisory lock,
    /// held to the end of the transaction, so processes sharing the store write one at a time).
    Immediate,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Postgres(Box<RefCell<PgConn>>),
}

/// A store's connection.
pub struct Connection {
    inner: Inner,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Sqlite(_) => "Connection(SQLite)",
            #[cfg(feature = "postgres")]
            Inner::Postgres(_) => "Connection(PostgreSQL)",
        })
    }
}

impl From<rusqlite::Connection> for Connection {
    fn from(c: rusqlite::Connection) -> Self {
        Connection {
            inner: Inner::Sqlite(c),
        }
    }
}

impl Connection {
    /// Over PostgreSQL: `client`'s session, its `search_path` set to `schema` (made if missing),
    /// its write transactions serialised by an advisory lock named by `schema`.
    #[cfg(feature = "postgres")]
    pub fn postgres(client: postgres::Client, schema: &str) -> Result<Connection> {
        Ok(Connection {
            inner: Inner::Postgres(Box::new(RefCell::new(PgConn::new(client, schema)?))),
        })
    }

    /// Makes a store's tables in its PostgreSQL schema with `ddl` (idempotent `CREATE ... IF NOT
    /// EXISTS`), in one write transaction, recording `version` the first time; returns the
    /// version recorded (SQLite files keep theirs in `PRAGMA user_version` instead).
    #[cfg(feature = "postgres")]
    pub fn make_postgres_tables(&self, ddl: &str, version: i64) -> Result<i64> {
        self.execute_batch(&format!(
            "BEGIN IMMEDIATE; {ddl}; \
             CREATE TABLE IF NOT EXISTS schema_version(id INTEGER PRIMARY KEY CHECK (id = 0), \
               version INTEGER NOT NULL); \
             INSERT OR IGNORE INTO schema_version(id, version) VALUES (0, {version}); COMMIT;"
        ))?;
        self.query_row("SELECT version FROM schema_version WHERE id = 0", (), |r| {
            r.get(0)
        })
    }

    /// The SQLite connection, for what only SQLite has (pragmas); `None` on PostgreSQL.
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            #[cfg(feature = "postgres")]
            Inner::Postgres(_) => None,
        }
    }

    /// Whether this is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.sqlite().is_some()
    }

    /// Whether table `name` exists (in the store's schema, on PostgreSQL).
    pub fn has_table(&self, name: &str) -> Result<bool> {
        let sql = match &self.inner {
            Inner::Sqlite(_) => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            #[cfg(feature = "postgres")]
            Inner::Postgres(_) => "SELECT 1 WHERE to_regclass(?1) IS NOT NULL",
        };
        self.query_row(sql, [name], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
    }

    /// A number that stays the same only while no connection committed a change to the store
    /// (SQLite's `PRAGMA data_version`). PostgreSQL has none: each call answers a new number, so
    /// a caller always looks again.
    pub fn data_version(&self) -> Result<i64> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.query_row("PRAGMA data_version", [], |r| r.get(0))?),
            #[cfg(feature = "postgres")]
            Inner::Postgres(c) => Ok(c.borrow_mut().next_version()),
        }
    }

    /// SQLite's `PRAGMA integrity_check` verdict (`ok`); PostgreSQL checks its own pages, so
    /// `ok` there.
    pub fn integrity_check(&self) -> Result<String> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?),
            #[cfg(feature = "postgres")]
            Inner::Postgres(_) => Ok("ok".to_string()),
        }
    }

    /// Whether no transaction is open.
    pub fn is_autocommit(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(c) => c.is_autocommit(),
            #[cfg(feature = "postgres")]
            Inner::Postgres(c) => !c.borrow().in_transaction(),
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let params = params.params();
        match &self.inner {
            Inner::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(params_from_iter(params.iter()))?),
            #[cfg(feature = "postgres")]
            Inner::Postgres(c) => c.borrow_mut().execute(sql, &params),
        }
    }

    /// Runs several `;`-separated statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            #[cfg(feature = "postgres")]
            Inner::Postgres(c) => c.borrow_mut().batch(sql),
        }
    }

    /// The first row of `sql`, mapped by `f`; [`Error::NoRows`] when there is none.
    pub fn query_row<P: Params, T>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        let mut f = Some(f);
        let mut first = None;
        self.each(sql, &params.params(), &mut |row| {
            if let Some(f) = f.take() {
                first = Some(f(row));
            }
            Ok(false)
        })?;
        first.unwrap_or(Err(Error::NoRows))
    }

    /// Every row of `sql`, each mapped by `f` as it is read (one row in memory at a time).
    pub fn query_map<P: Params, T>(
        &self,
        sql: &str,
        params: P,
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut out = Vec::new();
        self.each(sql, &params.params(), &mut |row| {
            out.push(f(row));
            Ok(true)
        })?;
        Ok(out.into_iter())
    }

    /// Calls `f` with each row of `sql` until it answers `false`.
    fn each(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(&Row) -> Result<bool>,
    ) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let columns = st.column_count();
                let mut rows = st.query(params_from_iter(params.iter()))?;
                while let Some(r) = rows.next()? {
                    if !f(&Row::from_sqlite(r, columns)?)? {
                        break;
                    }
                }
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Inner::Postgres(c) => c.borrow_mut().each(sql, params, f),
        }
    }

    /// A statement to run (rusqlite's `prepare_cached`: both engines cache what they prepare).
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_string(),
        })
    }

    /// A statement to run.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    /// Starts a transaction; it rolls back unless committed.
    pub fn transaction_with_behavior(
        &self,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>> {
        match &self.inner {
            Inner::Sqlite(c) => c.execute_batch(match behavior {
                TransactionBehavior::Deferred => "BEGIN DEFERRED",
                TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
            })?,
            #[cfg(feature = "postgres")]
            Inner::Postgres(c) => c.borrow_mut().begin(behavior)?,
        }
        Ok(Transaction {
            conn: self,
            open: true,
        })
    }

    /// Starts a deferred transaction.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        self.transaction_with_behavior(TransactionBehavior::Deferred)
    }
}

/// A statement of a [`Connection`], run with parameters.
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    /// Runs it; returns the rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    /// Its first row, mapped by `f`.
    pub fn query_row<P: Params, T>(
        &mut self,
        params: P,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.conn.query_row(&self.sql, params, f)
    }

    /// Its rows, each mapped by `f`.
    pub fn query_map<P: Params, T>(
        &mut self,
        params: P,
        f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        self.conn.query_map(&self.sql, params, f)
    }

    /// Whether it returns a row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        self.conn
            .query_row(&self.sql, params, |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
    }
}

/// An open transaction: the connection's calls run inside it (it derefs to the connection);
/// dropped without [`Transaction::commit`], it rolls back.
pub struct Transaction<'c> {
    conn: &'c Connection,
    open: bool,
}

impl Transaction<'_> {
    /// Commits.
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.execute_batch("COMMIT")
    }

    /// Rolls back.
    pub fn rollback(mut self) -> Result<()> {
        self.open = false;
        self.conn.execute_batch("ROLLBACK")
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the caller is already returning another error.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// rusqlite's `.optional()`: no row is `None`.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`Error::NoRows`].
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
