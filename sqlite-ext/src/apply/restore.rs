//! Parents come back: the rule that keeps clinical data from being lost to a concurrent delete.
//!
//! When a delete arrives for a row that live rows of a tracked child table still reference, or a
//! child arrives whose parent this database deleted, the parent is re-created (from its tombstone
//! when needed) as a *local* write at the next causal length, so it travels back to every replica
//! with fresh clocks; an `outpost_events` row tells a person. Two replicas that restore the same
//! parent concurrently write equal values and LWW converges them.

use super::{Applier, Link, Write};
use crate::cells;
use crate::error::Error;
use crate::schema::{quote, Tracked};
use crate::state::RowState;
use outpost_protocol::{Strategy, Value};
use std::borrow::Cow;
use std::rc::Rc;

impl Applier<'_> {
    /// The foreign-key links between tracked tables that `f` selects.
    fn links_where(&self, f: impl Fn(&Link) -> bool) -> Vec<Rc<Link>> {
        self.links.iter().filter(|l| f(l)).cloned().collect()
    }

    /// The child-side SQL of link `l`: its rows referencing given parent key values, and their keys.
    fn child_query(&self, l: &Link) -> String {
        let c = &self.tables[l.child];
        let w: Vec<String> = l
            .child_cols
            .iter()
            .enumerate()
            .map(|(i, col)| format!("{} = ?{}", quote(col), i + 1))
            .collect();
        let pk: Vec<String> = c.def.pk.iter().map(|k| quote(k)).collect();
        format!(
            "SELECT {} FROM {} WHERE {}",
            pk.join(", "),
            quote(&c.def.name),
            w.join(" AND ")
        )
    }

    pub(super) fn has_children(&mut self, ti: usize, key: &[Value]) -> Result<bool, Error> {
        let links = self.links_where(|l| l.parent == ti);
        for l in links {
            let sql = format!("{} LIMIT 1", self.child_query(&l));
            if self.exists(sql, key)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The rows of tracked tables referencing the row of `ti` with key `key`: (table, key).
    pub(super) fn children(
        &mut self,
        ti: usize,
        key: &[Value],
    ) -> Result<Vec<(usize, Vec<Value>)>, Error> {
        let links = self.links_where(|l| l.parent == ti);
        let mut out = Vec::new();
        for l in links {
            let n = self.tables[l.child].def.pk.len();
            let mut s = self.conn().prepare(&self.child_query(&l))?;
            s.bind_all(key)?;
            while s.step()? {
                out.push((l.child, (0..n).map(|i| s.value(i)).collect()));
            }
        }
        Ok(out)
    }

    /// The parent key a row of `l.child` references, from its key and `value` of its value
    /// columns (`None` for one unknown); `None` when a part is NULL or unknown (nothing to check).
    fn parent_key(
        &self,
        l: &Link,
        key: &[Value],
        value: impl Fn(usize) -> Option<Value>,
    ) -> Option<Vec<Value>> {
        let t = &self.tables[l.child];
        l.child_cols
            .iter()
            .map(|col| {
                let v = match t.def.pk.iter().position(|k| k == col) {
                    Some(p) => Some(key[p].clone()),
                    None => t.column_index(col).and_then(&value),
                };
                v.filter(|v| *v != Value::Null)
            })
            .collect()
    }

    fn parent_exists(&mut self, parent: usize, fk: &[Value]) -> Result<bool, Error> {
        let p = &self.tables[parent];
        let sql = format!(
            "SELECT 1 FROM {} WHERE {}",
            quote(&p.def.name),
            Self::where_key(p, 1)
        );
        self.exists(sql, fk)
    }

    /// The parents a row of `ti` with `values` (all its value columns) references that their
    /// tables lack: (parent table, key).
    fn missing_parents(
        &mut self,
        ti: usize,
        key: &[Value],
        values: &[Value],
    ) -> Result<Vec<(usize, Vec<Value>)>, Error> {
        let links = self.links_where(|l| l.child == ti);
        let mut out = Vec::new();
        for l in links {
            let Some(fk) = self.parent_key(&l, key, |c| values.get(c).cloned()) else {
                continue;
            };
            if !self.parent_exists(l.parent, &fk)? {
                out.push((l.parent, fk));
            }
        }
        Ok(out)
    }

    /// Whether foreign keys are enforced and a row of `ti` with `values` references a row its
    /// parent table lacks. Changes nothing.
    pub(super) fn parent_missing(
        &mut self,
        ti: usize,
        key: &[Value],
        values: &[Value],
    ) -> Result<bool, Error> {
        Ok(self.fk_on && !self.missing_parents(ti, key, values)?.is_empty())
    }

    /// Whether a row of `ti` with `values` references a parent held aside here (listed in
    /// `_outpost_evicted`, absent from its table).
    pub(super) fn parent_held_aside(
        &mut self,
        ti: usize,
        key: &[Value],
        values: &[Value],
    ) -> Result<bool, Error> {
        for (parent, fk) in self.missing_parents(ti, key, values)? {
            let sql = "SELECT 1 FROM _outpost_evicted WHERE tbl = ?1 AND key = ?2";
            let listed = [
                Value::Integer(self.tables[parent].id),
                Value::Blob(crate::keys::pack(&fk)),
            ];
            if self.exists(sql.into(), &listed)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks the parents a row about to be written references; re-creates one this database
    /// deleted. False when a parent is missing and foreign keys are enforced.
    pub(super) fn parents_ok(
        &mut self,
        ti: usize,
        key: &[Value],
        writes: &[Write],
    ) -> Result<bool, Error> {
        // Outside the strict pass only parents this database deleted need a look.
        let links =
            self.links_where(|l| l.child == ti && (self.strict || self.tombstoned[l.parent]));
        for l in links {
            // A column not written now was checked when it was written.
            let written = |c: usize| {
                writes
                    .iter()
                    .find(|(w, _)| *w == c)
                    .map(|(_, v)| v.as_ref().clone())
            };
            let Some(fk) = self.parent_key(&l, key, written) else {
                continue;
            };
            if self.parent_exists(l.parent, &fk)? {
                continue;
            }
            let pkey = crate::keys::pack(&fk);
            let pid = self.tables[l.parent].id;
            match self.rows.get(pid, &pkey)? {
                Some(pst) if pst.exist % 2 == 0 && self.tombstone(pid, &pkey)?.is_some() => {
                    let why = "a child row was added or changed elsewhere while this row was deleted: row restored";
                    if !self.resurrect(l.parent, &pkey, pst, why)? && self.fk_on {
                        return Ok(false);
                    }
                }
                _ if self.fk_on => return Ok(false),
                _ => {}
            }
        }
        Ok(true)
    }

    pub(super) fn tombstone(&self, tbl: i64, key: &[u8]) -> Result<Option<Vec<Value>>, Error> {
        let mut s = self
            .conn()
            .prepare("SELECT vals FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
        s.bind_i64(1, tbl)?;
        s.bind_blob(2, key)?;
        if s.step()? {
            Ok(Some(crate::keys::unpack(&s.blob(0))?))
        } else {
            Ok(None)
        }
    }

    /// Makes a row alive again as a local write of this database: next causal length, every
    /// cell rewritten with a fresh clock and seq (so it is exported), an event for a person.
    /// A row brought back from its tombstone whose UNIQUE values rows of earlier rank hold now
    /// is alive but held aside (apply/unique.rs): returns whether it is in its table.
    pub(super) fn resurrect(
        &mut self,
        ti: usize,
        key: &[u8],
        mut st: RowState,
        why: &str,
    ) -> Result<bool, Error> {
        let t = self.tables[ti].clone();
        let conn = self.conn();
        let key_vals = crate::keys::unpack(key)?;
        // The row goes back into its table first (the local write below reads review values
        // from it), unless it collides on a UNIQUE index: `collided` holds SQLite's message.
        let mut collided = None;
        let vals = match self.app_values(ti, &key_vals)? {
            Some(v) => v,
            None => {
                let mut vals = self.tombstone(t.id, key)?.unwrap_or_default();
                vals.resize(t.def.columns.len(), Value::Null);
                let writes: Vec<Write> = vals.iter().map(Cow::Borrowed).enumerate().collect();
                match self.upsert(ti, &key_vals, &writes) {
                    Ok(()) => {}
                    Err(Error::Sqlite { code, message, .. }) if code == super::UNIQUE_FAILED => {
                        collided = Some(message);
                    }
                    Err(e) => return Err(e),
                }
                vals
            }
        };
        let hlc = self.call.session.clock.tick(conn)?;
        let mut s = conn.prepare("INSERT INTO _outpost_log(tbl, key, op, hlc, mask) VALUES (?1, ?2, 0, ?3, 0) RETURNING seq")?;
        s.bind_i64(1, t.id)?;
        s.bind_blob(2, key)?;
        s.bind_i64(3, hlc as i64)?;
        let seq = if s.step()? {
            s.i64(0) as u64
        } else {
            return Err(Error::Internal("no seq allocated".into()));
        };
        drop(s);
        // Allocated outside the log's fold: its stream is the row's scope now (`streams.rs`).
        let tables: Vec<Tracked> = self.tables.iter().map(|t| (**t).clone()).collect();
        let stream = match crate::row_scope::Scopes::new(conn, &tables)? {
            Some(scopes) => scopes.now(&t, key)?,
            None => String::new(),
        };
        let version = crate::scope_check::grant_version(self.call)?;
        crate::streams::assign(conn, seq, &stream, version)?;
        if st.exist % 2 == 0 {
            st.exist += 1;
        }
        st.exist_seq = seq;
        cells::prune_review(conn, &t, key, st.exist)?;
        let counters: Vec<Value> = (0..t.def.columns.len())
            .filter(|&c| t.def.columns[c].strategy == Strategy::Counter)
            .map(|c| vals.get(c).cloned().unwrap_or(Value::Null))
            .collect();
        let all: Vec<usize> = (0..t.def.columns.len()).collect();
        let used = crate::fold::write_local(
            self.call,
            &t,
            &self.sites,
            key,
            &mut st,
            &all,
            hlc,
            seq,
            &counters,
            collided.is_some().then_some(vals.as_slice()),
        )?;
        self.max_hlc = self.max_hlc.max(used);
        self.rows.put(t.id, key, &st)?;
        let mut e = conn.prepare("INSERT INTO outpost_events(hlc, kind, \"table\", pk, detail) VALUES (?1, 'restored', ?2, ?3, ?4)")?;
        e.bind_i64(1, hlc as i64)?;
        e.bind_text(2, &t.def.name)?;
        e.bind_text(3, &crate::json::key_json(key)?)?;
        e.bind_text(4, why)?;
        e.run()?;
        drop(e);
        if let Some(message) = collided {
            // Its rank is that of the local write just recorded, as on every replica it reaches.
            let writes: Vec<Write> = vals.iter().map(Cow::Borrowed).enumerate().collect();
            let values = vals.clone();
            if !self.claim_or_evict(ti, &key_vals, key, &st, values, &writes, &message)? {
                return Ok(false); // evicted: its tombstone stays, rewritten
            }
        }
        let mut d = conn.prepare("DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
        d.bind_i64(1, t.id)?;
        d.bind_blob(2, key)?;
        d.run()?;
        Ok(true)
    }
}
