//! UNIQUE collisions decided as the engine decides them (`sqlite-ext/src/apply/unique.rs`): the
//! later row is held aside, on every replica.
//!
//! Rows of a table are ordered by their *rank*: the version `(epoch, hlc, site)` of the row's
//! latest write to a column of any UNIQUE index, then its key in the engine's packed form. The
//! rows in the app table are those a greedy pass in rank order keeps: a row is kept unless a kept
//! row of earlier rank holds one of its UNIQUE values. That set depends only on merge states,
//! which converge, so every store ends with the same rows in the table and the same held aside.
//!
//! A row held aside is *evicted*: one quarantine entry per writing site (its `lww` cells of the
//! current epoch, with their values), its values in its tombstone marked held, its app row
//! removed; its merge state stays alive, so a later change merges over the held values. Two
//! places keep the rule, as in the engine:
//! - a write whose values a row of the table holds *claims* them ([`Merger::claim`]): when no
//!   holder ranks earlier, the holders are evicted and the write is done; else the writing row
//!   is evicted;
//! - [`Merger::settle`], after every apply, claims again for each held row, earliest rank first,
//!   until nothing moves (a holder deleted or changed frees the value); then each row still held
//!   names the index on which the earliest row keeping it out holds its value. A row back in its
//!   table, or deleted while held, loses its UNIQUE entries (as the quarantine retry that
//!   follows, `retry.rs`, would let them go in the same apply).
//!
//! The rows referencing an evicted row are evicted with it, as missing their parent, and a held
//! row whose parent is missing stays held (`cascade.rs`).
//!
//! A claim takes only its holders' app rows out before its write: when the store refuses the
//! write (a CHECK), they go back as they were, as the engine's claim rolls back to its
//! savepoint, and the change is set aside as any refused write (SQLite checks a CHECK before a
//! UNIQUE index, so the engine never claims for such a row). A partial UNIQUE index is not a
//! [`Unique`] (the crate doc says why).

use crate::merge_row::Merger;
use crate::store::{Store, Table, Tombstone, Unique, Written};
use crate::{ApplyError, RowState};
use outpost_protocol::batch::{CellChange, CellPayload, ColumnSchema, RowChange, TableSchema};
use outpost_protocol::merge::CellVersion;
use outpost_protocol::varint::write_u64;
use outpost_protocol::{SiteId, Strategy, Value};
use std::rc::Rc;

/// Reasons of UNIQUE quarantine entries start with this (SQLite's wording, the engine's).
pub(crate) const UNIQUE_REASON: &str = "UNIQUE constraint failed";

/// What a reason says after the index's name.
const HELD_ASIDE: &str = "the later write is kept here for a person";

/// The reason of a row held aside because a row of earlier rank holds its value on `label`.
pub(crate) fn reason(label: &str) -> String {
    format!("{UNIQUE_REASON}: {label}: {HELD_ASIDE}")
}

/// A row's place in the order that decides collisions.
pub(crate) type Rank = (Option<CellVersion>, Vec<u8>);

/// What became of a claim.
pub(crate) enum Claim {
    Placed,
    /// A row of earlier rank holds a value on this UNIQUE index (of the table's list).
    Blocked(usize),
    /// A parent the row references is missing (held aside too: `cascade.rs`).
    Orphan,
    /// The store refused the write with the holders out of the way (they are back): a CHECK,
    /// or a UNIQUE index the core does not see.
    Refused(String),
}

impl Claim {
    /// The reason a row this claim did not place is held aside with.
    pub(crate) fn reason(&self, uniques: &[Unique]) -> Option<String> {
        match self {
            Claim::Placed => None,
            Claim::Blocked(on) => Some(reason(&uniques[*on].label)),
            Claim::Orphan => Some(crate::reasons::PARENT_MISSING.to_string()),
            // A UNIQUE index the core does not see held the value: the row is held aside with
            // the store's reason, as the engine holds it with SQLite's.
            Claim::Refused(why) if why.starts_with(UNIQUE_REASON) => {
                Some(format!("{why}: {HELD_ASIDE}"))
            }
            // Refused for itself (a CHECK): set aside by the caller as any refused write.
            Claim::Refused(_) => None,
        }
    }
}

/// A row holding a UNIQUE value another row claims.
struct Holder {
    key: Vec<Value>,
    state: RowState,
    rank: Rank,
    /// The first UNIQUE index on which the two rows share a value.
    on: usize,
}

/// Rows taken out of the way of a row coming back from its tombstone (`make_way`), with their
/// values.
#[derive(Default)]
pub(crate) struct Way {
    holders: Vec<Holder>,
    moved: Vec<Vec<Value>>,
}

/// A held row as `settle` finds it.
struct Held {
    key: Vec<Value>,
    values: Vec<Value>,
    rank: Rank,
}

/// A key in the engine's packed form (`sqlite-ext/src/keys.rs`), whose byte order breaks rank
/// ties there: canonical lowercase UUID text alone packs to `0x01` and its 16 bytes, anything
/// else to `0x02` then a tag and the bytes of each value.
pub(crate) fn packed(key: &[Value]) -> Vec<u8> {
    if let [Value::Text(t)] = key {
        if let Some(u) = uuid_bytes(t) {
            let mut out = vec![1u8];
            out.extend_from_slice(&u);
            return out;
        }
    }
    let mut out = vec![2u8];
    for v in key {
        match v {
            Value::Null => out.push(0),
            Value::Integer(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Value::Real(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Value::Text(t) => {
                out.push(3);
                write_u64(&mut out, t.len() as u64);
                out.extend_from_slice(t.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                write_u64(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// The 16 bytes of canonical lowercase UUID text, else `None`.
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    let digits = s.iter().copied().filter(|&c| c != b'-');
    let digits: Vec<u8> = digits.collect();
    if digits.len() != 32 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = (hex(digits[2 * i])? << 4) | hex(digits[2 * i + 1])?;
    }
    Some(out)
}

/// `t` as a batch would describe it, declared types and scope unknown ([`Store::schema`]'s
/// default).
pub(crate) fn schema_of(t: &Table) -> TableSchema {
    let col = |name: &str, strategy| ColumnSchema {
        name: name.to_string(),
        decl_type: String::new(),
        strategy,
        not_null: false,
    };
    let mut columns: Vec<ColumnSchema> = t.key.iter().map(|k| col(k, Strategy::Lww)).collect();
    columns.extend(t.columns.iter().map(|c| col(&c.name, c.strategy)));
    TableSchema {
        name: t.name.clone(),
        columns,
        primary_key: (0..t.key.len() as u16).collect(),
        foreign_keys: Vec::new(),
        scope: None,
    }
}

type Result<T, S> = std::result::Result<T, ApplyError<<S as Store>::Error>>;

impl<S: Store> Merger<'_, S> {
    /// Table `ti`'s UNIQUE indexes (asked of the store once per apply).
    pub(crate) fn uniques(&mut self, ti: usize) -> Result<Rc<Vec<Unique>>, S> {
        if let Some(u) = self.uniques.get(&ti) {
            return Ok(u.clone());
        }
        let t = self.tables.list[ti].clone();
        let u = Rc::new(self.store.uniques(&t).map_err(ApplyError::Store)?);
        self.uniques.insert(ti, u.clone());
        Ok(u)
    }

    pub(crate) fn rank(&mut self, ti: usize, st: &RowState, key: &[Value]) -> Result<Rank, S> {
        let uniques = self.uniques(ti)?;
        let latest = uniques
            .iter()
            .flat_map(|u| u.columns.iter())
            .filter_map(|&c| st.cell(c).copied())
            .max();
        Ok((latest, packed(key)))
    }

    /// All of a row's values once `writes` are written: its app row's (NULLs without one) with
    /// the written columns replaced.
    pub(crate) fn row_values(
        &mut self,
        ti: usize,
        key: &[Value],
        writes: &[(usize, &Value)],
    ) -> Result<Vec<Value>, S> {
        let t = self.tables.list[ti].clone();
        let mut values = self
            .store
            .app_values(&t, key)
            .map_err(ApplyError::Store)?
            .unwrap_or_else(|| vec![Value::Null; t.columns.len()]);
        values.resize(t.columns.len(), Value::Null);
        for (c, v) in writes {
            values[*c] = (*v).clone();
        }
        Ok(values)
    }

    /// The rows of table `ti`, other than `own`, holding one of the UNIQUE values in `values`
    /// (NULLs never collide).
    fn holders(&mut self, ti: usize, own: &[Value], values: &[Value]) -> Result<Vec<Holder>, S> {
        let uniques = self.uniques(ti)?;
        let t = self.tables.list[ti].clone();
        let mut out: Vec<Holder> = Vec::new();
        for (ui, u) in uniques.iter().enumerate() {
            let vals: Option<Vec<Value>> = u
                .columns
                .iter()
                .map(|&c| values.get(c).filter(|v| !matches!(v, Value::Null)).cloned())
                .collect();
            let Some(vals) = vals else { continue };
            let keys = self
                .store
                .holders(&t, u, &vals)
                .map_err(ApplyError::Store)?;
            for key in keys {
                let p = packed(&key);
                if p == packed(own) || out.iter().any(|h| packed(&h.key) == p) {
                    continue;
                }
                let state = self
                    .store
                    .row(&t, &key)
                    .map_err(ApplyError::Store)?
                    .unwrap_or_default();
                let rank = self.rank(ti, &state, &key)?;
                out.push(Holder {
                    key,
                    state,
                    rank,
                    on: ui,
                });
            }
        }
        Ok(out)
    }

    /// Whether a row of `ti` with `values` would collide with another row on a UNIQUE index.
    pub(crate) fn collides(
        &mut self,
        ti: usize,
        key: &[Value],
        values: &[Value],
    ) -> Result<bool, S> {
        Ok(!self.holders(ti, key, values)?.is_empty())
    }

    /// Writes a row whose values (all of them: `values`; what the write sets: `writes`) rows
    /// of its table hold, if none of those ranks earlier than `rank`: those holders are evicted
    /// first.
    pub(crate) fn claim(
        &mut self,
        ti: usize,
        key: &[Value],
        fresh: bool,
        rank: &Rank,
        values: &[Value],
        writes: &[(usize, &Value)],
    ) -> Result<Claim, S> {
        if self.parent_missing(ti, key, values)? {
            return Ok(Claim::Orphan);
        }
        let holders = self.holders(ti, key, values)?;
        if let Some(h) = holders
            .iter()
            .filter(|h| h.rank < *rank)
            .min_by(|a, b| a.rank.cmp(&b.rank))
        {
            return Ok(Claim::Blocked(h.on));
        }
        let uniques = self.uniques(ti)?;
        let t = self.tables.list[ti].clone();
        // Only the holders' app rows leave first: the write may still be refused (a CHECK), and
        // then they are back as they were, as the engine's claim rolls back to its savepoint.
        let moved = self.move_out(ti, &holders)?;
        match self
            .store
            .write_row(&t, key, fresh, writes)
            .map_err(ApplyError::Store)?
        {
            Written::Done => {
                for (h, values) in holders.into_iter().zip(moved) {
                    let why = reason(&uniques[h.on].label);
                    self.evict(ti, &h.key, &h.state, values, &why)?;
                }
                Ok(Claim::Placed)
            }
            Written::Refused(why) => {
                self.move_back(ti, &holders, &moved)?;
                Ok(Claim::Refused(why))
            }
        }
    }

    /// Takes the rows holding the UNIQUE values of a row about to come back from its tombstone
    /// (`values`; `restore.rs`) out of its way, their app rows only, for the store's own write
    /// of it ([`Merger::decide_way`] then decides as a claim).
    pub(crate) fn make_way(
        &mut self,
        ti: usize,
        key: &[Value],
        values: &[Value],
    ) -> Result<Way, S> {
        if self.uniques(ti)?.is_empty() {
            return Ok(Way::default());
        }
        let holders = self.holders(ti, key, values)?;
        let moved = self.move_out(ti, &holders)?;
        Ok(Way { holders, moved })
    }

    /// Puts the rows [`Merger::make_way`] took out back (the store made no write).
    pub(crate) fn undo_way(&mut self, ti: usize, way: Way) -> Result<(), S> {
        self.move_back(ti, &way.holders, &way.moved)
    }

    /// Decides, once the store wrote the restored row of `ti` with `key` (its state now `st`,
    /// its values `values`), between it and the rows that made way, as the engine's restore
    /// claims after its local write: the row is held aside when one of them ranks earlier (or a
    /// parent it references is missing), and they go back; else they are held aside. Whether
    /// the restored row stays in its table.
    pub(crate) fn decide_way(
        &mut self,
        ti: usize,
        key: &[Value],
        st: &RowState,
        values: Vec<Value>,
        way: Way,
    ) -> Result<bool, S> {
        if way.holders.is_empty() {
            return Ok(true);
        }
        let uniques = self.uniques(ti)?;
        let rank = self.rank(ti, st, key)?;
        let why = if self.parent_missing(ti, key, &values)? {
            Some(crate::reasons::PARENT_MISSING.to_string())
        } else {
            way.holders
                .iter()
                .filter(|h| h.rank < rank)
                .min_by(|a, b| a.rank.cmp(&b.rank))
                .map(|h| reason(&uniques[h.on].label))
        };
        if let Some(why) = why {
            self.evict(ti, key, st, values, &why)?;
            self.undo_way(ti, way)?;
            return Ok(false);
        }
        for (h, values) in way.holders.into_iter().zip(way.moved) {
            let why = reason(&uniques[h.on].label);
            self.evict(ti, &h.key, &h.state, values, &why)?;
        }
        Ok(true)
    }

    /// Takes the app rows of `holders` (of table `ti`) out, nothing else: returns their values.
    fn move_out(&mut self, ti: usize, holders: &[Holder]) -> Result<Vec<Vec<Value>>, S> {
        let t = self.tables.list[ti].clone();
        let mut moved = Vec::with_capacity(holders.len());
        for h in holders {
            let mut values = self
                .store
                .app_values(&t, &h.key)
                .map_err(ApplyError::Store)?
                .unwrap_or_default();
            values.resize(t.columns.len(), Value::Null);
            self.store
                .delete_row(&t, &h.key)
                .map_err(ApplyError::Store)?;
            moved.push(values);
        }
        Ok(moved)
    }

    /// Puts the app rows [`Merger::move_out`] took out back, as they were.
    fn move_back(&mut self, ti: usize, holders: &[Holder], moved: &[Vec<Value>]) -> Result<(), S> {
        let t = self.tables.list[ti].clone();
        for (h, values) in holders.iter().zip(moved) {
            let writes: Vec<(usize, &Value)> = values.iter().enumerate().collect();
            if let Written::Refused(why) = self
                .store
                .write_row(&t, &h.key, false, &writes)
                .map_err(ApplyError::Store)?
            {
                return Err(ApplyError::Refused(format!(
                    "a row of table {:?} taken out for a claim cannot go back: {why}",
                    t.name
                )));
            }
        }
        Ok(())
    }

    /// Holds the row of `ti` with `key` aside: its state `st` (left as it is), its values
    /// `values`. One quarantine entry per site that wrote its `lww` cells of the current epoch,
    /// with their values (the engine's shape), its values in its tombstone marked held, its app
    /// row removed.
    pub(crate) fn evict(
        &mut self,
        ti: usize,
        key: &[Value],
        st: &RowState,
        values: Vec<Value>,
        reason: &str,
    ) -> Result<(), S> {
        let t = self.tables.list[ti].clone();
        let schema = self.store.schema(&t).map_err(ApplyError::Store)?;
        let mut by_site: Vec<(SiteId, Vec<CellChange>)> = Vec::new();
        for (c, v) in st.cells.iter().enumerate() {
            let (Some(v), Some(value)) = (v, values.get(c)) else {
                continue;
            };
            let lww = t
                .columns
                .get(c)
                .is_some_and(|col| matches!(col.strategy, Strategy::Lww | Strategy::RowLww));
            if v.epoch != st.exist || !lww {
                continue;
            }
            let cell = CellChange {
                column: c as u16,
                hlc: v.stamp.hlc,
                payload: CellPayload::Value(value.clone()),
            };
            match by_site.iter_mut().find(|(s, _)| *s == v.stamp.site) {
                Some((_, cells)) => cells.push(cell),
                None => by_site.push((v.stamp.site, vec![cell])),
            }
        }
        for (site, cells) in by_site {
            let change = RowChange {
                key: key.to_vec(),
                existence: st.exist,
                cells,
            };
            self.quarantine(site, &schema, &change, reason)?;
        }
        let tomb = Tombstone { values, held: true };
        self.store
            .put_tombstone(&t, key, &tomb)
            .map_err(ApplyError::Store)?;
        // A later change to the row must find its tombstone (`merge_row`).
        self.held_aside[ti] = true;
        // The rows referencing it go with it (cascade.rs), before it leaves its table.
        self.evict_children(ti, key)?;
        self.store.delete_row(&t, key).map_err(ApplyError::Store)?;
        self.store
            .held_aside(&t, key, reason)
            .map_err(ApplyError::Store)
    }

    /// A held row left the held state (back in its table, or deleted): its UNIQUE entries go.
    pub(crate) fn released(&mut self, ti: usize, key: &[Value]) -> Result<(), S> {
        let t = self.tables.list[ti].clone();
        self.store
            .release_entries(&t, key, UNIQUE_REASON)
            .map_err(ApplyError::Store)
    }

    /// Brings the tables back to the rule after rows changed: every held row, earliest rank
    /// first, parent tables first, claims its values again until nothing moves; then each row
    /// still held names the index on which the earliest row keeping it out holds its value.
    pub(crate) fn settle(&mut self) -> Result<usize, S> {
        let mut back = 0;
        let order = self.tables.order.clone();
        for ti in order {
            if !self.held_aside[ti] {
                continue;
            }
            // Each pass puts one row back; the bound only guards against a bug looping.
            for _ in 0..10_000 {
                let rows = self.held(ti)?;
                let mut placed = false;
                for e in &rows {
                    let writes: Vec<(usize, &Value)> = e.values.iter().enumerate().collect();
                    if let Claim::Placed =
                        self.claim(ti, &e.key, false, &e.rank, &e.values, &writes)?
                    {
                        let t = self.tables.list[ti].clone();
                        self.store
                            .drop_tombstone(&t, &e.key)
                            .map_err(ApplyError::Store)?;
                        self.released(ti, &e.key)?;
                        back += 1;
                        placed = true;
                        break;
                    }
                }
                if !placed {
                    self.explain(ti, &rows)?;
                    break;
                }
            }
        }
        Ok(back)
    }

    /// The rows of table `ti` held aside, earliest rank first. One deleted since, or written
    /// back, is held no longer.
    fn held(&mut self, ti: usize) -> Result<Vec<Held>, S> {
        let t = self.tables.list[ti].clone();
        let listed = self.store.held_rows(&t).map_err(ApplyError::Store)?;
        let mut out = Vec::new();
        for (key, mut values) in listed {
            let alive = self
                .store
                .row(&t, &key)
                .map_err(ApplyError::Store)?
                .filter(|st| st.exist % 2 == 1);
            let Some(st) = alive else {
                let tomb = Tombstone {
                    values,
                    held: false,
                };
                self.store
                    .put_tombstone(&t, &key, &tomb)
                    .map_err(ApplyError::Store)?;
                self.released(ti, &key)?;
                continue;
            };
            if self
                .store
                .app_values(&t, &key)
                .map_err(ApplyError::Store)?
                .is_some()
            {
                self.store
                    .drop_tombstone(&t, &key)
                    .map_err(ApplyError::Store)?;
                self.released(ti, &key)?;
                continue;
            }
            // A tombstone written before a column was added is shorter than the row.
            values.resize(t.columns.len(), Value::Null);
            let rank = self.rank(ti, &st, &key)?;
            out.push(Held { key, values, rank });
        }
        out.sort_by(|a, b| a.rank.cmp(&b.rank));
        Ok(out)
    }

    /// Sets the reason of each row still held from what keeps it out now: the earliest row
    /// holding one of its values, and the first index they share.
    fn explain(&mut self, ti: usize, rows: &[Held]) -> Result<(), S> {
        let uniques = self.uniques(ti)?;
        let t = self.tables.list[ti].clone();
        for e in rows {
            let holders = self.holders(ti, &e.key, &e.values)?;
            let Some(h) = holders
                .iter()
                .filter(|h| h.rank < e.rank)
                .min_by(|a, b| a.rank.cmp(&b.rank))
            else {
                continue;
            };
            self.store
                .reword_entries(&t, &e.key, UNIQUE_REASON, &reason(&uniques[h.on].label))
                .map_err(ApplyError::Store)?;
        }
        Ok(())
    }
}
