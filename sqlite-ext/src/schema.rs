//! Bookkeeping tables, the tracked-table registry, and reading the app's schema.
//!
//! | table | one row per | holds |
//! |---|---|---|
//! | `_outpost_meta` | setting | stored clock, last seen `PRAGMA schema_version` |
//! | `_outpost_sites` | known site | site id ↔ small index (0 = this database) |
//! | `_outpost_tables` | tracked table | its [`TableDef`] as JSON |
//! | `_outpost_log` | local write | appended by triggers, folded into `_outpost_rows` |
//! | `_outpost_rows` | tracked row | causal length + packed per-column versions (`state.rs`) |
//! | `_outpost_cells` | counter/review cell | the protocol's `CounterCell` / `ReviewCell` |
//! | `_outpost_tombstones` | deleted row | its last values (a parent can come back) |
//! | `_outpost_evicted` | row held aside | by a UNIQUE collision (`apply/unique.rs`) |
//! | `_outpost_vector` | stream (origin, scope) of another site, or an own one being regained | contiguous coverage |
//! | `_outpost_runs` | run of own local seqs in one stream | stream, first stream seq, grant version (`streams.rs`) |
//! | `_outpost_stream_marks` | scoped own stream and mark | acknowledged and sent stream seqs |
//! | `_outpost_exits` | row that left (scope outside the grant) | the stream it left, scope version |
//! | `_outpost_drains` | scope removed from the grant, draining | last own seq to push (`drain.rs`) |
//! | `_outpost_regains` | dropped scope, own stream to serve back | last own seq relays hold (`regain.rs`) |
//! | `_outpost_keys`, `_outpost_digest_key` | scope key epoch held; the tenant's digest key | a sealed tenant's keys (`scope_keys.rs`) |
//! | `outpost_quarantined_batches` | batch refused whole | origin, range, reason (`batch_quarantine.rs`) |
//!
//! `_outpost_log` declares no NOT NULL: a NOT NULL check in a trigger's INSERT marks the app's
//! statement as able to abort, which costs it a statement journal (see `clock_table.rs`).
//! Databases created before keep their NOT NULL log; it only makes their updates slower.

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::batch::{ColumnSchema, ForeignKey, TableSchema};
use outpost_protocol::scope::ScopeColumn;
use outpost_protocol::{SiteId, Strategy};
use serde::{Deserialize, Serialize};

const BOOKKEEPING: &str = r#"
CREATE TABLE IF NOT EXISTS _outpost_meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_sites(idx INTEGER PRIMARY KEY, site BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS _outpost_tables(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, def TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _outpost_log(seq INTEGER PRIMARY KEY, tbl INTEGER, key BLOB, op INTEGER, hlc INTEGER,
  mask INTEGER, vals BLOB);
CREATE TABLE IF NOT EXISTS _outpost_rows(tbl INTEGER NOT NULL, key BLOB NOT NULL, exist INTEGER NOT NULL,
  exist_seq INTEGER NOT NULL, seq INTEGER NOT NULL, clocks BLOB NOT NULL, PRIMARY KEY(tbl, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _outpost_rows_seq ON _outpost_rows(seq) WHERE seq > 0;
CREATE TABLE IF NOT EXISTS _outpost_cells(tbl INTEGER NOT NULL, key BLOB NOT NULL, col INTEGER NOT NULL,
  state TEXT NOT NULL, PRIMARY KEY(tbl, key, col)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_tombstones(tbl INTEGER NOT NULL, key BLOB NOT NULL, vals BLOB NOT NULL,
  PRIMARY KEY(tbl, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_evicted(tbl INTEGER NOT NULL, key BLOB NOT NULL,
  PRIMARY KEY(tbl, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_vector(site BLOB NOT NULL, stream TEXT NOT NULL, covered INTEGER NOT NULL,
  PRIMARY KEY(site, stream)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_conflict_rows(id INTEGER PRIMARY KEY, tbl_id INTEGER NOT NULL, key BLOB NOT NULL,
  col INTEGER NOT NULL, tbl TEXT NOT NULL, pk TEXT NOT NULL, col_name TEXT NOT NULL, siblings TEXT NOT NULL,
  UNIQUE(tbl_id, key, col));
CREATE VIEW IF NOT EXISTS outpost_conflicts AS
  SELECT id, tbl AS "table", pk, col_name AS "column", siblings FROM _outpost_conflict_rows;
CREATE TABLE IF NOT EXISTS outpost_quarantine(id INTEGER PRIMARY KEY, "table" TEXT NOT NULL, pk TEXT NOT NULL,
  reason TEXT NOT NULL, change TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS _outpost_quarantine_row ON outpost_quarantine("table", pk);
CREATE TABLE IF NOT EXISTS outpost_events(id INTEGER PRIMARY KEY, hlc INTEGER NOT NULL, kind TEXT NOT NULL,
  "table" TEXT NOT NULL, pk TEXT NOT NULL, detail TEXT NOT NULL);
"#;

/// Creates the bookkeeping (and the site id) on first use, and what a database created by an
/// earlier version lacks (`_outpost_evicted`, and with it the quarantine's index by row, which
/// `apply/unique.rs` looks rows up by; `outpost_quarantined_batches`; the runs' grant versions).
pub(crate) fn ensure(conn: Conn) -> Result<(), Error> {
    // The runs' grant version column counts as a piece too (`streams::upgrade`).
    let present = conn.query_i64(
        "SELECT count(*) + (SELECT count(*) FROM pragma_table_info('_outpost_runs') \
         WHERE name = 'version') FROM sqlite_master WHERE name IN \
         ('_outpost_sites', '_outpost_evicted', 'outpost_quarantined_batches', '_outpost_runs', \
         '_outpost_transfers', '_outpost_regains', '_outpost_keys')",
        &[],
    )?;
    if present == Some(8) {
        return Ok(());
    }
    let fresh = conn
        .query_i64(
            "SELECT 1 FROM sqlite_master WHERE name = '_outpost_sites'",
            &[],
        )?
        .is_none();
    let site = new_site_id()?;
    conn.exec("SAVEPOINT outpost_init")?;
    let r = (|| {
        upgrade_vector(conn)?;
        conn.exec(BOOKKEEPING)?;
        conn.exec(crate::batch_quarantine::TABLE)?;
        crate::streams::upgrade(conn)?;
        conn.exec(crate::streams::TABLES)?;
        conn.exec(crate::drain::TABLE)?;
        conn.exec(crate::regain::TABLE)?;
        conn.exec(crate::scope_keys::TABLES)?;
        conn.exec(crate::apply::exits::TABLE)?;
        conn.exec(crate::transfer::TABLES)?;
        if fresh {
            // Nothing sent or received yet: every change it makes can be re-stamped until it
            // leaves (`restamp.rs`; an older database gets its marks at its first re-stamp).
            crate::restamp::start(conn)?;
        }
        // Rows an earlier version held aside: alive, with a tombstone (a row coming back loses
        // its tombstone). Nothing in a new database.
        conn.exec(
            "INSERT OR IGNORE INTO _outpost_evicted(tbl, key) SELECT t.tbl, t.key \
             FROM _outpost_tombstones AS t JOIN _outpost_rows AS r ON r.tbl = t.tbl AND r.key = t.key \
             WHERE r.exist % 2 = 1",
        )?;
        let mut s =
            conn.prepare("INSERT OR IGNORE INTO _outpost_sites(idx, site) VALUES (0, ?1)")?;
        s.bind_blob(1, &site.0)?;
        s.run()
    })();
    finish_savepoint(conn, "outpost_init", r)
}

/// A vector made before streams (keyed by site alone) becomes the unscoped streams' vector:
/// every change it covered was in stream `""`.
fn upgrade_vector(conn: Conn) -> Result<(), Error> {
    let old = conn.query_i64(
        "SELECT 1 FROM sqlite_master WHERE name = '_outpost_vector' \
         AND NOT EXISTS (SELECT 1 FROM pragma_table_info('_outpost_vector') WHERE name = 'stream')",
        &[],
    )?;
    if old.is_none() {
        return Ok(());
    }
    conn.exec(
        "ALTER TABLE _outpost_vector RENAME TO _outpost_vector_by_site;
         CREATE TABLE _outpost_vector(site BLOB NOT NULL, stream TEXT NOT NULL, covered INTEGER NOT NULL,
           PRIMARY KEY(site, stream)) WITHOUT ROWID;
         INSERT INTO _outpost_vector(site, stream, covered) SELECT site, '', covered FROM _outpost_vector_by_site;
         DROP TABLE _outpost_vector_by_site;",
    )
}

/// A fresh random site id.
fn new_site_id() -> Result<SiteId, Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|source| Error::NoRandomness {
        what: "a site id",
        source,
    })?;
    Ok(SiteId(b))
}

/// Releases a savepoint on success, rolls it back (and releases) on error.
pub(crate) fn finish_savepoint<T>(conn: Conn, name: &str, r: Result<T, Error>) -> Result<T, Error> {
    let r = match r {
        // RELEASE of the outermost savepoint commits; it fails on deferred foreign keys.
        Ok(v) => conn.exec(&format!("RELEASE {name}")).map(|_| v),
        Err(e) => Err(e),
    };
    if r.is_err() {
        let _ = conn.exec(&format!("ROLLBACK TO {name}; RELEASE {name}"));
    }
    r
}

/// The page cache (KiB) bulk operations (fold, apply) run with when the connection's is smaller.
/// 40 MiB holds most of the random-key B-trees of a 300k-row first sync (W4: 20k page misses
/// and 1.1k spills against 36k and 4.7k at 32 MiB, about 7% more rows per second) and keeps the
/// applying process under the 64 MiB goal (docs/performance.md).
const BULK_CACHE_KIB: i64 = 40 * 1024;

/// Runs `f` with a page cache of at least [`BULK_CACHE_KIB`]: fold and apply touch keys all over
/// several B-trees, and a larger cache saves most re-reads. The setting is restored afterwards.
pub(crate) fn with_bulk_cache<T>(
    conn: Conn,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let mut cache = BulkCache::raise(conn)?;
    let r = f();
    cache.release()?;
    r
}

/// A page cache of at least [`BULK_CACHE_KIB`], held until [`BulkCache::release`] (or the drop)
/// sets the connection's own setting back: for work made of many calls that would each raise
/// and lower it, since lowering it drops the cached pages (a push's export, one 512 KiB batch
/// per call, read its B-trees again for every batch). Calls inside it find the cache large
/// enough and leave it alone.
pub(crate) struct BulkCache {
    conn: Conn,
    /// The connection's own `cache_size`, when it was raised.
    own: Option<i64>,
}

impl BulkCache {
    /// Raises the cache of `conn` when it is smaller than [`BULK_CACHE_KIB`].
    pub(crate) fn raise(conn: Conn) -> Result<BulkCache, Error> {
        let cache = conn.query_i64("PRAGMA cache_size", &[])?.unwrap_or(-2000);
        let page = conn.query_i64("PRAGMA page_size", &[])?.unwrap_or(4096);
        let kib = if cache < 0 {
            -cache
        } else {
            cache.saturating_mul(page) / 1024
        };
        let own = (kib < BULK_CACHE_KIB).then_some(cache);
        if own.is_some() {
            conn.exec(&format!("PRAGMA cache_size = -{BULK_CACHE_KIB}"))?;
        }
        Ok(BulkCache { conn, own })
    }

    /// Sets the connection's own cache size back (once).
    pub(crate) fn release(&mut self) -> Result<(), Error> {
        match self.own.take() {
            Some(cache) => self.conn.exec(&format!("PRAGMA cache_size = {cache}")),
            None => Ok(()),
        }
    }
}

impl Drop for BulkCache {
    /// A holder that ended early (an error, a cut session) gives the cache back here; a failure
    /// is logged, as there is no caller left to tell.
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::warn!("setting the page cache back after bulk work: {e}");
        }
    }
}

/// Which way a table syncs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Direction {
    Both,
    Up,
    Down,
}

impl From<Direction> for outpost_protocol::batch::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Both => outpost_protocol::batch::Direction::Both,
            Direction::Up => outpost_protocol::batch::Direction::Up,
            Direction::Down => outpost_protocol::batch::Direction::Down,
        }
    }
}

/// A tracked value (non-key) column.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct ColumnDef {
    pub name: String,
    pub strategy: Strategy,
}

/// What `outpost_track` recorded about a table. Value columns are append-only: their index is
/// their number in the row state and (in declaration order) on the wire.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct TableDef {
    pub name: String,
    pub direction: Direction,
    pub row_lww: bool,
    pub pk: Vec<String>,
    pub columns: Vec<ColumnDef>,
    #[serde(default)]
    pub column_options: std::collections::BTreeMap<String, Strategy>,
    /// Which scope its rows belong to (`scope_rule.rs`); `None`: unscoped, as every definition
    /// saved before scopes existed reads. Left out of the JSON when `None`, so an unscoped
    /// table's saved definition is what it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeRule>,
}

/// How a scoped table's rows get their scope (docs/design.md section 10, "Scopes").
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ScopeRule {
    /// The text value of this column (`{"scope": "clinic_id"}`).
    Column(String),
    /// The scope of the parent row this single-column foreign key names
    /// (`{"scope": {"via": "patient_id"}}`).
    Via(String),
}

impl ScopeRule {
    /// The column the rule reads: the scope column, or the `via` key.
    pub(crate) fn column(&self) -> &str {
        match self {
            ScopeRule::Column(c) | ScopeRule::Via(c) => c,
        }
    }
}

impl ScopeRule {
    /// The protocol's form of the rule (the tenant's table settings and batches use it).
    pub(crate) fn to_protocol(&self) -> outpost_protocol::scope::ScopeRule {
        match self {
            ScopeRule::Column(c) => outpost_protocol::scope::ScopeRule::Column(c.clone()),
            ScopeRule::Via(c) => outpost_protocol::scope::ScopeRule::Via(c.clone()),
        }
    }
}

impl std::fmt::Display for ScopeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScopeRule::Column(c) => write!(f, "{{\"scope\": {c:?}}}"),
            ScopeRule::Via(c) => write!(f, "{{\"scope\": {{\"via\": {c:?}}}}}"),
        }
    }
}

/// A tracked table: its id and definition.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub id: i64,
    pub def: TableDef,
}

impl Tracked {
    pub(crate) fn column_index(&self, name: &str) -> Option<usize> {
        self.def.columns.iter().position(|c| c.name == name)
    }
}

/// All tracked tables.
pub(crate) fn load_tracked(conn: Conn) -> Result<Vec<Tracked>, Error> {
    let mut s = conn.prepare("SELECT id, def FROM _outpost_tables ORDER BY id")?;
    let mut out = Vec::new();
    while s.step()? {
        let def: TableDef =
            serde_json::from_str(&s.text(1)).map_err(|source| Error::CorruptJson {
                what: "table definition",
                source,
            })?;
        out.push(Tracked { id: s.i64(0), def });
    }
    Ok(out)
}

pub(crate) fn save_def(conn: Conn, def: &TableDef) -> Result<i64, Error> {
    let json = serde_json::to_string(def).map_err(|source| Error::InternalJson {
        what: "a table definition as JSON",
        source,
    })?;
    let mut s = conn.prepare(
        "INSERT INTO _outpost_tables(name, def) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET def = excluded.def RETURNING id",
    )?;
    s.bind_text(1, &def.name)?;
    s.bind_text(2, &json)?;
    if s.step()? {
        Ok(s.i64(0))
    } else {
        Err(Error::Internal(
            "table registry insert returned nothing".into(),
        ))
    }
}

/// One column as `PRAGMA table_info` reports it.
#[derive(Clone, Debug)]
pub(crate) struct ColumnInfo {
    pub name: String,
    pub decl_type: String,
    pub not_null: bool,
    /// Position in the primary key, 1-based; 0 when not part of it.
    pub pk: i64,
}

pub(crate) fn table_info(conn: Conn, table: &str) -> Result<Vec<ColumnInfo>, Error> {
    let mut s = conn.prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")?;
    s.bind_text(1, table)?;
    let mut out = Vec::new();
    while s.step()? {
        out.push(ColumnInfo {
            name: s.text(0),
            decl_type: s.text(1),
            not_null: s.i64(2) != 0,
            pk: s.i64(3),
        });
    }
    Ok(out)
}

/// A UNIQUE constraint other than the primary key.
pub(crate) struct UniqueIndex {
    /// Its columns, each with the collation the index compares it by.
    pub cols: Vec<(String, String)>,
    /// The WHERE of a partial index (`CREATE UNIQUE INDEX ... WHERE active = 1`): only rows it
    /// selects can collide.
    pub filter: Option<String>,
}

/// The table's UNIQUE constraints and unique indexes besides its primary key. Indexes on
/// expressions are left out: `triggers.rs` could not name what they compare.
pub(crate) fn unique_indexes(conn: Conn, table: &str) -> Result<Vec<UniqueIndex>, Error> {
    let mut s = conn.prepare(
        "SELECT il.name, ix.cid, ix.name, ix.coll, \
           (SELECT sql FROM sqlite_master WHERE type = 'index' AND name = il.name AND il.partial) \
         FROM pragma_index_list(?1) AS il JOIN pragma_index_xinfo(il.name) AS ix \
         WHERE il.\"unique\" AND il.origin != 'pk' AND ix.key ORDER BY il.seq, ix.seqno",
    )?;
    s.bind_text(1, table)?;
    let mut out: Vec<(String, Option<UniqueIndex>)> = Vec::new();
    while s.step()? {
        let index = s.text(0);
        if out.last().is_none_or(|(name, _)| *name != index) {
            let partial = (!s.is_null(4)).then(|| s.text(4));
            // A partial index whose WHERE cannot be read is left out, as one on an expression.
            let entry = match partial {
                None => Some(UniqueIndex {
                    cols: Vec::new(),
                    filter: None,
                }),
                Some(sql) => index_filter(&sql).map(|f| UniqueIndex {
                    cols: Vec::new(),
                    filter: Some(f),
                }),
            };
            out.push((index, entry));
        }
        let Some((_, index)) = out.last_mut() else {
            continue;
        };
        if s.i64(1) < 0 {
            *index = None; // an expression (or rowid) column
        } else if let Some(index) = index {
            index.cols.push((s.text(2), s.text(3)));
        }
    }
    Ok(out.into_iter().filter_map(|(_, index)| index).collect())
}

/// The WHERE expression of a `CREATE [UNIQUE] INDEX name ON table(columns) WHERE expr`
/// statement: what follows the column list's closing parenthesis. `None` when the text does
/// not have that shape.
fn index_filter(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'"' | b'\'' | b'`' | b'[') => {
                let close = if q == b'[' { b']' } else { q };
                i += 1;
                while i < bytes.len() && bytes[i] != close {
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    let rest = sql[i + 1..].trim_start();
                    let head = rest.get(..5)?;
                    return head
                        .eq_ignore_ascii_case("WHERE")
                        .then(|| rest[5..].trim().to_string())
                        .filter(|f| !f.is_empty());
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A foreign key: parent table, child columns, parent columns (empty = the parent's key).
pub(crate) type Fk = (String, Vec<String>, Vec<String>);

pub(crate) fn foreign_keys(conn: Conn, table: &str) -> Result<Vec<Fk>, Error> {
    let mut s = conn.prepare(
        "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
    )?;
    s.bind_text(1, table)?;
    let mut out: Vec<(i64, String, Vec<String>, Vec<String>)> = Vec::new();
    while s.step()? {
        let id = s.i64(0);
        let to = if s.is_null(3) {
            String::new()
        } else {
            s.text(3)
        };
        match out.last_mut() {
            Some(last) if last.0 == id => {
                last.2.push(s.text(2));
                last.3.push(to);
            }
            _ => out.push((id, s.text(1), vec![s.text(2)], vec![to])),
        }
    }
    Ok(out
        .into_iter()
        .map(|(_, p, f, t)| (p, f, t.into_iter().filter(|x| !x.is_empty()).collect()))
        .collect())
}

/// The batch header's description of a tracked table, from the live schema.
pub(crate) fn table_schema(conn: Conn, t: &Tracked) -> Result<TableSchema, Error> {
    let info = table_info(conn, &t.def.name)?;
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, u16)> = Vec::new();
    // Key columns first in declaration order among themselves, then value columns in def order,
    // so the wire's value-column numbering equals our column index.
    for c in info.iter().filter(|c| c.pk > 0) {
        pk.push((c.pk, columns.len() as u16));
        columns.push(ColumnSchema {
            name: c.name.clone(),
            decl_type: c.decl_type.clone(),
            strategy: Strategy::Lww,
            not_null: c.not_null,
        });
    }
    for c in &t.def.columns {
        let live = info.iter().find(|i| i.name == c.name);
        columns.push(ColumnSchema {
            name: c.name.clone(),
            decl_type: live.map(|l| l.decl_type.clone()).unwrap_or_default(),
            strategy: c.strategy,
            not_null: live.is_some_and(|l| l.not_null),
        });
    }
    pk.sort();
    let index_of = |name: &str| {
        columns
            .iter()
            .position(|c| c.name == name)
            .map(|i| i as u16)
    };
    let foreign_keys = foreign_keys(conn, &t.def.name)?
        .into_iter()
        .filter_map(|(parent, from, to)| {
            let cols: Option<Vec<u16>> = from.iter().map(|f| index_of(f)).collect();
            cols.map(|columns| ForeignKey {
                columns,
                parent,
                parent_columns: to,
            })
        })
        .collect();
    // The rule travels with the table (the cloud learns it from batches), as an index into the
    // columns above.
    let scope = t.def.scope.as_ref().and_then(|r| {
        let i = index_of(r.column())?;
        Some(match r {
            ScopeRule::Column(_) => ScopeColumn::Column(i),
            ScopeRule::Via(_) => ScopeColumn::Via(i),
        })
    });
    Ok(TableSchema {
        scope,
        name: t.def.name.clone(),
        columns,
        primary_key: pk.into_iter().map(|(_, i)| i).collect(),
        foreign_keys,
    })
}

/// Quotes an identifier for SQL.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Tracked tables ordered parents before children (by foreign keys among them).
pub(crate) fn topo_order(conn: Conn, tables: &[Tracked]) -> Result<Vec<usize>, Error> {
    let mut parents: Vec<Vec<usize>> = Vec::new();
    for t in tables {
        let fks = foreign_keys(conn, &t.def.name)?;
        parents.push(
            fks.iter()
                .filter_map(|(p, _, _)| {
                    tables
                        .iter()
                        .position(|x| x.def.name.eq_ignore_ascii_case(p))
                })
                .collect(),
        );
    }
    let mut order = Vec::new();
    let mut state = vec![0u8; tables.len()];
    fn visit(i: usize, parents: &[Vec<usize>], state: &mut [u8], order: &mut Vec<usize>) {
        if state[i] != 0 {
            return; // done, or a cycle (kept in discovery order; FKs are deferred anyway)
        }
        state[i] = 1;
        for &p in &parents[i] {
            visit(p, parents, state, order);
        }
        state[i] = 2;
        order.push(i);
    }
    for i in 0..tables.len() {
        visit(i, &parents, &mut state, &mut order);
    }
    Ok(order)
}

pub(crate) fn meta_get(conn: Conn, k: &str) -> Result<Option<i64>, Error> {
    conn.query_i64(
        "SELECT v FROM _outpost_meta WHERE k = ?1",
        &[outpost_protocol::Value::Text(k.into())],
    )
}

pub(crate) fn meta_set(conn: Conn, k: &str, v: i64) -> Result<(), Error> {
    let mut s = conn.prepare("INSERT INTO _outpost_meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v")?;
    s.bind_text(1, k)?;
    s.bind_i64(2, v)?;
    s.run()
}

#[cfg(test)]
mod index_filter_tests {
    use super::index_filter;

    #[test]
    fn the_where_of_a_partial_index_is_what_follows_its_columns() {
        assert_eq!(
            index_filter("CREATE UNIQUE INDEX one ON staff(badge) WHERE active = 1").as_deref(),
            Some("active = 1")
        );
        assert_eq!(
            index_filter(
                "CREATE UNIQUE INDEX \"a (b\" ON \"t\"(\"x)\" COLLATE NOCASE, y)\n  where (y > 0)"
            )
            .as_deref(),
            Some("(y > 0)")
        );
        assert_eq!(
            index_filter("CREATE UNIQUE INDEX one ON staff(badge)"),
            None
        );
        assert_eq!(
            index_filter("CREATE UNIQUE INDEX one ON staff(badge) WHERE"),
            None
        );
    }
}
