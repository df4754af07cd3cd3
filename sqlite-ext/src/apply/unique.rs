//! UNIQUE collisions: the later row is held aside, on every replica.
//!
//! Rows of a table are ordered by their *rank*: the version `(epoch, hlc, site)` of the row's
//! latest write to any column of any UNIQUE index (its packed key breaks ties). The rows in the
//! app table are then exactly those a greedy pass in rank order would keep: a row is kept unless
//! a kept row of earlier rank holds one of its UNIQUE values. That set depends only on the rows'
//! merge states, which converge, so every replica ends with the same rows in the table and the
//! same rows held aside, whatever the order the changes came in (tests/convergence.rs, one and
//! two UNIQUE columns).
//!
//! A row held aside is *evicted*: its values go to the quarantine (one entry per writing site,
//! for a person) and to its tombstone, its app row is removed, its key is listed in
//! `_outpost_evicted`, and its merge state stays alive: the row still exists for sync (export
//! reads its values from the tombstone), a later change to it is merged over those values, and
//! every replica receives it. Two places keep the rule:
//! - a write that fails a UNIQUE check *claims* its values (`claim`): if no row holding one of
//!   them ranks earlier, those rows are evicted and the write is done; else the writing row is
//!   evicted;
//! - `settle`, after every apply and retry, claims again for each evicted row, earliest rank
//!   first, until nothing moves: a holder deleted, changed or evicted since frees the value for
//!   the row that ranks next. Each claim that succeeds puts one row in and takes only rows of
//!   later rank out, so this ends.
//!
//! With foreign keys enforced, the rows referencing an evicted row are evicted with it (as
//! missing their parent) and come back after it, parent tables first. The quarantine entries of
//! a row back in its table go at the retry pass that follows (`apply/retry.rs`).

use super::{Applier, Outcome, Write, PARENT_MISSING};
use crate::error::Error;
use crate::schema::{self, quote};
use crate::state::RowState;
use outpost_protocol::batch::{CellChange, CellPayload, RowChange};
use outpost_protocol::merge::CellVersion;
use outpost_protocol::{Hlc, Strategy, Value};
use std::borrow::Cow;
use std::rc::Rc;

/// Reasons of UNIQUE quarantine entries start with this (SQLite's wording).
const UNIQUE_REASON: &str = "UNIQUE constraint failed";

/// What a reason says after the constraint's name.
const HELD_ASIDE: &str = "the later write is kept here for a person";

/// A UNIQUE index of a tracked table, other than its key.
pub(super) struct Unique {
    /// Its value columns (local indices).
    cols: Vec<usize>,
    /// The key of rows holding given values, collated as the index compares them.
    query: String,
    /// For a partial index: whether a row with given key and values is one its WHERE selects
    /// (only those can collide).
    selects: Option<String>,
    /// SQLite's name for it in error messages: "staff.badge, staff.name".
    label: String,
}

/// A row's place in the order that decides collisions: its latest write to a UNIQUE column,
/// then its packed key.
type Rank = (Option<CellVersion>, Vec<u8>);

/// A row holding a UNIQUE value another row claims.
struct Holder {
    key: Vec<Value>,
    packed: Vec<u8>,
    state: RowState,
    rank: Rank,
    /// The first UNIQUE index on which the two rows share a value.
    on: usize,
}

/// What became of a claim.
enum Claim {
    Placed,
    /// A row of earlier rank holds a value on this UNIQUE index.
    Blocked(usize),
    /// Foreign keys are enforced and a parent the row references is missing (held aside too).
    Orphan,
    /// The write still failed after the later holders were evicted (a constraint this module
    /// cannot see, e.g. a UNIQUE index on an expression): SQLite's message.
    Failed(String),
}

/// An evicted row as `settle` finds it.
struct Evicted {
    key: Vec<Value>,
    packed: Vec<u8>,
    values: Vec<Value>,
    rank: Rank,
}

fn reason(label: &str) -> String {
    format!("{UNIQUE_REASON}: {label}: {HELD_ASIDE}")
}

impl Applier<'_> {
    /// The UNIQUE indexes of table `ti` besides its key (read once per applier). Indexes on
    /// expressions, and those that include a key column (never violated alone), are left out.
    fn uniques(&mut self, ti: usize) -> Result<Rc<Vec<Unique>>, Error> {
        if let Some(u) = self.uniques.get(&ti) {
            return Ok(u.clone());
        }
        let t = self.tables[ti].clone();
        let pk: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
        let mut out = Vec::new();
        // Every column under its name, for a partial index's WHERE: key first, then values.
        let row: Vec<String> = t
            .def
            .pk
            .iter()
            .chain(t.def.columns.iter().map(|c| &c.name))
            .enumerate()
            .map(|(i, c)| format!("?{} AS {}", i + 1, quote(c)))
            .collect();
        for index in schema::unique_indexes(self.conn(), &t.def.name)? {
            let cols: Option<Vec<usize>> = index
                .cols
                .iter()
                .map(|(name, _)| t.column_index(name))
                .collect();
            let Some(cols) = cols else { continue };
            let mut wh: Vec<String> = index
                .cols
                .iter()
                .enumerate()
                .map(|(i, (name, coll))| {
                    format!("{} = ?{} COLLATE {}", quote(name), i + 1, quote(coll))
                })
                .collect();
            if let Some(f) = &index.filter {
                wh.push(format!("({f})"));
            }
            let selects = index
                .filter
                .as_ref()
                .map(|f| format!("SELECT 1 FROM (SELECT {}) WHERE ({f})", row.join(", ")));
            let label: Vec<String> = index
                .cols
                .iter()
                .map(|(name, _)| format!("{}.{}", t.def.name, name))
                .collect();
            out.push(Unique {
                cols,
                query: format!(
                    "SELECT {} FROM {} WHERE {}",
                    pk.join(", "),
                    quote(&t.def.name),
                    wh.join(" AND ")
                ),
                selects,
                label: label.join(", "),
            });
        }
        let out = Rc::new(out);
        self.uniques.insert(ti, out.clone());
        Ok(out)
    }

    fn rank(&mut self, ti: usize, st: &RowState, packed: &[u8]) -> Result<Rank, Error> {
        let uniques = self.uniques(ti)?;
        let ids = &self.sites.ids;
        let latest = uniques
            .iter()
            .flat_map(|u| u.cols.iter())
            .filter_map(|&c| st.cell(c).map(|v| v.cell_version(ids)))
            .max();
        Ok((latest, packed.to_vec()))
    }

    /// The rows of table `ti`, other than `own`, holding one of the UNIQUE values in `values`
    /// (the row's values in local column order; NULLs never collide).
    fn holders(&mut self, ti: usize, own: &[u8], values: &[Value]) -> Result<Vec<Holder>, Error> {
        let uniques = self.uniques(ti)?;
        let n_pk = self.tables[ti].def.pk.len();
        let id = self.tables[ti].id;
        let mut out: Vec<Holder> = Vec::new();
        for (ui, u) in uniques.iter().enumerate() {
            let vals: Option<Vec<Value>> = u
                .cols
                .iter()
                .map(|&c| values.get(c).filter(|v| **v != Value::Null).cloned())
                .collect();
            let Some(vals) = vals else { continue };
            if let Some(sql) = &u.selects {
                let row: Vec<Value> = crate::keys::unpack(own)?
                    .into_iter()
                    .chain(values.iter().cloned())
                    .collect();
                if !self.exists(sql.clone(), &row)? {
                    continue;
                }
            }
            let mut keys = Vec::new();
            let s = self.cached(u.query.clone())?;
            s.bind_all(&vals)?;
            let found = (|| {
                while s.step()? {
                    keys.push((0..n_pk).map(|i| s.value(i)).collect::<Vec<Value>>());
                }
                Ok::<(), Error>(())
            })();
            s.reset();
            found?;
            for key in keys {
                let packed = crate::keys::pack(&key);
                if packed == own || out.iter().any(|h| h.packed == packed) {
                    continue;
                }
                let state = self.rows.get(id, &packed)?.unwrap_or_default();
                let rank = self.rank(ti, &state, &packed)?;
                out.push(Holder {
                    key,
                    packed,
                    state,
                    rank,
                    on: ui,
                });
            }
        }
        Ok(out)
    }

    /// Writes a row whose write collided (or may collide) on a UNIQUE index, if no row holding
    /// one of its values ranks earlier: those holders are evicted first. All or nothing.
    fn claim(
        &mut self,
        ti: usize,
        key: &[Value],
        packed: &[u8],
        rank: &Rank,
        values: &[Value],
        writes: &[Write],
    ) -> Result<Claim, Error> {
        if self.parent_missing(ti, key, values)? {
            return Ok(Claim::Orphan);
        }
        let holders = self.holders(ti, packed, values)?;
        if let Some(h) = holders
            .iter()
            .filter(|h| h.rank < *rank)
            .min_by(|a, b| a.rank.cmp(&b.rank))
        {
            return Ok(Claim::Blocked(h.on));
        }
        let uniques = self.uniques(ti)?;
        let conn = self.conn();
        conn.exec("SAVEPOINT outpost_claim")?;
        let counted = self.stats.quarantined;
        let r = (|| {
            for h in holders {
                let values = self.app_values(ti, &h.key)?.unwrap_or_default();
                let why = reason(&uniques[h.on].label);
                self.evict(ti, &h.packed, &h.key, h.state, values, &why)?;
            }
            self.upsert(ti, key, writes)
        })();
        if r.is_err() {
            conn.exec("ROLLBACK TO outpost_claim")?;
            self.stats.quarantined = counted;
        }
        conn.exec("RELEASE outpost_claim")?;
        match r {
            Ok(()) => Ok(Claim::Placed),
            Err(e @ Error::Sqlite { .. }) if e.is_constraint() => match e {
                Error::Sqlite { message, .. } => Ok(Claim::Failed(message)),
                e => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// All of a row's values once `writes` are written: its app row's (NULLs without one) with
    /// the written columns replaced.
    fn row_values(
        &mut self,
        ti: usize,
        key_vals: &[Value],
        writes: &[Write],
    ) -> Result<Vec<Value>, Error> {
        let n = self.tables[ti].def.columns.len();
        let mut values = self
            .app_values(ti, key_vals)?
            .unwrap_or_else(|| vec![Value::Null; n]);
        for (c, v) in writes {
            values[*c] = v.as_ref().clone();
        }
        Ok(values)
    }

    /// Handles a UNIQUE failure of an incoming row: `key` is its packed key, `merged` its merge
    /// state with the change applied, `writes` what was written, `message` SQLite's. The row
    /// claims its values (`claim`) or is evicted itself.
    pub(super) fn unique_collision(
        &mut self,
        ti: usize,
        key_vals: &[Value],
        key: &[u8],
        merged: &RowState,
        writes: &[Write],
        message: &str,
    ) -> Result<Outcome, Error> {
        let t = self.tables[ti].clone();
        let values = self.row_values(ti, key_vals, writes)?;
        if self.claim_or_evict(ti, key_vals, key, merged, values, writes, message)? {
            return Ok(Outcome::Applied);
        }
        // Held evicted exactly as a replica that had the earlier row first holds it (state
        // merged, values in its tombstone, no app row), so a later change to it finds the same
        // thing everywhere.
        self.rows.put(t.id, key, merged)?;
        Ok(Outcome::Quarantined)
    }

    /// A change whose row now references a parent held aside here: the row is evicted with
    /// its merge state, as the parent's eviction evicts the children it finds (`evict`), so a
    /// replica that had the child first and one that had the parent first end the same.
    /// Whether it was (else the parent is simply missing: plain quarantine, retried later).
    pub(super) fn held_aside_child(
        &mut self,
        ti: usize,
        key_vals: &[Value],
        key: &[u8],
        merged: &RowState,
        writes: &[Write],
    ) -> Result<bool, Error> {
        let t = self.tables[ti].clone();
        let values = self.row_values(ti, key_vals, writes)?;
        if !self.parent_held_aside(ti, key_vals, &values)? {
            return Ok(false);
        }
        self.evict(ti, key, key_vals, merged.clone(), values, PARENT_MISSING)?;
        self.rows.put(t.id, key, merged)?;
        Ok(true)
    }

    /// Writes a row whose write failed a UNIQUE check (`message`) if it can claim its values,
    /// else evicts it. `st` is its merge state, `values` all its values. Whether it is in its
    /// table.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claim_or_evict(
        &mut self,
        ti: usize,
        key_vals: &[Value],
        key: &[u8],
        st: &RowState,
        values: Vec<Value>,
        writes: &[Write],
        message: &str,
    ) -> Result<bool, Error> {
        let rank = self.rank(ti, st, key)?;
        let why = match self.claim(ti, key_vals, key, &rank, &values, writes)? {
            Claim::Placed => return Ok(true),
            Claim::Blocked(on) => reason(&self.uniques(ti)?[on].label),
            Claim::Orphan => PARENT_MISSING.to_string(),
            Claim::Failed(m) if m.starts_with(UNIQUE_REASON) => format!("{m}: {HELD_ASIDE}"),
            Claim::Failed(_) => format!("{message}: {HELD_ASIDE}"),
        };
        self.evict(ti, key, key_vals, st.clone(), values, &why)?;
        Ok(false)
    }

    /// Evicts a row whose values are `values`: quarantined (one entry per writing site), its
    /// values in its tombstone, its app row (if any) removed, its key listed in
    /// `_outpost_evicted`; its merge state stays alive. With foreign keys enforced, the rows
    /// referencing it are evicted first, as missing their parent: else the commit would fail on
    /// them at every sync (or a CASCADE would delete them unrecorded). They come back with it.
    fn evict(
        &mut self,
        ti: usize,
        key: &[u8],
        key_vals: &[Value],
        st: RowState,
        values: Vec<Value>,
        reason: &str,
    ) -> Result<(), Error> {
        let t = self.tables[ti].clone();
        let conn = self.call.conn;
        let schema = schema::table_schema(conn, &t)?;
        // A later change to the row must find its tombstone (`merge_packed`), and a child its
        // parent missing (`parents_ok`).
        self.tombstoned[ti] = true;
        self.held_aside[ti] = true;
        let mut by_site: Vec<(u32, Vec<CellChange>)> = Vec::new();
        for (c, v) in st.cells.iter().enumerate() {
            let (Some(v), Some(value)) = (v, values.get(c)) else {
                continue;
            };
            if v.epoch != st.exist
                || !matches!(t.def.columns[c].strategy, Strategy::Lww | Strategy::RowLww)
            {
                continue;
            }
            let cell = CellChange {
                column: c as u16,
                hlc: Hlc::from_u64(v.hlc),
                payload: CellPayload::Value(value.clone()),
            };
            match by_site.iter_mut().find(|(s, _)| *s == v.site) {
                Some((_, cells)) => cells.push(cell),
                None => by_site.push((v.site, vec![cell])),
            }
        }
        for (site, cells) in by_site {
            let origin = self
                .sites
                .ids
                .get(site as usize)
                .copied()
                .unwrap_or_default();
            let change = RowChange {
                key: key_vals.to_vec(),
                existence: st.exist,
                cells,
            };
            self.quarantine(origin, &schema, &change, reason)?;
        }
        let mut tomb = conn.prepare(
            "INSERT OR REPLACE INTO _outpost_tombstones(tbl, key, vals) VALUES (?1, ?2, ?3)",
        )?;
        tomb.bind_i64(1, t.id)?;
        tomb.bind_blob(2, key)?;
        tomb.bind_blob(3, &crate::keys::pack(&values))?;
        tomb.run()?;
        drop(tomb);
        let mut listed =
            conn.prepare("INSERT OR IGNORE INTO _outpost_evicted(tbl, key) VALUES (?1, ?2)")?;
        listed.bind_i64(1, t.id)?;
        listed.bind_blob(2, key)?;
        listed.run()?;
        drop(listed);
        if self.fk_on {
            self.evicting.push((ti, key.to_vec()));
            let cascade = (|| {
                for (ci, child) in self.children(ti, key_vals)? {
                    let packed = crate::keys::pack(&child);
                    if self.evicting.iter().any(|(t, k)| *t == ci && *k == packed) {
                        continue;
                    }
                    let id = self.tables[ci].id;
                    let st = self.rows.get(id, &packed)?.unwrap_or_default();
                    let values = self.app_values(ci, &child)?.unwrap_or_default();
                    self.evict(ci, &packed, &child, st, values, PARENT_MISSING)?;
                }
                Ok::<(), Error>(())
            })();
            self.evicting.pop();
            cascade?;
        }
        let mut del = conn.prepare(&format!(
            "DELETE FROM {} WHERE {}",
            quote(&t.def.name),
            Self::where_key(&t, 1)
        ))?;
        del.bind_all(key_vals)?;
        del.run()?;
        drop(del);
        self.applied.note(&t.def.name, key_vals)?;
        let hlc = self.call.session.clock.tick(conn)?;
        let mut e = conn.prepare("INSERT INTO outpost_events(hlc, kind, \"table\", pk, detail) VALUES (?1, 'quarantined', ?2, ?3, ?4)")?;
        e.bind_i64(1, hlc as i64)?;
        e.bind_text(2, &t.def.name)?;
        e.bind_text(3, &crate::json::key_json(key)?)?;
        e.bind_text(4, reason)?;
        e.run()
    }

    /// Whether the row of `table` with key `key_vals` is held aside now, by a UNIQUE collision
    /// or with its parent (listed, alive, no app row).
    pub(crate) fn is_evicted(&mut self, table: &str, key_vals: &[Value]) -> Result<bool, Error> {
        let Some(ti) = self.tables.iter().position(|t| t.def.name == table) else {
            return Ok(false);
        };
        let id = self.tables[ti].id;
        let key = crate::keys::pack(key_vals);
        let listed = self.exists(
            "SELECT 1 FROM _outpost_evicted WHERE tbl = ?1 AND key = ?2".into(),
            &[Value::Integer(id), Value::Blob(key.clone())],
        )?;
        Ok(listed
            && self.rows.get(id, &key)?.is_some_and(|st| st.exist % 2 == 1)
            && self.app_values(ti, key_vals)?.is_none())
    }

    /// Brings the tables back to the rule of this module after rows changed: every evicted
    /// row, earliest rank first, parent tables first, claims its values again until nothing
    /// moves. Then the reason of each row still held aside names the constraint on which the
    /// earliest row that keeps it out holds its value, the same on every replica. Returns how
    /// many rows are back (their quarantine entries go at the next retry pass). Costs one query
    /// when nothing is held aside.
    pub(crate) fn settle(&mut self) -> Result<usize, Error> {
        let mut ids = Vec::new();
        {
            let mut s = self
                .conn()
                .prepare("SELECT DISTINCT tbl FROM _outpost_evicted")?;
            while s.step()? {
                ids.push(s.i64(0));
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        for &id in &ids {
            if !self.tables.iter().any(|t| t.id == id) {
                self.unlist(id, None)?;
            }
        }
        let order: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&ti| ids.contains(&self.tables[ti].id))
            .collect();
        let mut back = 0;
        for ti in order {
            // Each pass puts one row back; the bound only guards against a bug looping.
            for _ in 0..10_000 {
                let rows = self.evicted_rows(ti)?;
                let mut placed = false;
                for e in &rows {
                    let writes: Vec<Write> =
                        e.values.iter().map(Cow::Borrowed).enumerate().collect();
                    if let Claim::Placed =
                        self.claim(ti, &e.key, &e.packed, &e.rank, &e.values, &writes)?
                    {
                        self.put_back(ti, &e.packed)?;
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

    /// The rows of table `ti` held aside, earliest rank first; stale entries (a row deleted
    /// since, or written back by the app) are dropped from the list.
    fn evicted_rows(&mut self, ti: usize) -> Result<Vec<Evicted>, Error> {
        let t = self.tables[ti].clone();
        let mut listed = Vec::new();
        {
            let mut s = self.conn().prepare(
                "SELECT e.key, t.vals FROM _outpost_evicted AS e \
                 LEFT JOIN _outpost_tombstones AS t ON t.tbl = e.tbl AND t.key = e.key \
                 WHERE e.tbl = ?1",
            )?;
            s.bind_i64(1, t.id)?;
            while s.step()? {
                let vals = (!s.is_null(1)).then(|| s.blob(1));
                listed.push((s.blob(0), vals));
            }
        }
        let mut out = Vec::new();
        for (packed, vals) in listed {
            let key = crate::keys::unpack(&packed)?;
            let alive = self.rows.get(t.id, &packed)?.filter(|st| st.exist % 2 == 1);
            let (Some(st), Some(vals)) = (alive, vals) else {
                self.unlist(t.id, Some(&packed))?;
                continue;
            };
            if self.app_values(ti, &key)?.is_some() {
                self.unlist(t.id, Some(&packed))?;
                continue;
            }
            let mut values = crate::keys::unpack(&vals)?;
            // A tombstone written before a column was added is shorter than the row.
            values.resize(t.def.columns.len(), Value::Null);
            let rank = self.rank(ti, &st, &packed)?;
            out.push(Evicted {
                key,
                packed,
                values,
                rank,
            });
        }
        out.sort_by(|a, b| a.rank.cmp(&b.rank));
        Ok(out)
    }

    /// An evicted row is back in its table: no tombstone, not listed.
    fn put_back(&mut self, ti: usize, packed: &[u8]) -> Result<(), Error> {
        let id = self.tables[ti].id;
        let mut d = self
            .conn()
            .prepare("DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
        d.bind_i64(1, id)?;
        d.bind_blob(2, packed)?;
        d.run()?;
        drop(d);
        self.unlist(id, Some(packed))
    }

    /// Removes `packed` (or every row of table `id`) from `_outpost_evicted`.
    fn unlist(&mut self, id: i64, packed: Option<&[u8]>) -> Result<(), Error> {
        let mut s = self
            .conn()
            .prepare("DELETE FROM _outpost_evicted WHERE tbl = ?1 AND (?2 IS NULL OR key = ?2)")?;
        s.bind_i64(1, id)?;
        match packed {
            Some(p) => s.bind_blob(2, p)?,
            None => s.bind(2, &Value::Null)?,
        }
        s.run()
    }

    /// Sets the reason of each row still held aside from what keeps it out now: the earliest
    /// row holding one of its values, and the first constraint they share.
    fn explain(&mut self, ti: usize, rows: &[Evicted]) -> Result<(), Error> {
        let table = self.tables[ti].def.name.clone();
        let uniques = self.uniques(ti)?;
        for e in rows {
            let holders = self.holders(ti, &e.packed, &e.values)?;
            let Some(h) = holders
                .iter()
                .filter(|h| h.rank < e.rank)
                .min_by(|a, b| a.rank.cmp(&b.rank))
            else {
                continue;
            };
            let pk = crate::json::key_json(&e.packed)?;
            let s = self.cached(
                "UPDATE outpost_quarantine SET reason = ?3 WHERE \"table\" = ?1 AND pk = ?2 \
                 AND substr(reason, 1, length(?4)) = ?4 AND reason != ?3"
                    .into(),
            )?;
            s.bind_text(1, &table)?;
            s.bind_text(2, &pk)?;
            s.bind_text(3, &reason(&uniques[h.on].label))?;
            s.bind_text(4, UNIQUE_REASON)?;
            s.run()?;
        }
        Ok(())
    }
}
