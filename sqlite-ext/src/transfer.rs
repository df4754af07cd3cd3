//! Transfers (docs/design.md section 10, "Moves"): only the tenant's cloud, the scope authority,
//! writes cells credited to other sites. When a change it applies leaves a row in another scope
//! than the stream the change came in (a referral, a late write to a row already moved, a `via`
//! child whose parent moved), it queues a *transfer* of the row into the stream of the row's
//! scope: a local seq of that stream, like an own change, whose batch (`transfer/batch.rs`)
//! carries the row's whole merge state (existence, every cell with its original credit, counter
//! contributions per site, review siblings) and that of its `via` children, read when the batch
//! is made. A row whose scope cell changed is also transferred into every stream it was
//! transferred to before, so that concurrent moves end with one owner everywhere.
//!
//! Devices (`apply.rs`) apply the groups of a transfer batch as changes of the site each group is
//! credited to, and only from a batch their directory says the cloud wrote.
//!
//! A database is the authority when `_outpost_meta.scope_authority` is 1 (the cloud sets it on
//! its tenant database); nothing here runs anywhere else, and `_outpost_transfers` stays empty.

use crate::error::Error;
use crate::ffi::Conn;

pub(crate) mod batch;

/// The queued transfers by local seq, and the streams each row was ever transferred to.
pub(crate) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS _outpost_transfers(lseq INTEGER PRIMARY KEY, tbl INTEGER NOT NULL,
  key BLOB NOT NULL, stream TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS _outpost_transfers_stream ON _outpost_transfers(stream, lseq);
CREATE TABLE IF NOT EXISTS _outpost_transferred(tbl INTEGER NOT NULL, key BLOB NOT NULL,
  stream TEXT NOT NULL, PRIMARY KEY(tbl, key, stream)) WITHOUT ROWID;
";

/// The `_outpost_meta` key that makes a database the scope authority.
const AUTHORITY_KEY: &str = "scope_authority";

/// Whether this database writes transfers (the cloud's tenant).
pub(crate) fn is_authority(conn: Conn) -> Result<bool, Error> {
    Ok(crate::schema::meta_get(conn, AUTHORITY_KEY)? == Some(1))
}

/// Queues a transfer of row (`tbl`, packed `key`) into `stream`: a new local seq, assigned to
/// that stream at once (the log's fold never sees it: its entry is a placeholder, as the
/// apply's restored rows' are).
pub(crate) fn enqueue(conn: Conn, tbl: i64, key: &[u8], stream: &str) -> Result<(), Error> {
    let mut s = conn.prepare(
        "INSERT INTO _outpost_log(tbl, key, op, hlc, mask) VALUES (?1, ?2, 0, 0, 0) RETURNING seq",
    )?;
    s.bind_i64(1, tbl)?;
    s.bind_blob(2, key)?;
    let lseq = if s.step()? {
        s.i64(0)
    } else {
        return Err(Error::Internal("no seq allocated for a transfer".into()));
    };
    drop(s);
    // The authority holds every scope under no grant: its seqs name grant version 0.
    crate::streams::assign(conn, lseq as u64, stream, 0)?;
    let mut s = conn.prepare(
        "INSERT INTO _outpost_transfers(lseq, tbl, key, stream) VALUES (?1, ?2, ?3, ?4)",
    )?;
    s.bind_i64(1, lseq)?;
    s.bind_i64(2, tbl)?;
    s.bind_blob(3, key)?;
    s.bind_text(4, stream)?;
    s.run()?;
    let mut s = conn.prepare(
        "INSERT OR IGNORE INTO _outpost_transferred(tbl, key, stream) VALUES (?1, ?2, ?3)",
    )?;
    s.bind_i64(1, tbl)?;
    s.bind_blob(2, key)?;
    s.bind_text(3, stream)?;
    s.run()
}

/// The streams row (`tbl`, `key`) was ever transferred to.
pub(crate) fn streams_of(conn: Conn, tbl: i64, key: &[u8]) -> Result<Vec<String>, Error> {
    let mut s =
        conn.prepare("SELECT stream FROM _outpost_transferred WHERE tbl = ?1 AND key = ?2")?;
    s.bind_i64(1, tbl)?;
    s.bind_blob(2, key)?;
    let mut out = Vec::new();
    while s.step()? {
        out.push(s.text(0));
    }
    Ok(out)
}

/// The authority's own referrals, folded just now: (local seq, table id, packed key) of each
/// write that changed a row's scope cell. Each went in the row's old scope's stream (`fold.rs`);
/// the row, in another scope now, is transferred there, and into every stream it was
/// transferred to before. Elsewhere nothing happens.
pub(crate) fn queue_own_moves(
    conn: Conn,
    tables: &[crate::schema::Tracked],
    moves: &[(u64, i64, Vec<u8>)],
) -> Result<(), Error> {
    if !is_authority(conn)? {
        return Ok(());
    }
    let Some(scopes) = crate::row_scope::Scopes::new(conn, tables)? else {
        return Ok(());
    };
    let runs = crate::streams::Runs::load(conn)?;
    let mut done: Vec<(i64, &[u8])> = Vec::new();
    for (lseq, tbl, key) in moves {
        if done.contains(&(*tbl, key.as_slice())) {
            continue;
        }
        done.push((*tbl, key));
        let Some(t) = tables.iter().find(|t| t.id == *tbl) else {
            continue;
        };
        let old = runs.stream_of(*lseq).map(|(s, _)| s).unwrap_or_default();
        let now = scopes.now(t, key)?;
        if now.is_empty() || now == old {
            continue;
        }
        let mut into = vec![now.clone()];
        for s in streams_of(conn, *tbl, key)? {
            if s != now && s != old && !into.contains(&s) {
                into.push(s);
            }
        }
        for stream in into {
            enqueue(conn, *tbl, key, &stream)?;
        }
    }
    Ok(())
}

/// How many transfers were ever queued (`outpost_status().transfers`).
pub(crate) fn count(conn: Conn) -> Result<i64, Error> {
    Ok(conn
        .query_i64("SELECT count(*) FROM _outpost_transfers", &[])?
        .unwrap_or(0))
}
