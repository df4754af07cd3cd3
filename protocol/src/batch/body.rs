//! The batch body: table groups of rows of cells (layout: `docs/wire-format.md`, "Body").

use super::budget::{
    Budget, CELL_COST, CONTEXT_COST, GROUP_COST, ROW_COST, STRATEGIES_COST, UUID_TEXT_COST,
    VALUE_COST,
};
use super::error::{BodyProblem, DecodeError, EncodeError};
use super::{CellChange, CellPayload, RowChange, TableChanges, TableSchema};
use crate::hlc::{Hlc, MAX_MILLIS};
use crate::merge::Strategy;
use crate::site::SiteId;
use crate::uuid_text;
use crate::value::Value;
use crate::varint::{self, len_u64, unzigzag, write_u128, write_u64, zigzag, VarintError};
use alloc::string::String;
use alloc::vec::Vec;

/// Row flag: cells after the first carry their own clock.
pub(crate) const FLAG_MIXED_HLC: u128 = 1;
/// Row flag: the key is one canonical UUID text, written as 16 bytes.
pub(crate) const FLAG_UUID_KEY: u128 = 2;
/// Column-set forms (flag bits 2-3).
pub(crate) const FORM_MASK: u128 = 0;
pub(crate) const FORM_ALL: u128 = 1;
pub(crate) const FORM_LIST: u128 = 2;
/// Bits of the row flags below the existence counter.
pub(crate) const FLAG_BITS: u32 = 4;

/// Value type tags (low 3 bits of a value header).
pub(crate) const T_NULL: u64 = 0;
pub(crate) const T_INT: u64 = 1;
pub(crate) const T_REAL: u64 = 2;
pub(crate) const T_TEXT: u64 = 3;
pub(crate) const T_BLOB: u64 = 4;
pub(crate) const T_UUID: u64 = 5;
pub(crate) const T_INT64: u64 = 6;

/// The strategies of a table's value columns, in value-column order.
fn value_strategies(schema: &TableSchema) -> Vec<Strategy> {
    schema
        .value_columns()
        .map(|i| schema.columns[i as usize].strategy)
        .collect()
}

/// Builds a batch body row by row, so a caller can cut batches at a byte budget: push rows while
/// [`BodyWriter::len`] is under the budget, then turn it into a batch with
/// [`super::codec::finish_batch`].
///
/// Rows go into the table group opened by the last [`begin_table`](BodyWriter::begin_table);
/// each call opens a new group, even for the same table.
#[derive(Clone, Debug)]
pub struct BodyWriter {
    tables: Vec<TableSchema>,
    strategies: Vec<Vec<Strategy>>,
    /// Finished groups.
    done: Vec<u8>,
    groups: u64,
    /// The open group: table index, row count, row bytes.
    current: Option<(u16, u64, Vec<u8>)>,
    /// A transfer batch's writer: every group names the site its cells are credited to.
    transfer: bool,
    /// The open group's credit (transfer batches only).
    credit: Option<SiteId>,
    prev_row_hlc: Hlc,
    min_hlc: Option<Hlc>,
    max_hlc: Hlc,
}

impl BodyWriter {
    /// A writer for a transfer batch's rows of `tables`: groups are begun with
    /// [`begin_credited`](BodyWriter::begin_credited), each naming the site its cells are
    /// credited to; the batch must be finished with the `transfer` flag.
    pub fn new_transfer(tables: Vec<TableSchema>) -> Result<Self, EncodeError> {
        let mut w = BodyWriter::new(tables)?;
        w.transfer = true;
        Ok(w)
    }

    /// Whether this writes a transfer batch.
    pub fn is_transfer(&self) -> bool {
        self.transfer
    }

    /// A writer for rows of `tables` (these become the batch header's tables).
    pub fn new(tables: Vec<TableSchema>) -> Result<Self, EncodeError> {
        if tables.iter().any(|t| t.columns.len() > u16::MAX as usize) {
            return Err(EncodeError::TooManyColumns);
        }
        let strategies = tables.iter().map(value_strategies).collect();
        Ok(BodyWriter {
            tables,
            strategies,
            done: Vec::new(),
            groups: 0,
            current: None,
            transfer: false,
            credit: None,
            prev_row_hlc: Hlc::ZERO,
            min_hlc: None,
            max_hlc: Hlc::ZERO,
        })
    }

    /// The tables rows are written against.
    pub fn tables(&self) -> &[TableSchema] {
        &self.tables
    }

    /// Opens a new group for `table` (an index into the tables).
    pub fn begin_table(&mut self, table: u16) -> Result<(), EncodeError> {
        if self.transfer {
            return Err(EncodeError::Credit);
        }
        self.begin(table)
    }

    /// Opens a new group of a transfer batch for `table`, its cells credited to `credit`.
    pub fn begin_credited(&mut self, table: u16, credit: SiteId) -> Result<(), EncodeError> {
        if !self.transfer {
            return Err(EncodeError::Credit);
        }
        self.begin(table)?;
        self.credit = Some(credit);
        Ok(())
    }

    fn begin(&mut self, table: u16) -> Result<(), EncodeError> {
        if table as usize >= self.tables.len() {
            return Err(EncodeError::UnknownTable {
                table,
                tables: self.tables.len(),
            });
        }
        self.close_group();
        self.current = Some((table, 0, Vec::new()));
        Ok(())
    }

    fn close_group(&mut self) {
        if let Some((table, rows, bytes)) = self.current.take() {
            write_u64(&mut self.done, table as u64);
            if let Some(credit) = self.credit.take() {
                self.done.extend_from_slice(credit.as_bytes());
            }
            write_u64(&mut self.done, rows);
            self.done.extend_from_slice(&bytes);
            self.groups += 1;
        }
    }

    /// Appends a row to the open group. On error nothing is written.
    pub fn push_row(&mut self, row: &RowChange) -> Result<(), EncodeError> {
        let Some((table, _, _)) = &self.current else {
            return Err(EncodeError::NoTable);
        };
        let table = *table as usize;
        let schema = &self.tables[table];
        let strategies = &self.strategies[table];
        check_row(schema, strategies, row)?;
        let (_, rows, out) = self.current.as_mut().expect("checked above");
        let mut prev = self.prev_row_hlc;
        write_row(out, strategies, row, &mut prev);
        *rows += 1;
        self.prev_row_hlc = prev;
        for cell in &row.cells {
            self.min_hlc = Some(self.min_hlc.map_or(cell.hlc, |m| m.min(cell.hlc)));
            self.max_hlc = self.max_hlc.max(cell.hlc);
        }
        Ok(())
    }

    /// The length in bytes the body would have if finished now.
    pub fn len(&self) -> usize {
        let open = match &self.current {
            Some((table, rows, bytes)) => {
                len_u64(*table as u64)
                    + len_u64(*rows)
                    + bytes.len()
                    + self.credit.map_or(0, |_| 16)
            }
            None => 0,
        };
        let groups = self.groups + self.current.is_some() as u64;
        len_u64(groups) + self.done.len() + open
    }

    /// True when no group has been begun.
    pub fn is_empty(&self) -> bool {
        self.groups == 0 && self.current.is_none()
    }

    /// The smallest cell clock written so far (zero when there is none): the header's `base_hlc`.
    pub fn base_hlc(&self) -> Hlc {
        self.min_hlc.unwrap_or(Hlc::ZERO)
    }

    /// The largest cell clock written so far (zero when there is none): the header's `max_hlc`.
    pub fn max_hlc(&self) -> Hlc {
        self.max_hlc
    }

    /// Closes the writer: the tables, the body bytes and the smallest cell clock.
    pub fn into_parts(mut self) -> (Vec<TableSchema>, Vec<u8>, Hlc) {
        self.close_group();
        let mut body = Vec::with_capacity(len_u64(self.groups) + self.done.len());
        write_u64(&mut body, self.groups);
        body.extend_from_slice(&self.done);
        let base = self.min_hlc.unwrap_or(Hlc::ZERO);
        (self.tables, body, base)
    }
}

fn check_row(
    schema: &TableSchema,
    strategies: &[Strategy],
    row: &RowChange,
) -> Result<(), EncodeError> {
    if row.key.len() != schema.primary_key.len() {
        return Err(EncodeError::KeyArity {
            got: row.key.len(),
            expected: schema.primary_key.len(),
        });
    }
    let mut last: Option<u16> = None;
    for cell in &row.cells {
        let Some(strategy) = strategies.get(cell.column as usize) else {
            return Err(EncodeError::BadColumn {
                column: cell.column,
            });
        };
        if last.is_some_and(|l| l >= cell.column) {
            return Err(EncodeError::BadColumn {
                column: cell.column,
            });
        }
        last = Some(cell.column);
        let fits = matches!(
            (&cell.payload, strategy),
            (CellPayload::Value(_), Strategy::Lww | Strategy::RowLww)
                | (CellPayload::Counter(_), Strategy::Counter)
                | (CellPayload::Review { .. }, Strategy::Review)
        );
        if !fits {
            return Err(EncodeError::PayloadMismatch {
                column: cell.column,
            });
        }
    }
    Ok(())
}

fn uuid_key(row: &RowChange) -> Option<[u8; 16]> {
    match row.key.as_slice() {
        [Value::Text(t)] => uuid_text::parse_canonical(t),
        _ => None,
    }
}

fn write_row(out: &mut Vec<u8>, strategies: &[Strategy], row: &RowChange, prev_row_hlc: &mut Hlc) {
    let n_values = strategies.len();
    let uuid = uuid_key(row);
    let mixed = row.cells.iter().any(|c| c.hlc != row.cells[0].hlc);
    let form = if n_values > 0 && row.cells.len() == n_values {
        FORM_ALL
    } else if row.cells.iter().all(|c| c.column < 64) {
        FORM_MASK
    } else {
        FORM_LIST
    };
    let flags = (row.existence as u128) << FLAG_BITS
        | form << 2
        | if uuid.is_some() { FLAG_UUID_KEY } else { 0 }
        | if mixed { FLAG_MIXED_HLC } else { 0 };
    write_u128(out, flags);
    match uuid {
        Some(bytes) => out.extend_from_slice(&bytes),
        None => row.key.iter().for_each(|v| write_value(out, v)),
    }
    match form {
        FORM_MASK => {
            let mask = row.cells.iter().fold(0u64, |m, c| m | 1 << c.column);
            write_u64(out, mask);
        }
        FORM_LIST => {
            write_u64(out, row.cells.len() as u64);
            let mut next = 0u64;
            for c in &row.cells {
                write_u64(out, c.column as u64 - next);
                next = c.column as u64 + 1;
            }
        }
        _ => {}
    }
    let Some(first) = row.cells.first() else {
        return;
    };
    write_clock(out, first.hlc, *prev_row_hlc);
    *prev_row_hlc = first.hlc;
    for (i, cell) in row.cells.iter().enumerate() {
        if mixed && i > 0 {
            write_clock(out, cell.hlc, first.hlc);
        }
        match &cell.payload {
            CellPayload::Value(v) => write_value(out, v),
            CellPayload::Counter(n) => write_u64(out, zigzag(*n)),
            CellPayload::Review { value, context } => {
                write_value(out, value);
                write_u64(out, context.len() as u64);
                for (site, hlc) in context {
                    out.extend_from_slice(site.as_bytes());
                    write_clock(out, *hlc, cell.hlc);
                }
            }
        }
    }
}

/// A clock relative to a reference: zigzag millisecond difference, then the counter.
fn write_clock(out: &mut Vec<u8>, hlc: Hlc, reference: Hlc) {
    let delta = hlc.millis() as i64 - reference.millis() as i64;
    write_u64(out, zigzag(delta));
    write_u64(out, hlc.counter() as u64);
}

/// Appends one value (see `docs/wire-format.md`, "Values").
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => write_u64(out, T_NULL),
        Value::Integer(i) => {
            let z = zigzag(*i);
            if z < 1 << 61 {
                write_u64(out, z << 3 | T_INT);
            } else {
                write_u64(out, T_INT64);
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
        Value::Real(r) => {
            write_u64(out, T_REAL);
            out.extend_from_slice(&r.to_bits().to_le_bytes());
        }
        Value::Text(t) => match uuid_text::parse_canonical(t) {
            Some(bytes) => {
                write_u64(out, T_UUID);
                out.extend_from_slice(&bytes);
            }
            None => {
                write_u64(out, (t.len() as u64) << 3 | T_TEXT);
                out.extend_from_slice(t.as_bytes());
            }
        },
        Value::Blob(b) => {
            write_u64(out, (b.len() as u64) << 3 | T_BLOB);
            out.extend_from_slice(b);
        }
    }
}

/// A cursor over the uncompressed body; every error carries its offset.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn err(&self, problem: BodyProblem) -> DecodeError {
        DecodeError::BadBody {
            offset: self.pos,
            problem,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn varint_err(&self, e: VarintError) -> DecodeError {
        self.err(match e {
            VarintError::Truncated => BodyProblem::Truncated,
            VarintError::Overflow => BodyProblem::VarintOverflow,
        })
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let (v, n) = varint::read_u64(&self.buf[self.pos..]).map_err(|e| self.varint_err(e))?;
        self.pos += n;
        Ok(v)
    }

    fn u128(&mut self) -> Result<u128, DecodeError> {
        let (v, n) = varint::read_u128(&self.buf[self.pos..]).map_err(|e| self.varint_err(e))?;
        self.pos += n;
        Ok(v)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.err(BodyProblem::Truncated));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A count whose items take at least `min_item_bytes` each: bounded by what remains.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let start = self.pos;
        let n = self.u64()?;
        if n > (self.remaining() / min_item_bytes.max(1)) as u64 {
            self.pos = start;
            return Err(self.err(BodyProblem::CountTooLarge));
        }
        Ok(n as usize)
    }

    fn clock(&mut self, reference: Hlc) -> Result<Hlc, DecodeError> {
        let start = self.pos;
        let delta = unzigzag(self.u64()?);
        let counter = self.u64()?;
        let millis = reference.millis() as i128 + delta as i128;
        if !(0..=MAX_MILLIS as i128).contains(&millis) || counter > u16::MAX as u64 {
            self.pos = start;
            return Err(self.err(BodyProblem::BadClock));
        }
        Ok(Hlc::new(millis as u64, counter as u16))
    }

    /// A value; its text or blob bytes are charged to `budget` before they are copied (the
    /// [`Value`] itself is paid for by whoever holds it).
    fn value(&mut self, budget: &mut Budget) -> Result<Value, DecodeError> {
        let start = self.pos;
        let header = self.u64()?;
        let upper = header >> 3;
        let bad = |r: &mut Self| {
            r.pos = start;
            Err(r.err(BodyProblem::BadValueType))
        };
        match header & 7 {
            T_NULL if upper == 0 => Ok(Value::Null),
            T_INT => Ok(Value::Integer(unzigzag(upper))),
            T_REAL if upper == 0 => Ok(Value::Real(f64::from_bits(u64::from_le_bytes(
                self.array()?,
            )))),
            T_TEXT => {
                let len = self.len_prefix(upper)?;
                let at = self.pos;
                let bytes = self.take(len)?;
                budget.charge(len)?;
                match core::str::from_utf8(bytes) {
                    Ok(s) => Ok(Value::Text(String::from(s))),
                    Err(_) => {
                        self.pos = at;
                        Err(self.err(BodyProblem::InvalidUtf8))
                    }
                }
            }
            T_BLOB => {
                let len = self.len_prefix(upper)?;
                let bytes = self.take(len)?;
                budget.charge(len)?;
                Ok(Value::Blob(bytes.to_vec()))
            }
            T_UUID if upper == 0 => {
                let bytes = self.array()?;
                budget.charge(UUID_TEXT_COST)?;
                Ok(Value::Text(uuid_text::format(&bytes)))
            }
            T_INT64 if upper == 0 => Ok(Value::Integer(i64::from_le_bytes(self.array()?))),
            _ => bad(self),
        }
    }

    fn len_prefix(&mut self, len: u64) -> Result<usize, DecodeError> {
        if len > self.remaining() as u64 {
            return Err(self.err(BodyProblem::CountTooLarge));
        }
        Ok(len as usize)
    }
}

/// Parses a whole body against the header's tables; returns the groups and the smallest cell
/// clock (zero when there are none). Every allocation is charged to `budget` first.
pub(crate) fn read_body(
    body: &[u8],
    tables: &[TableSchema],
    transfer: bool,
    budget: &mut Budget,
) -> Result<BodyRead, DecodeError> {
    let value_columns = |t: &TableSchema| t.columns.len() - t.primary_key.len();
    let all_values: usize = tables.iter().map(value_columns).sum();
    budget.charge_items(tables.len(), STRATEGIES_COST)?;
    budget.charge(all_values)?;
    let strategies: Vec<Vec<Strategy>> = tables.iter().map(value_strategies).collect();
    // Each row's column list, reused: one allocation per body instead of one per row, as large
    // as the widest table's value columns (a row can name no more; a mask names at most 64 and
    // only as many as its table has).
    let widest = tables.iter().map(value_columns).max().unwrap_or(0);
    budget.charge_items(widest, 2)?;
    let mut columns = Vec::with_capacity(widest);
    let mut r = Reader::new(body);
    // A group takes at least 2 bytes (table index, row count).
    let n_groups = r.count(2)?;
    budget.charge_items(n_groups, GROUP_COST)?;
    let mut groups = Vec::with_capacity(n_groups);
    let mut prev_row_hlc = Hlc::ZERO;
    let mut min_hlc: Option<Hlc> = None;
    let mut max_hlc = Hlc::ZERO;
    for _ in 0..n_groups {
        let at = r.pos;
        let table = r.u64()?;
        if table >= tables.len() as u64 {
            r.pos = at;
            return Err(r.err(BodyProblem::UnknownTable));
        }
        let schema = &tables[table as usize];
        let strategies = &strategies[table as usize];
        // A transfer batch's group names the site its cells are credited to.
        let credit = if transfer {
            Some(SiteId(r.array::<16>()?))
        } else {
            None
        };
        // A row takes at least 1 byte (its flags).
        let n_rows = r.count(1)?;
        budget.charge_items(n_rows, ROW_COST)?;
        let mut rows = Vec::with_capacity(n_rows);
        for _ in 0..n_rows {
            let row = read_row(
                &mut r,
                schema,
                strategies,
                &mut prev_row_hlc,
                &mut columns,
                budget,
            )?;
            for c in &row.cells {
                min_hlc = Some(min_hlc.map_or(c.hlc, |m| m.min(c.hlc)));
                max_hlc = max_hlc.max(c.hlc);
            }
            rows.push(row);
        }
        groups.push(TableChanges {
            table: table as u16,
            credit,
            rows,
        });
    }
    if r.remaining() != 0 {
        return Err(r.err(BodyProblem::TrailingBytes));
    }
    Ok(BodyRead {
        groups,
        min_hlc: min_hlc.unwrap_or(Hlc::ZERO),
        max_hlc,
    })
}

/// A parsed body: its groups and the smallest and largest cell clocks (zero when it has none),
/// which the decoder compares with the header's.
pub(crate) struct BodyRead {
    pub(crate) groups: Vec<TableChanges>,
    pub(crate) min_hlc: Hlc,
    pub(crate) max_hlc: Hlc,
}

fn read_row(
    r: &mut Reader<'_>,
    schema: &TableSchema,
    strategies: &[Strategy],
    prev_row_hlc: &mut Hlc,
    columns: &mut Vec<u16>,
    budget: &mut Budget,
) -> Result<RowChange, DecodeError> {
    let at = r.pos;
    let flags = r.u128()?;
    let existence = flags >> FLAG_BITS;
    let form = flags >> 2 & 3;
    if existence > u64::MAX as u128 || form == 3 {
        r.pos = at;
        return Err(r.err(BodyProblem::BadRowFlags));
    }
    let mixed = flags & FLAG_MIXED_HLC != 0;
    let key = if flags & FLAG_UUID_KEY != 0 {
        if schema.primary_key.len() != 1 {
            r.pos = at;
            return Err(r.err(BodyProblem::UuidKeyOnCompositeKey));
        }
        let bytes = r.array()?;
        budget.charge(VALUE_COST + UUID_TEXT_COST)?;
        alloc::vec![Value::Text(uuid_text::format(&bytes))]
    } else {
        // A key value takes at least one byte.
        let n = schema.primary_key.len();
        if n > r.remaining() {
            return Err(r.err(BodyProblem::Truncated));
        }
        budget.charge_items(n, VALUE_COST)?;
        let mut key = Vec::with_capacity(n);
        for _ in 0..n {
            key.push(r.value(budget)?);
        }
        key
    };
    let n_values = strategies.len();
    columns.clear();
    match form {
        FORM_MASK => {
            let at = r.pos;
            let mask = r.u64()?;
            if n_values < 64 && mask >> n_values != 0 {
                r.pos = at;
                return Err(r.err(BodyProblem::BadColumn));
            }
            columns.extend((0..64u16).filter(|i| mask >> i & 1 == 1));
        }
        FORM_ALL => columns.extend(0..n_values as u16),
        _ => {
            let at = r.pos;
            let n = r.count(1)?;
            if n > n_values {
                r.pos = at;
                return Err(r.err(BodyProblem::BadColumn));
            }
            let mut next = 0u64;
            for _ in 0..n {
                let at = r.pos;
                let col = next.saturating_add(r.u64()?);
                if col >= n_values as u64 {
                    r.pos = at;
                    return Err(r.err(BodyProblem::BadColumn));
                }
                columns.push(col as u16);
                next = col + 1;
            }
        }
    }
    // A cell takes at least one byte.
    if columns.len() > r.remaining() {
        return Err(r.err(BodyProblem::Truncated));
    }
    budget.charge_items(columns.len(), CELL_COST)?;
    let mut cells = Vec::with_capacity(columns.len());
    if !columns.is_empty() {
        let row_hlc = r.clock(*prev_row_hlc)?;
        *prev_row_hlc = row_hlc;
        for (i, &column) in columns.iter().enumerate() {
            let hlc = if mixed && i > 0 {
                r.clock(row_hlc)?
            } else {
                row_hlc
            };
            let payload = match strategies[column as usize] {
                Strategy::Lww | Strategy::RowLww => CellPayload::Value(r.value(budget)?),
                Strategy::Counter => CellPayload::Counter(unzigzag(r.u64()?)),
                Strategy::Review => {
                    let value = r.value(budget)?;
                    // An entry takes at least 18 bytes: a site and a two-varint clock.
                    let n = r.count(18)?;
                    budget.charge_items(n, CONTEXT_COST)?;
                    let mut context = Vec::with_capacity(n);
                    for _ in 0..n {
                        let site = SiteId(r.array()?);
                        context.push((site, r.clock(hlc)?));
                    }
                    CellPayload::Review { value, context }
                }
            };
            cells.push(CellChange {
                column,
                hlc,
                payload,
            });
        }
    }
    Ok(RowChange {
        key,
        existence: existence as u64,
        cells,
    })
}
