//! # outpost-embed
//!
//! The extension's engine linked statically into a Rust program (the cloud, the `outpost` CLI):
//! its entry point is registered with `sqlite3_auto_extension`, so every SQLite connection the
//! process opens afterwards has the `outpost_*` functions, with no library file to load.
#![warn(missing_docs)]

use std::fmt;
use std::sync::OnceLock;

/// SQLite refused to register the engine's entry point (no connection would have the
/// `outpost_*` functions, so nothing of the tenant database can be used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineError {
    /// SQLite's result code.
    pub code: std::ffi::c_int,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registering the outpost engine with SQLite failed (code {})",
            self.code
        )
    }
}

impl std::error::Error for EngineError {}

type Init = unsafe extern "C" fn(
    *mut rusqlite::ffi::sqlite3,
    *mut *mut std::ffi::c_char,
    *const rusqlite::ffi::sqlite3_api_routines,
) -> std::ffi::c_int;

/// Registers the engine once per process; every later connection gets its functions.
pub fn register() -> Result<(), EngineError> {
    static RC: OnceLock<std::ffi::c_int> = OnceLock::new();
    let rc = *RC.get_or_init(|| {
        let raw = outpost::sqlite3_outpost_init as *const ();
        // SAFETY: the same C ABI (db, error-message out pointer, routines table); the pointer
        // types differ only by which crate declared them (`outpost` declares its own `sqlite3` and
        // takes the routines table as `*const c_void`).
        let init = unsafe { std::mem::transmute::<*const (), Init>(raw) };
        // SAFETY: registering a valid entry point that SQLite calls for each new connection.
        unsafe { rusqlite::ffi::sqlite3_auto_extension(Some(init)) }
    });
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(EngineError { code: rc });
    }
    Ok(())
}
