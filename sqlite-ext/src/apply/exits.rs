//! Rows that leave (docs/design.md section 10, "Holding a row"): a replica holds a row iff the
//! row's merged scope cell is in its grant. When an applied change makes a row's scope cell a
//! scope outside this device's grant (a referral made elsewhere, arriving in the old scope's
//! stream), the row leaves:
//!
//! - its app row is deleted **without writing a delete**: no log entry (the apply captures
//!   nothing), no change of its causal length, so nothing travels; its `via` children leave
//!   with it;
//! - its values go to its tombstone and its state stays, so its own changes not sent yet are
//!   still exported (in the old scope's stream, where fold put them: `row_scope.rs`);
//! - an *exit marker* (table, key, the stream it left, the scope cell's version) makes later
//!   writes to it arriving in that stream be ignored (the cloud copies them on to the new
//!   stream);
//! - a write to it arriving in any other stream, or any transfer (the cloud brings it back,
//!   `transfer.rs`), merges into the state it left with and, if anything wins, writes the row
//!   whole from its tombstone; the scope is then judged again: held, the marker goes; not held
//!   (a stale transfer), the row stays out.
//!
//! A referral this device makes itself leaves the same way, once the log holding it is folded
//! (`own_moves_leave`): its change goes out in the old scope's stream like any unsent change.
//!
//! `outpost_status()` counts the markers under `exits`.

use super::Applier;
use crate::error::Error;
use crate::schema::{quote, ScopeRule};
use outpost_protocol::Value;

/// The exit markers.
pub(crate) const TABLE: &str = "
CREATE TABLE IF NOT EXISTS _outpost_exits(tbl INTEGER NOT NULL, key BLOB NOT NULL, stream TEXT NOT NULL,
  hlc INTEGER NOT NULL, site BLOB NOT NULL, PRIMARY KEY(tbl, key)) WITHOUT ROWID;
";

/// How many rows left this database (`outpost_status().exits`).
pub(crate) fn count(conn: crate::ffi::Conn) -> Result<i64, Error> {
    Ok(conn
        .query_i64("SELECT count(*) FROM _outpost_exits", &[])?
        .unwrap_or(0))
}

/// This device's own referrals, folded just now (`fold.rs`: local seq, table id, packed key of
/// each write that changed a row's scope cell): a row now in a scope outside the grant leaves as
/// a row referred elsewhere does (module documentation), its marker naming the stream its
/// referral went in (the old scope's). Returns how many rows left.
pub(crate) fn own_moves_leave(
    call: &crate::functions::Call,
    moves: &[(u64, i64, Vec<u8>)],
) -> Result<u64, Error> {
    let runs = crate::streams::Runs::load(call.conn)?;
    let _quiet = call.session.suppress();
    let mut ap = Applier::new(call)?;
    let mut left = 0;
    for (lseq, tbl, key) in moves {
        let Some(ti) = ap.tables.iter().position(|t| t.id == *tbl) else {
            continue;
        };
        ap.stream = runs
            .stream_of(*lseq)
            .map(|(s, _)| s.to_string())
            .unwrap_or_default();
        ap.moved = vec![(ti, key.clone())];
        left += ap.exit_moved()?;
    }
    Ok(left)
}

impl Applier<'_> {
    /// Whether a change to the row (`ti`, packed `key`) is ignored because the row left through
    /// the stream the batch is in; a change in another stream, or a transfer, may bring it back
    /// (`returning`).
    pub(super) fn exited(&mut self, ti: usize, key: &[u8]) -> Result<bool, Error> {
        if self.tables[ti].def.scope.is_none() {
            return Ok(false);
        }
        if !self.any_exits {
            if self.transfer {
                self.forget_if_gone(ti, key)?;
            }
            return Ok(false);
        }
        let tbl = self.tables[ti].id;
        let s =
            self.cached("SELECT stream FROM _outpost_exits WHERE tbl = ?1 AND key = ?2".into())?;
        s.bind_i64(1, tbl)?;
        s.bind_blob(2, key)?;
        let found = if s.step()? { Some(s.text(0)) } else { None };
        s.reset();
        let Some(stream) = found else {
            if self.transfer {
                self.forget_if_gone(ti, key)?;
            }
            return Ok(false);
        };
        if stream == self.stream && !self.transfer {
            return Ok(true);
        }
        // Another stream, or a transfer, may bring the row back: the change merges into the
        // state the row left with (its values in its tombstone, written whole if anything
        // wins), and its scope is judged again after the batch (`exit_moved`), which drops the
        // marker once the row is held again. A stale transfer (an older scope than the one it
        // left for) then changes nothing and the row stays out.
        self.returning.push((ti, key.to_vec()));
        Ok(false)
    }

    /// A transfer brings back a row whose state stayed here without its app row or a marker (it
    /// left, and its marker went when its scope drained): the old state goes, so the transfer
    /// writes the row whole instead of finding its cells held already.
    fn forget_if_gone(&mut self, ti: usize, key: &[u8]) -> Result<(), Error> {
        let tbl = self.tables[ti].id;
        let Some(st) = self.rows.get(tbl, key)? else {
            return Ok(());
        };
        if st.exist % 2 == 0 || self.held_aside[ti] {
            return Ok(());
        }
        let key_vals = crate::keys::unpack(key)?;
        if self.app_values(ti, &key_vals)?.is_some() {
            return Ok(());
        }
        for sql in [
            "DELETE FROM _outpost_rows WHERE tbl = ?1 AND key = ?2",
            "DELETE FROM _outpost_cells WHERE tbl = ?1 AND key = ?2",
            "DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2",
        ] {
            let s = self.cached(sql.into())?;
            s.bind_i64(1, tbl)?;
            s.bind_blob(2, key)?;
            s.run()?;
        }
        Ok(())
    }

    /// The rows that left and that this batch's changes reached (`returning`), parents first:
    /// one whose scope (its cell, or its parent's) is granted again comes back whole from its
    /// tombstone if no change wrote it already, and loses its marker; one still outside the
    /// grant whose app row a change wrote leaves again. Returns how many rows came back.
    pub(super) fn settle_returning(&mut self) -> Result<u64, Error> {
        let mut rows = std::mem::take(&mut self.returning);
        if rows.is_empty() {
            return Ok(0);
        }
        let rank: Vec<usize> = {
            let mut r = vec![usize::MAX; self.tables.len()];
            for (pos, &ti) in self.order.iter().enumerate() {
                r[ti] = pos;
            }
            r
        };
        rows.sort_by(|a, b| (rank[a.0], &a.1).cmp(&(rank[b.0], &b.1)));
        rows.dedup();
        let tables: Vec<crate::schema::Tracked> =
            self.tables.iter().map(|t| (**t).clone()).collect();
        let mut back = 0;
        for (ti, key) in rows {
            let tbl = self.tables[ti].id;
            let Some(st) = self.rows.get(tbl, &key)? else {
                continue;
            };
            if st.exist % 2 == 0 {
                continue;
            }
            // Read per row: a parent restored just before is its children's scope.
            let scope = match crate::row_scope::Scopes::new(self.conn(), &tables)? {
                Some(scopes) => scopes.now(&tables[ti], &key)?,
                None => continue,
            };
            let key_vals = crate::keys::unpack(&key)?;
            let present = self.app_values(ti, &key_vals)?.is_some();
            if crate::scope_check::granted(self.call, &scope)? {
                if !present {
                    let Some(vals) = self.tombstone(tbl, &key)? else {
                        continue;
                    };
                    let n = self.tables[ti].def.columns.len();
                    let writes: Vec<super::Write> = (0..n)
                        .map(|c| {
                            (
                                c,
                                std::borrow::Cow::Owned(
                                    vals.get(c).cloned().unwrap_or(Value::Null),
                                ),
                            )
                        })
                        .collect();
                    self.upsert(ti, &key_vals, &writes)?;
                    let s = self.cached(
                        "DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2".into(),
                    )?;
                    s.bind_i64(1, tbl)?;
                    s.bind_blob(2, &key)?;
                    s.run()?;
                }
                let s =
                    self.cached("DELETE FROM _outpost_exits WHERE tbl = ?1 AND key = ?2".into())?;
                s.bind_i64(1, tbl)?;
                s.bind_blob(2, &key)?;
                s.run()?;
                back += 1;
            } else if present {
                self.exit(ti, &key, &key_vals, 0, &[], 0)?;
            }
        }
        Ok(back)
    }

    /// The rows whose scope cell this batch wrote and which are now in a scope outside the
    /// device's grant leave (module documentation). Returns how many rows left.
    pub(super) fn exit_moved(&mut self) -> Result<u64, Error> {
        let moved = std::mem::take(&mut self.moved);
        let mut left = 0;
        for (ti, key) in moved {
            let Some(ScopeRule::Column(column)) = self.tables[ti].def.scope.clone() else {
                continue;
            };
            let Some(c) = self.tables[ti].column_index(&column) else {
                continue;
            };
            let key_vals = crate::keys::unpack(&key)?;
            let Some(values) = self.app_values(ti, &key_vals)? else {
                continue;
            };
            let scope = match values.get(c) {
                Some(Value::Text(s)) => s.clone(),
                _ => continue,
            };
            if crate::scope_check::granted(self.call, &scope)? {
                // Held (again): a row that came back loses its marker.
                let tbl = self.tables[ti].id;
                let s =
                    self.cached("DELETE FROM _outpost_exits WHERE tbl = ?1 AND key = ?2".into())?;
                s.bind_i64(1, tbl)?;
                s.bind_blob(2, &key)?;
                s.run()?;
                continue;
            }
            let version = self
                .rows
                .get(self.tables[ti].id, &key)?
                .and_then(|st| st.cell(c).copied());
            let (hlc, site) = match version {
                Some(v) => (v.hlc, self.sites_at(v.site)),
                None => (0, Vec::new()),
            };
            left += self.exit(ti, &key, &key_vals, hlc, &site, 0)?;
        }
        Ok(left)
    }

    fn sites_at(&self, index: u32) -> Vec<u8> {
        self.sites
            .ids
            .get(index as usize)
            .map(|s| s.0.to_vec())
            .unwrap_or_default()
    }

    /// Takes the row out (its `via` children first), keeping a marker. Returns the rows taken.
    fn exit(
        &mut self,
        ti: usize,
        key: &[u8],
        key_vals: &[Value],
        hlc: u64,
        site: &[u8],
        depth: u32,
    ) -> Result<u64, Error> {
        let mut left = 0;
        if depth < 8 && key_vals.len() == 1 {
            let children: Vec<(usize, String)> = self
                .tables
                .iter()
                .enumerate()
                .filter_map(|(ci, t)| match &t.def.scope {
                    Some(ScopeRule::Via(col)) => {
                        let parent = self.links.iter().find(|l| {
                            l.child == ci && l.parent == ti && l.child_cols == [col.clone()]
                        })?;
                        Some((parent.child, col.clone()))
                    }
                    _ => None,
                })
                .collect();
            for (ci, col) in children {
                let t = self.tables[ci].clone();
                let pk: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
                let mut s = self.conn().prepare(&format!(
                    "SELECT outpost_pack({}) FROM {} WHERE {} = ?1",
                    pk.join(", "),
                    quote(&t.def.name),
                    quote(&col)
                ))?;
                s.bind(1, &key_vals[0])?;
                let mut keys = Vec::new();
                while s.step()? {
                    keys.push(s.blob(0));
                }
                drop(s);
                for k in keys {
                    let vals = crate::keys::unpack(&k)?;
                    left += self.exit(ci, &k, &vals, hlc, site, depth + 1)?;
                }
            }
        }
        self.delete(ti, key, key_vals)?;
        let (tbl, stream) = (self.tables[ti].id, self.stream.clone());
        let s = self.cached(
            "INSERT OR REPLACE INTO _outpost_exits(tbl, key, stream, hlc, site) VALUES (?1, ?2, ?3, ?4, ?5)"
                .into(),
        )?;
        s.bind_i64(1, tbl)?;
        s.bind_blob(2, key)?;
        s.bind_text(3, &stream)?;
        s.bind_i64(4, i64::try_from(hlc).unwrap_or(i64::MAX))?;
        s.bind_blob(5, site)?;
        s.run()?;
        self.any_exits = true;
        Ok(left + 1)
    }
}
