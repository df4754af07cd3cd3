//! How much memory decoding a batch may take, and the cost model that enforces it.
//!
//! A batch of `W` bytes on the wire may make a decoder allocate at most
//! [`decoded_budget`]`(W)` = min([`MAX_DECODED_BYTES`], max([`MIN_DECODED_BUDGET`],
//! [`DECODED_BYTES_PER_WIRE_BYTE`] · W)): 64 MiB for any batch up to 1 MiB, 64 bytes per wire byte
//! above, never more than 256 MiB. Without it a 261 KB batch of DEFLATE-compressed empty table
//! groups inflated to 256 MiB and decoded into 4 GiB of 32-byte structs (issue 16, finding 3).
//!
//! The budget is spent in three parts, each checked **before** the allocation it pays for:
//! - the decoded header, by a cost computed from the header itself ([`header_cost`]); decoding the
//!   header is bounded on its own, by [`MAX_HEADER_BYTES`] of input, to less than the 64 MiB floor;
//! - for a compressed body, the inflated body and the inflater's state;
//! - every item of the body as it is parsed (groups, rows, keys, cells, text, blobs, review
//!   contexts), at the fixed per-item costs below.
//!
//! The costs are fixed numbers, not `size_of` on the build at hand, so that every replica (64-bit
//! hub, cloud, 32-bit device) makes the same decision about the same batch; a compile-time check
//! holds each one at or above the real size, so the costs bound what the allocator is asked for.
//! What a relay can check without reading the body is [`check_limits`](super::codec::check_limits).

use super::error::DecodeError;
use super::TableSchema;
use super::{BatchHeader, CellChange, ColumnSchema, ForeignKey, RowChange, TableChanges};
use crate::hlc::Hlc;
use crate::site::SiteId;
use crate::value::Value;
use alloc::string::String;
use core::mem::size_of;

/// The most a decoder allocates for one batch, whatever its size: 256 MiB.
pub const MAX_DECODED_BYTES: usize = 256 << 20;
/// What any batch may allocate, however small it is on the wire: 64 MiB.
pub const MIN_DECODED_BUDGET: usize = 64 << 20;
/// Above the floor, the budget grows by this many bytes per byte on the wire.
pub const DECODED_BYTES_PER_WIRE_BYTE: usize = 64;
/// The largest encoded header (postcard bytes after the magic and format byte): 1 MiB. Decoding a
/// header allocates at most 48 bytes per input byte plus 4 MiB of preallocation (see the module
/// doc of `codec`), so this keeps the header alone under the 64 MiB floor.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// What decoding a batch of `wire_len` bytes may allocate (see the module doc).
pub fn decoded_budget(wire_len: usize) -> usize {
    wire_len
        .saturating_mul(DECODED_BYTES_PER_WIRE_BYTE)
        .clamp(MIN_DECODED_BUDGET, MAX_DECODED_BYTES)
}

/// Cost of a decoded table group ([`TableChanges`]).
pub(crate) const GROUP_COST: usize = 48;
/// Cost of a decoded row ([`RowChange`]) before its key and cells.
pub(crate) const ROW_COST: usize = 56;
/// Cost of a key value ([`Value`]) before its text or blob bytes.
pub(crate) const VALUE_COST: usize = 32;
/// Cost of a decoded cell ([`CellChange`]) before its value's bytes and review context.
pub(crate) const CELL_COST: usize = 72;
/// Cost of one review-context entry (`(SiteId, Hlc)`).
pub(crate) const CONTEXT_COST: usize = 24;
/// Cost of a UUID written as 16 bytes and decoded as its 36-character text.
pub(crate) const UUID_TEXT_COST: usize = 36;
/// Cost of the inflater's state (miniz's `DecompressorOxide`, about 11 KiB).
pub(crate) const INFLATER_COST: usize = 16 << 10;
/// Per table, the decoder's list of value-column strategies (a `Vec` header; one byte a column).
pub(crate) const STRATEGIES_COST: usize = 24;
/// Header items: a table, a column, a foreign key, a parent column name (a `String`).
const TABLE_COST: usize = 104;
const COLUMN_COST: usize = 56;
const FOREIGN_KEY_COST: usize = 72;
const NAME_COST: usize = 24;

// The costs bound the real sizes on this build (they are the sizes on 64-bit targets).
const _: () = {
    assert!(size_of::<TableChanges>() <= GROUP_COST);
    assert!(size_of::<RowChange>() <= ROW_COST);
    assert!(size_of::<Value>() <= VALUE_COST);
    assert!(size_of::<CellChange>() <= CELL_COST);
    assert!(size_of::<(SiteId, Hlc)>() <= CONTEXT_COST);
    assert!(size_of::<miniz_oxide::inflate::core::DecompressorOxide>() <= INFLATER_COST);
    assert!(size_of::<alloc::vec::Vec<u8>>() <= STRATEGIES_COST);
    assert!(size_of::<TableSchema>() <= TABLE_COST);
    assert!(size_of::<ColumnSchema>() <= COLUMN_COST);
    assert!(size_of::<ForeignKey>() <= FOREIGN_KEY_COST);
    assert!(size_of::<String>() <= NAME_COST);
};

/// What a decoded header holds in memory, by the fixed costs: twice the items' cost, since a
/// vector decoded from more than serde's 1 MiB preallocation grows by doubling. Deterministic and
/// cheap (one pass over the header, no allocation).
pub fn header_cost(h: &BatchHeader) -> usize {
    let mut items = h.tables.len() * TABLE_COST;
    for t in &h.tables {
        items += t.name.len() + t.columns.len() * COLUMN_COST + t.primary_key.len() * 2;
        for c in &t.columns {
            items += c.name.len() + c.decl_type.len();
        }
        items += t.foreign_keys.len() * FOREIGN_KEY_COST;
        for fk in &t.foreign_keys {
            items += fk.columns.len() * 2 + fk.parent.len() + fk.parent_columns.len() * NAME_COST;
            items += fk.parent_columns.iter().map(String::len).sum::<usize>();
        }
    }
    items.saturating_mul(2)
}

/// What the body parser may still allocate; every allocation is charged before it is made.
pub(crate) struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    /// A budget of `left` bytes for the body, out of `limit` for the whole batch.
    pub(crate) fn new(left: usize, limit: usize) -> Self {
        Budget { left, limit }
    }

    /// Takes `bytes` from the budget, or refuses the batch.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(DecodeError::DecodedTooLarge { limit: self.limit }),
        }
    }

    /// Takes `count` items of `cost` bytes each.
    pub(crate) fn charge_items(&mut self, count: usize, cost: usize) -> Result<(), DecodeError> {
        self.charge(count.saturating_mul(cost))
    }
}
