//! A row's merge state: its causal length and, per value column, the version of the write the
//! store holds. Versions are kept whole (site id, not an index into a table of sites) so a store
//! needs no second table to read them; [`RowState::encode`] packs them as the engine packs its
//! own (`sqlite-ext/src/state.rs`): columns written by one write share a version, so a run of
//! equal versions is stored once and a freshly inserted row costs one version whatever its width.

use outpost_protocol::merge::CellVersion;
use outpost_protocol::varint::{read_u64, write_u64};
use outpost_protocol::{Hlc, SiteId, Stamp};
use std::fmt;

/// The merge state of one row.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RowState {
    /// Its causal length: odd alive, even deleted, 0 never seen.
    pub exist: u64,
    /// Per value column (the store's numbering), the version of the write held.
    pub cells: Vec<Option<CellVersion>>,
}

/// Stored row state that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorruptRowState {
    /// Where decoding stopped, in bytes.
    pub at: usize,
}

impl fmt::Display for CorruptRowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a row's stored cell versions are unreadable (stopped at byte {})",
            self.at
        )
    }
}

impl std::error::Error for CorruptRowState {}

impl RowState {
    /// The version held for column `c`.
    pub fn cell(&self, c: usize) -> Option<&CellVersion> {
        self.cells.get(c).and_then(|v| v.as_ref())
    }

    /// The slot of column `c`, growing the row when the table gained columns.
    pub fn cell_mut(&mut self, c: usize) -> &mut Option<CellVersion> {
        if self.cells.len() <= c {
            self.cells.resize(c + 1, None);
        }
        &mut self.cells[c]
    }

    /// The cell versions, run-length encoded (the causal length is stored beside them).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        write_u64(&mut out, self.cells.len() as u64);
        let mut i = 0;
        while i < self.cells.len() {
            let v = self.cells[i];
            let mut run = 1;
            while i + run < self.cells.len() && self.cells[i + run] == v {
                run += 1;
            }
            write_u64(&mut out, run as u64);
            match v {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    write_u64(&mut out, v.epoch);
                    write_u64(&mut out, v.stamp.hlc.as_u64());
                    out.extend_from_slice(&v.stamp.site.0);
                }
            }
            i += run;
        }
        out
    }

    /// The state of a row with causal length `exist` and encoded versions `bytes`.
    pub fn decode(exist: u64, bytes: &[u8]) -> Result<RowState, CorruptRowState> {
        let mut pos = 0;
        let varint = |pos: &mut usize| -> Result<u64, CorruptRowState> {
            let rest = bytes.get(*pos..).ok_or(CorruptRowState { at: *pos })?;
            let (v, used) = read_u64(rest).map_err(|_| CorruptRowState { at: *pos })?;
            *pos += used;
            Ok(v)
        };
        let n = varint(&mut pos)? as usize;
        // A count larger than the bytes could hold is damage, not a reason to allocate.
        if n > bytes.len().saturating_mul(1 << 16) {
            return Err(CorruptRowState { at: 0 });
        }
        let mut cells = Vec::with_capacity(n.min(bytes.len()));
        while cells.len() < n {
            let run = varint(&mut pos)? as usize;
            if run == 0 || cells.len() + run > n {
                return Err(CorruptRowState { at: pos });
            }
            let tag = *bytes.get(pos).ok_or(CorruptRowState { at: pos })?;
            pos += 1;
            let v = match tag {
                0 => None,
                1 => {
                    let epoch = varint(&mut pos)?;
                    let hlc = Hlc::from_u64(varint(&mut pos)?);
                    let site = bytes
                        .get(pos..pos + 16)
                        .and_then(SiteId::from_slice)
                        .ok_or(CorruptRowState { at: pos })?;
                    pos += 16;
                    Some(CellVersion {
                        epoch,
                        stamp: Stamp { hlc, site },
                    })
                }
                _ => return Err(CorruptRowState { at: pos - 1 }),
            };
            cells.extend(std::iter::repeat_n(v, run));
        }
        if pos != bytes.len() {
            return Err(CorruptRowState { at: pos });
        }
        Ok(RowState { exist, cells })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(epoch: u64, hlc: u64, site: u8) -> Option<CellVersion> {
        Some(CellVersion {
            epoch,
            stamp: Stamp {
                hlc: Hlc::from_u64(hlc),
                site: SiteId([site; 16]),
            },
        })
    }

    #[test]
    fn versions_round_trip_and_a_run_is_stored_once() {
        let st = RowState {
            exist: 3,
            cells: vec![version(3, 9, 1), version(3, 9, 1), None, version(1, 4, 2)],
        };
        let bytes = st.encode();
        assert_eq!(RowState::decode(3, &bytes), Ok(st.clone()));
        let wide = RowState {
            exist: 1,
            cells: vec![version(1, 9, 1); 40],
        };
        assert!(wide.encode().len() < 25, "one run for forty columns");
    }

    #[test]
    fn damaged_versions_are_refused_not_misread() {
        let st = RowState {
            exist: 1,
            cells: vec![version(1, 9, 1), None],
        };
        let bytes = st.encode();
        for cut in 0..bytes.len() {
            assert!(RowState::decode(1, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RowState::decode(1, &longer).is_err());
    }
}
