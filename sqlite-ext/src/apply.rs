//! `outpost_apply`: merging a peer's batch, all or nothing.
//!
//! One transaction (a savepoint, so a failure rolls back without aborting the caller's
//! statement) holds the merge and the vector advance. Rows that become alive are applied
//! parents-first (tables topologically sorted by their foreign keys), deletes children-first, with
//! `PRAGMA defer_foreign_keys=ON`. Our triggers are suppressed (they log nothing), so applied
//! writes keep their origin, and when they are the only triggers they are switched off for the
//! call (`trigger_pause.rs`) so the writes need no statement journal.
//!
//! Per row: existence merges by max; a cell at the row's current epoch merges by its column's
//! strategy; a cell from an older epoch is dead. What cannot be applied goes to the quarantine
//! with a reason (unknown table or column, constraint failure, a parent that does not exist
//! here), never blocking the rest. A whole batch that writes what only the tenant's cloud writes
//! is refused before any row (`apply/direction.rs`): recorded with its reason
//! (`batch_quarantine.rs`), its range covered. A pulled `up` batch its relay withheld covers its
//! range and applies nothing.
//!
//! **Clinical data is never lost to a concurrent delete**: when a delete arrives for a row that
//! live rows of a tracked child table still reference, or a child arrives whose parent this
//! database deleted, the parent is re-created (from its tombstone when needed) as a *local* write
//! at the next causal length, so it travels back to every replica; an `outpost_events` row tells
//! a person. Replicas that re-create concurrently write equal values; LWW on them converges.

use crate::applied::AppliedList;
use crate::cells;
use crate::error::{ApplyError, Error};
use crate::ffi::{Conn, Stmt};
use crate::functions::{Arg, Call};
use crate::schema::{self, quote, Direction, ScopeRule, Tracked};
use crate::scope_keys::Received;
use crate::sites::Sites;
use crate::state::{NewRows, RowStore, Version};
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{
    BatchHeader, CellPayload, Direction as Flag, RowChange, TableChanges, TableSchema,
};
use outpost_protocol::control::Directory;
use outpost_protocol::merge::{lww_wins, CellVersion, Contribution, ReviewWrite};
use outpost_protocol::{SeqRange, SiteId, Stamp, Strategy, StreamId, Value};
mod carry;
mod direction;
pub(crate) mod exits;
pub(crate) mod grant;
mod restore;
mod retry;
mod signatures;
mod transfers;
mod trigger_pause;
mod unique;

pub(crate) use retry::{retry_all, sql_retry};

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

/// What happened to one row change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Outcome {
    Applied,
    Quarantined,
}

/// Counts reported by `outpost_apply`.
#[derive(Default, Debug)]
pub(crate) struct Stats {
    pub applied: u64,
    pub unchanged: u64,
    pub conflicts: u64,
    pub quarantined: u64,
    /// Rows that left: their scope moved outside this device's grant (`apply/exits.rs`).
    pub exits: u64,
}

/// A foreign key between two tracked tables, resolved to the parent's key order.
#[derive(Clone)]
struct Link {
    child: usize,
    parent: usize,
    /// Child columns, in the parent's primary-key order.
    child_cols: Vec<String>,
}

/// A value to write into a local column: borrowed from the batch when it is the incoming value,
/// owned when the merge computed it (a counter's sum, a review's shown value).
pub(crate) type Write<'a> = (usize, Cow<'a, Value>);

/// A batch table's value columns (by name, in its order) and their index here, if any.
struct ColumnMap {
    names: Vec<String>,
    local: Vec<Option<usize>>,
}

/// A batch table resolved to a tracked table here (`Applier::target`).
struct Target {
    /// Index into `Applier::tables`.
    ti: usize,
    columns: Rc<ColumnMap>,
    /// Why its rows cannot be applied here: the batch declares the table with another scope
    /// rule (rows would land in scopes this database does not put them in).
    scope_differs: Option<String>,
}

/// Merge machinery shared by apply and quarantine retry.
pub(crate) struct Applier<'c> {
    call: &'c Call<'c>,
    pub stats: Stats,
    tables: Vec<Rc<Tracked>>,
    order: Vec<usize>,
    links: Vec<Rc<Link>>,
    /// Batch value-column names → local column, per batch table (checked on every hit).
    maps: HashMap<String, Rc<ColumnMap>>,
    stmts: HashMap<String, Stmt>,
    sites: Sites,
    rows: RowStore,
    /// Row writes by (table, columns written, fresh): see `upsert` and `insert_fresh`.
    writers: HashMap<(usize, u64, bool), Stmt>,
    fk_on: bool,
    /// Check every parent a row references (else only parents this database deleted; a missing
    /// parent then surfaces as a foreign-key failure at commit and the batch is redone strictly).
    pub strict: bool,
    /// Tracked tables holding tombstones (only their rows can need restoring).
    tombstoned: Vec<bool>,
    /// Tracked tables holding rows held aside by a UNIQUE collision (`_outpost_evicted`): only
    /// their live rows can lack an app row (apply/unique.rs).
    held_aside: Vec<bool>,
    /// UNIQUE indexes by table, read when a collision first needs them (unique.rs).
    uniques: HashMap<usize, Rc<Vec<unique::Unique>>>,
    /// Rows whose eviction is under way (table, packed key): a cycle of references ends there.
    evicting: Vec<(usize, Vec<u8>)>,
    pub max_hlc: u64,
    /// The stream of the batch being applied (exit markers are per stream: `exits.rs`).
    stream: String,
    /// Whether any exit marker exists (else no row needs looking up).
    any_exits: bool,
    /// Rows of tables scoped by a column whose scope cell this batch wrote (they may leave).
    moved: Vec<(usize, Vec<u8>)>,
    /// Whether this database is the scope authority (`transfer.rs`): it notes `touched`.
    authority: bool,
    /// Rows of scoped tables this batch changed, on the authority, with the scope cell the
    /// change wrote if any (`apply/transfers.rs`).
    touched: Vec<(usize, Vec<u8>, Option<String>)>,
    /// Whether the batch is a transfer: it brings rows back through any stream (`exits.rs`).
    transfer: bool,
    /// Rows that left and that this batch may bring back (`exits.rs`).
    returning: Vec<(usize, Vec<u8>)>,
    /// The highest clock of a cell received (applied or not; `restamp.rs` keeps re-stamped
    /// changes above it).
    pub received_hlc: u64,
    /// Every app row written, for an app that asked (`applied.rs`).
    applied: AppliedList,
}

impl<'c> Applier<'c> {
    pub(crate) fn new(call: &'c Call<'c>) -> Result<Applier<'c>, Error> {
        let conn = call.conn;
        let tables = schema::load_tracked(conn)?;
        let mut links = Vec::new();
        for (ci, t) in tables.iter().enumerate() {
            for (parent, from, to) in schema::foreign_keys(conn, &t.def.name)? {
                let Some(pi) = tables
                    .iter()
                    .position(|p| p.def.name.eq_ignore_ascii_case(&parent))
                else {
                    continue;
                };
                let pk = &tables[pi].def.pk;
                let child_cols: Option<Vec<String>> = if to.is_empty() {
                    (from.len() == pk.len()).then(|| from.clone())
                } else {
                    pk.iter()
                        .map(|k| to.iter().position(|x| x == k).map(|i| from[i].clone()))
                        .collect()
                };
                if let Some(child_cols) = child_cols {
                    links.push(Rc::new(Link {
                        child: ci,
                        parent: pi,
                        child_cols,
                    }));
                }
            }
        }
        let fk_on = conn.query_i64("PRAGMA foreign_keys", &[])?.unwrap_or(0) != 0;
        let order = schema::topo_order(conn, &tables)?;
        let mut tombstoned = Vec::new();
        for t in &tables {
            let q = "SELECT 1 FROM _outpost_tombstones WHERE tbl = ?1 LIMIT 1";
            tombstoned.push(conn.query_i64(q, &[Value::Integer(t.id)])?.is_some());
        }
        let mut held_aside = vec![false; tables.len()];
        {
            let mut s = conn.prepare("SELECT DISTINCT tbl FROM _outpost_evicted")?;
            while s.step()? {
                let id = s.i64(0);
                if let Some(i) = tables.iter().position(|t| t.id == id) {
                    held_aside[i] = true;
                }
            }
        }
        Ok(Applier {
            call,
            stats: Stats::default(),
            tables: tables.into_iter().map(Rc::new).collect(),
            order,
            links,
            maps: HashMap::new(),
            stmts: HashMap::new(),
            sites: Sites::load(conn)?,
            rows: RowStore::new(conn)?,
            writers: HashMap::new(),
            fk_on,
            strict: true,
            tombstoned,
            held_aside,
            uniques: HashMap::new(),
            evicting: Vec::new(),
            max_hlc: 0,
            stream: String::new(),
            any_exits: conn
                .query_i64("SELECT 1 FROM _outpost_exits LIMIT 1", &[])?
                .is_some(),
            moved: Vec::new(),
            authority: crate::transfer::is_authority(conn)?,
            touched: Vec::new(),
            transfer: false,
            returning: Vec::new(),
            received_hlc: 0,
            applied: AppliedList::load(conn)?,
        })
    }

    fn conn(&self) -> Conn {
        self.call.conn
    }

    /// Local tables in apply order (parents first).
    pub(crate) fn order(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .order
            .iter()
            .map(|&i| self.tables[i].def.name.clone())
            .collect())
    }

    /// A statement prepared once per applier. Callers reset it after reading.
    fn cached(&mut self, sql: String) -> Result<&mut Stmt, Error> {
        if !self.stmts.contains_key(&sql) {
            let s = self.call.conn.prepare(&sql)?;
            self.stmts.insert(sql.clone(), s);
        }
        self.stmts
            .get_mut(&sql)
            .ok_or_else(|| Error::Internal("statement cache".into()))
    }

    /// Runs a cached query with `params`: whether it returned a row.
    fn exists(&mut self, sql: String, params: &[Value]) -> Result<bool, Error> {
        let s = self.cached(sql)?;
        s.bind_all(params)?;
        let found = s.step()?;
        s.reset();
        Ok(found)
    }

    /// Where the batch table's value columns are here, shared (merge_row asks once per row).
    fn column_map(&mut self, ti: usize, schema: &TableSchema) -> Rc<ColumnMap> {
        if let Some(m) = self.maps.get(&schema.name) {
            let same = m.names.len() + schema.primary_key.len() == schema.columns.len()
                && schema
                    .value_columns()
                    .zip(&m.names)
                    .all(|(i, n)| schema.columns[i as usize].name == *n);
            if same {
                return m.clone();
            }
        }
        let names: Vec<String> = schema
            .value_columns()
            .map(|i| schema.columns[i as usize].name.clone())
            .collect();
        let local = names
            .iter()
            .map(|n| self.tables[ti].column_index(n))
            .collect();
        let m = Rc::new(ColumnMap { names, local });
        self.maps.insert(schema.name.clone(), m.clone());
        m
    }

    fn quarantine(
        &mut self,
        origin: SiteId,
        schema: &TableSchema,
        row: &RowChange,
        reason: &str,
    ) -> Result<Outcome, Error> {
        crate::quarantine::put(self.call.conn, origin, schema, row, reason)?;
        self.stats.quarantined += 1;
        Ok(Outcome::Quarantined)
    }

    /// Merges one row change of `origin`.
    pub(crate) fn merge_row(
        &mut self,
        origin: SiteId,
        schema: &TableSchema,
        row: &RowChange,
    ) -> Result<Outcome, Error> {
        let target = self.target(schema);
        self.merge_packed(
            target.as_ref(),
            origin,
            schema,
            row,
            &crate::keys::pack(&row.key),
        )
    }

    /// Where rows of the batch table `schema` go here; `None` when it is not tracked. The apply
    /// asks once per group of rows: by name per row, it hashed and compared strings for each.
    fn target(&mut self, schema: &TableSchema) -> Option<Target> {
        let ti = self.tables.iter().position(|t| t.def.name == schema.name)?;
        let here = self.tables[ti].def.scope.as_ref().map(|r| r.to_protocol());
        let there = schema.scope_rule();
        let shown = |r: &Option<outpost_protocol::scope::ScopeRule>| {
            r.as_ref().map_or("no scope".to_string(), |r| r.to_string())
        };
        let scope_differs = (here != there).then(|| {
            format!(
                "table \"{}\" has {} in the batch but {} here",
                schema.name,
                shown(&there),
                shown(&here)
            )
        });
        Some(Target {
            ti,
            columns: self.column_map(ti, schema),
            scope_differs,
        })
    }

    /// `merge_row` with the row's table resolved (`target`, from [`Applier::target`] for
    /// `schema`) and its key already packed (`key`), as the apply sorts by it.
    fn merge_packed(
        &mut self,
        target: Option<&Target>,
        origin: SiteId,
        schema: &TableSchema,
        row: &RowChange,
        key: &[u8],
    ) -> Result<Outcome, Error> {
        let Some(Target {
            ti,
            columns,
            scope_differs,
        }) = target
        else {
            return self.quarantine(
                origin,
                schema,
                row,
                &format!("unknown table \"{}\": it is not tracked here", schema.name),
            );
        };
        if let Some(reason) = scope_differs {
            return self.quarantine(origin, schema, row, reason);
        }
        let ti = *ti;
        if self.exited(ti, key)? {
            // The row left this device through this stream: later writes in it are the
            // cloud's to copy on.
            self.stats.unchanged += 1;
            return Ok(Outcome::Applied);
        }
        if self.tables[ti].def.direction == Direction::Up {
            self.stats.unchanged += 1;
            return Ok(Outcome::Applied);
        }
        if row.key.len() != self.tables[ti].def.pk.len() {
            return self.quarantine(
                origin,
                schema,
                row,
                "primary key shape differs from this database's",
            );
        }
        // Every cell names a column of the batch table; those this database lacks are set
        // aside (rare: schema skew), the rest are merged below in place.
        let mut unknown = Vec::new();
        for cell in &row.cells {
            let local = columns.local.get(cell.column as usize).ok_or_else(|| {
                Error::Apply(ApplyError::BadSchema(format!(
                    "a cell of {} names column {} it does not have",
                    schema.name, cell.column
                )))
            })?;
            if local.is_none() {
                unknown.push(cell.clone());
            }
        }
        let known = row
            .cells
            .iter()
            .filter_map(|cell| columns.local[cell.column as usize].map(|c| (c, cell)));
        let n_known = row.cells.len() - unknown.len();
        let mut outcome = Outcome::Applied;
        if !unknown.is_empty() {
            outcome = Outcome::Quarantined;
            let cols: Vec<String> = unknown
                .iter()
                .map(|c| columns.names[c.column as usize].clone())
                .collect();
            let part = RowChange {
                key: row.key.clone(),
                existence: row.existence,
                cells: unknown,
            };
            self.quarantine(
                origin,
                schema,
                &part,
                &format!(
                    "unknown column(s) {} of \"{}\": kept until the column exists",
                    cols.join(", "),
                    schema.name
                ),
            )?;
        }
        let origin_idx = self.sites.index(self.conn(), origin)?;
        let t = self.tables[ti].clone();
        let stored = self.rows.get(t.id, key)?;
        let fresh = stored.is_none();
        let mut st = stored.unwrap_or_default();
        // A row's cells grow one column at a time (`cell_mut`): room for all of them up front.
        st.cells
            .reserve(t.def.columns.len().saturating_sub(st.cells.len()));
        let e_in = row.existence;
        let exist = st.exist.max(e_in);
        let was_alive = st.exist % 2 == 1;
        let alive = exist % 2 == 1;
        let mut writes: Vec<Write> = Vec::with_capacity(n_known);
        let mut changed = e_in > st.exist;
        let mut new_conflicts = 0;
        for (c, cell) in known {
            self.max_hlc = self.max_hlc.max(cell.hlc.as_u64());
            self.received_hlc = self.received_hlc.max(cell.hlc.as_u64());
            if e_in != exist || !alive {
                self.stats.unchanged += 1;
                continue;
            }
            let conn = self.conn();
            let incoming = CellVersion {
                epoch: e_in,
                stamp: Stamp {
                    hlc: cell.hlc,
                    site: origin,
                },
            };
            let remote = Version {
                epoch: e_in,
                hlc: cell.hlc.as_u64(),
                site: origin_idx,
                seq: 0,
            };
            let strategy = t.def.columns[c].strategy;
            let won = match (strategy, &cell.payload) {
                (Strategy::Lww | Strategy::RowLww, CellPayload::Value(v)) => {
                    let current = st.cell(c).map(|v| v.cell_version(&self.sites.ids));
                    lww_wins(current.as_ref(), &incoming).then(|| {
                        *st.cell_mut(c) = Some(remote);
                        Cow::Borrowed(v)
                    })
                }
                (Strategy::Counter, CellPayload::Counter(total)) => {
                    let mut cc = cells::load_counter(conn, t.id, key, c)?;
                    if cc.merge(Contribution {
                        site: origin,
                        epoch: e_in,
                        hlc: cell.hlc,
                        total: *total,
                    }) {
                        cells::save_counter(conn, t.id, key, c, &cc)?;
                        if st.cell(c).is_none() {
                            *st.cell_mut(c) = Some(remote);
                        }
                        Some(Cow::Owned(Value::Integer(cc.value(exist))))
                    } else {
                        None
                    }
                }
                (Strategy::Review, CellPayload::Review { value, context }) => {
                    let mut rc = cells::load_review(conn, t.id, key, c)?;
                    let w = ReviewWrite {
                        version: incoming,
                        value: value.clone(),
                        context: context.clone(),
                    };
                    if rc.merge(w) {
                        cells::save_review(conn, &t, key, c, &rc)?;
                        if rc.siblings().len() > 1 {
                            new_conflicts += 1;
                        }
                        // The row state keeps this database's own write while it is still a
                        // sibling: export finds what to send through it.
                        let me = self.sites.me();
                        let own_alive = st.cell(c).is_some_and(|v| {
                            v.site == 0
                                && rc.siblings().iter().any(|s| {
                                    s.version.stamp.site == me
                                        && s.version.stamp.hlc.as_u64() == v.hlc
                                })
                        });
                        if !own_alive {
                            *st.cell_mut(c) = Some(remote);
                        }
                        rc.shown().cloned().map(Cow::Owned)
                    } else {
                        None
                    }
                }
                _ => {
                    let reason = format!(
                        "column {} of \"{}\" merges as {} here but the change is of another kind",
                        t.def.columns[c].name, t.def.name, strategy
                    );
                    return self.quarantine(origin, schema, row, &reason);
                }
            };
            match won {
                Some(v) => {
                    writes.push((c, v));
                    changed = true;
                    self.stats.applied += 1;
                }
                None => self.stats.unchanged += 1,
            }
        }
        if e_in > st.exist {
            self.stats.applied += 1;
        } else if n_known == 0 {
            self.stats.unchanged += 1;
        }
        if !changed {
            return Ok(outcome);
        }
        let mut whole_again = false;
        let returning = self.returning.iter().any(|(i, k)| *i == ti && k == key);
        if alive && was_alive && (self.held_aside[ti] || returning) {
            // An evicted row (alive here, its values in its tombstone, no app row:
            // apply/unique.rs) is written whole, the incoming values over its own; written
            // column by column it would come back with its other columns empty.
            if let Some(vals) = self.tombstone(t.id, key)? {
                if self.app_values(ti, &row.key)?.is_none() {
                    // A tombstone written before a column was added is shorter than the row.
                    let whole: Vec<Write> = (0..t.def.columns.len())
                        .map(|c| match writes.iter().find(|(w, _)| *w == c) {
                            Some((_, w)) => (c, w.clone()),
                            None => (c, Cow::Owned(vals.get(c).cloned().unwrap_or(Value::Null))),
                        })
                        .collect();
                    writes = whole;
                    whole_again = true;
                }
            }
        }
        if alive {
            if !self.parents_ok(ti, &row.key, &writes)? {
                let mut merged = st.clone();
                merged.exist = exist;
                if self.held_aside_child(ti, &row.key, key, &merged, &writes)? {
                    return Ok(Outcome::Quarantined);
                }
                return self.quarantine(origin, schema, row, PARENT_MISSING);
            }
            let written = if fresh {
                self.insert_fresh(ti, &row.key, &writes)
            } else {
                self.upsert(ti, &row.key, &writes)
            };
            match written {
                Ok(()) => {}
                Err(Error::Sqlite { code, message, .. }) if code == UNIQUE_FAILED => {
                    let mut merged = st.clone();
                    merged.exist = exist;
                    let out =
                        self.unique_collision(ti, &row.key, key, &merged, &writes, &message)?;
                    if out == Outcome::Quarantined {
                        return Ok(out);
                    }
                }
                Err(Error::Sqlite { code, message, .. })
                    if code & 0xff == crate::error::SQLITE_CONSTRAINT =>
                {
                    return self.quarantine(origin, schema, row, &message);
                }
                Err(e) => return Err(e),
            }
            if (!was_alive && st.exist > 0) || whole_again {
                let s = self
                    .cached("DELETE FROM _outpost_tombstones WHERE tbl = ?1 AND key = ?2".into())?;
                s.bind_i64(1, t.id)?;
                s.bind_blob(2, key)?;
                s.run()?;
            }
        } else if was_alive {
            if self.has_children(ti, &row.key)? {
                // The delete met live children: the row stays, as a fresh local write.
                st.exist = exist;
                self.resurrect(
                    ti,
                    key,
                    st,
                    "delete of a row that still has child rows: row kept and re-sent",
                )?;
                return Ok(Outcome::Applied);
            }
            self.delete(ti, key, &row.key)?;
        }
        if exist > st.exist {
            cells::prune_review(self.conn(), &t, key, exist)?;
        }
        st.exist = exist;
        self.rows.put(t.id, key, &st)?;
        self.stats.conflicts += new_conflicts;
        // The scope cell this change wrote, when it wrote one (the authority then knows the
        // row's scope without reading it back).
        let mut scope_written = None;
        if alive {
            if let Some(ScopeRule::Column(c)) = &t.def.scope {
                let c = t.column_index(c);
                if let Some((_, v)) = writes.iter().find(|(w, _)| Some(*w) == c) {
                    self.moved.push((ti, key.to_vec()));
                    scope_written = Some(match v.as_ref() {
                        Value::Text(s) => s.clone(),
                        _ => String::new(),
                    });
                }
            }
        }
        if self.authority && t.def.scope.is_some() {
            self.touched.push((ti, key.to_vec(), scope_written));
        }
        Ok(outcome)
    }

    pub(crate) fn where_key(t: &Tracked, first: usize) -> String {
        let w: Vec<String> = t
            .def
            .pk
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", quote(c), i + first))
            .collect();
        w.join(" AND ")
    }

    /// Writes the row: inserts it, or sets the written columns of the row with its key.
    fn upsert(&mut self, ti: usize, key: &[Value], writes: &[Write]) -> Result<(), Error> {
        match self.write(ti, key, writes, false) {
            // SQLite checks NOT NULL on the INSERT's row before it finds the conflict: a
            // NOT NULL column without a default that this change does not write (the cloud's
            // tables carry no defaults) fails an upsert of a row the table has. Update it.
            Err(Error::Sqlite {
                code: NOT_NULL_FAILED,
                ..
            }) if !writes.is_empty() && self.app_values(ti, key)?.is_some() => {
                self.update_in_place(ti, key, writes)
            }
            r => r,
        }
    }

    /// An UPDATE of the written columns of a row the app table holds.
    fn update_in_place(&mut self, ti: usize, key: &[Value], writes: &[Write]) -> Result<(), Error> {
        let t = self.tables[ti].clone();
        let set: Vec<String> = writes
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("{} = ?{}", quote(&t.def.columns[*c].name), i + 1))
            .collect();
        let s = self.cached(format!(
            "UPDATE {} SET {} WHERE {}",
            quote(&t.def.name),
            set.join(", "),
            Self::where_key(&t, writes.len() + 1)
        ))?;
        s.run_borrowed(writes.iter().map(|(_, v)| v.as_ref()).chain(key.iter()))?;
        self.applied.note(&t.def.name, key)
    }

    /// Writes a row this database holds no state for, which the app table then does not have
    /// either: a plain INSERT. With the triggers paused (trigger_pause.rs) it runs without a
    /// statement journal, as the app's own insert would; an upsert whose DO UPDATE sets a
    /// foreign-key column still gets one (SQLite counts it as a multi-row write). A row the
    /// table has anyway (written locally while the table syncs `down` only) fails the key's
    /// UNIQUE check before anything is written and takes the upsert.
    fn insert_fresh(&mut self, ti: usize, key: &[Value], writes: &[Write]) -> Result<(), Error> {
        match self.write(ti, key, writes, true) {
            Err(Error::Sqlite {
                code: UNIQUE_FAILED | PRIMARY_KEY_FAILED | ROWID_FAILED,
                ..
            }) => self.upsert(ti, key, writes),
            r => r,
        }
    }

    /// Runs the row write prepared once per (table, written columns, fresh).
    fn write(
        &mut self,
        ti: usize,
        key: &[Value],
        writes: &[Write],
        fresh: bool,
    ) -> Result<(), Error> {
        let mask = writes.iter().fold(0u64, |m, (c, _)| m | (1 << c));
        let conn = self.conn();
        let t = &self.tables[ti];
        let s = match self.writers.entry((ti, mask, fresh)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let mut cols: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
                cols.extend(writes.iter().map(|(c, _)| quote(&t.def.columns[*c].name)));
                let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let insert = format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    quote(&t.def.name),
                    cols.join(", "),
                    params.join(", ")
                );
                let sql = if fresh {
                    insert
                } else {
                    let set: Vec<String> = writes
                        .iter()
                        .map(|(c, _)| format!("{0} = excluded.{0}", quote(&t.def.columns[*c].name)))
                        .collect();
                    let pk: Vec<String> = t.def.pk.iter().map(|c| quote(c)).collect();
                    let action = if set.is_empty() {
                        "NOTHING".to_string()
                    } else {
                        format!("UPDATE SET {}", set.join(", "))
                    };
                    format!("{insert} ON CONFLICT({}) DO {action}", pk.join(", "))
                };
                slot.insert(conn.prepare(&sql)?)
            }
        };
        s.run_borrowed(key.iter().chain(writes.iter().map(|(_, v)| v.as_ref())))?;
        self.applied.note(&self.tables[ti].def.name, key)
    }

    /// The row's values in its app table (local column order), `None` when it has no app row.
    fn app_values(&mut self, ti: usize, key: &[Value]) -> Result<Option<Vec<Value>>, Error> {
        let t = self.tables[ti].clone();
        let cols: Vec<String> = t.def.columns.iter().map(|c| quote(&c.name)).collect();
        let sel = if cols.is_empty() {
            "1".to_string()
        } else {
            cols.join(", ")
        };
        let s = self.cached(format!(
            "SELECT {sel} FROM {} WHERE {}",
            quote(&t.def.name),
            Self::where_key(&t, 1)
        ))?;
        s.bind_all(key)?;
        let found = s.step();
        let values = match found {
            Ok(true) => Some((0..t.def.columns.len()).map(|i| s.value(i)).collect()),
            _ => None,
        };
        s.reset();
        found?;
        Ok(values)
    }

    fn delete(&mut self, ti: usize, key: &[u8], key_vals: &[Value]) -> Result<(), Error> {
        let t = self.tables[ti].clone();
        if let Some(vals) = self.app_values(ti, key_vals)? {
            keep_values(self.conn(), t.id, key, &vals)?;
        }
        let mut s = self.conn().prepare(&format!(
            "DELETE FROM {} WHERE {}",
            quote(&t.def.name),
            Self::where_key(&t, 1)
        ))?;
        s.bind_all(key_vals)?;
        s.run()?;
        self.applied.note(&t.def.name, key_vals)
    }
}

/// Keeps a row's values in its tombstone (`tbl`, packed `key`) before its app row goes: a
/// deleted row's, or one that leaves this device with changes still to export.
pub(crate) fn keep_values(conn: Conn, tbl: i64, key: &[u8], vals: &[Value]) -> Result<(), Error> {
    let mut s = conn.prepare(
        "INSERT OR REPLACE INTO _outpost_tombstones(tbl, key, vals) VALUES (?1, ?2, ?3)",
    )?;
    s.bind_i64(1, tbl)?;
    s.bind_blob(2, key)?;
    s.bind_blob(3, &crate::keys::pack(vals))?;
    s.run()
}

/// `outpost_apply(batch)`.
pub(crate) fn sql_apply(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let Arg::Blob(bytes) = args[0] else {
        return Err(ApplyError::NotABlob.into());
    };
    schema::ensure(call.conn)?;
    let received = crate::scope_keys::decode(call.conn, bytes)?;
    let directory = signatures::check(call, [&received.batch.header])?;
    apply_all(call, Batches::One(&received), directory.as_ref())
}

/// `outpost_apply_many(batch, ...)`: the batches in argument order, in one transaction, all or
/// nothing for the whole call (any batch refused leaves the database unchanged). A new device's
/// first sync receives many chunks; one commit per chunk rewrites most pages of every random-key
/// index each time (see docs/performance.md, W4), one commit for several chunks writes them once.
/// Batches are decoded one at a time, inside the transaction; their headers are checked first
/// (`signatures.rs`).
pub(crate) fn sql_apply_many(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let mut blobs = Vec::with_capacity(args.len());
    for a in args {
        let Arg::Blob(bytes) = *a else {
            return Err(ApplyError::NotABlob.into());
        };
        blobs.push(bytes);
    }
    let mut headers = Vec::with_capacity(args.len());
    for bytes in &blobs {
        headers.push(codec::decode_header(bytes, &Limits::default()).map_err(ApplyError::Decode)?);
    }
    let directory = signatures::check(call, &headers)?;
    drop(headers);
    let pulled: Vec<Pulled> = blobs.into_iter().map(Pulled::Whole).collect();
    apply_all(call, Batches::Pulled(&pulled), directory.as_ref())
}

/// A batch as the sync session hands it to [`apply_pulled`].
pub(crate) enum Pulled<'a> {
    /// A whole encoded batch.
    Whole(&'a [u8]),
    /// An `up` batch a relay served as its signed clear header alone (`up` tables are never
    /// served to devices): it covers its range and applies nothing.
    Withheld(&'a BatchHeader),
}

/// `outpost_apply_many`'s apply for batches whose signatures were checked already: the sync
/// session verified each pulled batch with the directory it loaded once (`sync/store.rs`), and
/// hands that directory for the direction checks (`apply/direction.rs`).
pub(crate) fn apply_pulled(
    call: &Call,
    batches: &[Pulled],
    directory: &Directory,
) -> Result<Value, Error> {
    apply_all(call, Batches::Pulled(batches), Some(directory))
}

/// What `apply_all` applies: one decoded batch, or pulled ones decoded one at a time.
enum Batches<'a> {
    One(&'a Received),
    Pulled(&'a [Pulled<'a>]),
}

/// One batch of [`Batches`], decoded.
enum Item<'b> {
    Whole(&'b Received),
    Withheld(&'b BatchHeader),
}

impl Batches<'_> {
    /// Calls `f` with each batch, decoded (a sealed one opened with the keys `conn` holds).
    fn each(&self, conn: Conn, mut f: impl FnMut(Item) -> Result<(), Error>) -> Result<(), Error> {
        match self {
            Batches::One(b) => f(Item::Whole(b)),
            Batches::Pulled(pulled) => pulled.iter().try_for_each(|p| match p {
                Pulled::Whole(bytes) => {
                    let received = crate::scope_keys::decode(conn, bytes)?;
                    f(Item::Whole(&received))
                }
                Pulled::Withheld(h) => f(Item::Withheld(h)),
            }),
        }
    }
}

/// Applies `batches` in one savepoint and reports the summed counts as JSON. `directory` (the
/// key directory of an enrolled database) judges their directions (`apply/direction.rs`).
fn apply_all(call: &Call, batches: Batches, directory: Option<&Directory>) -> Result<Value, Error> {
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_apply"));
    }
    schema::ensure(call.conn)?;
    let me = crate::sites::site_id(call.conn)?;
    let pause = trigger_pause::TriggerPause::begin(call.conn)?;
    // With the triggers paused nothing but this call writes row state until it returns: it can
    // know which rows have none without looking (`NewRows`), starting from what the previous
    // call knew when the database is as that call left it (`carry.rs`).
    let kept = if pause.paused() {
        carry::take(call.conn, &call.session.apply)?
    } else {
        None
    };
    let run =
        |strict: bool, mut new_rows: Option<NewRows>| -> Result<(Stats, Option<NewRows>), Error> {
            let mut total = Stats::default();
            batches.each(call.conn, |item| {
                let received = match item {
                    Item::Whole(received) => received,
                    Item::Withheld(h) => {
                        if h.origin == me && !crate::regain::accepts(call.conn, &h.stream)? {
                            return Err(ApplyError::OwnOrigin.into());
                        }
                        return cover_withheld(call.conn, h, directory);
                    }
                };
                // Its own past batches come back only to regain a dropped scope (`regain.rs`).
                if received.batch.header.origin == me
                    && !crate::regain::accepts(call.conn, &received.batch.header.stream)?
                {
                    return Err(ApplyError::OwnOrigin.into());
                }
                let new_rows = pause.paused().then_some(&mut new_rows);
                let s = apply_batch(call, received, strict, new_rows, directory)?;
                total.applied += s.applied;
                total.unchanged += s.unchanged;
                total.conflicts += s.conflicts;
                total.quarantined += s.quarantined;
                total.exits += s.exits;
                Ok(())
            })?;
            Ok((total, new_rows))
        };
    let (stats, new_rows) = schema::with_bulk_cache(call.conn, || {
        call.conn.exec("SAVEPOINT outpost_apply")?;
        let r = run(false, kept);
        let r = schema::finish_savepoint(call.conn, "outpost_apply", r);
        if matches!(&r, Err(Error::Sqlite { code, .. }) if *code == FOREIGN_KEY_FAILED) {
            // A row referenced a parent this database does not have: redo, checking every
            // parent, so such rows go to the quarantine instead of failing the batch. What the
            // first run noted was rolled back with it: look again.
            call.conn.exec("SAVEPOINT outpost_apply")?;
            let again = run(true, None);
            return schema::finish_savepoint(call.conn, "outpost_apply", again);
        }
        r
    })?;
    // Kept only while a first sync is under way (some table had no state): a device in steady
    // state neither holds the filter nor pays for the stamp.
    if let Some(rows) = new_rows.filter(NewRows::saves_lookups) {
        carry::keep(call.conn, &call.session.apply, rows)?;
    }
    let json = serde_json::json!({
        "applied": stats.applied, "unchanged": stats.unchanged,
        "conflicts": stats.conflicts, "quarantined": stats.quarantined, "exits": stats.exits,
    });
    Ok(Value::Text(json.to_string()))
}

fn covered(conn: Conn, stream: &StreamId) -> Result<u64, Error> {
    Ok(conn
        .query_i64(
            "SELECT covered FROM _outpost_vector WHERE site = ?1 AND stream = ?2",
            &[
                Value::Blob(stream.origin.0.to_vec()),
                Value::Text(stream.scope.clone()),
            ],
        )?
        .unwrap_or(0) as u64)
}

/// The reason of a change whose row references a parent this database lacks, or has held aside.
const PARENT_MISSING: &str = "parent row missing: a referenced row does not exist here (yet)";

/// SQLITE_CONSTRAINT_UNIQUE.
const UNIQUE_FAILED: i32 = 2067;

/// SQLITE_CONSTRAINT_PRIMARYKEY.
const PRIMARY_KEY_FAILED: i32 = 1555;

/// SQLITE_CONSTRAINT_ROWID.
const ROWID_FAILED: i32 = 2579;

/// SQLITE_CONSTRAINT_NOTNULL.
const NOT_NULL_FAILED: i32 = 1299;

/// SQLITE_CONSTRAINT_FOREIGNKEY.
const FOREIGN_KEY_FAILED: i32 = 787;

/// Records that this database holds every change of `stream` up to `hi` (the caller checked
/// that the range follows what it held).
fn advance_vector(conn: Conn, stream: &StreamId, hi: u64) -> Result<(), Error> {
    let mut s = conn.prepare(
        "INSERT INTO _outpost_vector(site, stream, covered) VALUES (?1, ?2, ?3) ON CONFLICT(site, stream) DO UPDATE SET covered = max(covered, excluded.covered)",
    )?;
    s.bind_blob(1, &stream.origin.0)?;
    s.bind_text(2, &stream.scope)?;
    s.bind_i64(3, hi as i64)?;
    s.run()
}

/// Checks that `range` of `stream` follows what this database covers (no gap); `false` when it
/// covers the whole range already.
///
/// With a key directory, the ranges it voids (docs/design.md section 10, "One decision
/// everywhere": ranges the cloud refused) count as covered and empty: the vector is first
/// extended over those that touch it, so the batches after one follow, and one inside it is
/// covered already (never applied).
fn follows(
    conn: Conn,
    stream: &StreamId,
    range: SeqRange,
    directory: Option<&Directory>,
) -> Result<bool, Error> {
    let mut have = covered(conn, stream)?;
    if let Some(over) = directory
        .map(|d| d.covered_over_voids(stream, have))
        .filter(|&over| over > have)
    {
        advance_vector(conn, stream, over)?;
        have = over;
    }
    let mut vector = outpost_protocol::VersionVector::new();
    vector.set(stream.clone(), have);
    vector
        .advance(stream.clone(), range)
        .map_err(ApplyError::Gap)?;
    Ok(range.hi > have)
}

/// A withheld `up` batch (`Pulled::Withheld`): its range is covered, nothing else changes. The
/// decoder returns the withheld form only for `up` batches; anything else is refused here too.
fn cover_withheld(conn: Conn, h: &BatchHeader, directory: Option<&Directory>) -> Result<(), Error> {
    if !h.withheld || h.flags.direction != Flag::Up {
        return Err(Error::Internal(format!(
            "a batch of origin {} seqs {}..={} was handed over as withheld but is not an `up` \
             batch's clear header",
            h.origin, h.range.lo, h.range.hi
        )));
    }
    let stream = h.stream_id();
    if follows(conn, &stream, h.range, directory)? {
        advance_vector(conn, &stream, h.range.hi)?;
    }
    Ok(())
}

/// Applies one batch inside the caller's savepoint. `new_rows`, when given, is what the call
/// knows of rows without state, carried from batch to batch. A batch the direction checks
/// refuse (`apply/direction.rs`) is recorded whole instead (`batch_quarantine.rs`) and its range
/// covered; its rows count as quarantined.
fn apply_batch(
    call: &Call,
    received: &Received,
    strict: bool,
    mut new_rows: Option<&mut Option<NewRows>>,
    directory: Option<&Directory>,
) -> Result<Stats, Error> {
    let conn = call.conn;
    let batch = &received.batch;
    let h = &batch.header;
    let folded = crate::fold::fold(call)?;
    if folded.columns_added {
        retry_all(call)?;
    }
    if folded.rows_written || folded.columns_added {
        // Fold and the quarantine retry write state through stores of their own.
        if let Some(n) = new_rows.as_deref_mut() {
            *n = None;
        }
    }
    let stream = h.stream_id();
    let fresh = follows(conn, &stream, h.range, directory)?;
    let mut rows_in_batch = 0;
    for g in &batch.tables {
        if h.tables.get(g.table as usize).is_none() {
            return Err(ApplyError::BadSchema(format!(
                "body names table #{} but the header lists {}",
                g.table,
                h.tables.len()
            ))
            .into());
        }
        rows_in_batch += g.rows.len() as u64;
    }
    if !fresh {
        return Ok(Stats {
            unchanged: rows_in_batch,
            ..Stats::default()
        });
    }
    let refusal = directory.and_then(|d| {
        direction::refusal(batch, d).or_else(|| match grant::judge(h, d) {
            grant::Verdict::Outside(why) => Some(why),
            // Held before the apply (`sync/store.rs`), refused by the manual API's header check
            // (`signatures.rs`): never reaches here.
            grant::Verdict::Granted | grant::Verdict::Unknown => None,
        })
    });
    if let Some(reason) = refusal {
        log::warn!(
            "outpost_apply: batch of origin {} seqs {}..={} refused whole: {reason}",
            h.origin,
            h.range.lo,
            h.range.hi
        );
        crate::batch_quarantine::put(conn, h.origin, h.range, &reason)?;
        advance_vector(conn, &stream, h.range.hi)?;
        return Ok(Stats {
            quarantined: rows_in_batch,
            ..Stats::default()
        });
    }
    let _quiet = call.session.suppress();
    conn.exec("PRAGMA defer_foreign_keys = ON")?;
    let mut ap = Applier::new(call)?;
    ap.strict = strict;
    // By name: exit markers and transfers compare it with rows' scope cells and own streams.
    ap.stream = received.scope.clone();
    ap.transfer = h.flags.transfer;
    if let Some(n) = new_rows.as_deref_mut() {
        ap.rows.new_rows = Some(match n.take() {
            Some(known) => known,
            None => {
                let ids: Vec<i64> = ap.tables.iter().map(|t| t.id).collect();
                NewRows::detect(conn, &ids)?
            }
        });
    }
    let order = ap.order()?;
    let rank = |name: &str| order.iter().position(|n| n == name).unwrap_or(usize::MAX);
    let mut groups: Vec<_> = batch.tables.iter().collect();
    groups.sort_by_key(|g| rank(&h.tables[g.table as usize].name));
    // Rows of one table are independent: applying them in key order turns random B-tree inserts
    // (the app's key index and `_outpost_rows`) into a sweep. Keys are stored packed, and a
    // packed UUID orders like its text. All of a group's packed keys share one buffer (`keys`,
    // each row's as a range of it): one allocation per group, not one per row.
    fn in_key_order<'g>(
        g: &'g TableChanges,
        alive: bool,
        keys: &mut Vec<u8>,
    ) -> Vec<(usize, usize, &'g RowChange)> {
        keys.clear();
        let mut rows = Vec::with_capacity(g.rows.len());
        for r in g.rows.iter().filter(|r| (r.existence % 2 == 1) == alive) {
            let start = keys.len();
            crate::keys::pack_into(r.key.iter().map(Arg::from), r.key.len(), keys);
            rows.push((start, keys.len(), r));
        }
        rows.sort_by(|a, b| keys[a.0..a.1].cmp(&keys[b.0..b.1]));
        rows
    }
    let mut keys = Vec::new();
    for g in &groups {
        let schema = &h.tables[g.table as usize];
        let target = ap.target(schema);
        // A transfer's group is credited to the site that wrote its cells (`transfer.rs`).
        let origin = g.credit.unwrap_or(h.origin);
        for (start, end, row) in in_key_order(g, true, &mut keys) {
            ap.merge_packed(target.as_ref(), origin, schema, row, &keys[start..end])?;
        }
    }
    for g in groups.iter().rev() {
        let schema = &h.tables[g.table as usize];
        let target = ap.target(schema);
        let origin = g.credit.unwrap_or(h.origin);
        for (start, end, row) in in_key_order(g, false, &mut keys) {
            ap.merge_packed(target.as_ref(), origin, schema, row, &keys[start..end])?;
        }
    }
    // On the authority, rows left in another scope than this stream's move there
    // (`apply/transfers.rs`); then rows whose scope cell moved outside the grant leave
    // (`apply/exits.rs`).
    ap.queue_transfers()?;
    ap.settle_returning()?;
    ap.stats.exits += ap.exit_moved()?;
    // Rows this batch deleted or changed may have held values rows held aside now get
    // (`settle`, which the retry starts with).
    if conn
        .query_i64("SELECT 1 FROM outpost_quarantine LIMIT 1", &[])?
        .is_some()
    {
        let before = ap.stats.quarantined;
        retry::retry_with(call, &mut ap)?;
        ap.stats.quarantined = before;
    } else {
        ap.settle()?;
    }
    let max_hlc = ap.max_hlc.max(h.base_hlc.as_u64());
    call.session.clock.observe(conn, max_hlc)?;
    crate::restamp::note_received(conn, ap.received_hlc)?;
    let stored = schema::meta_get(conn, "hlc")?.unwrap_or(0) as u64;
    schema::meta_set(
        conn,
        "hlc",
        stored.max(call.session.clock.last(conn)?) as i64,
    )?;
    advance_vector(conn, &stream, h.range.hi)?;
    if let Some(n) = new_rows {
        *n = ap.rows.new_rows.take();
    }
    Ok(ap.stats)
}

/// `outpost_vector()`: stream (`SITE` for an origin's unscoped stream, `SITE/SCOPE` for a
/// scoped one, the scope's digest in a sealed tenant) → contiguous coverage, this database's
/// own streams included.
pub(crate) fn sql_vector(call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    schema::ensure(call.conn)?;
    let mut out = serde_json::Map::new();
    let me = crate::sites::site_id(call.conn)?;
    let tops = crate::streams::tops(call.conn)?;
    if tops.is_empty() {
        // A database that wrote nothing still states its unscoped stream, as before streams.
        out.insert(StreamId::unscoped(me).to_string(), 0.into());
    }
    // Own streams by wire id, as peers and `_outpost_vector` name them (`wire_scope.rs`).
    let wire = crate::wire_scope::WireScopes::load(call.conn)?;
    for (scope, top) in tops {
        out.insert(StreamId::new(me, wire.of(&scope)).to_string(), top.into());
    }
    let mut s = call
        .conn
        .prepare("SELECT site, stream, covered FROM _outpost_vector ORDER BY site, stream")?;
    while s.step()? {
        let id = SiteId::from_slice(&s.blob(0))
            .ok_or_else(|| Error::Corrupt("vector site id".into()))?;
        // An own stream's entry there is a regain's progress (`regain.rs`), not its top.
        if id == me {
            continue;
        }
        out.insert(StreamId::new(id, s.text(1)).to_string(), s.i64(2).into());
    }
    Ok(Value::Text(serde_json::Value::Object(out).to_string()))
}
