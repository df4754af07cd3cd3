//! `outpost_pending`: an eponymous virtual table (a table-valued function) listing every row
//! with local changes no relay has acknowledged: `tbl`, `pk` (JSON array of the key values in
//! declared key order), `columns` (JSON array of the value columns with such changes; `[]` for a
//! delete) and `since_ms` (the oldest such change's clock in Unix milliseconds; NULL for a
//! delete, which has no clock).
//!
//! `SELECT * FROM outpost_pending` and `SELECT * FROM outpost_pending()` both read it. The rows
//! come from the connection's snapshot (`pending.rs`), materialized when the scan starts; it
//! reads, never writes. Registered like `outpost_clock` (`clock_table.rs`), whose raw-FFI style
//! it follows: no `xCreate` (eponymous only), no `xUpdate` (read-only).

use crate::error::{Error, LoadError, SQLITE_ERROR};
use crate::ffi::{self, sqlite3, sqlite3_context, sqlite3_value};
use crate::pending::with_snapshot;
use crate::session::Session;
use outpost_protocol::Value;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::vtab_module::Module;

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

/// One listed row: tbl, pk, columns, since_ms.
type Row = [Value; 4];

/// `sqlite3_vtab_cursor` followed by our state.
#[repr(C)]
struct Cursor {
    p_vtab: *mut Table,
    rows: Vec<Row>,
    at: usize,
}

/// Registers `outpost_pending` on `db`, sharing the connection's session (its snapshot).
pub(crate) fn register(db: *mut sqlite3, session: Arc<Session>) -> Result<(), LoadError> {
    crate::vtab_module::register(db, c"outpost_pending", &MODULE, session)
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
    let rc = unsafe {
        (ffi::api().declare_vtab)(
            db,
            c"CREATE TABLE x(tbl TEXT, pk TEXT, columns TEXT, since_ms INTEGER)".as_ptr(),
        )
    };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // Read-only and about this database's own sync state: safe in a view even with
    // `PRAGMA trusted_schema=OFF` (an app's list view may join it).
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
    ffi::SQLITE_OK // a full scan; SQLite applies any WHERE itself
}

unsafe extern "C" fn disconnect(table: *mut c_void) -> c_int {
    // SAFETY: table is a Box<Table> made by `connect`, released once by SQLite.
    drop(unsafe { Box::from_raw(table.cast::<Table>()) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn open(_table: *mut c_void, out: *mut *mut c_void) -> c_int {
    let cursor = Box::new(Cursor {
        p_vtab: std::ptr::null_mut(),
        rows: Vec::new(),
        at: 0,
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

/// The listed rows, by table name then key.
fn rows(t: &Table) -> Result<Vec<Row>, Error> {
    let conn = ffi::Conn(t.db);
    with_snapshot(conn, &t.session, |snap| {
        let mut out = Vec::with_capacity(snap.rows.len());
        for ((id, key), p) in &snap.rows {
            let Some(table) = snap.tables.iter().find(|x| x.id == *id) else {
                continue;
            };
            let pk: Vec<serde_json::Value> = crate::keys::unpack(key)?
                .iter()
                .map(crate::json::value_json)
                .collect();
            let columns: Vec<&str> = p
                .columns
                .iter()
                .filter_map(|&c| table.columns.get(c).map(String::as_str))
                .collect();
            out.push((
                table.name.clone(),
                serde_json::Value::Array(pk).to_string(),
                serde_json::json!(columns).to_string(),
                p.since_ms(),
            ));
        }
        out.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let out = out
            .into_iter()
            .map(|(tbl, pk, columns, since)| {
                [
                    Value::Text(tbl),
                    Value::Text(pk),
                    Value::Text(columns),
                    since.map_or(Value::Null, Value::Integer),
                ]
            })
            .collect();
        Ok(out)
    })
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
    match catch_unwind(AssertUnwindSafe(|| rows(t))) {
        Ok(Ok(rows)) => {
            c.rows = rows;
            c.at = 0;
            ffi::SQLITE_OK
        }
        Ok(Err(e)) => t.fail(&format!("outpost_pending: {e}")),
        Err(_) => t.fail("outpost_pending: internal error (panic)"),
    }
}

unsafe extern "C" fn next(cursor: *mut c_void) -> c_int {
    // SAFETY: cursor is ours (see `open`).
    unsafe { (*cursor.cast::<Cursor>()).at += 1 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn eof(cursor: *mut c_void) -> c_int {
    // SAFETY: cursor is ours (see `open`).
    let c = unsafe { &*cursor.cast::<Cursor>() };
    c_int::from(c.at >= c.rows.len())
}

unsafe extern "C" fn column(cursor: *mut c_void, ctx: *mut sqlite3_context, col: c_int) -> c_int {
    // SAFETY: cursor is ours (see `open`); SQLite asks for columns only while not at eof.
    let c = unsafe { &*cursor.cast::<Cursor>() };
    let v = c
        .rows
        .get(c.at)
        .and_then(|r| r.get(col as usize))
        .unwrap_or(&Value::Null);
    // SAFETY: ctx is SQLite's result slot for this column.
    unsafe { ffi::set_result(ctx, v) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn rowid(cursor: *mut c_void, out: *mut i64) -> c_int {
    // SAFETY: cursor is ours (see `open`); out is SQLite's slot for the rowid.
    unsafe { *out = (*cursor.cast::<Cursor>()).at as i64 };
    ffi::SQLITE_OK
}
