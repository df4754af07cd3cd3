//! A push as the cloud holds it between reading its body and writing it: per table, its
//! `created`, `updated` and `deleted` lists as compact bytes, read back without copying.
//!
//! A record is its id (length, bytes), its number of columns, and per column the column's index
//! in the table (varint) and the value: a tag byte, then nothing (null), a zig-zag varint
//! (integer), 8 bytes (real) or length and bytes (text); then the columns its `_changed` names
//! (an updated record writes only those into an existing row): 0 when it named none, else their
//! count plus one and their indexes. An id of `deleted` is its length and
//! bytes. So a plan takes no more bytes than the JSON it came from, give or take the reals
//! (`1e5`, 3 characters, takes 9 bytes): about 1x the body, never the ~75x of a JSON tree.

/// One table's part of a push.
#[derive(Debug)]
pub struct TablePlan {
    /// The table.
    pub table: String,
    /// Its columns as they were when the body was read (records name columns by index here).
    pub columns: Vec<String>,
    /// `created` records, encoded (see [`Records`]).
    pub created: List,
    /// `updated` records, encoded.
    pub updated: List,
    /// `deleted` ids, each its length and bytes.
    pub deleted: List,
}

/// One list of a table's push: its records, or ids, one after the other.
#[derive(Debug, Default)]
pub struct List {
    /// How many records (or ids).
    pub count: usize,
    bytes: Vec<u8>,
}

/// A whole push, ready to apply.
#[derive(Debug, Default)]
pub struct Plan {
    /// The tables, in the body's order.
    pub tables: Vec<TablePlan>,
}

impl Plan {
    /// A short description for logs (counts only, never values).
    pub fn describe(&self) -> String {
        self.tables
            .iter()
            .map(|t| {
                format!(
                    "{}: +{} ~{} -{}",
                    t.table, t.created.count, t.updated.count, t.deleted.count
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Bytes the plan holds (its lists' capacity).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.tables
            .iter()
            .map(|t| {
                t.created.bytes.capacity() + t.updated.bytes.capacity() + t.deleted.bytes.capacity()
            })
            .sum()
    }
}

/// A value as the plan holds it, borrowed from the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// JSON `null`.
    Null,
    /// A JSON integer that fits i64, or a boolean (1 / 0).
    Integer(i64),
    /// Any other JSON number.
    Real(f64),
    /// A JSON string.
    Text(&'a str),
}

/// A record read back from a [`List`]: its id and its (column index, value) pairs.
#[derive(Debug)]
pub struct Record<'a> {
    /// The record's `id`.
    pub id: &'a str,
    /// The columns the body gave, by index into [`TablePlan::columns`], each once.
    pub values: Vec<(usize, Scalar<'a>)>,
    /// An updated record's `_changed` columns (by index): into a row that exists, only these
    /// are written. `None`: every given column (a created record, or no `_changed`).
    pub changed: Option<Vec<usize>>,
}

impl Record<'_> {
    /// The values to write into a row that exists: the `_changed` ones, or all.
    pub fn values_for_update(&self) -> Vec<(usize, Scalar<'_>)> {
        match &self.changed {
            None => self.values.clone(),
            Some(only) => self
                .values
                .iter()
                .filter(|(c, _)| only.contains(c))
                .copied()
                .collect(),
        }
    }
}

/// The records of a `created` or `updated` list, in the body's order.
pub struct Records<'a> {
    rest: &'a [u8],
}

/// The ids of a `deleted` list, in the body's order.
pub struct Ids<'a> {
    rest: &'a [u8],
}

impl List {
    /// Reads the list as records.
    pub fn records(&self) -> Records<'_> {
        Records { rest: &self.bytes }
    }

    /// Reads the list as ids.
    pub fn ids(&self) -> Ids<'_> {
        Ids { rest: &self.bytes }
    }

    /// Forgets the list (its key was given again: the last one counts).
    pub fn clear(&mut self) {
        self.count = 0;
        self.bytes = Vec::new();
    }

    /// Appends an id.
    pub fn push_id(&mut self, id: &str) {
        put_text(&mut self.bytes, id);
        self.count += 1;
    }

    /// Appends a record: its id, its (column index, value) pairs, each column once, and the
    /// columns its `_changed` names, if it named any.
    pub fn push_record<'v>(
        &mut self,
        id: &str,
        values: impl Iterator<Item = (usize, Scalar<'v>)> + Clone,
        changed: Option<&[usize]>,
    ) {
        let out = &mut self.bytes;
        put_text(out, id);
        put_varint(out, values.clone().count() as u64);
        for (col, v) in values {
            put_varint(out, col as u64);
            match v {
                Scalar::Null => out.push(NULL),
                Scalar::Integer(n) => {
                    out.push(INTEGER);
                    put_varint(out, ((n << 1) ^ (n >> 63)) as u64);
                }
                Scalar::Real(r) => {
                    out.push(REAL);
                    out.extend_from_slice(&r.to_le_bytes());
                }
                Scalar::Text(s) => {
                    out.push(TEXT);
                    put_text(out, s);
                }
            }
        }
        match changed {
            None => out.push(0),
            Some(cols) => {
                put_varint(out, cols.len() as u64 + 1);
                for &c in cols {
                    put_varint(out, c as u64);
                }
            }
        }
        self.count += 1;
    }
}

const NULL: u8 = 0;
const INTEGER: u8 = 1;
const REAL: u8 = 2;
const TEXT: u8 = 3;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

// The plan is written by this module only, so reading it back cannot fail on well-formed bytes;
// the readers still stop (rather than panic) if the bytes ended early.
fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn take_text<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let n = usize::try_from(take_varint(rest)?).ok()?;
    if rest.len() < n {
        return None;
    }
    let (text, tail) = rest.split_at(n);
    *rest = tail;
    // Written from a `&str`.
    std::str::from_utf8(text).ok()
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let rest = &mut self.rest;
        if rest.is_empty() {
            return None;
        }
        let id = take_text(rest)?;
        let n = take_varint(rest)? as usize;
        let mut values = Vec::with_capacity(n.min(256));
        for _ in 0..n {
            let col = take_varint(rest)? as usize;
            let (&tag, tail) = rest.split_first()?;
            *rest = tail;
            let v = match tag {
                NULL => Scalar::Null,
                INTEGER => {
                    let z = take_varint(rest)?;
                    Scalar::Integer(((z >> 1) as i64) ^ -((z & 1) as i64))
                }
                REAL => {
                    let (b, tail) = rest.split_first_chunk::<8>()?;
                    *rest = tail;
                    Scalar::Real(f64::from_le_bytes(*b))
                }
                _ => Scalar::Text(take_text(rest)?),
            };
            values.push((col, v));
        }
        let changed = match take_varint(rest)? {
            0 => None,
            n => {
                let n = n as usize - 1;
                let mut cols = Vec::with_capacity(n.min(256));
                for _ in 0..n {
                    cols.push(take_varint(rest)? as usize);
                }
                Some(cols)
            }
        };
        Some(Record {
            id,
            values,
            changed,
        })
    }
}

impl<'a> Iterator for Ids<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        take_text(&mut self.rest)
    }
}
