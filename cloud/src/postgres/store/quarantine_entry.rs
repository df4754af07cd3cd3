//! A quarantine entry's change as the engine stores it, and read back for the quarantine
//! retry (the engine's `parse`).

use outpost_protocol::batch::{CellChange, CellPayload, RowChange, TableSchema};
use outpost_protocol::{Hlc, SiteId, Value};
use serde::{Deserialize, Serialize};

/// A quarantined change as the engine stores it (`sqlite-ext/src/quarantine.rs`): the same
/// shape serialises to the same JSON, so entries compare equal across stores.
#[derive(Serialize)]
enum QPayload<'a> {
    Value(&'a Value),
    Counter(i64),
    Review {
        value: &'a Value,
        context: &'a Vec<(SiteId, Hlc)>,
    },
}

#[derive(Serialize)]
struct QCell<'a> {
    column: u16,
    hlc: Hlc,
    payload: QPayload<'a>,
}

#[derive(Serialize)]
struct QChange<'a> {
    origin: SiteId,
    table: &'a TableSchema,
    key: &'a Vec<Value>,
    existence: u64,
    cells: Vec<QCell<'a>>,
}

/// `row` of `origin` in `table` as the engine's quarantine JSON.
pub(super) fn change_json(
    origin: SiteId,
    table: &TableSchema,
    row: &RowChange,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&QChange {
        origin,
        table,
        key: &row.key,
        existence: row.existence,
        cells: row
            .cells
            .iter()
            .map(|c| QCell {
                column: c.column,
                hlc: c.hlc,
                payload: match &c.payload {
                    CellPayload::Value(v) => QPayload::Value(v),
                    CellPayload::Counter(n) => QPayload::Counter(*n),
                    CellPayload::Review { value, context } => QPayload::Review { value, context },
                },
            })
            .collect(),
    })
}

/// [`QPayload`] read back.
#[derive(Deserialize)]
enum StoredPayload {
    Value(Value),
    Counter(i64),
    Review {
        value: Value,
        context: Vec<(SiteId, Hlc)>,
    },
}

#[derive(Deserialize)]
struct StoredCell {
    column: u16,
    hlc: Hlc,
    payload: StoredPayload,
}

#[derive(Deserialize)]
struct StoredChange {
    origin: SiteId,
    table: TableSchema,
    key: Vec<Value>,
    existence: u64,
    cells: Vec<StoredCell>,
}

/// A change stored by [`change_json`] (or the engine): its origin, table and row.
pub(super) fn parse(json: &str) -> Result<(SiteId, TableSchema, RowChange), serde_json::Error> {
    let q: StoredChange = serde_json::from_str(json)?;
    let cells = q
        .cells
        .into_iter()
        .map(|c| CellChange {
            column: c.column,
            hlc: c.hlc,
            payload: match c.payload {
                StoredPayload::Value(v) => CellPayload::Value(v),
                StoredPayload::Counter(n) => CellPayload::Counter(n),
                StoredPayload::Review { value, context } => CellPayload::Review { value, context },
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
