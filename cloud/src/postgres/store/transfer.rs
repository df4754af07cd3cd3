//! The cloud's transfers in PostgreSQL (apply-core's `transfer.rs` decides them): queued as an
//! outbox entry of the new scope's stream by `outpost.transfer` (`capture.sql`, which the capture
//! triggers call too for a back-office move), and the streams a row was transferred to, kept in
//! `outpost.transferred`.

use super::{sql, PgStore, StoreError};
use outpost_apply_core::Table;
use outpost_protocol::Value;

impl PgStore<'_, '_> {
    /// The streams (scope names) the row of `t` with `key` was transferred into.
    pub(super) fn transferred_into(
        &mut self,
        t: &Table,
        key: &[Value],
    ) -> Result<Vec<String>, StoreError> {
        let s = self.stmt("SELECT stream FROM outpost.transferred WHERE tbl = $1 AND key = $2")?;
        let k = self.table(t)?.key(key);
        let rows = self
            .tx
            .query(&s, &[&(t.id as i32), &k])
            .map_err(sql(format!(
                "reading where a row of table {:?} was transferred",
                t.name
            )))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Queues a transfer of the row of `t` with `key` into the stream of scope `scope`.
    pub(super) fn queue_transfer(
        &mut self,
        t: &Table,
        key: &[Value],
        scope: &str,
    ) -> Result<(), StoreError> {
        let s = self.stmt("SELECT outpost.transfer($1, $2::text::jsonb, $3)")?;
        let k = self.table(t)?.key(key);
        log::info!(
            "postgres apply: row {k} of {:?} is in scope {scope:?}: transfer queued",
            t.name
        );
        self.tx
            .execute(&s, &[&(t.id as i32), &k, &scope])
            .map_err(sql(format!(
                "queueing a transfer of a row of table {:?} into scope {scope:?}",
                t.name
            )))?;
        Ok(())
    }
}
