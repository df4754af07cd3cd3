//! `outpost_quarantine`: changes that could not be applied, kept with a reason, retried later.
//!
//! A quarantined change never blocks the rest of its batch or later batches (DESIGN I5). Each
//! entry stores the change as JSON (origin, the batch's description of the table, the row), so it
//! can be re-applied as is by `outpost_retry_quarantine()`, automatically after each apply, and
//! when the schema gains columns (values for a column this database did not have yet wait here).
//! This module is the store of entries; re-applying them is the apply's (`apply/retry.rs`).

use crate::error::Error;
use crate::ffi::Conn;
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
    conn: Conn,
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
    let change = serde_json::to_string(&q).map_err(|source| Error::InternalJson {
        what: "a quarantined change as JSON",
        source,
    })?;
    let pk = crate::json::key_json(&crate::keys::pack(&row.key))?;
    let mut s = conn.prepare(
        "INSERT INTO outpost_quarantine(\"table\", pk, reason, change) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(change) DO UPDATE SET reason = excluded.reason",
    )?;
    s.bind_text(1, &table.name)?;
    s.bind_text(2, &pk)?;
    s.bind_text(3, reason)?;
    s.bind_text(4, &change)?;
    s.run()
}

fn parse(change: &str) -> Result<(SiteId, TableSchema, RowChange), Error> {
    let q: QChange = serde_json::from_str(change).map_err(|source| Error::CorruptJson {
        what: "quarantined change",
        source,
    })?;
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

/// One stored entry: its id, and the change as it arrived.
pub(crate) struct Entry {
    pub id: i64,
    pub origin: SiteId,
    pub table: TableSchema,
    pub row: RowChange,
}

/// Every entry, oldest first.
pub(crate) fn entries(conn: Conn) -> Result<Vec<Entry>, Error> {
    let mut stored = Vec::new();
    {
        let mut s = conn.prepare("SELECT id, change FROM outpost_quarantine ORDER BY id")?;
        while s.step()? {
            stored.push((s.i64(0), s.text(1)));
        }
    }
    stored
        .into_iter()
        .map(|(id, change)| {
            let (origin, table, row) = parse(&change)?;
            Ok(Entry {
                id,
                origin,
                table,
                row,
            })
        })
        .collect()
}

/// Removes an entry whose change has now applied.
pub(crate) fn remove(conn: Conn, id: i64) -> Result<(), Error> {
    let mut s = conn.prepare("DELETE FROM outpost_quarantine WHERE id = ?1")?;
    s.bind_i64(1, id)?;
    s.run()
}
