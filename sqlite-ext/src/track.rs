//! `outpost_track` and `outpost_untrack`.

use crate::error::Error;
use crate::functions::{Arg, Call};
use crate::schema::{self, quote, ColumnDef, Direction, ScopeRule, TableDef, Tracked};
use outpost_protocol::batch::{decl_type, names};
use outpost_protocol::{Strategy, Value};
use std::collections::BTreeMap;

/// At most this many value columns: an UPDATE's changed-column mask is one 64-bit integer.
pub(crate) const MAX_COLUMNS: usize = 62;

struct Options {
    direction: Direction,
    row_lww: bool,
    columns: BTreeMap<String, Strategy>,
    allow_integer_pk: bool,
    scope: Option<ScopeRule>,
}

fn parse_options(call: &Call, arg: Option<&Arg>) -> Result<Options, Error> {
    let mut o = Options {
        direction: Direction::Both,
        row_lww: false,
        columns: BTreeMap::new(),
        allow_integer_pk: false,
        scope: None,
    };
    let text = match arg {
        None | Some(Arg::Null) => return Ok(o),
        Some(Arg::Text(t)) => t,
        Some(_) => return Err(call.arg_error("options must be JSON text")),
    };
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|source| Error::OptionsJson {
            function: call.name,
            source,
        })?;
    let obj = json
        .as_object()
        .ok_or_else(|| call.arg_error("options must be a JSON object"))?;
    for (k, v) in obj {
        match k.as_str() {
            "strategy" => match v.as_str() {
                Some("lww") => o.row_lww = false,
                Some("row_lww") => o.row_lww = true,
                _ => return Err(call.arg_error("\"strategy\" is \"lww\" or \"row_lww\"")),
            },
            "direction" => {
                o.direction = match v.as_str() {
                    Some("both") => Direction::Both,
                    Some("up") => Direction::Up,
                    Some("down") => Direction::Down,
                    _ => {
                        return Err(call.arg_error("\"direction\" is \"both\", \"up\" or \"down\""))
                    }
                }
            }
            "allow_integer_pk" => {
                o.allow_integer_pk = v
                    .as_bool()
                    .ok_or_else(|| call.arg_error("\"allow_integer_pk\" is true or false"))?
            }
            "columns" => {
                let cols = v
                    .as_object()
                    .ok_or_else(|| call.arg_error("\"columns\" maps column names to strategies"))?;
                for (c, s) in cols {
                    let s = s.as_str().and_then(Strategy::from_name).ok_or_else(|| {
                        call.arg_error(format!(
                            "column {c}: strategy is one of lww, row_lww, counter, review"
                        ))
                    })?;
                    o.columns.insert(c.clone(), s);
                }
            }
            "scope" => o.scope = Some(crate::scope_rule::parse(call, v)?),
            other => return Err(call.arg_error(format!("unknown option \"{other}\""))),
        }
    }
    Ok(o)
}

/// `outpost_track(table [, options])`.
pub(crate) fn sql_track(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let Arg::Text(table) = args[0] else {
        return Err(call.arg_error("the first argument is a table name"));
    };
    let opts = parse_options(call, args.get(1))?;
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_track"));
    }
    schema::ensure(call.conn)?;
    call.conn.exec("SAVEPOINT outpost_track")?;
    let r = track(call, table, opts);
    schema::finish_savepoint(call.conn, "outpost_track", r).map(|_| Value::Integer(1))
}

fn track(call: &Call, table: &str, opts: Options) -> Result<(), Error> {
    let conn = call.conn;
    // The same rules as the cloud's schema step (issue 16): a table no replica may create or
    // track is refused here too, so a device never syncs a table the cloud refuses.
    if names::is_reserved(table) {
        return Err(Error::Track(format!(
            "outpost_track: table name \"{table}\" is reserved (outpost_*, _outpost*, _cloud*, sqlite_*, in any case): rename the table"
        )));
    }
    let canonical = conn.query_i64(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        &[Value::Text(table.into())],
    )?;
    if canonical.is_none() || table.starts_with("_outpost") || table.starts_with("sqlite_") {
        return Err(Error::Track(format!(
            "outpost_track: no table named \"{table}\" (names are case-sensitive)"
        )));
    }
    let info = schema::table_info(conn, table)?;
    for c in &info {
        if names::is_reserved(&c.name) {
            return Err(Error::Track(format!(
                "outpost_track: column name \"{table}\".\"{}\" is reserved (outpost_*, _outpost*, _cloud*, sqlite_*, in any case): rename the column",
                c.name
            )));
        }
        if decl_type::reduce(&c.decl_type).is_none() {
            return Err(Error::Track(format!(
                "outpost_track: column \"{table}\".\"{}\" has declared type \"{}\", which the cloud does not accept; use one of INTEGER, INT, TEXT, VARCHAR(n), CHAR(n), CLOB, BLOB, REAL, DOUBLE, FLOAT, NUMERIC, DECIMAL(p,s), BOOLEAN, DATE, DATETIME, TIMESTAMP, TIME (docs/sql-api.md)",
                c.name, c.decl_type
            )));
        }
    }
    let mut pk: Vec<_> = info.iter().filter(|c| c.pk > 0).collect();
    pk.sort_by_key(|c| c.pk);
    if pk.is_empty() {
        return Err(Error::Track(format!(
            "outpost_track: table \"{table}\" has no declared PRIMARY KEY; sync needs a key that is the same on every device (e.g. a UUID text column)"
        )));
    }
    let without_rowid = conn
        .query_i64(
            "SELECT 1 FROM sqlite_master WHERE name = ?1 AND sql LIKE '%WITHOUT%ROWID%'",
            &[Value::Text(table.into())],
        )?
        .is_some();
    if pk.len() == 1
        && pk[0].decl_type.eq_ignore_ascii_case("INTEGER")
        && !without_rowid
        && !opts.allow_integer_pk
    {
        return Err(Error::Track(format!(
            "outpost_track: \"{table}\".\"{}\" is an INTEGER PRIMARY KEY (the rowid): two devices will pick the same numbers for different rows. Use a UUID text key, or pass '{{\"allow_integer_pk\": true}}' if keys are assigned globally",
            pk[0].name
        )));
    }
    let value_cols: Vec<_> = info.iter().filter(|c| c.pk == 0).collect();
    if value_cols.len() > MAX_COLUMNS {
        return Err(Error::Track(format!("outpost_track: \"{table}\" has {} non-key columns; at most {MAX_COLUMNS} are supported", value_cols.len())));
    }
    for name in opts.columns.keys() {
        if !value_cols.iter().any(|c| &c.name == name) {
            return Err(Error::Track(format!(
                "outpost_track: \"{table}\" has no non-key column \"{name}\""
            )));
        }
    }
    let tracked = schema::load_tracked(conn)?;
    let existing = tracked.iter().find(|t| t.def.name == table).cloned();
    let default = if opts.row_lww {
        Strategy::RowLww
    } else {
        Strategy::Lww
    };
    let columns: Vec<ColumnDef> = value_cols
        .iter()
        .map(|c| ColumnDef {
            name: c.name.clone(),
            strategy: opts.columns.get(&c.name).copied().unwrap_or(default),
        })
        .collect();
    let def = TableDef {
        name: table.to_string(),
        direction: opts.direction,
        row_lww: opts.row_lww,
        pk: pk.iter().map(|c| c.name.clone()).collect(),
        columns,
        column_options: opts.columns,
        scope: opts.scope,
    };
    crate::scope_rule::check(conn, &def, existing.as_ref(), &info, &tracked)?;
    if let Some(t) = &existing {
        if t.def == def {
            // Idempotent; but a `down` table tracked by a version that let the app write it
            // has no refusal triggers yet: tracking it again adds them.
            if def.direction == Direction::Down && !crate::triggers::refuses_writes(conn, t)? {
                crate::triggers::create_triggers(conn, t)?;
                crate::fold::remember_schema(conn)?;
            }
            return Ok(());
        }
    }
    let id = schema::save_def(conn, &def)?;
    let t = Tracked { id, def };
    crate::triggers::create_triggers(conn, &t)?;
    if existing.is_none() && t.def.direction != Direction::Down {
        // Rows that were there before tracking are local writes not yet sent.
        let all: Vec<String> = t
            .def
            .columns
            .iter()
            .filter(|c| c.strategy == Strategy::Counter)
            .map(|c| format!("coalesce({}, 0)", quote(&c.name)))
            .collect();
        let vals = if all.is_empty() {
            "NULL".into()
        } else {
            format!("outpost_pack({})", all.join(", "))
        };
        let key: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
        conn.exec(&format!(
            "INSERT INTO _outpost_log(tbl, key, op, hlc, mask, vals) SELECT {id}, outpost_pack({}), {}, outpost_tick(), -1, {vals} FROM {}",
            key.join(", "),
            crate::triggers::OP_INSERT,
            quote(table)
        ))?;
    }
    crate::fold::remember_schema(conn)
}

/// `outpost_untrack(table)`.
pub(crate) fn sql_untrack(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let Arg::Text(table) = args[0] else {
        return Err(call.arg_error("the argument is a table name"));
    };
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_untrack"));
    }
    schema::ensure(call.conn)?;
    let conn = call.conn;
    conn.exec("SAVEPOINT outpost_untrack")?;
    let r = (|| {
        let Some(t) = schema::load_tracked(conn)?
            .into_iter()
            .find(|t| t.def.name == table)
        else {
            return Err(Error::Track(format!(
                "outpost_untrack: \"{table}\" is not tracked"
            )));
        };
        crate::scope_rule::check_untrack(conn, &t)?;
        crate::triggers::drop_triggers(conn, &t)?;
        for sql in [
            "DELETE FROM _outpost_log WHERE tbl = ?1 AND op != 0",
            "DELETE FROM _outpost_rows WHERE tbl = ?1",
            "DELETE FROM _outpost_cells WHERE tbl = ?1",
            "DELETE FROM _outpost_tombstones WHERE tbl = ?1",
            "DELETE FROM _outpost_evicted WHERE tbl = ?1",
            "DELETE FROM _outpost_conflict_rows WHERE tbl_id = ?1",
            "DELETE FROM _outpost_tables WHERE id = ?1",
        ] {
            let mut s = conn.prepare(sql)?;
            s.bind_i64(1, t.id)?;
            s.run()?;
        }
        crate::fold::remember_schema(conn)
    })();
    schema::finish_savepoint(conn, "outpost_untrack", r).map(|_| Value::Integer(1))
}
