//! Opening the app's database with the extension's engine linked statically (`outpost-embed`
//! registers it with `sqlite3_auto_extension`, so the connection has the `outpost_*` functions
//! with no library file to load).

use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Registers the engine once per process; every later connection gets its functions.
pub fn register() -> Result<()> {
    outpost_embed::register()?;
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
