//! `outpost_quarantine`: changes that could not be applied, kept with a reason, retried later.
//!
//! A quarantined change never blocks the rest of its batch or later batches (DESIGN I5). Each
//! entry stores the change as JSON (origin, the batch's description of the table, the row), so it
//! can be re-applied as is by `outpost_retry_quarantine()`, automatically after each apply, and
//! when the schema gains columns (values for a column this database did not have yet wait here).

use crate::apply::{Applier, Outcome};
use crate::error::Error;
use crate::functions::{Arg, Call};
use outpost_protocol::batch::{CellChange, CellPayload, RowChange, TableSchema};
use outpost_protocol::{Hlc, SiteId, Value};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum QPayload {
    Value(Value),
    Counter(i64),
    Review {
        value: Value,
        context: Vec<(SiteId, Hlc)>,
    },
}

#[derive(Serialize, Deserialize)]
struct QCell {
    column: u16,
    hlc: Hlc,
    payload: QPayload,
}

/// A quarantined change, as stored.
#[derive(Serialize, Deserialize)]
struct QChange {
    origin: SiteId,
    table: TableSchema,
    key: Vec<Value>,
    existence: u64,
    cells: Vec<QCell>,
}

/// Stores a change (idempotent: the same change twice is one entry).
pub(crate) fn put(
    call: &Call,
    origin: SiteId,
    table: &TableSchema,
    row: &RowChange,
    reason: &str,
) -> Result<(), Error> {
    let q = QChange {
        origin,
        table: table.clone(),
        key: row.key.clone(),
        existence: row.existence,
        cells: row
            .cells
            .iter()
            .map(|c| QCell {
                column: c.column,
                hlc: c.hlc,
                payload: match &c.payload {
                    CellPayload::Value(v) => QPayload::Value(v.clone()),
                    CellPayload::Counter(n) => QPayload::Counter(*n),
                    CellPayload::Review { value, context } => QPayload::Review {
                        value: value.clone(),
                        context: context.clone(),
                    },
                },
            })
            .collect(),
    };
    let change = serde_json::to_string(&q).map_err(|e| Error::Internal(e.to_string()))?;
    let pk = crate::cells::key_json(&crate::keys::pack(&row.key))?;
    let mut s = call.conn.prepare(
        "INSERT INTO outpost_quarantine(\"table\", pk, reason, change) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(change) DO UPDATE SET reason = excluded.reason",
    )?;
    s.bind_text(1, &table.name)?;
    s.bind_text(2, &pk)?;
    s.bind_text(3, reason)?;
    s.bind_text(4, &change)?;
    s.run()
}

fn parse(change: &str) -> Result<(SiteId, TableSchema, RowChange), Error> {
    let q: QChange = serde_json::from_str(change)
        .map_err(|e| Error::Corrupt(format!("quarantined change: {e}")))?;
    let cells = q
        .cells
        .into_iter()
        .map(|c| CellChange {
            column: c.column,
            hlc: c.hlc,
            payload: match c.payload {
                QPayload::Value(v) => CellPayload::Value(v),
                QPayload::Counter(n) => CellPayload::Counter(n),
                QPayload::Review { value, context } => CellPayload::Review { value, context },
            },
        })
        .collect();
    Ok((
        q.origin,
        q.table,
        RowChange {
            key: q.key,
            existence: q.existence,
            cells,
        },
    ))
}

/// Re-applies every entry that now applies; returns how many left the quarantine. Runs inside the
/// caller's transaction, with capture suppressed by the caller. Rows held aside by a UNIQUE
/// collision are settled first (`Applier::settle`), and again after: what the entries applied
/// may free values, and a row put back lets its entries go in a second pass.
pub(crate) fn retry_with(call: &Call, applier: &mut Applier) -> Result<u64, Error> {
    let mut done = 0;
    for round in 0..4 {
        let placed = applier.settle()?;
        if round > 0 && placed == 0 {
            break;
        }
        done += retry_entries(call, applier)?;
    }
    Ok(done)
}

fn retry_entries(call: &Call, applier: &mut Applier) -> Result<u64, Error> {
    let mut entries = Vec::new();
    {
        let mut s = call
            .conn
            .prepare("SELECT id, change FROM outpost_quarantine ORDER BY id")?;
        while s.step()? {
            entries.push((s.i64(0), s.text(1)));
        }
    }
    let mut done = 0;
    for (id, change) in entries {
        let (origin, table, row) = parse(&change)?;
        let applied_before = applier.stats.applied;
        let o = applier.merge_row(origin, &table, &row)?;
        // An entry of a row held aside (apply/unique.rs) "applies" as a no-op: it stays for a
        // person while the row is held aside. Once the row is back, or a later change deleted
        // it, the entry goes, as on a replica that never held it aside (DESIGN I1).
        let kept =
            applier.stats.applied == applied_before && applier.is_evicted(&table.name, &row.key)?;
        if o == Outcome::Applied && !kept {
            let mut s = call
                .conn
                .prepare("DELETE FROM outpost_quarantine WHERE id = ?1")?;
            s.bind_i64(1, id)?;
            s.run()?;
            done += 1;
        }
    }
    Ok(done)
}

/// Retries within the caller's transaction (after fold noticed new columns).
pub(crate) fn retry_all(call: &Call) -> Result<u64, Error> {
    let _quiet = call.session.suppress();
    let mut applier = Applier::new(call)?;
    retry_with(call, &mut applier)
}

/// `outpost_retry_quarantine()`.
pub(crate) fn sql_retry(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_retry_quarantine"));
    }
    crate::schema::ensure(call.conn)?;
    call.conn.exec("SAVEPOINT outpost_retry")?;
    let r = (|| {
        crate::fold::fold(call)?;
        call.conn.exec("PRAGMA defer_foreign_keys = ON")?;
        retry_all(call)
    })();
    crate::schema::finish_savepoint(call.conn, "outpost_retry", r).map(|n| Value::Integer(n as i64))
}
