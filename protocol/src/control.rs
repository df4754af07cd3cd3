//! Control streams (docs/design.md section 10): what every peer must agree on before it can judge
//! a batch, starting with the **key directory** (site id → public key, role, who certified it).
//!
//! Each writer (the cloud; a hub, for the devices it admits) numbers its entries 1, 2, 3...
//! and signs each with its static key; a peer's knowledge of the control streams is a
//! [`ControlVector`](crate::ControlVector) keyed by writer, carried in `Hello`. Entries travel in
//! `Control` messages right after the hellos, before any push or pull, and are relayed as the
//! exact bytes their writer signed, so a relay can pass on entries it could not have made.
//!
//! ```text
//! entry = postcard(writer, seq, item) ‖ signature (64 bytes, ECDSA P-256 over
//!         SHA-256("outpost control v2\n" ‖ the postcard bytes))
//! ```
//! Items are append-only by tag: tag 0 is [`ControlItem::Key`], tag 1 [`ControlItem::Table`] (the
//! tenant's settings for one table, meaningful only from a cloud), tag 2 [`ControlItem::Grant`]
//! (the scopes a site may hold and write), then tag 3 `Void`, 4 `Sealed`, 5 `Epoch`, 6
//! `SealedTable` and 7 [`ControlItem::Strict`] (the tenant's tables are strict on devices).
//!
//! **Contract**: [`decode_entry`] accepts any bytes and returns a typed [`ControlError`] (at most
//! [`MAX_ENTRY_BYTES`] read; a key must be a valid P-256 point; trailing bytes refused; only the
//! one canonical encoding accepted). [`Directory`] decides what entries mean, the same way on
//! every replica whatever order they arrive in.

mod directory;

pub use directory::{Binding, Directory, Grant, Refusal, Root};

use crate::batch::{names, Direction};
use crate::handshake::{Keypair, PublicKey, PUBLIC_KEY_LEN};
use crate::message::{Bytes, PeerRole};
use crate::scope::{ScopeRule, Scopes};
use crate::signing::{sign_digest, verify_digest, SignatureError, SIGNATURE_LEN};
use crate::site::SiteId;
use crate::vector::SeqRange;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The label that makes a control signature mean "this control entry" and nothing else.
pub const DOMAIN: &[u8] = b"outpost control v2\n";
/// The largest encoded entry accepted (a grant of the most scopes fits).
pub const MAX_ENTRY_BYTES: usize = 2048;
/// The most entries one `Control` message carries.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 1024;

/// A key directory entry: `site` signs with `key` and is a `role`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The site the key belongs to.
    pub site: SiteId,
    /// Its static public key, uncompressed SEC1 (65 bytes).
    pub key: Bytes,
    /// What the site is.
    pub role: PeerRole,
    /// The key is revoked: kept (history stays verifiable), marked.
    pub revoked: bool,
}

impl KeyEntry {
    /// The key as a checked point ([`decode_entry`] checked it already).
    pub fn public_key(&self) -> Result<PublicKey, ControlError> {
        PublicKey::from_sec1(&self.key.0).map_err(|_| ControlError::BadKey)
    }
}

/// The tenant's settings for one table (docs/design.md section 10): the cloud's to declare; a
/// device whose `outpost_track` options differ gets a typed error at sync. A later entry for the
/// same table replaces an earlier one.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TableEntry {
    /// The table's name (1-128 bytes, no NUL, not reserved: [`names`]).
    pub name: String,
    /// Which way its changes travel: `down` tables are written by the cloud only, `up` tables
    /// are never served to devices.
    pub direction: Direction,
    /// Where its rows get their scope; `None` for an unscoped table.
    pub scope: Option<ScopeRule>,
}

/// What a site is granted (docs/design.md section 10, "Grants"): versioned per site, the highest
/// version counts. The cloud grants any site; a hub grants the devices it admits, within its own
/// grant, until the cloud's word replaces its.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GrantEntry {
    /// The site granted.
    pub site: SiteId,
    /// Its grant's version, from 1: batches name the version they were written under.
    pub version: u64,
    /// The scopes it may hold and write.
    pub scopes: Scopes,
    /// It may mint enrolment codes (a clinic supervisor's tablet).
    pub enroll: bool,
}

/// A range of one origin's stream the cloud refused or cut (docs/design.md section 10, "One
/// decision everywhere"): every replica treats it as covered and empty, so coverage never stalls
/// on it and no relay serves what it held of it. Meaningful only from a cloud.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VoidEntry {
    /// The origin whose batch was refused.
    pub origin: SiteId,
    /// Its stream's scope id (`""` unscoped).
    pub stream: String,
    /// The seqs voided: exactly the refused batch's range.
    pub range: SeqRange,
    /// Why, as a code: the reason's text can name tables and scopes, which a sealed tenant's
    /// control stream must not.
    pub reason: VoidReason,
}

/// Why a range was voided. The variant order is the wire tag: append only.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum VoidReason {
    /// Tag 0: written into a scope outside the grant version it names, or naming a version no
    /// entry states.
    OutsideGrant,
    /// Tag 1: the batch does not decode, or its body or schema breaks the tenant's settings.
    Invalid,
}

impl VoidReason {
    /// The reason as status pages show it.
    pub fn as_str(self) -> &'static str {
        match self {
            VoidReason::OutsideGrant => "outside_grant",
            VoidReason::Invalid => "invalid",
        }
    }
}

/// What a control entry says. The variant order is the wire tag: append only.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ControlItem {
    /// Tag 0: a key directory entry.
    Key(KeyEntry),
    /// Tag 1: the tenant's settings for a table.
    Table(TableEntry),
    /// Tag 2: what a site is granted.
    Grant(GrantEntry),
    /// Tag 3: a range the cloud voided.
    Void(VoidEntry),
    /// Tag 4: the tenant is sealed (docs/design.md section 10, "Sealed batches"): every batch
    /// is pushed sealed, and a device pushes a stream only once it holds its scope's key.
    /// Meaningful only from a cloud, written when the tenant is made.
    Sealed,
    /// Tag 5: a scope's key entered a new epoch (a revocation, or the scope removed from a
    /// grant): later pushes are sealed under it. Meaningful only from a cloud.
    Epoch(EpochEntry),
    /// Tag 6: a sealed tenant's settings for a table, sealed under a key derived from the
    /// tenant's digest key (`seal::table`): a [`TableEntry`] to the devices and the cloud, opaque
    /// bytes to a hub. Meaningful only from a cloud.
    SealedTable(Bytes),
    /// Tag 7: the tenant makes its tracked tables strict on devices (docs/design.md section
    /// 11, "Values must fit PostgreSQL's types"): a value that does not fit its column's
    /// declared type, or text holding NUL, is refused at write time. Written once by a cloud
    /// whose tenant lives in PostgreSQL; meaningful only from a cloud.
    Strict,
}

/// A scope's current key epoch, as the cloud publishes it when it starts one.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EpochEntry {
    /// The scope (`""`: the unscoped stream).
    pub scope: String,
    /// Its new epoch (from 2: epoch 1 is every scope's first, never published).
    pub epoch: u32,
}

#[derive(Serialize, Deserialize)]
struct EntryWire {
    writer: SiteId,
    seq: u64,
    item: ControlItem,
}

/// A decoded, not yet verified control entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ControlEntry {
    /// The peer that wrote and signed it.
    pub writer: SiteId,
    /// Its number in the writer's stream (from 1).
    pub seq: u64,
    /// What it says.
    pub item: ControlItem,
    /// The writer's signature (`r ‖ s`).
    pub signature: [u8; SIGNATURE_LEN],
    /// The digest the signature covers.
    pub signed_digest: [u8; 32],
}

impl ControlEntry {
    /// Checks the entry was signed by `writer_key`.
    pub fn verify(&self, writer_key: &PublicKey) -> Result<(), SignatureError> {
        verify_digest(&self.signed_digest, &self.signature, writer_key)
    }
}

/// Why control bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// Longer than [`MAX_ENTRY_BYTES`].
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The postcard part does not decode, or is not in its one canonical form.
    Malformed,
    /// The signature is missing (the entry ends early).
    Truncated,
    /// Bytes follow the signature.
    TrailingBytes,
    /// A key entry's key is not a valid P-256 point.
    BadKey,
    /// The seq is 0.
    BadSeq,
    /// A table entry's name is empty, longer than 128 bytes, holds NUL or is reserved.
    BadTableName,
    /// A grant's scopes break the rules of [`crate::scope`], or its version is 0.
    BadGrant,
    /// A voided range's stream is not a scope id, or its range is not `1 <= lo <= hi`.
    BadVoid,
    /// An epoch entry names no scope id, or epoch 0.
    BadEpoch,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::TooLong { len } => write!(
                f,
                "control entry of {len} bytes is longer than {MAX_ENTRY_BYTES}"
            ),
            ControlError::Malformed => f.write_str("control entry does not decode"),
            ControlError::Truncated => f.write_str("control entry ends before its signature"),
            ControlError::TrailingBytes => f.write_str("bytes after a control entry's signature"),
            ControlError::BadKey => f.write_str("control key entry holds an invalid P-256 key"),
            ControlError::BadSeq => f.write_str("control entry numbered 0"),
            ControlError::BadTableName => {
                f.write_str("control table entry names no valid, unreserved table")
            }
            ControlError::BadGrant => {
                f.write_str("control grant entry has version 0 or invalid scopes")
            }
            ControlError::BadVoid => {
                f.write_str("control void entry names an invalid stream or seq range")
            }
            ControlError::BadEpoch => {
                f.write_str("control epoch entry names an invalid scope or epoch 0")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ControlError {}

fn digest_of(body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(body);
    h.finalize().into()
}

/// Writes and signs entry `seq` of `writer`'s stream.
pub fn encode_entry(writer: SiteId, seq: u64, item: &ControlItem, key: &Keypair) -> Vec<u8> {
    let wire = EntryWire {
        writer,
        seq,
        item: item.clone(),
    };
    // Serializing plain data into a growable vector cannot fail.
    let mut out = postcard::to_allocvec(&wire).expect("postcard into a Vec");
    let sig = sign_digest(&digest_of(&out), key);
    out.extend_from_slice(&sig);
    out
}

/// A key entry for `site`'s `key` as `role`.
pub fn key_item(site: SiteId, key: &PublicKey, role: PeerRole, revoked: bool) -> ControlItem {
    ControlItem::Key(KeyEntry {
        site,
        key: Bytes(key.as_bytes().to_vec()),
        role,
        revoked,
    })
}

/// The tenant's settings for table `name`.
pub fn table_item(name: &str, direction: Direction, scope: Option<ScopeRule>) -> ControlItem {
    ControlItem::Table(TableEntry {
        name: name.into(),
        direction,
        scope,
    })
}

/// Version `version` of `site`'s grant.
pub fn grant_item(site: SiteId, version: u64, scopes: Scopes, enroll: bool) -> ControlItem {
    ControlItem::Grant(GrantEntry {
        site,
        version,
        scopes,
        enroll,
    })
}

/// The cloud voids `range` of `origin`'s stream `stream`.
pub fn void_item(origin: SiteId, stream: &str, range: SeqRange, reason: VoidReason) -> ControlItem {
    ControlItem::Void(VoidEntry {
        origin,
        stream: stream.into(),
        range,
        reason,
    })
}

/// Whether a table entry's names are valid (its table's, and its scope rule's column).
pub(crate) fn table_entry_ok(t: &TableEntry) -> bool {
    names::check(&t.name).is_ok()
        && t.scope
            .as_ref()
            .is_none_or(|r| names::check(r.column()).is_ok())
}

/// Decodes one entry (not verified: see [`ControlEntry::verify`] and [`Directory`]).
pub fn decode_entry(bytes: &[u8]) -> Result<ControlEntry, ControlError> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(ControlError::TooLong { len: bytes.len() });
    }
    let (wire, rest): (EntryWire, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|_| ControlError::Malformed)?;
    let body = &bytes[..bytes.len() - rest.len()];
    if rest.len() < SIGNATURE_LEN {
        return Err(ControlError::Truncated);
    }
    if rest.len() > SIGNATURE_LEN {
        return Err(ControlError::TrailingBytes);
    }
    // One encoding per entry, so its bytes (what relays pass on) name it exactly.
    if postcard::to_allocvec(&wire).map_err(|_| ControlError::Malformed)? != body {
        return Err(ControlError::Malformed);
    }
    if wire.seq == 0 {
        return Err(ControlError::BadSeq);
    }
    match &wire.item {
        ControlItem::Key(k) => {
            if k.key.0.len() != PUBLIC_KEY_LEN || PublicKey::from_sec1(&k.key.0).is_err() {
                return Err(ControlError::BadKey);
            }
        }
        ControlItem::Table(t) => {
            if !table_entry_ok(t) {
                return Err(ControlError::BadTableName);
            }
        }
        ControlItem::SealedTable(b) => {
            let len = b.0.len();
            if len < crate::seal::NONCE_LEN + crate::seal::TAG_LEN {
                return Err(ControlError::BadTableName);
            }
        }
        ControlItem::Grant(g) => {
            if g.version == 0 || g.scopes.check().is_err() {
                return Err(ControlError::BadGrant);
            }
        }
        ControlItem::Sealed | ControlItem::Strict => {}
        ControlItem::Epoch(e) => {
            let scope_ok = e.scope.is_empty() || crate::scope::check_name(&e.scope).is_ok();
            if !scope_ok || e.epoch == 0 {
                return Err(ControlError::BadEpoch);
            }
        }
        ControlItem::Void(v) => {
            let stream_ok = v.stream.is_empty() || crate::scope::check_name(&v.stream).is_ok();
            // Deserializing does not enforce `SeqRange`'s invariant.
            if !stream_ok || SeqRange::new(v.range.lo, v.range.hi) != Some(v.range) {
                return Err(ControlError::BadVoid);
            }
        }
    }
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(rest);
    Ok(ControlEntry {
        writer: wire.writer,
        seq: wire.seq,
        item: wire.item,
        signature,
        signed_digest: digest_of(body),
    })
}
