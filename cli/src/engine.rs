//! The extension's engine, linked statically: its entry point is registered with
//! `sqlite3_auto_extension` once, so every connection this process opens has the `outpost_*`
//! functions with no library file to load (the path iOS/Android apps take as well).

use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

type Init = unsafe extern "C" fn(
    *mut rusqlite::ffi::sqlite3,
    *mut *mut std::ffi::c_char,
    *const rusqlite::ffi::sqlite3_api_routines,
) -> std::ffi::c_int;

/// Registers the engine once per process; every later connection gets its functions.
pub fn register() -> Result<()> {
    static RC: OnceLock<std::ffi::c_int> = OnceLock::new();
    let rc = *RC.get_or_init(|| {
        let raw = outpost::sqlite3_outpost_init as *const ();
        // SAFETY: the same C ABI (db, error-message out pointer, routines table); the pointer
        // types differ only by which crate declared them.
        let init = unsafe { std::mem::transmute::<*const (), Init>(raw) };
        // SAFETY: registering a valid entry point that SQLite calls for each new connection.
        unsafe { rusqlite::ffi::sqlite3_auto_extension(Some(init)) }
    });
    if rc != rusqlite::ffi::SQLITE_OK {
        bail!("registering the outpost engine with SQLite failed (code {rc})");
    }
    Ok(())
}

/// Opens an existing database file (never creates one: a typo must not start a new replica),
/// waiting up to 10 s for another process's write lock.
pub fn open(db: &Path) -> Result<Connection> {
    register()?;
    if !db.is_file() {
        bail!(
            "{}: no such database file (give the app's SQLite file with --db)",
            db.display()
        );
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(db, flags)
        .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}
