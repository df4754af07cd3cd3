//! Which stream an own write belongs to (docs/design.md section 10, "Scopes", "Moves"), found
//! when the log is folded (`streams.rs` numbers them).
//!
//! - A write to an unscoped table is in stream `""`.
//! - A write to a table scoped by a column is in the scope its row had *before* the write: a
//!   referral (an UPDATE of the scope cell) travels in the old scope's stream, which this device
//!   held; an insert is in the scope it inserted; a delete in the scope the row had.
//! - A write to a `via` table is in the scope its parent row has when the log is folded.
//!
//! The log holds what the rows became, not what they were, so the scopes are found walking a
//! fold's entries from the newest back: a row's scope after its newest entry is what its table
//! holds now (or nothing: the row is gone), and each entry tells the scope before it: a scope
//! change logs the old scope (`OP_SCOPE_MOVE`, `triggers.rs`), a delete or key change logs the
//! old values, an insert had no row before it. A value that is no scope name (which the write
//! checks refuse; only a row written before its table was scoped could hold one) counts as `""`.

use crate::error::Error;
use crate::ffi::Conn;
use crate::schema::{ScopeRule, Tracked};
use crate::triggers::{
    OP_DELETE, OP_DELETE_IF_GONE, OP_INSERT, OP_REKEY, OP_REKEY_COUNTED, OP_SCOPE_MOVE,
    OP_UPDATE_RAW,
};
use outpost_protocol::Value;
use std::collections::HashMap;

/// A log entry of a scoped table: seq, table id, packed key, op, and what it logged in `vals`
/// (old values, or the old scope).
type Entry = (u64, i64, Vec<u8>, i64, Option<Value>);

/// How a scoped table's rows find their scope.
enum Rule {
    /// The value column at this index holds it.
    Column(usize),
    /// The value column at this index holds the key of the parent row (in the tracked table at
    /// `parent`, an index into the tables) whose scope the row takes.
    Via { column: usize, parent: usize },
}

/// The scoped tables' rules, by table id.
pub(crate) struct Scopes<'t> {
    conn: Conn,
    tables: &'t [Tracked],
    rules: HashMap<i64, Rule>,
    /// Lookups of one column of an app row, by (table id, column), prepared once: a fold walks
    /// one entry per write.
    reads: std::cell::RefCell<HashMap<(i64, usize), crate::ffi::Stmt>>,
}

/// Whether `s` is a scope name (else a row's scope cell counts as no scope).
pub(crate) fn is_scope_name(s: &str) -> bool {
    outpost_protocol::scope::check_name(s).is_ok()
}

fn scope_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Text(t)) if outpost_protocol::scope::check_name(t).is_ok() => Some(t.clone()),
        _ => None,
    }
}

impl<'t> Scopes<'t> {
    /// The rules of `tables` (`None` when no table is scoped: every write is in stream `""`).
    pub(crate) fn new(conn: Conn, tables: &'t [Tracked]) -> Result<Option<Scopes<'t>>, Error> {
        let mut rules = HashMap::new();
        for t in tables {
            let rule = match &t.def.scope {
                None => continue,
                Some(ScopeRule::Column(c)) => match t.column_index(c) {
                    Some(i) => Rule::Column(i),
                    None => continue,
                },
                Some(ScopeRule::Via(c)) => {
                    let Some(column) = t.column_index(c) else {
                        continue;
                    };
                    let parent = crate::schema::foreign_keys(conn, &t.def.name)?
                        .into_iter()
                        .find(|(_, from, _)| from.len() == 1 && from[0] == *c)
                        .and_then(|(p, _, _)| {
                            tables
                                .iter()
                                .position(|x| x.def.name.eq_ignore_ascii_case(&p))
                        });
                    match parent {
                        Some(parent) => Rule::Via { column, parent },
                        None => continue,
                    }
                }
            };
            rules.insert(t.id, rule);
        }
        Ok((!rules.is_empty()).then_some(Scopes {
            conn,
            tables,
            rules,
            reads: Default::default(),
        }))
    }

    fn table(&self, id: i64) -> Option<&'t Tracked> {
        self.tables.iter().find(|t| t.id == id)
    }

    /// Value column `c` of the row in its table (`None`: the row is not there).
    fn app_value(&self, t: &Tracked, key: &[u8], c: usize) -> Result<Option<Value>, Error> {
        let mut reads = self.reads.borrow_mut();
        let s = match reads.entry((t.id, c)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.conn.prepare(&format!(
                    "SELECT {} FROM {} WHERE {}",
                    crate::schema::quote(&t.def.columns[c].name),
                    crate::schema::quote(&t.def.name),
                    crate::cells::key_match(t)
                ))?)
            }
        };
        s.bind_all(&crate::keys::unpack(key)?)?;
        let found = s.step();
        let v = match found {
            Ok(true) => Some(s.value(0)),
            _ => None,
        };
        s.reset();
        found?;
        Ok(v)
    }

    /// Value column `c` of the row as its table holds it now, else as its tombstone kept it.
    fn value_now(&self, t: &Tracked, key: &[u8], c: usize) -> Result<Option<Value>, Error> {
        if let Some(v) = self.app_value(t, key, c)? {
            return Ok(Some(v));
        }
        let mut s = self
            .conn
            .prepare("SELECT vals FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2")?;
        s.bind_i64(1, t.id)?;
        s.bind_blob(2, key)?;
        if s.step()? {
            Ok(crate::keys::unpack(&s.blob(0))?.get(c).cloned())
        } else {
            Ok(None)
        }
    }

    /// The scope of a row now: its table's cell (or its tombstone's), its parent's for a `via`
    /// table (followed up to a few levels), `""` for unscoped tables or when none is found.
    pub(crate) fn now(&self, t: &Tracked, key: &[u8]) -> Result<String, Error> {
        let (mut t, mut key) = (t, key.to_vec());
        for _ in 0..8 {
            match self.rules.get(&t.id) {
                None => return Ok(String::new()),
                Some(Rule::Column(c)) => {
                    return Ok(scope_of(self.value_now(t, &key, *c)?.as_ref()).unwrap_or_default())
                }
                Some(Rule::Via { column, parent }) => {
                    let Some(v) = self.value_now(t, &key, *column)? else {
                        return Ok(String::new());
                    };
                    key = crate::keys::pack(&[v]);
                    t = &self.tables[*parent];
                }
            }
        }
        Ok(String::new())
    }

    /// [`Scopes::now`] for a caller that reads many rows while no app row changes (the
    /// authority's transfers after an apply): a `via` row's parent scope is looked up once per
    /// parent, and remembered in `memo` by (table id, packed key), which the caller may also fill
    /// with scopes it knows.
    pub(crate) fn now_remembering(
        &self,
        t: &Tracked,
        key: &[u8],
        memo: &mut HashMap<(i64, Vec<u8>), String>,
    ) -> Result<String, Error> {
        let Some(Rule::Via { column, parent }) = self.rules.get(&t.id) else {
            return self.now(t, key);
        };
        let Some(v) = self.value_now(t, key, *column)? else {
            return Ok(String::new());
        };
        let parent = &self.tables[*parent];
        let pk = crate::keys::pack(&[v]);
        if let Some(s) = memo.get(&(parent.id, pk.clone())) {
            return Ok(s.clone());
        }
        let s = self.now(parent, &pk)?;
        memo.insert((parent.id, pk), s.clone());
        Ok(s)
    }

    /// The scope a row of the `via` table `t` whose parent key is `parent_key` takes (`None`:
    /// `t` is no `via` table, or the parent row has no scope).
    pub(crate) fn parent_scope(
        &self,
        t: &Tracked,
        parent_key: &Value,
    ) -> Result<Option<String>, Error> {
        let Some(Rule::Via { parent, .. }) = self.rules.get(&t.id) else {
            return Ok(None);
        };
        let key = crate::keys::pack(std::slice::from_ref(parent_key));
        let scope = self.now(&self.tables[*parent], &key)?;
        Ok((!scope.is_empty()).then_some(scope))
    }

    /// The stream of each entry of the log above local seq `after`, as (last local seq, stream)
    /// segments in seq order, up to the log's newest seq.
    pub(crate) fn of_log(&self, after: u64) -> Result<Vec<(u64, String)>, Error> {
        let conn = self.conn;
        let top = conn
            .query_i64("SELECT coalesce(max(seq), 0) FROM _outpost_log", &[])?
            .unwrap_or(0) as u64;
        if top <= after {
            return Ok(Vec::new());
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut s = conn.prepare(
            "SELECT seq, tbl, key, op, vals FROM _outpost_log WHERE seq > ?1 AND op != 0 ORDER BY seq",
        )?;
        s.bind_i64(1, after as i64)?;
        while s.step()? {
            if !self.rules.contains_key(&s.i64(1)) {
                continue;
            }
            let op = s.i64(3);
            let key = if op == OP_UPDATE_RAW {
                crate::keys::pack(&[s.value(2)])
            } else {
                s.blob(2)
            };
            entries.push((s.i64(0) as u64, s.i64(1), key, op, Some(s.value(4))));
        }
        drop(s);
        // The scope of each row after the entries walked so far (newest first).
        let mut after_walk: HashMap<(i64, Vec<u8>), Option<String>> = HashMap::new();
        let mut streams: HashMap<u64, String> = HashMap::new();
        for (seq, tbl, key, op, vals) in entries.iter().rev() {
            let Some(t) = self.table(*tbl) else { continue };
            let stream = match self.rules.get(tbl) {
                Some(Rule::Via { .. }) => {
                    self.via_stream(t, key, *op, vals.as_ref(), &after_walk)?
                }
                Some(Rule::Column(c)) => {
                    self.column_stream(t, *c, key.clone(), *op, vals.as_ref(), &mut after_walk)?
                }
                None => continue,
            };
            streams.insert(*seq, stream);
        }
        self.keep_referrals_streams(&entries, &mut streams)?;
        let mut out: Vec<(u64, String)> = Vec::new();
        for seq in after + 1..=top {
            let stream = streams.remove(&seq).unwrap_or_default();
            match out.last_mut() {
                Some((to, s)) if *s == stream => *to = seq,
                _ => out.push((seq, stream)),
            }
        }
        Ok(out)
    }

    /// A referral this database made is the row's last write in the stream it held the row in:
    /// the row's later writes in the same stretch of log (made before a fold let it leave, or
    /// while it stays because the new scope is granted too) and those of its `via` children go
    /// in the referral's stream, not in the new scope's, which this device may not hold (a
    /// stream outside its grant could never be pushed). The cloud copies them on to the new
    /// scope as it copies any late write in the old stream (`transfer.rs`).
    fn keep_referrals_streams(
        &self,
        entries: &[Entry],
        streams: &mut HashMap<u64, String>,
    ) -> Result<(), Error> {
        if !entries.iter().any(|e| e.3 == OP_SCOPE_MOVE) {
            return Ok(());
        }
        let mut referred: HashMap<(i64, Vec<u8>), String> = HashMap::new();
        for (seq, tbl, key, op, vals) in entries {
            let Some(t) = self.table(*tbl) else { continue };
            let row = (*tbl, key.clone());
            let inherited = match referred.get(&row) {
                Some(s) => Some(s.clone()),
                None => match self.rules.get(tbl) {
                    Some(Rule::Via { column, parent }) => {
                        let v = match self.app_value(t, key, *column)? {
                            Some(v) => Some(v),
                            None => Self::old_values(t, *op, vals.as_ref())?
                                .and_then(|v| v.get(*column).cloned()),
                        };
                        v.and_then(|v| {
                            let p = (self.tables[*parent].id, crate::keys::pack(&[v]));
                            referred.get(&p).cloned()
                        })
                    }
                    _ => None,
                },
            };
            if let Some(stream) = inherited {
                streams.insert(*seq, stream);
            }
            if *op == OP_SCOPE_MOVE {
                if let Some(stream) = streams.get(seq) {
                    referred.insert(row, stream.clone());
                }
            }
        }
        Ok(())
    }

    /// The old values an entry logged, when it logged them (`vals` packed).
    fn old_values(t: &Tracked, op: i64, vals: Option<&Value>) -> Result<Option<Vec<Value>>, Error> {
        let Some(Value::Blob(b)) = vals else {
            return Ok(None);
        };
        let v = crate::keys::unpack(b)?;
        let npk = t.def.pk.len().min(v.len());
        Ok(match op {
            OP_DELETE | OP_DELETE_IF_GONE => Some(v),
            OP_REKEY => Some(v[npk..].to_vec()),
            OP_REKEY_COUNTED => {
                let k = match v.get(npk) {
                    Some(Value::Integer(k)) => usize::try_from(*k).unwrap_or(0),
                    _ => 0,
                };
                Some(v[(npk + 1 + k).min(v.len())..].to_vec())
            }
            _ => None,
        })
    }

    fn column_stream(
        &self,
        t: &Tracked,
        c: usize,
        key: Vec<u8>,
        op: i64,
        vals: Option<&Value>,
        after_walk: &mut HashMap<(i64, Vec<u8>), Option<String>>,
    ) -> Result<String, Error> {
        let k = (t.id, key);
        let current = match after_walk.get(&k) {
            Some(s) => s.clone(),
            None => self.app_value(t, &k.1, c)?.and_then(|v| scope_of(Some(&v))),
        };
        let old = Self::old_values(t, op, vals)?;
        let (stream, before) = match op {
            OP_INSERT => (current, None),
            OP_SCOPE_MOVE => {
                let old = scope_of(vals);
                (old.clone(), old)
            }
            OP_DELETE | OP_DELETE_IF_GONE => {
                let s = scope_of(old.as_ref().and_then(|v| v.get(c)));
                (s.clone(), s)
            }
            OP_REKEY | OP_REKEY_COUNTED => {
                // The new key was inserted; the old one deleted with its old values.
                let s = scope_of(old.as_ref().and_then(|v| v.get(c)));
                let npk = t.def.pk.len();
                if let Some(Value::Blob(b)) = vals {
                    let v = crate::keys::unpack(b)?;
                    let old_key = crate::keys::pack(&v[..npk.min(v.len())]);
                    after_walk.insert((t.id, old_key), s.clone());
                }
                (s, None)
            }
            _ => (current.clone(), current),
        };
        after_walk.insert(k, before);
        Ok(stream.unwrap_or_default())
    }

    /// The stream of a `via` row's write: its parent's scope at that point of the log (what
    /// the walk back has found of the parent so far, `after_walk`, else the parent's now).
    fn via_stream(
        &self,
        t: &Tracked,
        key: &[u8],
        op: i64,
        vals: Option<&Value>,
        after_walk: &HashMap<(i64, Vec<u8>), Option<String>>,
    ) -> Result<String, Error> {
        let Some(Rule::Via { column, parent }) = self.rules.get(&t.id) else {
            return Ok(String::new());
        };
        // Its parent key: its app row's, or, gone now, the values the delete logged.
        let v = match self.app_value(t, key, *column)? {
            Some(v) => Some(v),
            None => Self::old_values(t, op, vals)?.and_then(|v| v.get(*column).cloned()),
        };
        let Some(v) = v else {
            return self.now(t, key);
        };
        let parent = &self.tables[*parent];
        let pk = crate::keys::pack(&[v]);
        if let Some(walked) = after_walk.get(&(parent.id, pk.clone())) {
            return Ok(walked.clone().unwrap_or_default());
        }
        self.now(parent, &pk)
    }
}

/// Assigns the log's entries not assigned yet to their streams, under grant version `version`
/// (fold runs this first).
pub(crate) fn assign_log(conn: Conn, tables: &[Tracked], version: u64) -> Result<(), Error> {
    let after = crate::streams::last_local(conn)?;
    let segments = of_log(conn, tables, after)?;
    if segments.is_empty() {
        return Ok(());
    }
    let mut runs = crate::streams::Assigner::new(conn, version)?;
    for (to, stream) in segments {
        runs.assign(to, &stream)?;
    }
    Ok(())
}

/// The streams of the log's entries above `after` (read only; see [`Scopes::of_log`]).
pub(crate) fn of_log(
    conn: Conn,
    tables: &[Tracked],
    after: u64,
) -> Result<Vec<(u64, String)>, Error> {
    match Scopes::new(conn, tables)? {
        Some(s) => s.of_log(after),
        None => {
            let top = crate::fold::db_version(conn)?;
            Ok(if top > after {
                vec![(top, String::new())]
            } else {
                Vec::new()
            })
        }
    }
}
