//! What an apply reads and writes, whatever holds it: the [`Store`] trait, and the tables it
//! describes ([`Table`]).
//!
//! A store holds three kinds of state: the app's rows (real tables: SQLite's, PostgreSQL's),
//! the merge state beside them (a row's causal length and per-cell versions, `counter` and
//! `review` cells), and the records a person reads (quarantine entries, conflicts). The core
//! asks for each through this trait and decides nothing from how it is stored.
//!
//! Keys are passed as values in the table's key order; a store packs them as it likes. Columns
//! are passed as indexes into [`Table::columns`] (value columns only), which stay stable while a
//! table gains columns (new ones are appended).

use crate::row_state::RowState;
use outpost_protocol::batch::{RowChange, TableSchema};
use outpost_protocol::merge::{CounterCell, ReviewCell};
use outpost_protocol::scope::ScopeRule;
use outpost_protocol::{Hlc, SiteId, Strategy, StreamId, Value};

/// A table the store tracks.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The store's own id for it (passed back in every call about its rows).
    pub id: i64,
    /// Its name, as batches name it.
    pub name: String,
    /// Its primary-key columns, in key order.
    pub key: Vec<String>,
    /// Its value columns (every column not in the key), in the order the store numbers them.
    pub columns: Vec<Column>,
    /// Its scope rule (`None`: unscoped). A batch declaring another is not applied here.
    pub scope: Option<ScopeRule>,
    /// Its foreign keys.
    pub parents: Vec<Parent>,
}

/// A value column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// How it merges.
    pub strategy: Strategy,
}

/// A foreign key of a [`Table`], as declared.
#[derive(Clone, Debug, PartialEq)]
pub struct Parent {
    /// The parent table's name.
    pub table: String,
    /// The referencing columns of this table.
    pub columns: Vec<String>,
    /// The referenced columns of the parent (empty: its primary key).
    pub parent_columns: Vec<String>,
}

impl Table {
    /// The index of value column `name`, matched exactly as the SQLite engine matches it
    /// (`sqlite-ext/src/schema.rs`, `column_index`).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// What became of a row write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// The app row holds the values.
    Done,
    /// The store refused the row (a constraint: NOT NULL, CHECK, UNIQUE, a value that does not
    /// fit its column); the core quarantines the change with this reason.
    Refused(String),
}

/// A UNIQUE index of a tracked table besides its key, on value columns only (an index on an
/// expression, or one that includes a key column, is never violated by a row alone and is left
/// out, as the engine leaves it out: `sqlite-ext/src/apply/unique.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unique {
    /// Its columns, as indexes into [`Table::columns`].
    pub columns: Vec<usize>,
    /// How a reason names it, as SQLite's error message does: `"staff.badge, staff.name"`.
    pub label: String,
}

/// The values a store keeps of a row that is not in its app table: a deleted row's last values
/// (the engine's tombstone), or those of a row *held aside* by a UNIQUE collision (or with a
/// parent held aside), which is alive for sync but kept out of its table until the values it
/// holds are free (and its parents back).
#[derive(Clone, Debug, PartialEq)]
pub struct Tombstone {
    /// Its value columns' values, in [`Table::columns`] order (shorter when columns were added
    /// since: the rest are NULL).
    pub values: Vec<Value>,
    /// Whether the row is held aside (alive, out of its table) rather than deleted.
    pub held: bool,
}

/// A change the core sets aside, with why (DESIGN I5: it never blocks the rest).
#[derive(Clone, Copy, Debug)]
pub struct Quarantined<'a> {
    /// The site whose change it is.
    pub origin: SiteId,
    /// The table as the batch describes it.
    pub table: &'a TableSchema,
    /// The change (all of it, or the cells of columns this store lacks).
    pub row: &'a RowChange,
    /// Why it was not applied.
    pub reason: &'a str,
}

/// A stored quarantine entry, as the quarantine retry reads it back (`retry.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The store's id for it: entries are retried in the order of their ids, which must be the
    /// order they were first stored (a reason rewritten keeps the id).
    pub id: i64,
    /// The site whose change it is.
    pub origin: SiteId,
    /// The table as the entry describes it.
    pub table: TableSchema,
    /// The change.
    pub row: RowChange,
    /// Why it was kept.
    pub reason: String,
}

/// The state one apply reads and writes. Every call of one [`crate::apply_batch`] happens
/// inside one transaction the caller owns: a store never commits on its own.
pub trait Store {
    /// The store's failures (an I/O or SQL error): they abort the batch.
    type Error: std::error::Error + 'static;

    /// This database's own site: its own batches never come back to it through an apply.
    fn site(&self) -> SiteId;

    /// Every tracked table, in the order they were first tracked (the order parents-first
    /// sorting starts from, as the engine's does).
    fn tables(&mut self) -> Result<Vec<Table>, Self::Error>;

    /// The contiguous coverage of `stream`: every seq up to it is held (0: none).
    fn covered(&mut self, stream: &StreamId) -> Result<u64, Self::Error>;

    /// Records coverage of `stream` up to `hi` (never lowers it).
    fn advance(&mut self, stream: &StreamId, hi: u64) -> Result<(), Self::Error>;

    /// The row's merge state, `None` when this store knows nothing of it.
    fn row(&mut self, t: &Table, key: &[Value]) -> Result<Option<RowState>, Self::Error>;

    /// Stores the row's merge state.
    fn put_row(&mut self, t: &Table, key: &[Value], st: &RowState) -> Result<(), Self::Error>;

    /// A `counter` cell's contributions (empty when none).
    fn counter(&mut self, t: &Table, key: &[Value], col: usize)
        -> Result<CounterCell, Self::Error>;

    /// Stores a `counter` cell.
    fn put_counter(
        &mut self,
        t: &Table,
        key: &[Value],
        col: usize,
        cell: &CounterCell,
    ) -> Result<(), Self::Error>;

    /// A `review` cell's siblings (empty when none).
    fn review(&mut self, t: &Table, key: &[Value], col: usize) -> Result<ReviewCell, Self::Error>;

    /// Stores a `review` cell and keeps its conflict record in step: listed iff it has more than
    /// one sibling.
    fn put_review(
        &mut self,
        t: &Table,
        key: &[Value],
        col: usize,
        cell: &ReviewCell,
    ) -> Result<(), Self::Error>;

    /// Writes `writes` (value column, value) into the app row with `key`, creating it when
    /// needed. `fresh`: the store holds no merge state for the row (so its app table most likely
    /// lacks it too: a plain insert is worth trying first).
    fn write_row(
        &mut self,
        t: &Table,
        key: &[Value],
        fresh: bool,
        writes: &[(usize, &Value)],
    ) -> Result<Written, Self::Error>;

    /// Deletes the app row with `key` (if there is one).
    fn delete_row(&mut self, t: &Table, key: &[Value]) -> Result<(), Self::Error>;

    /// Whether `t`'s app table has a row whose `columns` hold `values` (a parent, by the columns
    /// a foreign key references).
    fn row_exists(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Value],
    ) -> Result<bool, Self::Error>;

    /// Stores a quarantine entry (idempotent: the same change twice is one entry, its reason
    /// the later one).
    fn quarantine(&mut self, q: Quarantined<'_>) -> Result<(), Self::Error>;

    /// Whether the store holds any quarantine entry (the retry after an apply runs only then,
    /// as the engine's does). The default: whether [`Store::quarantined`] lists one.
    fn any_quarantined(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.quarantined()?.is_empty())
    }

    /// Every quarantine entry, oldest first ([`Entry::id`]): the retry after each apply
    /// re-applies them (`retry.rs`). The default: none (a store that cannot read its entries
    /// back keeps them until a person acts).
    fn quarantined(&mut self) -> Result<Vec<Entry>, Self::Error> {
        Ok(Vec::new())
    }

    /// Removes the quarantine entry `id`: its change has applied now.
    fn unquarantine(&mut self, id: i64) -> Result<(), Self::Error> {
        let _ = id;
        Ok(())
    }

    /// Takes note of the largest clock an apply received, so the store's later writes order
    /// after it.
    fn observe_clock(&mut self, hlc: Hlc) -> Result<(), Self::Error>;

    /// The rows of `t` the apply merges next (one table's group of a batch): a store that pays
    /// per statement may read their state ([`Store::row`]) in one go. Only a hint: the default
    /// does nothing.
    fn prefetch_rows(&mut self, t: &Table, keys: &[&[Value]]) -> Result<(), Self::Error> {
        let _ = (t, keys);
        Ok(())
    }

    /// Rows of `t` whose `columns` hold `values` that the group merged next may ask about
    /// ([`Store::row_exists`]: the parents its rows reference). Only a hint: the default does
    /// nothing.
    fn prefetch_exists(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Vec<Value>],
    ) -> Result<(), Self::Error> {
        let _ = (t, columns, values);
        Ok(())
    }

    /// `t` as a batch describes it: the table of the quarantine entries the core writes for
    /// rows it holds aside (the engine writes its local table's schema there). The default
    /// builds it from [`Table`] with empty declared types; a store that knows them says so.
    fn schema(&mut self, t: &Table) -> Result<TableSchema, Self::Error> {
        Ok(crate::unique::schema_of(t))
    }

    /// `t`'s UNIQUE indexes besides its key ([`Unique`]). The default: none (and then none of
    /// the calls below is made for `t`).
    fn uniques(&mut self, t: &Table) -> Result<Vec<Unique>, Self::Error> {
        let _ = t;
        Ok(Vec::new())
    }

    /// The keys of the rows of `t`'s app table whose columns of `u` hold `values` (in `u`'s
    /// column order; never NULL).
    fn holders(
        &mut self,
        t: &Table,
        u: &Unique,
        values: &[Value],
    ) -> Result<Vec<Vec<Value>>, Self::Error> {
        let _ = (t, u, values);
        Ok(Vec::new())
    }

    /// The values of the app row with `key` (every value column, in [`Table::columns`] order),
    /// `None` when the app table lacks it.
    fn app_values(&mut self, t: &Table, key: &[Value]) -> Result<Option<Vec<Value>>, Self::Error> {
        let _ = (t, key);
        Ok(None)
    }

    /// The tombstone of the row with `key`, if the store keeps one.
    fn tombstone(&mut self, t: &Table, key: &[Value]) -> Result<Option<Tombstone>, Self::Error> {
        let _ = (t, key);
        Ok(None)
    }

    /// Keeps (or replaces) the tombstone of the row with `key`.
    fn put_tombstone(
        &mut self,
        t: &Table,
        key: &[Value],
        tomb: &Tombstone,
    ) -> Result<(), Self::Error> {
        let _ = (t, key, tomb);
        Ok(())
    }

    /// Forgets the tombstone of the row with `key` (it is back in its table).
    fn drop_tombstone(&mut self, t: &Table, key: &[Value]) -> Result<(), Self::Error> {
        let _ = (t, key);
        Ok(())
    }

    /// The row of `t` with `key` was just held aside, with reason `why`. The engine tells a
    /// person with an `outpost_events` row stamped with a tick of its clock; a store whose own
    /// writes must carry the clocks the engine's would (the cloud's: its tenants compare across
    /// stores) ticks its clock here too. The default does nothing.
    fn held_aside(&mut self, t: &Table, key: &[Value], why: &str) -> Result<(), Self::Error> {
        let _ = (t, key, why);
        Ok(())
    }

    /// The ids of the tables with rows whose tombstone says held aside (a store that keeps any
    /// must list them: the core settles only these tables' rows). The default: none.
    fn held_tables(&mut self) -> Result<Vec<i64>, Self::Error> {
        Ok(Vec::new())
    }

    /// The keys of the rows of `t`'s app table whose `columns` hold `values` (the children of
    /// a row, by the columns of a foreign key: they are held aside with it, `cascade.rs`). The
    /// default: none.
    fn referencing(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Value],
    ) -> Result<Vec<Vec<Value>>, Self::Error> {
        let _ = (t, columns, values);
        Ok(Vec::new())
    }

    /// The rows of `t` whose tombstone says held aside: (key, tombstone values).
    #[allow(clippy::type_complexity)]
    fn held_rows(&mut self, t: &Table) -> Result<Vec<(Vec<Value>, Vec<Value>)>, Self::Error> {
        let _ = t;
        Ok(Vec::new())
    }

    /// Drops the quarantine entries of the row of `t` with `key` whose reason starts with
    /// `prefix` (a row held aside is back in its table, or deleted: the engine's quarantine
    /// retry lets its entries go then).
    fn release_entries(
        &mut self,
        t: &Table,
        key: &[Value],
        prefix: &str,
    ) -> Result<(), Self::Error> {
        let _ = (t, key, prefix);
        Ok(())
    }

    /// Sets the reason of the quarantine entries of the row of `t` with `key` whose reason
    /// starts with `prefix` to `reason`.
    fn reword_entries(
        &mut self,
        t: &Table,
        key: &[Value],
        prefix: &str,
        reason: &str,
    ) -> Result<(), Self::Error> {
        let _ = (t, key, prefix, reason);
        Ok(())
    }

    /// Re-creates the row of `t` with `key` as the store's *own* write (a parent kept for its
    /// children: `restore.rs`): `values` are all its value columns, `st` its merge state with
    /// the causal length merged so far (even: deleted). The store puts the row in its app table
    /// (replacing the one there) at the next causal length, every column written with a fresh
    /// clock of its own site, so the write is exported to every replica as any of its own, and
    /// returns the row's merge state after it. `why` is what a person is told.
    ///
    /// The default: `None`, a store that cannot make writes of its own (the core then sets the
    /// change aside: a delete with children is quarantined, the row kept; a child of a deleted
    /// parent is quarantined as missing it).
    fn restore(
        &mut self,
        t: &Table,
        key: &[Value],
        values: &[Value],
        st: &RowState,
        why: &str,
    ) -> Result<Option<RowState>, Self::Error> {
        let _ = (t, key, values, st, why);
        Ok(None)
    }

    /// The end of a group: a store that holds writes back to send them together sends them now
    /// (the next group's parent checks read them). The default does nothing.
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Whether this store is the tenant's scope authority (the cloud, which holds every
    /// scope): after each apply the core then queues transfers ([`Store::transfer`],
    /// `transfer.rs`). The default: no, and none of the calls below is made.
    fn authority(&self) -> bool {
        false
    }

    /// The id batches' streams carry for scope `name` in this store's tenant (a sealed tenant's
    /// digest of it); compared with a batch's stream. The default: the name.
    fn wire_scope(&self, name: &str) -> String {
        name.to_string()
    }

    /// The scopes (names) the row of `t` with `key` was transferred into before.
    fn transferred(&mut self, t: &Table, key: &[Value]) -> Result<Vec<String>, Self::Error> {
        let _ = (t, key);
        Ok(Vec::new())
    }

    /// Queues a transfer of the row of `t` with `key` (and its `via` children) into the stream
    /// of scope `scope` (a name): a change of the store's own site in that stream, whose batch
    /// carries the row's merge state when it is made ([`crate::transfer::credited`]), and a
    /// note that the row was transferred there ([`Store::transferred`]). Rolled back with the
    /// apply. The default does nothing.
    fn transfer(&mut self, t: &Table, key: &[Value], scope: &str) -> Result<(), Self::Error> {
        let _ = (t, key, scope);
        Ok(())
    }
}
