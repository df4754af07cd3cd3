//! The REST tables of a PostgreSQL tenant as the WatermelonDB API reads and writes them: the
//! captured tables whose primary key is one column `id` ([`super::rest_log::is_rest`]), each with
//! the columns the tenant syncs (its captured definition's, spelled as PostgreSQL has them) and
//! their real types; and their scope rules for `watermelon/row_scope.rs`.
//!
//! A column's [`ColumnKind`] says how its values travel as JSON: read with a cast to one of five
//! types (so a back office's `integer` or `varchar(20)` column reads like the cloud's own
//! `bigint` or `text`), and written (`rest_writes.rs`) after [`ColumnKind::bind`] checked the
//! value fits (a misfit is refused naming the column, never coerced), as `pg_value.rs` checks
//! devices' values.

use super::capture;
use super::rest_log::{self, RestLogError};
use crate::schema::quote;
use crate::watermelon::row_scope::ScopeSchema;
use crate::watermelon::RestError;
use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::GenericClient;
use bytes::BytesMut;
use outpost_protocol::batch::TableSchema;
use outpost_protocol::scope::ScopeRule;
use std::error::Error as StdError;

/// How a column's values are read and bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// `smallint`, `integer`, `bigint`: JSON integers.
    Int,
    /// `real`, `double precision`: JSON numbers.
    Real,
    /// `numeric`: JSON numbers, read as PostgreSQL prints them.
    Numeric,
    /// `text`, `varchar`, `char`: JSON strings.
    Text,
    /// `bytea`: lowercase hex strings (WatermelonDB has no binary type).
    Bytes,
    /// Any other type (`boolean`, `uuid`, `date`, ... in a table a back office made): read as
    /// its text, bound from text or a number with a cast to it (`format_type`'s spelling).
    Other(String),
}

/// A value as a push writes it, of one of the four types it travels as (`rest_writes.rs` casts
/// it to the column's type).
#[derive(Debug)]
pub enum Bound<'a> {
    /// SQL NULL.
    Null,
    /// A `bigint`.
    Int(i64),
    /// A `double precision`.
    Real(f64),
    /// Text (also a number for a `numeric` or other column, as PostgreSQL reads it).
    Text(std::borrow::Cow<'a, str>),
    /// A `bytea`.
    Bytes(Vec<u8>),
}

impl ToSql for Bound<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Bound::Null => Ok(IsNull::Yes),
            Bound::Int(i) => i.to_sql(ty, out),
            Bound::Real(r) => r.to_sql(ty, out),
            Bound::Text(t) => t.as_ref().to_sql(ty, out),
            Bound::Bytes(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::FLOAT8 | Type::TEXT | Type::BYTEA)
    }

    to_sql_checked!();
}

impl ColumnKind {
    /// The kind of a column of PostgreSQL type `typname` (`format_type` spells it `full`).
    pub fn of(typname: &str, full: &str) -> ColumnKind {
        match typname {
            "int2" | "int4" | "int8" => ColumnKind::Int,
            "float4" | "float8" => ColumnKind::Real,
            "numeric" => ColumnKind::Numeric,
            "text" | "varchar" | "bpchar" | "name" => ColumnKind::Text,
            "bytea" => ColumnKind::Bytes,
            _ => ColumnKind::Other(full.to_string()),
        }
    }

    /// The column `col` of the row `alias` as a pull reads it.
    pub fn read(&self, alias: &str, col: &str) -> String {
        let c = format!("{alias}.{}", quote(col));
        match self {
            ColumnKind::Int => format!("{c}::bigint"),
            ColumnKind::Real => format!("{c}::float8"),
            ColumnKind::Bytes => c,
            ColumnKind::Numeric | ColumnKind::Text | ColumnKind::Other(_) => format!("{c}::text"),
        }
    }

    /// The type's name, for a refusal.
    pub fn name(&self) -> &str {
        match self {
            ColumnKind::Int => "bigint",
            ColumnKind::Real => "double precision",
            ColumnKind::Numeric => "numeric",
            ColumnKind::Text => "text",
            ColumnKind::Bytes => "bytea",
            ColumnKind::Other(t) => t,
        }
    }

    /// `v` as bound into a column of this kind, or `None` when it does not fit.
    pub fn bind<'a>(&self, v: crate::watermelon::Scalar<'a>) -> Option<Bound<'a>> {
        use crate::watermelon::Scalar;
        Some(match (self, v) {
            (_, Scalar::Null) => Bound::Null,
            (ColumnKind::Int, Scalar::Integer(i)) => Bound::Int(i),
            (ColumnKind::Real, Scalar::Integer(i)) => Bound::Real(i as f64),
            (ColumnKind::Real, Scalar::Real(r)) => Bound::Real(r),
            (ColumnKind::Numeric | ColumnKind::Other(_), Scalar::Integer(i)) => {
                Bound::Text(i.to_string().into())
            }
            (ColumnKind::Numeric | ColumnKind::Other(_), Scalar::Real(r)) => {
                Bound::Text(r.to_string().into())
            }
            (ColumnKind::Text | ColumnKind::Other(_), Scalar::Text(t)) if !t.contains('\0') => {
                Bound::Text(t.into())
            }
            // What a pull serves a bytea as, back.
            (ColumnKind::Bytes, Scalar::Text(t)) => Bound::Bytes(unhex(t)?),
            _ => return None,
        })
    }
}

/// Lowercase or uppercase hex, decoded.
fn unhex(t: &str) -> Option<Vec<u8>> {
    if t.len() % 2 != 0 {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One column of a REST table.
#[derive(Clone, Debug)]
pub struct RestColumn {
    /// Its name as PostgreSQL spells it.
    pub name: String,
    /// How its values travel.
    pub kind: ColumnKind,
}

/// One REST table.
#[derive(Clone, Debug)]
pub struct RestTable {
    /// Its name as PostgreSQL spells it.
    pub name: String,
    /// Its `id` column.
    pub id: RestColumn,
    /// Its other synced columns, in the table's order.
    pub columns: Vec<RestColumn>,
}

/// The REST tables of the tenant, with the captured definitions their scope rules come from.
#[derive(Debug, Default)]
pub struct RestTables {
    /// The tables, by name.
    pub tables: Vec<RestTable>,
    defs: Vec<TableSchema>,
}

impl RestTables {
    /// Reads the captured tables and their columns' types (none before capture exists).
    pub fn load(client: &mut impl GenericClient) -> Result<RestTables, RestError> {
        let captured = capture::captured(client).map_err(RestLogError::from)?;
        let defs: Vec<TableSchema> = captured.into_iter().map(|c| c.def).collect();
        let mut tables = Vec::new();
        for def in defs.iter().filter(|d| rest_log::is_rest(d)) {
            let rows = client
                .query(
                    "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod) \
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                     ORDER BY a.attnum",
                    &[&rest_log::qualified(&def.name)],
                )
                .map_err(|source| RestError::Postgres {
                    doing: format!("reading the columns of table {:?}", def.name),
                    source,
                })?;
            let mut id = None;
            let mut columns = Vec::new();
            for r in rows {
                let name: String = r.get(0);
                if !def
                    .columns
                    .iter()
                    .any(|c| c.name.eq_ignore_ascii_case(&name))
                {
                    // A column the back office added: not synced, not served.
                    continue;
                }
                let column = RestColumn {
                    kind: ColumnKind::of(r.get(1), r.get(2)),
                    name,
                };
                if column.name == "id" {
                    id = Some(column);
                } else {
                    columns.push(column);
                }
            }
            if let Some(id) = id {
                tables.push(RestTable {
                    name: def.name.clone(),
                    id,
                    columns,
                });
            }
        }
        Ok(RestTables { tables, defs })
    }

    /// The table named `name`.
    pub fn get(&self, name: &str) -> Option<&RestTable> {
        self.tables.iter().find(|t| t.name == name)
    }
}

impl ScopeSchema for RestTables {
    fn rule(&self, table: &str) -> Option<ScopeRule> {
        self.defs
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(table))?
            .scope_rule()
    }

    fn via_parent(&self, table: &str, column: &str) -> Result<Option<(String, String)>, RestError> {
        let Some(def) = self
            .defs
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(table))
        else {
            return Ok(None);
        };
        Ok(rest_log::via_parent(&self.defs, def, column).map(|(p, key)| (p.name.clone(), key)))
    }

    fn relation(&self, table: &str) -> String {
        rest_log::qualified(table)
    }

    fn log_relation(&self) -> &'static str {
        "outpost.rest_log"
    }

    fn logged_as(&self, table: &str, column: &str, logged: &str) -> String {
        let declared = self
            .defs
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(table))
            .and_then(|d| d.columns.iter().find(|c| c.name == column));
        match declared {
            Some(c) => format!("CAST({logged} AS {})", super::app_tables::column_type(c)),
            None => logged.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watermelon::Scalar;

    #[test]
    fn values_bind_only_into_columns_they_fit() {
        assert!(matches!(
            ColumnKind::Int.bind(Scalar::Integer(3)),
            Some(Bound::Int(3))
        ));
        assert!(ColumnKind::Int.bind(Scalar::Real(3.5)).is_none());
        assert!(ColumnKind::Int.bind(Scalar::Text("3")).is_none());
        assert!(
            matches!(ColumnKind::Real.bind(Scalar::Integer(3)), Some(Bound::Real(r)) if r == 3.0)
        );
        assert!(ColumnKind::Text.bind(Scalar::Integer(3)).is_none());
        assert!(ColumnKind::Text.bind(Scalar::Text("a\0b")).is_none());
        assert!(matches!(
            ColumnKind::Bytes.bind(Scalar::Text("01aB")),
            Some(Bound::Bytes(b)) if b == [1, 0xab]
        ));
        assert!(ColumnKind::Bytes.bind(Scalar::Text("xyz")).is_none());
        assert!(matches!(
            ColumnKind::Other("boolean".into()).bind(Scalar::Integer(1)),
            Some(Bound::Text(t)) if t == "1"
        ));
        assert!(matches!(
            ColumnKind::Numeric.bind(Scalar::Null),
            Some(Bound::Null)
        ));
    }
}
