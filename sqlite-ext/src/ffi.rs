//! The only place that touches SQLite's C API.
//!
//! A loadable extension must call SQLite through the `sqlite3_api_routines` table handed to its
//! entry point (SQLite's `SQLITE_EXTENSION_INIT2`); a statically linked one receives the same
//! table from `sqlite3_auto_extension`. The entry point copies the function pointers it needs into
//! [`Api`] once, refusing to load when one is missing, so no call below can find a hole.
//! Everything else in the crate uses the safe [`Conn`] / [`Stmt`] wrappers.
//!
//! The routines table is read as what it is in `sqlite3ext.h`: a struct of function pointers,
//! append-only across SQLite versions, so each entry is addressed by its position there. This
//! crate deliberately links no SQLite of its own (sqlite-loadable's `sqlite3ext-sys` compiles one
//! in, which collides with the app's SQLite when the extension is linked statically, as on
//! mobile): it only ever calls the SQLite that loaded it.

use crate::arg::Arg;
use crate::error::{Error, LoadError, SQLITE_TOOBIG};
use outpost_protocol::Value;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

pub(crate) const SQLITE_OK: c_int = 0;
pub(crate) const SQLITE_ROW: c_int = 100;
pub(crate) const SQLITE_DONE: c_int = 101;
pub(crate) const SQLITE_UTF8: c_int = 1;
pub(crate) const SQLITE_DETERMINISTIC: c_int = 0x800;
pub(crate) const SQLITE_INNOCUOUS: c_int = 0x200000;
/// `sqlite3_vtab_config` op: the virtual table is safe in an untrusted schema (SQLite 3.31+).
pub(crate) const SQLITE_VTAB_INNOCUOUS: c_int = 2;

/// A database connection (opaque).
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct sqlite3 {
    _private: [u8; 0],
}
/// A function call's context.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct sqlite3_context {
    _private: [u8; 0],
}
/// A value (function argument).
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct sqlite3_value {
    _private: [u8; 0],
}
/// A prepared statement.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct sqlite3_stmt {
    _private: [u8; 0],
}

const INTEGER: c_int = 1;
const FLOAT: c_int = 2;
const TEXT: c_int = 3;
const BLOB: c_int = 4;

type Destructor = Option<unsafe extern "C" fn(*mut c_void)>;
type XFunc = unsafe extern "C" fn(*mut sqlite3_context, c_int, *mut *mut sqlite3_value);

macro_rules! api_table {
    ($($name:ident @ $index:literal : $ty:ty),* $(,)?) => {
        /// The SQLite entry points this crate calls, copied from the routines table at load.
        pub(crate) struct Api { $(pub(crate) $name: $ty,)* }

        impl Api {
            /// Copies the needed pointers; `Err` names the first missing one.
            ///
            /// # Safety
            /// `p` must point to a valid `sqlite3_api_routines` (as passed to an entry point).
            unsafe fn from_routines(p: *const *const c_void) -> Result<Api, LoadError> {
                Ok(Api { $($name: {
                    // SAFETY: the table holds at least this many pointers (it only grows, and
                    // every entry used here exists since SQLite 3.14); each entry has the
                    // signature sqlite3ext.h gives it.
                    let f = unsafe { *p.add($index) };
                    if f.is_null() {
                        return Err(LoadError::MissingRoutine(stringify!($name)));
                    }
                    // SAFETY: as above; a non-null entry is the function of that signature.
                    unsafe { std::mem::transmute::<*const c_void, $ty>(f) }
                },)* })
            }
        }
    };
}

// Positions in `struct sqlite3_api_routines` (sqlite3ext.h).
api_table! {
    prepare_v2 @ 116: unsafe extern "C" fn(*mut sqlite3, *const c_char, c_int, *mut *mut sqlite3_stmt, *mut *const c_char) -> c_int,
    step @ 94: unsafe extern "C" fn(*mut sqlite3_stmt) -> c_int,
    reset @ 77: unsafe extern "C" fn(*mut sqlite3_stmt) -> c_int,
    finalize @ 57: unsafe extern "C" fn(*mut sqlite3_stmt) -> c_int,
    bind_int64 @ 5: unsafe extern "C" fn(*mut sqlite3_stmt, c_int, i64) -> c_int,
    bind_double @ 3: unsafe extern "C" fn(*mut sqlite3_stmt, c_int, f64) -> c_int,
    bind_null @ 6: unsafe extern "C" fn(*mut sqlite3_stmt, c_int) -> c_int,
    bind_text @ 10: unsafe extern "C" fn(*mut sqlite3_stmt, c_int, *const c_char, c_int, Destructor) -> c_int,
    bind_blob @ 2: unsafe extern "C" fn(*mut sqlite3_stmt, c_int, *const c_void, c_int, Destructor) -> c_int,
    column_type @ 38: unsafe extern "C" fn(*mut sqlite3_stmt, c_int) -> c_int,
    column_int64 @ 29: unsafe extern "C" fn(*mut sqlite3_stmt, c_int) -> i64,
    column_double @ 27: unsafe extern "C" fn(*mut sqlite3_stmt, c_int) -> f64,
    column_text @ 36: unsafe extern "C" fn(*mut sqlite3_stmt, c_int) -> *const u8,
    column_blob @ 19: unsafe extern "C" fn(*mut sqlite3_stmt, c_int) -> *const c_void,
    column_bytes @ 20: unsafe extern "C" fn(*mut sqlite3_stmt, c_int) -> c_int,
    errmsg @ 53: unsafe extern "C" fn(*mut sqlite3) -> *const c_char,
    extended_errcode @ 166: unsafe extern "C" fn(*mut sqlite3) -> c_int,
    get_autocommit @ 60: unsafe extern "C" fn(*mut sqlite3) -> c_int,
    create_function_v2 @ 162: unsafe extern "C" fn(*mut sqlite3, *const c_char, c_int, c_int, *mut c_void, Option<XFunc>, Option<unsafe extern "C" fn(*mut sqlite3_context, c_int, *mut *mut sqlite3_value)>, Option<unsafe extern "C" fn(*mut sqlite3_context)>, Option<unsafe extern "C" fn(*mut c_void)>) -> c_int,
    user_data @ 101: unsafe extern "C" fn(*mut sqlite3_context) -> *mut c_void,
    context_db_handle @ 149: unsafe extern "C" fn(*mut sqlite3_context) -> *mut sqlite3,
    result_int64 @ 83: unsafe extern "C" fn(*mut sqlite3_context, i64),
    result_double @ 79: unsafe extern "C" fn(*mut sqlite3_context, f64),
    result_null @ 84: unsafe extern "C" fn(*mut sqlite3_context),
    result_text @ 85: unsafe extern "C" fn(*mut sqlite3_context, *const c_char, c_int, Destructor),
    result_blob @ 78: unsafe extern "C" fn(*mut sqlite3_context, *const c_void, c_int, Destructor),
    result_error @ 80: unsafe extern "C" fn(*mut sqlite3_context, *const c_char, c_int),
    result_error_code @ 146: unsafe extern "C" fn(*mut sqlite3_context, c_int),
    value_type @ 113: unsafe extern "C" fn(*mut sqlite3_value) -> c_int,
    value_int64 @ 107: unsafe extern "C" fn(*mut sqlite3_value) -> i64,
    value_double @ 105: unsafe extern "C" fn(*mut sqlite3_value) -> f64,
    value_text @ 109: unsafe extern "C" fn(*mut sqlite3_value) -> *const u8,
    value_blob @ 102: unsafe extern "C" fn(*mut sqlite3_value) -> *const c_void,
    value_bytes @ 103: unsafe extern "C" fn(*mut sqlite3_value) -> c_int,
    db_filename @ 180: unsafe extern "C" fn(*mut sqlite3, *const c_char) -> *const c_char,
    create_module_v2 @ 119: unsafe extern "C" fn(*mut sqlite3, *const c_char, *const c_void, *mut c_void, Option<unsafe extern "C" fn(*mut c_void)>) -> c_int,
    declare_vtab @ 50: unsafe extern "C" fn(*mut sqlite3, *const c_char) -> c_int,
    malloc @ 68: unsafe extern "C" fn(c_int) -> *mut c_void,
    free @ 58: unsafe extern "C" fn(*mut c_void),
    db_config @ 163: unsafe extern "C" fn(*mut sqlite3, c_int, ...) -> c_int,
    vtab_config @ 177: unsafe extern "C" fn(*mut sqlite3, c_int, ...) -> c_int,
    clear_bindings @ 118: unsafe extern "C" fn(*mut sqlite3_stmt) -> c_int,
    total_changes @ 97: unsafe extern "C" fn(*mut sqlite3) -> c_int,
    file_control @ 127: unsafe extern "C" fn(*mut sqlite3, *const c_char, c_int, *mut c_void) -> c_int,
}

static API: OnceLock<Api> = OnceLock::new();

/// Installs the routines table (first caller wins; every SQLite in one process hands out the same
/// functions for our purposes).
///
/// # Safety
/// `p` must be null or point to a valid `sqlite3_api_routines`.
pub(crate) unsafe fn install(p: *const c_void) -> Result<(), LoadError> {
    if API.get().is_some() {
        return Ok(());
    }
    if p.is_null() {
        return Err(LoadError::NoRoutines);
    }
    // SAFETY: forwarded caller guarantee.
    let api = unsafe { Api::from_routines(p.cast()) }?;
    let _ = API.set(api);
    Ok(())
}

pub(crate) fn api() -> &'static Api {
    // The entry point installs the table before registering any function, and nothing in this
    // crate runs except from a registered function or the entry point itself.
    match API.get() {
        Some(a) => a,
        None => std::process::abort(),
    }
}

/// SQLite's `SQLITE_TRANSIENT`: copy the buffer before returning.
fn transient() -> Destructor {
    // SAFETY: SQLite defines SQLITE_TRANSIENT as the destructor value -1; it is compared, never
    // called.
    Some(unsafe { std::mem::transmute::<isize, unsafe extern "C" fn(*mut c_void)>(-1) })
}

/// A copy of `msg` in memory from `sqlite3_malloc` (SQLite frees it: a virtual table's error
/// message), or null when out of memory.
pub(crate) fn sqlite_string(msg: &str) -> *mut c_char {
    copy_for_sqlite(api(), msg)
}

/// [`sqlite_string`] with the allocator of the routines table given.
fn copy_for_sqlite(api: &Api, msg: &str) -> *mut c_char {
    let bytes = msg.as_bytes();
    let Ok(n) = c_int::try_from(bytes.len() + 1) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a plain allocation of n bytes.
    let p = unsafe { (api.malloc)(n) }.cast::<u8>();
    if !p.is_null() {
        // SAFETY: p holds n = len + 1 bytes; the message bytes then a NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            *p.add(bytes.len()) = 0;
        }
    }
    p.cast()
}

/// Hands the entry point's failure to SQLite through its `pzErrMsg` out-parameter: SQLite shows
/// the text after "error during initialization: " (or "automatic extension loading failed: ")
/// and frees it with `sqlite3_free`. So the copy comes from `sqlite3_malloc` of the routines
/// table passed with this very call, not from the table [`install`] kept (another SQLite of the
/// process may have installed that one). Without a usable table (null, or lacking a routine)
/// there is no allocator to use: the message is then only logged.
///
/// # Safety
/// `p_api` and `pz_err_msg` must be what SQLite passed to the entry point (each may be null).
pub(crate) unsafe fn report_load_error(
    p_api: *const c_void,
    pz_err_msg: *mut *mut c_char,
    msg: &str,
) {
    if p_api.is_null() || pz_err_msg.is_null() {
        return;
    }
    // SAFETY: caller guarantee: the routines table of the SQLite calling the entry point.
    let Ok(api) = (unsafe { Api::from_routines(p_api.cast()) }) else {
        return;
    };
    let copy = copy_for_sqlite(&api, msg);
    // SAFETY: caller guarantee: SQLite's `char **`, set to null before the call, read (and the
    // message freed) by SQLite after the entry point returns.
    unsafe { *pz_err_msg = copy };
}

/// A borrowed database connection.
#[derive(Clone, Copy)]
pub(crate) struct Conn(pub(crate) *mut sqlite3);

impl Conn {
    fn last_error(&self, primary: c_int, sql: &str) -> Error {
        // SAFETY: self.0 is a live connection for the duration of the callback.
        let extended = unsafe { (api().extended_errcode)(self.0) };
        let code = if extended & 0xff == primary & 0xff {
            extended
        } else {
            primary
        };
        let msg = self.error_message();
        Error::Sqlite {
            code,
            message: msg,
            sql: sql.chars().take(200).collect(),
        }
    }

    /// SQLite's message for the connection's last failed call (`sqlite3_errmsg`).
    pub(crate) fn error_message(&self) -> String {
        // SAFETY: self.0 is a live connection; SQLite returns a NUL-terminated message (never
        // null), valid until the next call on the connection: copied at once.
        unsafe { CStr::from_ptr((api().errmsg)(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// Prepares one statement.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Stmt, Error> {
        let c = CString::new(sql).map_err(|_| Error::Internal("SQL text contains NUL".into()))?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: valid connection, NUL-terminated SQL, out pointer to a local.
        let rc =
            unsafe { (api().prepare_v2)(self.0, c.as_ptr(), -1, &mut stmt, std::ptr::null_mut()) };
        if rc != SQLITE_OK {
            return Err(self.last_error(rc, sql));
        }
        Ok(Stmt {
            conn: *self,
            stmt,
            sql: sql.to_string(),
        })
    }

    /// Runs one or more statements separated by `;`, discarding rows.
    pub(crate) fn exec(&self, sql: &str) -> Result<(), Error> {
        let c = CString::new(sql).map_err(|_| Error::Internal("SQL text contains NUL".into()))?;
        let mut tail: *const c_char = c.as_ptr();
        loop {
            let mut stmt = std::ptr::null_mut();
            let mut next: *const c_char = std::ptr::null();
            // SAFETY: `tail` points into `c`, which outlives the loop.
            let rc = unsafe { (api().prepare_v2)(self.0, tail, -1, &mut stmt, &mut next) };
            if rc != SQLITE_OK {
                return Err(self.last_error(rc, sql));
            }
            if stmt.is_null() {
                return Ok(());
            }
            let s = Stmt {
                conn: *self,
                stmt,
                sql: String::new(),
            };
            while s.step_raw(sql)? {}
            drop(s);
            tail = next;
        }
    }

    /// Runs a query returning one integer (first column of the first row; `None` without rows).
    pub(crate) fn query_i64(&self, sql: &str, params: &[Value]) -> Result<Option<i64>, Error> {
        let mut s = self.prepare(sql)?;
        s.bind_all(params)?;
        Ok(if s.step()? { Some(s.i64(0)) } else { None })
    }

    /// True when the connection has the named schema open (`main`, `temp`, an attached name):
    /// the temp schema is only open once something used it.
    pub(crate) fn schema_open(&self, schema: &CStr) -> bool {
        // SAFETY: valid connection; the name is NUL-terminated.
        !unsafe { (api().db_filename)(self.0, schema.as_ptr()) }.is_null()
    }

    /// Whether triggers of the main (and attached) schemas fire
    /// (`SQLITE_DBCONFIG_ENABLE_TRIGGER`); TEMP triggers always do. Changing it expires every
    /// prepared statement of the connection, as a flag pragma does.
    pub(crate) fn triggers_enabled(&self) -> bool {
        self.trigger_config(-1)
    }

    /// Turns the main schema's triggers on or off (see [`Conn::triggers_enabled`]).
    pub(crate) fn set_triggers_enabled(&self, on: bool) {
        self.trigger_config(c_int::from(on));
    }

    /// `sqlite3_db_config(ENABLE_TRIGGER, arg, &now)`: arg 1 on, 0 off, -1 unchanged; returns
    /// the setting afterwards.
    fn trigger_config(&self, arg: c_int) -> bool {
        const SQLITE_DBCONFIG_ENABLE_TRIGGER: c_int = 1003;
        let mut now: c_int = 0;
        // SAFETY: valid connection; this op takes an int and an int* (both passed), and it cannot
        // fail for a known op.
        unsafe {
            (api().db_config)(
                self.0,
                SQLITE_DBCONFIG_ENABLE_TRIGGER,
                arg,
                &mut now as *mut c_int,
            )
        };
        now != 0
    }

    /// Rows inserted, updated or deleted by this connection's statements since it opened
    /// (`sqlite3_total_changes`: rolled-back ones too), wrapping at `c_int`.
    pub(crate) fn total_changes(&self) -> c_int {
        // SAFETY: valid connection.
        unsafe { (api().total_changes)(self.0) }
    }

    /// The main database's data version (`SQLITE_FCNTL_DATA_VERSION`, SQLite 3.26+): it changes
    /// whenever the file changes, by a commit of this connection or of any other, and costs no
    /// statement. `None` when this SQLite does not answer it.
    pub(crate) fn file_data_version(&self) -> Option<u32> {
        const SQLITE_FCNTL_DATA_VERSION: c_int = 35;
        let mut v: u32 = 0;
        // SAFETY: valid connection; "main" is NUL-terminated; this op writes one u32.
        let rc = unsafe {
            (api().file_control)(
                self.0,
                c"main".as_ptr(),
                SQLITE_FCNTL_DATA_VERSION,
                (&mut v as *mut u32).cast(),
            )
        };
        (rc == SQLITE_OK).then_some(v)
    }

    /// True when no transaction is open.
    pub(crate) fn autocommit(&self) -> bool {
        // SAFETY: valid connection.
        unsafe { (api().get_autocommit)(self.0) != 0 }
    }
}

/// A prepared statement, finalized on drop.
pub(crate) struct Stmt {
    conn: Conn,
    stmt: *mut sqlite3_stmt,
    sql: String,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: stmt came from prepare_v2 and is finalized exactly once.
        unsafe { (api().finalize)(self.stmt) };
    }
}

impl Stmt {
    fn check(&self, rc: c_int) -> Result<(), Error> {
        if rc == SQLITE_OK {
            Ok(())
        } else {
            Err(self.conn.last_error(rc, &self.sql))
        }
    }

    pub(crate) fn bind(&mut self, i: usize, v: &Value) -> Result<(), Error> {
        self.bind_arg(i, Arg::from(v))
    }

    pub(crate) fn bind_arg(&mut self, i: usize, v: Arg) -> Result<(), Error> {
        // SAFETY: SQLITE_TRANSIENT: text and blob are copied by SQLite.
        unsafe { self.bind_with(i, v, transient()) }
    }

    /// Binds `v` with the destructor `d` (SQLITE_TRANSIENT, or SQLITE_STATIC = `None`).
    ///
    /// # Safety
    /// With `None`, SQLite keeps pointing at `v`'s text or blob: the caller must unbind it
    /// (`clear_bindings`) before that borrow ends.
    unsafe fn bind_with(&mut self, i: usize, v: Arg, d: Destructor) -> Result<(), Error> {
        let i = i as c_int;
        let a = api();
        // SAFETY: live statement; the bytes outlive the binding (caller's contract).
        let rc = unsafe {
            match v {
                Arg::Null => (a.bind_null)(self.stmt, i),
                Arg::Integer(n) => (a.bind_int64)(self.stmt, i, n),
                Arg::Real(f) => (a.bind_double)(self.stmt, i, f),
                Arg::Text(t) => (a.bind_text)(self.stmt, i, t.as_ptr().cast(), len(t.len())?, d),
                Arg::Blob(b) => (a.bind_blob)(self.stmt, i, b.as_ptr().cast(), len(b.len())?, d),
            }
        };
        self.check(rc)
    }

    /// Binds `values` to ?1, ?2, … without copying them, runs the statement to its end, and
    /// unbinds them before returning, so SQLite holds no pointer past the borrow. The apply's
    /// row writes go this way: copying every text into SQLite cost about 5% of a first sync.
    pub(crate) fn run_borrowed<'v>(
        &mut self,
        values: impl Iterator<Item = &'v Value>,
    ) -> Result<(), Error> {
        let mut r = Ok(());
        for (i, v) in values.enumerate() {
            // SAFETY: SQLITE_STATIC; unbound below, before `values`' borrow ends.
            r = unsafe { self.bind_with(i + 1, Arg::from(v), None) };
            if r.is_err() {
                break;
            }
        }
        if r.is_ok() {
            r = self.run();
        }
        // SAFETY: live statement (reset by `run`, or idle when a bind failed).
        unsafe { (api().clear_bindings)(self.stmt) };
        r
    }

    pub(crate) fn bind_i64(&mut self, i: usize, v: i64) -> Result<(), Error> {
        // SAFETY: live statement.
        let rc = unsafe { (api().bind_int64)(self.stmt, i as c_int, v) };
        self.check(rc)
    }

    pub(crate) fn bind_blob(&mut self, i: usize, b: &[u8]) -> Result<(), Error> {
        // SAFETY: live statement; SQLite copies the bytes.
        let rc = unsafe {
            (api().bind_blob)(
                self.stmt,
                i as c_int,
                b.as_ptr().cast(),
                len(b.len())?,
                transient(),
            )
        };
        self.check(rc)
    }

    pub(crate) fn bind_text(&mut self, i: usize, t: &str) -> Result<(), Error> {
        // SAFETY: live statement; SQLite copies the bytes.
        let rc = unsafe {
            (api().bind_text)(
                self.stmt,
                i as c_int,
                t.as_ptr().cast(),
                len(t.len())?,
                transient(),
            )
        };
        self.check(rc)
    }

    pub(crate) fn bind_all(&mut self, params: &[Value]) -> Result<(), Error> {
        for (i, p) in params.iter().enumerate() {
            self.bind(i + 1, p)?;
        }
        Ok(())
    }

    fn step_raw(&self, sql: &str) -> Result<bool, Error> {
        // SAFETY: live statement.
        match unsafe { (api().step)(self.stmt) } {
            SQLITE_ROW => Ok(true),
            SQLITE_DONE => Ok(false),
            rc => {
                let e = self.conn.last_error(rc, sql);
                // SAFETY: live statement; resetting after an error is required before reuse.
                unsafe { (api().reset)(self.stmt) };
                Err(e)
            }
        }
    }

    /// Steps once: `true` when a row is available.
    pub(crate) fn step(&mut self) -> Result<bool, Error> {
        self.step_raw(&self.sql)
    }

    /// Runs to completion and resets for reuse.
    pub(crate) fn run(&mut self) -> Result<(), Error> {
        while self.step()? {}
        self.reset();
        Ok(())
    }

    pub(crate) fn reset(&mut self) {
        // SAFETY: live statement.
        unsafe { (api().reset)(self.stmt) };
    }

    pub(crate) fn i64(&self, col: usize) -> i64 {
        // SAFETY: live statement positioned on a row.
        unsafe { (api().column_int64)(self.stmt, col as c_int) }
    }

    pub(crate) fn is_null(&self, col: usize) -> bool {
        // SAFETY: live statement positioned on a row.
        unsafe { (api().column_type)(self.stmt, col as c_int) == 5 }
    }

    pub(crate) fn text(&self, col: usize) -> String {
        match self.value(col) {
            Value::Text(t) => t,
            Value::Null => String::new(),
            Value::Integer(n) => n.to_string(),
            Value::Real(f) => f.to_string(),
            Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        }
    }

    pub(crate) fn blob(&self, col: usize) -> Vec<u8> {
        let a = api();
        let c = col as c_int;
        // SAFETY: live statement on a row; pointer valid for `bytes` bytes until the next step.
        unsafe {
            let p = (a.column_blob)(self.stmt, c);
            let n = (a.column_bytes)(self.stmt, c);
            if p.is_null() || n <= 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), n as usize).to_vec()
            }
        }
    }

    pub(crate) fn value(&self, col: usize) -> Value {
        let a = api();
        let c = col as c_int;
        // SAFETY: live statement positioned on a row; buffers copied before the next step.
        unsafe {
            match (a.column_type)(self.stmt, c) {
                INTEGER => Value::Integer((a.column_int64)(self.stmt, c)),
                FLOAT => Value::Real((a.column_double)(self.stmt, c)),
                TEXT => {
                    let p = (a.column_text)(self.stmt, c);
                    let n = (a.column_bytes)(self.stmt, c);
                    if p.is_null() {
                        Value::Text(String::new())
                    } else {
                        let b = std::slice::from_raw_parts(p, n.max(0) as usize);
                        Value::Text(String::from_utf8_lossy(b).into_owned())
                    }
                }
                BLOB => Value::Blob(self.blob(col)),
                _ => Value::Null,
            }
        }
    }
}

fn len(n: usize) -> Result<c_int, Error> {
    c_int::try_from(n).map_err(|_| Error::TooBig(n))
}

/// A function argument as read: borrowed, or text SQLite holds that is not UTF-8.
pub(crate) enum RawArg<'a> {
    Arg(Arg<'a>),
    BadText(&'a [u8]),
}

/// Reads a function argument without copying it.
///
/// # Safety
/// `v` must be a valid `sqlite3_value`, unchanged while the returned slices are used (true for a
/// function's arguments until the call returns: nothing converts them in between).
pub(crate) unsafe fn arg_of<'a>(v: *mut sqlite3_value) -> RawArg<'a> {
    let a = api();
    // SAFETY: caller guarantee. `value_text`/`value_blob` are called before `value_bytes`, as
    // SQLite documents, so the length is that of the returned buffer.
    unsafe {
        let bytes = |p: *const u8| -> &'a [u8] {
            let n = (a.value_bytes)(v);
            if p.is_null() || n <= 0 {
                &[]
            } else {
                std::slice::from_raw_parts(p, n as usize)
            }
        };
        RawArg::Arg(match (a.value_type)(v) {
            INTEGER => Arg::Integer((a.value_int64)(v)),
            FLOAT => Arg::Real((a.value_double)(v)),
            TEXT => {
                let b = bytes((a.value_text)(v));
                match std::str::from_utf8(b) {
                    Ok(t) => Arg::Text(t),
                    Err(_) => return RawArg::BadText(b),
                }
            }
            BLOB => Arg::Blob(bytes((a.value_blob)(v).cast::<u8>())),
            _ => Arg::Null,
        })
    }
}

/// A function argument's type, and for text and blobs its bytes, borrowed ([`view_of`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ValueView<'a> {
    Null,
    Integer(i64),
    Real(f64),
    /// UTF-8 as SQLite holds it, not checked.
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl<'a> ValueView<'a> {
    /// As an [`Arg`] (text that is not UTF-8 replaced lossily, into `lossy`).
    pub(crate) fn arg(self, lossy: &'a mut String) -> Arg<'a> {
        match self {
            ValueView::Null => Arg::Null,
            ValueView::Integer(n) => Arg::Integer(n),
            ValueView::Real(f) => Arg::Real(f),
            ValueView::Text(b) => match std::str::from_utf8(b) {
                Ok(t) => Arg::Text(t),
                Err(_) => {
                    *lossy = String::from_utf8_lossy(b).into_owned();
                    Arg::Text(lossy)
                }
            },
            ValueView::Blob(b) => Arg::Blob(b),
        }
    }
}

/// Reads a function argument's type and bytes without copying them: `sqlite3_value_bytes`
/// first, which converts text of a UTF-16 database to UTF-8 in place and leaves UTF-8 text
/// alone, then `sqlite3_value_blob`, which returns the bytes as they are (`sqlite3_value_text`
/// would copy a value that has no terminator, as a trigger's `NEW.` values have not).
///
/// # Safety
/// As [`arg_of`].
pub(crate) unsafe fn view_of<'a>(v: *mut sqlite3_value) -> ValueView<'a> {
    let a = api();
    // SAFETY: caller guarantee; the length is read first, so it is that of the bytes the blob
    // call returns (it converts nothing after).
    unsafe {
        let bytes = || -> &'a [u8] {
            let n = (a.value_bytes)(v);
            let p = (a.value_blob)(v).cast::<u8>();
            if p.is_null() || n <= 0 {
                &[]
            } else {
                std::slice::from_raw_parts(p, n as usize)
            }
        };
        match (a.value_type)(v) {
            INTEGER => ValueView::Integer((a.value_int64)(v)),
            FLOAT => ValueView::Real((a.value_double)(v)),
            TEXT => ValueView::Text(bytes()),
            BLOB => ValueView::Blob(bytes()),
            _ => ValueView::Null,
        }
    }
}

/// Sets a function's result.
///
/// # Safety
/// `ctx` must be the live context of the current call.
pub(crate) unsafe fn set_result(ctx: *mut sqlite3_context, v: &Value) {
    let a = api();
    // SAFETY: caller guarantee; SQLite copies text and blobs.
    unsafe {
        match v {
            Value::Null => (a.result_null)(ctx),
            Value::Integer(n) => (a.result_int64)(ctx, *n),
            Value::Real(f) => (a.result_double)(ctx, *f),
            Value::Text(t) => match c_int::try_from(t.len()) {
                Ok(n) => (a.result_text)(ctx, t.as_ptr().cast(), n, transient()),
                Err(_) => (a.result_error_code)(ctx, SQLITE_TOOBIG),
            },
            Value::Blob(b) => match c_int::try_from(b.len()) {
                Ok(n) => (a.result_blob)(ctx, b.as_ptr().cast(), n, transient()),
                Err(_) => (a.result_error_code)(ctx, SQLITE_TOOBIG),
            },
        }
    }
}

/// Reports an error from a function call: the message and the primary code.
///
/// # Safety
/// `ctx` must be the live context of the current call.
pub(crate) unsafe fn set_error(ctx: *mut sqlite3_context, code: c_int, message: &str) {
    let a = api();
    let n = c_int::try_from(message.len()).unwrap_or(c_int::MAX);
    // SAFETY: caller guarantee; SQLite copies the message. The code must be set after the message.
    unsafe {
        (a.result_error)(ctx, message.as_ptr().cast(), n);
        (a.result_error_code)(ctx, code);
    }
}
