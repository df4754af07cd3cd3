//! `outpost_strict_refusal(table, column, declared type, value)`: an eponymous virtual table (a
//! table-valued function) with no rows, whose read fails with the refusal of a value that does
//! not fit its column in a strict tenant (`strict.rs`), naming table, column, type and value.
//!
//! The strict triggers read it instead of calling a function, for the reason `outpost_clock` is
//! read (`clock_table.rs`): a trigger that may call any SQL function makes SQLite keep a
//! statement journal for every UPDATE of its table, which alone put W2 over the write-tax goal
//! (docs/performance.md). Reading a virtual table does not. The trigger reads it only when its
//! WHEN (comparisons and casts, no function) found a misfit; the read checks the value again
//! with [`crate::strict::refusal`] and returns no row (no error) when it fits or while this
//! connection applies a peer's changes.
//!
//! The error's code is `SQLITE_CONSTRAINT`. What a failed read leaves undone is SQLite's rule for
//! a statement without a statement journal: in autocommit, nothing of the statement stays; in an
//! explicit transaction, a statement refused at its first row has written nothing (the triggers
//! run BEFORE the row is written), and a multi-row UPDATE refused at a later row keeps the rows
//! before it, as `UPDATE OR FAIL` would (docs/sql-api.md, `outpost_strict_check`).

use crate::error::{Error, LoadError, SQLITE_CONSTRAINT, SQLITE_ERROR};
use crate::ffi::{self, sqlite3, sqlite3_context, sqlite3_value};
use crate::functions::Arg;
use crate::session::Session;
use crate::vtab_module::{IndexInfo, Module, CONSTRAINT_EQ};
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// No `xCreate` (eponymous only), read-only.
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

/// The arguments are the hidden columns 1 to 4, in this order; column 0 is there because a
/// table needs one column that is not hidden.
const SCHEMA: &std::ffi::CStr =
    c"CREATE TABLE x(refused, tbl HIDDEN, col HIDDEN, decl HIDDEN, val HIDDEN)";
const ARGS: c_int = 4;

/// `sqlite3_vtab` followed by our state.
#[repr(C)]
struct Table {
    p_module: *const c_void,
    n_ref: c_int,
    z_err_msg: *mut c_char,
    session: Arc<Session>,
}

impl Table {
    /// Hands SQLite an error message for the statement that read the table.
    fn fail(&mut self, code: c_int, msg: &str) -> c_int {
        if !self.z_err_msg.is_null() {
            // SAFETY: a previous message, allocated by sqlite3_malloc and not yet taken.
            unsafe { (ffi::api().free)(self.z_err_msg.cast()) };
        }
        self.z_err_msg = ffi::sqlite_string(msg);
        code
    }
}

/// `sqlite3_vtab_cursor`: it never has a row.
#[repr(C)]
struct Cursor {
    p_vtab: *mut Table,
}

/// Registers `outpost_strict_refusal` on `db`, reading the connection's shared session.
pub(crate) fn register(db: *mut sqlite3, session: Arc<Session>) -> Result<(), LoadError> {
    crate::vtab_module::register(db, c"outpost_strict_refusal", &MODULE, session)
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
    let rc = unsafe { (ffi::api().declare_vtab)(db, SCHEMA.as_ptr()) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // The strict triggers read it, and with `PRAGMA trusted_schema=OFF` SQLite lets a trigger
    // use only innocuous tables. It is: it reads nothing and writes nothing.
    // SAFETY: called from xConnect on the connection being connected, as the op requires.
    unsafe { (ffi::api().vtab_config)(db, ffi::SQLITE_VTAB_INNOCUOUS) };
    // SAFETY: aux is the Arc<Session> box given to create_module_v2, alive while the module is.
    let session = unsafe { &*aux.cast::<Arc<Session>>() }.clone();
    let table = Box::new(Table {
        p_module: std::ptr::null(),
        n_ref: 0,
        z_err_msg: std::ptr::null_mut(),
        session,
    });
    // SAFETY: out is SQLite's slot for the new table; SQLite fills in the base fields.
    unsafe { *out = Box::into_raw(table).cast() };
    ffi::SQLITE_OK
}

/// Takes the arguments (`=` constraints on the hidden columns) as xFilter's argv, in column
/// order; SQLite need not test them again (there is no row to test).
unsafe extern "C" fn best_index(_table: *mut c_void, info: *mut c_void) -> c_int {
    // SAFETY: info is the sqlite3_index_info SQLite passes to xBestIndex, valid for the call;
    // its constraint arrays hold n_constraint entries.
    let info = unsafe { &mut *info.cast::<IndexInfo>() };
    let n = usize::try_from(info.n_constraint).unwrap_or(0);
    for i in 0..n {
        // SAFETY: i < n_constraint (see above).
        let (c, usage) = unsafe {
            (
                &*info.a_constraint.add(i),
                &mut *info.a_constraint_usage.add(i),
            )
        };
        if c.usable != 0 && c.op == CONSTRAINT_EQ && (1..=ARGS).contains(&c.i_column) {
            usage.argv_index = c.i_column;
            usage.omit = 1;
        }
    }
    info.estimated_cost = 1.0;
    info.estimated_rows = 1;
    ffi::SQLITE_OK
}

unsafe extern "C" fn disconnect(table: *mut c_void) -> c_int {
    // SAFETY: table is a Box<Table> made by `connect`, released once by SQLite.
    drop(unsafe { Box::from_raw(table.cast::<Table>()) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn open(_table: *mut c_void, out: *mut *mut c_void) -> c_int {
    let cursor = Box::new(Cursor {
        p_vtab: std::ptr::null_mut(),
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

/// The refusal of the arguments' value, if it does not fit.
fn refusal(session: &Session, args: &[Arg]) -> Result<Option<Error>, String> {
    if !session.capturing() {
        return Ok(None); // a peer's changes always apply
    }
    let &[Arg::Text(table), Arg::Text(column), Arg::Text(declared), value] = args else {
        return Err(format!(
            "takes the table, column and declared type as text, then the value ({} argument(s) given)",
            args.len()
        ));
    };
    Ok(crate::strict::refusal(table, column, declared, &value)
        .map(|e| Error::StrictWrite(Box::new(e))))
}

unsafe extern "C" fn filter(
    cursor: *mut c_void,
    _idx: c_int,
    _idx_str: *const c_char,
    argc: c_int,
    argv: *mut *mut sqlite3_value,
) -> c_int {
    // SAFETY: cursor is ours (see `open`) and SQLite set p_vtab to our Table before filtering.
    let c = unsafe { &mut *cursor.cast::<Cursor>() };
    // SAFETY: as above; the table outlives its cursors.
    let t = unsafe { &mut *c.p_vtab };
    let n = usize::try_from(argc).unwrap_or(0).min(ARGS as usize);
    let mut lossy: Vec<(usize, String)> = Vec::new();
    let mut args = [Arg::Null; ARGS as usize];
    for (i, arg) in args.iter_mut().enumerate().take(n) {
        // SAFETY: argv holds argc values, unchanged during this call.
        match unsafe { ffi::arg_of(*argv.add(i)) } {
            ffi::RawArg::Arg(a) => *arg = a,
            ffi::RawArg::BadText(b) => lossy.push((i, String::from_utf8_lossy(b).into_owned())),
        }
    }
    for (i, s) in &lossy {
        args[*i] = Arg::Text(s);
    }
    let session = t.session.clone();
    match catch_unwind(AssertUnwindSafe(|| refusal(&session, &args[..n]))) {
        Ok(Ok(None)) => ffi::SQLITE_OK,
        Ok(Ok(Some(e))) => t.fail(SQLITE_CONSTRAINT, &e.to_string()),
        Ok(Err(why)) => t.fail(SQLITE_ERROR, &format!("outpost_strict_refusal: {why}")),
        Err(_) => t.fail(
            SQLITE_ERROR,
            "outpost_strict_refusal: internal error (panic)",
        ),
    }
}

unsafe extern "C" fn next(_cursor: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn eof(_cursor: *mut c_void) -> c_int {
    1 // never a row
}

unsafe extern "C" fn column(_cursor: *mut c_void, ctx: *mut sqlite3_context, _col: c_int) -> c_int {
    // SAFETY: ctx is SQLite's result slot for this column (never asked for: there is no row).
    unsafe { (ffi::api().result_null)(ctx) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn rowid(_cursor: *mut c_void, out: *mut i64) -> c_int {
    // SAFETY: out is SQLite's slot for the rowid.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}
