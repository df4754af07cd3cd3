//! The scope authority's transfers (DESIGN section 10, "Moves"; the engine's
//! `sqlite-ext/src/apply/transfers.rs` and `transfer.rs`): only a store that says it is the
//! authority ([`Store::authority`], the cloud's) queues them.
//!
//! After a batch is merged, each row of a scoped table it changed whose scope is now another
//! than the batch's stream is queued for a transfer into its scope's stream
//! ([`Store::transfer`]): a referral (the scope cell changed in the old scope's stream), a late
//! write to a row that moved already, a `via` child written in its parent's old scope. A row whose
//! scope cell the batch wrote also goes to every stream it was transferred to before
//! ([`Store::transferred`]), so replicas there learn where it went and concurrent moves end with
//! one owner.
//!
//! What a transfer carries is read when its batch is made, not when it is queued: [`credited`]
//! gives a row's whole merge state as one row change per site that wrote a cell of its current
//! epoch (the engine's `transfer/batch.rs`), which receivers apply as that site's changes.

use crate::merge_row::Merger;
use crate::store::{Store, Table};
use crate::ApplyError;
use outpost_protocol::batch::{CellChange, CellPayload, RowChange};
use outpost_protocol::scope::ScopeRule;
use outpost_protocol::{SiteId, Strategy, Value};
use std::collections::{BTreeMap, HashMap};

/// How deep `via` parents are followed to find a row's scope (as the engine's `row_scope.rs`).
const VIA_DEPTH: usize = 8;

/// A row an apply changed on the authority: (table index, key, the scope cell the change wrote
/// when it wrote one: `Some("")` for a value that is no scope name).
pub(crate) type Touched = (usize, Vec<Value>, Option<String>);

/// Scopes found, by (table index, key as its debug text: values are not `Hash`, floats).
type Memo = HashMap<(usize, String), String>;

/// The scope name `v` is, if it is one.
fn scope_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Text(t)) if outpost_protocol::scope::check_name(t).is_ok() => Some(t.clone()),
        _ => None,
    }
}

impl<S: Store> Merger<'_, S> {
    /// Notes that the row of `ti` with `key` changed (on the authority, for a scoped table);
    /// `scope`: the scope cell the change wrote, when it wrote one and the row ends alive.
    pub(crate) fn touch(&mut self, ti: usize, key: &[Value], alive: bool, scope: Option<&Value>) {
        let written = match (alive, scope) {
            (true, Some(v)) => Some(scope_of(Some(v)).unwrap_or_default()),
            _ => None,
        };
        self.touched.push((ti, key.to_vec(), written));
    }

    /// Queues the transfers the batch of stream `stream` (its wire id) calls for (module doc).
    pub(crate) fn queue_transfers(&mut self, stream: &str) -> Result<(), ApplyError<S::Error>> {
        let mut touched = std::mem::take(&mut self.touched);
        if touched.is_empty() {
            return Ok(());
        }
        // One look per row: its last change in the batch says its scope best.
        let mut moved: Vec<(usize, Vec<Value>)> = Vec::new();
        for (ti, key, written) in &touched {
            if written.is_some() && !moved.iter().any(|(m, k)| m == ti && k == key) {
                moved.push((*ti, key.clone()));
            }
        }
        touched.reverse();
        let mut seen: Vec<(usize, &[Value])> = Vec::new();
        let mut rows: Vec<&Touched> = Vec::new();
        for t in &touched {
            if !seen.contains(&(t.0, t.1.as_slice())) {
                seen.push((t.0, t.1.as_slice()));
                rows.push(t);
            }
        }
        let mut memo: Memo = HashMap::new();
        for (ti, key, written) in rows {
            let t = self.tables.list[*ti].clone();
            let now = match written {
                Some(s) => s.clone(),
                None => self.scope_now(*ti, key, &mut memo)?,
            };
            let was_moved = moved.iter().any(|(m, k)| m == ti && k == key);
            let here = self.store.wire_scope(&now) == stream;
            if now.is_empty() || (here && !was_moved) {
                continue;
            }
            let mut into = Vec::new();
            if !here {
                into.push(now.clone());
            }
            if was_moved {
                for s in self.store.transferred(&t, key).map_err(ApplyError::Store)? {
                    if s != now && self.store.wire_scope(&s) != stream && !into.contains(&s) {
                        into.push(s);
                    }
                }
            }
            for scope in into {
                self.store
                    .transfer(&t, key, &scope)
                    .map_err(ApplyError::Store)?;
            }
        }
        Ok(())
    }

    /// The value of column `name` of the row of `ti` with `key` now: its key's, its app row's,
    /// or its tombstone's.
    fn value_now(
        &mut self,
        ti: usize,
        key: &[Value],
        name: &str,
    ) -> Result<Option<Value>, ApplyError<S::Error>> {
        let t = self.tables.list[ti].clone();
        if let Some(p) = t.key.iter().position(|k| k == name) {
            return Ok(key.get(p).cloned());
        }
        let Some(c) = t.column_index(name) else {
            return Ok(None);
        };
        if let Some(values) = self.store.app_values(&t, key).map_err(ApplyError::Store)? {
            return Ok(values.get(c).cloned());
        }
        Ok(self
            .store
            .tombstone(&t, key)
            .map_err(ApplyError::Store)?
            .and_then(|tomb| tomb.values.get(c).cloned()))
    }

    /// The scope of the row of `ti` with `key` now: its scope cell's (or its tombstone's), its
    /// parent's for a `via` table (each parent looked up once, remembered in `memo`); `""` when
    /// none is found.
    fn scope_now(
        &mut self,
        ti: usize,
        key: &[Value],
        memo: &mut Memo,
    ) -> Result<String, ApplyError<S::Error>> {
        let (mut ti, mut key) = (ti, key.to_vec());
        let mut path = Vec::new();
        let mut found = String::new();
        for _ in 0..VIA_DEPTH {
            if let Some(s) = memo.get(&(ti, format!("{key:?}"))) {
                found = s.clone();
                break;
            }
            path.push((ti, format!("{key:?}")));
            let t = self.tables.list[ti].clone();
            match &t.scope {
                None => break,
                Some(ScopeRule::Column(c)) => {
                    found = scope_of(self.value_now(ti, &key, c)?.as_ref()).unwrap_or_default();
                    break;
                }
                Some(ScopeRule::Via(column)) => {
                    let Some(v) = self
                        .value_now(ti, &key, column)?
                        .filter(|v| *v != Value::Null)
                    else {
                        break;
                    };
                    let Some(link) = self
                        .tables
                        .links
                        .iter()
                        .find(|l| l.child == ti && l.child_cols == [column.clone()])
                    else {
                        break;
                    };
                    ti = link.parent;
                    key = vec![v];
                }
            }
        }
        for p in path {
            memo.insert(p, found.clone());
        }
        Ok(found)
    }
}

/// The merge state of the row of `t` with `key`, as row changes per credited site: for every
/// site that wrote a cell the row holds at its current epoch, one change with the row's causal
/// length and that site's cells (`lww` values with their clocks, counter contributions, review
/// siblings with what they supersede); a row with no such cell (a deleted row) goes as its
/// causal length alone, credited to the store's own site. Empty when the store knows nothing
/// of the row.
pub fn credited<S: Store>(
    store: &mut S,
    t: &Table,
    key: &[Value],
) -> Result<BTreeMap<SiteId, RowChange>, S::Error> {
    let mut out: BTreeMap<SiteId, RowChange> = BTreeMap::new();
    let Some(st) = store.row(t, key)? else {
        return Ok(out);
    };
    let me = store.site();
    let mut cells: Vec<(SiteId, CellChange)> = Vec::new();
    if st.exist % 2 == 1 {
        let mut app: Option<Vec<Value>> = None;
        for (c, col) in t.columns.iter().enumerate() {
            let column = c as u16;
            match col.strategy {
                Strategy::Lww | Strategy::RowLww => {
                    let Some(v) = st.cell(c).filter(|v| v.epoch == st.exist).copied() else {
                        continue;
                    };
                    if app.is_none() {
                        app = Some(match store.app_values(t, key)? {
                            Some(values) => values,
                            None => store
                                .tombstone(t, key)?
                                .map(|tomb| tomb.values)
                                .unwrap_or_default(),
                        });
                    }
                    let value = app
                        .as_ref()
                        .and_then(|a| a.get(c))
                        .cloned()
                        .unwrap_or(Value::Null);
                    cells.push((
                        v.stamp.site,
                        CellChange {
                            column,
                            hlc: v.stamp.hlc,
                            payload: CellPayload::Value(value),
                        },
                    ));
                }
                Strategy::Counter => {
                    let cell = store.counter(t, key, c)?;
                    for x in cell.contributions().iter().filter(|x| x.epoch == st.exist) {
                        cells.push((
                            x.site,
                            CellChange {
                                column,
                                hlc: x.hlc,
                                payload: CellPayload::Counter(x.total),
                            },
                        ));
                    }
                }
                Strategy::Review => {
                    let cell = store.review(t, key, c)?;
                    for w in cell
                        .siblings()
                        .iter()
                        .filter(|w| w.version.epoch == st.exist)
                    {
                        cells.push((
                            w.version.stamp.site,
                            CellChange {
                                column,
                                hlc: w.version.stamp.hlc,
                                payload: CellPayload::Review {
                                    value: w.value.clone(),
                                    context: w.context.clone(),
                                },
                            },
                        ));
                    }
                }
            }
        }
    }
    let blank = || RowChange {
        key: key.to_vec(),
        existence: st.exist,
        cells: Vec::new(),
    };
    if cells.is_empty() {
        out.insert(me, blank());
    }
    for (site, cell) in cells {
        out.entry(site).or_insert_with(blank).cells.push(cell);
    }
    Ok(out)
}
