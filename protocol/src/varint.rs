//! LEB128 varints and zigzag, the integer encoding of the batch body (the same encoding postcard
//! uses for integers, so the header and the body read alike).
//!
//! An unsigned varint stores 7 bits per byte, least significant group first; the high bit of a
//! byte says another byte follows. A `u64` takes 1 to 10 bytes, a `u128` 1 to 19. Signed integers
//! are zigzag-mapped first (0, -1, 1, -2, … → 0, 1, 2, 3, …) so small magnitudes stay short.

use alloc::vec::Vec;

/// Appends `v` as an unsigned LEB128 varint.
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` as an unsigned LEB128 varint (up to 19 bytes).
pub fn write_u128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How many bytes [`write_u64`] emits for `v`.
pub const fn len_u64(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Maps a signed integer onto an unsigned one so that small magnitudes stay small.
pub const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub const fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Why a varint could not be read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// The varint encodes a value wider than the integer it is read into.
    Overflow,
}

/// Reads an unsigned varint of at most 64 bits from the start of `buf`; returns the value and the
/// number of bytes it took.
pub fn read_u64(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let (v, n) = read_u128_bits(buf, 64)?;
    Ok((v as u64, n))
}

/// Reads an unsigned varint of at most 128 bits from the start of `buf`.
pub fn read_u128(buf: &[u8]) -> Result<(u128, usize), VarintError> {
    read_u128_bits(buf, 128)
}

fn read_u128_bits(buf: &[u8], bits: u32) -> Result<(u128, usize), VarintError> {
    let mut out: u128 = 0;
    let max_len = bits.div_ceil(7) as usize;
    for (i, &byte) in buf.iter().enumerate().take(max_len) {
        let shift = 7 * i as u32;
        let group = (byte & 0x7f) as u128;
        // The last permitted byte may only carry the bits that remain.
        if shift + 7 > bits && group >> (bits - shift) != 0 {
            return Err(VarintError::Overflow);
        }
        out |= group << shift;
        if byte & 0x80 == 0 {
            return Ok((out, i + 1));
        }
    }
    if buf.len() >= max_len {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn varints_match_leb128_reference_bytes() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, bytes) in cases {
            let mut out = vec![];
            write_u64(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(len_u64(v), bytes.len());
            assert_eq!(read_u64(bytes), Ok((v, bytes.len())));
        }
    }

    #[test]
    fn oversized_and_truncated_varints_are_rejected() {
        assert_eq!(read_u64(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(read_u64(&[]), Err(VarintError::Truncated));
        assert_eq!(
            read_u64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(VarintError::Overflow)
        );
        assert_eq!(read_u64(&[0x80; 11]), Err(VarintError::Overflow));
        let mut out = vec![];
        write_u128(&mut out, u128::MAX);
        assert_eq!(out.len(), 19);
        assert_eq!(read_u128(&out), Ok((u128::MAX, 19)));
    }

    #[test]
    fn zigzag_keeps_small_magnitudes_small() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
