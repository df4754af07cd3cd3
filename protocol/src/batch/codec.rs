//! Encoding and decoding of batches (layout: `docs/wire-format.md`, "Batches").
//!
//! A batch is `OPB`, the format byte [`FORMAT`], the postcard-encoded clear header, the origin's
//! 64-byte signature (zeros when unsigned), then the body as sent: the postcard-encoded payload
//! header and the body, raw or raw DEFLATE. The clear header carries the length and SHA-256 of
//! the body as sent, so a relay checks a batch whole by hashing bytes, never inflating them.
//!
//! **Contract**: [`decode_header`], [`verify`] and [`decode`] accept any byte string and return a typed [`DecodeError`] for anything malformed; none panics and none
//! allocates more than [`decoded_budget`] of the input's length (64 MiB up to 1 MiB on the wire,
//! 64 bytes a wire byte above, never more than 256 MiB; `budget.rs` says how), checked before each
//! allocation. A relay checks what the header and the lengths show with [`check_limits`] (
//! [`decode_header`] and [`verify`] run it) without parsing the body; a body whose items would
//! exceed the budget is refused by [`decode`] with [`DecodeError::DecodedTooLarge`].
//! Encoding is deterministic: the same changes give the same bytes.
//!
//! **Sealed batches** (a key epoch in the clear header, [`crate::seal`]): the body as sent is
//! opaque here. [`decode_header`] and [`verify`] check the clear header, the length (at least a
//! nonce and a tag) and the hash, and return a header without payload fields, which is all a
//! relay needs; [`decode`] refuses them with [`DecodeError::Sealed`], and
//! [`crate::seal::decode_sealed`] opens them and decodes the opened body with this module's
//! checks and budget.

use super::body::{read_body, BodyWriter};
use super::signature::{signed_digest, SIGNATURE_LEN};
use super::{
    Batch, BatchFlags, BatchHeader, BatchMeta, Compression, Direction, TableChanges, TableSchema,
};
use crate::hlc::Hlc;
use crate::scope::ScopeColumn;
use crate::site::SiteId;
use crate::vector::SeqRange;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::body::write_value;
pub use super::budget::{
    decoded_budget, header_cost, DECODED_BYTES_PER_WIRE_BYTE, MAX_DECODED_BYTES, MAX_HEADER_BYTES,
    MIN_DECODED_BUDGET,
};
use super::budget::{Budget, INFLATER_COST};
pub use super::error::{BodyProblem, DecodeError, EncodeError, HeaderProblem};

/// The magic every batch starts with.
pub const MAGIC: [u8; 3] = *b"OPB";
/// The batch format this build writes and the only one it reads (format 1, unsigned and without a
/// clear header, was the first wave's: refused as "made by an older version").
pub const FORMAT: u8 = 2;
/// The most bytes a clear header takes (postcard, after the magic and format byte): its fixed
/// fields and a stream name of at most [`MAX_STREAM_LEN`] bytes fit well within it.
pub const MAX_CLEAR_BYTES: usize = 256;
/// The longest stream name (a scope id).
pub const MAX_STREAM_LEN: usize = 64;

/// The clear header as postcard writes it. Field order is the wire order: never reorder.
#[derive(Serialize, Deserialize)]
struct ClearWire {
    origin: SiteId,
    stream: String,
    range: SeqRange,
    flags: u8,
    key_epoch: u32,
    grant_version: u64,
    max_hlc: Hlc,
    sent_len: u32,
    sent_sha256: [u8; 32],
}

/// The payload header (the start of the body as sent). Field order is the wire order.
#[derive(Serialize, Deserialize)]
struct PayloadWire {
    base_hlc: Hlc,
    tables: Vec<TableSchema>,
    compression: Compression,
    body_len: u32,
}
/// The DEFLATE level used for [`Compression::Deflate`] (miniz scale 0-10).
pub const DEFLATE_LEVEL: u8 = 6;
/// DEFLATE cannot expand data by more than about 1032:1; a body claiming more is refused before
/// any allocation.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Limits a decoder enforces before allocating.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest encoded batch accepted.
    pub max_batch_bytes: usize,
    /// Largest uncompressed body accepted.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_bytes: 64 << 20,
            max_body_bytes: 256 << 20,
        }
    }
}

/// Encodes an unsigned batch (sign it with [`super::signature::sign`]). Computes `base_hlc`,
/// `max_hlc`, the lengths and the hash.
///
/// # Panics
/// When the changes do not fit `tables` (see [`EncodeError`]): that is a bug in the caller, and
/// writing such a batch would corrupt the changes. [`try_encode`] returns the error instead.
pub fn encode(
    origin: SiteId,
    range: SeqRange,
    tables: Vec<TableSchema>,
    changes: &[TableChanges],
    compression: Compression,
) -> Vec<u8> {
    match try_encode(origin, range, tables, changes, compression) {
        Ok(bytes) => bytes,
        Err(e) => panic!("batch::codec::encode: {e}"),
    }
}

/// Encodes an unsigned batch, or says why the changes do not fit their tables.
pub fn try_encode(
    origin: SiteId,
    range: SeqRange,
    tables: Vec<TableSchema>,
    changes: &[TableChanges],
    compression: Compression,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = BodyWriter::new(tables)?;
    for group in changes {
        if group.credit.is_some() {
            return Err(EncodeError::Credit);
        }
        w.begin_table(group.table)?;
        for row in &group.rows {
            w.push_row(row)?;
        }
    }
    finish_batch(w, origin, range, compression)
}

/// Encodes an unsigned transfer batch of `stream` (docs/design.md section 10, "Moves"): every
/// group names the site its cells are credited to (`TableChanges::credit`, required).
pub fn encode_transfer(
    origin: SiteId,
    stream: &str,
    range: SeqRange,
    tables: Vec<TableSchema>,
    changes: &[TableChanges],
    compression: Compression,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = BodyWriter::new_transfer(tables)?;
    for group in changes {
        w.begin_credited(group.table, group.credit.ok_or(EncodeError::Credit)?)?;
        for row in &group.rows {
            w.push_row(row)?;
        }
    }
    let meta = BatchMeta {
        stream: stream.into(),
        flags: BatchFlags {
            direction: Direction::Both,
            transfer: true,
        },
        ..BatchMeta::default()
    };
    finish_batch_with(w, origin, range, &meta, compression)
}

/// Turns a filled [`BodyWriter`] into a whole unsigned batch of the unscoped stream
/// ([`BatchMeta::default`]).
pub fn finish_batch(
    writer: BodyWriter,
    origin: SiteId,
    range: SeqRange,
    compression: Compression,
) -> Result<Vec<u8>, EncodeError> {
    finish_batch_with(writer, origin, range, &BatchMeta::default(), compression)
}

/// Turns a filled [`BodyWriter`] into a whole unsigned batch with the given clear-header fields.
pub fn finish_batch_with(
    writer: BodyWriter,
    origin: SiteId,
    range: SeqRange,
    meta: &BatchMeta,
    compression: Compression,
) -> Result<Vec<u8>, EncodeError> {
    if meta.stream.len() > MAX_STREAM_LEN {
        return Err(EncodeError::BadStream);
    }
    if meta.flags.transfer != writer.is_transfer() {
        return Err(EncodeError::TransferMismatch);
    }
    if meta.key_epoch != 0 {
        // A key epoch says the body is sealed; only `seal::seal_batch` makes it so.
        return Err(EncodeError::SealedMeta);
    }
    let max_hlc = writer.max_hlc();
    let (tables, body, base_hlc) = writer.into_parts();
    let body_len = u32::try_from(body.len()).map_err(|_| EncodeError::BodyTooLarge)?;
    let payload = PayloadWire {
        base_hlc,
        tables,
        compression,
        body_len,
    };
    // Serializing plain data into a growable vector cannot fail.
    let mut sent = postcard::to_allocvec(&payload).expect("postcard into a Vec");
    match compression {
        Compression::None => sent.extend_from_slice(&body),
        Compression::Deflate => {
            sent.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(&body, DEFLATE_LEVEL))
        }
    }
    let clear = ClearWire {
        origin,
        stream: meta.stream.clone(),
        range,
        flags: meta.flags.to_byte(),
        key_epoch: meta.key_epoch,
        grant_version: meta.grant_version,
        max_hlc,
        sent_len: u32::try_from(sent.len()).map_err(|_| EncodeError::BodyTooLarge)?,
        sent_sha256: Sha256::digest(&sent).into(),
    };
    let clear_bytes = postcard::to_allocvec(&clear).expect("postcard into a Vec");
    let mut out =
        Vec::with_capacity(MAGIC.len() + 1 + clear_bytes.len() + SIGNATURE_LEN + sent.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&clear_bytes);
    out.extend_from_slice(&[0u8; SIGNATURE_LEN]);
    out.extend_from_slice(&sent);
    Ok(out)
}

/// Writes a batch from a header exactly as given (lengths, hash, clocks and signature are not
/// computed or checked), followed by `wire_body` (the body as it goes on the wire: raw or
/// compressed). For tests and tools that craft batches a peer could send, valid or not.
pub fn assemble_raw(header: &BatchHeader, wire_body: &[u8]) -> Vec<u8> {
    assemble_with(header, wire_body, false)
}

/// Like [`assemble_raw`], but the clear header's `sent_len` and SHA-256 are computed from what
/// follows the signature, so the batch passes a relay's length and hash checks (its signature,
/// as given, then covers a different header unless the caller signs it again).
pub fn assemble(header: &BatchHeader, wire_body: &[u8]) -> Vec<u8> {
    assemble_with(header, wire_body, true)
}

fn assemble_with(header: &BatchHeader, wire_body: &[u8], fix_sent: bool) -> Vec<u8> {
    let payload = PayloadWire {
        base_hlc: header.base_hlc,
        tables: header.tables.clone(),
        compression: header.compression,
        body_len: header.body_len,
    };
    let mut sent = postcard::to_allocvec(&payload).expect("postcard into a Vec");
    sent.extend_from_slice(wire_body);
    let (sent_len, sent_sha256) = if fix_sent {
        (sent.len() as u32, Sha256::digest(&sent).into())
    } else {
        (header.sent_len, header.body_sha256)
    };
    let clear = ClearWire {
        origin: header.origin,
        stream: header.stream.clone(),
        range: header.range,
        flags: header.flags.to_byte(),
        key_epoch: header.key_epoch,
        grant_version: header.grant_version,
        max_hlc: header.max_hlc,
        sent_len,
        sent_sha256,
    };
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&postcard::to_allocvec(&clear).expect("postcard into a Vec"));
    out.extend_from_slice(&header.signature.unwrap_or([0; SIGNATURE_LEN]));
    out.extend_from_slice(&sent);
    out
}

/// Decodes the header only (routing: hub and mailbox never read bodies). Checks the magic, the
/// format, the header's consistency and, for a raw body, its exact length; it does **not** check
/// the hash (use [`verify`]). Also reads the withheld form of an `up` batch ([`withhold`]): its
/// header has [`BatchHeader::withheld`] set and no payload fields; and a sealed batch (key epoch
/// not 0), whose header has no payload fields either.
pub fn decode_header(bytes: &[u8], limits: &Limits) -> Result<BatchHeader, DecodeError> {
    if let Some(h) = withheld_header(bytes)? {
        return Ok(h);
    }
    split(bytes, limits).map(|(h, _, _)| h)
}

/// Rewrites an encoded batch's clear-header flags, for a writer that learns them only from the
/// batch's rows (the cloud: the direction follows the tenant's table settings). The clear header
/// keeps its length (flags are one byte); the signature slot is left as it is, so sign after.
/// A sealed batch is refused ([`DecodeError::Sealed`]): its body authenticates its flags, so
/// flags are set before sealing.
pub fn set_flags(bytes: &mut [u8], flags: BatchFlags) -> Result<(), DecodeError> {
    let prefix = MAGIC.len() + 1;
    let end = clear_header_end(bytes)?;
    let (mut clear, _) = take_bounded::<ClearWire>(bytes, prefix, MAX_CLEAR_BYTES)?;
    if clear.key_epoch != 0 {
        return Err(DecodeError::Sealed {
            epoch: clear.key_epoch,
        });
    }
    clear.flags = flags.to_byte();
    let again = postcard::to_allocvec(&clear)
        .map_err(|_| DecodeError::BadHeader(HeaderProblem::Malformed))?;
    if prefix + again.len() != end {
        return Err(DecodeError::BadHeader(HeaderProblem::Malformed));
    }
    bytes[prefix..end].copy_from_slice(&again);
    Ok(())
}

/// An `up` batch as a relay serves it to a device (docs/design.md section 10: `up` tables are
/// never served to devices): the signed clear header alone, which the device verifies and then
/// counts the range as covered. `None` when the batch is not an `up` batch (served whole).
pub fn withhold(bytes: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
    let end = clear_header_end(bytes)?;
    let (clear, _) = take_bounded::<ClearWire>(bytes, MAGIC.len() + 1, MAX_CLEAR_BYTES)?;
    let up = BatchFlags::from_byte(clear.flags).is_some_and(|f| f.direction == Direction::Up);
    Ok(up.then(|| bytes[..end + SIGNATURE_LEN].to_vec()))
}

/// The header of a withheld `up` batch: the bytes end right after the signature, the body it
/// signs is not empty, and the flags say `up` (any other batch cut there is truncated).
fn withheld_header(bytes: &[u8]) -> Result<Option<BatchHeader>, DecodeError> {
    let Ok(end) = clear_header_end(bytes) else {
        return Ok(None); // `split` names what is wrong
    };
    if bytes.len() != end + SIGNATURE_LEN {
        return Ok(None);
    }
    let (clear, _) = take_bounded::<ClearWire>(bytes, MAGIC.len() + 1, MAX_CLEAR_BYTES)?;
    let Some(flags) = BatchFlags::from_byte(clear.flags) else {
        return Err(DecodeError::BadHeader(HeaderProblem::BadFlags));
    };
    if flags.direction != Direction::Up || clear.sent_len == 0 {
        return Ok(None);
    }
    check_stream(&clear.stream)?;
    if SeqRange::new(clear.range.lo, clear.range.hi).is_none() {
        return Err(DecodeError::BadHeader(HeaderProblem::BadRange));
    }
    Ok(Some(BatchHeader {
        withheld: true,
        ..header_of(clear, flags, bytes, end)
    }))
}

/// A header from its clear part (`bytes` up to `clear_end`, then the signature slot), the
/// payload fields empty: [`split`] fills them from the payload header; a withheld batch has none.
fn header_of(clear: ClearWire, flags: BatchFlags, bytes: &[u8], clear_end: usize) -> BatchHeader {
    let mut sig = [0u8; SIGNATURE_LEN];
    sig.copy_from_slice(&bytes[clear_end..clear_end + SIGNATURE_LEN]);
    BatchHeader {
        origin: clear.origin,
        stream: clear.stream,
        range: clear.range,
        flags,
        key_epoch: clear.key_epoch,
        grant_version: clear.grant_version,
        max_hlc: clear.max_hlc,
        sent_len: clear.sent_len,
        body_sha256: clear.sent_sha256,
        signature: (sig != [0u8; SIGNATURE_LEN]).then_some(sig),
        signed_digest: signed_digest(&bytes[..clear_end]),
        base_hlc: Hlc::ZERO,
        tables: Vec::new(),
        compression: Compression::None,
        body_len: 0,
        withheld: false,
    }
}

/// The postcard bytes of `header`'s clear header with the given key epoch, `sent_len` and hash:
/// what a sealed batch's clear header is, and (with a zero length and hash) what its body's
/// authentication binds (`crate::seal`).
pub(crate) fn clear_header_bytes(
    header: &BatchHeader,
    key_epoch: u32,
    sent_len: u32,
    sent_sha256: [u8; 32],
) -> Vec<u8> {
    let clear = ClearWire {
        origin: header.origin,
        stream: header.stream.clone(),
        range: header.range,
        flags: header.flags.to_byte(),
        key_epoch,
        grant_version: header.grant_version,
        max_hlc: header.max_hlc,
        sent_len,
        sent_sha256,
    };
    postcard::to_allocvec(&clear).expect("postcard into a Vec")
}

/// Checks a whole batch without parsing rows: clear header, payload header, lengths, and the
/// SHA-256 of the body as sent. What a relay calls before storing a batch so it never relays an
/// altered one; nothing is inflated (the hash is over the bytes as sent). The signature is
/// checked separately, against the origin's key ([`super::signature::verify`]).
pub fn verify(bytes: &[u8], limits: &Limits) -> Result<BatchHeader, DecodeError> {
    let (header, sent_start, _) = split(bytes, limits)?;
    if Sha256::digest(&bytes[sent_start..]).as_slice() != header.body_sha256 {
        return Err(DecodeError::HashMismatch);
    }
    Ok(header)
}

/// Decodes and verifies a whole batch (hash, lengths, every value, both clock bounds).
/// A sealed batch is refused with [`DecodeError::Sealed`]: open it with
/// [`crate::seal::decode_sealed`].
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Batch, DecodeError> {
    let (header, sent_start, body_start) = split(bytes, limits)?;
    if header.key_epoch != 0 {
        return Err(DecodeError::Sealed {
            epoch: header.key_epoch,
        });
    }
    if Sha256::digest(&bytes[sent_start..]).as_slice() != header.body_sha256 {
        return Err(DecodeError::HashMismatch);
    }
    decode_body(header, &bytes[body_start..], bytes.len(), 0)
}

/// Decodes a sealed batch's opened body (`opened`, the body as sent once decrypted) under its
/// checked clear header (`clear`, from [`verify`]), with the budget of the sealed batch's
/// `wire_len` bytes less the opened body's own allocation: the same checks and the same budget
/// as [`decode`].
pub(crate) fn decode_opened(
    clear: BatchHeader,
    opened: &[u8],
    wire_len: usize,
    limits: &Limits,
) -> Result<Batch, DecodeError> {
    let (header, body_start) = read_payload(clear, opened, 0, wire_len, limits, opened.len())?;
    decode_body(header, &opened[body_start..], wire_len, opened.len())
}

/// Inflates and parses a body whose header is checked, charging every item to the budget of a
/// batch of `wire_len` bytes of which `spent` are already allocated.
fn decode_body(
    header: BatchHeader,
    wire_body: &[u8],
    wire_len: usize,
    spent: usize,
) -> Result<Batch, DecodeError> {
    let body = uncompressed_body(&header, wire_body)?;
    let mut budget = Budget::new(
        body_budget(&header, wire_len).saturating_sub(spent),
        decoded_budget(wire_len),
    );
    let read = read_body(&body, &header.tables, header.flags.transfer, &mut budget)?;
    if read.min_hlc != header.base_hlc {
        return Err(DecodeError::BaseHlcMismatch {
            declared: header.base_hlc,
            actual: read.min_hlc,
        });
    }
    if read.max_hlc != header.max_hlc {
        return Err(DecodeError::MaxHlcMismatch {
            declared: header.max_hlc,
            actual: read.max_hlc,
        });
    }
    Ok(Batch {
        header,
        tables: read.groups,
    })
}

/// Splits a batch into its checked header, where the body as sent starts (after the signature)
/// and where the body proper starts (after the payload header). A sealed batch's body as sent is
/// opaque: its header has no payload fields and both offsets are the same.
fn split(bytes: &[u8], limits: &Limits) -> Result<(BatchHeader, usize, usize), DecodeError> {
    let (header, sent_start) = split_clear(bytes, limits)?;
    if header.key_epoch != 0 {
        return Ok((header, sent_start, sent_start));
    }
    let (header, body_start) = read_payload(header, bytes, sent_start, bytes.len(), limits, 0)?;
    Ok((header, sent_start, body_start))
}

/// Checks a batch's clear part (magic, format, clear header, the length of the body as sent) and
/// returns its header without payload fields, and where the body as sent starts.
fn split_clear(bytes: &[u8], limits: &Limits) -> Result<(BatchHeader, usize), DecodeError> {
    if bytes.len() > limits.max_batch_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_batch_bytes,
        });
    }
    let prefix = MAGIC.len() + 1;
    if bytes.len() < prefix {
        // A prefix of the magic is a truncated batch; anything else is not a batch.
        return if MAGIC.starts_with(bytes) {
            Err(DecodeError::Truncated {
                expected: prefix,
                got: bytes.len(),
            })
        } else {
            Err(DecodeError::BadMagic)
        };
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[MAGIC.len()] != FORMAT {
        return Err(DecodeError::UnsupportedFormat {
            found: bytes[MAGIC.len()],
            supported: FORMAT,
        });
    }
    let (clear, clear_end) = take_bounded::<ClearWire>(bytes, prefix, MAX_CLEAR_BYTES)?;
    let sent_start = clear_end + SIGNATURE_LEN;
    if bytes.len() < sent_start {
        return Err(DecodeError::Truncated {
            expected: sent_start,
            got: bytes.len(),
        });
    }
    let Some(flags) = BatchFlags::from_byte(clear.flags) else {
        return Err(DecodeError::BadHeader(HeaderProblem::BadFlags));
    };
    check_stream(&clear.stream)?;
    let sent = bytes.len() - sent_start;
    if sent != clear.sent_len as usize {
        return Err(if sent < clear.sent_len as usize {
            DecodeError::Truncated {
                expected: sent_start + clear.sent_len as usize,
                got: bytes.len(),
            }
        } else {
            DecodeError::TrailingBytes {
                count: sent - clear.sent_len as usize,
            }
        });
    }
    if SeqRange::new(clear.range.lo, clear.range.hi).is_none() {
        return Err(DecodeError::BadHeader(HeaderProblem::BadRange));
    }
    if clear.key_epoch != 0 && (clear.sent_len as usize) < crate::seal::SEAL_OVERHEAD {
        return Err(DecodeError::BadHeader(HeaderProblem::SealedTooShort));
    }
    Ok((header_of(clear, flags, bytes, clear_end), sent_start))
}

/// Reads the payload header at `bytes[at..]` (the body as sent: the batch's own bytes, or a sealed
/// batch's opened body) into `clear`, and checks it and the body's length against it and against
/// the budget of a batch of `wire_len` bytes, of which `spent` are already allocated (an opened
/// body). Returns the whole header and where the body proper starts in `bytes`.
fn read_payload(
    clear: BatchHeader,
    bytes: &[u8],
    at: usize,
    wire_len: usize,
    limits: &Limits,
    spent: usize,
) -> Result<(BatchHeader, usize), DecodeError> {
    let (payload, body_start) = take_bounded::<PayloadWire>(bytes, at, MAX_HEADER_BYTES)?;
    let wire_body = &bytes[body_start..];
    let header = BatchHeader {
        base_hlc: payload.base_hlc,
        tables: payload.tables,
        compression: payload.compression,
        body_len: payload.body_len,
        ..clear
    };
    check_header(&header)?;
    if header.body_len as usize > limits.max_body_bytes {
        return Err(DecodeError::BodyTooLarge {
            declared: header.body_len,
            max: limits.max_body_bytes,
        });
    }
    match header.compression {
        Compression::None => {
            let want = header.body_len as usize;
            if wire_body.len() < want {
                return Err(DecodeError::Truncated {
                    expected: body_start + want,
                    got: bytes.len(),
                });
            }
            if wire_body.len() > want {
                return Err(DecodeError::TrailingBytes {
                    count: wire_body.len() - want,
                });
            }
        }
        Compression::Deflate => {
            if wire_body.is_empty() {
                return Err(DecodeError::Truncated {
                    expected: body_start + 1,
                    got: bytes.len(),
                });
            }
            if header.body_len as u64 > wire_body.len() as u64 * MAX_DEFLATE_RATIO + 1024 {
                return Err(DecodeError::BadHeader(HeaderProblem::ImplausibleBodyLength));
            }
        }
    }
    check_limits_spent(&header, wire_len, spent)?;
    Ok((header, body_start))
}

/// Where a batch's clear header ends (its signature slot follows), checking only what reading
/// the clear header needs.
pub(crate) fn clear_header_end(bytes: &[u8]) -> Result<usize, DecodeError> {
    let prefix = MAGIC.len() + 1;
    if bytes.len() < prefix || bytes[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[MAGIC.len()] != FORMAT {
        return Err(DecodeError::UnsupportedFormat {
            found: bytes[MAGIC.len()],
            supported: FORMAT,
        });
    }
    let (_, end) = take_bounded::<ClearWire>(bytes, prefix, MAX_CLEAR_BYTES)?;
    if bytes.len() < end + SIGNATURE_LEN {
        return Err(DecodeError::Truncated {
            expected: end + SIGNATURE_LEN,
            got: bytes.len(),
        });
    }
    Ok(end)
}

/// A stream name: at most [`MAX_STREAM_LEN`] bytes of a scope id's alphabet (`""`, the unscoped
/// stream, included).
pub fn valid_stream(stream: &str) -> bool {
    stream.len() <= MAX_STREAM_LEN && stream.bytes().all(stream_byte)
}

/// [`valid_stream`], as a decoding error.
fn check_stream(stream: &str) -> Result<(), DecodeError> {
    if !valid_stream(stream) {
        return Err(DecodeError::BadHeader(HeaderProblem::BadStream));
    }
    Ok(())
}

/// A stream name's bytes: a scope id's alphabet (`[A-Za-z0-9_.-]`).
fn stream_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Decodes one postcard value starting at `at`, reading at most `max` bytes of input (which
/// bounds what decoding it allocates); returns it and where it ended.
fn take_bounded<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    at: usize,
    max: usize,
) -> Result<(T, usize), DecodeError> {
    let input = &bytes[at..bytes.len().min(at + max)];
    let cut = input.len() < bytes.len() - at;
    let (value, rest) = postcard::take_from_bytes(input).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd if cut => {
            DecodeError::BadHeader(HeaderProblem::TooLong)
        }
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated {
            expected: bytes.len() + 1,
            got: bytes.len(),
        },
        _ => DecodeError::BadHeader(HeaderProblem::Malformed),
    })?;
    Ok((value, at + input.len() - rest.len()))
}

/// The cheap check every relay runs before storing a pushed batch (the mailbox's `verify` does):
/// from the header and the batch's length on the wire alone, without the body, refuses a batch
/// that cannot decode within [`decoded_budget`]`(wire_len)`: its decoded header
/// ([`header_cost`]), plus for a compressed body the inflated body and the inflater, must leave
/// room in the budget; a raw body's `body_len` must fit in the batch; a compressed one's must be
/// reachable by DEFLATE. A batch that passes can still be refused by [`decode`] when its rows
/// cost more than the room left ([`DecodeError::DecodedTooLarge`]): only parsing tells.
pub fn check_limits(header: &BatchHeader, wire_len: usize) -> Result<(), DecodeError> {
    check_limits_spent(header, wire_len, 0)
}

/// [`check_limits`] for a body of which `spent` bytes are already allocated (a sealed batch's
/// opened body).
fn check_limits_spent(
    header: &BatchHeader,
    wire_len: usize,
    spent: usize,
) -> Result<(), DecodeError> {
    let limit = decoded_budget(wire_len);
    let body_len = header.body_len as usize;
    let inflated = match header.compression {
        Compression::None if body_len > wire_len => {
            return Err(DecodeError::BadHeader(HeaderProblem::BodyLengthNotWire))
        }
        Compression::None => 0,
        Compression::Deflate if body_len as u64 > wire_len as u64 * MAX_DEFLATE_RATIO + 1024 => {
            return Err(DecodeError::BadHeader(HeaderProblem::ImplausibleBodyLength))
        }
        Compression::Deflate => body_len + INFLATER_COST,
    };
    if header_cost(header)
        .saturating_add(inflated)
        .saturating_add(spent)
        > limit
    {
        return Err(DecodeError::DecodedTooLarge { limit });
    }
    Ok(())
}

/// What is left of the budget for the body's items once the header and the inflated body are
/// paid for ([`check_limits`] made sure it is not negative).
fn body_budget(header: &BatchHeader, wire_len: usize) -> usize {
    let inflated = match header.compression {
        Compression::None => 0,
        Compression::Deflate => header.body_len as usize + INFLATER_COST,
    };
    decoded_budget(wire_len).saturating_sub(header_cost(header).saturating_add(inflated))
}

fn check_header(h: &BatchHeader) -> Result<(), DecodeError> {
    let bad = |p| Err(DecodeError::BadHeader(p));
    // The range is a clear-header field: `split_clear` checked it.
    if h.tables.len() > u16::MAX as usize + 1 {
        return bad(HeaderProblem::TooManyTables);
    }
    for t in &h.tables {
        let n = t.columns.len();
        if n > u16::MAX as usize {
            return bad(HeaderProblem::TooManyColumns);
        }
        let in_range_unique = |cols: &[u16]| {
            cols.iter()
                .enumerate()
                .all(|(i, &c)| (c as usize) < n && !cols[..i].contains(&c))
        };
        if !in_range_unique(&t.primary_key)
            || !t.foreign_keys.iter().all(|fk| in_range_unique(&fk.columns))
        {
            return bad(HeaderProblem::BadColumnIndex);
        }
        let scope_ok = match t.scope {
            None => true,
            Some(ScopeColumn::Column(c)) => (c as usize) < n && !t.primary_key.contains(&c),
            Some(ScopeColumn::Via(c)) => t.foreign_keys.iter().any(|fk| fk.columns == [c]),
        };
        if !scope_ok {
            return bad(HeaderProblem::BadScopeColumn);
        }
    }
    Ok(())
}

/// The uncompressed body, its length checked against the header.
fn uncompressed_body<'a>(
    header: &BatchHeader,
    wire_body: &'a [u8],
) -> Result<alloc::borrow::Cow<'a, [u8]>, DecodeError> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
    match header.compression {
        Compression::None => Ok(alloc::borrow::Cow::Borrowed(wire_body)),
        Compression::Deflate => {
            let declared = header.body_len;
            // Bounded by the decoding budget and the DEFLATE ratio (checked in `split`).
            let mut out = vec![0u8; declared as usize];
            let mut state = Box::<DecompressorOxide>::default();
            let (status, consumed, produced) = decompress(
                &mut state,
                wire_body,
                &mut out,
                0,
                inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
            );
            match status {
                TINFLStatus::Done if produced == out.len() => {}
                TINFLStatus::Done => {
                    return Err(DecodeError::BodyLengthMismatch {
                        declared,
                        actual: produced,
                    })
                }
                TINFLStatus::HasMoreOutput => {
                    return Err(DecodeError::BodyLengthMismatch {
                        declared,
                        actual: produced + 1,
                    })
                }
                _ => return Err(DecodeError::BadCompression),
            }
            if consumed != wire_body.len() {
                return Err(DecodeError::TrailingBytes {
                    count: wire_body.len() - consumed,
                });
            }
            Ok(alloc::borrow::Cow::Owned(out))
        }
    }
}
