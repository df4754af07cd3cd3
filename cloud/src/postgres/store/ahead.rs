//! Reading ahead: a group's rows' state, and the parents they reference, in one query each
//! (the core's hints, `Store::prefetch_rows` and `Store::prefetch_exists`), answered later from
//! [`PgStore`]'s caches instead of a statement per row.

use super::{sql, PgStore, StoreError};
use crate::postgres::pg_value::{key_json, Kind, Param};
use crate::schema::quote;
use ::postgres::types::ToSql;
use outpost_apply_core::{RowState, Table};
use outpost_protocol::Value;

impl PgStore<'_, '_> {
    /// [`Store::prefetch_rows`]: the rows' state and, for those without, whether their app
    /// rows exist, for every key of the group at once: two statements, each probing one index
    /// per key and nothing else. Neither may become a scan of a whole table: the planner did
    /// that, hashing every row of the table for each group while a bulk load kept the table's
    /// statistics behind, and filtering every state row of the table when the keys were an
    /// array compared with the second column of `capture_rows`' key. The app rows' lookup is a
    /// one-column `= ANY` (an index scan over the array), the state read a lateral probe per
    /// key.
    pub(super) fn read_rows_ahead(
        &mut self,
        t: &Table,
        keys: &[&[Value]],
    ) -> Result<(), StoreError> {
        let ts = self.table(t)?;
        let mut seen = std::collections::HashSet::new();
        let mut json = Vec::with_capacity(keys.len());
        let mut wanted: Vec<&[Value]> = Vec::with_capacity(keys.len());
        for k in keys {
            if !Self::all_fit(k, &ts.key_kinds) {
                continue;
            }
            let j = ts.key(k);
            if self.states.contains_key(&(t.id, j.clone())) || !seen.insert(j.clone()) {
                continue;
            }
            json.push(j);
            wanted.push(k);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        // One index probe per key, from the keys: a lateral subquery (kept apart by its LIMIT)
        // fixes that order whatever the statistics say. Not `key = ANY($2)`: with the array the
        // planner used the index's first column alone (`tbl = $1`) and filtered every state row
        // of the table in the heap, for each group (a bitmap scan whose cost grows with the
        // table: 32 us per key in the end-to-end benchmark at 600,000 rows, docs/performance.md).
        let s = self.stmt(
            "SELECT r.key, r.exist, r.versions FROM unnest($2::text[]) AS u(k) \
             CROSS JOIN LATERAL (SELECT c.key, c.exist, c.versions FROM outpost.capture_rows c \
             WHERE c.tbl = $1 AND c.key = u.k LIMIT 1) r",
        )?;
        let rows = self
            .tx
            .query(&s, &[&(t.id as i32), &json])
            .map_err(sql(format!(
                "reading the state of {} rows of table {:?}",
                json.len(),
                t.name
            )))?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            let k: String = r.get(0);
            let exist: i64 = r.get(1);
            let versions: Option<&[u8]> = r.get(2);
            let st = RowState::decode(exist as u64, versions.unwrap_or(&[0])).map_err(|e| {
                StoreError::Damaged {
                    what: format!("table {:?}: {e}", t.name),
                }
            })?;
            found.insert(k, st);
        }
        // The app rows of keys without state: a row only the back office wrote (and that was not
        // folded), or one from before capture was installed, is alive at 1.
        let ts = self.table(t)?;
        let stateless: Vec<usize> = (0..json.len())
            .filter(|&i| !found.contains_key(&json[i]))
            .collect();
        let mut app_rows = std::collections::HashSet::new();
        if !stateless.is_empty() {
            let n = ts.key_kinds.len();
            let names: Vec<String> = ts
                .key_names
                .iter()
                .map(|k| format!("a.{}", quote(k)))
                .collect();
            let text = if n == 1 {
                let k = ts.key_kinds[0];
                format!(
                    "SELECT jsonb_build_array({0})::text FROM {1} a WHERE {0} = ANY({2})",
                    names[0],
                    ts.qualified,
                    k.from_array(&format!("$1::{}", k.array_type()))
                )
            } else {
                let arrays: Vec<String> = ts
                    .key_kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("${}::{}", i + 1, k.array_type()))
                    .collect();
                let exprs: Vec<String> = ts
                    .key_kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| k.from_array(&format!("u.c{i}")))
                    .collect();
                let aliases: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
                format!(
                    "SELECT jsonb_build_array({0})::text FROM {1} a WHERE ({0}) IN \
                     (SELECT {2} FROM unnest({3}) AS u({4}))",
                    names.join(", "),
                    ts.qualified,
                    exprs.join(", "),
                    arrays.join(", "),
                    aliases.join(", ")
                )
            };
            let columns: Vec<Vec<Param>> = (0..n)
                .map(|i| {
                    stateless
                        .iter()
                        .map(|&w| Param {
                            value: &wanted[w][i],
                            kind: ts.key_kinds[i],
                        })
                        .collect()
                })
                .collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            let rows = self.tx.query(text.as_str(), &params).map_err(sql(format!(
                "looking for {} rows of table {:?}",
                stateless.len(),
                t.name
            )))?;
            app_rows.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        }
        for j in json {
            let st = match found.remove(&j) {
                Some(st) => Some(st),
                None if app_rows.contains(&j) => Some(RowState {
                    exist: 1,
                    cells: Vec::new(),
                }),
                None => None,
            };
            self.states.insert((t.id, j), st);
        }
        Ok(())
    }

    /// [`Store::prefetch_exists`]: which of the referenced rows exist, at once.
    pub(super) fn read_exists_ahead(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Vec<Value>],
    ) -> Result<(), StoreError> {
        let ts = self.table(t)?;
        let kinds: Vec<Kind> = columns.iter().map(|c| ts.kind_of(c)).collect();
        let cols = columns.join("\u{1f}");
        let mut json = Vec::new();
        let mut wanted: Vec<&Vec<Value>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for v in values {
            if v.len() != kinds.len() || !Self::all_fit(v, &kinds) {
                continue;
            }
            let j = key_json(v, &kinds);
            if self.exists.contains_key(&(t.id, cols.clone(), j.clone())) || !seen.insert(j.clone())
            {
                continue;
            }
            json.push(j);
            wanted.push(v);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let arrays: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| format!("${}::{}", i + 2, k.array_type()))
            .collect();
        let aliases: Vec<String> = (0..kinds.len()).map(|i| format!("c{i}")).collect();
        let matches: Vec<String> = columns
            .iter()
            .zip(&kinds)
            .enumerate()
            .map(|(i, (name, k))| {
                format!("p.{} = {}", quote(name), k.from_array(&format!("u.c{i}")))
            })
            .collect();
        // One column (a key, most often): one index scan over the values as an array, which
        // the planner cannot make a join; several: a semi-join.
        let text = match columns {
            [one] => format!(
                "SELECT jsonb_build_array(p.{0})::text FROM {1} p WHERE p.{0} = ANY({2})",
                quote(one),
                ts.qualified,
                kinds[0].from_array(&format!("$1::{}", kinds[0].array_type()))
            ),
            _ => format!(
                "SELECT u.k FROM unnest($1::text[], {}) AS u(k, {}) \
                 WHERE EXISTS (SELECT 1 FROM {} p WHERE {})",
                arrays.join(", "),
                aliases.join(", "),
                ts.qualified,
                matches.join(" AND ")
            ),
        };
        let arrays: Vec<Vec<Param>> = (0..kinds.len())
            .map(|i| {
                wanted
                    .iter()
                    .map(|v| Param {
                        value: &v[i],
                        kind: kinds[i],
                    })
                    .collect()
            })
            .collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = match columns {
            [_] => Vec::new(),
            _ => vec![&json],
        };
        params.extend(arrays.iter().map(|c| c as &(dyn ToSql + Sync)));
        self.send_held()?;
        let found = self.tx.query(text.as_str(), &params).map_err(sql(format!(
            "looking for {} rows of table {:?}",
            json.len(),
            t.name
        )))?;
        for j in &json {
            self.exists.insert((t.id, cols.clone(), j.clone()), false);
        }
        for r in found {
            self.exists.insert((t.id, cols.clone(), r.get(0)), true);
        }
        Ok(())
    }
}
