//! Reading captured back-office writes ([`super::capture`]) as batches of the cloud's origin:
//! the same rows and cells the engine's export makes from the same writes on a SQLite tenant
//! (`sqlite-ext/src/export.rs`): per row its causal length and, while it is alive, the value
//! columns written at that epoch, each with the clock of its newest write; a counter's cell the
//! cloud's whole contribution in the epoch, a review cell its value and the cloud's own clock it
//! supersedes.
//!
//! A batch covers a contiguous range of one stream's seqs. Rows come in the order of their first
//! seq in the range; a row written several times in it is folded into one (its newest values, as
//! the engine sends them). With a byte budget the range is cut at a seq boundary before the
//! first write that would pass it (never before the first). Like the engine's export, the batch
//! is flagged `both`, unsealed and unsigned: the serving process sets the direction the tenant
//! declared, seals and signs it, as `Tenant::export` does for the SQLite tenant.
//!
//! Not yet: cells of the cloud's that a device's write has since overwritten are still sent
//! (harmless: receivers keep the newer write, as every merge rule is idempotent); the engine
//! leaves them out. Knowing them needs the apply core's merge state.
//!
//! Transfers (op 4 entries: [`super::transfer`]) go in batches of their own, flagged
//! `transfer`: a batch of writes stops before the first, and one starting at a transfer holds the
//! run of transfers from there.
//!
//! Reading refuses while capture is switched off on any captured table ([`check_capture`]):
//! writes made meanwhile would never reach devices, and serving what was captured around them as
//! if it were everything would hide that.

use super::capture::{self, CaptureError, Captured, OP_DELETE, OP_TRANSFER};
use super::transfer::Queued;
use ::postgres::GenericClient;
use outpost_protocol::batch::codec::{self, EncodeError};
use outpost_protocol::batch::decl_type::{self, DeclType};
use outpost_protocol::batch::{
    BatchMeta, BodyWriter, CellChange, CellPayload, Compression, RowChange, TableSchema,
};
use outpost_protocol::vector::SeqRange;
use outpost_protocol::{Hlc, SiteId, Strategy, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Why captured changes could not be read.
#[derive(Debug)]
pub enum OutboxError {
    /// A captured table's capture trigger is missing or disabled.
    CaptureOff {
        /// The table.
        table: String,
        /// The trigger.
        trigger: &'static str,
        /// `"missing"` or `"disabled"`.
        state: &'static str,
    },
    /// The captured tables could not be read.
    Capture(CaptureError),
    /// `outpost.meta` names no site id: the database was not prepared by `init`.
    NoOrigin,
    /// `outpost.meta`'s site id is not one.
    BadOrigin {
        /// What it holds.
        found: String,
    },
    /// A seq of the range is not in the outbox.
    Missing {
        /// The stream.
        stream: String,
        /// The seq.
        seq: u64,
    },
    /// An outbox row names a table that is not captured.
    UnknownTable {
        /// Its id.
        id: i32,
    },
    /// An outbox row holds a value that does not fit its column.
    BadValue {
        /// The table.
        table: String,
        /// What was found (cut to 80 characters).
        found: String,
    },
    /// The batch could not be encoded.
    Encode {
        /// The table whose row failed, when one did.
        table: Option<String>,
        /// The encoder's reason.
        source: EncodeError,
    },
    /// A statement failed.
    Sql {
        /// What was being done.
        doing: String,
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
    /// The merge state of a transferred row could not be read ([`super::transfer`]).
    Transfer(super::store::StoreError),
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxError::CaptureOff {
                table,
                trigger,
                state,
            } => write!(
                f,
                "capture is switched off on table {table:?}: its trigger {trigger} is {state}, \
                 so back-office writes to it are not reaching devices; run `outpost-cloud init` \
                 again to reinstall it, and find who disabled it (docs/cloud.md, \"PostgreSQL\")"
            ),
            OutboxError::Capture(e) => e.fmt(f),
            OutboxError::NoOrigin => f.write_str(
                "outpost.meta names no site id: the database was not prepared for a cloud \
                 (outpost-cloud init --postgres URL)",
            ),
            OutboxError::BadOrigin { found } => {
                write!(f, "outpost.meta's site id {found:?} is not a site id")
            }
            OutboxError::Missing { stream, seq } => write!(
                f,
                "seq {seq} of stream {stream:?} is not in outpost.outbox (pruned, or the \
                 database was restored)"
            ),
            OutboxError::UnknownTable { id } => {
                write!(
                    f,
                    "outpost.outbox names table id {id}, which outpost.captured lacks"
                )
            }
            OutboxError::BadValue { table, found } => write!(
                f,
                "outpost.outbox holds a value of table {table:?} that does not fit its \
                 column: {found}"
            ),
            OutboxError::Encode { table: Some(t), .. } => {
                write!(f, "encoding a captured row of table {t:?}")
            }
            OutboxError::Encode { table: None, .. } => f.write_str("encoding captured changes"),
            OutboxError::Sql { doing, .. } => f.write_str(doing),
            OutboxError::Transfer(e) => write!(f, "reading a transferred row: {e}"),
        }
    }
}

impl std::error::Error for OutboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OutboxError::Capture(e) => e.source(),
            OutboxError::Encode { source, .. } => Some(source),
            OutboxError::Sql { source, .. } => Some(source),
            OutboxError::Transfer(e) => e.source(),
            _ => None,
        }
    }
}

impl From<CaptureError> for OutboxError {
    fn from(e: CaptureError) -> Self {
        OutboxError::Capture(e)
    }
}

fn sql(doing: impl Into<String>) -> impl FnOnce(::postgres::Error) -> OutboxError {
    let doing = doing.into();
    move |source| OutboxError::Sql { doing, source }
}

/// Refuses when any captured table lacks one of its capture triggers, or has one disabled
/// (`ALTER TABLE ... DISABLE TRIGGER`).
pub fn check_capture(client: &mut impl GenericClient) -> Result<(), OutboxError> {
    let tables = capture::captured(client)?;
    if tables.is_empty() {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT c.name, n.t, tg.tgenabled::text FROM outpost.captured c \
             CROSS JOIN unnest($1::text[]) AS n(t) \
             LEFT JOIN pg_trigger tg ON tg.tgname = n.t AND tg.tgrelid = \
               to_regclass(quote_ident($2) || '.' || quote_ident(c.name)) \
             ORDER BY c.id",
            &[
                &[
                    capture::ROW_TRIGGER,
                    capture::FLUSH_TRIGGER,
                    capture::TRUNCATE_TRIGGER,
                ]
                .as_slice(),
                &super::app_tables::SCHEMA,
            ],
        )
        .map_err(sql("reading the capture triggers"))?;
    for r in &rows {
        let enabled: Option<String> = r.get(2);
        let state = match enabled.as_deref() {
            Some("A") => continue,
            None => "missing",
            // 'O' (origin) still fires, but not under session_replication_role = replica.
            Some(_) => "disabled",
        };
        let trigger: String = r.get(1);
        return Err(OutboxError::CaptureOff {
            table: r.get(0),
            trigger: [
                capture::ROW_TRIGGER,
                capture::FLUSH_TRIGGER,
                capture::TRUNCATE_TRIGGER,
            ]
            .into_iter()
            .find(|t| *t == trigger)
            .unwrap_or(capture::ROW_TRIGGER),
            state,
        });
    }
    Ok(())
}

/// The highest seq issued in `stream` (0: none).
pub fn top(client: &mut impl GenericClient, stream: &str) -> Result<u64, OutboxError> {
    Ok(tops(client)?.get(stream).copied().unwrap_or(0))
}

/// How long an exported change stays in the outbox (milliseconds of its clock): longer than any
/// process serving the tenant reads the mailbox's coverage before it reads the outbox (a round),
/// so no export finds a row gone that it still meant to read.
pub const PRUNE_AFTER_MS: u64 = 10 * 60 * 1000;

/// Deletes the changes of `stream` below `below` (what the mailbox holds as the cloud's batches:
/// exported; the change at `below` itself stays, for restore detection, `high_water.rs`) that
/// are folded into the merge state and older than [`PRUNE_AFTER_MS`] by `now_ms`; the stream's
/// floor keeps its top. Returns how many went.
pub fn prune(
    client: &mut impl GenericClient,
    stream: &str,
    below: u64,
    now_ms: u64,
) -> Result<u64, OutboxError> {
    let (Ok(below), Ok(before)) = (
        i64::try_from(below),
        i64::try_from(now_ms.saturating_sub(PRUNE_AFTER_MS) << 16),
    ) else {
        return Ok(0);
    };
    let row = client
        .query_one(
            "WITH gone AS (DELETE FROM outpost.outbox o USING outpost.streams s \
               WHERE o.stream = $1 AND s.stream = $1 AND o.seq < $2 AND o.seq <= s.folded \
               AND o.hlc < $3 RETURNING o.seq), \
             top AS (SELECT max(seq) AS m, count(*) AS n FROM gone), \
             floor AS (UPDATE outpost.streams s SET seq = greatest(s.seq, top.m) FROM top \
               WHERE s.stream = $1 AND top.m IS NOT NULL) \
             SELECT n FROM top",
            &[&stream, &below, &before],
        )
        .map_err(sql(format!(
            "pruning exported changes of stream {stream:?}"
        )))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Every stream of the cloud's origin with its highest seq.
pub fn tops(client: &mut impl GenericClient) -> Result<BTreeMap<String, u64>, OutboxError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('outpost.outbox') IS NOT NULL", &[])
        .map_err(sql("looking for outpost.outbox"))?
        .get(0);
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query(
            "SELECT s.stream, greatest(s.seq, coalesce( \
               (SELECT max(o.seq) FROM outpost.outbox o WHERE o.stream = s.stream), 0)) \
             FROM outpost.streams s",
            &[],
        )
        .map_err(sql("reading the streams' seqs"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// The clock of the cloud's change at `seq` of `stream`, if the outbox holds it (restore
/// detection, `high_water.rs`: a change written again at a seq after a restore has another).
pub fn stamp(
    client: &mut impl GenericClient,
    stream: &str,
    seq: u64,
) -> Result<Option<u64>, OutboxError> {
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            "SELECT hlc FROM outpost.outbox WHERE stream = $1 AND seq = $2",
            &[&stream, &seq],
        )
        .map_err(sql(format!(
            "reading seq {seq} of stream {stream:?} in outpost.outbox"
        )))?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}

/// A batch read from the outbox.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The batch (unsigned, unsealed, flagged `both`).
    pub bytes: Vec<u8>,
    /// The seqs it covers (the asked range, cut by the top or the budget).
    pub range: SeqRange,
}

/// One outbox row.
struct Entry {
    seq: u64,
    hlc: u64,
    tbl: i32,
    key: String,
    exist: u64,
    op: i16,
    cells: Option<String>,
    extra: Option<String>,
}

/// A row folded from its entries in the range.
struct Folded {
    table: usize,
    key: Vec<Value>,
    exist: u64,
    /// By value-column number.
    cells: BTreeMap<u16, CellChange>,
}

/// The origin of every captured change, as `outpost.meta` holds it: the cloud's site id, or the
/// origin it took after a restore (`new_origin.rs`).
pub fn origin(client: &mut impl GenericClient) -> Result<SiteId, OutboxError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('outpost.meta') IS NOT NULL", &[])
        .map_err(sql("looking for outpost.meta"))?
        .get(0);
    if !exists {
        return Err(OutboxError::NoOrigin);
    }
    let row = client
        .query_opt(
            "SELECT value FROM outpost.meta WHERE name IN ('origin', 'site_id') \
             ORDER BY name = 'origin' DESC LIMIT 1",
            &[],
        )
        .map_err(sql("reading the cloud's origin from outpost.meta"))?;
    let found: String = row.ok_or(OutboxError::NoOrigin)?.get(0);
    found.parse().map_err(|_| OutboxError::BadOrigin { found })
}

/// The batch of the cloud's changes in `stream` within `range` (its top clamped to the
/// stream's), at most about `max_bytes` when given; `None` when the range starts above the top.
pub fn batch(
    client: &mut impl GenericClient,
    stream: &str,
    range: SeqRange,
    max_bytes: Option<usize>,
) -> Result<Option<Exported>, OutboxError> {
    check_capture(client)?;
    let origin = origin(client)?;
    let top = top(client, stream)?;
    let hi = range.hi.min(top);
    if range.lo > hi {
        return Ok(None);
    }
    let tables = capture::captured(client)?;
    let rows = client
        .query(
            "SELECT seq, hlc, tbl, key::text, exist, op, cells::text, extra::text \
             FROM outpost.outbox WHERE stream = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
            &[&stream, &(range.lo as i64), &(hi as i64)],
        )
        .map_err(sql(format!("reading outpost.outbox of stream {stream:?}")))?;
    let mut entries: Vec<Entry> = Vec::with_capacity(rows.len());
    let mut expect = range.lo;
    let mut size = 0usize;
    for r in &rows {
        // A batch holds writes or transfers, never both (the flag is the batch's).
        if entries
            .first()
            .is_some_and(|f| (f.op == OP_TRANSFER) != (r.get::<_, i16>(5) == OP_TRANSFER))
        {
            break;
        }
        let e = Entry {
            seq: r.get::<_, i64>(0) as u64,
            hlc: r.get::<_, i64>(1) as u64,
            tbl: r.get(2),
            key: r.get(3),
            exist: r.get::<_, i64>(4) as u64,
            op: r.get(5),
            cells: r.get(6),
            extra: r.get(7),
        };
        if e.seq != expect {
            return Err(OutboxError::Missing {
                stream: stream.into(),
                seq: expect,
            });
        }
        size += 24 + e.key.len() + e.cells.as_ref().map_or(0, String::len);
        if max_bytes.is_some_and(|m| size > m) && !entries.is_empty() {
            break;
        }
        expect += 1;
        entries.push(e);
    }
    if expect <= hi && entries.len() == rows.len() {
        return Err(OutboxError::Missing {
            stream: stream.into(),
            seq: expect,
        });
    }
    let hi = expect - 1;
    if entries.first().is_some_and(|e| e.op == OP_TRANSFER) {
        let queued: Vec<Queued> = entries
            .into_iter()
            .map(|e| Queued {
                seq: e.seq,
                tbl: e.tbl,
                key: e.key,
            })
            .collect();
        return super::transfer::batch(client, origin, stream, &queued, max_bytes).map(Some);
    }
    let folded = fold(&tables, &entries, origin)?;
    let schemas: Vec<TableSchema> = tables.iter().map(|c| c.def.clone()).collect();
    let encode = |table: Option<&str>| {
        let table = table.map(str::to_string);
        move |source| OutboxError::Encode { table, source }
    };
    let mut writer = BodyWriter::new(schemas).map_err(encode(None))?;
    let mut open = None;
    for row in folded {
        if open != Some(row.table) {
            writer.begin_table(row.table as u16).map_err(encode(None))?;
            open = Some(row.table);
        }
        writer
            .push_row(&RowChange {
                key: row.key,
                existence: row.exist,
                cells: row.cells.into_values().collect(),
            })
            .map_err(encode(Some(&tables[row.table].def.name)))?;
    }
    let range = SeqRange::new(range.lo, hi).expect("lo <= hi: one entry at least");
    let meta = BatchMeta {
        stream: stream.to_string(),
        ..BatchMeta::default()
    };
    let bytes = codec::finish_batch_with(writer, origin, range, &meta, Compression::None)
        .map_err(encode(None))?;
    Ok(Some(Exported { bytes, range }))
}

/// Folds entries (in seq order) into one change per row, in the order of each row's first
/// entry.
fn fold(
    tables: &[Captured],
    entries: &[Entry],
    origin: SiteId,
) -> Result<Vec<Folded>, OutboxError> {
    let mut rows: Vec<Folded> = Vec::new();
    let mut index: HashMap<(i32, &str), usize> = HashMap::new();
    for e in entries {
        let table = tables
            .iter()
            .position(|c| c.id == e.tbl)
            .ok_or(OutboxError::UnknownTable { id: e.tbl })?;
        let def = &tables[table].def;
        let i = match index.get(&(e.tbl, e.key.as_str())) {
            Some(&i) => i,
            None => {
                rows.push(Folded {
                    table,
                    key: key_values(def, &e.key)?,
                    exist: e.exist,
                    cells: BTreeMap::new(),
                });
                index.insert((e.tbl, e.key.as_str()), rows.len() - 1);
                rows.len() - 1
            }
        };
        let row = &mut rows[i];
        if row.exist != e.exist {
            // Cells of another epoch are not the row's any more (a delete, a re-insert).
            row.cells.clear();
            row.exist = e.exist;
        }
        if e.op == OP_DELETE {
            row.cells.clear();
            continue;
        }
        for (n, cell) in cells(def, e, origin)? {
            row.cells.insert(n, cell);
        }
    }
    Ok(rows)
}

/// The type values of column `c` of `def` have here.
fn column_kind(def: &TableSchema, c: usize) -> DeclType {
    def.columns
        .get(c)
        .and_then(|c| decl_type::reduce(&c.decl_type))
        .unwrap_or(DeclType::None)
}

fn bad(def: &TableSchema, found: &serde_json::Value) -> OutboxError {
    OutboxError::BadValue {
        table: def.name.clone(),
        found: found.to_string().chars().take(80).collect(),
    }
}

fn parse(def: &TableSchema, text: &str) -> Result<serde_json::Value, OutboxError> {
    serde_json::from_str(text).map_err(|_| OutboxError::BadValue {
        table: def.name.clone(),
        found: text.chars().take(80).collect(),
    })
}

/// The key values of an outbox key (a JSON array in key order).
pub(crate) fn key_values(def: &TableSchema, key: &str) -> Result<Vec<Value>, OutboxError> {
    let json = parse(def, key)?;
    let items = json.as_array().ok_or_else(|| bad(def, &json))?;
    if items.len() != def.primary_key.len() {
        return Err(bad(def, &json));
    }
    def.primary_key
        .iter()
        .zip(items)
        .map(|(&c, v)| value(def, c as usize, v))
        .collect()
}

/// The cells of one insert or update entry, by value-column number.
fn cells(
    def: &TableSchema,
    e: &Entry,
    origin: SiteId,
) -> Result<Vec<(u16, CellChange)>, OutboxError> {
    let Some(text) = &e.cells else {
        return Ok(Vec::new());
    };
    let json = parse(def, text)?;
    let map = json.as_object().ok_or_else(|| bad(def, &json))?;
    let extra = match &e.extra {
        Some(x) => parse(def, x)?,
        None => serde_json::Value::Null,
    };
    let value_columns: Vec<u16> = def.value_columns().collect();
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let n: u16 = k.parse().map_err(|_| bad(def, &json))?;
        let c = *value_columns
            .get(n as usize)
            .ok_or_else(|| bad(def, &json))? as usize;
        let payload = match def.columns[c].strategy {
            Strategy::Lww | Strategy::RowLww => CellPayload::Value(value(def, c, v)?),
            Strategy::Counter => CellPayload::Counter(v.as_i64().ok_or_else(|| bad(def, v))?),
            Strategy::Review => CellPayload::Review {
                value: value(def, c, v)?,
                context: review_context(def, &extra, k, origin)?,
            },
        };
        out.push((
            n,
            CellChange {
                column: n,
                hlc: Hlc::from_u64(e.hlc),
                payload,
            },
        ));
    }
    Ok(out)
}

/// A review write's context: the cloud's own earlier write ("c") and the writes of other sites
/// the merge state held ("s"), one entry per site with its highest clock, sorted by site (as
/// `ReviewCell::context` makes it on SQLite).
fn review_context(
    def: &TableSchema,
    extra: &serde_json::Value,
    column: &str,
    origin: SiteId,
) -> Result<Vec<(SiteId, Hlc)>, OutboxError> {
    let mut ctx: BTreeMap<SiteId, Hlc> = BTreeMap::new();
    let mut add = |site: SiteId, hlc: Hlc| {
        let e = ctx.entry(site).or_insert(hlc);
        *e = (*e).max(hlc);
    };
    if let Some(h) = extra.get("c").and_then(|x| x.get(column)) {
        add(
            origin,
            Hlc::from_u64(h.as_u64().ok_or_else(|| bad(def, h))?),
        );
    }
    if let Some(seen) = extra.get("s").and_then(|x| x.get(column)) {
        let pairs: Vec<(SiteId, Hlc)> =
            serde_json::from_value(seen.clone()).map_err(|_| bad(def, seen))?;
        for (site, hlc) in pairs {
            add(site, hlc);
        }
    }
    Ok(ctx.into_iter().collect())
}

/// A value as `to_jsonb` wrote it from a column of `def`, as SQLite would hold it in a column of
/// the same declared type (a REAL column's `37` is `37.0`; NUMERIC keeps integers integral).
pub(crate) fn value(
    def: &TableSchema,
    c: usize,
    v: &serde_json::Value,
) -> Result<Value, OutboxError> {
    use serde_json::Value as J;
    let kind = column_kind(def, c);
    Ok(match v {
        J::Null => Value::Null,
        J::String(s) => match kind {
            DeclType::Blob | DeclType::None if s.starts_with("\\x") => {
                Value::Blob(unhex(&s[2..]).ok_or_else(|| bad(def, v))?)
            }
            // Floats PostgreSQL keeps and SQLite does not: NaN (SQLite stores NULL).
            DeclType::Real | DeclType::Numeric | DeclType::Integer | DeclType::Int => {
                match s.as_str() {
                    "Infinity" => Value::Real(f64::INFINITY),
                    "-Infinity" => Value::Real(f64::NEG_INFINITY),
                    "NaN" => Value::Null,
                    _ => Value::Text(s.clone()),
                }
            }
            _ => Value::Text(s.clone()),
        },
        J::Number(n) => match kind {
            DeclType::Real => Value::Real(n.as_f64().ok_or_else(|| bad(def, v))?),
            _ => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => {
                    let f = n.as_f64().ok_or_else(|| bad(def, v))?;
                    let integral = f.fract() == 0.0 && f.abs() < 9.2e18;
                    if integral && kind != DeclType::Text {
                        Value::Integer(f as i64)
                    } else {
                        Value::Real(f)
                    }
                }
            },
        },
        J::Bool(b) => Value::Integer(i64::from(*b)),
        J::Array(_) | J::Object(_) => Value::Text(v.to_string()),
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::batch::ColumnSchema;
    use serde_json::json;

    fn def() -> TableSchema {
        let col = |name: &str, decl: &str| ColumnSchema {
            name: name.into(),
            decl_type: decl.into(),
            strategy: Strategy::Lww,
            not_null: false,
        };
        TableSchema {
            name: "t".into(),
            columns: vec![
                col("id", "TEXT"),
                col("n", "INTEGER"),
                col("w", "REAL"),
                col("b", "BLOB"),
                col("x", "NUMERIC"),
            ],
            primary_key: vec![0],
            foreign_keys: vec![],
            scope: None,
        }
    }

    #[test]
    fn values_come_back_as_sqlite_holds_them_in_the_declared_type() {
        let d = def();
        assert_eq!(value(&d, 1, &json!(42)).unwrap(), Value::Integer(42));
        assert_eq!(value(&d, 2, &json!(37)).unwrap(), Value::Real(37.0));
        assert_eq!(value(&d, 2, &json!("NaN")).unwrap(), Value::Null);
        assert_eq!(
            value(&d, 3, &json!("\\xdead00")).unwrap(),
            Value::Blob(vec![0xde, 0xad, 0])
        );
        assert_eq!(value(&d, 4, &json!(10.0)).unwrap(), Value::Integer(10));
        assert_eq!(value(&d, 4, &json!(1.5)).unwrap(), Value::Real(1.5));
        assert_eq!(
            value(&d, 0, &json!("\\x00")).unwrap(),
            Value::Text("\\x00".into())
        );
        assert!(value(&d, 3, &json!("\\xzz")).is_err());
    }
}
