//! Storage of `counter` and `review` cells (the protocol's `CounterCell` / `ReviewCell`, kept as
//! JSON in `_outpost_cells`), and the `outpost_conflicts` rows derived from review cells.

use crate::error::Error;
use crate::ffi::Conn;
use crate::json::{key_json, value_json};
use crate::schema::Tracked;
use outpost_protocol::merge::{CounterCell, ReviewCell};
use outpost_protocol::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn load<T: DeserializeOwned + Default>(
    conn: Conn,
    tbl: i64,
    key: &[u8],
    col: usize,
) -> Result<T, Error> {
    let mut s =
        conn.prepare("SELECT state FROM _outpost_cells WHERE tbl = ?1 AND key = ?2 AND col = ?3")?;
    s.bind_i64(1, tbl)?;
    s.bind_blob(2, key)?;
    s.bind_i64(3, col as i64)?;
    if s.step()? {
        serde_json::from_str(&s.text(0)).map_err(|source| Error::CorruptJson {
            what: "cell state",
            source,
        })
    } else {
        Ok(T::default())
    }
}

fn save<T: Serialize>(conn: Conn, tbl: i64, key: &[u8], col: usize, v: &T) -> Result<(), Error> {
    let json = serde_json::to_string(v).map_err(|source| Error::InternalJson {
        what: "a cell state as JSON",
        source,
    })?;
    let mut s = conn.prepare(
        "INSERT OR REPLACE INTO _outpost_cells(tbl, key, col, state) VALUES (?1, ?2, ?3, ?4)",
    )?;
    s.bind_i64(1, tbl)?;
    s.bind_blob(2, key)?;
    s.bind_i64(3, col as i64)?;
    s.bind_text(4, &json)?;
    s.run()
}

pub(crate) fn load_counter(
    conn: Conn,
    tbl: i64,
    key: &[u8],
    col: usize,
) -> Result<CounterCell, Error> {
    load(conn, tbl, key, col)
}

pub(crate) fn save_counter(
    conn: Conn,
    tbl: i64,
    key: &[u8],
    col: usize,
    c: &CounterCell,
) -> Result<(), Error> {
    save(conn, tbl, key, col, c)
}

pub(crate) fn load_review(
    conn: Conn,
    tbl: i64,
    key: &[u8],
    col: usize,
) -> Result<ReviewCell, Error> {
    load(conn, tbl, key, col)
}

/// Saves a review cell and keeps its `outpost_conflicts` row in step (present iff more than one
/// sibling).
pub(crate) fn save_review(
    conn: Conn,
    t: &Tracked,
    key: &[u8],
    col: usize,
    c: &ReviewCell,
) -> Result<(), Error> {
    save(conn, t.id, key, col, c)?;
    if c.siblings().len() > 1 {
        let siblings: Vec<serde_json::Value> = c
            .siblings()
            .iter()
            .map(|s| {
                serde_json::json!({
                    "value": value_json(&s.value),
                    "hlc": s.version.stamp.hlc.to_string(),
                    "site": s.version.stamp.site.to_string(),
                })
            })
            .collect();
        let pk = key_json(key)?;
        let mut s = conn.prepare(
            "INSERT INTO _outpost_conflict_rows(tbl_id, key, col, tbl, pk, col_name, siblings) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(tbl_id, key, col) DO UPDATE SET siblings = excluded.siblings",
        )?;
        s.bind_i64(1, t.id)?;
        s.bind_blob(2, key)?;
        s.bind_i64(3, col as i64)?;
        s.bind_text(4, &t.def.name)?;
        s.bind_text(5, &pk)?;
        s.bind_text(6, &t.def.columns[col].name)?;
        s.bind_text(7, &serde_json::Value::Array(siblings).to_string())?;
        s.run()
    } else {
        let mut s = conn.prepare(
            "DELETE FROM _outpost_conflict_rows WHERE tbl_id = ?1 AND key = ?2 AND col = ?3",
        )?;
        s.bind_i64(1, t.id)?;
        s.bind_blob(2, key)?;
        s.bind_i64(3, col as i64)?;
        s.run()
    }
}

/// `k1 = ?1 AND k2 = ?2 ...` over the table's key columns.
pub(crate) fn key_match(t: &Tracked) -> String {
    let wh: Vec<String> = t
        .def
        .pk
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", crate::schema::quote(c), i + 1))
        .collect();
    wh.join(" AND ")
}

/// Whether the app table holds the row with the packed `key`.
pub(crate) fn app_row_exists(conn: Conn, t: &Tracked, key: &[u8]) -> Result<bool, Error> {
    let mut s = conn.prepare(&format!(
        "SELECT 1 FROM {} WHERE {}",
        crate::schema::quote(&t.def.name),
        key_match(t)
    ))?;
    s.bind_all(&crate::keys::unpack(key)?)?;
    s.step()
}

/// Reads one column of a live app row.
pub(crate) fn read_app_value(
    conn: Conn,
    t: &Tracked,
    key: &[u8],
    col: usize,
) -> Result<Value, Error> {
    let mut s = conn.prepare(&format!(
        "SELECT {} FROM {} WHERE {}",
        crate::schema::quote(&t.def.columns[col].name),
        crate::schema::quote(&t.def.name),
        key_match(t)
    ))?;
    s.bind_all(&crate::keys::unpack(key)?)?;
    Ok(if s.step()? { s.value(0) } else { Value::Null })
}

/// Drops the review siblings written before the row's current causal length `exist` (they died
/// with the delete that ended their epoch), so a conflict is listed only for a live row's current
/// epoch: the same on every replica whichever order the delete and the writes arrived in.
pub(crate) fn prune_review(conn: Conn, t: &Tracked, key: &[u8], exist: u64) -> Result<(), Error> {
    for (c, col) in t.def.columns.iter().enumerate() {
        if col.strategy != outpost_protocol::Strategy::Review {
            continue;
        }
        let cell = load_review(conn, t.id, key, c)?;
        if cell.siblings().iter().all(|s| s.version.epoch >= exist) {
            continue;
        }
        let mut kept = ReviewCell::new();
        for s in cell.siblings().iter().filter(|s| s.version.epoch >= exist) {
            kept.merge(s.clone());
        }
        save_review(conn, t, key, c, &kept)?;
    }
    Ok(())
}
