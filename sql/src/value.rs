//! Values in and out of statements: [`Param`]s bound (from anything [`ToParam`]), [`Row`]s of
//! owned [`Value`]s read back ([`FromValue`]). The five kinds are SQLite's storage classes; on
//! PostgreSQL they are bigint, double precision, text and bytea (and a boolean reads as 0 or 1).

use crate::error::{Error, Result};

/// A value bound to a statement's parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param<'a> {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// What can be bound as a parameter.
pub trait ToParam {
    /// The parameter.
    fn to_param(&self) -> Param<'_>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Param<'_> {
                Param::Int(i64::from(*self))
            }
        }
    )*};
}
int_param!(i64, i32, i16, u32, u16, u8, bool);

impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for [u8] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

impl ToParam for Vec<u8> {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

impl<const N: usize> ToParam for [u8; N] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => Param::Null,
        }
    }
}

impl ToParam for Param<'_> {
    fn to_param(&self) -> Param<'_> {
        *self
    }
}

/// A statement's parameters: [`crate::params!`], an array of one type, or `[]`.
pub trait Params {
    /// The parameters in order.
    fn params(&self) -> Vec<Param<'_>>;
}

impl Params for &[&dyn ToParam] {
    fn params(&self) -> Vec<Param<'_>> {
        self.iter().map(|p| p.to_param()).collect()
    }
}

impl<T: ToParam, const N: usize> Params for [T; N] {
    fn params(&self) -> Vec<Param<'_>> {
        self.iter().map(ToParam::to_param).collect()
    }
}

impl Params for () {
    fn params(&self) -> Vec<Param<'_>> {
        Vec::new()
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(i),
            Param::Real(r) => ValueRef::Real(r),
            Param::Text(t) => ValueRef::Text(t.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A value read from a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// An integer (or a PostgreSQL boolean, as 0 or 1).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }

    pub(crate) fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

/// What a column's [`Value`] can be read as.
pub trait FromValue: Sized {
    /// `v`, the value of column `column`, as `Self`.
    fn from_value(v: &Value, column: usize) -> Result<Self>;
}

fn mismatch<T>(v: &Value, column: usize, wanted: &'static str) -> Result<T> {
    Err(Error::Type {
        column,
        wanted,
        found: v.kind(),
    })
}

impl FromValue for i64 {
    fn from_value(v: &Value, column: usize) -> Result<Self> {
        match v {
            Value::Int(i) => Ok(*i),
            _ => mismatch(v, column, "an integer"),
        }
    }
}

macro_rules! narrow_int {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value, column: usize) -> Result<Self> {
                let i = i64::from_value(v, column)?;
                <$t>::try_from(i).or_else(|_| mismatch(v, column, stringify!($t)))
            }
        }
    )*};
}
narrow_int!(i32, u32, u64, u16, u8, usize);

impl FromValue for bool {
    fn from_value(v: &Value, column: usize) -> Result<Self> {
        Ok(i64::from_value(v, column)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value, column: usize) -> Result<Self> {
        match v {
            Value::Real(r) => Ok(*r),
            Value::Int(i) => Ok(*i as f64),
            _ => mismatch(v, column, "a real"),
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value, column: usize) -> Result<Self> {
        match v {
            Value::Text(t) => Ok(t.clone()),
            _ => mismatch(v, column, "text"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value, column: usize) -> Result<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            _ => mismatch(v, column, "a blob"),
        }
    }
}

impl<const N: usize> FromValue for [u8; N] {
    fn from_value(v: &Value, column: usize) -> Result<Self> {
        match v {
            Value::Blob(b) => <[u8; N]>::try_from(b.as_slice())
                .or_else(|_| mismatch(v, column, "a blob of the expected length")),
            _ => mismatch(v, column, "a blob"),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value, column: usize) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}

/// A column's index, as rusqlite's `row.get::<_, T>(0)` takes it.
pub trait RowIndex {
    /// The index.
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result, its values owned.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub(crate) values: Vec<Value>,
}

impl Row {
    /// Column `idx` as `T`.
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let i = idx.index();
        let v = self.values.get(i).ok_or(Error::Column(i))?;
        T::from_value(v, i)
    }

    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(Value::from_sqlite(r.get_ref(i)?));
        }
        Ok(Row { values })
    }
}
