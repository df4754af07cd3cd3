//! `outpost_uuid()` and `outpost_status()` through the statically linked engine (the path the
//! `outpost` command and mobile apps use), on real database files.

use rusqlite::Connection;
use std::collections::HashSet;

fn open(path: &std::path::Path) -> Connection {
    outpost_embed::register().unwrap();
    Connection::open(path).unwrap()
}

fn hex128(u: &str) -> u128 {
    u128::from_str_radix(&u.replace('-', ""), 16).unwrap()
}

#[test]
fn uuids_are_v7_canonical_increasing_and_unique_over_100k() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&dir.path().join("a.db"));
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut stmt = conn.prepare("SELECT outpost_uuid()").unwrap();
    let mut seen = HashSet::new();
    let mut last = 0u128;
    for i in 0..100_000 {
        let u: String = stmt.query_row([], |r| r.get(0)).unwrap();
        assert_eq!(u.len(), 36, "{u}");
        assert!(
            u.chars()
                .enumerate()
                .all(|(j, c)| if [8, 13, 18, 23].contains(&j) {
                    c == '-'
                } else {
                    c.is_ascii_digit() || ('a'..='f').contains(&c)
                }),
            "not lowercase canonical: {u}"
        );
        let v = hex128(&u);
        assert_eq!((v >> 76) & 0xf, 7, "version of {u}");
        assert_eq!((v >> 62) & 0b11, 0b10, "variant of {u}");
        assert!(v > last, "call {i}: {u} not after the previous id");
        if i == 0 {
            let ms = v >> 80;
            assert!(
                ms >= before_ms && ms <= before_ms + 5_000,
                "timestamp {ms} vs {before_ms}"
            );
        }
        last = v;
        assert!(seen.insert(v), "duplicate {u}");
    }
    // Usable as a key default and packed small by the engine.
    conn.execute_batch(
        "CREATE TABLE visits(id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), note TEXT);
         INSERT INTO visits(note) VALUES ('a'), ('b');",
    )
    .unwrap();
    let n: i64 = conn
        .query_row("SELECT count(DISTINCT id) FROM visits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn status_counts_pending_writes_and_says_not_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&dir.path().join("a.db"));
    conn.execute_batch(
        "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT); SELECT outpost_track('t');
         INSERT INTO t VALUES ('a', '1'), ('b', '2'); UPDATE t SET v = '3' WHERE id = 'a';",
    )
    .unwrap();
    let s: String = conn
        .query_row("SELECT outpost_status()", [], |r| r.get(0))
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(s["pending_changes"], 3, "{s}");
    assert_eq!(s["enrolled"], false, "{s}");
    assert_eq!(s["last_sync_at"], serde_json::Value::Null, "{s}");
    assert_eq!(s["conflicts"], 0);
    assert_eq!(s["quarantined"], 0);
    // A failed sync is recorded as the last error.
    let err = conn
        .query_row("SELECT outpost_sync()", [], |r| r.get::<_, String>(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not enrolled"), "{err}");
    let s: String = conn
        .query_row("SELECT outpost_status()", [], |r| r.get(0))
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert!(
        s["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("not enrolled"),
        "{s}"
    );
    assert_eq!(s["last_error"]["since_last_sync"], true);
}

#[test]
fn status_shows_reserved_ids_and_says_when_none_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let conn = open(&path);
    let pending: i64 = conn
        .query_row("SELECT outpost_reserve_ids('patients', 5)", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(pending, 5);
    let pending: i64 = conn
        .query_row("SELECT outpost_reserve_ids('patients', 7)", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(pending, 12, "the numbers pending for the sequence");
    let s: String = conn
        .query_row("SELECT outpost_status()", [], |r| r.get(0))
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(
        s["ids"],
        serde_json::json!({"patients": {"remaining": 0, "pending": 12}})
    );
    let e = conn
        .query_row("SELECT outpost_next_id('patients')", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no ids left for sequence 'patients' (12 requested, waiting for the next sync)"),
        "{e}"
    );
    drop(conn);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["status", "--db"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  patients: 0 left, 12 reserved for the next sync (NONE LEFT"),
        "{text}"
    );
}
