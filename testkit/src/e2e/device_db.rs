//! Device databases as an app has them: a SQLite file with the release-built `liboutpost.so`
//! loaded by its entry point, synced through `outpost_enroll` / `outpost_sync`, and the live
//! mode and polling helpers the live tests share.

use crate::e2e::built::built;
use crate::e2e::patients;
use rusqlite::Connection;
use serde_json::Value;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Loads the built extension into `conn`, by its entry point.
pub fn load_extension(conn: &Connection) {
    // SAFETY: loading the extension built from this workspace, by its own entry point; loading
    // is switched off again right after.
    unsafe {
        conn.load_extension_enable().unwrap();
        conn.load_extension(&built().ext, Some("sqlite3_outpost_init"))
            .unwrap_or_else(|e| panic!("loading {:?}: {e}", built().ext));
        conn.load_extension_disable().unwrap();
    }
}

/// `path` opened with the extension loaded and a 10 s busy timeout (the app's connections and
/// the sync's wait for each other, as an app's would).
pub fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    load_extension(&conn);
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// One connection to a device database: WAL, `synchronous=NORMAL`, foreign keys on, the
/// extension loaded, the caller's schema run.
pub struct DeviceDb {
    /// The database file.
    pub path: PathBuf,
    /// The connection.
    pub conn: Connection,
    /// Changes applied by [`DeviceDb::sync_counted`] calls.
    applied: Cell<u64>,
}

impl DeviceDb {
    /// Opens `path` and runs `schema` (which tracks its tables).
    pub fn open(path: &Path, schema: &str) -> DeviceDb {
        let conn = open(path);
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .unwrap();
        conn.execute_batch(schema)
            .unwrap_or_else(|e| panic!("{path:?}: the schema: {e}"));
        DeviceDb {
            path: path.to_path_buf(),
            conn,
            applied: Cell::new(0),
        }
    }

    /// Opens `path` with the [`patients`] table.
    pub fn patients(path: &Path) -> DeviceDb {
        DeviceDb::open(path, patients::SCHEMA)
    }

    /// The first column of the first row of `sql`, or SQLite's error (the extension's message).
    pub fn call<T: rusqlite::types::FromSql>(&self, sql: &str) -> rusqlite::Result<T> {
        self.conn.query_row(sql, [], |r| r.get(0))
    }

    /// `sql`'s text answer as JSON, or SQLite's error.
    pub fn try_json(&self, sql: &str) -> rusqlite::Result<Value> {
        self.call::<String>(sql)
            .map(|j| serde_json::from_str(&j).expect("the extension answers JSON"))
    }

    /// `sql`'s text answer as JSON; panics naming `sql` on an error.
    pub fn json(&self, sql: &str) -> Value {
        self.try_json(sql)
            .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", self.path))
    }

    /// `outpost_enroll(code)`.
    pub fn try_enroll(&self, code: &str) -> rusqlite::Result<Value> {
        self.try_json(&format!("SELECT outpost_enroll('{code}')"))
    }

    /// `outpost_enroll(code)`; panics on an error.
    pub fn enroll(&self, code: &str) -> Value {
        self.json(&format!("SELECT outpost_enroll('{code}')"))
    }

    /// `outpost_sync()` (the enrolled peer).
    pub fn try_sync(&self) -> rusqlite::Result<Value> {
        self.try_json("SELECT outpost_sync()")
    }

    /// `outpost_sync()`; panics on an error.
    pub fn sync(&self) -> Value {
        self.json("SELECT outpost_sync()")
    }

    /// `outpost_sync()`, which must quarantine nothing; what it applied is added to
    /// [`DeviceDb::applied`] (tests count that each change arrives once).
    pub fn sync_counted(&self) -> Value {
        let r = self.sync();
        assert_eq!(r["quarantined"], 0, "{:?}: {r}", self.path);
        self.applied.set(self.applied.get() + n(&r, "applied"));
        r
    }

    /// Changes applied by the [`DeviceDb::sync_counted`] calls so far.
    pub fn applied(&self) -> u64 {
        self.applied.get()
    }

    /// `outpost_sync(peer)` (`'hub'` or `'cloud'`); panics on an error.
    pub fn sync_with(&self, peer: &str) -> Value {
        self.json(&format!("SELECT outpost_sync('{peer}')"))
    }

    /// Runs `sql` (statements, no result).
    pub fn exec(&self, sql: &str) {
        self.conn
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", self.path));
    }

    /// True when `table` holds the row with `id`.
    pub fn has(&self, table: &str, id: &str) -> bool {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM \"{table}\" WHERE id = ?1"),
                [id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    }

    /// Rows in `table`.
    pub fn count(&self, table: &str) -> i64 {
        self.call(&format!("SELECT count(*) FROM \"{table}\""))
            .unwrap()
    }

    /// The [`patients`] rows.
    pub fn patient_rows(&self) -> Vec<String> {
        patients::rows(&self.conn)
    }

    /// `outpost_vector()` as text.
    pub fn vector(&self) -> String {
        self.call("SELECT outpost_vector()").unwrap()
    }

    /// The file checks (`PRAGMA integrity_check`) and the connection is outside a transaction.
    pub fn assert_intact(&self) {
        let r: String = self.call("PRAGMA integrity_check").unwrap();
        assert_eq!(r, "ok", "{:?}", self.path);
        assert!(self.conn.is_autocommit(), "left inside a transaction");
    }
}

/// `outpost_sync(peer, '{"live_seconds": seconds}')` on its own thread and connection (`path`
/// opened with `schema`): its answer, or SQLite's error.
pub fn live(
    path: &Path,
    schema: &'static str,
    peer: &'static str,
    seconds: u64,
) -> JoinHandle<rusqlite::Result<Value>> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let d = DeviceDb::open(&path, schema);
        d.try_json(&format!(
            "SELECT outpost_sync('{peer}', '{{\"live_seconds\": {seconds}}}')"
        ))
    })
}

/// Polls `d` for row `id` of `table` every `every`, up to `wait`: how long it took to appear.
pub fn appears(
    d: &DeviceDb,
    table: &str,
    id: &str,
    wait: Duration,
    every: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if d.has(table, id) {
            return Some(start.elapsed());
        }
        if start.elapsed() > wait {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Numeric field `k` of a JSON answer; panics naming it when missing.
pub fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}
