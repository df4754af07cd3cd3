//! Static P-256 identity keys and their text form.
//!
//! A [`PublicKey`] is held as the 65-byte uncompressed SEC1 point Noise puts on the wire. Its text
//! form, used in enrollment codes, pinning, logs and CLIs, is `p256:` followed by the 33-byte
//! compressed point in base64url without padding (49 characters in all); parsing checks that the
//! point is on the curve. A [`Keypair`]'s secret scalar is never printed: its `Debug` shows the
//! public key's [`PublicKey::fingerprint`] only.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::{Digest, Sha256};

/// Length of a public key on the wire: an uncompressed SEC1 P-256 point.
pub const PUBLIC_KEY_LEN: usize = 65;
/// Length of a secret key: a P-256 scalar, big-endian.
pub const SECRET_KEY_LEN: usize = 32;
/// The prefix of a public key's text form.
pub const PUBLIC_KEY_PREFIX: &str = "p256:";

/// A static P-256 public key (a peer's identity).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

/// Why bytes or text are not a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The text does not start with `p256:`.
    Prefix,
    /// The text has a character outside base64url, or the wrong length.
    Encoding,
    /// The bytes are not a point on P-256 (or not a valid secret scalar).
    NotOnCurve,
    /// The operating system's random source failed.
    Random,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Prefix => write!(f, "a public key is written \"{PUBLIC_KEY_PREFIX}\" + 44 base64url characters"),
            KeyError::Encoding => f.write_str(
                "public key text is damaged: expected 44 base64url characters after \"p256:\"; copy it again",
            ),
            KeyError::NotOnCurve => f.write_str("not a valid P-256 key: copy it again from its source"),
            KeyError::Random => f.write_str("the operating system's random source failed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyError {}

impl PublicKey {
    /// A key from SEC1 bytes: 65 uncompressed or 33 compressed; checks the point is on the curve.
    pub fn from_sec1(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let point = p256::PublicKey::from_sec1_bytes(bytes).map_err(|_| KeyError::NotOnCurve)?;
        let encoded = point.to_encoded_point(false);
        let raw = <[u8; PUBLIC_KEY_LEN]>::try_from(encoded.as_bytes())
            .map_err(|_| KeyError::NotOnCurve)?;
        Ok(PublicKey(raw))
    }

    /// The uncompressed SEC1 bytes (what Noise sends).
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The 33-byte compressed SEC1 form.
    pub fn compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        // The y coordinate's parity picks the prefix; x is unchanged.
        out[0] = 0x02 | (self.0[64] & 1);
        out[1..].copy_from_slice(&self.0[1..33]);
        out
    }

    /// A short name for logs and status pages: the first 8 bytes of the SHA-256 of the
    /// uncompressed key, in hex (the same as the hub's `identity::fingerprint`).
    pub fn fingerprint(&self) -> String {
        use core::fmt::Write;
        let mut s = String::with_capacity(16);
        for b in &Sha256::digest(self.0)[..8] {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// The stable text form: `p256:` + base64url(compressed point), no padding.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PUBLIC_KEY_PREFIX)?;
        let bytes = self.compressed();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                let c = B64[(n >> (18 - 6 * i) & 63) as usize];
                fmt::Write::write_char(f, c as char)?;
            }
        }
        Ok(())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        let rest = s
            .trim()
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or(KeyError::Prefix)?;
        if rest.len() != 44 {
            return Err(KeyError::Encoding);
        }
        let mut out = [0u8; 33];
        let mut acc = 0u32;
        let mut bits = 0;
        let mut at = 0;
        for c in rest.bytes() {
            let v = B64.iter().position(|&a| a == c).ok_or(KeyError::Encoding)? as u32;
            acc = acc << 6 | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out[at] = (acc >> bits) as u8;
                at += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // 44 characters carry 264 bits = 33 bytes exactly: no bits may be left over.
        if at != 33 || bits != 0 {
            return Err(KeyError::Encoding);
        }
        PublicKey::from_sec1(&out)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A static identity key pair. The secret never leaves through `Debug` or `Display`.
#[derive(Clone)]
pub struct Keypair {
    secret: [u8; SECRET_KEY_LEN],
    public: PublicKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Keypair {
    /// The key pair of a secret scalar (as stored in a key file), or [`KeyError::NotOnCurve`] when
    /// it is 0 or not below the group order.
    pub fn from_secret(secret: &[u8; SECRET_KEY_LEN]) -> Result<Keypair, KeyError> {
        let sk = p256::SecretKey::from_slice(secret).map_err(|_| KeyError::NotOnCurve)?;
        let point = sk.public_key().to_encoded_point(false);
        let raw =
            <[u8; PUBLIC_KEY_LEN]>::try_from(point.as_bytes()).map_err(|_| KeyError::NotOnCurve)?;
        Ok(Keypair {
            secret: *secret,
            public: PublicKey(raw),
        })
    }

    /// A key pair from caller-provided randomness: `fill` is called for 32 bytes until they form a
    /// valid scalar (almost always once). For devices without `std`; it must be a CSPRNG.
    pub fn generate_with<E>(
        mut fill: impl FnMut(&mut [u8; SECRET_KEY_LEN]) -> Result<(), E>,
    ) -> Result<Keypair, E> {
        loop {
            let mut secret = [0u8; SECRET_KEY_LEN];
            fill(&mut secret)?;
            if let Ok(k) = Keypair::from_secret(&secret) {
                return Ok(k);
            }
        }
    }

    /// A fresh key pair from the operating system's random source.
    #[cfg(feature = "std")]
    pub fn generate() -> Result<Keypair, KeyError> {
        Keypair::generate_with(|b| getrandom::getrandom(b).map_err(|_| KeyError::Random))
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The secret scalar, for writing the key file (mode 0600). Never log it.
    pub fn secret_bytes(&self) -> &[u8; SECRET_KEY_LEN] {
        &self.secret
    }
}

/// True when `bytes` is a usable P-256 secret scalar (used by the handshake's seeded RNG so snow
/// never meets an invalid ephemeral scalar).
pub(crate) fn is_valid_scalar(bytes: &[u8]) -> bool {
    p256::SecretKey::from_slice(bytes).is_ok()
}

/// Decompresses with the curve arithmetic to check a compressed point round-trips (tests).
#[cfg(test)]
pub(crate) fn decompress(bytes: &[u8; 33]) -> Option<[u8; PUBLIC_KEY_LEN]> {
    use p256::elliptic_curve::sec1::FromEncodedPoint;
    let ep = p256::EncodedPoint::from_bytes(bytes).ok()?;
    let pk: Option<p256::PublicKey> = p256::PublicKey::from_encoded_point(&ep).into();
    let raw = pk?.to_encoded_point(false);
    <[u8; PUBLIC_KEY_LEN]>::try_from(raw.as_bytes()).ok()
}
