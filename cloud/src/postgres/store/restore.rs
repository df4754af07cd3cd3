//! A parent kept for its children, re-sent as the cloud's own write (`Store::restore`; the
//! engine's `resurrect`, `sqlite-ext/src/apply/restore.rs`): the cloud's way to make a write of
//! its own on PostgreSQL is a captured write, as a back office makes one.
//!
//! The row's state as merged so far goes to `outpost.capture_rows` (its causal length even: the
//! delete), its app row (if any) is removed uncaptured, and the row is inserted again with
//! capture on (`outpost.applying` off for that one statement): capture numbers the insert's
//! epoch after the delete, takes a clock and a seq of the cloud's origin and writes every column
//! to the outbox, which devices pull. Fold (`fold.rs`) then makes that write merge state at once,
//! as the engine's `write_local` does, so the rest of the apply merges against it.

use super::{sql, PgStore, StoreError};
use crate::postgres::pg_value::Param;
use crate::schema::quote;
use ::postgres::types::ToSql;
use outpost_apply_core::{RowState, Store, Table};
use outpost_protocol::Value;

impl PgStore<'_, '_> {
    /// [`Store::restore`].
    pub(super) fn restore_own(
        &mut self,
        t: &Table,
        key: &[Value],
        values: &[Value],
        st: &RowState,
    ) -> Result<RowState, StoreError> {
        self.send_held()?;
        let s = self.stmt(
            "INSERT INTO outpost.capture_rows AS r(tbl, key, exist, versions) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tbl, key) DO UPDATE SET exist = excluded.exist, versions = excluded.versions, \
             counters = CASE WHEN r.exist = excluded.exist THEN r.counters END, \
             reviews = CASE WHEN r.exist = excluded.exist THEN r.reviews END",
        )?;
        let ts = self.table(t)?;
        let k = ts.key(key);
        let versions = st.encode();
        self.tx
            .execute(&s, &[&(t.id as i32), &k, &(st.exist as i64), &versions])
            .map_err(sql(format!("writing a row's state in table {:?}", t.name)))?;
        let ts = self.table(t)?;
        let key_params: Vec<Param> = key
            .iter()
            .zip(&ts.key_kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = key_params.iter().map(|p| p as _).collect();
        let delete = format!("DELETE FROM {} WHERE {}", ts.qualified, ts.where_key(1));
        self.tx
            .execute(delete.as_str(), &refs)
            .map_err(sql(format!(
                "removing a row of table {:?} to restore it",
                t.name
            )))?;
        let ts = self.table(t)?;
        let mut cols: Vec<String> = ts.key_names.iter().map(|c| quote(c)).collect();
        cols.extend(ts.col_names.iter().map(|c| quote(c)));
        let kinds: Vec<_> = ts.key_kinds.iter().chain(&ts.col_kinds).copied().collect();
        let all: Vec<Param> = key
            .iter()
            .chain(values)
            .zip(&kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let placeholders: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| k.placeholder(i + 1))
            .collect();
        let insert = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            ts.qualified,
            cols.join(", "),
            placeholders.join(", ")
        );
        let refs: Vec<&(dyn ToSql + Sync)> = all.iter().map(|p| p as _).collect();
        self.tx
            .batch_execute("SET LOCAL outpost.applying = 'off'")
            .map_err(sql("switching capture on for the cloud's own write"))?;
        // A refused insert aborts the transaction: its error is the one to report (the
        // statement switching capture off again would only fail on the aborted transaction).
        self.tx
            .execute(insert.as_str(), &refs)
            .map_err(sql(format!(
                "restoring a row of table {:?} as the cloud's own write",
                t.name
            )))?;
        self.tx
            .batch_execute("SET LOCAL outpost.applying = 'on'")
            .map_err(sql("switching capture off again"))?;
        self.fold_captured()?;
        let ts = self.table(t)?;
        let known = (t.id, ts.key_names.join("\u{1f}"), ts.key(key));
        self.exists.insert(known, true);
        self.row(t, key)?.ok_or_else(|| StoreError::Damaged {
            what: format!("a row of table {:?} restored has no state", t.name),
        })
    }
}
