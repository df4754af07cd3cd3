//! The PostgreSQL side of [`crate::Connection`]: statements rewritten by [`crate::dialect`] and
//! prepared once per session, parameters bound to whatever type PostgreSQL inferred for them,
//! rows read by their columns' types into the five [`Value`] kinds.

use crate::connection::TransactionBehavior;
use crate::dialect::to_postgres;
use crate::error::{Error, Result};
use crate::value::{Param, Row, Value};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, Statement};
use std::collections::HashMap;

/// A session of one store: its schema and its prepared statements.
pub(crate) struct PgConn {
    client: Client,
    prepared: HashMap<String, Statement>,
    /// The advisory lock a write transaction takes: the store's one writer.
    lock: i64,
    /// A transaction is open (tracked from the statements this session ran).
    in_tx: bool,
    /// The last number [`PgConn::next_version`] gave.
    version: i64,
    /// A savepoint opened with no transaction open: SQLite starts one for it, which its
    /// `RELEASE` commits; here it is a transaction of its own (the store's writer).
    outer_savepoint: Option<String>,
}

/// A stable 63-bit number for `schema` (FNV-1a): every process names the same lock.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// `schema` as a quoted identifier.
fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

impl PgConn {
    pub(crate) fn new(mut client: Client, schema: &str) -> Result<PgConn> {
        let q = quoted(schema);
        client.batch_execute(&format!(
            "SET client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS {q}; \
             SET search_path TO {q}; SET synchronous_commit = on"
        ))?;
        Ok(PgConn {
            client,
            prepared: HashMap::new(),
            lock: lock_key(schema),
            in_tx: false,
            version: 0,
            outer_savepoint: None,
        })
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&to_postgres(sql))?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub(crate) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        let st = self.statement(sql)?;
        let binds: Vec<Bind<'_>> = params.iter().map(|p| Bind(*p)).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as _).collect();
        Ok(self.client.execute(&st, &refs)? as usize)
    }

    /// Runs `sql`. SQLite's transaction statements become PostgreSQL's: `BEGIN IMMEDIATE` (the
    /// stores' write transaction) takes the store's lock, and a `SAVEPOINT` with no transaction
    /// open starts one (as SQLite does), which its `RELEASE` commits.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        let translated = to_postgres(sql);
        let mut out = String::with_capacity(translated.len() + 64);
        for statement in translated.split(';') {
            let words: Vec<&str> = statement.split_whitespace().collect();
            let upper: Vec<String> = words
                .iter()
                .take(3)
                .map(|w| w.to_ascii_uppercase())
                .collect();
            let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
            let name = |i: usize| words.get(i).copied().unwrap_or("").to_string();
            match upper.as_slice() {
                ["BEGIN", "IMMEDIATE", ..] => {
                    out.push_str(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({});",
                        self.lock
                    ));
                    self.in_tx = true;
                }
                ["SAVEPOINT", ..] if !self.in_tx => {
                    out.push_str(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({}); {statement};",
                        self.lock
                    ));
                    self.in_tx = true;
                    self.outer_savepoint = Some(name(1));
                }
                ["RELEASE", ..]
                    if self.outer_savepoint.as_deref()
                        == Some(words.last().copied().unwrap_or("")) =>
                {
                    out.push_str("COMMIT;");
                    self.in_tx = false;
                    self.outer_savepoint = None;
                }
                ["BEGIN", ..] | ["START", ..] => {
                    out.push_str(statement);
                    out.push(';');
                    self.in_tx = true;
                }
                ["COMMIT", ..] | ["END", ..] => {
                    out.push_str(statement);
                    out.push(';');
                    self.in_tx = false;
                    self.outer_savepoint = None;
                }
                ["ROLLBACK"] => {
                    out.push_str(statement);
                    out.push(';');
                    self.in_tx = false;
                    self.outer_savepoint = None;
                }
                [] => {}
                _ => {
                    out.push_str(statement);
                    out.push(';');
                }
            }
        }
        // A failed statement leaves PostgreSQL's transaction aborted but open, until the
        // ROLLBACK the stores' error paths (and a dropped Transaction) send: tracked as written.
        Ok(self.client.batch_execute(&out)?)
    }

    /// A new number on each call (see `Connection::data_version`).
    pub(crate) fn next_version(&mut self) -> i64 {
        self.version += 1;
        self.version
    }

    /// Whether a transaction is open.
    pub(crate) fn in_transaction(&self) -> bool {
        self.in_tx
    }

    pub(crate) fn each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(&Row) -> Result<bool>,
    ) -> Result<()> {
        let st = self.statement(sql)?;
        let binds: Vec<Bind<'_>> = params.iter().map(|p| Bind(*p)).collect();
        let mut rows = self.client.query_raw(&st, binds.iter())?;
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(r.len());
            for (i, c) in r.columns().iter().enumerate() {
                values.push(read(&r, i, c.type_())?);
            }
            if !f(&Row { values })? {
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn begin(&mut self, behavior: TransactionBehavior) -> Result<()> {
        self.in_tx = true;
        Ok(self.client.batch_execute(&match behavior {
            TransactionBehavior::Deferred => "BEGIN ISOLATION LEVEL REPEATABLE READ".to_string(),
            TransactionBehavior::Immediate => {
                format!("BEGIN; SELECT pg_advisory_xact_lock({})", self.lock)
            }
        })?)
    }
}

/// Column `i` of `r`, of PostgreSQL type `ty`, as a [`Value`].
fn read(r: &postgres::Row, i: usize, ty: &Type) -> Result<Value> {
    let v = match *ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::OID => r
            .try_get::<_, Option<u32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::FLOAT4 => r
            .try_get::<_, Option<f32>>(i)?
            .map(|v| Value::Real(v.into())),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        // `sum` of bigints is numeric in PostgreSQL; the stores' sums are whole numbers.
        Type::NUMERIC => r.try_get::<_, Option<Numeric>>(i)?.map(|n| Value::Int(n.0)),
        _ => {
            return Err(Error::UnsupportedType {
                name: ty.name().to_string(),
            })
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

/// A whole NUMERIC that fits an i64, from its binary form: digit count, weight (of the first
/// base-10000 digit), sign, display scale, then the base-10000 digits.
struct Numeric(i64);

impl<'a> postgres::types::FromSql<'a> for Numeric {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word =
            |i: usize| -> std::result::Result<i16, Box<dyn std::error::Error + Sync + Send>> {
                raw.get(i * 2..i * 2 + 2)
                    .map(|b| i16::from_be_bytes([b[0], b[1]]))
                    .ok_or_else(|| "a truncated numeric".into())
            };
        let (ndigits, weight, sign) = (word(0)?, word(1)?, word(2)? as u16);
        if sign == 0xC000 {
            return Err("NaN where a whole number was expected".into());
        }
        let mut v: i64 = 0;
        for d in 0..ndigits.max(0) as usize {
            let digit = i64::from(word(4 + d)?);
            // Digits past the weight are fractional: a whole sum has none that are not 0.
            if (d as i64) > i64::from(weight) {
                if digit != 0 {
                    return Err("a fraction where a whole number was expected".into());
                }
                continue;
            }
            v = v
                .checked_mul(10_000)
                .and_then(|v| v.checked_add(digit))
                .ok_or("a numeric beyond 64 bits")?;
        }
        for _ in ndigits.max(0)..=weight {
            v = v.checked_mul(10_000).ok_or("a numeric beyond 64 bits")?;
        }
        Ok(Numeric(if sign == 0x4000 { -v } else { v }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A parameter bound as the type PostgreSQL inferred for its place.
#[derive(Debug)]
struct Bind<'a>(Param<'a>);

impl ToSql for Bind<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Param::Real(r) => r.to_sql(ty, out),
            Param::Text(t) => t.to_sql(ty, out),
            Param::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Every kind is converted for the type asked, or refused by the conversion itself.
        true
    }

    to_sql_checked!();
}
