//! Declaring a table's scope: `outpost_track`'s `scope` option and the restrictions
//! docs/design.md section 10 ("Scopes") puts on it.
//!
//! `{"scope": "clinic_id"}`: a row's scope is the text value of that column, which must exist,
//! must not be part of the primary key (a referral changes the scope, never the key) and merges
//! `lww` (the last write decides where the row lives). `{"scope": {"via": "patient_id"}}`: a row
//! follows the scope of the parent row that single-column foreign key names, in a table already
//! tracked with a scope, so a referral moves a patient with its visits.
//!
//! Refused, each with a reason naming table and column, because streams divided by scope could
//! not keep them whole:
//! - a reference from a scoped table to another scoped table (itself included) other than
//!   through its `via` key: the parent could live in a scope the device does not hold;
//! - a UNIQUE constraint or unique index that does not include the scope column (for a `via`
//!   table, the via key): two scopes could each hold a row with the same value, and a device
//!   granted both could not hold both;
//! - a scope rule on a table whose own changes already left in a batch: they went out in the
//!   unscoped stream, and no stream could take them back;
//! - changing (or dropping) a table's scope rule once declared; the same rule again is fine;
//! - rows already in the table whose scope cell holds no scope name (they would become local
//!   changes with no scope; the write-time checks refuse such cells from then on).

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::Call;
use crate::schema::{self, ColumnInfo, ScopeRule, TableDef, Tracked};
use outpost_protocol::Strategy;

/// Reads the `scope` option's value.
pub(crate) fn parse(call: &Call, v: &serde_json::Value) -> Result<ScopeRule, Error> {
    let bad = || {
        call.arg_error(
            "\"scope\" is a column name (\"clinic_id\") or {\"via\": \"a foreign key column\"}",
        )
    };
    match v {
        serde_json::Value::String(c) => Ok(ScopeRule::Column(c.clone())),
        serde_json::Value::Object(o) if o.len() == 1 => match o.get("via") {
            Some(serde_json::Value::String(c)) => Ok(ScopeRule::Via(c.clone())),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn refuse(what: String) -> Error {
    Error::Track(format!("outpost_track: {what}"))
}

/// Checks `def`'s scope rule (if any) against the live schema, the other tracked tables and
/// what `existing` (the table's definition so far, if tracked) declared and sent.
pub(crate) fn check(
    conn: Conn,
    def: &TableDef,
    existing: Option<&Tracked>,
    info: &[ColumnInfo],
    tracked: &[Tracked],
) -> Result<(), Error> {
    let table = &def.name;
    let before = existing.and_then(|t| t.def.scope.as_ref());
    if let Some(before) = before {
        if def.scope.as_ref() != Some(before) {
            let asked = def
                .scope
                .as_ref()
                .map_or("no scope".to_string(), |r| r.to_string());
            return Err(refuse(format!(
                "\"{table}\" is scoped by {before}; a table's scope rule cannot change once declared (asked: {asked})"
            )));
        }
    }
    let Some(rule) = &def.scope else {
        return Ok(());
    };
    let others: Vec<&Tracked> = tracked.iter().filter(|t| t.def.name != *table).collect();
    let column = rule.column();
    let Some(col) = info.iter().find(|c| c.name == column) else {
        return Err(refuse(format!(
            "scope column \"{table}\".\"{column}\": no such column"
        )));
    };
    let fks = schema::foreign_keys(conn, table)?;
    let scoped = |name: &str| -> bool {
        name.eq_ignore_ascii_case(table)
            || others
                .iter()
                .any(|t| t.def.scope.is_some() && t.def.name.eq_ignore_ascii_case(name))
    };
    match rule {
        ScopeRule::Column(_) => {
            if col.pk > 0 {
                return Err(refuse(format!(
                    "scope column \"{table}\".\"{column}\" is part of the primary key; a referral changes a row's scope, never its key: use a column outside the key"
                )));
            }
            if let Some(s) = def
                .column_options
                .get(column)
                .filter(|s| **s != Strategy::Lww)
            {
                return Err(refuse(format!(
                    "scope column \"{table}\".\"{column}\" merges \"lww\" (the last write decides where the row lives); the \"columns\" option says \"{}\"",
                    s.name()
                )));
            }
        }
        ScopeRule::Via(_) => {
            let Some((parent, _, to)) = fks.iter().find(|(_, from, _)| from == &[column]) else {
                return Err(refuse(format!(
                    "\"{table}\".\"{column}\" is no single-column foreign key; {{\"via\": ...}} names the foreign key whose parent row gives the scope"
                )));
            };
            if parent.eq_ignore_ascii_case(table) {
                return Err(refuse(format!(
                    "\"{table}\".\"{column}\" references \"{table}\" itself; a row can follow only another table's row"
                )));
            }
            let Some(p) = others
                .iter()
                .find(|t| t.def.name.eq_ignore_ascii_case(parent) && t.def.scope.is_some())
            else {
                return Err(refuse(format!(
                    "\"{table}\".\"{column}\" references \"{parent}\", which is not tracked with a scope; track \"{parent}\" with {{\"scope\": ...}} first"
                )));
            };
            if !(to.is_empty() || *to == p.def.pk) {
                return Err(refuse(format!(
                    "\"{table}\".\"{column}\" references \"{parent}\"({}) rather than its primary key; the via key must name the parent row by its key",
                    to.join(", ")
                )));
            }
        }
    }
    let via = match rule {
        ScopeRule::Via(c) => Some(c.as_str()),
        ScopeRule::Column(_) => None,
    };
    for (parent, from, _) in &fks {
        let through_via = via.is_some_and(|v| from == &[v]);
        if scoped(parent) && !through_via {
            return Err(refuse(format!(
                "\"{table}\".\"{}\" references scoped table \"{parent}\"; a scoped table references other scoped tables only through its via key",
                from.join("\", \"")
            )));
        }
    }
    // Scoped tables that would reference this one, now scoped, other than through their via key.
    for child in others.iter().filter(|t| t.def.scope.is_some()) {
        for (parent, from, _) in schema::foreign_keys(conn, &child.def.name)? {
            let through_via =
                matches!(&child.def.scope, Some(ScopeRule::Via(v)) if from == [v.as_str()]);
            if parent.eq_ignore_ascii_case(table) && !through_via {
                return Err(refuse(format!(
                    "scoped table \"{}\" references \"{table}\" through \"{}\", not its via key; a scoped table references other scoped tables only through its via key",
                    child.def.name,
                    from.join("\", \"")
                )));
            }
        }
    }
    for (index, cols) in unique_indexes(conn, table)? {
        if !cols.iter().any(|c| c == column) {
            let what = if index.starts_with("sqlite_autoindex_") {
                "a UNIQUE constraint".to_string()
            } else {
                format!("unique index \"{index}\"")
            };
            return Err(refuse(format!(
                "{what} of \"{table}\" ({}) does not include the scope column \"{column}\"; two scopes could each hold a row with the same value: add \"{column}\" to it",
                cols.join(", ")
            )));
        }
    }
    if let ScopeRule::Column(_) = rule {
        let c = schema::quote(column);
        // What `outpost_check_scope` refuses at write time, for the rows already there.
        let bad = conn.query_i64(
            &format!(
                "SELECT count(*) FROM {} WHERE {c} IS NULL OR typeof({c}) != 'text' OR {c} = '' \
                 OR length(CAST({c} AS BLOB)) > 64 OR {c} GLOB '*[^A-Za-z0-9_.-]*'",
                schema::quote(table)
            ),
            &[],
        )?;
        if let Some(n) = bad.filter(|n| *n > 0) {
            return Err(refuse(format!(
                "{n} row(s) of \"{table}\" hold no scope name in \"{column}\" (NULL, '', '*', or not 1-64 of A-Z a-z 0-9 _ . -); set it on every row before declaring the scope"
            )));
        }
    }
    if let (Some(t), None) = (existing, before) {
        if has_sent_changes(conn, t)? {
            return Err(refuse(format!(
                "\"{table}\" has changes that already left in a batch (unscoped); a scope rule is accepted only on a table with no exported history"
            )));
        }
    }
    Ok(())
}

/// Refuses to untrack a table that a tracked table follows through its `via` key: that table's
/// rows would have no scope left to follow.
pub(crate) fn check_untrack(conn: Conn, t: &Tracked) -> Result<(), Error> {
    for child in schema::load_tracked(conn)? {
        let Some(ScopeRule::Via(via)) = &child.def.scope else {
            continue;
        };
        let follows =
            schema::foreign_keys(conn, &child.def.name)?
                .iter()
                .any(|(parent, from, _)| {
                    from == &[via.as_str()] && parent.eq_ignore_ascii_case(&t.def.name)
                });
        if follows && child.id != t.id {
            return Err(Error::Track(format!(
                "outpost_untrack: \"{}\" follows the scope of \"{}\" through \"{via}\"; untrack \"{}\" first",
                child.def.name, t.def.name, child.def.name
            )));
        }
    }
    Ok(())
}

/// Each UNIQUE constraint and unique index besides the primary key: its name and the columns
/// it names (an expression counts as none of them).
fn unique_indexes(conn: Conn, table: &str) -> Result<Vec<(String, Vec<String>)>, Error> {
    let mut s = conn.prepare(
        "SELECT il.name, ix.name FROM pragma_index_list(?1) AS il \
         JOIN pragma_index_xinfo(il.name) AS ix \
         WHERE il.\"unique\" AND il.origin != 'pk' AND ix.key ORDER BY il.seq, ix.seqno",
    )?;
    s.bind_text(1, table)?;
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    while s.step()? {
        let index = s.text(0);
        if out.last().is_none_or(|(name, _)| *name != index) {
            out.push((index, Vec::new()));
        }
        if let Some((_, cols)) = out.last_mut() {
            cols.push(if s.is_null(1) {
                "<expression>".into()
            } else {
                s.text(1)
            });
        }
    }
    Ok(out)
}

/// Whether any own change to `t` already left in a batch: a version of this database's (site
/// 0) with a local seq at or below the `sent_seq` mark (`restamp.rs`). Changes not folded yet
/// are all above it (export folds first). A version a peer's write replaced since is not seen;
/// a database made before the mark counts every own version as sent.
fn has_sent_changes(conn: Conn, t: &Tracked) -> Result<bool, Error> {
    let sent = match schema::meta_get(conn, crate::restamp::SENT_SEQ_KEY)? {
        Some(v) => u64::try_from(v).unwrap_or(0),
        None => u64::MAX,
    };
    if sent == 0 {
        return Ok(false);
    }
    let left = |seq: u64| seq > 0 && seq <= sent;
    let mut s =
        conn.prepare("SELECT exist, exist_seq, clocks FROM _outpost_rows WHERE tbl = ?1")?;
    s.bind_i64(1, t.id)?;
    while s.step()? {
        let st = crate::state::RowState::decode(s.i64(0) as u64, s.i64(1) as u64, &s.blob(2))?;
        if left(st.exist_seq)
            || st
                .cells
                .iter()
                .flatten()
                .any(|v| v.site == 0 && left(v.seq))
        {
            return Ok(true);
        }
    }
    Ok(false)
}
