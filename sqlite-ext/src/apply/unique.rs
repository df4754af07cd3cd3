//! UNIQUE collisions: the later write loses, on every replica.
//!
//! When a row collides with another on a UNIQUE index, the two rows' versions of the colliding
//! column decide, by `(epoch, hlc, site)`, and the later row is *evicted*, whichever of the two
//! arrived first: its values go to the quarantine (one entry per writing site) and to its
//! tombstone, its app row (if any) is removed, and its merge state stays alive: the row still
//! exists for sync (export reads its values from the tombstone), so every replica receives it
//! and evicts it too. A later change to an evicted row is merged over its tombstone values (never
//! a row with columns missing), and a retry puts it back once the value is free, or takes the
//! value from a later holder it was never compared with (`Applier::resurface`). Every replica
//! ends with the earlier row in the table and the later one in quarantine, with the same reason,
//! whatever the order the changes came in (tests/convergence.rs, UNIQUE column).

use super::{Applier, Outcome, Write};
use crate::error::Error;
use crate::schema::{self, quote};
use crate::state::RowState;
use outpost_protocol::batch::{CellChange, CellPayload, RowChange, TableSchema};
use outpost_protocol::{Hlc, SiteId, Strategy, Value};
use std::borrow::Cow;

/// Reasons of UNIQUE quarantine entries start with this (SQLite's wording).
pub(crate) const UNIQUE_REASON: &str = "UNIQUE constraint failed";

/// The row holding the value a write collided with (`Applier::collision_holder`).
struct Holder {
    /// The first colliding column: the two rows' versions of it decide.
    first: usize,
    key: Vec<Value>,
    packed: Vec<u8>,
    state: RowState,
}

impl Applier<'_> {
    /// The row a write of `ti` collided with: SQLite's `message` names the UNIQUE columns and
    /// `writes` holds the written values of each; `None` when it cannot tell.
    fn collision_holder(
        &mut self,
        ti: usize,
        message: &str,
        writes: &[Write],
    ) -> Result<Option<Holder>, Error> {
        let t = self.tables[ti].clone();
        // "UNIQUE constraint failed: staff.badge, staff.x"
        let cols: Vec<usize> = message
            .split(':')
            .nth(1)
            .unwrap_or("")
            .split(',')
            .filter_map(|c| c.trim().rsplit('.').next())
            .filter_map(|c| t.column_index(c))
            .collect();
        let vals: Option<Vec<Value>> = cols
            .iter()
            .map(|c| {
                writes
                    .iter()
                    .find(|(w, _)| w == c)
                    .map(|(_, v)| v.as_ref().clone())
            })
            .collect();
        let (Some(&first), Some(vals)) = (cols.first(), vals) else {
            return Ok(None);
        };
        let pk: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
        let wh: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", quote(&t.def.columns[*c].name), i + 1))
            .collect();
        let mut s = self.call.conn.prepare(&format!(
            "SELECT {} FROM {} WHERE {}",
            pk.join(", "),
            quote(&t.def.name),
            wh.join(" AND ")
        ))?;
        s.bind_all(&vals)?;
        let local_key: Vec<Value> = if s.step()? {
            (0..pk.len()).map(|i| s.value(i)).collect()
        } else {
            return Ok(None);
        };
        drop(s);
        let packed = crate::keys::pack(&local_key);
        let state = self.rows.get(t.id, &packed)?.unwrap_or_default();
        Ok(Some(Holder {
            first,
            key: local_key,
            packed,
            state,
        }))
    }

    /// Handles a UNIQUE failure of an incoming row. `message` is SQLite's; `key` is the row's
    /// packed key and `merged` its merge state with the incoming change applied. The two rows'
    /// versions of the first colliding column decide, as on every replica: the later row is
    /// evicted (`evict`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn unique_collision(
        &mut self,
        ti: usize,
        origin: SiteId,
        schema: &TableSchema,
        row: &RowChange,
        key: &[u8],
        merged: &RowState,
        writes: &[Write],
        message: &str,
    ) -> Result<Outcome, Error> {
        let reason = format!("{message}: the later write is kept here for a person");
        let t = self.tables[ti].clone();
        let Some(Holder {
            first,
            key: local_key,
            packed: local_packed,
            state: st,
        }) = self.collision_holder(ti, message, writes)?
        else {
            return self.quarantine(origin, schema, row, &reason);
        };
        let ids = &self.sites.ids;
        let incoming = merged.cell(first).map(|v| v.cell_version(ids));
        let local = st.cell(first).map(|v| v.cell_version(ids));
        let incoming_later = match incoming {
            None => true,
            Some(i) => local.is_none_or(|l| i > l),
        };
        if incoming_later {
            // The incoming row is the later one: it is held evicted, exactly as a replica that
            // had it before the earlier row holds it (state merged, values in its tombstone,
            // no app row), so a later change to it finds the same thing everywhere.
            let mut values = self
                .app_values(ti, &row.key)?
                .unwrap_or_else(|| vec![Value::Null; t.def.columns.len()]);
            for (c, v) in writes {
                values[*c] = v.as_ref().clone();
            }
            self.evict(ti, key, &row.key, merged.clone(), values, &reason)?;
            self.rows.put(t.id, key, merged)?;
            return Ok(Outcome::Quarantined);
        }
        let values = self.app_values(ti, &local_key)?.unwrap_or_default();
        self.evict(ti, &local_packed, &local_key, st, values, &reason)?;
        match self.upsert(ti, &row.key, writes) {
            Ok(()) => Ok(Outcome::Applied),
            Err(e) if e.is_constraint() => self.quarantine(origin, schema, row, &reason),
            Err(e) => Err(e),
        }
    }

    /// Evicts a row whose values are `values`: quarantined (one entry per writing site), its
    /// values in its tombstone, its app row (if any) removed; its merge state stays alive.
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
        // A later change to the row must find its tombstone (`merge_packed`).
        self.tombstoned[ti] = true;
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
        let mut del = conn.prepare(&format!(
            "DELETE FROM {} WHERE {}",
            quote(&t.def.name),
            Self::where_key(&t, 1)
        ))?;
        del.bind_all(key_vals)?;
        del.run()?;
        drop(del);
        let hlc = self.call.session.tick(conn)?;
        let mut e = conn.prepare("INSERT INTO outpost_events(hlc, kind, \"table\", pk, detail) VALUES (?1, 'quarantined', ?2, ?3, ?4)")?;
        e.bind_i64(1, hlc as i64)?;
        e.bind_text(2, &t.def.name)?;
        e.bind_text(3, &crate::cells::key_json(key)?)?;
        e.bind_text(4, reason)?;
        e.run()
    }
}

impl Applier<'_> {
    /// Whether this database holds a later causal length for `row`'s row than `row` carries:
    /// a delete (or a delete and a new insert) written after it was applied here, so the
    /// change can never take effect.
    pub(crate) fn superseded(&mut self, table: &str, row: &RowChange) -> Result<bool, Error> {
        let Some(t) = self.tables.iter().find(|t| t.def.name == table).cloned() else {
            return Ok(false);
        };
        let key = crate::keys::pack(&row.key);
        Ok(self
            .rows
            .get(t.id, &key)?
            .is_some_and(|st| st.exist > row.existence))
    }

    /// Puts an evicted row (state alive, app row absent, values in its tombstone) back into its
    /// table when that no longer collides. Returns whether the row is back.
    pub(crate) fn resurface(&mut self, table: &str, key_vals: &[Value]) -> Result<bool, Error> {
        let Some(ti) = self.tables.iter().position(|t| t.def.name == table) else {
            return Ok(false);
        };
        let t = self.tables[ti].clone();
        let key = crate::keys::pack(key_vals);
        let Some(st) = self.rows.get(t.id, &key)?.filter(|st| st.exist % 2 == 1) else {
            return Ok(false);
        };
        if self.app_values(ti, key_vals)?.is_some() {
            return Ok(true);
        }
        let Some(vals) = self.tombstone(t.id, &key)? else {
            return Ok(false);
        };
        let writes: Vec<Write> = vals
            .into_iter()
            .map(Cow::Owned)
            .enumerate()
            .take(t.def.columns.len())
            .collect();
        let mut written = self.upsert(ti, key_vals, &writes);
        if let Err(Error::Sqlite { code, message, .. }) = &written {
            // Still colliding: with a row it was never compared with (the one it lost to may be
            // gone, and another may hold the value now). The earlier of the two keeps it, as
            // wherever the two met first.
            if *code == super::UNIQUE_FAILED {
                let message = message.clone();
                if let Some(Holder {
                    first,
                    key: holder_key,
                    packed: holder_packed,
                    state: holder,
                }) = self.collision_holder(ti, &message, &writes)?
                {
                    let ids = &self.sites.ids;
                    let mine = st.cell(first).map(|v| v.cell_version(ids));
                    let theirs = holder.cell(first).map(|v| v.cell_version(ids));
                    if mine.is_some_and(|m| theirs.is_some_and(|h| m < h)) {
                        let values = self.app_values(ti, &holder_key)?.unwrap_or_default();
                        let reason =
                            format!("{message}: the later write is kept here for a person");
                        self.evict(ti, &holder_packed, &holder_key, holder, values, &reason)?;
                        written = self.upsert(ti, key_vals, &writes);
                    }
                }
            }
        }
        match written {
            Ok(()) => {
                let mut d = self
                    .call
                    .conn
                    .prepare("DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
                d.bind_i64(1, t.id)?;
                d.bind_blob(2, &key)?;
                d.run()?;
                Ok(true)
            }
            Err(e) if e.is_constraint() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
