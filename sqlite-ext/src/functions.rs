//! Registering SQL functions, and the one wrapper every call goes through.
//!
//! Each function is registered with `nArg = -1` and checks its own arity, so a wrong call gets a
//! message naming the function and what it takes. The wrapper catches panics (none may unwind into
//! C) and turns an [`Error`] into SQLite's code and message in one place.
//!
//! Arguments are handed to the body **borrowed** ([`Arg`]): text and blob arguments are slices of
//! SQLite's own buffers, valid for the call, never copied (a batch blob given to
//! `outpost_apply_many` is held once by SQLite, not again by the extension). Up to
//! [`INLINE_ARGS`] arguments live on the stack, so the per-row trigger functions allocate nothing
//! for their arguments.

/// The argument type of every function body (its own module, `arg.rs`, because `ffi.rs` reads
/// and binds it too).
pub(crate) use crate::arg::Arg;
use crate::error::{Error, LoadError, SQLITE_INTERNAL};
use crate::ffi::{self, sqlite3, sqlite3_context, sqlite3_value, Conn};
use crate::session::Session;
use outpost_protocol::Value;
use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// What a function body receives.
pub(crate) struct Call<'a> {
    pub conn: Conn,
    pub session: &'a Session,
    pub name: &'static str,
}

impl Call<'_> {
    /// An argument error naming this function.
    pub(crate) fn arg_error(&self, what: impl std::fmt::Display) -> Error {
        Error::Argument(format!("{}: {what}", self.name))
    }
}

/// A function body: borrowed arguments in, one value out.
pub(crate) type ArgsBody = fn(&Call, &[Arg]) -> Result<Value, Error>;

/// A body that looks only at its arguments' types and bytes ([`ffi::ValueView`]: text not
/// checked as UTF-8, nor copied to add the terminator `sqlite3_value_text` wants), for a check
/// of every value of a row on every insert (`outpost_strict_check`).
pub(crate) type ViewsBody = fn(&Call, &[ffi::ValueView]) -> Result<Value, Error>;

/// How a function reads its arguments.
#[derive(Clone, Copy)]
pub(crate) enum Body {
    Args(ArgsBody),
    Views(ViewsBody),
}

/// Argument views read into a stack array (more go to the heap): a row's values.
const INLINE_VIEWS: usize = 32;

/// Arguments read into a stack array (more go to the heap).
pub(crate) const INLINE_ARGS: usize = 8;

/// One row of the registration table in `lib.rs`.
pub(crate) struct FunctionDef {
    /// The SQL name, for messages (`c_name` as Rust text, see [`name_text`]).
    pub name: &'static str,
    /// The SQL name as C text, for SQLite.
    pub c_name: &'static CStr,
    pub min_args: usize,
    pub max_args: usize,
    /// Same result for the same arguments within a statement (lets SQLite use it in indexes).
    pub deterministic: bool,
    /// Safe to run from a schema an attacker may have written (`SQLITE_INNOCUOUS`): the
    /// triggers call it, and with `PRAGMA trusted_schema=OFF` SQLite refuses anything else there.
    pub innocuous: bool,
    pub body: Body,
}

/// A C name literal as Rust text, when the registration table is built (a name that is not
/// UTF-8 stops the build, so registration never meets one).
pub(crate) const fn name_text(c_name: &'static CStr) -> &'static str {
    match std::str::from_utf8(c_name.to_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("SQL function names are UTF-8"),
    }
}

struct Registered {
    def: &'static FunctionDef,
    session: Arc<Session>,
}

unsafe extern "C" fn trampoline(
    ctx: *mut sqlite3_context,
    argc: c_int,
    argv: *mut *mut sqlite3_value,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: user data is the `Registered` we boxed at registration; it lives until SQLite
        // calls `destroy`, which cannot happen during a call.
        let reg = unsafe { &*((ffi::api().user_data)(ctx) as *const Registered) };
        let def = reg.def;
        let n = argc.max(0) as usize;
        if n < def.min_args || n > def.max_args {
            let takes = if def.min_args == def.max_args {
                format!("{}", def.min_args)
            } else {
                format!("{} to {}", def.min_args, def.max_args)
            };
            return Err(Error::Argument(format!(
                "{} takes {takes} argument(s), got {n}",
                def.name
            )));
        }
        // SAFETY: SQLite passes `argc` valid values, alive until the call returns.
        let values = unsafe { std::slice::from_raw_parts(argv as *const *mut sqlite3_value, n) };
        // SAFETY: the context belongs to a live connection.
        let conn = Conn(unsafe { (ffi::api().context_db_handle)(ctx) });
        let call = Call {
            conn,
            session: &reg.session,
            name: def.name,
        };
        match def.body {
            // SAFETY: as above; the borrowed arguments do not outlive this call.
            Body::Args(body) => unsafe { with_args(values, |args| body(&call, args)) },
            Body::Views(body) => {
                let mut inline = [ffi::ValueView::Null; INLINE_VIEWS];
                let mut heap = Vec::new();
                let views: &mut [ffi::ValueView] = if n <= INLINE_VIEWS {
                    &mut inline[..n]
                } else {
                    heap.resize(n, ffi::ValueView::Null);
                    &mut heap
                };
                for (view, v) in views.iter_mut().zip(values) {
                    // SAFETY: as above.
                    *view = unsafe { ffi::view_of(*v) };
                }
                body(&call, views)
            }
        }
    }));
    match outcome {
        // SAFETY: ctx is the live context of this call.
        Ok(Ok(v)) => unsafe { ffi::set_result(ctx, &v) },
        // SAFETY: as above.
        Ok(Err(e)) => unsafe { ffi::set_error(ctx, e.code(), &e.to_string()) },
        // SAFETY: as above.
        Err(_) => unsafe {
            ffi::set_error(
                ctx,
                SQLITE_INTERNAL,
                "outpost internal error: a function panicked (please report)",
            )
        },
    }
}

/// Reads `values` as borrowed arguments and runs `f` on them.
///
/// # Safety
/// Every pointer must be a valid `sqlite3_value` whose buffers stay untouched while `f` runs
/// (true for a function's arguments during the call).
unsafe fn with_args<R>(values: &[*mut sqlite3_value], f: impl FnOnce(&[Arg]) -> R) -> R {
    // Texts that are not UTF-8, replaced lossily: filled before `args` borrows them.
    let mut lossy: Vec<(usize, String)> = Vec::new();
    let mut inline = [Arg::Null; INLINE_ARGS];
    let mut heap = Vec::new();
    let args: &mut [Arg] = if values.len() <= INLINE_ARGS {
        &mut inline[..values.len()]
    } else {
        heap.resize(values.len(), Arg::Null);
        &mut heap
    };
    for (i, v) in values.iter().enumerate() {
        // SAFETY: caller guarantee.
        match unsafe { ffi::arg_of(*v) } {
            ffi::RawArg::Arg(a) => args[i] = a,
            ffi::RawArg::BadText(bytes) => {
                lossy.push((i, String::from_utf8_lossy(bytes).into_owned()))
            }
        }
    }
    for (i, t) in &lossy {
        args[*i] = Arg::Text(t);
    }
    f(args)
}

unsafe extern "C" fn destroy(p: *mut c_void) {
    // SAFETY: p is the Box<Registered> leaked at registration, destroyed once by SQLite.
    drop(unsafe { Box::from_raw(p as *mut Registered) });
}

/// Registers every function of `table` on `db`, and the `outpost_clock` table, sharing one
/// per-connection session, which it returns (the entry point registers the engine's virtual
/// tables with it).
pub(crate) fn register_all(
    db: *mut sqlite3,
    table: &'static [FunctionDef],
) -> Result<Arc<Session>, LoadError> {
    let session = Arc::new(Session::default());
    for def in table {
        let mut flags = ffi::SQLITE_UTF8;
        if def.deterministic {
            flags |= ffi::SQLITE_DETERMINISTIC;
        }
        if def.innocuous {
            flags |= ffi::SQLITE_INNOCUOUS;
        }
        let reg = Box::into_raw(Box::new(Registered {
            def,
            session: session.clone(),
        }));
        // SAFETY: db is the connection given to the entry point; `def.c_name` is a
        // NUL-terminated 'static string; SQLite owns `reg` from here and frees it through `destroy` (also when
        // registration fails).
        let rc = unsafe {
            (ffi::api().create_function_v2)(
                db,
                def.c_name.as_ptr(),
                -1,
                flags,
                reg.cast(),
                Some(trampoline),
                None,
                None,
                Some(destroy),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(LoadError::Register {
                name: def.name,
                code: rc,
                message: Conn(db).error_message(),
            });
        }
    }
    crate::clock_table::register(db, session.clone())?;
    Ok(session)
}
