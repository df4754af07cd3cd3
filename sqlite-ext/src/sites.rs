//! Site ids ↔ small integers, so per-column versions stay a few bytes; index 0 is this
//! database's own site id (`outpost_site_id()`).

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::{Arg, Call};
use outpost_protocol::{SiteId, Value};

/// This database's site id (created with the bookkeeping, see `schema::ensure`).
pub(crate) fn site_id(conn: Conn) -> Result<SiteId, Error> {
    let mut s = conn.prepare("SELECT site FROM _outpost_sites WHERE idx = 0")?;
    if s.step()? {
        SiteId::from_slice(&s.blob(0))
            .ok_or_else(|| Error::Corrupt("stored site id is not 16 bytes".into()))
    } else {
        Err(Error::Corrupt("no site id stored".into()))
    }
}

/// `outpost_site_id()`.
pub(crate) fn sql_site_id(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    crate::schema::ensure(call.conn)?;
    Ok(Value::Blob(site_id(call.conn)?.0.to_vec()))
}

/// The `_outpost_sites` table in memory; index 0 is this database.
pub(crate) struct Sites {
    pub ids: Vec<SiteId>,
}

impl Sites {
    pub(crate) fn load(conn: Conn) -> Result<Sites, Error> {
        let mut s = conn.prepare("SELECT idx, site FROM _outpost_sites ORDER BY idx")?;
        let mut ids = Vec::new();
        while s.step()? {
            let idx = s.i64(0) as usize;
            let id = SiteId::from_slice(&s.blob(1))
                .ok_or_else(|| Error::Corrupt("site id not 16 bytes".into()))?;
            if idx != ids.len() {
                return Err(Error::Corrupt("site indexes are not dense".into()));
            }
            ids.push(id);
        }
        if ids.is_empty() {
            return Err(Error::Corrupt("no site id stored".into()));
        }
        Ok(Sites { ids })
    }

    pub(crate) fn me(&self) -> SiteId {
        self.ids[0]
    }

    /// The index of `site`, registering it when new.
    pub(crate) fn index(&mut self, conn: Conn, site: SiteId) -> Result<u32, Error> {
        if let Some(i) = self.ids.iter().position(|s| *s == site) {
            return Ok(i as u32);
        }
        let idx = self.ids.len();
        let mut s = conn.prepare("INSERT INTO _outpost_sites(idx, site) VALUES (?1, ?2)")?;
        s.bind_i64(1, idx as i64)?;
        s.bind_blob(2, &site.0)?;
        s.run()?;
        self.ids.push(site);
        Ok(idx as u32)
    }
}
