//! What the core asks a store about UNIQUE collisions (`outpost_apply_core`'s `unique.rs`): the
//! app table's UNIQUE indexes (read from `pg_index`, as the engine reads SQLite's index list),
//! the rows holding given values, a row's values, and tombstones (`outpost.tombstones`: a
//! deleted row's last values, or a row held aside).

use super::{sql, PgStore, StoreError};
use crate::postgres::pg_value::{Kind, Param};
use crate::schema::quote;
use ::postgres::types::ToSql;
use ::postgres::Row;
use outpost_apply_core::{Table, Tombstone, Unique};
use outpost_protocol::Value;

/// Column `i` of `row`, selected as [`select`] selects a column of `kind`.
pub(super) fn read(row: &Row, i: usize, kind: Kind) -> Value {
    let v = match kind {
        Kind::Int => row.get::<_, Option<i64>>(i).map(Value::Integer),
        Kind::Real => row.get::<_, Option<f64>>(i).map(Value::Real),
        Kind::Text => row.get::<_, Option<String>>(i).map(Value::Text),
        Kind::Numeric => row
            .get::<_, Option<String>>(i)
            .map(|s| match s.parse::<i64>() {
                Ok(n) => Value::Integer(n),
                Err(_) => s.parse().map_or(Value::Text(s), Value::Real),
            }),
        Kind::Bytes => row.get::<_, Option<Vec<u8>>>(i).map(Value::Blob),
    };
    v.unwrap_or(Value::Null)
}

/// Column `name` of `kind` in a select list, as [`read`] reads it.
pub(super) fn select(name: &str, kind: Kind) -> String {
    match kind {
        Kind::Numeric => format!("{}::text", quote(name)),
        _ => quote(name),
    }
}

fn values_json(values: &[Value]) -> Result<String, StoreError> {
    serde_json::to_string(values).map_err(|e| StoreError::Damaged {
        what: format!("values as JSON: {e}"),
    })
}

fn values_of(json: &str) -> Result<Vec<Value>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Damaged {
        what: format!("a tombstone's values: {e}"),
    })
}

impl PgStore<'_, '_> {
    /// [`outpost_apply_core::Store::uniques`].
    pub(super) fn unique_indexes(&mut self, t: &Table) -> Result<Vec<Unique>, StoreError> {
        let ts = self.table(t)?;
        let qualified = ts.qualified.clone();
        let rows = self
            .tx
            .query(
                "SELECT array_agg(a.attname::text ORDER BY k.ord) \
                 FROM pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = $1::text::regclass AND i.indisunique AND NOT i.indisprimary \
                   AND i.indexprs IS NULL AND i.indpred IS NULL AND k.ord <= i.indnkeyatts \
                 GROUP BY i.indexrelid ORDER BY i.indexrelid",
                &[&qualified],
            )
            .map_err(sql(format!(
                "reading the UNIQUE indexes of table {:?}",
                t.name
            )))?;
        let mut out = Vec::new();
        for r in rows {
            let names: Vec<String> = r.get(0);
            // One on a key column is never violated by a row alone (the engine skips it too).
            let Some(columns) = names.iter().map(|n| t.column_index(n)).collect() else {
                continue;
            };
            let label: Vec<String> = names.iter().map(|n| format!("{}.{n}", t.name)).collect();
            out.push(Unique {
                columns,
                label: label.join(", "),
            });
        }
        Ok(out)
    }

    /// [`outpost_apply_core::Store::holders`].
    pub(super) fn holding(
        &mut self,
        t: &Table,
        u: &Unique,
        values: &[Value],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let ts = self.table(t)?;
        let names: Vec<String> = u.columns.iter().map(|&c| ts.col_names[c].clone()).collect();
        let kinds: Vec<Kind> = u.columns.iter().map(|&c| ts.col_kinds[c]).collect();
        self.keys_where(t, &names, &kinds, values, false, "UNIQUE values")
    }

    /// The keys of the rows of `t` whose columns `names` (of `kinds`) hold `values`, in key
    /// order when `ordered`; `looking_for` names them in an error. A value its column cannot
    /// hold is in no row of it.
    pub(super) fn keys_where(
        &mut self,
        t: &Table,
        names: &[String],
        kinds: &[Kind],
        values: &[Value],
        ordered: bool,
        looking_for: &str,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        self.send_held()?;
        if !Self::all_fit(values, kinds) {
            return Ok(Vec::new());
        }
        let ts = self.table(t)?;
        let key_kinds = ts.key_kinds.clone();
        let cols: Vec<String> = ts
            .key_names
            .iter()
            .zip(&key_kinds)
            .map(|(n, k)| select(n, *k))
            .collect();
        let order = if ordered {
            let positions: Vec<String> = (1..=cols.len()).map(|i| i.to_string()).collect();
            format!(" ORDER BY {}", positions.join(", "))
        } else {
            String::new()
        };
        let text = format!(
            "SELECT {} FROM {} WHERE {}{order}",
            cols.join(", "),
            ts.qualified,
            super::where_columns(names, kinds, 1)
        );
        let params: Vec<Param> = values
            .iter()
            .zip(kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.tx.query(text.as_str(), &refs).map_err(sql(format!(
            "looking for {looking_for} in table {:?}",
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

    /// [`outpost_apply_core::Store::app_values`].
    pub(super) fn values(
        &mut self,
        t: &Table,
        key: &[Value],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        self.send_held()?;
        let ts = self.table(t)?;
        if !Self::all_fit(key, &ts.key_kinds) {
            return Ok(None);
        }
        let k = ts.key(key);
        if let Some(values) = self.values_ahead.remove(&(t.id, k)) {
            return Ok(Some(values)); // read ahead by a transfer read (`store/transfer.rs`)
        }
        let ts = self.table(t)?;
        let kinds = ts.col_kinds.clone();
        let mut cols: Vec<String> = ts
            .col_names
            .iter()
            .zip(&kinds)
            .map(|(n, k)| select(n, *k))
            .collect();
        if cols.is_empty() {
            cols.push("1".into());
        }
        let text = format!(
            "SELECT {} FROM {} WHERE {}",
            cols.join(", "),
            ts.qualified,
            ts.where_key(1)
        );
        let params: Vec<Param> = key
            .iter()
            .zip(&ts.key_kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self
            .tx
            .query(text.as_str(), &refs)
            .map_err(sql(format!("reading a row of table {:?}", t.name)))?;
        Ok(rows.first().map(|r| {
            kinds
                .iter()
                .enumerate()
                .map(|(i, k)| read(r, i, *k))
                .collect()
        }))
    }

    /// [`outpost_apply_core::Store::tombstone`].
    pub(super) fn read_tombstone(
        &mut self,
        t: &Table,
        key: &[Value],
    ) -> Result<Option<Tombstone>, StoreError> {
        let k = self.table(t)?.key(key);
        let s = self.stmt(
            "SELECT vals, held FROM outpost.tombstones WHERE tbl = $1 AND key = $2::text::jsonb",
        )?;
        let rows = self
            .tx
            .query(&s, &[&(t.id as i32), &k])
            .map_err(sql(format!("reading a tombstone of table {:?}", t.name)))?;
        match rows.first() {
            None => Ok(None),
            Some(r) => Ok(Some(Tombstone {
                values: values_of(r.get(0))?,
                held: r.get(1),
            })),
        }
    }

    /// [`outpost_apply_core::Store::put_tombstone`].
    pub(super) fn write_tombstone(
        &mut self,
        t: &Table,
        key: &[Value],
        tomb: &Tombstone,
    ) -> Result<(), StoreError> {
        let k = self.table(t)?.key(key);
        let s = self.stmt(
            "INSERT INTO outpost.tombstones(tbl, key, key_values, vals, held) \
             VALUES ($1, $2::text::jsonb, $3, $4, $5) ON CONFLICT (tbl, key) \
             DO UPDATE SET vals = excluded.vals, held = excluded.held",
        )?;
        let (kv, vals) = (values_json(key)?, values_json(&tomb.values)?);
        self.tx
            .execute(&s, &[&(t.id as i32), &k, &kv, &vals, &tomb.held])
            .map_err(sql(format!("keeping a tombstone of table {:?}", t.name)))?;
        Ok(())
    }

    /// [`outpost_apply_core::Store::drop_tombstone`].
    pub(super) fn forget_tombstone(&mut self, t: &Table, key: &[Value]) -> Result<(), StoreError> {
        let k = self.table(t)?.key(key);
        let s =
            self.stmt("DELETE FROM outpost.tombstones WHERE tbl = $1 AND key = $2::text::jsonb")?;
        self.tx
            .execute(&s, &[&(t.id as i32), &k])
            .map_err(sql(format!("dropping a tombstone of table {:?}", t.name)))?;
        Ok(())
    }

    /// [`outpost_apply_core::Store::held_rows`].
    #[allow(clippy::type_complexity)]
    pub(super) fn held(&mut self, t: &Table) -> Result<Vec<(Vec<Value>, Vec<Value>)>, StoreError> {
        let s = self.stmt(
            "SELECT key_values, vals FROM outpost.tombstones WHERE tbl = $1 AND held ORDER BY key",
        )?;
        let rows = self.tx.query(&s, &[&(t.id as i32)]).map_err(sql(format!(
            "listing rows held aside in table {:?}",
            t.name
        )))?;
        rows.iter()
            .map(|r| Ok((values_of(r.get(0))?, values_of(r.get(1))?)))
            .collect()
    }

    /// [`outpost_apply_core::Store::release_entries`] and `reword_entries` (`reason` `None`:
    /// the entries go).
    pub(super) fn entries_of(
        &mut self,
        t: &Table,
        key: &[Value],
        prefix: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let pk = crate::postgres::pg_value::shown_key(key);
        match reason {
            None => {
                let s = self.stmt(
                    "DELETE FROM outpost.quarantine WHERE \"table\" = $1 AND pk = $2 \
                     AND starts_with(reason, $3)",
                )?;
                self.tx.execute(&s, &[&t.name, &pk, &prefix])
            }
            Some(reason) => {
                let s = self.stmt(
                    "UPDATE outpost.quarantine SET reason = $4 WHERE \"table\" = $1 AND pk = $2 \
                     AND starts_with(reason, $3) AND reason <> $4",
                )?;
                self.tx.execute(&s, &[&t.name, &pk, &prefix, &reason])
            }
        }
        .map_err(sql(format!(
            "updating quarantine entries of table {:?}",
            t.name
        )))?;
        Ok(())
    }
}
