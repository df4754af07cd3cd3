//! Id blocks on the device: `outpost_reserve_ids(sequence, n)` and `outpost_next_id(sequence)`,
//! human-readable numbers (patient registration numbers) handed out offline from blocks the hub
//! or the cloud granted at an earlier sync (`outpost_protocol::id_range`).
//!
//! | table | one row per | holds |
//! |---|---|---|
//! | `_outpost_id_requests` | reservation not granted yet | random request id, sequence, count |
//! | `_outpost_id_blocks` | granted range not used up | sequence, first unused number, last |
//!
//! A reservation is a row with a random id, asked at every sync until a grant for it is stored
//! ([`store_grant`]: the blocks and the request's removal in one transaction; a grant for a
//! request no longer held is ignored, so a grant received twice adds nothing). `outpost_next_id`
//! takes the lowest unused number in the caller's transaction: a rolled back transaction gives
//! its number back. Neither table belongs to a tracked table, so `outpost_untrack` never touches
//! them, and they never leave the device (the numbers' owner is the device that got the grant).

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use outpost_protocol::id_range::{check_count, check_sequence, IdRange, IdRequest, RequestId};
use outpost_protocol::Value;
use serde_json::{json, Map, Value as Json};

const TABLES: &str = "CREATE TABLE IF NOT EXISTS _outpost_id_requests(
  request BLOB PRIMARY KEY CHECK (length(request) = 16), sequence TEXT NOT NULL,
  count INTEGER NOT NULL CHECK (count >= 1), created_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_id_blocks(sequence TEXT NOT NULL,
  first INTEGER NOT NULL CHECK (first >= 1), last INTEGER NOT NULL CHECK (last >= first),
  PRIMARY KEY (sequence, first)) WITHOUT ROWID;";

fn has_tables(conn: Conn) -> Result<bool, Error> {
    Ok(conn
        .query_i64(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
             AND name IN ('_outpost_id_requests', '_outpost_id_blocks')",
            &[],
        )?
        .unwrap_or(0)
        == 2)
}

fn sequence_arg(call: &Call, args: &[Arg]) -> Result<String, Error> {
    match args.first() {
        Some(Arg::Text(t)) => {
            check_sequence(t).map_err(|source| Error::SequenceName {
                function: call.name,
                source,
            })?;
            Ok(t.to_string())
        }
        _ => Err(call.arg_error(
            "sequence must be text: a name of 1 to 64 characters A-Z a-z 0-9 _ . -, e.g. 'patients'",
        )),
    }
}

fn pending(conn: Conn, sequence: &str) -> Result<i64, Error> {
    Ok(conn
        .query_i64(
            "SELECT coalesce(sum(count), 0) FROM _outpost_id_requests WHERE sequence = ?1",
            &[Value::Text(sequence.into())],
        )?
        .unwrap_or(0))
}

/// `outpost_reserve_ids(sequence, n)`: asks for `n` more numbers at the next sync; returns the
/// numbers now pending for the sequence.
pub(crate) fn sql_reserve_ids(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let sequence = sequence_arg(call, args)?;
    let count = match args.get(1) {
        Some(&Arg::Integer(n)) if check_count(n as u64).is_ok() && n > 0 => n,
        _ => {
            return Err(call
                .arg_error("n must be an integer from 1 to 1000000 (how many numbers to reserve)"))
        }
    };
    call.conn.exec(TABLES)?;
    let mut id = [0u8; 16];
    getrandom::getrandom(&mut id).map_err(|source| Error::NoRandomness {
        what: call.name,
        source,
    })?;
    let mut s = call.conn.prepare(
        "INSERT INTO _outpost_id_requests(request, sequence, count, created_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    s.bind_blob(1, &id)?;
    s.bind_text(2, &sequence)?;
    s.bind_i64(3, count)?;
    s.bind_i64(4, crate::clock::unix_now() as i64)?;
    s.run()?;
    Ok(Value::Integer(pending(call.conn, &sequence)?))
}

/// `outpost_next_id(sequence)`: the lowest granted number not used yet, consumed in the caller's
/// transaction.
pub(crate) fn sql_next_id(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let sequence = sequence_arg(call, args)?;
    let exhausted = |pending: i64| Error::Sync {
        function: call.name,
        error: Box::new(crate::error::SyncError::NoIdsLeft {
            sequence: sequence.clone(),
            pending,
        }),
    };
    if !has_tables(call.conn)? {
        return Err(exhausted(0));
    }
    let mut s = call.conn.prepare(
        "SELECT first, last FROM _outpost_id_blocks WHERE sequence = ?1 ORDER BY first LIMIT 1",
    )?;
    s.bind_text(1, &sequence)?;
    if !s.step()? {
        drop(s);
        return Err(exhausted(pending(call.conn, &sequence)?));
    }
    let (first, last) = (s.i64(0), s.i64(1));
    drop(s);
    let mut u = if first == last {
        call.conn
            .prepare("DELETE FROM _outpost_id_blocks WHERE sequence = ?1 AND first = ?2")?
    } else {
        call.conn.prepare(
            "UPDATE _outpost_id_blocks SET first = first + 1 WHERE sequence = ?1 AND first = ?2",
        )?
    };
    u.bind_text(1, &sequence)?;
    u.bind_i64(2, first)?;
    u.run()?;
    Ok(Value::Integer(first))
}

/// The reservations to ask for at a sync (none when the tables were never created).
pub(crate) fn pending_requests(conn: Conn) -> Result<Vec<IdRequest>, Error> {
    if !has_tables(conn)? {
        return Ok(Vec::new());
    }
    let mut s = conn.prepare(
        "SELECT request, sequence, count FROM _outpost_id_requests ORDER BY created_at, request",
    )?;
    let mut out = Vec::new();
    while s.step()? {
        let request = <[u8; 16]>::try_from(s.blob(0).as_slice())
            .map_err(|_| Error::Corrupt("an _outpost_id_requests id is not 16 bytes".into()))?;
        out.push(IdRequest {
            request: RequestId(request),
            sequence: s.text(1),
            count: s.i64(2).max(1) as u64,
            above: 0,
        });
    }
    Ok(out)
}

/// Stores a grant for `request` and retires it, in one transaction (the caller holds none).
/// Returns the numbers added: 0 for an empty grant (the request stays) or a request no longer
/// held (a duplicate grant).
pub(crate) fn store_grant(
    conn: Conn,
    request: &IdRequest,
    ranges: &[IdRange],
) -> Result<u64, Error> {
    if ranges.is_empty() {
        return Ok(0);
    }
    conn.exec("BEGIN IMMEDIATE")?;
    let r = (|| {
        let mut d =
            conn.prepare("DELETE FROM _outpost_id_requests WHERE request = ?1 AND sequence = ?2")?;
        d.bind_blob(1, &request.request.0)?;
        d.bind_text(2, &request.sequence)?;
        d.run()?;
        drop(d);
        if conn.query_i64("SELECT changes()", &[])?.unwrap_or(0) == 0 {
            return Ok(0);
        }
        let mut added = 0;
        for g in ranges {
            let mut i = conn.prepare(
                "INSERT INTO _outpost_id_blocks(sequence, first, last) VALUES (?1, ?2, ?3)",
            )?;
            i.bind_text(1, &request.sequence)?;
            i.bind_i64(2, i64::try_from(g.first).unwrap_or(i64::MAX))?;
            i.bind_i64(3, i64::try_from(g.last).unwrap_or(i64::MAX))?;
            i.run()?;
            added += g.len();
        }
        Ok(added)
    })();
    match r {
        Ok(n) => {
            conn.exec("COMMIT")?;
            Ok(n)
        }
        Err(e) => {
            let _ = conn.exec("ROLLBACK");
            Err(e)
        }
    }
}

/// `outpost_status()`'s `ids`: per sequence, the numbers left and the numbers reserved and not
/// granted yet.
pub(crate) fn status(conn: Conn) -> Result<Json, Error> {
    let mut out = Map::new();
    if !has_tables(conn)? {
        return Ok(Json::Object(out));
    }
    let mut s = conn.prepare(
        "SELECT s.sequence,
           coalesce((SELECT sum(last - first + 1) FROM _outpost_id_blocks b
                     WHERE b.sequence = s.sequence), 0),
           coalesce((SELECT sum(count) FROM _outpost_id_requests r
                     WHERE r.sequence = s.sequence), 0)
         FROM (SELECT sequence FROM _outpost_id_blocks
               UNION SELECT sequence FROM _outpost_id_requests) s ORDER BY s.sequence",
    )?;
    while s.step()? {
        out.insert(
            s.text(0),
            json!({"remaining": s.i64(1), "pending": s.i64(2)}),
        );
    }
    Ok(Json::Object(out))
}
