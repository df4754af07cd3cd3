//! What the core asks a store about rows held aside with their parent (`outpost_apply_core`'s
//! `cascade.rs`): the rows referencing a row, and the tables holding rows held aside.

use super::{sql, PgStore, StoreError};
use crate::postgres::pg_value::Kind;
use outpost_apply_core::Table;
use outpost_protocol::Value;

impl PgStore<'_, '_> {
    /// [`outpost_apply_core::Store::referencing`]: keys in key order, so the entries of a
    /// parent's children are written in one order whatever the plan.
    pub(super) fn referencing_rows(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Value],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let ts = self.table(t)?;
        let kinds: Vec<Kind> = columns.iter().map(|c| ts.kind_of(c)).collect();
        self.keys_where(t, columns, &kinds, values, true, "rows referencing a row")
    }

    /// [`outpost_apply_core::Store::held_tables`] (`tombstones_held`, a partial index, keeps it
    /// one index probe however many deleted rows the tombstones keep).
    pub(super) fn tables_holding_rows_aside(&mut self) -> Result<Vec<i64>, StoreError> {
        let s = self.stmt("SELECT DISTINCT tbl FROM outpost.tombstones WHERE held")?;
        let rows = self
            .tx
            .query(&s, &[])
            .map_err(sql("listing the tables holding rows aside"))?;
        Ok(rows.iter().map(|r| i64::from(r.get::<_, i32>(0))).collect())
    }
}
