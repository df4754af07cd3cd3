//! The errors of the batch codec.

use crate::hlc::Hlc;
use core::fmt;

/// Why a batch could not be decoded. Offsets in body errors count bytes from the start of the
/// **uncompressed** body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The encoded batch is larger than [`Limits::max_batch_bytes`](super::codec::Limits).
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input does not start with the batch magic `OPB`: it is not a batch.
    BadMagic,
    /// The batch format byte names a format this build cannot read (a newer peer wrote it).
    UnsupportedFormat {
        /// The format byte found.
        found: u8,
        /// The newest format this build reads.
        supported: u8,
    },
    /// The header could not be decoded or is inconsistent.
    BadHeader(HeaderProblem),
    /// The uncompressed body declared by the header exceeds
    /// [`Limits::max_body_bytes`](super::codec::Limits).
    BodyTooLarge {
        /// The declared length.
        declared: u32,
        /// The limit.
        max: usize,
    },
    /// The input ended early.
    Truncated {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// Bytes follow the end of the batch.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The compressed body is not valid raw DEFLATE.
    BadCompression,
    /// The body's length differs from the header's `body_len`.
    BodyLengthMismatch {
        /// `body_len` from the header.
        declared: u32,
        /// The actual (uncompressed) length, or a lower bound when it is larger.
        actual: usize,
    },
    /// The body's SHA-256 differs from the header's `body_sha256`: the batch was altered.
    HashMismatch,
    /// The body is malformed at `offset`.
    BadBody {
        /// Where, in the uncompressed body.
        offset: usize,
        /// What is wrong.
        problem: BodyProblem,
    },
    /// Decoding the batch would allocate more than its budget
    /// ([`decoded_budget`](super::codec::decoded_budget) of its length on the wire): refused whole,
    /// before the allocation. A relay refuses such a batch when its header and lengths show it
    /// ([`check_limits`](super::codec::check_limits)); a receiver quarantines it.
    DecodedTooLarge {
        /// The budget, in bytes.
        limit: usize,
    },
    /// The clear header's `max_hlc` is not the largest clock in the body.
    MaxHlcMismatch {
        /// `max_hlc` from the clear header.
        declared: Hlc,
        /// The largest clock in the body (zero when it has no cells).
        actual: Hlc,
    },
    /// The batch is sealed (its clear header names a key epoch): only
    /// [`crate::seal::decode_sealed`], with the scope's key, reads its body.
    Sealed {
        /// The key epoch it is sealed under.
        epoch: u32,
    },
    /// The header's `base_hlc` is not the smallest clock in the body.
    BaseHlcMismatch {
        /// `base_hlc` from the header.
        declared: Hlc,
        /// The smallest clock in the body (zero when it has no cells).
        actual: Hlc,
    },
}

/// What is wrong with a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The postcard encoding is malformed (truncated, bad varint, bad enum tag, bad UTF-8).
    Malformed,
    /// The seq range is empty or starts at 0.
    BadRange,
    /// More tables than a `u16` index can name.
    TooManyTables,
    /// A table has more columns than a `u16` can number.
    TooManyColumns,
    /// A primary-key or foreign-key column index is out of range or repeated.
    BadColumnIndex,
    /// A compressed body claims an uncompressed length DEFLATE cannot reach from its size.
    ImplausibleBodyLength,
    /// The encoded header is longer than
    /// [`MAX_HEADER_BYTES`](super::codec::MAX_HEADER_BYTES).
    TooLong,
    /// A raw body's declared length is not the rest of the batch.
    BodyLengthNotWire,
    /// The flags byte has a direction of 3 or an unknown bit set.
    BadFlags,
    /// The stream name is longer than 64 bytes or has a byte outside `[A-Za-z0-9_.-]`.
    BadStream,
    /// A table's scope column is out of range or a key column, or its `via` column is not the
    /// one column of a foreign key.
    BadScopeColumn,
    /// A sealed batch's body is shorter than its nonce and tag
    /// ([`SEAL_OVERHEAD`](crate::seal::SEAL_OVERHEAD) bytes).
    SealedTooShort,
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderProblem::Malformed => "malformed encoding",
            HeaderProblem::BadRange => "seq range is empty or starts at 0",
            HeaderProblem::TooManyTables => "more than 65,536 tables",
            HeaderProblem::TooManyColumns => "a table has more than 65,535 columns",
            HeaderProblem::BadColumnIndex => "a key column index is out of range or repeated",
            HeaderProblem::ImplausibleBodyLength => {
                "compressed body is too short for the declared body_len"
            }
            HeaderProblem::TooLong => "longer than 1 MiB",
            HeaderProblem::BodyLengthNotWire => {
                "a raw body's body_len is not what follows the header"
            }
            HeaderProblem::BadFlags => "unknown flags (direction 3 or an unknown bit)",
            HeaderProblem::BadScopeColumn => {
                "a table's scope column is out of range or a key column, or its via column is \
                 not the one column of a foreign key"
            }
            HeaderProblem::BadStream => {
                "stream name longer than 64 bytes or outside [A-Za-z0-9_.-]"
            }
            HeaderProblem::SealedTooShort => {
                "a sealed body is shorter than its 12-byte nonce and 16-byte tag"
            }
        })
    }
}

/// What is wrong in a batch body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyProblem {
    /// The body ended inside an item.
    Truncated,
    /// A varint is wider than the integer it encodes.
    VarintOverflow,
    /// A count (groups, rows, cells, context entries, bytes) exceeds what the remaining body
    /// could hold.
    CountTooLarge,
    /// A table index names no table of the header.
    UnknownTable,
    /// Row flags use the reserved column-set form 3 or existence exceeds 64 bits.
    BadRowFlags,
    /// The UUID-key flag is set on a table whose key is not one column.
    UuidKeyOnCompositeKey,
    /// A cell names a value column the table does not have, or columns are not ascending.
    BadColumn,
    /// A clock is outside 48-bit milliseconds / 16-bit counter.
    BadClock,
    /// A value's type tag is 7 (reserved) or its header has bits its type forbids.
    BadValueType,
    /// Text is not valid UTF-8.
    InvalidUtf8,
    /// Bytes remain after the last table group.
    TrailingBytes,
}

impl fmt::Display for BodyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyProblem::Truncated => "body ends inside an item",
            BodyProblem::VarintOverflow => "varint too wide",
            BodyProblem::CountTooLarge => "count larger than the rest of the body can hold",
            BodyProblem::UnknownTable => "table index not in the header",
            BodyProblem::BadRowFlags => "reserved row flags",
            BodyProblem::UuidKeyOnCompositeKey => "UUID key flag on a multi-column key",
            BodyProblem::BadColumn => "unknown or out-of-order column",
            BodyProblem::BadClock => "clock out of range",
            BodyProblem::BadValueType => "reserved or malformed value type",
            BodyProblem::InvalidUtf8 => "text is not UTF-8",
            BodyProblem::TrailingBytes => "bytes after the last table group",
        })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, max } => {
                write!(f, "batch too large: {len} bytes, the limit is {max}")
            }
            DecodeError::BadMagic => f.write_str("not an Outpost batch: missing the `OPB` magic"),
            DecodeError::UnsupportedFormat { found, supported } if found < supported => write!(
                f,
                "batch format {found} was made by an older version of Outpost; this build reads \
                 format {supported} only: upgrade the peer that sent it"
            ),
            DecodeError::UnsupportedFormat { found, supported } => write!(
                f,
                "batch format {found} is newer than this build reads (up to {supported}): upgrade"
            ),
            DecodeError::BadHeader(p) => write!(f, "bad batch header: {p}"),
            DecodeError::BodyTooLarge { declared, max } => write!(
                f,
                "batch body too large: {declared} bytes declared, the limit is {max}"
            ),
            DecodeError::Truncated { expected, got } => {
                write!(f, "batch truncated: expected {expected} bytes, got {got}")
            }
            DecodeError::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the end of the batch")
            }
            DecodeError::BadCompression => f.write_str("batch body is not valid raw DEFLATE"),
            DecodeError::BodyLengthMismatch { declared, actual } => write!(
                f,
                "batch body is {actual} bytes but its header declares {declared}"
            ),
            DecodeError::HashMismatch => {
                f.write_str("batch body does not match its SHA-256: the batch was altered")
            }
            DecodeError::BadBody { offset, problem } => {
                write!(f, "bad batch body at byte {offset}: {problem}")
            }
            DecodeError::DecodedTooLarge { limit } => write!(
                f,
                "decoding this batch would take more than {limit} bytes of memory (the limit for \
                 its size on the wire): refused whole"
            ),
            DecodeError::Sealed { epoch } => write!(
                f,
                "batch is sealed under key epoch {epoch}: only a holder of its scope's key of that \
                 epoch can read its body"
            ),
            DecodeError::BaseHlcMismatch { declared, actual } => write!(
                f,
                "batch header base_hlc {declared} is not the smallest clock in the body ({actual})"
            ),
            DecodeError::MaxHlcMismatch { declared, actual } => write!(
                f,
                "batch header max_hlc {declared} is not the largest clock in the body ({actual})"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Why changes could not be encoded: they do not fit the table schemas given with them. These are
/// bugs in the caller; encoding refuses rather than writing a batch that would decode differently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A row was pushed before any table was begun.
    NoTable,
    /// A table index names no table of the schemas.
    UnknownTable {
        /// The index.
        table: u16,
        /// How many tables there are.
        tables: usize,
    },
    /// A row's key has the wrong number of values.
    KeyArity {
        /// Values given.
        got: usize,
        /// Primary-key columns of the table.
        expected: usize,
    },
    /// A cell names a value column the table does not have, or cells are not strictly ascending.
    BadColumn {
        /// The column number given.
        column: u16,
    },
    /// A cell's payload kind does not match its column's strategy.
    PayloadMismatch {
        /// The column number.
        column: u16,
    },
    /// The body would exceed 4 GiB (`body_len` is a `u32`).
    BodyTooLarge,
    /// A table schema has more than 65,535 columns.
    TooManyColumns,
    /// The stream name is longer than 64 bytes.
    BadStream,
    /// A group of a transfer batch was begun without the site its cells are credited to, or a
    /// group of another batch with one.
    Credit,
    /// The batch's `transfer` flag does not match the writer's kind
    /// ([`super::BodyWriter::new_transfer`] writes transfer batches only).
    TransferMismatch,
    /// A key epoch was given: the encoder writes unsealed batches, which
    /// [`crate::seal::seal_batch`] then seals.
    SealedMeta,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::NoTable => f.write_str("row pushed before begin_table"),
            EncodeError::UnknownTable { table, tables } => write!(
                f,
                "table index {table} out of range: the batch has {tables} tables"
            ),
            EncodeError::KeyArity { got, expected } => write!(
                f,
                "row key has {got} values, the table's primary key has {expected} columns"
            ),
            EncodeError::BadColumn { column } => write!(
                f,
                "cell column {column} is not a value column of the table or is out of order"
            ),
            EncodeError::PayloadMismatch { column } => write!(
                f,
                "cell column {column}: payload kind does not match the column's strategy"
            ),
            EncodeError::BodyTooLarge => f.write_str("batch body would exceed 4 GiB"),
            EncodeError::TooManyColumns => f.write_str("a table has more than 65,535 columns"),
            EncodeError::BadStream => f.write_str("stream name longer than 64 bytes"),
            EncodeError::Credit => f.write_str(
                "a transfer batch's groups name the site their cells are credited to; no other batch's do",
            ),
            EncodeError::TransferMismatch => {
                f.write_str("the transfer flag does not match the body writer's kind")
            }
            EncodeError::SealedMeta => f.write_str(
                "a batch is encoded unsealed (key epoch 0) and sealed afterwards with seal_batch",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}
