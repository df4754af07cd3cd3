//! Strict tracked tables (docs/design.md section 11, "Values must fit PostgreSQL's types"): on a
//! device of a tenant whose cloud keeps its tables in PostgreSQL, a value that does not fit its
//! column's declared type, or text holding NUL, is refused at write time, naming the table and
//! the column, so the cloud never has to quarantine what devices keep.
//!
//! **When.** The cloud says so once in its control stream ([`ControlItem::Strict`]); [`follow`]
//! records it in `_outpost_meta` (`strict` = 1) when the directory first says it (at enrolment,
//! at any sync) and gives every tracked table its checks then; `triggers.rs` adds them to every
//! table it (re)creates triggers for from then on (`outpost_track`, a column added). A tenant
//! never stops being strict. Rows already there are left as they are: an UPDATE that leaves a
//! column's value unchanged is not checked.
//!
//! **What fits** (the PostgreSQL tenant's types, `cloud/src/postgres/app_tables.rs`, from the
//! declared type reduced by `outpost_protocol::batch::decl_type`): INTEGER/INT → `bigint` takes
//! integers; REAL → `double precision` and NUMERIC (also BOOLEAN, DATE, DATETIME, ...) →
//! `numeric` take integers and reals; TEXT → `text` takes text without NUL; BLOB and no declared
//! type → `bytea` take blobs. NULL always fits (NOT NULL is SQLite's own check). The values are
//! judged after the column's affinity converted them (`'42'` into an INTEGER column is 42).
//!
//! **How.** A BEFORE INSERT trigger, and a BEFORE UPDATE OF each column, whose WHEN tests the
//! values with SQLite's own `typeof` and `instr` (no call into the extension for a value that
//! fits); only a value that does not fit reaches `outpost_strict_refuse`, whose error names the
//! table, column, type and value and aborts the statement before the row is written. Writes a
//! peer's changes make are never refused: the function lets them pass while the connection
//! applies (and the apply usually switches the triggers off altogether).

use crate::error::{Error, StrictWriteError};
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use crate::schema::{self, quote, Tracked};
use outpost_protocol::batch::decl_type::{self, DeclType};
use outpost_protocol::control::Directory;
use outpost_protocol::Value;

/// The `_outpost_meta` key recording that the tenant is strict.
const META_KEY: &str = "strict";

/// Whether this database's tenant made its tables strict (a directory said so).
pub(crate) fn is_strict(conn: Conn) -> Result<bool, Error> {
    Ok(schema::meta_get(conn, META_KEY)? == Some(1))
}

/// Records that `directory` makes the tenant strict, the first time it does, and gives every
/// tracked table its checks. Returns whether it changed anything.
pub(crate) fn follow(conn: Conn, directory: &Directory) -> Result<bool, Error> {
    if !directory.is_strict() {
        return Ok(false);
    }
    schema::ensure(conn)?;
    if is_strict(conn)? {
        return Ok(false);
    }
    // The schema version fold last saw: remembered again after the triggers below only if it
    // was current, so a column the app added meanwhile is still noticed by fold.
    let current = conn.query_i64("PRAGMA schema_version", &[])?;
    let seen = schema::meta_get(conn, "schema_version")? == current;
    schema::meta_set(conn, META_KEY, 1)?;
    for t in schema::load_tracked(conn)? {
        crate::triggers::create_triggers(conn, &t)?;
    }
    if seen {
        crate::fold::remember_schema(conn)?;
    }
    Ok(true)
}

/// What a column's declared type takes in PostgreSQL: the PostgreSQL tenant's mapping
/// (`cloud/src/postgres/app_tables.rs`, `pg_type`), which this crate cannot depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    /// `bigint`: integers.
    Bigint,
    /// `double precision`: integers and reals.
    Double,
    /// `numeric`: integers and reals.
    Numeric,
    /// `text`: text without NUL.
    Text,
    /// `bytea`: blobs.
    Bytea,
}

impl Takes {
    fn of(decl: &str) -> Takes {
        // Tracked columns' types were checked by `outpost_track`; anything else holds bytes.
        match decl_type::reduce(decl).unwrap_or(DeclType::None) {
            DeclType::Integer | DeclType::Int => Takes::Bigint,
            DeclType::Real => Takes::Double,
            DeclType::Numeric => Takes::Numeric,
            DeclType::Text => Takes::Text,
            DeclType::Blob | DeclType::None => Takes::Bytea,
        }
    }

    fn postgres(self) -> &'static str {
        match self {
            Takes::Bigint => "bigint",
            Takes::Double => "double precision",
            Takes::Numeric => "numeric",
            Takes::Text => "text",
            Takes::Bytea => "bytea",
        }
    }

    /// SQL that is true when `x` fits (no call into the extension: SQLite's own functions).
    fn fits_sql(self, x: &str) -> String {
        match self {
            Takes::Bigint => format!("typeof({x}) IN ('integer', 'null')"),
            Takes::Double | Takes::Numeric => {
                format!("typeof({x}) IN ('integer', 'real', 'null')")
            }
            Takes::Text => {
                format!("({x} IS NULL OR (typeof({x}) = 'text' AND instr({x}, char(0)) = 0))")
            }
            Takes::Bytea => format!("typeof({x}) IN ('blob', 'null')"),
        }
    }

    /// Why `value` does not fit, or `None` when it does.
    fn misfit(self, value: &Arg) -> Option<Misfit> {
        let fits = match (self, value) {
            (_, Arg::Null) => true,
            (Takes::Bigint, Arg::Integer(_)) => true,
            (Takes::Double | Takes::Numeric, Arg::Integer(_) | Arg::Real(_)) => true,
            (Takes::Text, Arg::Text(t)) => {
                if t.contains('\0') {
                    return Some(Misfit::Nul);
                }
                true
            }
            (Takes::Bytea, Arg::Blob(_)) => true,
            _ => false,
        };
        (!fits).then_some(Misfit::Type)
    }
}

enum Misfit {
    Type,
    Nul,
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The strict checks of `t` (see the module documentation): SQL creating a BEFORE INSERT
/// trigger and a BEFORE UPDATE OF trigger per column, every column of the table (its key too).
pub(crate) fn triggers(conn: Conn, t: &Tracked) -> Result<String, Error> {
    let tbl = quote(&t.def.name);
    let name = |what: &str| quote(&format!("_outpost_{}_strict_{what}", t.def.name));
    let columns = schema::table_info(conn, &t.def.name)?;
    let refuse = |c: &schema::ColumnInfo| {
        format!(
            "SELECT outpost_strict_refuse({}, {}, {}, NEW.{});",
            literal(&t.def.name),
            literal(&c.name),
            literal(&c.decl_type),
            quote(&c.name)
        )
    };
    let fits = |c: &schema::ColumnInfo| {
        Takes::of(&c.decl_type).fits_sql(&format!("NEW.{}", quote(&c.name)))
    };
    let all_fit: Vec<String> = columns.iter().map(fits).collect();
    let mut sql = format!(
        "CREATE TRIGGER {ins} BEFORE INSERT ON {tbl} WHEN NOT ({all_fit}) BEGIN {body} END;",
        ins = name("ins"),
        all_fit = all_fit.join(" AND "),
        body = columns
            .iter()
            .map(|c| format!("{} ", refuse(c).trim_end_matches(';'))
                + &format!("WHERE NOT {};", fits(c)))
            .collect::<String>(),
    );
    for (i, c) in columns.iter().enumerate() {
        let col = quote(&c.name);
        sql.push_str(&format!(
            "CREATE TRIGGER {upd} BEFORE UPDATE OF {col} ON {tbl}
               WHEN NEW.{col} IS NOT OLD.{col} AND NOT {fits} BEGIN {body} END;",
            upd = name(&format!("upd_{i}")),
            fits = fits(c),
            body = refuse(c),
        ));
    }
    Ok(sql)
}

/// How a refused value reads in the message.
fn shown(value: &Arg) -> String {
    match value {
        Arg::Null => "NULL".into(),
        Arg::Text(t) => format!("'{}'", t.chars().take(80).collect::<String>()),
        Arg::Integer(n) => format!("the integer {n}"),
        Arg::Real(r) => format!("the real {r}"),
        Arg::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// `outpost_strict_refuse(table, column, declared type, value)`: the error that aborts an app's
/// write of a value that does not fit its column (module documentation); 0 while this
/// connection applies a peer's changes, and for a value that fits.
pub(crate) fn sql_strict_refuse(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    if !call.session.capturing() {
        return Ok(Value::Integer(0));
    }
    let (Arg::Text(table), Arg::Text(column), Arg::Text(declared)) = (&args[0], &args[1], &args[2])
    else {
        return Err(call.arg_error("takes the table, column and declared type as text"));
    };
    let takes = Takes::of(declared);
    let (table, column) = (table.to_string(), column.to_string());
    let e = match takes.misfit(&args[3]) {
        None => return Ok(Value::Integer(0)),
        Some(Misfit::Nul) => StrictWriteError::Nul { table, column },
        Some(Misfit::Type) => StrictWriteError::Type {
            table,
            column,
            declared: if declared.is_empty() {
                "blobs (no declared type)".into()
            } else {
                declared.to_string()
            },
            postgres: takes.postgres(),
            found: shown(&args[3]),
        },
    };
    Err(Error::StrictWrite(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::{Misfit, Takes};
    use crate::functions::Arg;

    #[test]
    fn each_postgres_type_takes_only_its_sqlite_values() {
        let values = [
            Arg::Null,
            Arg::Integer(1),
            Arg::Real(1.5),
            Arg::Text("a"),
            Arg::Blob(&[1]),
        ];
        let fits = |decl: &str| -> Vec<bool> {
            values
                .iter()
                .map(|v| Takes::of(decl).misfit(v).is_none())
                .collect()
        };
        assert_eq!(fits("INTEGER"), [true, true, false, false, false]);
        assert_eq!(fits("bigint"), [true, true, false, false, false]);
        assert_eq!(fits("REAL"), [true, true, true, false, false]);
        assert_eq!(fits("BOOLEAN"), [true, true, true, false, false]);
        assert_eq!(fits("DATE"), [true, true, true, false, false]);
        assert_eq!(fits("VARCHAR(20)"), [true, false, false, true, false]);
        assert_eq!(fits("BLOB"), [true, false, false, false, true]);
        assert_eq!(fits(""), [true, false, false, false, true]);
        assert!(matches!(
            Takes::of("TEXT").misfit(&Arg::Text("a\0b")),
            Some(Misfit::Nul)
        ));
    }
}
