//! What the first relay's time bound needs from the mailbox (docs/design.md section 10, "Time"):
//! the highest clock of any batch it ever stored, and how many device pushes it refused as
//! stamped too far ahead.
//!
//! **The highest clock admitted** is the largest clear-header `max_hlc` of every batch stored,
//! whatever brought it (a device's push, a hub's relay, the uplink's pull, the cloud's own
//! export). A device's push may run up to a second past it however far ahead of trusted time it
//! is: an edit of a far-future version is stamped just above that version (the re-stamp floor),
//! and must pass wherever the version itself already passed. It is raised in the transaction
//! that stores the batches ([`raise`]), so it never names a batch that is not held, and never
//! lags one that is: one row read and written per commit, no scan. A damaged batch removed before
//! serving (`damage.rs`) lowers it in the removing transaction when the batch may have held it
//! ([`recompute`]: the one scan of the held batches' headers, on a rare event).
//!
//! **Files made before the table** gain it at their first open, filled from the batches they
//! hold (each one's clear header decoded, once).
//!
//! **Refusals** are counted by the relay when its session refuses a push as `ClockAhead`
//! ([`Mailbox::note_clock_ahead_refused`]): nothing of such a push is stored, so the count is
//! its only trace besides the log. The hub's and the cloud's status show both figures.

use crate::error::MailboxError;
use crate::mailbox::Mailbox;
use outpost_protocol::batch::codec::{decode_header, Limits};
use outpost_protocol::Hlc;
use outpost_sql::{Connection, TransactionBehavior};

const TABLE: &str = "CREATE TABLE clock_admission(
    id INTEGER PRIMARY KEY CHECK (id = 0),
    highest_admitted INTEGER NOT NULL,
    clock_ahead_refused INTEGER NOT NULL CHECK (clock_ahead_refused >= 0)
)";

/// The mailbox's figures for the time bound, as status pages show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClockAdmission {
    /// The highest clock of any batch stored ([`Hlc::ZERO`] while none is held).
    pub highest_admitted: Hlc,
    /// Device pushes refused because their clocks ran too far ahead.
    pub clock_ahead_refused: u64,
}

/// An `Hlc` as SQLite holds it: its 64 bits reinterpreted (compared in Rust, never in SQL).
fn to_sql(hlc: Hlc) -> i64 {
    hlc.as_u64() as i64
}

fn from_sql(v: i64) -> Hlc {
    Hlc::from_u64(v as u64)
}

/// Creates the table in a file made before it, filled from the batches it holds. Run at every
/// open; a file that has it costs one lookup.
pub(crate) fn ensure(conn: &mut Connection) -> Result<(), outpost_sql::Error> {
    let exists = |c: &Connection| c.has_table("clock_admission");
    if exists(conn)? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another connection may have made it while this one waited for the write lock.
    if !exists(&tx)? {
        let highest = held_highest(&tx)?;
        tx.execute_batch(TABLE)?;
        tx.execute(
            "INSERT INTO clock_admission(id, highest_admitted, clock_ahead_refused) VALUES (0, ?1, 0)",
            [to_sql(highest)],
        )?;
    }
    tx.commit()
}

/// The highest max HLC of the held batches (undecodable ones skipped: `Mailbox::check` reports
/// those through the ranges and SQLite).
fn held_highest(conn: &Connection) -> Result<Hlc, outpost_sql::Error> {
    let mut highest = Hlc::ZERO;
    // Each row is read and dropped in turn: one batch's bytes in memory at a time.
    for seen in conn.query_map("SELECT bytes FROM batches", (), |row| {
        let bytes: Vec<u8> = row.get(0)?;
        Ok(decode_header(&bytes, &Limits::default()).map(|h| h.max_hlc))
    })? {
        if let Ok(hlc) = seen? {
            highest = highest.max(hlc);
        }
    }
    Ok(highest)
}

/// Why [`check`] failed.
pub(crate) enum CheckError {
    Sqlite(outpost_sql::Error),
    /// The stored figure is not the held batches' highest clock.
    Differs {
        stored: Hlc,
        held: Hlc,
    },
}

/// Recomputes the highest clock admitted from the held batches (`Mailbox::check`): it is derived
/// data, raised in the transaction that stores each batch, so the two are equal.
pub(crate) fn check(conn: &Connection) -> Result<(), CheckError> {
    let stored: i64 = conn
        .query_row(
            "SELECT highest_admitted FROM clock_admission WHERE id = 0",
            (),
            |r| r.get(0),
        )
        .map_err(CheckError::Sqlite)?;
    let held = held_highest(conn).map_err(CheckError::Sqlite)?;
    if from_sql(stored) != held {
        return Err(CheckError::Differs {
            stored: from_sql(stored),
            held,
        });
    }
    Ok(())
}

/// The highest clock admitted, as stored.
pub(crate) fn highest(conn: &Connection) -> Result<Hlc, outpost_sql::Error> {
    conn.query_row(
        "SELECT highest_admitted FROM clock_admission WHERE id = 0",
        (),
        |r| r.get(0),
    )
    .map(from_sql)
}

/// Sets the highest clock admitted to the held batches' highest, inside the transaction that
/// removed a damaged batch which may have held it (`damage.rs`): the figure never names a batch
/// that is not held. Reads every held batch's header, so it runs only then.
pub(crate) fn recompute(conn: &Connection) -> Result<(), outpost_sql::Error> {
    let held = held_highest(conn)?;
    conn.execute(
        "UPDATE clock_admission SET highest_admitted = ?1 WHERE id = 0",
        [to_sql(held)],
    )?;
    Ok(())
}

/// Raises the highest clock admitted to `hlc`, inside the transaction storing the batch.
pub(crate) fn raise(conn: &Connection, hlc: Hlc) -> Result<(), outpost_sql::Error> {
    let held: i64 = conn.query_row(
        "SELECT highest_admitted FROM clock_admission WHERE id = 0",
        (),
        |r| r.get(0),
    )?;
    if hlc > from_sql(held) {
        conn.execute(
            "UPDATE clock_admission SET highest_admitted = ?1 WHERE id = 0",
            [to_sql(hlc)],
        )?;
    }
    Ok(())
}

impl Mailbox {
    /// The highest clock of any batch stored and the clock-ahead refusals counted.
    pub fn clock_admission(&self) -> Result<ClockAdmission, MailboxError> {
        self.conn
            .query_row(
                "SELECT highest_admitted, clock_ahead_refused FROM clock_admission WHERE id = 0",
                (),
                |r| {
                    Ok(ClockAdmission {
                        highest_admitted: from_sql(r.get(0)?),
                        clock_ahead_refused: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(|e| self.sql(e))
    }

    /// The highest clock of any batch stored (the session's allowance above trusted time).
    pub fn highest_admitted(&self) -> Result<Hlc, MailboxError> {
        Ok(self.clock_admission()?.highest_admitted)
    }

    /// Counts one device push refused because its clocks ran too far ahead.
    pub fn note_clock_ahead_refused(&self) -> Result<(), MailboxError> {
        self.conn
            .execute(
                "UPDATE clock_admission SET clock_ahead_refused = clock_ahead_refused + 1 WHERE id = 0",
                (),
            )
            .map(|_| ())
            .map_err(|e| self.sql(e))
    }
}
