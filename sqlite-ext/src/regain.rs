//! Regaining a dropped scope (docs/design.md section 10, "Regrants"): a first sync that serves
//! this device its own past batches.
//!
//! A drained scope's rows leave without a delete (`drain.rs`), the rows only this device wrote
//! included. Pulls exclude the puller's own origin, so granted the scope again the device would
//! get every other origin's rows back but never its own. So:
//!
//! 1. **At the drop** ([`dropped`]) the scope is recorded here with the last seq of its own
//!    stream that relays hold (the drain seq: nothing above it was ever pushed). The drop
//!    deleted every `_outpost_vector` entry of the scope's streams, its own included.
//! 2. **Every hello** ([`declared`]) asks, for each recorded scope the grant holds again (and
//!    that is not draining), for its own stream served back from `since`: what it covers of
//!    that stream, kept as the own stream's `_outpost_vector` entry, which apply's gap check
//!    and advance maintain like any other origin's (so an interrupted first sync resumes). The
//!    vector it states for its own streams stays their issued tops (`store::vector` reads own
//!    streams from `streams::tops`, never from `_outpost_vector`): the push side, and a
//!    relay's check that the device lost nothing it pushed, are unchanged.
//! 3. **Apply** accepts batches of its own origin only for recorded scopes ([`accepts`]); all
//!    else stays `ApplyError::OwnOrigin`. Its cells merge as its own (site index 0, seq 0),
//!    which export never sends again.
//! 4. **Done** once it covers the recorded seq: the record and the own stream's
//!    `_outpost_vector` entry go, and hellos stop asking.
//!
//! Records are by scope name, what hellos ask and the own stream's `_outpost_vector` entry by
//! wire id (`wire_scope.rs`): pulled batches advance coverage under their clear header's stream.

use crate::error::Error;
use crate::ffi::Conn;
use crate::wire_scope::WireScopes;
use outpost_protocol::message::{Regain, MAX_REGAINS};
use outpost_protocol::scope::Scopes;
use outpost_protocol::{SiteId, Value};

/// Created with the bookkeeping (`schema::ensure`).
pub(crate) const TABLE: &str = "
CREATE TABLE IF NOT EXISTS _outpost_regains(scope TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
";

/// `scope` was dropped with its own stream pushed up to `last` (module documentation, step 1).
/// A scope dropped again replaces its record: its coverage was reset by the drop.
pub(crate) fn dropped(conn: Conn, scope: &str, last: u64) -> Result<(), Error> {
    if last == 0 {
        return Ok(());
    }
    let mut s =
        conn.prepare("INSERT OR REPLACE INTO _outpost_regains(scope, last) VALUES (?1, ?2)")?;
    s.bind_text(1, scope)?;
    s.bind_i64(2, i64::try_from(last).unwrap_or(i64::MAX))?;
    s.run()
}

/// What this device covers of its own stream `wire` (0: nothing yet).
fn covered(conn: Conn, me: SiteId, wire: &str) -> Result<u64, Error> {
    Ok(conn
        .query_i64(
            "SELECT covered FROM _outpost_vector WHERE site = ?1 AND stream = ?2",
            &[Value::Blob(me.0.to_vec()), Value::Text(wire.to_string())],
        )?
        .unwrap_or(0)
        .max(0) as u64)
}

/// What a hello asks served back (module documentation, step 2): each recorded scope `grant`
/// holds (`None`: no grant known, every scope) and that is not draining, with what it covers
/// of its own stream there; the first [`MAX_REGAINS`] (the rest are asked for as these finish).
/// Finished regains are forgotten first (step 4).
pub(crate) fn declared(
    conn: Conn,
    me: SiteId,
    grant: Option<&Scopes>,
) -> Result<Vec<Regain>, Error> {
    let mut recorded = Vec::new();
    {
        let mut s = conn.prepare(
            "SELECT scope, last FROM _outpost_regains \
             WHERE scope NOT IN (SELECT scope FROM _outpost_drains) ORDER BY scope",
        )?;
        while s.step()? {
            recorded.push((s.text(0), s.i64(1).max(0) as u64));
        }
    }
    let wire = WireScopes::load(conn)?;
    let mut out = Vec::new();
    for (scope, last) in recorded {
        let id = wire.of(&scope);
        let since = covered(conn, me, &id)?;
        if since >= last {
            finish(conn, me, &scope, &id)?;
        } else if grant.is_none_or(|g| wire.holds(g, &scope)) && out.len() < MAX_REGAINS {
            out.push(Regain { scope: id, since });
        }
    }
    Ok(out)
}

/// Forgets the regain of `scope` (wire id `wire`): its own stream is covered up to the drop's
/// seq.
fn finish(conn: Conn, me: SiteId, scope: &str, wire: &str) -> Result<(), Error> {
    let mut s = conn.prepare("DELETE FROM _outpost_regains WHERE scope = ?1")?;
    s.bind_text(1, scope)?;
    s.run()?;
    let mut s = conn.prepare("DELETE FROM _outpost_vector WHERE site = ?1 AND stream = ?2")?;
    s.bind_blob(1, &me.0)?;
    s.bind_text(2, wire)?;
    s.run()?;
    log::info!("outpost_sync: scope {scope:?} regained: its own past batches are back");
    Ok(())
}

/// Whether a pulled batch of this device's own origin in stream `wire` (its clear header's)
/// may be applied: its scope is being regained, not draining (module documentation, step 3).
pub(crate) fn accepts(conn: Conn, wire: &str) -> Result<bool, Error> {
    let ids = WireScopes::load(conn)?;
    let mut s = conn.prepare(
        "SELECT scope FROM _outpost_regains \
         WHERE scope NOT IN (SELECT scope FROM _outpost_drains)",
    )?;
    while s.step()? {
        if ids.of(&s.text(0)) == wire {
            return Ok(true);
        }
    }
    Ok(false)
}
