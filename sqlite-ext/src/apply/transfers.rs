//! The authority's side of moves (`transfer.rs`, docs/design.md section 10, "Moves"): after a
//! batch is merged, each row of a scoped table it changed whose scope is now another than the
//! batch's stream is queued for a transfer into its scope's stream: a referral (the scope cell
//! changed in the old scope's stream), a late write to a row that moved already, a `via` child
//! written in its parent's old scope. A row whose scope cell this batch wrote also goes to every
//! stream it was transferred to before, so replicas there learn where it went (concurrent moves
//! end with one owner).

use super::Applier;
use crate::error::Error;
use crate::schema::Tracked;

impl Applier<'_> {
    /// Queues the transfers this batch calls for (module documentation); only the authority
    /// notes rows (`touched`), so elsewhere this does nothing.
    pub(super) fn queue_transfers(&mut self) -> Result<(), Error> {
        let mut touched = std::mem::take(&mut self.touched);
        if touched.is_empty() {
            return Ok(());
        }
        // One look per row: its last change in this batch says its scope best.
        touched.reverse();
        touched.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        touched.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let conn = self.conn();
        let tables: Vec<Tracked> = self.tables.iter().map(|t| (**t).clone()).collect();
        let Some(scopes) = crate::row_scope::Scopes::new(conn, &tables)? else {
            return Ok(());
        };
        // Scopes known without a read (a change that wrote the scope cell), then those read:
        // a parent's for each of its `via` children.
        let mut memo = std::collections::HashMap::new();
        for (ti, key, written) in &touched {
            if let Some(s) = written
                .as_ref()
                .filter(|s| crate::row_scope::is_scope_name(s))
            {
                memo.insert((tables[*ti].id, key.clone()), s.clone());
            }
        }
        for (ti, key, _) in touched {
            let t = &tables[ti];
            let now = match memo.get(&(t.id, key.clone())) {
                Some(s) => s.clone(),
                None => scopes.now_remembering(t, &key, &mut memo)?,
            };
            if now.is_empty() || (now == self.stream && !self.moved_in_batch(ti, &key)) {
                continue;
            }
            let mut into = Vec::new();
            if now != self.stream {
                into.push(now.clone());
            }
            if self.moved_in_batch(ti, &key) {
                for s in crate::transfer::streams_of(conn, t.id, &key)? {
                    if s != now && s != self.stream && !into.contains(&s) {
                        into.push(s);
                    }
                }
            }
            for stream in into {
                log::info!(
                    "outpost_apply: row of {:?} changed in stream {:?} is in scope {now:?}: \
                     transfer queued into stream {stream:?}",
                    t.def.name,
                    self.stream
                );
                crate::transfer::enqueue(conn, t.id, &key, &stream)?;
            }
        }
        Ok(())
    }

    fn moved_in_batch(&self, ti: usize, key: &[u8]) -> bool {
        self.moved.iter().any(|(mi, mk)| *mi == ti && mk == key)
    }
}
