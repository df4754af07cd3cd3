//! A PostgreSQL tenant taking a new origin after a restore (docs/design.md section 11,
//! "Durability"; the steps around it: `cloud/src/new_origin.rs`). In one transaction, holding
//! the apply lock and the clock row (so no apply and no back-office write runs meanwhile):
//!
//! - the back office's writes not folded yet are folded as the old origin's (they were captured
//!   under it);
//! - the old origin's captured writes leave the outbox: those the mailbox holds as batches are
//!   exported already; those above are kept in `outpost.retired_outbox`, not exported (their
//!   seqs may be ones peers hold for other changes: which of them were written after the
//!   restore is the second step of the recovery, not built yet). Transfers not exported yet
//!   are queued again under the new origin instead: they carry no write of their own (their
//!   batch reads the row's merge state when it is read);
//! - every stream's seqs and fold mark start again at 0, for the new origin;
//! - the cloud's own counter contributions and review clocks per row (`capture_rows`) are
//!   cleared: the new origin's contributions start at nothing, the old one's stay in the merge
//!   state as another site's;
//! - the tenant's vector covers the old origin up to what the mailbox holds of it, so what
//!   peers bring back above that is applied as another origin's;
//! - `outpost.meta` names the new origin (`origin`) and remembers the old one
//!   (`retired:<site>`: what was held of each stream).

use super::apply::APPLY_LOCK;
use super::store::{PgStore, StoreError};
use ::postgres::Client;
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
    /// Captured writes of the old origin above what the mailbox held, kept aside.
    pub kept_aside: u64,
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
    let mut tx = client
        .transaction()
        .map_err(sql("starting a transaction"))?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({APPLY_LOCK}); \
         SET LOCAL outpost.applying = 'on'; \
         SELECT outpost.clock_hold();"
    ))
    .map_err(sql("taking the tenant's apply lock and the clock row"))?;
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
    let mut kept_aside = 0;
    for (name, (wire, seq)) in held {
        let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
        kept_aside += tx
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
    kept_aside += tx
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
    // A transfer not exported yet holds no write of its own (its batch reads the row's merge
    // state when it is read, `transfer.rs`): queued again under the new origin, in its order,
    // rather than kept aside, so the row still reaches its new scope.
    let requeued = tx
        .execute(
            "WITH t AS (DELETE FROM outpost.retired_outbox WHERE origin = $1 AND op = 4 \
               RETURNING stream, seq, tbl, key) \
             INSERT INTO outpost.outbox(stream, seq, hlc, tbl, key, exist, op, cells, extra) \
               SELECT stream, row_number() OVER (PARTITION BY stream ORDER BY seq), 0, tbl, key, \
                 0, 4, NULL, NULL FROM t",
            &[&old.as_bytes().as_slice()],
        )
        .map_err(sql("queueing the old origin's pending transfers again"))?;
    kept_aside -= requeued;
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
    Ok(Some(Taken { folded, kept_aside }))
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
