//! Helpers shared by the scenario tests: replicas loading the built extension, and sync between
//! them through `outpost_changes` / `outpost_apply` with the receiver's vector as the cursor.
#![allow(dead_code)]

pub mod rebuilt;
pub mod scripted_hub;

use rusqlite::{Connection, OptionalExtension};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The built cdylib (`target/<profile>/liboutpost.so`), built once if missing.
pub fn ext_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let so = profile_dir.join("liboutpost.so");
        // `cargo test` builds the rlib only: (re)build the cdylib so the tests load current code.
        {
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-p", "outpost"]);
            if release {
                cmd.arg("--release");
            }
            assert!(
                cmd.status().expect("cargo build").success(),
                "building liboutpost.so failed"
            );
        }
        so
    })
    .clone()
}

/// A database with the extension loaded.
pub struct Replica {
    pub name: String,
    pub conn: Connection,
    _dir: Option<tempfile::TempDir>,
}

pub fn load(conn: &Connection) {
    // SAFETY: loading our own extension, built from this crate.
    unsafe {
        conn.load_extension_enable().unwrap();
        conn.load_extension(ext_path(), Some("sqlite3_outpost_init"))
            .unwrap();
        conn.load_extension_disable().unwrap();
    }
}

impl Replica {
    /// A fresh file database in WAL mode with foreign keys on and `schema` run.
    pub fn new(name: &str, schema: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(format!("{name}.db"))).unwrap();
        load(&conn);
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .unwrap();
        conn.execute_batch(schema).unwrap();
        Replica {
            name: name.into(),
            conn,
            _dir: Some(dir),
        }
    }

    pub fn exec(&self, sql: &str) {
        self.conn
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
    }

    pub fn track(&self, table: &str, options: Option<&str>) {
        let r: i64 = self
            .conn
            .query_row(
                "SELECT outpost_track(?1, ?2)",
                rusqlite::params![table, options],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(r, 1);
    }

    pub fn site_hex(&self) -> String {
        self.conn
            .query_row("SELECT lower(hex(outpost_site_id()))", [], |r| r.get(0))
            .unwrap()
    }

    pub fn db_version(&self) -> i64 {
        self.conn
            .query_row("SELECT outpost_db_version()", [], |r| r.get(0))
            .unwrap()
    }

    pub fn covered(&self, origin_hex: &str) -> i64 {
        let v: String = self
            .conn
            .query_row("SELECT outpost_vector()", [], |r| r.get(0))
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&v).unwrap();
        json.get(origin_hex).and_then(|x| x.as_i64()).unwrap_or(0)
    }

    pub fn changes(&self, since: i64, max_bytes: Option<i64>) -> Option<Vec<u8>> {
        self.conn
            .query_row(
                "SELECT outpost_changes(?1, ?2)",
                rusqlite::params![since, max_bytes],
                |r| r.get(0),
            )
            .unwrap()
    }

    pub fn apply(&self, batch: &[u8]) -> rusqlite::Result<serde_json::Value> {
        let s: String = self
            .conn
            .query_row("SELECT outpost_apply(?1)", [batch], |r| r.get(0))?;
        Ok(serde_json::from_str(&s).unwrap())
    }

    /// Sends everything `to` lacks of `self`'s own changes; returns the batches sent.
    pub fn sync_to(&self, to: &Replica, max_bytes: Option<i64>) -> Vec<Vec<u8>> {
        let me = self.site_hex();
        let mut sent = Vec::new();
        loop {
            let since = to.covered(&me);
            let Some(batch) = self.changes(since, max_bytes) else {
                break;
            };
            to.apply(&batch)
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", self.name, to.name));
            sent.push(batch);
            assert!(sent.len() < 100_000, "sync does not progress");
        }
        sent
    }

    /// Rows of a query, each rendered as text, for comparisons.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let mut s = self.conn.prepare(sql).unwrap();
        let n = s.column_count();
        s.query_map([], |r| {
            let mut out = Vec::new();
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i)?;
                out.push(format!("{v:?}"));
            }
            Ok(out.join("|"))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    }

    pub fn one<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name))
    }

    pub fn maybe<T: rusqlite::types::FromSql>(&self, sql: &str) -> Option<T> {
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .optional()
            .unwrap()
    }

    /// Everything a replica's state is compared on: app tables, quarantine, conflicts.
    pub fn state(&self, tables: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for t in tables {
            out.push(format!("-- {t}"));
            out.extend(self.rows(&format!("SELECT * FROM \"{t}\" ORDER BY 1")));
        }
        // Quarantine converges as a set of (table, key, reason): one row change may be held as
        // one entry per origin that sent it.
        out.push("-- quarantine".into());
        out.extend(self.rows(
            "SELECT DISTINCT \"table\", pk, reason FROM outpost_quarantine ORDER BY 1, 2, 3",
        ));
        out.push("-- conflicts".into());
        out.extend(self.rows(
            "SELECT \"table\", pk, \"column\", siblings FROM outpost_conflicts ORDER BY 1, 2, 3",
        ));
        out
    }
}

/// Every replica sends to every other until nothing is left.
pub fn mesh_sync(rs: &[&Replica]) {
    for _ in 0..2 {
        for a in rs {
            for b in rs {
                if a.name != b.name {
                    a.sync_to(b, None);
                }
            }
        }
    }
}

pub const CLINIC: &str = "
CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, village TEXT, visits INTEGER DEFAULT 0, allergies TEXT);
CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id), note TEXT);
";

/// A replica with the clinic schema tracked (visits counter, allergies review).
pub fn clinic(name: &str) -> Replica {
    let r = Replica::new(name, CLINIC);
    r.track(
        "patients",
        Some(r#"{"columns":{"visits":"counter","allergies":"review"}}"#),
    );
    r.track("visits", None);
    r
}
