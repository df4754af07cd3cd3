//! What the core asks a store about rows held aside with their parent (`outpost_apply_core`'s
//! `cascade.rs`): the rows referencing a row, and the tables holding rows held aside.

use super::unique::{read, select};
use super::{sql, where_columns, PgStore, StoreError};
use crate::postgres::pg_value::{Kind, Param};
use ::postgres::types::ToSql;
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
        self.send_held()?;
        let ts = self.table(t)?;
        let kinds: Vec<Kind> = columns.iter().map(|c| ts.kind_of(c)).collect();
        // A value the column cannot hold is in no row of it.
        if !Self::all_fit(values, &kinds) {
            return Ok(Vec::new());
        }
        let key_kinds = ts.key_kinds.clone();
        let cols: Vec<String> = ts
            .key_names
            .iter()
            .zip(&key_kinds)
            .map(|(n, k)| select(n, *k))
            .collect();
        let text = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {}",
            cols.join(", "),
            ts.qualified,
            where_columns(columns, &kinds, 1),
            (1..=cols.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let params: Vec<Param> = values
            .iter()
            .zip(&kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.tx.query(text.as_str(), &refs).map_err(sql(format!(
            "looking for rows referencing a row in table {:?}",
            t.name
        )))?;
        Ok(rows
            .iter()
            .map(|r| {
                key_kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| read(r, i, *k))
                    .collect()
            })
            .collect())
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
