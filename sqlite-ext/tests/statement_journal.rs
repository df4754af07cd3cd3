//! Loading the extension keeps SQLite's statement journals in memory (`temp_store=MEMORY`), so a
//! big transaction on a tracked table does not write every statement's page copies to a
//! temporary file (docs/performance.md, W1 bulk) — but only where that cannot hurt the app.

mod common;

use common::load;
use rusqlite::Connection;

fn temp_store(c: &Connection) -> i64 {
    c.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap()
}

fn file_db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("app.db")).unwrap();
    (dir, c)
}

#[test]
fn loading_sets_temp_store_memory_when_the_app_left_the_default() {
    let (_dir, c) = file_db();
    assert_eq!(temp_store(&c), 0, "rusqlite's SQLite starts at the default");
    load(&c);
    assert_eq!(temp_store(&c), 2, "MEMORY");
    // The app still decides: files again when it asks for them.
    c.execute_batch("PRAGMA temp_store=FILE").unwrap();
    assert_eq!(temp_store(&c), 1);
}

#[test]
fn an_explicit_temp_store_of_the_app_is_kept() {
    let (_dir, c) = file_db();
    c.execute_batch("PRAGMA temp_store=FILE").unwrap();
    load(&c);
    assert_eq!(temp_store(&c), 1, "the app's FILE is not overridden");
}

#[test]
fn temporary_tables_opened_before_loading_survive() {
    let (_dir, c) = file_db();
    c.execute_batch("CREATE TEMP TABLE scratch(x); INSERT INTO scratch VALUES (42);")
        .unwrap();
    load(&c);
    // Changing temp_store now would have dropped the temp schema: it is left alone.
    assert_eq!(temp_store(&c), 0);
    let x: i64 = c
        .query_row("SELECT x FROM scratch", [], |r| r.get(0))
        .unwrap();
    assert_eq!(x, 42);
}
