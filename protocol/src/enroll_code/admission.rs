//! The admission: the part of a two-part enrolment code that the device presents to the hub
//! (docs/design.md section 10, "Offline enrolment"). The minter (the cloud, or a device whose
//! grant has the `enroll` flag) signs it, so a hub that has not synced since the code was minted
//! can still check it against the minter's key and admit the device with the grant it states.
//!
//! ```text
//! admission = postcard(hub_site, hub_key, addresses, token, expires_at, cloud, scopes, enroll, minter)
//!             ‖ signature (64 bytes, ECDSA P-256 over SHA-256("outpost admission v1\n" ‖ the postcard bytes))
//! ```
//!
//! In a sealed tenant the grant names scopes by their digests (`seal::ScopeDigest`, itself a
//! valid scope name), so an admission stored on a hub reveals no scope name.
//!
//! **Contract.** [`Admission::decode`] accepts any bytes and returns a typed [`AdmissionError`]:
//! at most [`MAX_ADMISSION_BYTES`] read; at most [`MAX_ADDRESSES`] addresses and
//! [`MAX_SCOPES_PER_GRANT`] scopes kept while reading (a longer list is counted, refused, and
//! never held), keys must be valid uncompressed P-256 points, trailing bytes refused, and only
//! the one canonical encoding accepted (re-encoded and compared), so the bytes a hub sees name
//! one admission exactly.

use super::CloudAnchor;
use crate::handshake::{Keypair, PublicKey, PUBLIC_KEY_LEN};
use crate::scope::{ScopeError, Scopes, MAX_SCOPES_PER_GRANT};
use crate::signing::{sign_digest, verify_digest, SignatureError, SIGNATURE_LEN};
use crate::site::SiteId;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// The label that makes an admission's signature mean "this admission" and nothing else.
pub const DOMAIN: &[u8] = b"outpost admission v1\n";
/// The longest admission accepted, signature included (a grant of the most scopes fits).
pub const MAX_ADMISSION_BYTES: usize = 4096;
/// The most addresses one admission lists.
pub const MAX_ADDRESSES: usize = 16;

/// What the minter states about the device it lets in: where the hub is, the one-time token the
/// hub will take, until when, what the device may hold, and who says so.
#[derive(Clone, PartialEq, Eq)]
pub struct Admission {
    /// The hub's site id.
    pub hub_site: SiteId,
    /// The hub's static public key (the device pins it).
    pub hub_key: PublicKey,
    /// Where to reach the hub, `host:port`, most likely first (at most [`MAX_ADDRESSES`]).
    pub addresses: Vec<String>,
    /// The one-time token: the pre-shared key of the `IKpsk2` enrolment handshake. Secret:
    /// never shown in `Debug`.
    pub token: [u8; 32],
    /// Unix seconds after which the hub refuses the admission.
    pub expires_at: u64,
    /// The cloud of the tenant, when there is one.
    pub cloud: Option<CloudAnchor>,
    /// The scopes granted (digests in a sealed tenant).
    pub scopes: Scopes,
    /// The device may mint codes itself.
    pub enroll: bool,
    /// The site that minted (and signs) the admission.
    pub minter: SiteId,
    /// The minter's signature (`r ‖ s`), set by [`Admission::sign`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Admission {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("hub_site", &self.hub_site)
            .field("hub_key", &self.hub_key.fingerprint())
            .field("addresses", &self.addresses)
            .field("expires_at", &self.expires_at)
            .field("cloud", &self.cloud.as_ref().map(|c| c.site))
            .field("scopes", &self.scopes)
            .field("enroll", &self.enroll)
            .field("minter", &self.minter)
            .finish_non_exhaustive()
    }
}

/// Why an admission was refused (read, or made).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdmissionError {
    /// Longer than [`MAX_ADMISSION_BYTES`].
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The fields do not decode, or are not in their one canonical form.
    Malformed,
    /// The signature is missing (the admission ends early).
    Truncated,
    /// Bytes follow the signature.
    TrailingBytes,
    /// The hub's or the cloud's key is not a valid uncompressed P-256 point.
    BadKey,
    /// More than [`MAX_ADDRESSES`] addresses.
    TooManyAddresses {
        /// How many.
        count: usize,
    },
    /// The grant breaks the rules of [`crate::scope`] (too many scopes, a bad name, none).
    Grant(ScopeError),
}

impl fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdmissionError::TooLong { len } => write!(
                f,
                "admission of {len} bytes is longer than {MAX_ADMISSION_BYTES}"
            ),
            AdmissionError::Malformed => f.write_str("admission does not decode"),
            AdmissionError::Truncated => f.write_str("admission ends before its signature"),
            AdmissionError::TrailingBytes => f.write_str("bytes after an admission's signature"),
            AdmissionError::BadKey => f.write_str("admission holds an invalid P-256 key"),
            AdmissionError::TooManyAddresses { count } => write!(
                f,
                "admission lists {count} addresses; at most {MAX_ADDRESSES}"
            ),
            AdmissionError::Grant(e) => write!(f, "admission's grant: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AdmissionError {}

// By its message: a scope error holds a name, which defmt cannot derive for.
#[cfg(feature = "defmt")]
impl defmt::Format for AdmissionError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// The signed fields as they are written; field order is the wire order (postcard): never
/// reorder. `hub_key` is written as a byte string, like the plain code's.
#[derive(Serialize)]
struct FieldsOut<'a> {
    hub_site: SiteId,
    hub_key: &'a [u8],
    addresses: &'a [String],
    token: [u8; 32],
    expires_at: u64,
    cloud: &'a Option<CloudAnchor>,
    scopes: &'a Scopes,
    enroll: bool,
    minter: SiteId,
}

/// The same fields as they are read, with lists that keep at most their bound.
#[derive(Deserialize)]
struct FieldsIn<'a> {
    hub_site: SiteId,
    hub_key: &'a [u8],
    addresses: Capped<String, MAX_ADDRESSES>,
    token: [u8; 32],
    expires_at: u64,
    cloud: Option<CloudAnchor>,
    scopes: ScopesIn,
    enroll: bool,
    minter: SiteId,
}

/// [`Scopes`] as read: the same tags, the names capped.
#[derive(Deserialize)]
enum ScopesIn {
    All,
    Only(Capped<String, MAX_SCOPES_PER_GRANT>),
}

/// A list of which at most `N` items are kept; the rest are read, counted and dropped, so a
/// hostile count makes the decoder hold no more than `N` items (and preallocate no more).
struct Capped<T, const N: usize> {
    items: Vec<T>,
    count: usize,
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Capped<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list (at most {N} kept)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
                let mut count = 0;
                while let Some(item) = seq.next_element::<T>()? {
                    if items.len() < N {
                        items.push(item);
                    }
                    count += 1;
                }
                Ok(Capped { items, count })
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

impl Admission {
    /// The signed part: the fields' postcard bytes.
    fn fields(&self) -> Vec<u8> {
        let out = FieldsOut {
            hub_site: self.hub_site,
            hub_key: self.hub_key.as_bytes(),
            addresses: &self.addresses,
            token: self.token,
            expires_at: self.expires_at,
            cloud: &self.cloud,
            scopes: &self.scopes,
            enroll: self.enroll,
            minter: self.minter,
        };
        // Plain data into a growable vector: postcard cannot fail.
        postcard::to_allocvec(&out).expect("postcard encodes plain structs")
    }

    /// Checks what [`Admission::decode`] would refuse, so a minter never signs an admission no
    /// hub reads; then signs it with the minter's key (deterministic: the same admission and
    /// key give the same bytes).
    pub fn sign(&mut self, minter_key: &Keypair) -> Result<(), AdmissionError> {
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(AdmissionError::TooManyAddresses {
                count: self.addresses.len(),
            });
        }
        self.scopes.check().map_err(AdmissionError::Grant)?;
        if let Some(c) = &self.cloud {
            check_key(&c.key)?;
        }
        let fields = self.fields();
        let len = fields.len() + SIGNATURE_LEN;
        if len > MAX_ADMISSION_BYTES {
            return Err(AdmissionError::TooLong { len });
        }
        self.signature = sign_digest(&digest_of(&fields), minter_key);
        Ok(())
    }

    /// Checks the admission was signed by `minter_key` (the key the hub's directory holds for
    /// [`Admission::minter`]).
    pub fn verify(&self, minter_key: &PublicKey) -> Result<(), SignatureError> {
        verify_digest(&digest_of(&self.fields()), &self.signature, minter_key)
    }

    /// Whether the admission has expired at `now` (unix seconds, the caller's clock).
    pub fn expired(&self, now: u64) -> bool {
        now > self.expires_at
    }

    /// The admission's bytes: what the device presents to the hub.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.fields();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads an admission (not verified: see [`Admission::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Admission, AdmissionError> {
        if bytes.len() > MAX_ADMISSION_BYTES {
            return Err(AdmissionError::TooLong { len: bytes.len() });
        }
        let (wire, rest): (FieldsIn, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| AdmissionError::Malformed)?;
        let fields = &bytes[..bytes.len() - rest.len()];
        if rest.len() < SIGNATURE_LEN {
            return Err(AdmissionError::Truncated);
        }
        if rest.len() > SIGNATURE_LEN {
            return Err(AdmissionError::TrailingBytes);
        }
        if wire.addresses.count > MAX_ADDRESSES {
            return Err(AdmissionError::TooManyAddresses {
                count: wire.addresses.count,
            });
        }
        let scopes = match wire.scopes {
            ScopesIn::All => Scopes::All,
            ScopesIn::Only(names) if names.count > MAX_SCOPES_PER_GRANT => {
                return Err(AdmissionError::Grant(ScopeError::TooMany {
                    count: names.count,
                }))
            }
            ScopesIn::Only(names) => Scopes::Only(names.items.into_iter().collect()),
        };
        scopes.check().map_err(AdmissionError::Grant)?;
        let hub_key = check_key(wire.hub_key)?;
        if let Some(c) = &wire.cloud {
            check_key(&c.key)?;
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(rest);
        let admission = Admission {
            hub_site: wire.hub_site,
            hub_key,
            addresses: wire.addresses.items,
            token: wire.token,
            expires_at: wire.expires_at,
            cloud: wire.cloud,
            scopes,
            enroll: wire.enroll,
            minter: wire.minter,
            signature,
        };
        // One encoding per admission (names sorted and distinct, shortest varints), so the
        // bytes a hub stores and the code's keys are bound to name it exactly.
        if admission.fields() != fields {
            return Err(AdmissionError::Malformed);
        }
        Ok(admission)
    }
}

/// A key as admissions carry it: 65 bytes, uncompressed, a point on P-256.
fn check_key(bytes: &[u8]) -> Result<PublicKey, AdmissionError> {
    if bytes.len() != PUBLIC_KEY_LEN {
        return Err(AdmissionError::BadKey);
    }
    PublicKey::from_sec1(bytes).map_err(|_| AdmissionError::BadKey)
}

fn digest_of(fields: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(fields);
    h.finalize().into()
}
