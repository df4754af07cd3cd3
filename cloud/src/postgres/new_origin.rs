//! A PostgreSQL tenant taking a new origin after a restore (docs/design.md section 11,
//! "Durability"; the steps around it: `cloud/src/new_origin.rs`). In one transaction, holding
//! the apply lock and the clock row (so no apply and no back-office write runs meanwhile):
//!
//! - the back office's writes not folded yet are folded as the old origin's (they were captured
//!   under it);
//! - the old origin's captured writes leave the outbox. Those the mailbox holds as batches are
//!   exported already. Those above may not be issued again under their seqs, which peers may
//!   hold for other changes (written before the restore and lost with it), nor dropped, which
//!   would lose them (written after the restore, or never exported). Each row they wrote is
//!   **reissued as a transfer** under the new origin, into the stream the write was captured
//!   in: a batch carrying the row whole with its merge state credited to the sites that wrote
//!   it (`transfer.rs`), so the old origin's writes reach peers as the old origin's, with their
//!   own clocks, whichever of them peers held already (merging a version twice changes
//!   nothing), and nothing is credited to the new origin that it did not write. Transfers not
//!   exported yet are queued again the same way;
//! - every stream's seqs and fold mark start again at 0, for the new origin;
//! - the cloud's own counter contributions and review clocks per row (`capture_rows`) are
//!   cleared: the new origin's contributions start at nothing, the old one's stay in the merge
//!   state as another site's;
//! - the tenant's vector covers the old origin up to what the mailbox holds of it, so what
//!   peers bring back above that is applied as another origin's;
//! - `outpost.meta` names the new origin (`origin`) and remembers the old one
//!   (`retired:<site>`: what was held of each stream).
//!
//! What the reissue cannot mend: a row both sides of the fork wrote under the old origin (a
//! write peers took before the restore and lost with it, and another made after it) holds two
//! versions credited to one site. For a `lww` cell the later clock wins everywhere; of a counter
//! the two contributions of that one site cannot both count, and the merge keeps one, the
//! same one on every replica that sees both. Writes made between a restore and the recovery
//! were kept aside (`outpost.retired_outbox`) by an earlier build; [`reissue`] sends them the
//! same way at a process's start.

use super::apply::APPLY_LOCK;
use super::store::{PgStore, StoreError};
use ::postgres::{Client, Transaction};
use outpost_protocol::SiteId;
use std::collections::BTreeMap;
use std::fmt;

/// The `outpost.meta` row naming the origin the cloud writes under now (absent: its site id).
pub const ORIGIN: &str = "origin";
/// The prefix of the `outpost.meta` rows naming a retired origin.
pub const RETIRED: &str = "retired:";

const RETIRED_OUTBOX: &str = "
CREATE TABLE IF NOT EXISTS outpost.retired_outbox(
  origin bytea NOT NULL,
  stream text NOT NULL,
  seq bigint NOT NULL,
  hlc bigint NOT NULL,
  tbl integer NOT NULL,
  key jsonb NOT NULL,
  exist bigint NOT NULL,
  op smallint NOT NULL,
  cells jsonb,
  extra jsonb,
  PRIMARY KEY (origin, stream, seq));";

/// What [`take`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Captured writes folded first.
    pub folded: u64,
    /// Captured writes of the old origin above what the mailbox held.
    pub above_held: u64,
    /// Rows queued as transfers under the new origin: those these writes wrote, and those
    /// whose transfers were pending.
    pub reissued: u64,
}

/// Why the new origin could not be taken (nothing changed).
#[derive(Debug)]
pub enum NewOriginError {
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// Folding the back office's writes failed.
    Fold(StoreError),
}

impl fmt::Display for NewOriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewOriginError::Sql { doing, .. } => write!(f, "{doing}"),
            NewOriginError::Fold(e) => {
                write!(
                    f,
                    "folding the back office's writes before a new origin: {e}"
                )
            }
        }
    }
}

impl std::error::Error for NewOriginError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NewOriginError::Sql { source, .. } => Some(source),
            NewOriginError::Fold(e) => Some(e),
        }
    }
}

fn sql(doing: impl Into<String>) -> impl FnOnce(::postgres::Error) -> NewOriginError {
    let doing = doing.into();
    move |source| NewOriginError::Sql { doing, source }
}

/// A transaction holding the tenant's apply lock and the clock row, so no apply and no
/// back-office write runs while the origin's outbox changes.
fn locked(client: &mut Client) -> Result<Transaction<'_>, NewOriginError> {
    let mut tx = client
        .transaction()
        .map_err(sql("starting a transaction"))?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({APPLY_LOCK}); \
         SET LOCAL outpost.applying = 'on'; \
         SELECT outpost.clock_hold();"
    ))
    .map_err(sql("taking the tenant's apply lock and the clock row"))?;
    Ok(tx)
}

/// The origin `outpost.meta` names (its site id until a new one was taken).
pub fn current(
    client: &mut impl ::postgres::GenericClient,
    site: SiteId,
) -> Result<SiteId, NewOriginError> {
    let row = client
        .query_opt("SELECT value FROM outpost.meta WHERE name = $1", &[&ORIGIN])
        .map_err(sql("reading the cloud's origin from outpost.meta"))?;
    Ok(row
        .and_then(|r| r.get::<_, String>(0).parse().ok())
        .unwrap_or(site))
}

/// Moves the tenant from origin `old` to `new` (module documentation). `held` is what the
/// mailbox holds of each of `old`'s streams, by the name capture gives the stream, with the
/// stream's wire id (the tenant's vector is kept by wire id). `None`, changing nothing, when the
/// tenant no longer writes under `old` (another process serving it took a new origin first).
pub fn take(
    client: &mut Client,
    old: SiteId,
    new: SiteId,
    held: &BTreeMap<String, (String, u64)>,
) -> Result<Option<Taken>, NewOriginError> {
    let mut tx = locked(client)?;
    if current(&mut tx, old)? != old {
        return Ok(None);
    }
    let folded = PgStore::new(&mut tx, old, false)
        .fold_captured()
        .map_err(NewOriginError::Fold)?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning; {RETIRED_OUTBOX}"
    ))
    .map_err(sql("creating outpost.retired_outbox"))?;
    let mut above = 0;
    for (name, (wire, seq)) in held {
        let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
        above += tx
            .execute(
                "INSERT INTO outpost.retired_outbox \
                   SELECT $1, stream, seq, hlc, tbl, key, exist, op, cells, extra \
                   FROM outpost.outbox WHERE stream = $2 AND seq > $3",
                &[&old.as_bytes().as_slice(), name, &seq],
            )
            .map_err(sql(format!(
                "keeping aside the writes of stream {name:?} above seq {seq}"
            )))?;
        tx.execute(
            "INSERT INTO outpost.vector(origin, stream, covered) VALUES ($1, $2, $3) \
             ON CONFLICT (origin, stream) DO UPDATE \
             SET covered = greatest(outpost.vector.covered, excluded.covered)",
            &[&old.as_bytes().as_slice(), wire, &seq],
        )
        .map_err(sql(format!("covering stream {name:?} of the old origin")))?;
    }
    // Streams the mailbox holds nothing of: everything captured in them is kept aside.
    above += tx
        .execute(
            "INSERT INTO outpost.retired_outbox \
               SELECT $1, o.stream, o.seq, o.hlc, o.tbl, o.key, o.exist, o.op, o.cells, o.extra \
               FROM outpost.outbox o WHERE NOT (o.stream = ANY($2))",
            &[
                &old.as_bytes().as_slice(),
                &held.keys().cloned().collect::<Vec<String>>(),
            ],
        )
        .map_err(sql("keeping aside the writes of streams never exported"))?;
    tx.batch_execute(
        "DELETE FROM outpost.outbox; \
         UPDATE outpost.streams SET seq = 0, folded = 0; \
         UPDATE outpost.capture_rows SET counters = NULL, reviews = NULL \
           WHERE counters IS NOT NULL OR reviews IS NOT NULL;",
    )
    .map_err(sql("starting the streams again for the new origin"))?;
    let transfers: i64 = tx
        .query_one(
            "SELECT count(*) FROM outpost.retired_outbox WHERE origin = $1 AND op = 4",
            &[&old.as_bytes().as_slice()],
        )
        .map_err(sql("counting the old origin's pending transfers"))?
        .get(0);
    let reissued = reissue_in(&mut tx)?;
    let record: BTreeMap<&String, u64> = held.values().map(|(w, s)| (w, *s)).collect();
    tx.execute(
        "INSERT INTO outpost.meta(name, value) VALUES ($1, $2), ($3, $4) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        &[
            &ORIGIN,
            &new.to_string(),
            &format!("{RETIRED}{old}"),
            &serde_json::to_string(&record).expect("a map of seqs serialises"),
        ],
    )
    .map_err(sql("naming the new origin in outpost.meta"))?;
    tx.commit().map_err(sql("committing the new origin"))?;
    Ok(Some(Taken {
        folded,
        above_held: above - transfers as u64,
        reissued,
    }))
}

/// Every row a write in `outpost.retired_outbox` wrote, queued as a transfer under the current
/// origin in the stream the write was captured in (module documentation), once per row and
/// stream, in the order of their first writes; the table is left empty. Returns how many.
fn reissue_in(tx: &mut Transaction<'_>) -> Result<u64, NewOriginError> {
    tx.execute(
        "WITH k AS (DELETE FROM outpost.retired_outbox RETURNING stream, seq, tbl, key), \
           f AS (SELECT stream, tbl, key, min(seq) AS first FROM k GROUP BY stream, tbl, key), \
           top AS (SELECT s.stream, greatest( \
               coalesce((SELECT st.seq FROM outpost.streams st WHERE st.stream = s.stream), 0), \
               coalesce((SELECT max(o.seq) FROM outpost.outbox o WHERE o.stream = s.stream), 0) \
             ) AS seq FROM (SELECT DISTINCT stream FROM f) s) \
         INSERT INTO outpost.outbox(stream, seq, hlc, tbl, key, exist, op, cells, extra) \
           SELECT f.stream, top.seq + row_number() OVER \
               (PARTITION BY f.stream ORDER BY f.first, f.tbl, f.key::text), \
             0, f.tbl, f.key, 0, 4, NULL, NULL \
           FROM f JOIN top ON top.stream = f.stream",
        &[],
    )
    .map_err(sql(
        "queueing the retired origins' writes again as transfers under the new origin",
    ))
}

/// Sends what an earlier build kept aside in `outpost.retired_outbox` (the writes of a retired
/// origin above what the mailbox held, which it did not export) as [`take`] sends them now:
/// each row queued as a transfer under the current origin. Once, at a process's start, under
/// the apply lock and the clock row; returns how many rows (0 when nothing was kept aside).
pub fn reissue(client: &mut Client) -> Result<u64, NewOriginError> {
    if kept_aside(client)? == 0 {
        return Ok(0);
    }
    let mut tx = locked(client)?;
    let n = reissue_in(&mut tx)?;
    tx.commit()
        .map_err(sql("committing the kept-aside writes queued as transfers"))?;
    Ok(n)
}

/// The retired origins `outpost.meta` remembers, with what was held of each stream (wire id).
pub fn retired(client: &mut Client) -> Result<Vec<(String, String)>, NewOriginError> {
    let rows = client
        .query(
            "SELECT substr(name, length($1) + 1), value FROM outpost.meta \
             WHERE starts_with(name, $1) ORDER BY name",
            &[&RETIRED],
        )
        .map_err(sql("reading the retired origins from outpost.meta"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// How many captured writes of retired origins are kept aside, not exported.
pub fn kept_aside(client: &mut Client) -> Result<u64, NewOriginError> {
    // Looked for first: a statement naming a missing table fails as it is planned.
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('outpost.retired_outbox') IS NOT NULL",
            &[],
        )
        .map_err(sql("looking for outpost.retired_outbox"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let n: i64 = client
        .query_one("SELECT count(*) FROM outpost.retired_outbox", &[])
        .map_err(sql("counting outpost.retired_outbox"))?
        .get(0);
    Ok(n as u64)
}
