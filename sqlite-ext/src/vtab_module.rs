//! The layout of SQLite's `struct sqlite3_module` (version 1), shared by the extension's
//! eponymous virtual tables (`clock_table.rs`, `pending_table.rs`): one copy of the C layout.

use crate::ffi::{sqlite3, sqlite3_context, sqlite3_value};
use std::ffi::{c_char, c_int, c_void};

/// `xCreate` / `xConnect`.
type Connect = unsafe extern "C" fn(
    *mut sqlite3,
    *mut c_void,
    c_int,
    *const *const c_char,
    *mut *mut c_void,
    *mut *mut c_char,
) -> c_int;

/// `struct sqlite3_module`, version 1 (SQLite reads no field past `xRename` for version 1).
#[repr(C)]
pub(crate) struct Module {
    pub(crate) i_version: c_int,
    pub(crate) x_create: Option<Connect>,
    pub(crate) x_connect: Option<Connect>,
    pub(crate) x_best_index: Option<unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int>,
    pub(crate) x_disconnect: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    pub(crate) x_destroy: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    pub(crate) x_open: Option<unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> c_int>,
    pub(crate) x_close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    pub(crate) x_filter: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            *const c_char,
            c_int,
            *mut *mut sqlite3_value,
        ) -> c_int,
    >,
    pub(crate) x_next: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    pub(crate) x_eof: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    pub(crate) x_column:
        Option<unsafe extern "C" fn(*mut c_void, *mut sqlite3_context, c_int) -> c_int>,
    pub(crate) x_rowid: Option<unsafe extern "C" fn(*mut c_void, *mut i64) -> c_int>,
    pub(crate) x_update: Option<unsafe extern "C" fn()>,
    pub(crate) x_begin: Option<unsafe extern "C" fn()>,
    pub(crate) x_sync: Option<unsafe extern "C" fn()>,
    pub(crate) x_commit: Option<unsafe extern "C" fn()>,
    pub(crate) x_rollback: Option<unsafe extern "C" fn()>,
    pub(crate) x_find_function: Option<unsafe extern "C" fn()>,
    pub(crate) x_rename: Option<unsafe extern "C" fn()>,
}
