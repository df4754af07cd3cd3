//! Per-record sync state: which rows hold local changes no relay has acknowledged, which wait
//! for a person, read by `outpost_row_status` (`row_status.rs`) and `outpost_pending`
//! (`pending_table.rs`).
//!
//! A row is **pending** when it holds an own change with a seq above the acknowledged one
//! (`acked.rs`): in its folded state (`state.rs`: a cell version of site 0 at the row's current
//! epoch, or an existence change, with a local seq above it; exactly what the next export would
//! send) or in the trigger log not folded yet (`_outpost_log`: every entry is a local write, its
//! seq above anything a relay holds). A change received from a peer carries no local seq, so it
//! never makes a row pending.
//!
//! **Read, never fold.** Both functions run inside the app's own statements (a list query calling
//! `outpost_row_status` per row), where a write would take the write lock in the middle of a
//! read, fail on a read-only connection, and change what the app's statement reads. So the log is
//! read as it is, each entry interpreted as fold would (raw column updates carry the key unpacked,
//! a key change deletes the old key, a possible delete by REPLACE counts only when the row is
//! gone), and nothing is written.
//!
//! **One snapshot per connection, rebuilt when the database changed.** Preparing a statement
//! costs more than the whole per-row budget (about 5 µs each; 1,000 rows must answer in well
//! under a 16 ms frame), so a call reads the state once into a [`Snapshot`] (the pending rows, the
//! rows with a review conflict, the quarantined rows, the tracked tables' keys) kept on the
//! connection (`Session::pending`) and answers from memory. It is valid while a [`Stamp`] is
//! unchanged: this connection's change counter (`sqlite3_total_changes`, no statement), the
//! database's `data_version` (another connection committed) and, inside a transaction, the log's
//! newest seq (a `ROLLBACK` or `ROLLBACK TO` of this connection's writes moves neither counter
//! but removes their log rows). A rebuild reads the pending rows through the `seq` index (not
//! the whole table), the unfolded log, the review conflicts and the quarantine.

use crate::error::Error;
use crate::ffi::Conn;
use crate::schema::{self, Direction, Tracked};
use crate::session::Session;
use crate::state::RowState;
use crate::triggers::{
    OP_DELETE, OP_DELETE_IF_GONE, OP_INSERT, OP_REKEY, OP_REKEY_COUNTED, OP_SCOPE_MOVE, OP_UPDATE,
    OP_UPDATE_RAW,
};
use outpost_protocol::{Hlc, Value};
use std::collections::{HashMap, HashSet};

/// What the database looked like when a [`Snapshot`] was read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    changes: i32,
    data_version: i64,
    /// Inside a transaction only: the log's newest seq (-1 when there is no log).
    log_top: Option<i64>,
}

impl Stamp {
    fn now(conn: Conn) -> Result<Stamp, Error> {
        let changes = conn.total_changes();
        let data_version = conn.query_i64("PRAGMA data_version", &[])?.unwrap_or(0);
        let log_top = if conn.autocommit() {
            None
        } else {
            // A database without bookkeeping has no log: nothing to roll back there.
            Some(
                conn.query_i64("SELECT coalesce(max(seq), 0) FROM _outpost_log", &[])
                    .ok()
                    .flatten()
                    .unwrap_or(-1),
            )
        };
        Ok(Stamp {
            changes,
            data_version,
            log_top,
        })
    }
}

/// How SQLite converts a value stored in a column (its type affinity, from the declared type).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    /// SQLite's rules (datatype3.html, 3.1), in their order.
    fn of(decl: &str) -> Affinity {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Affinity::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            Affinity::Text
        } else if d.contains("BLOB") || d.is_empty() {
            Affinity::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// `v` as the column would store it, for the common cases: a key given as text to a
    /// numeric key (Android binds every argument as text) or as a number to a text key. Values
    /// SQLite would render differently (a real into a text column) are left as given.
    fn apply(self, v: Value) -> Value {
        match (self, v) {
            (Affinity::Text, Value::Integer(n)) => Value::Text(n.to_string()),
            (Affinity::Integer | Affinity::Numeric, Value::Text(t)) => {
                numeric(&t).unwrap_or(Value::Text(t))
            }
            (Affinity::Integer | Affinity::Numeric, Value::Real(f)) => {
                exact_integer(f).unwrap_or(Value::Real(f))
            }
            (Affinity::Real, Value::Integer(n)) => Value::Real(n as f64),
            (Affinity::Real, Value::Text(t)) => match numeric(&t) {
                Some(Value::Integer(n)) => Value::Real(n as f64),
                Some(r @ Value::Real(_)) => r,
                _ => Value::Text(t),
            },
            (_, v) => v,
        }
    }
}

/// Text that reads as a number, as a numeric column would store it.
fn numeric(t: &str) -> Option<Value> {
    let s = t.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(Value::Integer(n));
    }
    let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
    // "inf" and "nan" parse in Rust, not in SQLite.
    if !s.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(exact_integer(f).unwrap_or(Value::Real(f)))
}

/// A real that is exactly an integer, as an integer.
fn exact_integer(f: f64) -> Option<Value> {
    (f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f)).then_some(Value::Integer(f as i64))
}

/// A tracked table as the per-row calls need it.
pub(crate) struct TableView {
    pub id: i64,
    pub name: String,
    pub pk: Vec<String>,
    affinities: Vec<Affinity>,
    pub columns: Vec<String>,
}

impl TableView {
    /// The packed key of the key values given (in declared order), each converted as its
    /// column stores it.
    pub(crate) fn pack_key(&self, values: Vec<Value>) -> Vec<u8> {
        let vals: Vec<Value> = values
            .into_iter()
            .zip(&self.affinities)
            .map(|(v, a)| a.apply(v))
            .collect();
        crate::keys::pack(&vals)
    }
}

/// What a pending row holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PendingRow {
    /// Value columns (indexes into the table's columns) with unacknowledged local writes.
    pub columns: Vec<usize>,
    /// The row's own delete is unacknowledged (the row is gone here).
    pub deleted: bool,
    /// The oldest of those writes' clocks (none for a delete).
    pub since_hlc: Option<u64>,
}

impl PendingRow {
    fn write(&mut self, cols: impl Iterator<Item = usize>, hlc: u64) {
        let mut any = false;
        for c in cols {
            any = true;
            if let Err(at) = self.columns.binary_search(&c) {
                self.columns.insert(at, c);
            }
        }
        self.deleted = false;
        if any {
            self.since_hlc = Some(self.since_hlc.map_or(hlc, |s| s.min(hlc)));
        }
    }

    fn delete(&mut self) {
        // A deleted row's cells are not sent (export sends its existence only).
        self.columns.clear();
        self.since_hlc = None;
        self.deleted = true;
    }

    /// The oldest write's clock as Unix milliseconds.
    pub(crate) fn since_ms(&self) -> Option<i64> {
        self.since_hlc.map(|h| Hlc::from_u64(h).millis() as i64)
    }
}

/// The per-row sync state of the database at one [`Stamp`].
pub(crate) struct Snapshot {
    stamp: Stamp,
    pub tables: Vec<TableView>,
    /// Pending rows by (table id, packed key).
    pub rows: HashMap<(i64, Vec<u8>), PendingRow>,
    /// Rows with a `review` cell listed in `outpost_conflicts`.
    conflicts: HashSet<(i64, Vec<u8>)>,
    /// Rows held aside by a UNIQUE collision.
    evicted: HashSet<(i64, Vec<u8>)>,
    /// `outpost_quarantine` entries as (table name, key JSON).
    quarantined: HashSet<(String, String)>,
}

/// A row's state, in the order one wins over another when several hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RowStatus {
    Synced,
    Pending,
    Conflict,
    Quarantined,
}

impl RowStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RowStatus::Synced => "synced",
            RowStatus::Pending => "pending",
            RowStatus::Conflict => "conflict",
            RowStatus::Quarantined => "quarantined",
        }
    }
}

impl Snapshot {
    pub(crate) fn table(&self, name: &str) -> Option<&TableView> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The row's state: quarantined > conflict > pending > synced (`docs/sql-api.md`).
    pub(crate) fn status(&self, t: &TableView, key: &[u8]) -> Result<RowStatus, Error> {
        let k = (t.id, key.to_vec());
        if self.evicted.contains(&k)
            || (!self.quarantined.is_empty()
                && self
                    .quarantined
                    .contains(&(t.name.clone(), crate::json::key_json(key)?)))
        {
            return Ok(RowStatus::Quarantined);
        }
        if self.conflicts.contains(&k) {
            return Ok(RowStatus::Conflict);
        }
        if self.rows.contains_key(&k) {
            return Ok(RowStatus::Pending);
        }
        Ok(RowStatus::Synced)
    }
}

/// Runs `f` on the connection's snapshot, read again if the database changed since.
pub(crate) fn with_snapshot<T>(
    conn: Conn,
    session: &Session,
    f: impl FnOnce(&Snapshot) -> Result<T, Error>,
) -> Result<T, Error> {
    let stamp = Stamp::now(conn)?;
    let snap = match session.pending.take::<Snapshot>() {
        Some(s) if s.stamp == stamp => s,
        _ => read(conn, stamp)?,
    };
    let r = f(&snap);
    session.pending.put(snap);
    r
}

/// Reads the snapshot (no writes; a database without bookkeeping tracks nothing).
fn read(conn: Conn, stamp: Stamp) -> Result<Snapshot, Error> {
    let mut snap = Snapshot {
        stamp,
        tables: Vec::new(),
        rows: HashMap::new(),
        conflicts: HashSet::new(),
        evicted: HashSet::new(),
        quarantined: HashSet::new(),
    };
    let present = conn.query_i64(
        "SELECT count(*) FROM sqlite_master WHERE name IN \
         ('_outpost_tables', '_outpost_evicted', '_outpost_conflict_rows', 'outpost_quarantine')",
        &[],
    )?;
    if present != Some(4) {
        return Ok(snap);
    }
    let tracked = schema::load_tracked(conn)?;
    for t in &tracked {
        let info = schema::table_info(conn, &t.def.name)?;
        let affinities = t
            .def
            .pk
            .iter()
            .map(|k| {
                info.iter()
                    .find(|c| &c.name == k)
                    .map_or(Affinity::Blob, |c| Affinity::of(&c.decl_type))
            })
            .collect();
        snap.tables.push(TableView {
            id: t.id,
            name: t.def.name.clone(),
            pk: t.def.pk.clone(),
            affinities,
            columns: t.def.columns.iter().map(|c| c.name.clone()).collect(),
        });
    }
    let acked = Acked {
        runs: crate::streams::Runs::load(conn)?,
        marks: crate::acked::acked(conn)?,
    };
    let sends = |id: i64| {
        tracked
            .iter()
            .find(|t| t.id == id)
            .filter(|t| t.def.direction != Direction::Down)
    };
    read_state(conn, &acked, &sends, &mut snap.rows)?;
    read_log(conn, acked.runs.floor(&acked.marks), &sends, &mut snap.rows)?;
    let mut s = conn.prepare("SELECT tbl_id, key FROM _outpost_conflict_rows")?;
    while s.step()? {
        snap.conflicts.insert((s.i64(0), s.blob(1)));
    }
    let mut s = conn.prepare("SELECT tbl, key FROM _outpost_evicted")?;
    while s.step()? {
        snap.evicted.insert((s.i64(0), s.blob(1)));
    }
    let mut s = conn.prepare("SELECT DISTINCT \"table\", pk FROM outpost_quarantine")?;
    while s.step()? {
        snap.quarantined.insert((s.text(0), s.text(1)));
    }
    Ok(snap)
}

/// What relays acknowledged, per own stream, and the runs that put local seqs in streams.
struct Acked {
    runs: crate::streams::Runs,
    marks: HashMap<String, u64>,
}

impl Acked {
    /// Whether own local seq `seq` is above its stream's acknowledged seq.
    fn pending(&self, seq: u64) -> bool {
        !self.runs.covered(&self.marks, seq)
    }
}

/// Folded rows with an own write not acknowledged, as export would send them.
fn read_state<'t>(
    conn: Conn,
    acked: &Acked,
    sends: &impl Fn(i64) -> Option<&'t Tracked>,
    rows: &mut HashMap<(i64, Vec<u8>), PendingRow>,
) -> Result<(), Error> {
    let mut s = conn.prepare(
        "SELECT tbl, key, exist, exist_seq, clocks FROM _outpost_rows WHERE seq > ?1 AND seq > 0",
    )?;
    let floor = acked.runs.floor(&acked.marks);
    s.bind_i64(1, i64::try_from(floor).unwrap_or(i64::MAX))?;
    while s.step()? {
        let tbl = s.i64(0);
        if sends(tbl).is_none() {
            continue;
        }
        let st = RowState::decode(s.i64(2) as u64, s.i64(3) as u64, &s.blob(4))?;
        let alive = st.exist % 2 == 1;
        let mut p = PendingRow::default();
        if alive {
            for (c, v) in st.cells.iter().enumerate() {
                let Some(v) = v else { continue };
                if v.site == 0 && v.epoch == st.exist && v.seq > 0 && acked.pending(v.seq) {
                    p.write(std::iter::once(c), v.hlc);
                }
            }
        } else if st.exist_seq > 0 && acked.pending(st.exist_seq) {
            p.delete();
        }
        let exist_pending = st.exist_seq > 0 && acked.pending(st.exist_seq);
        if !p.columns.is_empty() || p.deleted || (alive && exist_pending) {
            rows.insert((tbl, s.blob(1)), p);
        }
    }
    Ok(())
}

/// The log's entries not folded yet (above `acked`: every local seq at or below it is
/// acknowledged), each read as fold will read it.
fn read_log<'t>(
    conn: Conn,
    acked: u64,
    sends: &impl Fn(i64) -> Option<&'t Tracked>,
    rows: &mut HashMap<(i64, Vec<u8>), PendingRow>,
) -> Result<(), Error> {
    let mut s = conn.prepare(
        "SELECT tbl, key, op, hlc, mask, vals FROM _outpost_log WHERE op != 0 AND seq > ?1 ORDER BY seq",
    )?;
    s.bind_i64(1, i64::try_from(acked).unwrap_or(i64::MAX))?;
    while s.step()? {
        let Some(t) = sends(s.i64(0)) else { continue };
        let (op, hlc, mask) = (s.i64(2), s.i64(3) as u64, s.i64(4));
        let n = t.def.columns.len();
        let key = if op == OP_UPDATE_RAW {
            crate::keys::pack(&[s.value(1)])
        } else {
            s.blob(1)
        };
        match op {
            OP_INSERT => rows.entry((t.id, key)).or_default().write(0..n, hlc),
            OP_UPDATE | OP_UPDATE_RAW | OP_SCOPE_MOVE if mask != 0 => rows
                .entry((t.id, key))
                .or_default()
                .write((0..n.min(63)).filter(|c| mask & (1i64 << c) != 0), hlc),
            OP_DELETE => rows.entry((t.id, key)).or_default().delete(),
            // Logged before a REPLACE that may have deleted the row: only a row gone now was.
            OP_DELETE_IF_GONE if !crate::cells::app_row_exists(conn, t, &key)? => {
                rows.entry((t.id, key)).or_default().delete()
            }
            OP_REKEY | OP_REKEY_COUNTED => {
                let vals = if s.is_null(5) {
                    Vec::new()
                } else {
                    crate::keys::unpack(&s.blob(5))?
                };
                let npk = t.def.pk.len().min(vals.len());
                let old = crate::keys::pack(&vals[..npk]);
                rows.entry((t.id, old)).or_default().delete();
                rows.entry((t.id, key)).or_default().write(0..n, hlc);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The given key values as SQLite values (argument order = declared key order).
pub(crate) fn key_values(args: &[crate::arg::Arg]) -> Vec<Value> {
    args.iter()
        .map(|a| match *a {
            crate::arg::Arg::Null => Value::Null,
            crate::arg::Arg::Integer(n) => Value::Integer(n),
            crate::arg::Arg::Real(f) => Value::Real(f),
            crate::arg::Arg::Text(t) => Value::Text(t.to_string()),
            crate::arg::Arg::Blob(b) => Value::Blob(b.to_vec()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Affinity;
    use outpost_protocol::Value;

    #[test]
    fn key_values_take_their_column_affinity() {
        assert_eq!(Affinity::of("INTEGER"), Affinity::Integer);
        assert_eq!(Affinity::of("varchar(36)"), Affinity::Text);
        assert_eq!(Affinity::of(""), Affinity::Blob);
        assert_eq!(Affinity::of("DOUBLE"), Affinity::Real);
        assert_eq!(Affinity::of("DECIMAL"), Affinity::Numeric);
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(Affinity::Integer.apply(t(" 42 ")), Value::Integer(42));
        assert_eq!(Affinity::Integer.apply(t("4.0")), Value::Integer(4));
        assert_eq!(Affinity::Numeric.apply(t("4.5")), Value::Real(4.5));
        assert_eq!(Affinity::Integer.apply(t("p1")), t("p1"));
        assert_eq!(Affinity::Integer.apply(t("inf")), t("inf"));
        assert_eq!(Affinity::Text.apply(Value::Integer(7)), t("7"));
        assert_eq!(Affinity::Real.apply(Value::Integer(7)), Value::Real(7.0));
        assert_eq!(Affinity::Blob.apply(t("7")), t("7"));
    }
}
