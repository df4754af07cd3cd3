//! Values between the engine's model and PostgreSQL's columns: a [`Value`] bound as a parameter
//! of the column's real type ([`Param`]), checked first to fit it ([`fits`], what strict devices
//! guarantee: a misfit is refused, never coerced), and a key as the capture triggers spell it in
//! `outpost.capture_rows` and the outbox (`jsonb_build_array` of the key columns: [`key_json`]).

use super::app_tables::pg_type;
use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use bytes::BytesMut;
use outpost_protocol::batch::decl_type::{self, DeclType};
use outpost_protocol::batch::ColumnSchema;
use outpost_protocol::Value;
use std::error::Error as StdError;
use std::fmt::Write as _;

/// The PostgreSQL type a column has (`app_tables::pg_type` made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `bigint`.
    Int,
    /// `double precision`.
    Real,
    /// `text`.
    Text,
    /// `numeric`, bound as text and cast in the statement (`$n::text::numeric`).
    Numeric,
    /// `bytea` (BLOB, and columns without a declared type).
    Bytes,
}

impl Kind {
    /// The kind of a column as a batch header declares it.
    pub fn of(c: &ColumnSchema) -> Kind {
        match pg_type(decl_type::reduce(&c.decl_type).unwrap_or(DeclType::None)) {
            "bigint" => Kind::Int,
            "double precision" => Kind::Real,
            "text" => Kind::Text,
            "numeric" => Kind::Numeric,
            _ => Kind::Bytes,
        }
    }

    /// The placeholder for parameter `n` of this kind.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Kind::Numeric => format!("${n}::text::numeric"),
            _ => format!("${n}"),
        }
    }

    /// The array type a column of this kind is sent as (`unnest` of many rows at once).
    pub fn array_type(self) -> &'static str {
        match self {
            Kind::Int => "bigint[]",
            Kind::Real => "double precision[]",
            Kind::Text | Kind::Numeric => "text[]",
            Kind::Bytes => "bytea[]",
        }
    }

    /// The column's value from `expr`, an element of an array of [`Kind::array_type`].
    pub fn from_array(self, expr: &str) -> String {
        match self {
            Kind::Numeric => format!("{expr}::numeric"),
            _ => expr.to_string(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Int => "bigint",
            Kind::Real => "double precision",
            Kind::Text => "text",
            Kind::Numeric => "numeric",
            Kind::Bytes => "bytea",
        }
    }
}

/// `None` when `v` can be stored in a column of `kind`, else why not (naming `column`).
pub fn fits(kind: Kind, v: &Value, column: &str) -> Option<String> {
    let ok = match (kind, v) {
        (_, Value::Null) => true,
        (Kind::Int, Value::Integer(_)) => true,
        (Kind::Real, Value::Integer(_) | Value::Real(_)) => true,
        (Kind::Text, Value::Text(t)) => !t.contains('\0'),
        (Kind::Numeric, Value::Integer(_) | Value::Real(_)) => true,
        (Kind::Bytes, Value::Blob(_)) => true,
        _ => false,
    };
    (!ok).then(|| {
        let what = match v {
            Value::Null => "NULL",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(t) if t.contains('\0') => "text with NUL",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        };
        format!(
            "value of column \"{column}\" does not fit its PostgreSQL type {}: {what}",
            kind.name()
        )
    })
}

/// A value bound as a column of `kind` (checked with [`fits`] first).
#[derive(Debug)]
pub struct Param<'a> {
    /// The value.
    pub value: &'a Value,
    /// The column's kind.
    pub kind: Kind,
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match (self.kind, self.value) {
            (_, Value::Null) => Ok(IsNull::Yes),
            (Kind::Int, Value::Integer(i)) => i.to_sql(ty, out),
            (Kind::Real, Value::Integer(i)) => (*i as f64).to_sql(ty, out),
            (Kind::Real, Value::Real(f)) => f.to_sql(ty, out),
            (Kind::Text, Value::Text(t)) => t.as_str().to_sql(ty, out),
            (Kind::Numeric, Value::Integer(i)) => i.to_string().as_str().to_sql(ty, out),
            (Kind::Numeric, Value::Real(f)) => f.to_string().as_str().to_sql(ty, out),
            (Kind::Bytes, Value::Blob(b)) => b.as_slice().to_sql(ty, out),
            (k, v) => Err(fits(k, v, "?")
                .unwrap_or_else(|| "value does not fit".into())
                .into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8 | Type::FLOAT8 | Type::TEXT | Type::BYTEA | Type::UNKNOWN
        )
    }

    to_sql_checked!();
}

/// A key as `jsonb_build_array` renders the key columns' PostgreSQL values as text (what the
/// capture triggers store in `outpost.capture_rows.key`, which is compared bytewise: the two
/// must print a key alike, checked against PostgreSQL in `cloud_postgres_back_office.rs`).
pub fn key_json(key: &[Value], kinds: &[Kind]) -> String {
    let mut out = String::with_capacity(48);
    out.push('[');
    for (i, v) in key.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match (kinds.get(i).copied().unwrap_or(Kind::Bytes), v) {
            (_, Value::Null) => out.push_str("null"),
            (_, Value::Integer(n)) => {
                let _ = write!(out, "{n}");
            }
            // PostgreSQL prints a double's shortest digits without an exponent in jsonb (a
            // numeric), as Rust's Display does: 100 (not 100.0), 0.00000015 (not 1.5e-7).
            (_, Value::Real(f)) if f.is_finite() => {
                let _ = write!(out, "{}", if *f == 0.0 { 0.0 } else { *f });
            }
            (_, Value::Real(f)) => out.push_str(&serde_json::Value::from(*f).to_string()),
            (_, Value::Text(t)) => push_json_str(&mut out, t),
            (_, Value::Blob(b)) => {
                out.push_str("\"\\\\x");
                out.push_str(&hex(b));
                out.push('"');
            }
        }
    }
    out.push(']');
    out
}

/// Appends `t` as a JSON string, escaped as jsonb's output escapes it (and serde_json: `"`,
/// `\\`, `\b \f \n \r \t`, other control characters as `\u00xx` in lowercase hex, nothing
/// else). Written in place: through a `serde_json::Value` it cost a copy and a growing string
/// per key, a seventh of the cloud's CPU ingesting into PostgreSQL (docs/performance.md).
fn push_json_str(out: &mut String, t: &str) {
    out.reserve(t.len() + 2);
    out.push('"');
    let mut clean = 0;
    for (i, b) in t.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&t[clean..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        clean = i + 1;
    }
    out.push_str(&t[clean..]);
    out.push('"');
}

/// Lowercase hex, as PostgreSQL prints `bytea`.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A value as the engine shows it in JSON (`sqlite-ext/src/json.rs`, `value_json`): conflicts'
/// siblings and quarantine keys read the same on both stores.
pub fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(n) => (*n).into(),
        Value::Real(f) => (*f).into(),
        Value::Text(t) => t.as_str().into(),
        Value::Blob(b) => serde_json::json!({ "blob": hex(b) }),
    }
}

/// A key as the engine shows it (`json.rs`, `key_json`): one column bare, else an array.
pub fn shown_key(key: &[Value]) -> String {
    match key {
        [one] => value_json(one).to_string(),
        many => serde_json::Value::Array(many.iter().map(value_json).collect()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_as_jsonb_build_array_prints_it() {
        let key = [Value::Text("p\"1".into()), Value::Integer(-7)];
        assert_eq!(key_json(&key, &[Kind::Text, Kind::Int]), r#"["p\"1", -7]"#);
        assert_eq!(
            key_json(&[Value::Blob(vec![1, 0xab])], &[Kind::Bytes]),
            r#"["\\x01ab"]"#
        );
    }

    #[test]
    fn a_text_key_is_escaped_as_serde_json_escapes_it() {
        let mut every: String = (0u8..0x80).map(char::from).collect();
        every.push_str("é\u{2028}日本\u{10ffff}");
        for t in [every.as_str(), "", "plain", "\"\\", "a\u{1}b\u{1f}"] {
            let mut ours = String::new();
            push_json_str(&mut ours, t);
            assert_eq!(ours, serde_json::Value::from(t).to_string(), "{t:?}");
        }
    }

    #[test]
    fn values_that_do_not_fit_are_named_not_coerced() {
        assert_eq!(fits(Kind::Int, &Value::Integer(3), "n"), None);
        assert_eq!(fits(Kind::Real, &Value::Integer(3), "w"), None);
        let why = fits(Kind::Int, &Value::Text("3".into()), "n").unwrap();
        assert!(why.contains("\"n\"") && why.contains("bigint"), "{why}");
        assert!(fits(Kind::Text, &Value::Text("a\0b".into()), "t")
            .unwrap()
            .contains("NUL"));
    }
}
