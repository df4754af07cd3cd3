//! Enrollment codes: what a device needs to enroll with a hub (or the cloud), as one line of
//! text. Two kinds share one framing:
//!
//! ```text
//! outpost:<base64url, no padding>(bytes)
//! bytes = format (1 byte) ‖ the format's content ‖ SHA-256(previous bytes)[..4]
//! ```
//!
//! - **Format 2, plain** ([`EnrollCode`]): the hub prints it (`outpost-hub enroll-code`); the
//!   content is postcard(EnrollCode body). The body carries the peer's full static public key
//!   (65-byte uncompressed SEC1: the device pins it, so a rogue hub cannot complete a handshake),
//!   its site id, the addresses to try (`host:port`, in order), the one-time token (the 32-byte
//!   pre-shared key of the `IKpsk2` enrollment handshake), its expiry (unix seconds, so a device
//!   can say "expired" offline), and the cloud's site and key when the peer relays to a cloud,
//!   so a device enrolled at a hub can verify what the cloud signs.
//! - **Format 3, two-part** ([`TwoPartCode`], a sealed tenant's, minted by the cloud or by a
//!   device whose grant has the `enroll` flag): a signed [`Admission`] the device presents to the
//!   hub, a secret it never sends, and the tenant's keys sealed under that secret
//!   (`crate::seal::code_keys`).
//!
//! [`Code::decode`] reads either kind; [`EnrollCode::decode`] reads plain codes only, as before.
//!
//! **Contract.** Every decoder here accepts any text and returns a typed [`CodeError`]: a
//! missing prefix, text longer than a code of [`MAX_CODE_BYTES`] (refused before anything is
//! allocated), a character outside base64url, a truncated code, a checksum mismatch (any single
//! changed character is caught), an unknown format, a body that does not decode, has bytes left
//! over, or holds a key that is not a valid P-256 point; for format 3 also the admission's and
//! the sealed keys' own errors. The plain format is byte-identical to the one
//! `appliance/src/enroll.rs` wrote first (checked against the real binary's output in
//! `tests/tests/hub_sessions.rs`).

mod admission;
mod two_part;

pub use admission::{Admission, AdmissionError, DOMAIN, MAX_ADDRESSES, MAX_ADMISSION_BYTES};
pub use two_part::{MintError, TwoPartCode};

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
/// The format of plain codes ([`EnrollCode`]).
pub const FORMAT_VERSION: u8 = 2;
/// The format of two-part codes ([`TwoPartCode`]).
pub const TWO_PART_FORMAT: u8 = 3;
/// Bytes of SHA-256 appended as a checksum.
pub const CHECKSUM_LEN: usize = 4;
/// The most bytes a code decodes to, format byte and checksum included (a QR code of it is the
/// caller's business: a two-part code of one scope is about 500 bytes).
pub const MAX_CODE_BYTES: usize = 8192;
/// The most base64url characters after the prefix: those of [`MAX_CODE_BYTES`] bytes.
pub const MAX_CODE_CHARS: usize = (MAX_CODE_BYTES * 4).div_ceil(3);

/// A code of either kind, as [`Code::decode`] reads it.
// A code is read once per enrolment: a box would buy nothing but a deref in every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Code {
    /// Format 2: a hub's plain code.
    Plain(EnrollCode),
    /// Format 3: a sealed tenant's two-part code.
    TwoPart(TwoPartCode),
}

impl Code {
    /// Reads a code of either kind (surrounding whitespace ignored).
    pub fn decode(text: &str) -> Result<Code, CodeError> {
        let content = unframe(text)?;
        match content[0] {
            FORMAT_VERSION => EnrollCode::from_content(&content).map(Code::Plain),
            TWO_PART_FORMAT => TwoPartCode::from_content(content).map(Code::TwoPart),
            found => Err(CodeError::Version { found }),
        }
    }

    /// The code as one line of text.
    pub fn encode(&self) -> String {
        match self {
            Code::Plain(c) => c.encode(),
            Code::TwoPart(c) => c.encode(),
        }
    }
}

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
    /// Longer than any code ([`MAX_CODE_BYTES`] decoded).
    TooLong {
        /// Characters after the prefix.
        chars: usize,
    },
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
    /// A two-part code given where only a plain one is read ([`EnrollCode::decode`]).
    TwoPart,
    /// A two-part code's admission is refused.
    Admission(AdmissionError),
    /// A two-part code's sealed keys have a length no key set gives.
    Keys(crate::seal::code_keys::CodeKeysError),
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
            CodeError::TooLong { chars } => write!(
                f,
                "enrollment code of {chars} characters is longer than any code \
                 ({MAX_CODE_CHARS}); copy only the code"
            ),
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
                "enrollment code format {found} is newer than this build (formats \
                 {FORMAT_VERSION} and {TWO_PART_FORMAT}); update outpost"
            ),
            CodeError::Body => f.write_str("enrollment code content is malformed"),
            CodeError::Key => {
                f.write_str("enrollment code holds an invalid public key; ask for a new code")
            }
            CodeError::TwoPart => f.write_str(
                "this is a two-part enrollment code (a sealed tenant's device code), not a hub's \
                 plain code",
            ),
            CodeError::Admission(e) => write!(f, "enrollment code's {e}; ask for a new code"),
            CodeError::Keys(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodeError {}

impl From<AdmissionError> for CodeError {
    fn from(e: AdmissionError) -> CodeError {
        CodeError::Admission(e)
    }
}

impl EnrollCode {
    /// The code as one line of text.
    pub fn encode(&self) -> String {
        let mut bytes = vec![FORMAT_VERSION];
        // Plain data into a growable vector: postcard cannot fail.
        bytes.extend(postcard::to_allocvec(self).expect("postcard encodes plain structs"));
        frame(bytes)
    }

    /// Reads a plain code (surrounding whitespace ignored); a two-part code is refused as
    /// [`CodeError::TwoPart`] (read either kind with [`Code::decode`]).
    pub fn decode(text: &str) -> Result<EnrollCode, CodeError> {
        let content = unframe(text)?;
        match content[0] {
            FORMAT_VERSION => EnrollCode::from_content(&content),
            TWO_PART_FORMAT => Err(CodeError::TwoPart),
            found => Err(CodeError::Version { found }),
        }
    }

    /// Reads the content of a format-2 code (its first byte already checked).
    fn from_content(content: &[u8]) -> Result<EnrollCode, CodeError> {
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

/// `content` (format byte first) with its checksum, as one line of text.
fn frame(mut content: Vec<u8>) -> String {
    let sum = Sha256::digest(&content);
    content.extend_from_slice(&sum[..CHECKSUM_LEN]);
    let mut out = String::from(PREFIX);
    base64url_encode_into(&content, &mut out);
    out
}

/// The content of a code's text (format byte first, at least one byte after it), its checksum
/// checked and removed. Refuses text longer than any code before decoding it, so nothing is
/// allocated beyond three quarters of the text's length.
fn unframe(text: &str) -> Result<Vec<u8>, CodeError> {
    let rest = text.trim().strip_prefix(PREFIX).ok_or(CodeError::Prefix)?;
    if rest.len() > MAX_CODE_CHARS {
        return Err(CodeError::TooLong { chars: rest.len() });
    }
    let mut bytes = base64url_decode(rest)?;
    if bytes.len() < 1 + CHECKSUM_LEN + 1 {
        return Err(CodeError::Truncated);
    }
    let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(content)[..CHECKSUM_LEN] != *sum {
        return Err(CodeError::Checksum);
    }
    bytes.truncate(bytes.len() - CHECKSUM_LEN);
    Ok(bytes)
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
mod tests;
