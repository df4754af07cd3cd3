//! UNIQUE collisions: the later write loses, on every replica.
//!
//! When a row from a peer collides with a local row on a UNIQUE index, the two rows' versions of
//! the colliding column decide, by `(epoch, hlc, site)`: if the incoming one is later it goes to
//! the quarantine; if the local one is later, it is *evicted*: its values go to the quarantine
//! (one entry per writing site) and to its tombstone, the app row is removed, and its merge state
//! stays as it was: the row still exists for sync (export reads its values from the tombstone),
//! so every replica receives it and quarantines it too. Either way every replica ends with the
//! earlier row in the table and the later one in quarantine, with the same reason. A retry puts
//! an evicted row back once the collision is gone (`Applier::resurface`).

use super::{Applier, Outcome, Write};
use crate::error::Error;
use crate::schema::{self, quote};
use crate::state::RowState;
use outpost_protocol::batch::{CellChange, CellPayload, RowChange, TableSchema};
use outpost_protocol::merge::CellVersion;
use outpost_protocol::{Hlc, SiteId, Stamp, Strategy, Value};
use std::borrow::Cow;

/// Reasons of UNIQUE quarantine entries start with this (SQLite's wording).
pub(crate) const UNIQUE_REASON: &str = "UNIQUE constraint failed";

impl Applier<'_> {
    /// Handles a UNIQUE failure of an incoming row. `message` is SQLite's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn unique_collision(
        &mut self,
        ti: usize,
        origin: SiteId,
        schema: &TableSchema,
        row: &RowChange,
        writes: &[Write],
        message: &str,
    ) -> Result<Outcome, Error> {
        let reason = format!("{message}: the later write is kept here for a person");
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
            return self.quarantine(origin, schema, row, &reason);
        };
        let Some(incoming) = row.cells.iter().find(|c| {
            schema
                .value_columns()
                .nth(c.column as usize)
                .is_some_and(|i| schema.columns[i as usize].name == t.def.columns[first].name)
        }) else {
            return self.quarantine(origin, schema, row, &reason);
        };
        let incoming = CellVersion {
            epoch: row.existence,
            stamp: Stamp {
                hlc: incoming.hlc,
                site: origin,
            },
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
            Vec::new()
        };
        drop(s);
        if local_key.is_empty() {
            return self.quarantine(origin, schema, row, &reason);
        }
        let key = crate::keys::pack(&local_key);
        let st = self.rows.get(t.id, &key)?.unwrap_or_default();
        let local = st.cell(first).map(|v| v.cell_version(&self.sites.ids));
        if local.is_none_or(|l| incoming > l) {
            return self.quarantine(origin, schema, row, &reason);
        }
        self.evict(ti, &key, &local_key, st, &reason)?;
        match self.upsert(ti, &row.key, writes) {
            Ok(()) => Ok(Outcome::Applied),
            Err(e) if e.is_constraint() => self.quarantine(origin, schema, row, &reason),
            Err(e) => Err(e),
        }
    }

    /// Moves a local row to the quarantine and deletes it as a local write.
    fn evict(
        &mut self,
        ti: usize,
        key: &[u8],
        key_vals: &[Value],
        st: RowState,
        reason: &str,
    ) -> Result<(), Error> {
        let t = self.tables[ti].clone();
        let conn = self.call.conn;
        let schema = schema::table_schema(conn, &t)?;
        let values = self.app_values(ti, key_vals)?.unwrap_or_default();
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
    /// Puts an evicted row (state alive, app row absent, values in its tombstone) back into its
    /// table when that no longer collides. Returns whether the row is back.
    pub(crate) fn resurface(&mut self, table: &str, key_vals: &[Value]) -> Result<bool, Error> {
        let Some(ti) = self.tables.iter().position(|t| t.def.name == table) else {
            return Ok(false);
        };
        let t = self.tables[ti].clone();
        let key = crate::keys::pack(key_vals);
        let alive = self
            .rows
            .get(t.id, &key)?
            .is_some_and(|st| st.exist % 2 == 1);
        if !alive || self.app_values(ti, key_vals)?.is_some() {
            return Ok(alive);
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
        match self.upsert(ti, key_vals, &writes) {
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
