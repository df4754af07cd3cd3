//! The enrollment code: what a device needs to enroll with a hub (or the cloud), as one line of
//! text. The hub prints it (`outpost-hub enroll-code`); the device reads it (`outpost_enroll`).
//!
//! ```text
//! outpost:<base64url, no padding>(bytes)
//! bytes = format version (1 byte, = 2) ‖ postcard(EnrollCode body) ‖ SHA-256(previous bytes)[..4]
//! ```
//! The body carries the peer's full static public key (65-byte uncompressed SEC1: the device pins
//! it, so a rogue hub cannot complete a handshake), its site id, the addresses to try (`host:port`,
//! in order), the one-time token (the 32-byte pre-shared key of the `IKpsk2` enrollment
//! handshake), its expiry (unix seconds, so a device can say "expired" offline), and (format 2)
//! the cloud's site and key when the peer relays to a cloud, so a device enrolled at a hub can
//! verify what the cloud signs.
//!
//! **Contract.** [`EnrollCode::decode`] accepts any text and returns a typed [`CodeError`]: a
//! missing prefix, a character outside base64url, a truncated code, a checksum mismatch (any
//! single changed character is caught), a newer format, a body that does not decode, has bytes
//! left over, or holds a key that is not a valid P-256 point. The format is byte-identical to the
//! one `appliance/src/enroll.rs` wrote first (checked against the real binary's output in
//! `tests/tests/hub_sessions.rs`).

use crate::handshake::{PublicKey, PUBLIC_KEY_LEN};
use crate::site::SiteId;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of every code.
pub const PREFIX: &str = "outpost:";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 2;
/// Bytes of SHA-256 appended as a checksum.
pub const CHECKSUM_LEN: usize = 4;

/// What an enrollment code carries. Field order is the wire order (postcard): never reorder.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollCode {
    /// The peer's static public key, uncompressed SEC1 (65 bytes).
    pub hub_key: Vec<u8>,
    /// The peer's site id.
    pub hub_site: SiteId,
    /// Where to reach the peer, `host:port`, most likely first.
    pub addresses: Vec<String>,
    /// The one-time token: the pre-shared key of the enrollment handshake.
    pub token: [u8; 32],
    /// Unix seconds after which the peer refuses the token.
    pub expires_at: u64,
    /// The cloud the peer relays to, when there is one (format 2): a device enrolled at a hub
    /// trusts the cloud's key directory entries and changes with this key (docs/security.md).
    pub cloud: Option<CloudAnchor>,
}

/// The cloud's site and key, as an enrollment code carries them.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CloudAnchor {
    /// The cloud's site id.
    pub site: SiteId,
    /// Its static public key, uncompressed SEC1 (65 bytes).
    pub key: Vec<u8>,
}

impl fmt::Debug for EnrollCode {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollCode")
            .field("hub_key", &key_fingerprint(&self.hub_key))
            .field("hub_site", &self.hub_site)
            .field("addresses", &self.addresses)
            .field("expires_at", &self.expires_at)
            .field("cloud", &self.cloud.as_ref().map(|c| c.site))
            .finish_non_exhaustive()
    }
}

/// First 8 bytes of SHA-256 of a key's bytes, hex: the fingerprint shown in logs and status
/// (the same as [`PublicKey::fingerprint`] for a valid key).
pub fn key_fingerprint(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a code could not be read. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CodeError {
    /// It does not start with `outpost:`.
    Prefix,
    /// A character outside base64url.
    Character {
        /// Its position after the prefix.
        at: usize,
    },
    /// Shorter than the smallest possible code, or cut inside a character group.
    Truncated,
    /// The checksum does not match: mistyped or cut.
    Checksum,
    /// Written by another format (an older one: by the first wave; a newer one: update).
    Version {
        /// The version found.
        found: u8,
    },
    /// The body does not decode, or has bytes left over, or a key of the wrong length.
    Body,
    /// The key is not a valid P-256 public key.
    Key,
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeError::Prefix => f.write_str("an enrollment code starts with \"outpost:\""),
            CodeError::Character { at } => write!(
                f,
                "enrollment code has an invalid character at position {at}; copy it again"
            ),
            CodeError::Truncated => f.write_str("enrollment code is too short; copy it again"),
            CodeError::Checksum => {
                f.write_str("enrollment code checksum does not match: it was mistyped or cut")
            }
            CodeError::Version { found } if *found < FORMAT_VERSION => write!(
                f,
                "enrollment code format {found} was made by an older version of Outpost; ask \
                 for a new code"
            ),
            CodeError::Version { found } => write!(
                f,
                "enrollment code format {found} is newer than this build ({FORMAT_VERSION}); \
                 update outpost"
            ),
            CodeError::Body => f.write_str("enrollment code content is malformed"),
            CodeError::Key => {
                f.write_str("enrollment code holds an invalid public key; ask for a new code")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodeError {}

impl EnrollCode {
    /// The code as one line of text.
    pub fn encode(&self) -> String {
        let mut bytes = vec![FORMAT_VERSION];
        // Plain data into a growable vector: postcard cannot fail.
        bytes.extend(postcard::to_allocvec(self).expect("postcard encodes plain structs"));
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        let mut out = String::from(PREFIX);
        base64url_encode_into(&bytes, &mut out);
        out
    }

    /// Reads a code (surrounding whitespace ignored).
    pub fn decode(text: &str) -> Result<EnrollCode, CodeError> {
        let rest = text.trim().strip_prefix(PREFIX).ok_or(CodeError::Prefix)?;
        let bytes = base64url_decode(rest)?;
        if bytes.len() < 1 + CHECKSUM_LEN + 1 {
            return Err(CodeError::Truncated);
        }
        let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(content)[..CHECKSUM_LEN] != *sum {
            return Err(CodeError::Checksum);
        }
        if content[0] != FORMAT_VERSION {
            return Err(CodeError::Version { found: content[0] });
        }
        let (code, left): (EnrollCode, _) =
            postcard::take_from_bytes(&content[1..]).map_err(|_| CodeError::Body)?;
        if !left.is_empty() || code.hub_key.len() != PUBLIC_KEY_LEN {
            return Err(CodeError::Body);
        }
        if let Some(c) = &code.cloud {
            PublicKey::from_sec1(&c.key).map_err(|_| CodeError::Key)?;
        }
        Ok(code)
    }

    /// The pinned key, checked to be a point on P-256.
    pub fn public_key(&self) -> Result<PublicKey, CodeError> {
        PublicKey::from_sec1(&self.hub_key).map_err(|_| CodeError::Key)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 section 5 (URL- and filename-safe alphabet), no padding.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    base64url_encode_into(bytes, &mut out);
    out
}

fn base64url_encode_into(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
}

/// Decodes unpadded base64url; leftover bits must be zero (one encoding per byte string).
pub fn base64url_decode(text: &str) -> Result<Vec<u8>, CodeError> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for (at, c) in text.bytes().enumerate() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or(CodeError::Character { at })? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A leftover of 6 bits cannot come from whole bytes; leftover bits must be zero.
    if bits >= 6 || acc != 0 {
        return Err(CodeError::Truncated);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    fn sample() -> EnrollCode {
        let mut hub_key = vec![0x04];
        hub_key.extend((1..=64).map(|i| i as u8));
        EnrollCode {
            hub_key,
            hub_site: SiteId([0x5a; 16]),
            addresses: vec!["192.168.1.20:7420".into(), "10.0.0.2:7420".into()],
            token: [0x77; 32],
            expires_at: 1_800_000_900,
            cloud: None,
        }
    }

    /// The sample's bytes, written out: version, postcard body (length-prefixed key, the site's
    /// 16 bytes, two length-prefixed strings, the token, the varint expiry), checksum.
    #[test]
    fn the_sample_code_has_the_documented_bytes() {
        let text = sample().encode();
        let bytes = base64url_decode(&text[PREFIX.len()..]).unwrap();
        let mut want = vec![2u8, 65];
        want.extend_from_slice(&sample().hub_key);
        want.extend_from_slice(&[0x5a; 16]);
        want.push(2);
        want.push(17);
        want.extend_from_slice(b"192.168.1.20:7420");
        want.push(13);
        want.extend_from_slice(b"10.0.0.2:7420");
        want.extend_from_slice(&[0x77; 32]);
        // 1_800_000_900 as a LEB128 varint.
        want.extend_from_slice(&[0x84, 0xab, 0xa7, 0xda, 0x06]);
        // No cloud.
        want.push(0);
        let sum = Sha256::digest(&want);
        want.extend_from_slice(&sum[..4]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn base64url_matches_rfc4648_vectors_without_padding() {
        // RFC 4648 section 10, padding removed.
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url_encode(plain.as_bytes()), enc);
            assert_eq!(base64url_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode("Z"), Err(CodeError::Truncated));
        assert_eq!(base64url_decode("Zh"), Err(CodeError::Truncated));
    }

    #[test]
    fn a_code_round_trips_and_is_one_compact_line() {
        let code = sample();
        let text = code.encode();
        assert!(text.starts_with("outpost:"));
        assert!(!text.contains(char::is_whitespace));
        assert!(text.len() < 220, "{} characters", text.len());
        assert_eq!(EnrollCode::decode(&text).unwrap(), code);
        assert_eq!(EnrollCode::decode(&format!("  {text}\n")).unwrap(), code);
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let text = sample().encode();
        for i in PREFIX.len()..text.len() {
            let mut b = text.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(b).unwrap();
            assert!(
                EnrollCode::decode(&changed).is_err(),
                "change at {i} accepted"
            );
        }
    }

    #[test]
    fn damaged_codes_get_the_error_that_says_why() {
        let text = sample().encode();
        assert_eq!(EnrollCode::decode("hello"), Err(CodeError::Prefix));
        assert_eq!(
            EnrollCode::decode("outpost:ab$d"),
            Err(CodeError::Character { at: 2 })
        );
        assert!(EnrollCode::decode(&text[..text.len() - 8]).is_err());
        assert_eq!(
            EnrollCode::decode("outpost:AAAA"),
            Err(CodeError::Truncated)
        );
        let mut bytes = vec![3u8, 0, 0];
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..4]);
        let future = format!("{PREFIX}{}", base64url_encode(&bytes));
        assert_eq!(
            EnrollCode::decode(&future),
            Err(CodeError::Version { found: 3 })
        );
        // A first-wave code (format 1) is made by an older version.
        let mut bytes = vec![1u8, 0, 0];
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..4]);
        let old = format!("{PREFIX}{}", base64url_encode(&bytes));
        let err = EnrollCode::decode(&old).unwrap_err();
        assert_eq!(err, CodeError::Version { found: 1 });
        assert!(err.to_string().contains("older version"), "{err}");
        let mut short = sample();
        short.hub_key.truncate(33);
        assert_eq!(EnrollCode::decode(&short.encode()), Err(CodeError::Body));
        // The sample key is 65 bytes but not a point on the curve.
        assert_eq!(sample().public_key(), Err(CodeError::Key));
        assert!(CodeError::Checksum.to_string().contains("mistyped"));
    }

    #[test]
    fn a_real_key_is_pinned_and_the_token_never_printed() {
        let kp = crate::handshake::Keypair::from_secret(&[7; 32]).unwrap();
        let mut code = sample();
        code.hub_key = kp.public().as_bytes().to_vec();
        let back = EnrollCode::decode(&code.encode()).unwrap();
        assert_eq!(back.public_key().unwrap(), *kp.public());
        assert_eq!(key_fingerprint(&back.hub_key), kp.public().fingerprint());
        let shown = format!("{back:?}");
        assert!(!shown.contains("119"), "{shown}"); // 0x77 as a decimal byte
        assert!(!shown.contains("token"), "{shown}");
    }
}
