//! The drain of a scope removed from this device's grant (docs/design.md section 10,
//! "Regrants").
//!
//! When this device learns a grant that no longer holds a scope it held, the scope *drains*:
//!
//! 1. **Start** ([`regranted`], as the grant is admitted, the log folded just before so every
//!    write made under the old grant is numbered under it): the scope's drain seq is the last seq
//!    of its own stream that may be pushed (`pushable_top`: the stretches written under a grant
//!    version that held it), recorded in `_outpost_drains`. Its rows stay, read-only.
//! 2. **Push**: the own stream is still pushed up to the drain seq, its batches naming the old
//!    version, and every hello declares the drain seq ([`declared`]), which relays keep and hold
//!    the device to (nothing above it is accepted).
//! 3. **No new seqs**: while a scope drains, the app's writes to its rows are refused at write
//!    time (`outpost_check_drain`, below), so its stream never grows past the drain seq.
//! 4. **Drop** ([`drop_drained`]: at an acknowledgement, at a session's pull once its control
//!    entries are in (a relay's hello may show the seqs held; an entry may grant the scope
//!    again), and at once when nothing was unsent): once the acknowledged mark of its own
//!    stream reaches the drain seq, the scope's app rows
//!    (scope-column rows and their `via` children) are deleted with the triggers quiet (no log
//!    entry, no delete travels), with their row state, cells, tombstones and exit markers, and
//!    every `_outpost_vector` entry of the scope's streams: regaining it is a first sync. Runs
//!    stay, so seqs are never reused. The own stream's entry in the vector is its top (runs),
//!    which stays; the drop records the scope and its drain seq (`regain.rs`), so granted it
//!    again the device asks relays to serve its own past batches of it back. A row that still
//!    holds own changes not acknowledged in another stream (written in a scope that drains
//!    too, then referred into this one) leaves instead, its state and values kept for that
//!    stream's push, with a marker of no stream (found by `tests/scopes_random.rs`, seed 75).
//!
//! **Why refusal triggers only while draining.** A write to a row of a removed scope must be
//! refused (the issue asks for it at write time), but checking every UPDATE and DELETE of every
//! scoped table for the row's scope would add a function call to writes that can never hit one:
//! a device holds rows of a removed scope only between learning its grant and the drop, usually
//! one sync. So the BEFORE INSERT/UPDATE/DELETE triggers that ask `outpost_check_drain` exist
//! only while some scope drains (created at the start, dropped with the last drop): the capturing
//! triggers, and with them the write tax of W1 and W2, are unchanged. Inserts into a removed
//! scope are refused already by the grant check (`scope_check.rs`).

use crate::error::{Error, ScopeWriteError};
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use crate::schema::{self, quote, ScopeRule, Tracked};
use crate::wire_scope::WireScopes;
use outpost_protocol::message::{Drain, MAX_DRAINS};
use outpost_protocol::scope::Scopes;
use outpost_protocol::Value;
use std::collections::BTreeSet;

/// Created with the bookkeeping (`schema::ensure`).
pub(crate) const TABLE: &str = "
CREATE TABLE IF NOT EXISTS _outpost_drains(scope TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
";

/// Every draining scope and its drain seq, in scope order.
pub(crate) fn list(conn: Conn) -> Result<Vec<(String, u64)>, Error> {
    let mut s = conn.prepare("SELECT scope, last FROM _outpost_drains ORDER BY scope")?;
    let mut out = Vec::new();
    while s.step()? {
        out.push((s.text(0), s.i64(1).max(0) as u64));
    }
    Ok(out)
}

/// What a hello declares: the draining scopes with their drain seqs (the first
/// [`MAX_DRAINS`]; a device that lost more scopes at once declares the rest as these drop).
/// Scopes by wire id (`wire_scope.rs`).
pub(crate) fn declared(conn: Conn) -> Result<Vec<Drain>, Error> {
    let wire = WireScopes::load(conn)?;
    Ok(list(conn)?
        .into_iter()
        .take(MAX_DRAINS)
        .map(|(scope, last)| Drain {
            scope: wire.of(&scope),
            last,
        })
        .collect())
}

/// Whether `grant` (wire ids) holds scope `scope` (`None`: no grant known, every scope).
fn holds(wire: &WireScopes, grant: Option<&Scopes>, scope: &str) -> bool {
    grant.is_none_or(|g| wire.holds(g, scope))
}

/// This device's grant changed from `old` to `new` (the log folded under `old`): scopes `old`
/// held and `new` does not start draining, their drain seq given by `drain_seq`; draining
/// scopes `new` holds again stop (their rows are still here). A device that knew no grant
/// before drains nothing: what it wrote then is judged by the grant relays hold now.
pub(crate) fn regranted(
    call: &Call,
    old: Option<&Scopes>,
    new: Option<&Scopes>,
    drain_seq: impl Fn(&str) -> u64,
) -> Result<(), Error> {
    let conn = call.conn;
    let Some(old) = old else {
        return Ok(());
    };
    let tables = schema::load_tracked(conn)?;
    let wire = WireScopes::load(conn)?;
    // The scopes this device may hold anything of: its own streams and its rows' scope cells.
    let runs = crate::streams::Runs::load(conn)?;
    let mut candidates: BTreeSet<String> = runs
        .streams()
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    for t in &tables {
        if let Some(ScopeRule::Column(c)) = &t.def.scope {
            let mut s = conn.prepare(&format!(
                "SELECT DISTINCT {} FROM {}",
                quote(c),
                quote(&t.def.name)
            ))?;
            while s.step()? {
                let v = s.text(0);
                if outpost_protocol::scope::check_name(&v).is_ok() {
                    candidates.insert(v);
                }
            }
        }
    }
    let mut start =
        conn.prepare("INSERT OR IGNORE INTO _outpost_drains(scope, last) VALUES (?1, ?2)")?;
    for scope in candidates {
        if wire.holds(old, &scope) && !holds(&wire, new, &scope) {
            start.bind_text(1, &scope)?;
            start.bind_i64(2, i64::try_from(drain_seq(&scope)).unwrap_or(i64::MAX))?;
            start.run()?;
        }
    }
    drop(start);
    let mut stop = conn.prepare("DELETE FROM _outpost_drains WHERE scope = ?1")?;
    for (scope, _) in list(conn)? {
        if holds(&wire, new, &scope) {
            stop.bind_text(1, &scope)?;
            stop.run()?;
        }
    }
    drop(stop);
    set_refusals(conn, &tables, !list(conn)?.is_empty())?;
    Ok(())
}

/// Drops every draining scope whose own stream is acknowledged up to its drain seq (module
/// documentation, step 4). Returns the scopes dropped.
pub(crate) fn drop_drained(call: &Call) -> Result<Vec<String>, Error> {
    let conn = call.conn;
    let drains = list(conn)?;
    if drains.is_empty() {
        return Ok(Vec::new());
    }
    let mut dropped = Vec::new();
    for (scope, last) in &drains {
        if crate::acked::acked_in(conn, scope)? >= *last {
            drop_scope(call, scope)?;
            crate::regain::dropped(conn, scope, *last)?;
            let mut s = conn.prepare("DELETE FROM _outpost_drains WHERE scope = ?1")?;
            s.bind_text(1, scope)?;
            s.run()?;
            dropped.push(scope.clone());
        }
    }
    if dropped.len() == drains.len() {
        set_refusals(conn, &schema::load_tracked(conn)?, false)?;
    }
    Ok(dropped)
}

/// How deep a scoped table sits below the tables scoped by a column (0 for those).
fn depth(tables: &[Tracked], conn: Conn, t: &Tracked) -> Result<usize, Error> {
    let (mut t, mut d) = (t, 0);
    for _ in 0..8 {
        let Some(ScopeRule::Via(c)) = &t.def.scope else {
            return Ok(d);
        };
        let parent = schema::foreign_keys(conn, &t.def.name)?
            .into_iter()
            .find(|(_, from, _)| from.len() == 1 && from[0] == *c)
            .and_then(|(p, _, _)| tables.iter().find(|x| x.def.name.eq_ignore_ascii_case(&p)));
        match parent {
            Some(p) => (t, d) = (p, d + 1),
            None => return Ok(d),
        }
    }
    Ok(d)
}

/// Deletes the scope's rows and bookkeeping (module documentation, step 4).
fn drop_scope(call: &Call, scope: &str) -> Result<(), Error> {
    let conn = call.conn;
    let tables = schema::load_tracked(conn)?;
    let Some(scopes) = crate::row_scope::Scopes::new(conn, &tables)? else {
        return Ok(());
    };
    // Every row of the scope, found before any is deleted: a `via` row finds its scope
    // through its parent.
    let mut doomed: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    {
        let mut s = conn.prepare("SELECT tbl, key FROM _outpost_rows")?;
        while s.step()? {
            let (tbl, key) = (s.i64(0), s.blob(1));
            let Some(ti) = tables.iter().position(|t| t.id == tbl) else {
                continue;
            };
            if tables[ti].def.scope.is_some() && scopes.now(&tables[ti], &key)? == scope {
                doomed.push((depth(&tables, conn, &tables[ti])?, ti, key));
            }
        }
    }
    drop(scopes);
    // Rows that left through the scope's stream: their state stayed for their unsent changes,
    // all sent now; it goes with their markers (a transfer that brings one back then writes it
    // whole).
    {
        let mut s = conn.prepare("SELECT tbl, key FROM _outpost_exits WHERE stream = ?1")?;
        s.bind_text(1, scope)?;
        while s.step()? {
            let (tbl, key) = (s.i64(0), s.blob(1));
            let Some(ti) = tables.iter().position(|t| t.id == tbl) else {
                continue;
            };
            if !doomed
                .iter()
                .any(|(_, dti, dkey)| *dti == ti && *dkey == key)
            {
                doomed.push((depth(&tables, conn, &tables[ti])?, ti, key));
            }
        }
    }
    // Children before their parents.
    doomed.sort_by_key(|d| std::cmp::Reverse(d.0));
    // A row may hold own changes not acknowledged yet in another stream than this scope's (a
    // write, then a referral into this scope, both numbered in the old scope's stream, which
    // may still drain): it leaves as a referred row does, its state and values kept for the
    // export (`apply/exits.rs`), with a marker of no stream (any later change may bring it
    // back, and is judged then).
    let runs = crate::streams::Runs::load(conn)?;
    let acked = crate::acked::acked(conn)?;
    let mut kept: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut rows = crate::state::RowStore::new(conn)?;
    let quiet = call.session.suppress();
    for (_, ti, key) in &doomed {
        let t = &tables[*ti];
        let unsent = match rows.get(t.id, key)? {
            Some(st) => st
                .own_seqs()
                .any(|lseq| lseq > 0 && !runs.covered(&acked, lseq)),
            None => false,
        };
        let key_vals = crate::keys::unpack(key)?;
        if unsent {
            let mut read = crate::export::select_row(conn, t)?;
            read.bind_all(&key_vals)?;
            if read.step()? {
                let vals: Vec<outpost_protocol::Value> =
                    (0..t.def.columns.len()).map(|i| read.value(i)).collect();
                drop(read);
                crate::apply::keep_values(conn, t.id, key, &vals)?;
            }
        }
        let mut s = conn.prepare(&format!(
            "DELETE FROM {} WHERE {}",
            quote(&t.def.name),
            crate::cells::key_match(t)
        ))?;
        s.bind_all(&key_vals)?;
        s.run()?;
        if unsent {
            kept.push((t.id, key.clone()));
            continue;
        }
        for sql in [
            "DELETE FROM _outpost_rows WHERE tbl = ?1 AND key = ?2",
            "DELETE FROM _outpost_cells WHERE tbl = ?1 AND key = ?2",
            "DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2",
            "DELETE FROM _outpost_evicted WHERE tbl = ?1 AND key = ?2",
            "DELETE FROM _outpost_exits WHERE tbl = ?1 AND key = ?2",
            "DELETE FROM _outpost_conflict_rows WHERE tbl_id = ?1 AND key = ?2",
        ] {
            let mut s = conn.prepare(sql)?;
            s.bind_i64(1, t.id)?;
            s.bind_blob(2, key)?;
            s.run()?;
        }
    }
    drop(quiet);
    let mut s = conn.prepare("DELETE FROM _outpost_exits WHERE stream = ?1")?;
    s.bind_text(1, scope)?;
    s.run()?;
    for (tbl, key) in &kept {
        let mut s = conn.prepare(
            "INSERT OR REPLACE INTO _outpost_exits(tbl, key, stream, hlc, site) VALUES (?1, ?2, '', 0, x'')",
        )?;
        s.bind_i64(1, *tbl)?;
        s.bind_blob(2, key)?;
        s.run()?;
    }
    // Coverage is by wire id (`wire_scope.rs`).
    let mut s = conn.prepare("DELETE FROM _outpost_vector WHERE stream = ?1")?;
    s.bind_text(1, &WireScopes::load(conn)?.of(scope))?;
    s.run()?;
    log::info!(
        "outpost_sync: scope {scope:?} drained: {} rows dropped without a delete",
        doomed.len()
    );
    Ok(())
}

/// The name of a drain refusal trigger of `t` (outside the `_outpost_<table>_` names that
/// `triggers.rs` drops and recreates with the capturing triggers).
fn trigger_name(t: &Tracked, op: &str) -> String {
    quote(&format!("_outpost_drain_{}_{op}", t.def.name))
}

/// Creates (`on`) or drops the drain refusal triggers of every scoped table (module
/// documentation).
fn set_refusals(conn: Conn, tables: &[Tracked], on: bool) -> Result<(), Error> {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    // Every one there is, by name: a table untracked while its scope drained keeps none.
    let mut old = Vec::new();
    {
        let mut s = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' \
             AND name LIKE '\\_outpost\\_drain\\_%' ESCAPE '\\'",
        )?;
        while s.step()? {
            old.push(s.text(0));
        }
    }
    for name in old {
        conn.exec(&format!("DROP TRIGGER IF EXISTS {}", quote(&name)))?;
    }
    for t in tables {
        let column = match &t.def.scope {
            Some(ScopeRule::Column(c)) | Some(ScopeRule::Via(c)) if on => c,
            _ => continue,
        };
        let via = matches!(t.def.scope, Some(ScopeRule::Via(_)));
        let check = |row: &str| {
            format!(
                "outpost_check_drain({}, {row}.{})",
                literal(&t.def.name),
                quote(column)
            )
        };
        let tbl = quote(&t.def.name);
        let mut sql = String::new();
        // A `via` row inserted under (or moved to) a draining parent would grow its stream.
        if via {
            sql += &format!(
                "CREATE TRIGGER {} BEFORE INSERT ON {tbl} WHEN {} BEGIN SELECT 1; END;",
                trigger_name(t, "ins"),
                check("NEW")
            );
        }
        let update = if via {
            format!("{} AND {}", check("OLD"), check("NEW"))
        } else {
            check("OLD")
        };
        sql += &format!(
            "CREATE TRIGGER {} BEFORE UPDATE ON {tbl} WHEN {update} BEGIN SELECT 1; END;
             CREATE TRIGGER {} BEFORE DELETE ON {tbl} WHEN {} BEGIN SELECT 1; END;",
            trigger_name(t, "upd"),
            trigger_name(t, "del"),
            check("OLD")
        );
        conn.exec(&sql)?;
    }
    Ok(())
}

/// `outpost_check_drain(table, value)`: the WHEN of the drain refusal triggers. `value` is the
/// row's scope cell (a table scoped by a column) or its parent's key (a `via` table): 1 when
/// the write may go on, else the error that aborts it (the row's scope is draining). Writes a
/// peer's changes make, and the drop itself, pass.
pub(crate) fn sql_check_drain(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    if !call.session.capturing() {
        return Ok(Value::Integer(1));
    }
    let Arg::Text(table) = &args[0] else {
        return Err(call.arg_error("takes the table name as text"));
    };
    let conn = call.conn;
    let tables = schema::load_tracked(conn)?;
    let Some(t) = tables.iter().find(|t| t.def.name == *table) else {
        return Ok(Value::Integer(1));
    };
    let value = match &args[1] {
        Arg::Null => return Ok(Value::Integer(1)),
        Arg::Integer(n) => Value::Integer(*n),
        Arg::Real(f) => Value::Real(*f),
        Arg::Text(s) => Value::Text(s.to_string()),
        Arg::Blob(b) => Value::Blob(b.to_vec()),
    };
    let scope = match (&t.def.scope, value) {
        (Some(ScopeRule::Column(_)), Value::Text(s)) => s,
        (Some(ScopeRule::Via(_)), parent_key) => {
            let parent = crate::row_scope::Scopes::new(conn, &tables)?
                .map(|s| s.parent_scope(t, &parent_key))
                .transpose()?
                .flatten();
            match parent {
                Some(s) => s,
                None => return Ok(Value::Integer(1)),
            }
        }
        _ => return Ok(Value::Integer(1)),
    };
    let draining = conn
        .query_i64(
            "SELECT 1 FROM _outpost_drains WHERE scope = ?1",
            &[Value::Text(scope.clone())],
        )?
        .is_some();
    if draining {
        return Err(Error::ScopeWrite(Box::new(ScopeWriteError::Draining {
            scope,
        })));
    }
    Ok(Value::Integer(1))
}
