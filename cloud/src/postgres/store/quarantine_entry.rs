//! A quarantine entry's change as the engine stores it.

use outpost_protocol::batch::{CellPayload, RowChange, TableSchema};
use outpost_protocol::{Hlc, SiteId, Value};
use serde::Serialize;

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
