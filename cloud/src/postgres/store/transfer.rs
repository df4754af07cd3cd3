//! The cloud's transfers in PostgreSQL (apply-core's `transfer.rs` decides them): queued as an
//! outbox entry of the new scope's stream by `outpost.transfer` (`capture.sql`, which the capture
//! triggers call too for a back-office move), and the streams a row was transferred to, kept in
//! `outpost.transferred`.
//!
//! Reading a run of transfers as a batch (`postgres/transfer.rs`) asks two things of many rows at
//! once, as an apply's read-ahead does: the app values of the moving rows
//! ([`PgStore::read_values_ahead`], answered later by [`outpost_apply_core::Store::app_values`]
//! from a cache), and the `via` children of the moving rows ([`PgStore::rows_holding`]). A
//! back-office statement may move thousands of rows: a query per row and child table made a
//! 10,000-row move take seconds to read (docs/performance.md).

use super::unique::{read, select};
use super::{sql, PgStore, StoreError};
use crate::postgres::pg_value::{key_json, Param};
use crate::schema::quote;
use ::postgres::types::ToSql;
use outpost_apply_core::Table;
use outpost_protocol::Value;
use std::collections::{HashMap, HashSet};

impl PgStore<'_, '_> {
    /// The streams (scope names) the row of `t` with `key` was transferred into.
    pub(super) fn transferred_into(
        &mut self,
        t: &Table,
        key: &[Value],
    ) -> Result<Vec<String>, StoreError> {
        let s = self.stmt("SELECT stream FROM outpost.transferred WHERE tbl = $1 AND key = $2")?;
        let k = self.table(t)?.key(key);
        let rows = self
            .tx
            .query(&s, &[&(t.id as i32), &k])
            .map_err(sql(format!(
                "reading where a row of table {:?} was transferred",
                t.name
            )))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Queues a transfer of the row of `t` with `key` into the stream of scope `scope`.
    pub(super) fn queue_transfer(
        &mut self,
        t: &Table,
        key: &[Value],
        scope: &str,
    ) -> Result<(), StoreError> {
        let s = self.stmt("SELECT outpost.transfer($1, $2::text::jsonb, $3)")?;
        let k = self.table(t)?.key(key);
        log::info!(
            "postgres apply: row {k} of {:?} is in scope {scope:?}: transfer queued",
            t.name
        );
        self.tx
            .execute(&s, &[&(t.id as i32), &k, &scope])
            .map_err(sql(format!(
                "queueing a transfer of a row of table {:?} into scope {scope:?}",
                t.name
            )))?;
        Ok(())
    }

    /// Reads the app values of the rows of `t` with `keys` in one statement, kept for
    /// [`outpost_apply_core::Store::app_values`] to answer once each. Only rows found are
    /// kept: a key the statement did not match is asked again by itself, so the cache can
    /// only save statements, never answer differently. Call it only where nothing writes
    /// the table's rows before those answers are taken (the transfer read, after its fold).
    pub(crate) fn read_values_ahead(
        &mut self,
        t: &Table,
        keys: &[&[Value]],
    ) -> Result<(), StoreError> {
        self.send_held()?;
        let ts = self.table(t)?;
        let mut seen = HashSet::new();
        let mut wanted: Vec<&[Value]> = Vec::with_capacity(keys.len());
        for k in keys {
            if Self::all_fit(k, &ts.key_kinds) && seen.insert(ts.key(k)) {
                wanted.push(k);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let key_kinds = ts.key_kinds.clone();
        let kinds = ts.col_kinds.clone();
        let keys: Vec<String> = ts
            .key_names
            .iter()
            .map(|k| format!("a.{}", quote(k)))
            .collect();
        let mut cols = vec![format!("jsonb_build_array({})::text", keys.join(", "))];
        cols.extend(
            ts.col_names
                .iter()
                .zip(&kinds)
                .map(|(n, k)| format!("a.{}", select(n, *k))),
        );
        let text = match key_kinds.as_slice() {
            [k] => format!(
                "SELECT {} FROM {} a WHERE {} = ANY({})",
                cols.join(", "),
                ts.qualified,
                keys[0],
                k.from_array(&format!("$1::{}", k.array_type()))
            ),
            _ => {
                let arrays: Vec<String> = key_kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("${}::{}", i + 1, k.array_type()))
                    .collect();
                let exprs: Vec<String> = key_kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| k.from_array(&format!("u.c{i}")))
                    .collect();
                let aliases: Vec<String> = (0..key_kinds.len()).map(|i| format!("c{i}")).collect();
                format!(
                    "SELECT {} FROM {} a WHERE ({}) IN (SELECT {} FROM unnest({}) AS u({}))",
                    cols.join(", "),
                    ts.qualified,
                    keys.join(", "),
                    exprs.join(", "),
                    arrays.join(", "),
                    aliases.join(", ")
                )
            }
        };
        let columns: Vec<Vec<Param>> = (0..key_kinds.len())
            .map(|i| {
                wanted
                    .iter()
                    .map(|k| Param {
                        value: &k[i],
                        kind: key_kinds[i],
                    })
                    .collect()
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let rows = self.tx.query(text.as_str(), &params).map_err(sql(format!(
            "reading {} moving rows of table {:?}",
            wanted.len(),
            t.name
        )))?;
        for r in rows {
            let values = (0..kinds.len())
                .map(|i| read(&r, i + 1, kinds[i]))
                .collect();
            self.values_ahead.insert((t.id, r.get(0)), values);
        }
        Ok(())
    }

    /// The keys of the rows of `t` whose column `column` (a value-column index) holds each of
    /// `values`, in one statement: one list per value, in `values`' order (a `via` table's
    /// children of many moving parents).
    pub(crate) fn rows_holding(
        &mut self,
        t: &Table,
        column: usize,
        values: &[Value],
    ) -> Result<Vec<Vec<Vec<Value>>>, StoreError> {
        self.send_held()?;
        let ts = self.table(t)?;
        let kind = ts.col_kinds[column];
        let asked: Vec<&Value> = values
            .iter()
            .filter(|v| Self::all_fit(std::slice::from_ref(*v), &[kind]))
            .collect();
        let mut out = vec![Vec::new(); values.len()];
        if asked.is_empty() {
            return Ok(out);
        }
        let key_kinds = ts.key_kinds.clone();
        let mut cols = vec![format!("a.{}", select(&ts.col_names[column], kind))];
        cols.extend(
            ts.key_names
                .iter()
                .zip(&key_kinds)
                .map(|(n, k)| format!("a.{}", select(n, *k))),
        );
        // An `= ANY` over the values: an index scan where the column has one, one hashed pass
        // over the table where it has none (never a pass per value).
        let text = format!(
            "SELECT {} FROM {} a WHERE a.{} = ANY({})",
            cols.join(", "),
            ts.qualified,
            quote(&ts.col_names[column]),
            kind.from_array(&format!("$1::{}", kind.array_type()))
        );
        let array: Vec<Param> = asked.iter().map(|v| Param { value: v, kind }).collect();
        let rows = self
            .tx
            .query(text.as_str(), &[&array])
            .map_err(sql(format!(
                "reading the rows of table {:?} that reference {} moving rows",
                t.name,
                asked.len()
            )))?;
        let mut by_value: HashMap<String, Vec<Vec<Value>>> = HashMap::new();
        for r in rows {
            let held = key_json(&[read(&r, 0, kind)], &[kind]);
            let key = (0..key_kinds.len())
                .map(|i| read(&r, i + 1, key_kinds[i]))
                .collect();
            by_value.entry(held).or_default().push(key);
        }
        for (slot, v) in out.iter_mut().zip(values) {
            if let Some(keys) = by_value.get(&key_json(std::slice::from_ref(v), &[kind])) {
                slot.clone_from(keys);
            }
        }
        Ok(out)
    }
}
