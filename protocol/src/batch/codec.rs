//! Encoding and decoding of batches (layout: `docs/wire-format.md`, "Batches").
//!
//! A batch is `OPB`, the format byte [`FORMAT`], the postcard-encoded [`BatchHeader`], then the
//! body, raw or raw DEFLATE. **Contract**: [`decode_header`], [`verify`] and [`decode`] accept any
//! byte string and return a typed [`DecodeError`] for anything malformed; none panics and none
//! allocates more than [`decoded_budget`] of the input's length (64 MiB up to 1 MiB on the wire,
//! 64 bytes a wire byte above, never more than 256 MiB; `budget.rs` says how), checked before each
//! allocation. A relay checks what the header and the lengths show with [`check_limits`] (
//! [`decode_header`] and [`verify`] run it) without parsing the body; a body whose items would
//! exceed the budget is refused by [`decode`] with [`DecodeError::DecodedTooLarge`].
//! Encoding is deterministic: the same changes give the same bytes.

use super::body::{read_body, BodyWriter};
use super::{Batch, BatchHeader, Compression, TableChanges, TableSchema};
use crate::site::SiteId;
use crate::vector::SeqRange;
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
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
/// The batch format this build writes and the newest it reads.
pub const FORMAT: u8 = 1;
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

/// Encodes a batch. Computes `base_hlc`, `body_len` and `body_sha256`.
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

/// Encodes a batch, or says why the changes do not fit their tables.
pub fn try_encode(
    origin: SiteId,
    range: SeqRange,
    tables: Vec<TableSchema>,
    changes: &[TableChanges],
    compression: Compression,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = BodyWriter::new(tables)?;
    for group in changes {
        w.begin_table(group.table)?;
        for row in &group.rows {
            w.push_row(row)?;
        }
    }
    finish_batch(w, origin, range, compression)
}

/// Turns a filled [`BodyWriter`] into a whole batch.
pub fn finish_batch(
    writer: BodyWriter,
    origin: SiteId,
    range: SeqRange,
    compression: Compression,
) -> Result<Vec<u8>, EncodeError> {
    let (tables, body, base_hlc) = writer.into_parts();
    let body_len = u32::try_from(body.len()).map_err(|_| EncodeError::BodyTooLarge)?;
    let header = BatchHeader {
        origin,
        range,
        base_hlc,
        tables,
        compression,
        body_len,
        body_sha256: Sha256::digest(&body).into(),
    };
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT);
    // Serializing plain data into a growable vector cannot fail.
    let header_bytes = postcard::to_allocvec(&header).expect("postcard into a Vec");
    out.extend_from_slice(&header_bytes);
    match compression {
        Compression::None => out.extend_from_slice(&body),
        Compression::Deflate => {
            out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(&body, DEFLATE_LEVEL))
        }
    }
    Ok(out)
}

/// Decodes the header only (routing: hub and mailbox never read bodies). Checks the magic, the
/// format, the header's consistency and, for a raw body, its exact length; it does **not** check
/// the hash (use [`verify`]).
pub fn decode_header(bytes: &[u8], limits: &Limits) -> Result<BatchHeader, DecodeError> {
    split(bytes, limits).map(|(h, _)| h)
}

/// Checks a whole batch without parsing rows: header, body length and SHA-256. What a mailbox
/// calls before storing a batch so it never relays an altered one. A compressed body is inflated
/// through a 32 KiB window and hashed as it comes, so a relay holds at most that much of it
/// (decoding needs the whole body; verifying does not).
pub fn verify(bytes: &[u8], limits: &Limits) -> Result<BatchHeader, DecodeError> {
    let (header, wire_body) = split(bytes, limits)?;
    let digest: [u8; 32] = match header.compression {
        Compression::None => Sha256::digest(wire_body).into(),
        Compression::Deflate => inflated_sha256(header.body_len, wire_body)?,
    };
    if digest != header.body_sha256 {
        return Err(DecodeError::HashMismatch);
    }
    Ok(header)
}

/// SHA-256 of a raw DEFLATE body, inflated through miniz's 32 KiB wrapping window; the same
/// length checks as [`uncompressed_body`].
fn inflated_sha256(declared: u32, wire_body: &[u8]) -> Result<[u8; 32], DecodeError> {
    use miniz_oxide::inflate::core::{decompress, DecompressorOxide, TINFL_LZ_DICT_SIZE};
    use miniz_oxide::inflate::TINFLStatus;
    let mut state = Box::<DecompressorOxide>::default();
    let mut window = vec![0u8; TINFL_LZ_DICT_SIZE];
    let mut hash = Sha256::new();
    let (mut consumed, mut produced, mut at) = (0usize, 0usize, 0usize);
    loop {
        let (status, used, wrote) =
            decompress(&mut state, &wire_body[consumed..], &mut window, at, 0);
        consumed += used;
        produced += wrote;
        if produced > declared as usize {
            return Err(DecodeError::BodyLengthMismatch {
                declared,
                actual: produced,
            });
        }
        hash.update(&window[at..at + wrote]);
        at = (at + wrote) & (TINFL_LZ_DICT_SIZE - 1);
        match status {
            TINFLStatus::Done => break,
            TINFLStatus::HasMoreOutput => {}
            _ => return Err(DecodeError::BadCompression),
        }
    }
    if produced != declared as usize {
        return Err(DecodeError::BodyLengthMismatch {
            declared,
            actual: produced,
        });
    }
    if consumed != wire_body.len() {
        return Err(DecodeError::TrailingBytes {
            count: wire_body.len() - consumed,
        });
    }
    Ok(hash.finalize().into())
}

/// Decodes and verifies a whole batch (hash, lengths, every value).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Batch, DecodeError> {
    let (header, wire_body) = split(bytes, limits)?;
    let body = uncompressed_body(&header, wire_body)?;
    if Sha256::digest(&body).as_slice() != header.body_sha256 {
        return Err(DecodeError::HashMismatch);
    }
    let mut budget = Budget::new(
        body_budget(&header, bytes.len()),
        decoded_budget(bytes.len()),
    );
    let (tables, min_hlc) = read_body(&body, &header.tables, &mut budget)?;
    if min_hlc != header.base_hlc {
        return Err(DecodeError::BaseHlcMismatch {
            declared: header.base_hlc,
            actual: min_hlc,
        });
    }
    Ok(Batch { header, tables })
}

/// Splits a batch into its checked header and the body as it is on the wire.
fn split<'a>(bytes: &'a [u8], limits: &Limits) -> Result<(BatchHeader, &'a [u8]), DecodeError> {
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
    // The header is read from at most MAX_HEADER_BYTES of input: that bounds what decoding it
    // allocates before its cost can be checked.
    let header_input = &bytes[prefix..bytes.len().min(prefix + MAX_HEADER_BYTES)];
    let cut = header_input.len() < bytes.len() - prefix;
    let (header, rest): (BatchHeader, &[u8]) =
        postcard::take_from_bytes(header_input).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd if cut => {
                DecodeError::BadHeader(HeaderProblem::TooLong)
            }
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated {
                expected: bytes.len() + 1,
                got: bytes.len(),
            },
            _ => DecodeError::BadHeader(HeaderProblem::Malformed),
        })?;
    let header_end = prefix + header_input.len() - rest.len();
    let wire_body = &bytes[header_end..];
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
                    expected: header_end + want,
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
                    expected: header_end + 1,
                    got: bytes.len(),
                });
            }
            if header.body_len as u64 > wire_body.len() as u64 * MAX_DEFLATE_RATIO + 1024 {
                return Err(DecodeError::BadHeader(HeaderProblem::ImplausibleBodyLength));
            }
        }
    }
    check_limits(&header, bytes.len())?;
    Ok((header, wire_body))
}

/// The cheap check every relay runs before storing a pushed batch (the mailbox's `verify` does):
/// from the header and the batch's length on the wire alone, without the body, refuses a batch
/// that cannot decode within [`decoded_budget`]`(wire_len)`: its decoded header
/// ([`header_cost`]), plus for a compressed body the inflated body and the inflater, must leave
/// room in the budget; a raw body's `body_len` must fit in the batch; a compressed one's must be
/// reachable by DEFLATE. A batch that passes can still be refused by [`decode`] when its rows
/// cost more than the room left ([`DecodeError::DecodedTooLarge`]): only parsing tells.
pub fn check_limits(header: &BatchHeader, wire_len: usize) -> Result<(), DecodeError> {
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
    if header_cost(header).saturating_add(inflated) > limit {
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
    if SeqRange::new(h.range.lo, h.range.hi).is_none() {
        return bad(HeaderProblem::BadRange);
    }
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
