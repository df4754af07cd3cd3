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
use crate::schema::quote;
use crate::state::RowState;
use outpost_protocol::{Strategy, Value};
use std::borrow::Cow;
use std::rc::Rc;

impl Applier<'_> {
    pub(super) fn has_children(&mut self, ti: usize, key: &[Value]) -> Result<bool, Error> {
        let links: Vec<Rc<Link>> = self
            .links
            .iter()
            .filter(|l| l.parent == ti)
            .cloned()
            .collect();
        for l in links {
            let c = &self.tables[l.child];
            let w: Vec<String> = l
                .child_cols
                .iter()
                .enumerate()
                .map(|(i, col)| format!("{} = ?{}", quote(col), i + 1))
                .collect();
            let sql = format!(
                "SELECT 1 FROM {} WHERE {} LIMIT 1",
                quote(&c.def.name),
                w.join(" AND ")
            );
            if self.exists(sql, key)? {
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
        let links: Vec<Rc<Link>> = self
            .links
            .iter()
            // Outside the strict pass only parents this database deleted need a look.
            .filter(|l| l.child == ti && (self.strict || self.tombstoned[l.parent]))
            .cloned()
            .collect();
        for l in links {
            let t = &self.tables[ti];
            let mut fk = Vec::new();
            for col in &l.child_cols {
                let v = if let Some(p) = t.def.pk.iter().position(|k| k == col) {
                    Some(key[p].clone())
                } else {
                    match t.column_index(col) {
                        // A column not written now was checked when it was written.
                        Some(c) => writes
                            .iter()
                            .find(|(w, _)| *w == c)
                            .map(|(_, v)| v.as_ref().clone()),
                        None => None,
                    }
                };
                match v {
                    Some(Value::Null) | None => {
                        fk.clear();
                        break;
                    }
                    Some(v) => fk.push(v),
                }
            }
            if fk.is_empty() {
                continue;
            }
            let p = self.tables[l.parent].clone();
            let sql = format!(
                "SELECT 1 FROM {} WHERE {}",
                quote(&p.def.name),
                Self::where_key(&p, 1)
            );
            if self.exists(sql, &fk)? {
                continue;
            }
            let pkey = crate::keys::pack(&fk);
            let pid = p.id;
            match self.rows.get(pid, &pkey)? {
                Some(pst) if pst.exist % 2 == 0 && self.tombstone(pid, &pkey)?.is_some() => {
                    self.resurrect(l.parent, &pkey, pst, "a child row was added or changed elsewhere while this row was deleted: row restored")?;
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
    pub(super) fn resurrect(
        &mut self,
        ti: usize,
        key: &[u8],
        mut st: RowState,
        why: &str,
    ) -> Result<(), Error> {
        let t = self.tables[ti].clone();
        let conn = self.conn();
        let key_vals = crate::keys::unpack(key)?;
        let vals = match self.app_values(ti, &key_vals)? {
            Some(v) => v,
            None => {
                let vals = self.tombstone(t.id, key)?.unwrap_or_default();
                let writes: Vec<Write> = vals
                    .iter()
                    .map(Cow::Borrowed)
                    .enumerate()
                    .take(t.def.columns.len())
                    .collect();
                self.upsert(ti, &key_vals, &writes)?;
                vals
            }
        };
        let hlc = self.call.session.tick(conn)?;
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
        )?;
        self.max_hlc = self.max_hlc.max(used);
        self.rows.put(t.id, key, &st)?;
        let mut d = conn.prepare("DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
        d.bind_i64(1, t.id)?;
        d.bind_blob(2, key)?;
        d.run()?;
        let mut e = conn.prepare("INSERT INTO outpost_events(hlc, kind, \"table\", pk, detail) VALUES (?1, 'restored', ?2, ?3, ?4)")?;
        e.bind_i64(1, hlc as i64)?;
        e.bind_text(2, &t.def.name)?;
        e.bind_text(3, &cells::key_json(key)?)?;
        e.bind_text(4, why)?;
        e.run()
    }
}
