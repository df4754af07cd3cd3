//! Row writes: a new row held back to go with its group's others as one `unnest` insert (and
//! row states likewise), or an update or insert of its own, in careful mode inside a savepoint so
//! a refusal is the row's.

use super::{refusal, sql, PgStore, StoreError};
use crate::postgres::pg_value::{fits, Kind, Param};
use crate::schema::quote;
use ::postgres::binary_copy::BinaryCopyInWriter;
use ::postgres::types::ToSql;
use ::postgres::types::Type;
use ::postgres::Statement;
use outpost_apply_core::{Store, Table, Written};
use outpost_protocol::Value;

/// The statements of a row write, per (table, columns written, form).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Form {
    /// `INSERT ... ON CONFLICT (key) DO NOTHING`.
    Insert,
    /// `UPDATE ... WHERE key`.
    Update,
}

impl PgStore<'_, '_> {
    /// [`Store::write_row`]'s work: checks, then the held-back insert, the update or the insert.
    pub(super) fn write(
        &mut self,
        t: &Table,
        key: &[Value],
        fresh: bool,
        writes: &[(usize, &Value)],
    ) -> Result<Written, StoreError> {
        let ts = self.table(t)?;
        for (v, (name, kind)) in key.iter().zip(ts.key_names.iter().zip(&ts.key_kinds)) {
            if let Some(why) = fits(*kind, v, name) {
                return Ok(Written::Refused(why));
            }
        }
        for &(c, v) in writes {
            if let Some(why) = fits(ts.col_kinds[c], v, &ts.col_names[c]) {
                return Ok(Written::Refused(why));
            }
        }
        // SQLite's refusal, word for word: the engine quarantines with it (docs: an insert
        // leaving a NOT NULL column empty; an update writing NULL into one).
        let not_null = |inserting: bool| {
            (0..ts.col_names.len()).find_map(|c| {
                let written = writes.iter().find(|(w, _)| *w == c).map(|(_, v)| *v);
                let empty = match written {
                    Some(v) => *v == Value::Null,
                    None => inserting,
                };
                (ts.not_null[c] && empty)
                    .then(|| format!("NOT NULL constraint failed: {}.{}", t.name, ts.col_names[c]))
            })
        };
        let update_refusal = not_null(false);
        let insert_refusal = not_null(true);
        let key_params: Vec<Param> = key
            .iter()
            .zip(&ts.key_kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let col_params: Vec<Param> = writes
            .iter()
            .map(|&(c, value)| Param {
                value,
                kind: ts.col_kinds[c],
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = key_params
            .iter()
            .chain(&col_params)
            .map(|p| p as &(dyn ToSql + Sync))
            .collect();
        let cols: Vec<usize> = writes.iter().map(|(c, _)| *c).collect();
        let doing = format!("writing a row of table {:?}", t.name);
        if fresh && !self.careful && insert_refusal.is_none() {
            // Neither state nor app row (`row` looked): held back, sent with the group's others.
            self.inserts.entry((t.id, cols)).or_default().push(
                key.iter()
                    .cloned()
                    .chain(writes.iter().map(|(_, v)| (*v).clone()))
                    .collect(),
            );
            return Ok(Written::Done);
        }
        if let Some(why) = insert_refusal {
            // As the engine meets it (`sqlite-ext/src/apply.rs`, `upsert`): SQLite checks NOT
            // NULL on the insert's row first, so only a row that has state, has its app row and
            // writes some columns is updated instead (refused when it writes NULL into one).
            let key_names = ts.key_names.clone();
            if fresh || cols.is_empty() || !self.row_exists(t, &key_names, key)? {
                return Ok(Written::Refused(why));
            }
            if let Some(why) = update_refusal {
                return Ok(Written::Refused(why));
            }
            let s = self.writer(t, &cols, Form::Update)?;
            return Ok(match self.run(&s, &params, &doing)? {
                Ok(_) => Written::Done,
                Err(why) => Written::Refused(why),
            });
        }
        // A row with state most likely has its app row: update it first. One without (or an
        // update that found nothing) is inserted.
        if !fresh && !cols.is_empty() {
            let s = self.writer(t, &cols, Form::Update)?;
            match self.run(&s, &params, &doing)? {
                Ok(0) => {}
                Ok(_) => return Ok(Written::Done),
                Err(why) => return Ok(Written::Refused(why)),
            }
        }
        let s = self.writer(t, &cols, Form::Insert)?;
        match self.run(&s, &params, &doing)? {
            Ok(0) if !cols.is_empty() => {
                // The app row was there without state here (a back-office insert): update it.
                let s = self.writer(t, &cols, Form::Update)?;
                Ok(match self.run(&s, &params, &doing)? {
                    Ok(_) => Written::Done,
                    Err(why) => Written::Refused(why),
                })
            }
            Ok(_) => Ok(Written::Done),
            Err(why) => Ok(Written::Refused(why)),
        }
    }

    /// The held-back inserts and row states, sent: one statement per (table, columns written),
    /// one for the states. Columns go as arrays (`unnest`), so a statement is prepared once per
    /// shape whatever the number of rows.
    pub(super) fn send_held(&mut self) -> Result<(), StoreError> {
        let inserts = std::mem::take(&mut self.inserts);
        for ((id, cols), rows) in inserts {
            let ts = self.tables.get(&id).ok_or_else(|| StoreError::Damaged {
                what: format!("table #{id} was not listed by tables()"),
            })?;
            let kinds: Vec<Kind> = ts
                .key_kinds
                .iter()
                .copied()
                .chain(cols.iter().map(|&c| ts.col_kinds[c]))
                .collect();
            let s = match self.bulk.get(&(id, cols.clone())) {
                Some(s) => s.clone(),
                None => {
                    let names: Vec<String> = ts
                        .key_names
                        .iter()
                        .chain(cols.iter().map(|&c| &ts.col_names[c]))
                        .map(|n| quote(n))
                        .collect();
                    let arrays: Vec<String> = kinds
                        .iter()
                        .enumerate()
                        .map(|(i, k)| format!("${}::{}", i + 1, k.array_type()))
                        .collect();
                    let aliases: Vec<String> = (0..kinds.len()).map(|i| format!("c{i}")).collect();
                    let exprs: Vec<String> = kinds
                        .iter()
                        .enumerate()
                        .map(|(i, k)| k.from_array(&format!("u.c{i}")))
                        .collect();
                    let text = format!(
                        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
                        ts.qualified,
                        names.join(", "),
                        exprs.join(", "),
                        arrays.join(", "),
                        aliases.join(", ")
                    );
                    let s = self
                        .tx
                        .prepare(&text)
                        .map_err(sql(format!("preparing the inserts of table #{id}")))?;
                    self.bulk.insert((id, cols.clone()), s.clone());
                    s
                }
            };
            let columns: Vec<Vec<Param>> = (0..kinds.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| Param {
                            value: &r[i],
                            kind: kinds[i],
                        })
                        .collect()
                })
                .collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            let name = self
                .tables
                .get(&id)
                .map(|t| t.qualified.clone())
                .unwrap_or_default();
            self.tx
                .execute(&s, &params)
                .map_err(sql(format!("inserting {} rows into {name}", rows.len())))?;
        }
        if !self.state_writes.is_empty() {
            let held = std::mem::take(&mut self.state_writes);
            let s = self.stmt(
                "INSERT INTO outpost.capture_rows AS r(tbl, key, exist, versions) \
                 SELECT u.t, u.k, u.e, u.v FROM unnest($1::integer[], $2::text[], $3::bigint[], $4::bytea[]) AS u(t, k, e, v) \
                 ON CONFLICT (tbl, key) DO UPDATE SET exist = excluded.exist, versions = excluded.versions, \
                 counters = CASE WHEN r.exist = excluded.exist THEN r.counters END, \
                 reviews = CASE WHEN r.exist = excluded.exist THEN r.reviews END",
            )?;
            let mut t = Vec::with_capacity(held.len());
            let mut k = Vec::with_capacity(held.len());
            let mut e = Vec::with_capacity(held.len());
            let mut v = Vec::with_capacity(held.len());
            let mut new = Vec::new();
            for ((id, key), (exist, versions, fresh)) in held {
                if fresh {
                    new.push((id as i32, key, exist, versions));
                    continue;
                }
                t.push(id as i32);
                k.push(key);
                e.push(exist);
                v.push(versions);
            }
            if !t.is_empty() {
                self.tx
                    .execute(&s, &[&t, &k, &e, &v])
                    .map_err(sql(format!("writing the state of {} rows", t.len())))?;
            }
            self.copy_new_states(&new)?;
        }
        Ok(())
    }

    /// The states of rows that had none, by binary `COPY`: no conflict to look for, and
    /// PostgreSQL inserts them in batches (a first sync's rows are all such).
    fn copy_new_states(&mut self, rows: &[(i32, String, i64, Vec<u8>)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let doing = || format!("copying the state of {} new rows", rows.len());
        let sink = self
            .tx
            .copy_in(
                "COPY outpost.capture_rows (tbl, key, exist, versions) FROM STDIN (FORMAT binary)",
            )
            .map_err(sql(doing()))?;
        let mut w =
            BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT, Type::INT8, Type::BYTEA]);
        for (id, key, exist, versions) in rows {
            w.write(&[id, key, exist, versions]).map_err(sql(doing()))?;
        }
        w.finish().map_err(sql(doing()))?;
        Ok(())
    }

    /// The statement writing `writes`' columns of a row of `t` in `form`.
    fn writer(&mut self, t: &Table, cols: &[usize], form: Form) -> Result<Statement, StoreError> {
        if let Some(s) = self.writers.get(&(t.id, cols.to_vec(), form)) {
            return Ok(s.clone());
        }
        let ts = self.table(t)?;
        let n = ts.key_names.len();
        let text = match form {
            Form::Insert => {
                let mut names: Vec<String> = ts.key_names.iter().map(|k| quote(k)).collect();
                names.extend(cols.iter().map(|&c| quote(&ts.col_names[c])));
                let mut params: Vec<String> = ts
                    .key_kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| k.placeholder(i + 1))
                    .collect();
                params.extend(
                    cols.iter()
                        .enumerate()
                        .map(|(i, &c)| ts.col_kinds[c].placeholder(n + i + 1)),
                );
                let key: Vec<String> = ts.key_names.iter().map(|k| quote(k)).collect();
                format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING",
                    ts.qualified,
                    names.join(", "),
                    params.join(", "),
                    key.join(", ")
                )
            }
            Form::Update => {
                let set: Vec<String> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        format!(
                            "{} = {}",
                            quote(&ts.col_names[c]),
                            ts.col_kinds[c].placeholder(n + i + 1)
                        )
                    })
                    .collect();
                format!(
                    "UPDATE {} SET {} WHERE {}",
                    ts.qualified,
                    set.join(", "),
                    ts.where_key(1)
                )
            }
        };
        let s = self
            .tx
            .prepare(&text)
            .map_err(sql(format!("preparing a write of table {:?}", t.name)))?;
        self.writers.insert((t.id, cols.to_vec(), form), s.clone());
        Ok(s)
    }

    /// Runs `s` with `params`; in careful mode inside a savepoint, a constraint's refusal
    /// returned as `Err(Ok(message))`.
    fn run(
        &mut self,
        s: &Statement,
        params: &[&(dyn ToSql + Sync)],
        doing: &str,
    ) -> Result<Result<u64, String>, StoreError> {
        if !self.careful {
            return self.tx.execute(s, params).map(Ok).map_err(sql(doing));
        }
        let mut sp = self
            .tx
            .savepoint("outpost_row")
            .map_err(sql("starting a row's savepoint"))?;
        match sp.execute(s, params) {
            Ok(n) => {
                sp.commit().map_err(sql("releasing a row's savepoint"))?;
                Ok(Ok(n))
            }
            Err(e) if refusal(&e) => {
                let message = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string());
                sp.rollback()
                    .map_err(sql("rolling back a row's savepoint"))?;
                Ok(Err(message))
            }
            Err(e) => Err(sql(doing)(e)),
        }
    }
}
