//! `outpost_clock`: an eponymous virtual table holding one row, `hlc`, the clock of a new local
//! write, while the connection is capturing (no row while `outpost_apply` writes a peer's
//! changes).
//!
//! The column-update triggers (`triggers.rs`) log with `INSERT INTO _outpost_log ... SELECT ...
//! FROM outpost_clock` instead of calling `outpost_tick()` and `outpost_capturing()`: SQLite marks
//! a statement that may call any SQL function (or check a NOT NULL column) as able to abort, and
//! an able-to-abort statement with a trigger copies every page it touches into a statement
//! journal. Reading a virtual table does neither, so `UPDATE patients SET village = ?` on a
//! table without constraints on `village` runs without a statement journal (W2 in
//! docs/performance.md).

use crate::error::{LoadError, SQLITE_ERROR};
use crate::ffi::{self, sqlite3, sqlite3_context, sqlite3_value};
use crate::session::Session;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::vtab_module::Module;

/// No `xCreate`: the table is eponymous only (`CREATE VIRTUAL TABLE ... USING outpost_clock` is
/// refused); read-only, so no `xUpdate` or transaction methods.
static MODULE: Module = Module {
    i_version: 1,
    x_create: None,
    x_connect: Some(connect),
    x_best_index: Some(best_index),
    x_disconnect: Some(disconnect),
    x_destroy: Some(disconnect),
    x_open: Some(open),
    x_close: Some(close),
    x_filter: Some(filter),
    x_next: Some(next),
    x_eof: Some(eof),
    x_column: Some(column),
    x_rowid: Some(rowid),
    x_update: None,
    x_begin: None,
    x_sync: None,
    x_commit: None,
    x_rollback: None,
    x_find_function: None,
    x_rename: None,
};

/// `sqlite3_vtab` followed by our state.
#[repr(C)]
struct Table {
    p_module: *const c_void,
    n_ref: c_int,
    z_err_msg: *mut c_char,
    db: *mut sqlite3,
    session: Arc<Session>,
}

impl Table {
    /// Hands SQLite an error message for the statement that read the table.
    fn fail(&mut self, msg: &str) -> c_int {
        if !self.z_err_msg.is_null() {
            // SAFETY: a previous message, allocated by sqlite3_malloc and not yet taken.
            unsafe { (ffi::api().free)(self.z_err_msg.cast()) };
        }
        self.z_err_msg = ffi::sqlite_string(msg);
        SQLITE_ERROR
    }
}

/// `sqlite3_vtab_cursor` followed by our state.
#[repr(C)]
struct Cursor {
    p_vtab: *mut Table,
    hlc: i64,
    done: bool,
}

/// Registers `outpost_clock` on `db`, reading the connection's shared session.
pub(crate) fn register(db: *mut sqlite3, session: Arc<Session>) -> Result<(), LoadError> {
    crate::vtab_module::register(db, c"outpost_clock", &MODULE, session)
}

unsafe extern "C" fn connect(
    db: *mut sqlite3,
    aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    out: *mut *mut c_void,
    _err: *mut *mut c_char,
) -> c_int {
    // SAFETY: db is the connection SQLite is connecting the table for.
    let rc = unsafe { (ffi::api().declare_vtab)(db, c"CREATE TABLE x(hlc INTEGER)".as_ptr()) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // The column triggers read it, and with `PRAGMA trusted_schema=OFF` SQLite lets a trigger
    // use only innocuous tables. It is: one row of this connection's clock, read-only. (An
    // older SQLite answers "unknown op"; it has no such check either.)
    // SAFETY: called from xConnect on the connection being connected, as the op requires.
    unsafe { (ffi::api().vtab_config)(db, ffi::SQLITE_VTAB_INNOCUOUS) };
    // SAFETY: aux is the Arc<Session> box given to create_module_v2, alive while the module is.
    let session = unsafe { &*aux.cast::<Arc<Session>>() }.clone();
    let table = Box::new(Table {
        p_module: std::ptr::null(),
        n_ref: 0,
        z_err_msg: std::ptr::null_mut(),
        db,
        session,
    });
    // SAFETY: out is SQLite's slot for the new table; SQLite fills in the base fields.
    unsafe { *out = Box::into_raw(table).cast() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn best_index(_table: *mut c_void, _info: *mut c_void) -> c_int {
    ffi::SQLITE_OK // one row, no constraints to use
}

unsafe extern "C" fn disconnect(table: *mut c_void) -> c_int {
    // SAFETY: table is a Box<Table> made by `connect`, released once by SQLite.
    drop(unsafe { Box::from_raw(table.cast::<Table>()) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn open(_table: *mut c_void, out: *mut *mut c_void) -> c_int {
    let cursor = Box::new(Cursor {
        p_vtab: std::ptr::null_mut(),
        hlc: 0,
        done: true,
    });
    // SAFETY: out is SQLite's slot for the cursor; SQLite sets its p_vtab.
    unsafe { *out = Box::into_raw(cursor).cast() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(cursor: *mut c_void) -> c_int {
    // SAFETY: cursor is a Box<Cursor> made by `open`, closed once by SQLite.
    drop(unsafe { Box::from_raw(cursor.cast::<Cursor>()) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn filter(
    cursor: *mut c_void,
    _idx: c_int,
    _idx_str: *const c_char,
    _argc: c_int,
    _argv: *mut *mut sqlite3_value,
) -> c_int {
    // SAFETY: cursor is ours (see `open`) and SQLite set p_vtab to our Table before filtering.
    let c = unsafe { &mut *cursor.cast::<Cursor>() };
    // SAFETY: as above; the table outlives its cursors.
    let t = unsafe { &mut *c.p_vtab };
    let r = catch_unwind(AssertUnwindSafe(|| {
        if t.session.capturing() {
            t.session.clock.tick(ffi::Conn(t.db)).map(Some)
        } else {
            Ok(None)
        }
    }));
    match r {
        Ok(Ok(Some(hlc))) => {
            c.hlc = hlc as i64;
            c.done = false;
            ffi::SQLITE_OK
        }
        Ok(Ok(None)) => {
            c.done = true;
            ffi::SQLITE_OK
        }
        Ok(Err(e)) => t.fail(&format!("outpost_clock: {e}")),
        Err(_) => t.fail("outpost_clock: internal error (panic)"),
    }
}

unsafe extern "C" fn next(cursor: *mut c_void) -> c_int {
    // SAFETY: cursor is ours (see `open`).
    unsafe { (*cursor.cast::<Cursor>()).done = true };
    ffi::SQLITE_OK
}

unsafe extern "C" fn eof(cursor: *mut c_void) -> c_int {
    // SAFETY: cursor is ours (see `open`).
    c_int::from(unsafe { (*cursor.cast::<Cursor>()).done })
}

unsafe extern "C" fn column(cursor: *mut c_void, ctx: *mut sqlite3_context, _col: c_int) -> c_int {
    // SAFETY: cursor is ours (see `open`); ctx is SQLite's result slot for this column.
    unsafe { (ffi::api().result_int64)(ctx, (*cursor.cast::<Cursor>()).hlc) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn rowid(_cursor: *mut c_void, out: *mut i64) -> c_int {
    // SAFETY: out is SQLite's slot for the rowid.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}
