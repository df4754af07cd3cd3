//! Canonical UUID text, which the wire packs into 16 bytes.
//!
//! Apps key rows by UUIDs written as 36-character text. Only the canonical form is packed:
//! exactly `8-4-4-4-12` **lowercase** hex digits. Anything else (uppercase, braces, no dashes)
//! stays text, so that decoding always restores the exact text that was written.

use alloc::string::String;

const DASHES: [usize; 4] = [8, 13, 18, 23];

/// The 16 bytes of `text` if it is canonical lowercase UUID text, else `None`.
pub fn parse_canonical(text: &str) -> Option<[u8; 16]> {
    let s = text.as_bytes();
    if s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibble = 0;
    for (i, &c) in s.iter().enumerate() {
        if DASHES.contains(&i) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        out[nibble / 2] |= if nibble % 2 == 0 { v << 4 } else { v };
        nibble += 1;
    }
    Some(out)
}

/// The canonical lowercase text of 16 UUID bytes. Written into a fixed buffer at fixed places:
/// the decoder calls this for every UUID on the wire, and pushing char by char cost about 480
/// instructions a call (callgrind, a first sync's apply), this about 170 besides the allocation.
pub fn format(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two digits go; the dashes are already in place.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; 36];
    for (b, &at) in bytes.iter().zip(AT.iter()) {
        out[at] = HEX[(b >> 4) as usize];
        out[at + 1] = HEX[(b & 0xf) as usize];
    }
    // Hex digits and dashes only: always UTF-8.
    core::str::from_utf8(&out)
        .map(String::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuid_text_round_trips_and_other_forms_stay_text() {
        let text = "0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4f5";
        let bytes = parse_canonical(text).unwrap();
        assert_eq!(bytes[0], 0x0f);
        assert_eq!(bytes[15], 0xf5);
        assert_eq!(format(&bytes), text);
        for other in [
            "0F1E2D3C-4B5A-4697-8879-A0B1C2D3E4F5",
            "0f1e2d3c4b5a46978879a0b1c2d3e4f5",
            "{0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4f}",
            "0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4fg",
            "0f1e2d3c-4b5a-4697-8879_a0b1c2d3e4f5",
            "0f1e2d3c-4b5a-4697-8879-a0b1c2d3e4f5 ",
            "",
        ] {
            assert_eq!(parse_canonical(other), None, "{other}");
        }
    }
}
