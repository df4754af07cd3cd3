//! Waiting for a cloud's tenant to hold what devices pushed, without counting its rows over and
//! over: counting 600,000 rows is a full pass over the tables, which every 20 ms competed with the
//! cloud for the same cores while it applied. The wait reads the tenant's vector instead (one seq
//! per change, advanced by each batch's transaction with its rows) and counts the rows once it
//! covers every change, or every second it stands still, should a seq ever cover several changes.

use crate::e2e::cloud::Cloud;
use rusqlite::Connection;
use std::time::{Duration, Instant};

/// What the wait reads of a tenant.
pub trait Ingested {
    /// The changes the tenant covers from every origin (the sum of its vector; 0 before its
    /// first apply).
    fn covered(&mut self) -> i64;
    /// The rows its `patients` and `visits` tables hold together.
    fn rows(&mut self) -> i64;
}

/// A SQLite tenant: the vector read on one read-only connection, the rows through the cloud.
pub struct SqliteTenant<'c> {
    cloud: &'c Cloud,
    conn: Connection,
}

impl<'c> SqliteTenant<'c> {
    /// `cloud`'s tenant database (which `init` made).
    pub fn of(cloud: &'c Cloud) -> SqliteTenant<'c> {
        SqliteTenant {
            conn: cloud.tenant(),
            cloud,
        }
    }
}

impl Ingested for SqliteTenant<'_> {
    fn covered(&mut self) -> i64 {
        self.conn
            .query_row(
                "SELECT coalesce(sum(covered), 0) FROM _outpost_vector",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0)
    }

    fn rows(&mut self) -> i64 {
        self.cloud.count("patients") + self.cloud.count("visits")
    }
}

/// A PostgreSQL tenant, read through `client` (`pg::covered`, `pg::rows_in`).
#[cfg(feature = "pg")]
impl Ingested for postgres::Client {
    fn covered(&mut self) -> i64 {
        crate::pg::covered(self)
    }

    fn rows(&mut self) -> i64 {
        crate::pg::rows_in(self, &["patients", "visits"])
    }
}

/// Waits until `tenant` covers `changes` and holds `rows` patients and visits; fails, with
/// `explain()`, once its vector has not moved for `stall`.
pub fn await_ingested(
    tenant: &mut impl Ingested,
    changes: u64,
    rows: i64,
    stall: Duration,
    explain: impl Fn() -> String,
) {
    let (mut last, mut moved, mut counted) = (-1, Instant::now(), Instant::now());
    loop {
        let covered = tenant.covered();
        let quiet = covered == last && counted.elapsed() > Duration::from_secs(1);
        let mut held = None;
        if covered >= changes as i64 || quiet {
            counted = Instant::now();
            let h = tenant.rows();
            if h == rows {
                return;
            }
            held = Some(h);
        }
        if covered != last {
            (last, moved) = (covered, Instant::now());
        }
        if moved.elapsed() > stall {
            let held = held.unwrap_or_else(|| tenant.rows());
            panic!(
                "the tenant holds {held} of {rows} rows ({covered} of {changes} changes covered), \
                 stalled for {} s; {}",
                stall.as_secs(),
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
