//! [`Arg`]: a value borrowed from SQLite or from the caller, never copied on its way in or out.
//!
//! It is what a SQL function receives (`functions.rs` reads its arguments into it through
//! `ffi.rs`) and what a statement parameter is bound from (`ffi.rs`). It lives on its own so that
//! `ffi.rs`, the registration wrapper and the key packing (`keys.rs`) share it without depending
//! on one another.

use outpost_protocol::Value;

/// A value borrowed for the duration of a call or a binding.
///
/// Text that is not valid UTF-8 (SQLite does not check what it stores) is replaced lossily, as
/// `String::from_utf8_lossy` does; only then is it copied (see `functions.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Arg<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> From<&'a Value> for Arg<'a> {
    fn from(v: &'a Value) -> Arg<'a> {
        match v {
            Value::Null => Arg::Null,
            Value::Integer(n) => Arg::Integer(*n),
            Value::Real(f) => Arg::Real(*f),
            Value::Text(t) => Arg::Text(t),
            Value::Blob(b) => Arg::Blob(b),
        }
    }
}
