//! The session messages (docs/design.md section 5), encoded with postcard.
//!
//! A message is a [`Message`] enum: its postcard variant index (a varint) is the **tag**, listed
//! in `docs/wire-format.md` with worked bytes. Tags are never renumbered or reused; a new message
//! gets a new tag and is only sent to a peer whose [`Hello::protocol_version`] knows it.
//!
//! **Contract**: [`Message::decode`] accepts any byte string and returns a typed [`MessageError`]
//! for anything malformed: unknown tags, trailing bytes, lengths that run past the end (checked
//! before any allocation), invalid UTF-8, invalid field values, and any encoding other than the
//! one [`Message::encode`] produces (each message has exactly one encoding).

use crate::id_range::{self, IdGrant, IdRequest};
use crate::site::SiteId;
use crate::vector::{ControlVector, SeqRange, VersionVector};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Names one push session, chosen by the client at random, so a retried commit is recognised.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct SessionId(pub [u8; 16]);

/// What a peer is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PeerRole {
    /// An app's database (tag 0).
    Device,
    /// A clinic hub (tag 1).
    Hub,
    /// The cloud master (tag 2).
    Cloud,
}

/// The first message of each side after the handshake.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the sender speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The sender's site id.
    pub site: SiteId,
    /// The sender's role.
    pub role: PeerRole,
    /// SHA-256 of the sender's schema and merge configuration: a mismatch is refused at hello.
    pub fingerprint: [u8; 32],
    /// The sender's wall clock when it sent this, in ms since the Unix epoch (skew assessment).
    /// A server states trusted time only (the cloud's clock, or a hub's corrected by the
    /// cloud's since it started), and 0 when it has none: a client adopts a server's time only
    /// when it is not 0.
    pub wall_clock_ms: u64,
    /// What the sender holds.
    pub vector: VersionVector,
    /// The push session the client intends to use (zero from a server).
    pub session: SessionId,
    /// The sender's control streams: the last entry it holds of each writer
    /// (`crate::control`); the other side sends what this lacks.
    pub control: ControlVector,
    /// The scopes a device's grant no longer holds that it still pushes its own batches of, each
    /// with the last seq it will push there (docs/design.md section 10, "Regrants"); at most
    /// [`MAX_DRAINS`], each a scope name. Empty from servers and hubs.
    pub drains: Vec<Drain>,
    /// The scopes a device dropped (docs/design.md section 10, "Regrants") and now holds again,
    /// each with the seq of its own stream there it holds up to: relays serve it its own past
    /// batches of exactly those streams above that seq, in its pulls (a regained scope's first
    /// sync); at most [`MAX_REGAINS`], each a scope name. Empty from servers and hubs.
    pub regain: Vec<Regain>,
    /// A sealed tenant's scope keys for the client, each wrapped to one site's static key
    /// (docs/design.md section 10, "Sealed batches"): a server answers a device's hello with its
    /// envelope, so a device back from weeks offline learns a new epoch before it pushes; the
    /// cloud answers a hub's with the envelopes of the devices the hub may serve, which the hub
    /// keeps and hands on unopened. At most [`MAX_HELLO_KEYS`], each at most
    /// [`crate::seal::envelope::MAX_LEN`] bytes. Empty from clients and in unsealed tenants.
    pub keys: Vec<SealedKeys>,
}

/// The most key envelopes one hello carries ([`Hello::keys`]): a device's answer carries its
/// own; a hub's, from its cloud, those of the devices it may serve.
pub const MAX_HELLO_KEYS: usize = 1024;

/// Scope keys wrapped to one site's static key (`crate::seal::envelope`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SealedKeys {
    /// The site whose static key opens the envelope.
    pub site: SiteId,
    /// The envelope.
    pub envelope: Bytes,
}

/// The most removed scopes one hello may declare ([`Hello::drains`]).
pub const MAX_DRAINS: usize = 64;

/// A scope removed from a device's grant, draining: relays take the device's own batches of
/// that scope's stream up to `last`, and nothing above it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Drain {
    /// The removed scope (a scope name, never `""`).
    pub scope: String,
    /// The last seq of the device's own stream of that scope it will push (0: none).
    pub last: u64,
}

/// The most regained scopes one hello may declare ([`Hello::regain`]).
pub const MAX_REGAINS: usize = 64;

/// A scope a device dropped and holds again: relays serve it its own batches of that scope's
/// stream above `since` when it pulls.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Regain {
    /// The regained scope (a scope name, never `""`).
    pub scope: String,
    /// The seq of the device's own stream of that scope it holds up to (0: none).
    pub since: u64,
}

/// One batch a server now covers, in an [`Message::Ack`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Covered {
    /// The batch's origin.
    pub origin: SiteId,
    /// The batch's stream (scope id; `""` unscoped).
    pub scope: String,
    /// The seq range it covers.
    pub range: SeqRange,
    /// The SHA-256 of its body (the batch header's `body_sha256`).
    pub batch_sha256: [u8; 32],
}

impl Covered {
    /// The stream the covered batch belongs to.
    pub fn stream_id(&self) -> crate::vector::StreamId {
        crate::vector::StreamId::new(self.origin, self.scope.as_str())
    }
}

/// Why a push must start over.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PushAgainReason {
    /// The server does not know the session id (tag 0).
    UnknownSession,
    /// The session's staged batches expired (tag 1).
    SessionExpired,
    /// A retry under the same session id carried different content (tag 2).
    DifferentContent,
    /// The pushed batches do not start at the server's coverage + 1 (tag 3).
    Gap,
}

/// The code of an [`Message::Error`]: what the receiver should do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peer's protocol version is not supported: upgrade (tag 0).
    UnsupportedVersion,
    /// Schema or merge configuration fingerprints differ: a column is configured differently
    /// (tag 1).
    ConfigMismatch,
    /// This site id is already bound to another key (a copied database): re-enroll (tag 2).
    SiteIdReused,
    /// The key is not, or no longer, admitted (tag 3).
    Unauthorized,
    /// A message could not be decoded (tag 4).
    BadMessage,
    /// A batch could not be decoded or verified (tag 5).
    BadBatch,
    /// A message or batch exceeds the receiver's limits (tag 6).
    TooLarge,
    /// Try again later (tag 7).
    Busy,
    /// The receiver failed internally (tag 8).
    Internal,
    /// A pushed batch names an origin the pusher may not push for: a device pushes only its own
    /// changes, a hub only other peers' (never the receiver's own) (tag 9).
    ForeignOrigin,
    /// A batch is unsigned, or its signature does not verify with its origin's key: it was not
    /// made by the site it names (tag 10).
    BadSignature,
    /// A relayed batch names an origin whose key the receiver does not know yet: nothing of the
    /// push was stored; retry later, after the control entries naming the key (tag 11).
    KeyUnknown,
    /// A device's pushed batch carries clocks beyond what the relay admits: more than a day
    /// ahead of its trusted time, and above every clock it already holds. Nothing of the push
    /// was stored; the device re-stamps its unsent changes with trusted time and pushes again
    /// (tag 12).
    ClockAhead,
    /// A pushed batch is flagged `down`: only the cloud writes those tables, and its batches
    /// travel by pull; nothing of the push was stored (tag 13).
    DirectionRefused,
    /// A device pushed a batch of a scope outside its grant; nothing of the push was stored
    /// (tag 14).
    ScopeRefused,
    /// A device's batch names a grant version the relay does not know yet; nothing of the push
    /// was stored: retry later (tag 15).
    GrantUnknown,
    /// A pushed batch is not sealed, in a sealed tenant; nothing of the push was stored: the
    /// device pushes once it holds its scope's key (tag 16).
    Unsealed,
    /// A device pushed a batch sealed under a retired key epoch of a scope it still holds,
    /// though this relay handed it the current one; nothing of the push was stored (tag 17).
    RetiredEpoch,
}

/// Bytes carried as one postcard byte string (length varint, then the bytes), not as a sequence
/// of single-byte elements: the same wire form, decoded without per-element work.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A session message. The variant order is the wire tag: append only.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// Tag 0: each side's opening message.
    Hello(Hello),
    /// Tag 1: one batch of a push (client → server), staged until [`Message::Commit`].
    Push {
        /// The push session.
        session: SessionId,
        /// An encoded batch (`batch::codec`).
        batch: Bytes,
    },
    /// Tag 2: store the session's staged batches in one transaction.
    Commit {
        /// The push session.
        session: SessionId,
    },
    /// Tag 3: the server now holds these batches; the client trusts only these ranges.
    Ack {
        /// The push session.
        session: SessionId,
        /// What the server now covers.
        covered: Vec<Covered>,
    },
    /// Tag 4: the push cannot be acknowledged; start it again.
    PushAgain {
        /// The push session.
        session: SessionId,
        /// Why.
        reason: PushAgainReason,
    },
    /// Tag 5: send me what this vector lacks (client → server).
    Pull {
        /// The client's vector.
        vector: VersionVector,
    },
    /// Tag 6: one batch of a pull (server → client).
    Chunk {
        /// An encoded batch.
        batch: Bytes,
    },
    /// Tag 7: the pull is complete; the client now covers this vector's ranges.
    PullDone {
        /// What the server sent up to.
        vector: VersionVector,
    },
    /// Tag 8: new changes are available (live mode); pull when ready.
    Notify,
    /// Tag 9: a typed error; the sender closes the session after it.
    Error {
        /// What to do about it.
        code: ErrorCode,
        /// For a person; never contains secrets.
        message: String,
    },
    /// Tag 10: the sender ends the session cleanly.
    Bye,
    /// Tag 11: keep-alive probe in live mode; answered by [`Message::Pong`].
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Tag 12: answer to [`Message::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Tag 13: reserve a block of numbers of a named sequence (client → server, after the pull).
    IdRequest(IdRequest),
    /// Tag 14: the numbers granted for an [`Message::IdRequest`] (server → client); no range when
    /// the server cannot grant now.
    IdGrant(IdGrant),
    /// Tag 15: the size of the pull just planned (server → client), before its first
    /// [`Message::Chunk`], so a client can show how much is left.
    PullSize {
        /// Batches the pull will send.
        batches: u64,
        /// Their encoded bytes.
        bytes: u64,
    },
    /// Tag 16: control entries the receiver lacks (`crate::control`), each as its writer signed
    /// it, at most [`crate::control::MAX_ENTRIES_PER_MESSAGE`]; sent right after the hellos
    /// (server to client always, client to server by a hub), before any push or pull.
    Control {
        /// Encoded entries, each writer's in seq order.
        entries: Vec<Bytes>,
    },
    /// Tag 17: a sealed tenant's key envelopes made after the hello (server → client; the same
    /// bounds as [`Hello::keys`]): a hub's newly admitted device's, once the cloud admitted the
    /// hub's entries for it; a device's, when its keys changed while it stays connected.
    Keys {
        /// The envelopes, each for one site.
        keys: Vec<SealedKeys>,
    },
}

/// The number of message tags this build knows.
pub const MESSAGE_TAGS: u64 = 18;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The input is empty.
    Empty,
    /// The input is larger than the limit.
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message tag is not one this build knows: the peer is newer, or the stream is corrupt.
    UnknownTag {
        /// The tag.
        tag: u64,
    },
    /// An enum inside the message (role, code, reason) has an unknown tag.
    UnknownInnerTag,
    /// The input ends early, or a length runs past its end (checked before allocating).
    Truncated,
    /// A varint is malformed or too wide.
    BadVarint,
    /// Text is not valid UTF-8.
    InvalidUtf8,
    /// Bytes follow the message.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A field has an impossible value.
    InvalidField {
        /// Which, and what is wrong.
        what: &'static str,
    },
    /// The bytes decode, but not in the one encoding this protocol allows (e.g. a varint with
    /// redundant bytes, or vector entries out of order).
    NonCanonical,
    /// Any other malformation (e.g. a bool that is not 0 or 1).
    Malformed,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Empty => f.write_str("empty message"),
            MessageError::TooLarge { len, max } => {
                write!(f, "message too large: {len} bytes, the limit is {max}")
            }
            MessageError::UnknownTag { tag } => write!(
                f,
                "unknown message tag {tag} (this build knows 0..{MESSAGE_TAGS}): the peer is newer"
            ),
            MessageError::UnknownInnerTag => {
                f.write_str("unknown role, error code or reason tag: the peer is newer")
            }
            MessageError::Truncated => {
                f.write_str("message truncated: a field or length runs past its end")
            }
            MessageError::BadVarint => f.write_str("malformed varint in message"),
            MessageError::InvalidUtf8 => f.write_str("message text is not valid UTF-8"),
            MessageError::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the end of the message")
            }
            MessageError::InvalidField { what } => write!(f, "invalid message field: {what}"),
            MessageError::NonCanonical => f.write_str("message is not canonically encoded"),
            MessageError::Malformed => f.write_str("malformed message"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MessageError {}

impl Message {
    /// The message's wire tag.
    pub fn tag(&self) -> u64 {
        match self {
            Message::Hello(_) => 0,
            Message::Push { .. } => 1,
            Message::Commit { .. } => 2,
            Message::Ack { .. } => 3,
            Message::PushAgain { .. } => 4,
            Message::Pull { .. } => 5,
            Message::Chunk { .. } => 6,
            Message::PullDone { .. } => 7,
            Message::Notify => 8,
            Message::Error { .. } => 9,
            Message::Bye => 10,
            Message::Ping { .. } => 11,
            Message::Pong { .. } => 12,
            Message::IdRequest(_) => 13,
            Message::IdGrant(_) => 14,
            Message::PullSize { .. } => 15,
            Message::Control { .. } => 16,
            Message::Keys { .. } => 17,
        }
    }

    /// Encodes the message (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a growable vector cannot fail.
        postcard::to_allocvec(self).expect("postcard into a Vec")
    }

    /// Decodes one message occupying all of `bytes`, at most `max_len` bytes long.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Message, MessageError> {
        if bytes.is_empty() {
            return Err(MessageError::Empty);
        }
        if bytes.len() > max_len {
            return Err(MessageError::TooLarge {
                len: bytes.len(),
                max: max_len,
            });
        }
        let (tag, _) = crate::varint::read_u64(bytes).map_err(|e| match e {
            crate::varint::VarintError::Truncated => MessageError::Truncated,
            crate::varint::VarintError::Overflow => MessageError::BadVarint,
        })?;
        if tag >= MESSAGE_TAGS {
            return Err(MessageError::UnknownTag { tag });
        }
        let (message, rest): (Message, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| match e {
                postcard::Error::DeserializeUnexpectedEnd => MessageError::Truncated,
                postcard::Error::DeserializeBadVarint => MessageError::BadVarint,
                postcard::Error::DeserializeBadUtf8 => MessageError::InvalidUtf8,
                // serde reports an unknown variant index as a custom error.
                postcard::Error::DeserializeBadEnum | postcard::Error::SerdeDeCustom => {
                    MessageError::UnknownInnerTag
                }
                _ => MessageError::Malformed,
            })?;
        if !rest.is_empty() {
            return Err(MessageError::TrailingBytes { count: rest.len() });
        }
        message.validate()?;
        if message.encode() != bytes {
            return Err(MessageError::NonCanonical);
        }
        Ok(message)
    }

    fn validate(&self) -> Result<(), MessageError> {
        // Every entry above 0 and, in data vectors, every scope a stream name.
        let vector_ok = |v: &VersionVector| v.iter().all(|(_, &seq)| seq > 0);
        let streams_ok = |v: &VersionVector| {
            v.iter()
                .all(|(s, _)| crate::batch::codec::valid_stream(&s.scope))
        };
        let control_ok = |v: &ControlVector| v.iter().all(|(_, &seq)| seq > 0);
        let bad = |what| Err(MessageError::InvalidField { what });
        match self {
            Message::Hello(h) if !vector_ok(&h.vector) => bad("hello vector has a zero entry"),
            Message::Hello(h) if !streams_ok(&h.vector) => {
                bad("hello vector names a stream that is not a scope id")
            }
            Message::Hello(h) if !control_ok(&h.control) => {
                bad("hello control vector has a zero entry")
            }
            Message::Hello(h) if h.drains.len() > MAX_DRAINS => {
                bad("hello declares more drains than a hello may carry")
            }
            Message::Hello(h)
                if h.drains
                    .iter()
                    .any(|d| crate::scope::check_name(&d.scope).is_err()) =>
            {
                bad("hello declares a drain of something that is not a scope name")
            }
            Message::Hello(h) if h.regain.len() > MAX_REGAINS => {
                bad("hello declares more regained scopes than a hello may carry")
            }
            Message::Hello(h)
                if h.regain
                    .iter()
                    .any(|r| crate::scope::check_name(&r.scope).is_err()) =>
            {
                bad("hello declares a regain of something that is not a scope name")
            }
            Message::Hello(Hello { keys, .. }) | Message::Keys { keys }
                if keys.len() > MAX_HELLO_KEYS =>
            {
                bad("more key envelopes than a message may carry")
            }
            Message::Hello(Hello { keys, .. }) | Message::Keys { keys }
                if keys
                    .iter()
                    .any(|k| k.envelope.0.len() > crate::seal::envelope::MAX_LEN) =>
            {
                bad("a key envelope longer than any envelope")
            }
            Message::Control { entries }
                if entries.len() > crate::control::MAX_ENTRIES_PER_MESSAGE =>
            {
                bad("more control entries than a message may carry")
            }
            Message::Control { entries }
                if entries
                    .iter()
                    .any(|e| e.0.len() > crate::control::MAX_ENTRY_BYTES) =>
            {
                bad("a control entry is too long")
            }
            Message::Pull { vector } | Message::PullDone { vector } if !vector_ok(vector) => {
                bad("vector has a zero entry")
            }
            Message::Pull { vector } | Message::PullDone { vector } if !streams_ok(vector) => {
                bad("vector names a stream that is not a scope id")
            }
            Message::Ack { covered, .. }
                if covered
                    .iter()
                    .any(|c| SeqRange::new(c.range.lo, c.range.hi).is_none()) =>
            {
                bad("ack range is empty or starts at 0")
            }
            Message::Ack { covered, .. }
                if covered
                    .iter()
                    .any(|c| !crate::batch::codec::valid_stream(&c.scope)) =>
            {
                bad("ack names a stream that is not a scope id")
            }
            Message::IdRequest(r) => {
                id_range::check_sequence(&r.sequence).or_else(|e| bad(e.as_str()))?;
                id_range::check_count(r.count).or_else(|e| bad(e.as_str()))
            }
            Message::IdGrant(g) => {
                id_range::check_sequence(&g.sequence).or_else(|e| bad(e.as_str()))?;
                id_range::check_ranges(&g.ranges)
                    .map(|_| ())
                    .or_else(|e| bad(e.as_str()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
