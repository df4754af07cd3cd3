//! `outpost_status()`: what a person (or an app's "last synced 3 minutes ago, 12 changes
//! waiting" line) needs to know about this database's sync, as JSON.
//!
//! | table | one row per | holds |
//! |---|---|---|
//! | `_outpost_sync_status` | peer site id (hex), or `*` for a sync that failed before naming one | last success, own seq the peer acknowledged, last error and when |
//! | `_outpost_held` | origin (hex) whose batches the last successful sync held | batches held (their origin's key was not known yet) |
//!
//! The rows are written around every `outpost_sync` call ([`sql_sync`] wraps the sync client's
//! function in the registration table): a success records the peer it used, its time, and that
//! the peer now holds every own change issued before the call started (a successful sync pushes
//! until nothing is left); each peer listed under `skipped` and every failure records its error.
//! Each record is its own small transaction after the sync returned, so it never widens one of
//! the sync's transactions; failing to record is logged and does not change the sync's result.

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use outpost_protocol::Value;
use serde_json::{json, Value as Json};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS _outpost_sync_status(peer TEXT PRIMARY KEY,
  last_ok_at INTEGER, acked INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_error_at INTEGER) WITHOUT ROWID;";

const HELD_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS _outpost_held(origin TEXT PRIMARY KEY, batches INTEGER NOT NULL) WITHOUT ROWID;";

/// The key of errors not attributed to one peer.
const ANY_PEER: &str = "*";

fn has_table(conn: Conn, name: &str) -> Result<bool, Error> {
    Ok(conn
        .query_i64(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            &[Value::Text(name.into())],
        )?
        .is_some())
}

fn record_ok(conn: Conn, peer: &str, acked: u64, now: u64) -> Result<(), Error> {
    conn.exec(TABLE)?;
    let mut s = conn.prepare(
        "INSERT INTO _outpost_sync_status(peer, last_ok_at, acked) VALUES (?1, ?2, ?3)
         ON CONFLICT(peer) DO UPDATE SET last_ok_at = excluded.last_ok_at,
           acked = max(acked, excluded.acked)",
    )?;
    s.bind_text(1, peer)?;
    s.bind_i64(2, now as i64)?;
    s.bind_i64(3, acked as i64)?;
    s.run()
}

fn record_error(conn: Conn, peer: &str, message: &str, now: u64) -> Result<(), Error> {
    conn.exec(TABLE)?;
    let mut s = conn.prepare(
        "INSERT INTO _outpost_sync_status(peer, last_error, last_error_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(peer) DO UPDATE SET last_error = excluded.last_error,
           last_error_at = excluded.last_error_at",
    )?;
    s.bind_text(1, peer)?;
    s.bind_text(2, message)?;
    s.bind_i64(3, now as i64)?;
    s.run()
}

/// `outpost_sync([peer [, options]])`: the sync client's function, with its outcome recorded.
pub(crate) fn sql_sync(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    if !call.conn.autocommit() {
        // Refused by the client without touching anything; nothing to record.
        return crate::sync::sql_sync(call, args);
    }
    crate::schema::ensure(call.conn)?;
    let issued_before = crate::fold::db_version(call.conn)?;
    let result = crate::sync::sql_sync(call, args);
    // The sync may have stored control entries: the write checks read the grant again.
    call.session.grant.forget();
    let now = crate::clock::unix_now();
    let recorded = match &result {
        Ok(Value::Text(out)) => record_success(call.conn, out, issued_before, now),
        Ok(_) => Ok(()),
        Err(e) => record_error(call.conn, ANY_PEER, &e.to_string(), now),
    };
    if let Err(e) = recorded {
        log::warn!("outpost_sync: could not record the outcome for outpost_status: {e}");
    }
    result
}

fn record_success(conn: Conn, out: &str, acked: u64, now: u64) -> Result<(), Error> {
    let out: Json = serde_json::from_str(out).map_err(|source| Error::InternalJson {
        what: "outpost_sync returned no JSON",
        source,
    })?;
    if let Some(site) = out.get("site").and_then(Json::as_str) {
        record_ok(conn, site, acked, now)?;
    }
    record_held(conn, out.get("held_origins"))?;
    for s in out
        .get("skipped")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(site), Some(e)) = (
            s.get("site").and_then(Json::as_str),
            s.get("error").and_then(Json::as_str),
        ) {
            record_error(conn, site, e, now)?;
        }
    }
    Ok(())
}

/// Replaces what `_outpost_held` says with what the last successful sync held (each pull
/// brings held batches again, so the last one tells what is still waiting for a key).
fn record_held(conn: Conn, held: Option<&Json>) -> Result<(), Error> {
    conn.exec(HELD_TABLE)?;
    conn.exec("SAVEPOINT outpost_held")?;
    let r = (|| -> Result<(), Error> {
        conn.exec("DELETE FROM _outpost_held")?;
        let mut s = conn.prepare("INSERT INTO _outpost_held(origin, batches) VALUES (?1, ?2)")?;
        for (origin, n) in held.and_then(Json::as_object).into_iter().flatten() {
            s.bind_text(1, origin)?;
            s.bind_i64(2, n.as_i64().unwrap_or(0))?;
            s.run()?;
        }
        Ok(())
    })();
    crate::schema::finish_savepoint(conn, "outpost_held", r)
}

/// What `_outpost_held` says: (batches in all, origin (hex) → batches).
fn held(conn: Conn) -> Result<(i64, serde_json::Map<String, Json>), Error> {
    let mut origins = serde_json::Map::new();
    let mut total = 0;
    if !has_table(conn, "_outpost_held")? {
        return Ok((total, origins));
    }
    let mut s = conn.prepare("SELECT origin, batches FROM _outpost_held ORDER BY origin")?;
    while s.step()? {
        total += s.i64(1);
        origins.insert(s.text(0), json!(s.i64(1)));
    }
    Ok((total, origins))
}

/// One `_outpost_sync_status` row.
#[derive(Default)]
struct Record {
    last_ok_at: Option<i64>,
    acked: i64,
    last_error: Option<String>,
    last_error_at: Option<i64>,
}

fn records(conn: Conn) -> Result<Vec<(String, Record)>, Error> {
    if !has_table(conn, "_outpost_sync_status")? {
        return Ok(Vec::new());
    }
    let mut s = conn.prepare(
        "SELECT peer, last_ok_at, acked, last_error, last_error_at FROM _outpost_sync_status",
    )?;
    let mut out = Vec::new();
    let opt = |s: &crate::ffi::Stmt, i: usize| (!s.is_null(i)).then(|| s.i64(i));
    while s.step()? {
        out.push((
            s.text(0),
            Record {
                last_ok_at: opt(&s, 1),
                acked: s.i64(2),
                last_error: (!s.is_null(3)).then(|| s.text(3)),
                last_error_at: opt(&s, 4),
            },
        ));
    }
    Ok(out)
}

fn count(conn: Conn, sql: &str) -> Result<i64, Error> {
    Ok(conn.query_i64(sql, &[])?.unwrap_or(0))
}

/// `outpost_status()`.
pub(crate) fn sql_status(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    let conn = call.conn;
    crate::schema::ensure(conn)?;
    let site = crate::sites::site_id(conn)?;
    let tops = crate::streams::tops(conn)?;
    let recs = records(conn)?;
    let mut peers = Vec::new();
    if has_table(conn, "_outpost_peers")? {
        let mut s = conn.prepare(
            "SELECT hex(site), role, addresses, enrolled_at, last_sync_at FROM _outpost_peers
             ORDER BY CASE role WHEN 'hub' THEN 0 WHEN 'cloud' THEN 1 ELSE 2 END, enrolled_at, site",
        )?;
        while s.step()? {
            let site = s.text(0).to_ascii_lowercase();
            let rec = recs.iter().find(|(p, _)| *p == site).map(|(_, r)| r);
            let rec_default = Record::default();
            let rec = rec.unwrap_or(&rec_default);
            let addresses: Json = serde_json::from_str(&s.text(2)).unwrap_or(Json::Null);
            let last_sync_at = (!s.is_null(4)).then(|| s.i64(4)).or(rec.last_ok_at);
            peers.push(json!({
                "role": s.text(1),
                "site": site,
                "addresses": addresses,
                "enrolled_at": s.i64(3),
                "last_sync_at": last_sync_at,
                "last_error": rec.last_error,
                "last_error_at": rec.last_error_at,
            }));
        }
    }
    // What a relay acknowledged (`acked.rs`, per stream seq) is exact; the start of the last
    // successful sync (a local seq) is a floor kept for databases that synced before it was
    // recorded, when all their seqs are in the unscoped stream (then the same numbers).
    let mut acked = crate::acked::acked(conn)?;
    if tops.keys().all(|s| s.is_empty()) {
        let floor = recs.iter().map(|(_, r)| r.acked).max().unwrap_or(0).max(0) as u64;
        let a = acked.entry(String::new()).or_default();
        *a = (*a).max(floor);
    }
    let pending_changes: u64 = tops
        .iter()
        .map(|(s, &top)| top.saturating_sub(acked.get(s).copied().unwrap_or(0)))
        .sum();
    let last_sync_at = peers
        .iter()
        .filter_map(|p| p["last_sync_at"].as_i64())
        .max();
    let last_error = recs
        .iter()
        .filter_map(|(p, r)| Some((p, r.last_error.as_ref()?, r.last_error_at?)))
        .max_by_key(|(_, _, at)| *at)
        .map(|(peer, message, at)| {
            json!({
                "at": at,
                "peer": (peer.as_str() != ANY_PEER).then_some(peer),
                "message": message,
                // An error older than the last success is history, not the current state.
                "since_last_sync": last_sync_at.is_none_or(|ok| at >= ok),
            })
        });
    let (held, held_origins) = held(conn)?;
    // The device's grant as its key directory states it (from enrolment on): `["*"]` for
    // every scope, null while no entry grants it (never enrolled, or a peer that wrote none).
    let directory = if crate::sync::control::enrolled(conn)? {
        Some(crate::sync::control::load(call)?)
    } else {
        None
    };
    // A sealed tenant's grant and keys name scopes by digest: shown by name where this
    // database knows the name (`wire_scope.rs`), else as the digest.
    let wire = crate::wire_scope::WireScopes::load(conn)?;
    let names = crate::wire_scope::known_names(conn)?;
    let scopes = directory.as_ref().and_then(|d| {
        d.grant_of(&site).map(|g| {
            g.scopes
                .names()
                .into_iter()
                .map(|id| {
                    wire.name_of(&id, names.iter().map(String::as_str))
                        .map_or(id.clone(), str::to_string)
                })
                .collect::<Vec<String>>()
        })
    });
    let keys = crate::scope_keys::status(conn, &names, directory.as_ref())?;
    let out = json!({
        "site": site.to_string(),
        "now": crate::clock::unix_now(),
        "enrolled": !peers.is_empty(),
        "peers": peers,
        "last_sync_at": last_sync_at,
        "pending_changes": pending_changes,
        "clock": crate::skew::status(conn)?,
        "conflicts": count(conn, "SELECT count(*) FROM _outpost_conflict_rows")?,
        "quarantined": count(conn, "SELECT count(*) FROM outpost_quarantine")?,
        "quarantined_batches": crate::batch_quarantine::count(conn)?,
        "exits": crate::apply::exits::count(conn)?,
        "transfers": crate::transfer::count(conn)?,
        "held": held,
        "held_origins": held_origins,
        "last_error": last_error,
        "ids": crate::id_blocks::status(conn)?,
        "scopes": scopes,
        // A sealed tenant's keys held per scope: `{"a": {"epoch": 3, "current": true}}`
        // (`scope_keys.rs`); `{}` in an unsealed tenant.
        "keys": keys,
        // Scopes removed from the grant whose rows are still here until their own changes
        // there are pushed (`drain.rs`).
        "draining": crate::drain::list(conn)?
            .into_iter()
            .map(|(scope, last)| json!({"scope": scope, "last": last}))
            .collect::<Vec<_>>(),
    });
    Ok(Value::Text(out.to_string()))
}
