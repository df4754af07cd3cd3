//! Per-row merge state, as stored in `_outpost_rows.clocks`.
//!
//! One row of bookkeeping per tracked row (DESIGN section 4): its causal length, the local seq of
//! the existence change this database made (0 if none), and per value column the version of the
//! write it holds: `(epoch, hlc, site index, local seq)`; the local seq is 0 for writes received
//! from peers. Columns written by one write share a version, so the blob is run-length encoded: a
//! freshly inserted row costs one version whatever its width.

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::merge::CellVersion;
use outpost_protocol::varint::{read_u64, write_u64};
use outpost_protocol::{Hlc, SiteId, Stamp};

/// The version of one cell write, with the site as an index into `_outpost_sites` (0 = this
/// database) and the local seq when this database made the write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Version {
    pub epoch: u64,
    pub hlc: u64,
    pub site: u32,
    pub seq: u64,
}

impl Version {
    /// The protocol's version, for comparisons.
    pub(crate) fn cell_version(&self, sites: &[SiteId]) -> CellVersion {
        CellVersion {
            epoch: self.epoch,
            stamp: Stamp {
                hlc: Hlc::from_u64(self.hlc),
                site: sites.get(self.site as usize).copied().unwrap_or_default(),
            },
        }
    }
}

/// The merge state of one row.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct RowState {
    pub exist: u64,
    pub exist_seq: u64,
    pub cells: Vec<Option<Version>>,
}

impl RowState {
    /// The highest local seq this row holds (what export indexes by).
    pub(crate) fn max_seq(&self) -> u64 {
        self.cells
            .iter()
            .flatten()
            .map(|v| v.seq)
            .fold(self.exist_seq, u64::max)
    }

    /// The local seqs of this database's own writes the row holds: its existence's, then each
    /// cell's written here (site 0).
    pub(crate) fn own_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.exist_seq).chain(
            self.cells
                .iter()
                .flatten()
                .filter(|v| v.site == 0)
                .map(|v| v.seq),
        )
    }

    /// The cell slot of column `c`, growing the row when a column was added.
    pub(crate) fn cell_mut(&mut self, c: usize) -> &mut Option<Version> {
        if self.cells.len() <= c {
            self.cells.resize(c + 1, None);
        }
        &mut self.cells[c]
    }

    pub(crate) fn cell(&self, c: usize) -> Option<&Version> {
        self.cells.get(c).and_then(|v| v.as_ref())
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out` (the apply reuses one buffer for every row it writes).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        write_u64(out, self.cells.len() as u64);
        let mut i = 0;
        while i < self.cells.len() {
            let v = self.cells[i];
            let mut run = 1;
            while i + run < self.cells.len() && self.cells[i + run] == v {
                run += 1;
            }
            write_u64(out, run as u64);
            match v {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    write_u64(out, v.epoch);
                    write_u64(out, v.hlc);
                    write_u64(out, v.site as u64);
                    write_u64(out, v.seq);
                }
            }
            i += run;
        }
    }

    pub(crate) fn decode(exist: u64, exist_seq: u64, bytes: &[u8]) -> Result<RowState, Error> {
        let bad = || Error::Corrupt("row clocks unreadable".into());
        let mut pos = 0;
        let next = |pos: &mut usize| -> Result<u64, Error> {
            let (v, used) = read_u64(bytes.get(*pos..).ok_or_else(bad)?).map_err(|_| bad())?;
            *pos += used;
            Ok(v)
        };
        let n = next(&mut pos)? as usize;
        if n > 4096 {
            return Err(bad());
        }
        let mut cells = Vec::with_capacity(n);
        while cells.len() < n {
            let run = next(&mut pos)? as usize;
            let flag = *bytes.get(pos).ok_or_else(bad)?;
            pos += 1;
            let v = if flag == 1 {
                Some(Version {
                    epoch: next(&mut pos)?,
                    hlc: next(&mut pos)?,
                    site: u32::try_from(next(&mut pos)?).map_err(|_| bad())?,
                    seq: next(&mut pos)?,
                })
            } else {
                None
            };
            if run == 0 || cells.len() + run > n {
                return Err(bad());
            }
            cells.extend(std::iter::repeat_n(v, run));
        }
        Ok(RowState {
            exist,
            exist_seq,
            cells,
        })
    }
}

/// Which rows of some tables are known to have no state, without looking: the tables had no
/// state row when the apply looked (at its first batch, or again after a fold wrote state), and
/// every state row written for them since went through [`NewRows::note`]. A new device's first
/// sync then skips one `_outpost_rows` lookup per row.
///
/// Only the apply keeps one, and only while nothing else can write state: it is dropped when a
/// fold or a quarantine retry (which have their own stores) wrote any, and not kept while an
/// app's trigger could run SQL inside the apply (`apply/trigger_pause.rs`). Between calls the
/// connection's session keeps it while the database is provably untouched (`apply/carry.rs`), so
/// every call of a first sync skips the lookups, not only the first.
pub(crate) struct NewRows {
    tables: Vec<i64>,
    /// The (table, packed key) pairs given state: a false positive only costs a lookup.
    written: Seen,
}

impl NewRows {
    /// The tables among `tables` that have no state row now.
    pub(crate) fn detect(conn: Conn, tables: &[i64]) -> Result<NewRows, Error> {
        let mut empty = Vec::new();
        let mut any = conn.prepare("SELECT 1 FROM _outpost_rows WHERE tbl = ?1 LIMIT 1")?;
        for &t in tables {
            any.bind_i64(1, t)?;
            if !any.step()? {
                empty.push(t);
            }
            any.reset();
        }
        Ok(NewRows {
            tables: empty,
            written: Seen::default(),
        })
    }

    /// Whether it can answer anything without a lookup: some table had no state.
    pub(crate) fn saves_lookups(&self) -> bool {
        !self.tables.is_empty()
    }

    /// False only when the row certainly has no state.
    fn may_exist(&self, tbl: i64, key: &[u8]) -> bool {
        !self.tables.contains(&tbl) || self.written.contains(row_hash(tbl, key))
    }

    fn note(&mut self, tbl: i64, key: &[u8]) {
        if self.tables.contains(&tbl) {
            self.written.insert(row_hash(tbl, key));
        }
    }
}

/// A blocked Bloom filter of row hashes in a fixed 1 MiB: each hash sets 4 bits of one 64-bit
/// word, so a lookup reads one cache line. Fixed, so a first sync of any size stays within the
/// apply's memory budget: at 300k rows (the W4 workload) about 1 lookup in 1,000 is a false
/// positive (111 in 100,000 in the test below), at 3M rows about 1 in 3; a false positive is
/// one `_outpost_rows` query, never a wrong answer. Allocated at the first insert (most applies
/// note nothing).
#[derive(Default)]
struct Seen {
    words: Vec<u64>,
}

impl Seen {
    const WORDS: usize = 1 << 17;

    /// The word and the 4 bits of `hash`.
    fn slot(hash: u64) -> (usize, u64) {
        // splitmix64's finalizer spreads FNV's weak high bits over the whole word.
        let mut m = hash;
        m = (m ^ (m >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        m = (m ^ (m >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        m ^= m >> 31;
        let word = (m as usize) & (Self::WORDS - 1);
        let b = m >> 40;
        let bits = (1u64 << (b & 63))
            | (1u64 << ((b >> 6) & 63))
            | (1u64 << ((b >> 12) & 63))
            | (1u64 << ((b >> 18) & 63));
        (word, bits)
    }

    fn insert(&mut self, hash: u64) {
        if self.words.is_empty() {
            self.words = vec![0; Self::WORDS];
        }
        let (w, bits) = Self::slot(hash);
        self.words[w] |= bits;
    }

    fn contains(&self, hash: u64) -> bool {
        let (w, bits) = Self::slot(hash);
        self.words.get(w).is_some_and(|&x| x & bits == bits)
    }
}

/// FNV-1a over the table id and the packed key.
/// Eight key bytes at a time through splitmix64's finalizer (the apply hashes every row twice
/// during a first sync; byte-at-a-time FNV-1a cost about 4 instructions per byte).
fn row_hash(tbl: i64, key: &[u8]) -> u64 {
    fn mix(mut x: u64) -> u64 {
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    let mut h = mix(tbl as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix(h ^ u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    // The length tells "ab" from "ab\0".
    mix(h ^ u64::from_le_bytes(last) ^ ((key.len() as u64) << 56))
}

/// Reads and writes `_outpost_rows` with statements prepared once per call.
pub(crate) struct RowStore {
    get: crate::ffi::Stmt,
    put: crate::ffi::Stmt,
    /// The clocks blob being bound (SQLite copies it), reused across rows.
    clocks: Vec<u8>,
    /// Rows known to have no state (an apply's first sync), see [`NewRows`].
    pub new_rows: Option<NewRows>,
}

impl RowStore {
    pub(crate) fn new(conn: crate::ffi::Conn) -> Result<RowStore, Error> {
        Ok(RowStore {
            get: conn.prepare("SELECT exist, exist_seq, clocks FROM _outpost_rows WHERE tbl = ?1 AND key = ?2")?,
            put: conn.prepare(
                "INSERT OR REPLACE INTO _outpost_rows(tbl, key, exist, exist_seq, seq, clocks) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            clocks: Vec::new(),
            new_rows: None,
        })
    }

    /// The row's state; `None` when this database never saw the row.
    pub(crate) fn get(&mut self, tbl: i64, key: &[u8]) -> Result<Option<RowState>, Error> {
        if self
            .new_rows
            .as_ref()
            .is_some_and(|n| !n.may_exist(tbl, key))
        {
            return Ok(None);
        }
        self.get.bind_i64(1, tbl)?;
        self.get.bind_blob(2, key)?;
        let r = if self.get.step()? {
            Some(RowState::decode(
                self.get.i64(0) as u64,
                self.get.i64(1) as u64,
                &self.get.blob(2),
            )?)
        } else {
            None
        };
        self.get.reset();
        Ok(r)
    }

    pub(crate) fn put(&mut self, tbl: i64, key: &[u8], st: &RowState) -> Result<(), Error> {
        if let Some(n) = &mut self.new_rows {
            n.note(tbl, key);
        }
        self.put.bind_i64(1, tbl)?;
        self.put.bind_blob(2, key)?;
        self.put.bind_i64(3, st.exist as i64)?;
        self.put.bind_i64(4, st.exist_seq as i64)?;
        self.put.bind_i64(5, st.max_seq() as i64)?;
        self.clocks.clear();
        st.encode_into(&mut self.clocks);
        self.put.bind_blob(6, &self.clocks)?;
        self.put.run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_keeps_every_key_it_was_given_and_rejects_most_others() {
        let mut seen = Seen::default();
        assert!(
            !seen.contains(row_hash(1, b"a")),
            "an empty filter holds nothing"
        );
        let keys: Vec<u64> = (0..300_000u32)
            .map(|i| row_hash(1, &i.to_be_bytes()))
            .collect();
        for &k in &keys {
            seen.insert(k);
        }
        assert!(
            keys.iter().all(|&k| seen.contains(k)),
            "a key given was lost"
        );
        let false_positives = (300_000..400_000u32)
            .filter(|i| seen.contains(row_hash(1, &i.to_be_bytes())))
            .count();
        // 117 measured at this load (about 1 in 1,000, doc comment of `Seen`).
        assert!(false_positives < 300, "{false_positives} of 100,000");
    }

    #[test]
    fn uniform_rows_store_one_version() {
        let v = Version {
            epoch: 1,
            hlc: 1 << 40,
            site: 0,
            seq: 7,
        };
        let mut s = RowState {
            exist: 1,
            exist_seq: 7,
            cells: vec![Some(v); 8],
        };
        assert!(s.encode().len() < 16);
        *s.cell_mut(9) = Some(Version { seq: 9, ..v });
        assert_eq!(RowState::decode(1, 7, &s.encode()).unwrap(), s);
        assert_eq!(s.max_seq(), 9);
    }
}
