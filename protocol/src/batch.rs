//! Change batches: the unit every peer exports, stores, relays and applies.
//!
//! A batch holds the changes of **one origin** for one contiguous seq range, so routing needs only
//! the clear header: `(origin, range)`, the SHA-256 of the body as sent, and the origin's
//! signature over them ([`signature`]). The header also describes every table
//! the body touches (columns, declared types, key, foreign keys, strategies) so a schema-free hub
//! can route it and the cloud can create the tables. The body is grouped by table and row: the
//! primary key once per row, the row's causal length, and the changed cells. Every cell in a batch
//! was written by the origin (a database exports only its own writes; the writes it received keep
//! their own origin), and at the row's epoch, so neither is repeated per cell.
//!
//! The byte layout is specified in `docs/wire-format.md`; [`codec`] implements it.

use crate::hlc::Hlc;
use crate::merge::Strategy;
use crate::scope::{ScopeColumn, ScopeRule};
use crate::site::SiteId;
use crate::value::Value;
use crate::vector::{SeqRange, StreamId};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

mod body;
mod budget;
pub mod codec;
pub mod decl_type;
mod error;
pub mod names;
pub mod signature;

pub use body::BodyWriter;

/// The description of one table, as carried in a batch header.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table's name.
    pub name: String,
    /// Its columns, in declaration order; primary-key columns included.
    pub columns: Vec<ColumnSchema>,
    /// Indexes into `columns` of the primary key, in key order.
    pub primary_key: Vec<u16>,
    /// Its foreign keys (parents are applied before children).
    pub foreign_keys: Vec<ForeignKey>,
    /// Where its rows get their scope; `None` for an unscoped table (docs/design.md section
    /// 10).
    pub scope: Option<ScopeColumn>,
}

impl TableSchema {
    /// The scope rule by column name; `None` for an unscoped table or an index out of range
    /// (decoders refuse those).
    pub fn scope_rule(&self) -> Option<ScopeRule> {
        let name = |i: u16| self.columns.get(i as usize).map(|c| c.name.clone());
        match self.scope? {
            ScopeColumn::Column(i) => name(i).map(ScopeRule::Column),
            ScopeColumn::Via(i) => name(i).map(ScopeRule::Via),
        }
    }

    /// Indexes into `columns` of the non-key columns, in order: the cells a row change can carry,
    /// numbered 0.. in that order on the wire.
    pub fn value_columns(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.columns.len() as u16).filter(move |i| !self.primary_key.contains(i))
    }
}

/// One column of a [`TableSchema`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// The column's name.
    pub name: String,
    /// The declared type as written in `CREATE TABLE` (may be empty).
    pub decl_type: String,
    /// How it merges.
    pub strategy: Strategy,
    /// Declared `NOT NULL`.
    pub not_null: bool,
}

/// A foreign key of a [`TableSchema`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ForeignKey {
    /// Indexes into the child's columns.
    pub columns: Vec<u16>,
    /// The parent table's name.
    pub parent: String,
    /// The parent's columns by name (empty = the parent's primary key).
    pub parent_columns: Vec<String>,
}

/// How a batch body is compressed on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// Raw DEFLATE (RFC 1951).
    Deflate,
}

/// Which way the tables inside a batch travel (docs/design.md section 10): a batch holds tables
/// of one direction only, stated in its clear header so relays can check it without the body.
/// The variant order is the tag in control entries ([`crate::control::TableEntry`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub enum Direction {
    /// Written anywhere, served everywhere (flag bits 0).
    #[default]
    Both,
    /// Written by devices, never served to devices (flag bits 1).
    Up,
    /// Written by the cloud only (flag bits 2).
    Down,
}

/// The flags of a batch's clear header.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct BatchFlags {
    /// The direction of every table in the body.
    pub direction: Direction,
    /// A cloud-signed transfer of rows between scopes (cells credited to other sites).
    pub transfer: bool,
}

impl Direction {
    /// Its name in `outpost_track` options, commands and status (`both`, `up`, `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// Reads a name written by [`Direction::as_str`].
    pub fn parse(name: &str) -> Option<Direction> {
        match name {
            "both" => Some(Direction::Both),
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BatchFlags {
    /// The flags byte: bits 0-1 the direction, bit 2 `transfer`, the rest zero.
    pub fn to_byte(self) -> u8 {
        let d = match self.direction {
            Direction::Both => 0,
            Direction::Up => 1,
            Direction::Down => 2,
        };
        d | (self.transfer as u8) << 2
    }

    /// Reads a flags byte; `None` for a direction of 3 or any other bit set.
    pub fn from_byte(b: u8) -> Option<BatchFlags> {
        if b & !0b111 != 0 {
            return None;
        }
        let direction = match b & 0b11 {
            0 => Direction::Both,
            1 => Direction::Up,
            2 => Direction::Down,
            _ => return None,
        };
        Some(BatchFlags {
            direction,
            transfer: b & 0b100 != 0,
        })
    }
}

/// What a writer says about a batch besides its changes: the clear header's stream, flags, key
/// epoch and grant version. The default is what every batch of an unscoped, unsealed tenant
/// carries.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct BatchMeta {
    /// The stream (scope id); empty for the unscoped stream.
    pub stream: String,
    /// Direction and transfer flags.
    pub flags: BatchFlags,
    /// The sealing key's epoch; 0 = not sealed. Encoders accept 0 only: a batch is sealed after
    /// it is encoded ([`crate::seal::seal_batch`] sets it).
    pub key_epoch: u32,
    /// The version of the writer's grant the batch was written under (0 = no grants).
    pub grant_version: u64,
}

/// A batch header: everything routing and schema discovery need without reading the body.
///
/// On the wire (format 2, `docs/wire-format.md`) it is two parts. The **clear header** (origin,
/// stream, range, flags, key epoch, grant version, max HLC, the length and SHA-256 of the body as
/// sent) is what the origin signs and what every relay checks. The **payload header** (base HLC,
/// tables, compression, uncompressed length) opens the body as sent, so a sealed body hides the
/// schema too.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchHeader {
    /// The site that made every change in this batch, and signed it.
    pub origin: SiteId,
    /// The stream (scope id) the changes belong to; empty for the unscoped stream.
    pub stream: String,
    /// The origin's seqs this batch covers: every change of the origin in this range that is still
    /// current is in the body (a change overwritten later in the range is folded into the later one).
    pub range: SeqRange,
    /// Direction and transfer flags.
    pub flags: BatchFlags,
    /// The sealing key's epoch (0 = not sealed).
    pub key_epoch: u32,
    /// The grant version the batch was written under (0 = no grants).
    pub grant_version: u64,
    /// The largest cell clock in the body (zero when it has no cells); decoders check it, and the
    /// first relay refuses a push whose clocks run too far ahead of its trusted time.
    pub max_hlc: Hlc,
    /// Bytes of the body as sent: everything after the signature.
    pub sent_len: u32,
    /// SHA-256 of the body as sent (everything after the signature): the batch's identity in
    /// acks and in the mailbox.
    pub body_sha256: [u8; 32],
    /// The origin's ECDSA P-256 signature over the clear header (`r ‖ s`), `None` when unsigned
    /// (all zeros on the wire).
    pub signature: Option<[u8; 64]>,
    /// The digest the signature covers (computed when decoding or encoding; see
    /// [`signature`]).
    pub signed_digest: [u8; 32],
    /// The smallest cell clock in the body (zero when it has no cells); decoders check it. Body
    /// clocks are deltas from the previous row's, so a receiver learns the batch's time span from
    /// the header alone.
    pub base_hlc: Hlc,
    /// The tables the body touches; body rows name them by index.
    pub tables: Vec<TableSchema>,
    /// How the body is compressed.
    pub compression: Compression,
    /// The length of the uncompressed body in bytes (bounds decompression).
    pub body_len: u32,
    /// The body was withheld: an `up` batch served to a device as its signed clear header alone
    /// ([`codec::withhold`]), so the device covers the range without receiving what it may not
    /// hold. The payload fields are then empty.
    pub withheld: bool,
}

impl BatchHeader {
    /// The stream the batch's changes belong to: `(origin, stream)`.
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(self.origin, self.stream.as_str())
    }

    /// A header for tools and tests that craft batches with [`codec::assemble`]: the payload
    /// fields given, the unscoped stream, default flags, no signature, `max_hlc` equal to
    /// `base_hlc`; `sent_len` and the hash zero (`assemble` computes them).
    pub fn crafted(
        origin: SiteId,
        range: SeqRange,
        base_hlc: Hlc,
        tables: Vec<TableSchema>,
        compression: Compression,
        body_len: u32,
    ) -> BatchHeader {
        BatchHeader {
            origin,
            stream: String::new(),
            range,
            flags: BatchFlags::default(),
            key_epoch: 0,
            grant_version: 0,
            max_hlc: base_hlc,
            sent_len: 0,
            body_sha256: [0; 32],
            signature: None,
            signed_digest: [0; 32],
            base_hlc,
            tables,
            compression,
            body_len,
            withheld: false,
        }
    }
}

/// A decoded batch.
#[derive(Clone, PartialEq, Debug)]
pub struct Batch {
    /// The header.
    pub header: BatchHeader,
    /// The changes, grouped by table.
    pub tables: Vec<TableChanges>,
}

/// The row changes of one table.
#[derive(Clone, PartialEq, Debug)]
pub struct TableChanges {
    /// Index into [`BatchHeader::tables`].
    pub table: u16,
    /// The site the rows' cells are credited to: `None` for the batch's origin. Only a
    /// transfer batch (flag `transfer`, written by the cloud when a row changes scope) carries
    /// credits, one per group: it moves a row's whole merge state into the new scope's stream
    /// with every cell still credited to the site that wrote it (docs/design.md section 10,
    /// "Moves").
    pub credit: Option<SiteId>,
    /// The rows.
    pub rows: Vec<RowChange>,
}

/// The changes to one row.
#[derive(Clone, PartialEq, Debug)]
pub struct RowChange {
    /// The primary key values, in key order.
    pub key: Vec<Value>,
    /// The row's causal length as the origin knows it; the cells were written at this epoch.
    pub existence: u64,
    /// The changed cells, by value-column number, ascending.
    pub cells: Vec<CellChange>,
}

/// One changed cell.
#[derive(Clone, PartialEq, Debug)]
pub struct CellChange {
    /// The value-column number (position among [`TableSchema::value_columns`]).
    pub column: u16,
    /// The write's clock (its site is the batch origin, its epoch the row's existence).
    pub hlc: Hlc,
    /// What was written; its kind follows the column's strategy.
    pub payload: CellPayload,
}

/// What a cell change carries, by strategy.
#[derive(Clone, PartialEq, Debug)]
pub enum CellPayload {
    /// `lww` and `row_lww`: the new value.
    Value(Value),
    /// `counter`: the origin's whole contribution in this epoch (not a delta, so replays are
    /// harmless).
    Counter(i64),
    /// `review`: the value and the writes it supersedes.
    Review {
        /// The value written.
        value: Value,
        /// Per site, the highest clock the writer had seen on this cell.
        context: Vec<(SiteId, Hlc)>,
    },
}
