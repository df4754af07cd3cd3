//! Packed value lists: how row keys (and tombstone values) are stored in bookkeeping tables.
//!
//! A single canonical UUID text key, the common case, packs to 17 bytes (`0x01` + 16); anything
//! else is `0x02` then per value a tag and its bytes. The packing is injective (two different key
//! tuples never share bytes) and reversible, which is all the bookkeeping needs: it is a storage
//! form, never sent on the wire (the batch codec has its own).

use crate::arg::Arg;
use crate::error::Error;
use outpost_protocol::uuid_text;
use outpost_protocol::varint::{read_u64, write_u64};
use outpost_protocol::Value;

const UUID: u8 = 1;
const LIST: u8 = 2;

/// Packs a list of values.
pub(crate) fn pack(values: &[Value]) -> Vec<u8> {
    pack_args(values.iter().map(Arg::from), values.len())
}

/// Packs borrowed values (a SQL function's arguments), `n` of them.
pub(crate) fn pack_args<'a>(values: impl Iterator<Item = Arg<'a>> + Clone, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    pack_into(values, n, &mut out);
    out
}

/// Appends the packed form of `n` values to `out` (the apply packs a batch's keys into one
/// buffer rather than one allocation per row).
pub(crate) fn pack_into<'a>(
    values: impl Iterator<Item = Arg<'a>> + Clone,
    n: usize,
    out: &mut Vec<u8>,
) {
    if n == 1 {
        if let Some(Arg::Text(t)) = values.clone().next() {
            if let Some(packed) = pack_uuid(t.as_bytes()) {
                out.extend_from_slice(&packed);
                return;
            }
        }
    }
    out.push(LIST);
    for v in values {
        match v {
            Arg::Null => out.push(0),
            Arg::Integer(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Arg::Real(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Arg::Text(t) => {
                out.push(3);
                write_u64(out, t.len() as u64);
                out.extend_from_slice(t.as_bytes());
            }
            Arg::Blob(b) => {
                out.push(4);
                write_u64(out, b.len() as u64);
                out.extend_from_slice(b);
            }
        }
    }
}

/// Nibble value of a lowercase hex digit, 0xff for anything else.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Where the 16 hex digit pairs of canonical UUID text start.
const PAIRS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// The 17-byte packed form of canonical lowercase UUID text (`uuid_text::parse_canonical`'s
/// language, whose bytes format back to the same text), else `None`. Every tracked write calls
/// this through `outpost_pack`, so it is a table lookup per digit at fixed positions (the
/// compiler unrolls it, no bounds checks) rather than the generic parse plus a re-format check
/// (under callgrind: 1,650 instructions per call for the generic parse, 553 for a lookup loop
/// pushing to a `Vec`, about 150 now, allocation included).
fn pack_uuid(s: &[u8]) -> Option<[u8; 17]> {
    let s: &[u8; 36] = s.try_into().ok()?;
    if s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 17];
    out[0] = UUID;
    let mut bad = 0u8;
    for (o, &i) in out[1..].iter_mut().zip(PAIRS.iter()) {
        let (hi, lo) = (HEX_VALUE[s[i] as usize], HEX_VALUE[s[i + 1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// Unpacks what [`pack`] wrote.
pub(crate) fn unpack(bytes: &[u8]) -> Result<Vec<Value>, Error> {
    let bad = || {
        Error::Corrupt(format!(
            "packed key/values of {} bytes unreadable",
            bytes.len()
        ))
    };
    match bytes.first() {
        Some(&UUID) if bytes.len() == 17 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes[1..]);
            Ok(vec![Value::Text(uuid_text::format(&b))])
        }
        Some(&LIST) => {
            let mut out = Vec::new();
            let mut i = 1;
            while i < bytes.len() {
                let tag = bytes[i];
                i += 1;
                let v = match tag {
                    0 => Value::Null,
                    1 | 2 => {
                        let raw: [u8; 8] = bytes
                            .get(i..i + 8)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(bad)?;
                        i += 8;
                        let n = u64::from_be_bytes(raw);
                        if tag == 1 {
                            Value::Integer(n as i64)
                        } else {
                            Value::Real(f64::from_bits(n))
                        }
                    }
                    3 | 4 => {
                        let (len, used) = read_u64(&bytes[i..]).map_err(|_| bad())?;
                        i += used;
                        let end = i
                            .checked_add(len as usize)
                            .filter(|&e| e <= bytes.len())
                            .ok_or_else(bad)?;
                        let raw = bytes[i..end].to_vec();
                        i = end;
                        if tag == 3 {
                            Value::Text(String::from_utf8(raw).map_err(|_| bad())?)
                        } else {
                            Value::Blob(raw)
                        }
                    }
                    _ => return Err(bad()),
                };
                out.push(v);
            }
            Ok(out)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_uuids_pack_small() {
        let u = Value::Text("0f8fad5b-d9cb-469f-a165-70867728950e".into());
        assert_eq!(pack(std::slice::from_ref(&u)).len(), 17);
        for vals in [
            vec![u.clone()],
            vec![Value::Text("0F8FAD5B-D9CB-469F-A165-70867728950E".into())],
            vec![
                Value::Integer(-3),
                Value::Text("x".into()),
                Value::Null,
                Value::Real(1.5),
                Value::Blob(vec![1, 2]),
            ],
            vec![],
        ] {
            assert_eq!(unpack(&pack(&vals)).unwrap(), vals);
        }
        assert_ne!(pack(&[Value::Integer(1)]), pack(&[Value::Text("1".into())]));
    }

    /// The fast UUID path accepts exactly the texts the protocol's canonical parser accepts (and
    /// whose bytes format back to the same text), with the same bytes.
    #[test]
    fn fast_uuid_pack_agrees_with_the_canonical_parser() {
        let base = b"0f8fad5b-d9cb-469f-a165-70867728950e".to_vec();
        let mut texts = vec![
            base.clone(),
            base[..35].to_vec(),
            [&base[..], b"0"].concat(),
        ];
        // Every position replaced by every interesting byte.
        for i in 0..base.len() {
            for c in [
                b'-', b'0', b'9', b'a', b'f', b'g', b'A', b'F', b' ', b'/', b':', b'`',
            ] {
                let mut t = base.clone();
                t[i] = c;
                texts.push(t);
            }
        }
        for t in texts {
            let text = String::from_utf8(t).unwrap();
            let want = uuid_text::parse_canonical(&text)
                .filter(|b| uuid_text::format(b) == text)
                .map(|b| [&[UUID][..], &b[..]].concat());
            assert_eq!(
                pack_uuid(text.as_bytes()).map(|p| p.to_vec()),
                want,
                "{text}"
            );
        }
    }
}
