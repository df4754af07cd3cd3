//! The apply core's [`Store`] over PostgreSQL: the app's real tables (`public`, made by
//! [`super::app_tables`]) and the merge state in schema `outpost` (`merge_state.sql`, installed
//! with capture), read and written inside the one transaction [`super::apply`] holds per batch.
//!
//! A row's causal length is capture's own (`outpost.capture_rows.exist`, which the capture
//! triggers read to number a back-office write's epoch), with the core's cell versions beside it
//! in the same row: one row of state per app row, shared by both writers. A row without one is
//! what capture says it is: alive at 1 when its app row exists (a back-office insert), unknown
//! otherwise. A causal length that grows resets the cloud's own counter totals and review clocks
//! kept there: they belonged to the epoch that ended.
//!
//! Writes are checked before they are sent: a value that does not fit its column's type, or a
//! NOT NULL column left empty by an insert, is refused with a reason ([`Written::Refused`]) and
//! the core quarantines the change; the NOT NULL reason is SQLite's text, so both stores keep the
//! same entry. Other refusals (CHECK, UNIQUE) abort a PostgreSQL transaction: the batch is then
//! applied again `careful`ly, each row write in a savepoint, and those rows are refused with
//! PostgreSQL's message ([`super::apply`]).
//!
//! A store pays per statement, so it follows the core's hints: a group's rows' state and the
//! parents they reference are read ahead in one query each (`store/ahead.rs`), and new rows and
//! row states are held back and sent as one `unnest` insert per table at the group's end
//! (`store/row_write.rs`; not in careful mode). `store/quarantine_entry.rs` writes a quarantined
//! change as the engine's JSON.

use super::capture::{self, CaptureError};
use super::pg_value::{fits, key_json, shown_key, value_json, Kind, Param};
use crate::schema::quote;
use ::postgres::types::ToSql;
use ::postgres::{Statement, Transaction};
use outpost_apply_core::{
    Column, Entry, Parent, Quarantined, RowState, Store, Table, Tombstone, Unique, Written,
};
use outpost_protocol::batch::TableSchema;
use outpost_protocol::merge::{CounterCell, ReviewCell};
use outpost_protocol::seal::DigestKey;
use outpost_protocol::{Hlc, SiteId, StreamId, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

mod ahead;
mod children;
mod fold;
mod quarantine_entry;
mod restore;
mod row_write;
mod transfer;
mod unique;

use row_write::Form;

/// A failure of the PostgreSQL store: the batch is rolled back.
#[derive(Debug)]
pub enum StoreError {
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// Stored merge state does not read back.
    Damaged {
        /// What.
        what: String,
    },
    /// The tracked tables' definitions could not be read.
    Capture(CaptureError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sql { doing, source } => match source.as_db_error() {
                Some(db) => write!(f, "{doing}: {}", db.message()),
                None => f.write_str(doing),
            },
            StoreError::Damaged { what } => write!(f, "stored merge state is damaged: {what}"),
            StoreError::Capture(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sql { source, .. } => Some(source),
            StoreError::Capture(e) => Some(e),
            StoreError::Damaged { .. } => None,
        }
    }
}

impl StoreError {
    /// The SQLSTATE of a failed statement.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Sql { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }
}

fn sql(doing: impl Into<String>) -> impl FnOnce(::postgres::Error) -> StoreError {
    let doing = doing.into();
    move |source| StoreError::Sql { doing, source }
}

/// How a table's rows are reached: its name, its columns' kinds and the statements made once.
struct TableSql {
    /// The table as captured (the outbox's values are read by it).
    def: TableSchema,
    qualified: String,
    key_names: Vec<String>,
    key_kinds: Vec<Kind>,
    col_names: Vec<String>,
    col_kinds: Vec<Kind>,
    not_null: Vec<bool>,
    /// `SELECT exist, versions, app row exists`.
    row: Option<Statement>,
}

impl TableSql {
    fn kind_of(&self, name: &str) -> Kind {
        self.key_names
            .iter()
            .position(|k| k == name)
            .map(|i| self.key_kinds[i])
            .or_else(|| {
                self.col_names
                    .iter()
                    .position(|c| c == name)
                    .map(|i| self.col_kinds[i])
            })
            .unwrap_or(Kind::Bytes)
    }

    /// `"k1" = $first AND ...`.
    fn where_key(&self, first: usize) -> String {
        where_columns(&self.key_names, &self.key_kinds, first)
    }

    fn key(&self, key: &[Value]) -> String {
        key_json(key, &self.key_kinds)
    }
}

fn where_columns(names: &[String], kinds: &[Kind], first: usize) -> String {
    names
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (n, k))| format!("{} = {}", quote(n), k.placeholder(first + i)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The PostgreSQL store of one apply transaction.
pub struct PgStore<'t, 'c> {
    tx: &'t mut Transaction<'c>,
    site: SiteId,
    careful: bool,
    tables: HashMap<i64, TableSql>,
    writers: HashMap<(i64, Vec<usize>, Form), Statement>,
    stmts: HashMap<&'static str, Statement>,
    /// Rows' state read ahead ([`Store::prefetch_rows`]) or written, by (table, key as JSON).
    states: HashMap<(i64, String), Option<RowState>>,
    /// Whether rows exist, read ahead ([`Store::prefetch_exists`]) or written, by (table,
    /// columns, values as JSON).
    exists: HashMap<(i64, String, String), bool>,
    /// Inserts of rows the store knew nothing of, held back to go as one statement per (table,
    /// columns written) at [`Store::flush`] (not in careful mode: a refusal there must be the
    /// row's own).
    inserts: HashMap<(i64, Vec<usize>), Vec<Vec<Value>>>,
    /// Row states held back likewise, by (table, key as JSON): (causal length, versions, the
    /// row had no state row).
    state_writes: HashMap<(i64, String), (i64, Vec<u8>, bool)>,
    bulk: HashMap<(i64, Vec<usize>), Statement>,
    /// App rows' values read ahead by a transfer read (`store/transfer.rs`), by (table, key as
    /// JSON), each taken by the one [`Store::app_values`] it saves.
    values_ahead: HashMap<(i64, String), Vec<Value>>,
    /// A sealed tenant's digest key: batches name their streams by digest, transfers by name
    /// ([`Store::wire_scope`]).
    digest: Option<DigestKey>,
}

impl<'t, 'c> PgStore<'t, 'c> {
    /// The store in `tx` of the cloud whose site is `site`. `careful`: each row write in a
    /// savepoint, so a constraint refuses the row instead of aborting the transaction.
    pub fn new(tx: &'t mut Transaction<'c>, site: SiteId, careful: bool) -> PgStore<'t, 'c> {
        PgStore {
            tx,
            site,
            careful,
            tables: HashMap::new(),
            writers: HashMap::new(),
            stmts: HashMap::new(),
            states: HashMap::new(),
            exists: HashMap::new(),
            inserts: HashMap::new(),
            state_writes: HashMap::new(),
            bulk: HashMap::new(),
            values_ahead: HashMap::new(),
            digest: None,
        }
    }

    /// The store of a sealed tenant, whose batches name their streams by the digest `digest`
    /// makes of a scope's name.
    pub fn with_digest(mut self, digest: Option<DigestKey>) -> Self {
        self.digest = digest;
        self
    }

    /// Whether every value fits its column (a key that does not is in no row here).
    fn all_fit(values: &[Value], kinds: &[Kind]) -> bool {
        values
            .iter()
            .zip(kinds)
            .all(|(v, k)| fits(*k, v, "").is_none())
    }

    fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .tx
            .prepare(sql)
            .map_err(self::sql(format!("preparing {sql}")))?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    fn table(&self, t: &Table) -> Result<&TableSql, StoreError> {
        self.tables.get(&t.id).ok_or_else(|| StoreError::Damaged {
            what: format!("table {:?} was not listed by tables()", t.name),
        })
    }

    fn cell_json<T: for<'de> Deserialize<'de> + Default>(
        &mut self,
        t: &Table,
        key: &[Value],
        col: usize,
    ) -> Result<T, StoreError> {
        let s = self.stmt(
            "SELECT state::text FROM outpost.merge_cells WHERE tbl = $1 AND key = $2::text::jsonb AND col = $3",
        )?;
        let k = self.table(t)?.key(key);
        let rows = self
            .tx
            .query(&s, &[&(t.id as i32), &k, &(col as i32)])
            .map_err(sql(format!("reading a cell of table {:?}", t.name)))?;
        match rows.first() {
            None => Ok(T::default()),
            Some(r) => serde_json::from_str(r.get(0)).map_err(|e| StoreError::Damaged {
                what: format!("a cell of table {:?}: {e}", t.name),
            }),
        }
    }

    fn put_cell_json<T: Serialize>(
        &mut self,
        t: &Table,
        key: &[Value],
        col: usize,
        cell: &T,
    ) -> Result<(), StoreError> {
        let s = self.stmt(
            "INSERT INTO outpost.merge_cells(tbl, key, col, state) VALUES ($1, $2::text::jsonb, $3, $4::text::jsonb) \
             ON CONFLICT (tbl, key, col) DO UPDATE SET state = excluded.state",
        )?;
        let k = self.table(t)?.key(key);
        let json = serde_json::to_string(cell).map_err(|e| StoreError::Damaged {
            what: format!("a cell as JSON: {e}"),
        })?;
        self.tx
            .execute(&s, &[&(t.id as i32), &k, &(col as i32), &json])
            .map_err(sql(format!("writing a cell of table {:?}", t.name)))?;
        Ok(())
    }
}

/// Whether `e` is a row's refusal (a constraint or a value PostgreSQL will not take), which a
/// careful apply quarantines, rather than a failure of the store.
pub fn refusal(e: &::postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("23") || c.code().starts_with("22"))
}

/// The core's table for a captured definition.
fn core_table(id: i64, def: &TableSchema) -> Table {
    let name = |i: u16| def.columns[i as usize].name.clone();
    Table {
        id,
        name: def.name.clone(),
        key: def.primary_key.iter().map(|&i| name(i)).collect(),
        columns: def
            .value_columns()
            .map(|i| Column {
                name: name(i),
                strategy: def.columns[i as usize].strategy,
            })
            .collect(),
        scope: def.scope_rule(),
        parents: def
            .foreign_keys
            .iter()
            .map(|fk| Parent {
                table: fk.parent.clone(),
                columns: fk.columns.iter().map(|&i| name(i)).collect(),
                parent_columns: fk.parent_columns.clone(),
            })
            .collect(),
    }
}

impl Store for PgStore<'_, '_> {
    type Error = StoreError;

    fn site(&self) -> SiteId {
        self.site
    }

    fn tables(&mut self) -> Result<Vec<Table>, StoreError> {
        let captured = capture::captured(self.tx).map_err(StoreError::Capture)?;
        let mut out = Vec::with_capacity(captured.len());
        self.tables.clear();
        self.writers.clear();
        for c in captured {
            let def = &c.def;
            let t = core_table(c.id as i64, def);
            let kinds = |idx: &mut dyn Iterator<Item = u16>| -> Vec<Kind> {
                idx.map(|i| Kind::of(&def.columns[i as usize])).collect()
            };
            let sql = TableSql {
                def: def.clone(),
                qualified: format!("{}.{}", quote(super::app_tables::SCHEMA), quote(&def.name)),
                key_names: t.key.clone(),
                key_kinds: kinds(&mut def.primary_key.iter().copied()),
                col_names: t.columns.iter().map(|c| c.name.clone()).collect(),
                col_kinds: kinds(&mut def.value_columns()),
                not_null: def
                    .value_columns()
                    .map(|i| def.columns[i as usize].not_null)
                    .collect(),
                row: None,
            };
            self.tables.insert(t.id, sql);
            out.push(t);
        }
        Ok(out)
    }

    fn covered(&mut self, stream: &StreamId) -> Result<u64, StoreError> {
        let s =
            self.stmt("SELECT covered FROM outpost.vector WHERE origin = $1 AND stream = $2")?;
        let rows = self
            .tx
            .query(&s, &[&stream.origin.0.as_slice(), &stream.scope])
            .map_err(sql("reading the tenant's vector"))?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    fn advance(&mut self, stream: &StreamId, hi: u64) -> Result<(), StoreError> {
        let s = self.stmt(
            "INSERT INTO outpost.vector(origin, stream, covered) VALUES ($1, $2, $3) \
             ON CONFLICT (origin, stream) DO UPDATE SET covered = greatest(outpost.vector.covered, excluded.covered)",
        )?;
        self.tx
            .execute(
                &s,
                &[&stream.origin.0.as_slice(), &stream.scope, &(hi as i64)],
            )
            .map_err(sql("advancing the tenant's vector"))?;
        Ok(())
    }

    fn row(&mut self, t: &Table, key: &[Value]) -> Result<Option<RowState>, StoreError> {
        let ts = self.tables.get(&t.id).ok_or_else(|| StoreError::Damaged {
            what: format!("table {:?} was not listed by tables()", t.name),
        })?;
        if !Self::all_fit(key, &ts.key_kinds) {
            return Ok(None);
        }
        if let Some(st) = self.states.get(&(t.id, ts.key(key))) {
            return Ok(st.clone());
        }
        let s = match &ts.row {
            Some(s) => s.clone(),
            None => {
                let text = format!(
                    "SELECT r.exist, r.versions, EXISTS (SELECT 1 FROM {} WHERE {}) \
                     FROM (VALUES (1)) one LEFT JOIN outpost.capture_rows r \
                     ON r.tbl = $1 AND r.key = $2",
                    ts.qualified,
                    ts.where_key(3)
                );
                let s = self.tx.prepare(&text).map_err(sql(format!(
                    "preparing the state read of table {:?}",
                    t.name
                )))?;
                if let Some(ts) = self.tables.get_mut(&t.id) {
                    ts.row = Some(s.clone());
                }
                s
            }
        };
        let ts = self.table(t)?;
        let k = ts.key(key);
        let id = t.id as i32;
        let key_params: Vec<Param> = key
            .iter()
            .zip(&ts.key_kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &k];
        params.extend(key_params.iter().map(|p| p as &(dyn ToSql + Sync)));
        let r = self
            .tx
            .query_one(&s, &params)
            .map_err(sql(format!("reading a row's state in table {:?}", t.name)))?;
        let exist: Option<i64> = r.get(0);
        let versions: Option<&[u8]> = r.get(1);
        let app_row: bool = r.get(2);
        Ok(match exist {
            Some(e) => Some(
                RowState::decode(e as u64, versions.unwrap_or(&[0])).map_err(|e| {
                    StoreError::Damaged {
                        what: format!("table {:?}: {e}", t.name),
                    }
                })?,
            ),
            // No state row: capture's "alive at 1" when the back office wrote the row.
            None if app_row => Some(RowState {
                exist: 1,
                cells: Vec::new(),
            }),
            None => None,
        })
    }

    fn put_row(&mut self, t: &Table, key: &[Value], st: &RowState) -> Result<(), StoreError> {
        let k = self.table(t)?.key(key);
        // Read as having neither state nor app row (not merely not read): no state row to update.
        let new = matches!(self.states.get(&(t.id, k.clone())), Some(None));
        self.states.insert((t.id, k.clone()), Some(st.clone()));
        if !self.careful {
            let held = self
                .state_writes
                .entry((t.id, k))
                .or_insert((0, Vec::new(), new));
            *held = (st.exist as i64, st.encode(), held.2 || new);
            return Ok(());
        }
        let s = self.stmt(
            "INSERT INTO outpost.capture_rows AS r(tbl, key, exist, versions) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tbl, key) DO UPDATE SET exist = excluded.exist, versions = excluded.versions, \
             counters = CASE WHEN r.exist = excluded.exist THEN r.counters END, \
             reviews = CASE WHEN r.exist = excluded.exist THEN r.reviews END",
        )?;
        let k = self.table(t)?.key(key);
        let versions = st.encode();
        self.tx
            .execute(&s, &[&(t.id as i32), &k, &(st.exist as i64), &versions])
            .map_err(sql(format!("writing a row's state in table {:?}", t.name)))?;
        Ok(())
    }

    fn counter(&mut self, t: &Table, key: &[Value], col: usize) -> Result<CounterCell, StoreError> {
        self.cell_json(t, key, col)
    }

    fn put_counter(
        &mut self,
        t: &Table,
        key: &[Value],
        col: usize,
        cell: &CounterCell,
    ) -> Result<(), StoreError> {
        self.put_cell_json(t, key, col, cell)
    }

    fn review(&mut self, t: &Table, key: &[Value], col: usize) -> Result<ReviewCell, StoreError> {
        self.cell_json(t, key, col)
    }

    fn put_review(
        &mut self,
        t: &Table,
        key: &[Value],
        col: usize,
        cell: &ReviewCell,
    ) -> Result<(), StoreError> {
        self.put_cell_json(t, key, col, cell)?;
        let k = self.table(t)?.key(key);
        if cell.siblings().len() > 1 {
            let siblings: Vec<serde_json::Value> = cell
                .siblings()
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "value": value_json(&s.value),
                        "hlc": s.version.stamp.hlc.to_string(),
                        "site": s.version.stamp.site.to_string(),
                    })
                })
                .collect();
            let siblings = serde_json::Value::Array(siblings).to_string();
            let s = self.stmt(
                "INSERT INTO outpost.conflicts(tbl, key, col, \"table\", pk, col_name, siblings) \
                 VALUES ($1, $2::text::jsonb, $3, $4, $5, $6, $7::text::jsonb) \
                 ON CONFLICT (tbl, key, col) DO UPDATE SET siblings = excluded.siblings",
            )?;
            let pk = shown_key(key);
            self.tx
                .execute(
                    &s,
                    &[
                        &(t.id as i32),
                        &k,
                        &(col as i32),
                        &t.name,
                        &pk,
                        &t.columns[col].name,
                        &siblings,
                    ],
                )
                .map_err(sql(format!("listing a conflict in table {:?}", t.name)))?;
        } else {
            let s = self.stmt(
                "DELETE FROM outpost.conflicts WHERE tbl = $1 AND key = $2::text::jsonb AND col = $3",
            )?;
            self.tx
                .execute(&s, &[&(t.id as i32), &k, &(col as i32)])
                .map_err(sql(format!("clearing a conflict in table {:?}", t.name)))?;
        }
        Ok(())
    }

    fn write_row(
        &mut self,
        t: &Table,
        key: &[Value],
        fresh: bool,
        writes: &[(usize, &Value)],
    ) -> Result<Written, StoreError> {
        let written = self.write(t, key, fresh, writes)?;
        if written == Written::Done {
            // Parent checks later in the batch find it without asking.
            let ts = self.table(t)?;
            let known = (t.id, ts.key_names.join("\u{1f}"), ts.key(key));
            self.exists.insert(known, true);
        }
        Ok(written)
    }

    fn delete_row(&mut self, t: &Table, key: &[Value]) -> Result<(), StoreError> {
        self.send_held()?;
        let ts = self.table(t)?;
        let known = (t.id, ts.key_names.join("\u{1f}"), ts.key(key));
        self.exists.insert(known, false);
        let ts = self.table(t)?;
        let text = format!("DELETE FROM {} WHERE {}", ts.qualified, ts.where_key(1));
        let params: Vec<Param> = key
            .iter()
            .zip(&ts.key_kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.tx
            .execute(text.as_str(), &refs)
            .map_err(sql(format!("deleting a row of table {:?}", t.name)))?;
        Ok(())
    }

    fn row_exists(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Value],
    ) -> Result<bool, StoreError> {
        let ts = self.table(t)?;
        let kinds: Vec<Kind> = columns.iter().map(|c| ts.kind_of(c)).collect();
        // A value the column cannot hold is in no row of it.
        if !Self::all_fit(values, &kinds) {
            return Ok(false);
        }
        let known = (t.id, columns.join("\u{1f}"), key_json(values, &kinds));
        if let Some(found) = self.exists.get(&known) {
            return Ok(*found);
        }
        self.send_held()?;
        let ts = self.table(t)?;
        let text = format!(
            "SELECT 1 FROM {} WHERE {} LIMIT 1",
            ts.qualified,
            where_columns(columns, &kinds, 1)
        );
        let params: Vec<Param> = values
            .iter()
            .zip(&kinds)
            .map(|(value, &kind)| Param { value, kind })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self
            .tx
            .query(text.as_str(), &refs)
            .map_err(sql(format!("looking for a row of table {:?}", t.name)))?;
        Ok(!rows.is_empty())
    }

    fn quarantine(&mut self, q: Quarantined<'_>) -> Result<(), StoreError> {
        let change = quarantine_entry::change_json(q.origin, q.table, q.row).map_err(|e| {
            StoreError::Damaged {
                what: format!("a quarantined change as JSON: {e}"),
            }
        })?;
        let s = self.stmt(
            "INSERT INTO outpost.quarantine(\"table\", pk, reason, change) VALUES ($1, $2, $3, $4) \
             ON CONFLICT ((md5(change))) DO UPDATE SET reason = excluded.reason",
        )?;
        let pk = shown_key(&q.row.key);
        self.tx
            .execute(&s, &[&q.table.name, &pk, &q.reason, &change])
            .map_err(sql(format!(
                "quarantining a change of table {:?}",
                q.table.name
            )))?;
        Ok(())
    }

    fn any_quarantined(&mut self) -> Result<bool, StoreError> {
        let s = self.stmt("SELECT 1 FROM outpost.quarantine LIMIT 1")?;
        let rows = self
            .tx
            .query(&s, &[])
            .map_err(sql("looking for quarantine entries"))?;
        Ok(!rows.is_empty())
    }

    fn quarantined(&mut self) -> Result<Vec<Entry>, StoreError> {
        let s = self.stmt("SELECT id, change, reason FROM outpost.quarantine ORDER BY id")?;
        let rows = self
            .tx
            .query(&s, &[])
            .map_err(sql("reading the quarantine entries"))?;
        rows.iter()
            .map(|r| {
                let (origin, table, row) =
                    quarantine_entry::parse(r.get(1)).map_err(|e| StoreError::Damaged {
                        what: format!("a quarantined change: {e}"),
                    })?;
                Ok(Entry {
                    id: r.get(0),
                    origin,
                    table,
                    row,
                    reason: r.get(2),
                })
            })
            .collect()
    }

    fn unquarantine(&mut self, id: i64) -> Result<(), StoreError> {
        let s = self.stmt("DELETE FROM outpost.quarantine WHERE id = $1")?;
        self.tx
            .execute(&s, &[&id])
            .map_err(sql("removing a quarantine entry that applied"))?;
        Ok(())
    }

    fn prefetch_rows(&mut self, t: &Table, keys: &[&[Value]]) -> Result<(), StoreError> {
        self.read_rows_ahead(t, keys)
    }

    fn prefetch_exists(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Vec<Value>],
    ) -> Result<(), StoreError> {
        self.read_exists_ahead(t, columns, values)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.send_held()
    }

    fn schema(&mut self, t: &Table) -> Result<TableSchema, StoreError> {
        Ok(self.table(t)?.def.clone())
    }

    fn uniques(&mut self, t: &Table) -> Result<Vec<Unique>, StoreError> {
        self.unique_indexes(t)
    }

    fn holders(
        &mut self,
        t: &Table,
        u: &Unique,
        values: &[Value],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        self.holding(t, u, values)
    }

    fn app_values(&mut self, t: &Table, key: &[Value]) -> Result<Option<Vec<Value>>, StoreError> {
        self.values(t, key)
    }

    fn tombstone(&mut self, t: &Table, key: &[Value]) -> Result<Option<Tombstone>, StoreError> {
        self.read_tombstone(t, key)
    }

    fn put_tombstone(
        &mut self,
        t: &Table,
        key: &[Value],
        tomb: &Tombstone,
    ) -> Result<(), StoreError> {
        self.write_tombstone(t, key, tomb)
    }

    fn drop_tombstone(&mut self, t: &Table, key: &[Value]) -> Result<(), StoreError> {
        self.forget_tombstone(t, key)
    }

    fn held_rows(&mut self, t: &Table) -> Result<Vec<(Vec<Value>, Vec<Value>)>, StoreError> {
        self.held(t)
    }

    fn held_aside(&mut self, _t: &Table, _key: &[Value], _why: &str) -> Result<(), StoreError> {
        // No events table here (docs/cloud.md); the engine's event takes a clock, and the
        // cloud's next own write follows it on either store.
        let s = self.stmt(
            "WITH t AS MATERIALIZED (SELECT outpost.tick()) SELECT outpost.clock_flush() FROM t",
        )?;
        self.tx
            .execute(&s, &[])
            .map_err(sql("ticking the clock for a row held aside"))?;
        Ok(())
    }

    fn held_tables(&mut self) -> Result<Vec<i64>, StoreError> {
        self.tables_holding_rows_aside()
    }

    fn referencing(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Value],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        self.referencing_rows(t, columns, values)
    }

    fn restore(
        &mut self,
        t: &Table,
        key: &[Value],
        values: &[Value],
        st: &RowState,
        _why: &str,
    ) -> Result<Option<RowState>, StoreError> {
        self.restore_own(t, key, values, st).map(Some)
    }

    fn release_entries(
        &mut self,
        t: &Table,
        key: &[Value],
        prefix: &str,
    ) -> Result<(), StoreError> {
        self.entries_of(t, key, prefix, None)
    }

    fn reword_entries(
        &mut self,
        t: &Table,
        key: &[Value],
        prefix: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.entries_of(t, key, prefix, Some(reason))
    }

    fn authority(&self) -> bool {
        true
    }

    fn wire_scope(&self, name: &str) -> String {
        match &self.digest {
            Some(dk) => dk.wire_scope(name),
            None => name.to_string(),
        }
    }

    fn transferred(&mut self, t: &Table, key: &[Value]) -> Result<Vec<String>, StoreError> {
        self.transferred_into(t, key)
    }

    fn transfer(&mut self, t: &Table, key: &[Value], scope: &str) -> Result<(), StoreError> {
        self.queue_transfer(t, key, scope)
    }

    fn observe_clock(&mut self, hlc: Hlc) -> Result<(), StoreError> {
        let s = self.stmt("SELECT outpost.clock_observe($1)")?;
        self.tx
            // A clock past what a bigint holds is past the ceiling there too: sent as the largest.
            .execute(&s, &[&(hlc.as_u64().min(i64::MAX as u64) as i64)])
            .map_err(sql("observing the batch's clock"))?;
        Ok(())
    }
}
