//! Sealed batches and the keys that open them (docs/design.md section 10, "Sealed batches";
//! layouts in `docs/wire-format.md`, "Sealed batches").
//!
//! In a sealed tenant every scope has AES-256-GCM keys with epochs ([`ScopeKey`]). A batch is
//! sealed at push time: its body as sent is encrypted under its stream's current key, bound to
//! its clear header, and the clear header names the epoch ([`seal_batch`]); relays store, hash
//! and forward it as any batch, and a holder of the key reads it with [`decode_sealed`]. Scope ids
//! on the wire are keyed digests of the names ([`DigestKey`], [`ScopeDigest`]). Keys reach a
//! device wrapped to its static P-256 key ([`envelope`]), or sealed inside a two-part enrolment
//! code under the code's secret ([`code_keys`]); both carry one [`KeySet`] layout.
//!
//! **Contract.** Like the rest of the crate: no I/O, no clock, no random source: nonces and
//! ephemeral keys and code secrets are the caller's (fresh from a CSPRNG for every call).
//! [`decode_sealed`], [`envelope::unwrap_keys`] and [`code_keys::open_code_keys`] accept any bytes
//! and return a typed error; none panics, and none allocates before the lengths are checked
//! against their bounds. The primitive steps
//! are [`primitives`], checked against Wycheproof vectors.

mod body;
pub mod code_keys;
mod digest;
pub mod envelope;
mod key;
mod key_set;
pub mod primitives;
pub mod table;

pub use body::{decode_sealed, seal_batch, Opened, SealError, AAD_DOMAIN, SEAL_OVERHEAD};
pub use digest::{DigestKey, NotADigest, ScopeDigest, DIGEST_KEY_LEN, SCOPE_DIGEST_LEN};
pub use key::ScopeKey;
pub use key_set::{KeyEntry, KeySet};
pub use primitives::{KEY_LEN, NONCE_LEN, TAG_LEN};
