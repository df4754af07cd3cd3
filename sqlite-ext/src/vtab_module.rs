//! The layout of SQLite's `struct sqlite3_module` (version 1), shared by the extension's
//! eponymous virtual tables (`clock_table.rs`, `pending_table.rs`, `strict_refusal.rs`), and of
//! `struct sqlite3_index_info` for the one that takes arguments: one copy of the C layouts.

use crate::error::LoadError;
use crate::ffi::{self, sqlite3, sqlite3_context, sqlite3_value};
use crate::session::Session;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

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

/// `SQLITE_INDEX_CONSTRAINT_EQ`: a `column = value` constraint (and a table-valued function's
/// argument).
pub(crate) const CONSTRAINT_EQ: u8 = 2;

/// `struct sqlite3_index_constraint`.
#[repr(C)]
pub(crate) struct IndexConstraint {
    pub(crate) i_column: c_int,
    pub(crate) op: u8,
    pub(crate) usable: u8,
    pub(crate) i_term_offset: c_int,
}

/// `struct sqlite3_index_constraint_usage`.
#[repr(C)]
pub(crate) struct IndexConstraintUsage {
    pub(crate) argv_index: c_int,
    pub(crate) omit: u8,
}

/// `struct sqlite3_index_info`, up to `estimatedRows` (SQLite 3.8.2); the fields after it are
/// neither read nor written here.
#[repr(C)]
pub(crate) struct IndexInfo {
    pub(crate) n_constraint: c_int,
    pub(crate) a_constraint: *const IndexConstraint,
    pub(crate) n_order_by: c_int,
    pub(crate) a_order_by: *const c_void,
    pub(crate) a_constraint_usage: *mut IndexConstraintUsage,
    pub(crate) idx_num: c_int,
    pub(crate) idx_str: *mut c_char,
    pub(crate) need_to_free_idx_str: c_int,
    pub(crate) order_by_consumed: c_int,
    pub(crate) estimated_cost: f64,
    pub(crate) estimated_rows: i64,
}

/// Registers the eponymous table `name` (`module`) on `db`, its `xConnect` receiving the
/// connection's shared session as its aux pointer (a `Box<Arc<Session>>`, freed by SQLite).
pub(crate) fn register(
    db: *mut sqlite3,
    name: &'static CStr,
    module: &'static Module,
    session: Arc<Session>,
) -> Result<(), LoadError> {
    let aux = Box::into_raw(Box::new(session));
    // SAFETY: db is a live connection; SQLite owns `aux` from here and frees it through
    // `drop_aux` (also when registration fails); `name` and `module` are 'static.
    let rc = unsafe {
        (ffi::api().create_module_v2)(
            db,
            name.as_ptr(),
            std::ptr::from_ref(module).cast(),
            aux.cast(),
            Some(drop_aux),
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(LoadError::Register {
            name: name.to_str().unwrap_or("an outpost virtual table"),
            code: rc,
            message: ffi::Conn(db).error_message(),
        })
    }
}

unsafe extern "C" fn drop_aux(p: *mut c_void) {
    // SAFETY: p is the Box<Arc<Session>> leaked in `register`, freed once by SQLite.
    drop(unsafe { Box::from_raw(p.cast::<Arc<Session>>()) });
}
