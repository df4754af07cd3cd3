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
//! **How.** Both ways keep the write tax of W1 and W2 (docs/performance.md, "Strict tables"):
//! - **Inserts**: the capture trigger (`triggers.rs`, AFTER INSERT) has
//!   `outpost_strict_check(table, first column, type letters, values...)` as its WHEN, one call
//!   per row with every value, instead of `outpost_capturing()`: it is false while a peer's
//!   changes apply, true when the row fits, and an error naming the first column that does not
//!   fit otherwise. An INSERT into a tracked table keeps a statement journal whatever it calls
//!   (its capture calls functions, its declared key is a UNIQUE check), so the refusal undoes
//!   the statement, its row included, and the function costs no journal.
//! - **Updates**: a BEFORE UPDATE OF trigger per column, whose WHEN finds a misfit with
//!   comparisons, `CAST`, `||` and `COLLATE` only ([`Takes::fits_sql`]) and whose body reads
//!   `outpost_strict_refusal` (`strict_refusal.rs`), which fails with the refusal. A trigger
//!   that may call any SQL function would make SQLite keep a statement journal for every UPDATE
//!   of its table, the cost `outpost_clock` was made to avoid (`clock_table.rs`); without one, a
//!   multi-row UPDATE refused at a later row keeps the rows before it inside an explicit
//!   transaction, as `UPDATE OR FAIL` would (docs/sql-api.md, `outpost_strict_check`).
//!
//! Triggers of the first version called `outpost_strict_refuse` from both; [`follow`] remakes
//! them, and the function stays for a database that has them until then.

use crate::error::{Error, StrictWriteError};
use crate::ffi::{Conn, ValueView};
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
    if is_strict(conn)? && !calls_a_function(conn)? {
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

/// Whether strict triggers of an earlier version are here: they called `outpost_strict_refuse`,
/// which kept a statement journal for every UPDATE of their table; [`follow`] remakes them.
fn calls_a_function(conn: Conn) -> Result<bool, Error> {
    Ok(conn
        .query_i64(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' \
             AND instr(sql, 'outpost_strict_refuse(') > 0",
            &[],
        )?
        .unwrap_or(0)
        > 0)
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

    /// SQL that is false when `x` (a `NEW.` column of this type, its affinity applied) does
    /// not fit, true or NULL when it does (NULL for a NULL value, so that `NOT` of it is not
    /// true either), calling no function: comparisons, `CAST`, `||` and `COLLATE` only, so that
    /// an UPDATE's trigger needs no statement journal (`strict_refusal.rs`). Each term is
    /// proven against `typeof` and `instr` for every SQLite type in `tests/strict.rs`; why each
    /// holds:
    /// - SQLite orders NULL < numbers < text < blobs whatever the values, and compares an
    ///   integer with a real by value;
    /// - `bigint`: a real equals its `CAST AS INTEGER` only when it is a whole number in range,
    ///   which the column's INTEGER affinity has already made an integer, but for -2^63 (SQLite
    ///   keeps that one a real): the integer -2^63 reads `'-9223372036854775808'` as text, the
    ///   real `'-9.22337203685478e+18'`. Text the affinity left is not a number, and a blob
    ///   never equals one;
    /// - `text`: the column's TEXT affinity made numbers text, so only blobs sort at or above
    ///   `x''`; NOCASE compares bytes up to the first NUL only, then the lengths, so `x || 'x'`
    ///   and `x || 'y'` are equal under it exactly when `x` holds a NUL;
    /// - `double precision`, `numeric`: numbers sort below the empty text; `bytea`: blobs sort
    ///   at or above the empty blob.
    fn fits_sql(self, x: &str) -> String {
        match self {
            Takes::Bigint => format!(
                "({x} = CAST({x} AS INTEGER) AND ({x} > -9223372036854775808 \
                 OR {x} || '' = '-9223372036854775808'))"
            ),
            Takes::Double | Takes::Numeric => format!("({x} < '')"),
            Takes::Text => {
                format!("({x} < x'' AND ({x} || 'x') <> ({x} || 'y') COLLATE NOCASE)")
            }
            Takes::Bytea => format!("({x} >= x'')"),
        }
    }

    /// One letter for the type, as `outpost_strict_check` reads it.
    fn letter(self) -> char {
        match self {
            Takes::Bigint => 'i',
            Takes::Double => 'd',
            Takes::Numeric => 'n',
            Takes::Text => 't',
            Takes::Bytea => 'b',
        }
    }

    fn of_letter(c: u8) -> Option<Takes> {
        Some(match c {
            b'i' => Takes::Bigint,
            b'd' => Takes::Double,
            b'n' => Takes::Numeric,
            b't' => Takes::Text,
            b'b' => Takes::Bytea,
            _ => return None,
        })
    }

    /// Whether `value` fits ([`Takes::misfit`] finds none), read as a view.
    fn takes_view(self, value: &ValueView) -> bool {
        match (self, value) {
            (_, ValueView::Null) => true,
            (Takes::Bigint, ValueView::Integer(_)) => true,
            (Takes::Double | Takes::Numeric, ValueView::Integer(_) | ValueView::Real(_)) => true,
            (Takes::Text, ValueView::Text(t)) => !t.contains(&0),
            (Takes::Bytea, ValueView::Blob(_)) => true,
            _ => false,
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

/// Columns per `outpost_strict_check` call: SQLite's default limit of function arguments is
/// 127, and the call takes three before the values.
const CHECKED_PER_CALL: usize = 120;

/// For the AFTER INSERT trigger of `t` in a strict tenant (`triggers.rs`), the SQL checking the
/// new row: `outpost_strict_check(table, first column, type letters, values...)`, one call per
/// 120 columns, joined by AND; true while this connection captures and the row fits, false
/// while a peer's changes apply, and an error naming the first column that does not fit
/// otherwise. `None` in a tenant that is not strict.
///
/// An INSERT into a tracked table has a statement journal whatever its checks call (the log
/// trigger calls functions, and a declared key is a UNIQUE check), so the function costs no
/// journal, and the refusal undoes the statement (its row too) as a BEFORE trigger's would.
/// One call per row with every value is cheaper than testing each value in SQL (W1 in
/// docs/performance.md).
pub(crate) fn insert_check(conn: Conn, t: &Tracked) -> Result<Option<String>, Error> {
    if !is_strict(conn)? {
        return Ok(None);
    }
    let columns = schema::table_info(conn, &t.def.name)?;
    let calls: Vec<String> = columns
        .chunks(CHECKED_PER_CALL)
        .enumerate()
        .map(|(i, chunk)| {
            let letters: String = chunk
                .iter()
                .map(|c| Takes::of(&c.decl_type).letter())
                .collect();
            let values: Vec<String> = chunk
                .iter()
                .map(|c| format!("NEW.{}", quote(&c.name)))
                .collect();
            format!(
                "outpost_strict_check({}, {}, '{letters}', {})",
                literal(&t.def.name),
                i * CHECKED_PER_CALL,
                values.join(", ")
            )
        })
        .collect();
    Ok(Some(calls.join(" AND ")))
}

/// The strict checks of `t`'s updates (see the module documentation): SQL creating a BEFORE
/// UPDATE OF trigger per column (its key too), whose WHEN finds a misfit without calling a
/// function ([`Takes::fits_sql`]) and whose body then reads `outpost_strict_refusal`
/// (`strict_refusal.rs`) with the column and its value, which fails with the refusal.
pub(crate) fn update_triggers(conn: Conn, t: &Tracked) -> Result<String, Error> {
    let tbl = quote(&t.def.name);
    let mut sql = String::new();
    for (i, c) in schema::table_info(conn, &t.def.name)?.iter().enumerate() {
        let col = quote(&c.name);
        let new = format!("NEW.{col}");
        // The type test first: it is false for almost every write, and then the comparison
        // with the old value is not made.
        sql.push_str(&format!(
            "CREATE TRIGGER {upd} BEFORE UPDATE OF {col} ON {tbl}
               WHEN NOT {fits} AND {new} IS NOT OLD.{col} BEGIN
               SELECT 1 FROM outpost_strict_refusal({table}, {column}, {declared}, {new}); END;",
            upd = quote(&format!("_outpost_{}_strict_upd_{i}", t.def.name)),
            fits = Takes::of(&c.decl_type).fits_sql(&new),
            table = literal(&t.def.name),
            column = literal(&c.name),
            declared = literal(&c.decl_type),
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

/// Why the app may not write `value` into `table.column` (declared `declared`) in a strict
/// tenant, or `None` when it fits.
pub(crate) fn refusal(
    table: &str,
    column: &str,
    declared: &str,
    value: &Arg,
) -> Option<StrictWriteError> {
    let takes = Takes::of(declared);
    let (table, column) = (table.to_string(), column.to_string());
    Some(match takes.misfit(value)? {
        Misfit::Nul => StrictWriteError::Nul { table, column },
        Misfit::Type => StrictWriteError::Type {
            table,
            column,
            declared: if declared.is_empty() {
                "blobs (no declared type)".into()
            } else {
                declared.to_string()
            },
            postgres: takes.postgres(),
            found: shown(value),
        },
    })
}

/// `outpost_strict_refuse(table, column, declared type, value)`: the error of [`refusal`], as a
/// function; 0 while this connection applies a peer's changes, and for a value that fits. Only
/// the strict triggers of an earlier version call it ([`follow`] remakes them), so that a
/// database they are in keeps working until then.
pub(crate) fn sql_strict_refuse(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    if !call.session.capturing() {
        return Ok(Value::Integer(0));
    }
    let (Arg::Text(table), Arg::Text(column), Arg::Text(declared)) = (&args[0], &args[1], &args[2])
    else {
        return Err(call.arg_error("takes the table, column and declared type as text"));
    };
    match refusal(table, column, declared, &args[3]) {
        None => Ok(Value::Integer(0)),
        Some(e) => Err(Error::StrictWrite(Box::new(e))),
    }
}

/// `outpost_strict_check(table, first column, type letters, values...)`: 0 while this
/// connection applies a peer's changes; otherwise 1 when every value fits the type its letter
/// names (`Takes::letter`), or the refusal of the first that does not, naming the column the
/// value's position stands for in `table` (from `first`, counted from 0). It reads the values'
/// types and bytes only ([`ValueView`]): it runs on every insert.
pub(crate) fn sql_strict_check(call: &Call, args: &[ValueView]) -> Result<Value, Error> {
    if !call.session.capturing() {
        return Ok(Value::Integer(0));
    }
    let (ValueView::Text(table), ValueView::Integer(first), ValueView::Text(letters)) =
        (args[0], args[1], args[2])
    else {
        return Err(
            call.arg_error("takes the table, the first column's position and the type letters")
        );
    };
    let values = &args[3..];
    if letters.len() != values.len() {
        return Err(call.arg_error(format!(
            "{} type letters for {} values",
            letters.len(),
            values.len()
        )));
    }
    for (i, (&letter, value)) in letters.iter().zip(values).enumerate() {
        let takes = Takes::of_letter(letter)
            .ok_or_else(|| call.arg_error(format!("unknown type letter {:?}", letter as char)))?;
        if takes.takes_view(value) {
            continue;
        }
        // The refusal names the column and its declared type: read them only now.
        let table = String::from_utf8_lossy(table);
        let at = usize::try_from(first)
            .unwrap_or(usize::MAX)
            .saturating_add(i);
        let columns = schema::table_info(call.conn, &table)?;
        let Some(c) = columns.get(at) else {
            return Err(call.arg_error(format!("{table} has no column {at}")));
        };
        let mut lossy = String::new();
        if let Some(e) = refusal(&table, &c.name, &c.decl_type, &value.arg(&mut lossy)) {
            return Err(Error::StrictWrite(Box::new(e)));
        }
    }
    Ok(Value::Integer(1))
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
