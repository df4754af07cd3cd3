//! The two-part enrolment code of a sealed tenant (docs/design.md section 10, "Offline
//! enrolment"), format 3: the signed [`Admission`] the device presents to the hub, the secret it
//! never sends, and the tenant's keys sealed under that secret (`seal::code_keys`), printed as one
//! `outpost:` token (the framing of the plain code).
//!
//! ```text
//! content = 0x03 ‖ admission length (varint) ‖ admission ‖ secret (32) ‖ sealed keys (the rest)
//! ```
//!
//! **Contract.** [`TwoPartCode::decode`] (and [`super::Code::decode`]) accept any text and return
//! a typed [`CodeError`]; the admission is decoded and checked in full ([`Admission::decode`]),
//! the sealed keys' length is checked ([`code_keys::check_sealed_len`]), and they are opened only
//! on request
//! ([`TwoPartCode::open_keys`]). The whole decoded code is at most [`MAX_CODE_BYTES`].

use super::{frame, unframe, Admission, CodeError, MAX_CODE_BYTES, TWO_PART_FORMAT};
use crate::seal::code_keys::{self, check_sealed_len, open_code_keys, seal_code_keys};
use crate::seal::code_keys::{CodeKeysError, CodeSecret, SECRET_LEN};
use crate::seal::KeySet;
use crate::varint;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A two-part enrolment code: what a sealed tenant's device needs to join a hub that may not
/// have synced since the code was minted, and to read its scopes at once.
#[derive(Clone, PartialEq, Eq)]
pub struct TwoPartCode {
    admission: Admission,
    admission_bytes: Vec<u8>,
    secret: CodeSecret,
    sealed_keys: Vec<u8>,
}

impl fmt::Debug for TwoPartCode {
    // Neither the token (inside the admission) nor the secret is ever printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoPartCode")
            .field("admission", &self.admission)
            .field("sealed_keys", &self.sealed_keys.len())
            .finish_non_exhaustive()
    }
}

/// Why a code could not be minted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintError {
    /// The admission does not verify with the minter's key: sign it first
    /// ([`Admission::sign`]).
    Unsigned,
    /// The keys could not be sealed (too many, or two for the same scope and epoch).
    Keys(CodeKeysError),
    /// The code would be longer than [`MAX_CODE_BYTES`] (too many keys or addresses).
    TooLong {
        /// Its length, decoded.
        len: usize,
    },
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MintError::Unsigned => {
                f.write_str("the admission is not signed by the minter's key: sign it first")
            }
            MintError::Keys(e) => write!(f, "enrolment code's keys: {e}"),
            MintError::TooLong { len } => write!(
                f,
                "enrolment code of {len} bytes: at most {MAX_CODE_BYTES} (grant fewer scopes or \
                 fewer epochs)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MintError {}

impl TwoPartCode {
    /// Mints a code: `admission` signed by the minter (checked with `minter_key`), `keys` the
    /// tenant's digest key and the scope keys of the grant, `secret` 32 fresh bytes from the
    /// minter's CSPRNG for this code alone.
    pub fn mint(
        admission: Admission,
        minter_key: &crate::handshake::PublicKey,
        keys: &KeySet,
        secret: CodeSecret,
    ) -> Result<TwoPartCode, MintError> {
        admission
            .verify(minter_key)
            .map_err(|_| MintError::Unsigned)?;
        let admission_bytes = admission.encode();
        let sealed_keys =
            seal_code_keys(keys, &secret, &admission_bytes).map_err(MintError::Keys)?;
        let code = TwoPartCode {
            admission,
            admission_bytes,
            secret,
            sealed_keys,
        };
        let len = code.content().len() + super::CHECKSUM_LEN;
        if len > MAX_CODE_BYTES {
            return Err(MintError::TooLong { len });
        }
        Ok(code)
    }

    /// Part 1, decoded: what the minter states.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Part 1 as the device presents it to the hub (its exact bytes, signature included).
    pub fn admission_bytes(&self) -> &[u8] {
        &self.admission_bytes
    }

    /// Part 2: the secret the device keeps and never sends.
    pub fn secret(&self) -> &CodeSecret {
        &self.secret
    }

    /// Part 3 as carried: the keys, sealed.
    pub fn sealed_keys(&self) -> &[u8] {
        &self.sealed_keys
    }

    /// Opens part 3 with part 2, bound to part 1: the tenant's digest key and the grant's scope
    /// keys.
    pub fn open_keys(&self) -> Result<KeySet, CodeKeysError> {
        open_code_keys(&self.sealed_keys, &self.secret, &self.admission_bytes)
    }

    /// The bytes between the prefix and the checksum.
    fn content(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            1 + 2 + self.admission_bytes.len() + SECRET_LEN + self.sealed_keys.len(),
        );
        out.push(TWO_PART_FORMAT);
        varint::write_u64(&mut out, self.admission_bytes.len() as u64);
        out.extend_from_slice(&self.admission_bytes);
        out.extend_from_slice(self.secret.as_bytes());
        out.extend_from_slice(&self.sealed_keys);
        out
    }

    /// The code as one line of text.
    pub fn encode(&self) -> String {
        frame(self.content())
    }

    /// Reads a two-part code (surrounding whitespace ignored); a plain code is refused as
    /// [`CodeError::Version`] (read either kind with [`super::Code::decode`]).
    pub fn decode(text: &str) -> Result<TwoPartCode, CodeError> {
        let content = unframe(text)?;
        if content[0] != TWO_PART_FORMAT {
            return Err(CodeError::Version { found: content[0] });
        }
        TwoPartCode::from_content(content)
    }

    /// Reads the content of a format-3 code (its first byte already checked), reusing its buffer
    /// for the admission's bytes.
    pub(super) fn from_content(mut content: Vec<u8>) -> Result<TwoPartCode, CodeError> {
        let (len, n) = varint::read_u64(&content[1..]).map_err(|_| CodeError::Body)?;
        // One encoding per code: the shortest varint.
        if n != varint::len_u64(len) {
            return Err(CodeError::Body);
        }
        let start = 1 + n;
        // Room for the admission once the secret and the smallest sealed keys are set aside.
        let room = (content.len() - start).checked_sub(SECRET_LEN + code_keys::MIN_LEN);
        if room.is_none_or(|room| len > room as u64) {
            return Err(CodeError::Body);
        }
        // At most `room`, which fits a usize.
        let len = len as usize;
        let admission = Admission::decode(&content[start..start + len])?;
        let keys_at = start + len + SECRET_LEN;
        check_sealed_len(content.len() - keys_at).map_err(CodeError::Keys)?;
        let secret = CodeSecret::from_bytes(
            content[start + len..keys_at]
                .try_into()
                .expect("SECRET_LEN bytes"),
        );
        let sealed_keys = content[keys_at..].to_vec();
        // The admission's bytes reuse the decoded buffer: its copy of the secret is wiped first.
        content[start + len..keys_at].fill(0);
        content.truncate(start + len);
        content.drain(..start);
        Ok(TwoPartCode {
            admission,
            admission_bytes: content,
            secret,
            sealed_keys,
        })
    }
}
