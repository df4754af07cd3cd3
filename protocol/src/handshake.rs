//! The handshake that opens a secure channel (docs/design.md section 7), sans-I/O.
//!
//! **Patterns.** Sessions use `Noise_IK_P256_AESGCM_SHA256`: the initiator (a device, or a hub
//! calling the cloud) knows the responder's static key from its enrollment code and pins it, so
//! only the holder of that key can read the first message or produce a reply that authenticates
//! ([`HandshakeError::KeyMismatch`]). Enrollment uses `Noise_IKpsk2_P256_AESGCM_SHA256` with the
//! code's one-time token as the pre-shared key.
//!
//! **Messages**, each one frame (2-byte length prefix, see [`crate::frame`]):
//!
//! | # | direction | frame payload                                                        | bytes    |
//! |---|-----------|----------------------------------------------------------------------|----------|
//! | 1 | I → R     | version (u16 BE) ‖ mode (0 session, 1 enroll, 2 admit) ‖ Noise message 1 | 189, 205, 189 + admission |
//! | 2 | R → I     | Noise message 2; its payload is one status byte (0 = admitted)       | 82       |
//! | 3 | I → R     | enrollment only: the first transport frame, plaintext `OPENROLL`      | 24       |
//!
//! A responder too loaded to serve another connection sends the **busy notice** instead
//! ([`BUSY_NOTICE`]: the frame `00 06` `OPBUSY`) and closes; the initiator reports
//! [`HandshakeError::Busy`]. It is the one unauthenticated thing an initiator acts on, and all it
//! does is retry later: anyone on the path could as well cut the connection.
//!
//! Message 1's encrypted payload is the initiator's handshake counter (u64 BE), its site id, and
//! in enrollment the [`TokenId`] naming the token (so the responder can pick the pre-shared key;
//! the id is a hash and reveals nothing of the token). With a two-part code (mode 2, the
//! enrollment pattern) it carries the code's signed admission instead
//! (`enroll_code::Admission`, at most `MAX_ADMISSION_BYTES`), whose token is the pre-shared key:
//! a hub that never saw the code checks the minter's signature ([`Gatekeeper::admission_token`])
//! and goes on as for a token it issued. Only the hub reads the admission (message 1 is
//! encrypted to its static key). The **prologue** binds the version, the
//! mode and the responder's site id: a peer that offers another version than the one it really
//! speaks (a rewritten header), or that targets another hub, fails to authenticate.
//!
//! **Responder checks**, in this order, each through the caller's [`Gatekeeper`]: the key is
//! admitted and bound to the presented site id (session) or the token is usable and the site id
//! is not bound to another key (enrollment); then the counter must be strictly above the last one
//! seen for the key, and is recorded durably **before** the reply is written. A refusal is sent in
//! message 2's payload, which the initiator can authenticate, so a device can tell its user
//! "revoked" or "re-enroll" with confidence; when the refusal concerns the token itself, the reply
//! is keyed with a random pre-shared key instead and the initiator reports
//! [`HandshakeError::EnrollmentRefused`]. In enrollment, the responder calls
//! [`Gatekeeper::admit`] (token used + device admitted, one transaction) only after message 3
//! proved the initiator holds the token.
//!
//! **Failure.** Every error is final. A message that fails to authenticate gets no answer: the
//! caller sends what [`Responder::take_outgoing`] holds (a refusal, or nothing) and closes.

pub mod keys;
pub(crate) mod layout;
mod noise;

pub use keys::{KeyError, Keypair, PublicKey, PUBLIC_KEY_LEN, PUBLIC_KEY_PREFIX, SECRET_KEY_LEN};
pub use layout::{
    BUSY_NOTICE, BUSY_PAYLOAD, ENROLL_CONFIRM, HANDSHAKE_MAX_FRAME, MODE_ADMIT, MODE_ENROLL,
    MODE_SESSION, MSG1_ADMIT_MIN, MSG1_LEN, MSG2_LEN, MSG3_LEN,
};
pub use noise::{primitives, ENROLL_PATTERN, PROLOGUE_LABEL, SESSION_PATTERN};

use crate::channel::{Channel, Limits, Peer};
use crate::frame::{encode_frame, FrameDecoder, FrameError};
use crate::site::SiteId;
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use layout::{HEADER_LEN, PAYLOAD_ENROLL, PAYLOAD_SESSION};
use noise::{params, prologue, Resolver, SeededRng};
use sha2::{Digest, Sha256};

/// Names an enrollment token without revealing it: the first 16 bytes of
/// SHA-256(`outpost-enroll-token` ‖ token).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TokenId(pub [u8; 16]);

impl TokenId {
    /// The id of a token.
    pub fn of(token: &[u8; 32]) -> TokenId {
        let mut h = Sha256::new();
        h.update(b"outpost-enroll-token");
        h.update(token);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize()[..16]);
        TokenId(id)
    }
}

/// The randomness of one handshake (it seeds the ephemeral key). Use a fresh value for every
/// handshake: reusing one reuses the ephemeral key.
#[derive(Clone)]
pub struct Ephemeral([u8; 32]);

impl fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ephemeral(..)")
    }
}

impl Ephemeral {
    /// From 32 bytes of the caller's CSPRNG (devices without `std`), or fixed bytes in tests.
    pub fn from_seed(seed: [u8; 32]) -> Ephemeral {
        Ephemeral(seed)
    }

    /// From the operating system's random source.
    #[cfg(feature = "std")]
    pub fn from_os() -> Result<Ephemeral, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|_| KeyError::Random)?;
        Ok(Ephemeral(seed))
    }
}

/// What the initiator opens the channel for.
#[derive(Clone)]
pub enum Purpose {
    /// A sync session with a responder that has admitted this key.
    Session,
    /// Enrollment with the one-time token from the enrollment code.
    Enroll {
        /// The token (the pre-shared key).
        token: [u8; 32],
    },
    /// Enrollment with a two-part code: message 1 carries its admission (encoded and signed by
    /// the minter), whose token is the pre-shared key; the responder need never have seen it.
    Admit {
        /// The admission as the code holds it ([`crate::enroll_code::Admission::encode`]).
        admission: Vec<u8>,
        /// Its token.
        token: [u8; 32],
    },
}

impl fmt::Debug for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Purpose::Session => f.write_str("Session"),
            Purpose::Enroll { token } => write!(f, "Enroll({:?})", TokenId::of(token)),
            Purpose::Admit { token, .. } => write!(f, "Admit({:?})", TokenId::of(token)),
        }
    }
}

/// Everything the initiator needs.
#[derive(Clone, Debug)]
pub struct InitiatorConfig {
    /// This peer's static key.
    pub identity: Keypair,
    /// This peer's site id.
    pub site: SiteId,
    /// The handshake counter: strictly above every value used before with this key. The caller
    /// persists it **before** sending (see [`Initiator::counter`]).
    pub counter: u64,
    /// The responder's pinned static key (from the enrollment code).
    pub responder_key: PublicKey,
    /// The responder's site id (from the enrollment code); part of the prologue.
    pub responder_site: SiteId,
    /// Session or enrollment.
    pub purpose: Purpose,
    /// The protocol version offered ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
}

/// Everything the responder needs.
#[derive(Clone, Debug)]
pub struct ResponderConfig {
    /// This peer's static key.
    pub identity: Keypair,
    /// This peer's site id; part of the prologue.
    pub site: SiteId,
    /// Oldest protocol version accepted.
    pub min_version: u16,
    /// Newest protocol version accepted.
    pub max_version: u16,
}

/// Why a responder refuses a peer. Sent to the initiator in message 2 (authenticated), except for
/// the token refusals, which the initiator sees as [`HandshakeError::EnrollmentRefused`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// The key is not enrolled here.
    UnknownKey,
    /// The key was revoked.
    Revoked,
    /// The site id is bound to another key: a copied or restored database.
    SiteReused,
    /// The handshake counter is not above the last one seen for this key.
    ReplayedHandshake,
    /// The enrollment token is not known here (mistyped, or issued by another hub).
    UnknownToken,
    /// The enrollment token was already used.
    TokenUsed,
    /// The enrollment token expired.
    TokenExpired,
    /// The responder cannot check right now (its store failed); try again later.
    Unavailable,
}

impl Refusal {
    /// The status byte in message 2.
    pub fn code(self) -> u8 {
        match self {
            Refusal::UnknownKey => 1,
            Refusal::Revoked => 2,
            Refusal::SiteReused => 3,
            Refusal::ReplayedHandshake => 4,
            Refusal::UnknownToken => 5,
            Refusal::TokenUsed => 6,
            Refusal::TokenExpired => 7,
            Refusal::Unavailable => 8,
        }
    }

    /// The refusal of a status byte, `None` for 0 (admitted) and unknown codes.
    pub fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            1 => Refusal::UnknownKey,
            2 => Refusal::Revoked,
            3 => Refusal::SiteReused,
            4 => Refusal::ReplayedHandshake,
            5 => Refusal::UnknownToken,
            6 => Refusal::TokenUsed,
            7 => Refusal::TokenExpired,
            8 => Refusal::Unavailable,
            _ => return None,
        })
    }

    fn is_token(self) -> bool {
        matches!(
            self,
            Refusal::UnknownToken | Refusal::TokenUsed | Refusal::TokenExpired
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::UnknownKey => "unknown key: this device is not enrolled with this peer; enroll it with a new enrollment code",
            Refusal::Revoked => "revoked key: this device's access was revoked; ask the operator to enroll it again",
            Refusal::SiteReused => "this database's site id is already bound to another key (a copied or restored database file): re-enroll this device, which gives the database a new site id",
            Refusal::ReplayedHandshake => "replayed handshake: the handshake counter is not above the last one accepted for this key",
            Refusal::UnknownToken => "unknown enrollment token: the code was mistyped or issued by another hub; ask for a new code",
            Refusal::TokenUsed => "enrollment token already used: ask for a new enrollment code",
            Refusal::TokenExpired => "enrollment token expired: ask for a new enrollment code",
            Refusal::Unavailable => "the peer cannot check access right now; try again later",
        })
    }
}

/// The responder's view of who may connect: implemented by the hub and the cloud over their
/// allowlist. Every method may refuse; a store failure should be [`Refusal::Unavailable`].
pub trait Gatekeeper {
    /// Session: `key` is admitted, not revoked, and bound to `site`.
    fn authorize(&mut self, key: &PublicKey, site: &SiteId) -> Result<(), Refusal>;
    /// The highest handshake counter accepted from `key`, if any.
    fn last_counter(&mut self, key: &PublicKey) -> Result<Option<u64>, Refusal>;
    /// Records `counter` for `key` durably (it is above the last one). Called before the reply.
    fn record_counter(&mut self, key: &PublicKey, counter: u64) -> Result<(), Refusal>;
    /// Enrollment: the token named `id`, if it is usable now.
    fn enrollment_token(&mut self, id: &TokenId) -> Result<[u8; 32], Refusal>;
    /// Enrollment: `key` may enroll with `site` (not revoked; `site` not bound to another key).
    fn check_enrollment(&mut self, key: &PublicKey, site: &SiteId) -> Result<(), Refusal>;
    /// Enrollment, after the initiator proved it holds the token: mark the token used and admit
    /// `(key, site)` in one durable transaction.
    fn admit(&mut self, id: &TokenId, key: &PublicKey, site: &SiteId) -> Result<(), Refusal>;
    /// Enrollment with a two-part code: `admission` (decoded, its signature not checked yet) is
    /// good here now (signed by a minter this responder trusts with what it grants, for this
    /// responder, not expired, its token not used): its token becomes usable as if issued here
    /// ([`Gatekeeper::enrollment_token`], then [`Gatekeeper::admit`] once message 3 proved it).
    /// A responder that takes no admissions refuses with [`Refusal::UnknownToken`].
    fn admission_token(
        &mut self,
        admission: &crate::enroll_code::Admission,
    ) -> Result<[u8; 32], Refusal> {
        let _ = admission;
        Err(Refusal::UnknownToken)
    }
}

/// Why a handshake failed. Every error is final: close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The framing layer refused the bytes (zero or oversized length, stream ended mid-frame).
    Frame(FrameError),
    /// The initiator offers a protocol version outside what the responder accepts.
    UnsupportedVersion {
        /// Offered.
        offered: u16,
        /// Oldest accepted.
        min: u16,
        /// Newest accepted.
        max: u16,
    },
    /// Message 1 names an unknown mode.
    UnknownMode {
        /// The mode byte.
        mode: u8,
    },
    /// A handshake message is shorter than its fixed length.
    Truncated {
        /// Which message (1, 2, 3).
        message: u8,
        /// Its length.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// A handshake message is longer than its fixed length.
    TrailingBytes {
        /// Which message (1, 2, 3).
        message: u8,
        /// How many bytes too many.
        count: usize,
    },
    /// Responder: message 1 did not authenticate. It was encrypted to another key, or for
    /// another version, mode or hub than its header says (a downgrade attempt), or altered.
    Unauthenticated,
    /// Initiator: the reply did not prove the pinned key.
    KeyMismatch,
    /// Initiator: the enrollment reply did not authenticate with the token.
    EnrollmentRefused,
    /// Responder: message 3 did not authenticate: the initiator does not hold the token.
    TokenMismatch,
    /// The responder refused the initiator (on the initiator: as told by the responder).
    Refused(Refusal),
    /// Responder: the counter in message 1 is not above the last one seen for this key.
    ReplayedHandshake {
        /// The counter received.
        counter: u64,
        /// The last accepted.
        last: u64,
    },
    /// A decrypted payload has an impossible layout (an unknown status, a wrong confirmation).
    BadPayload,
    /// The handshake did not finish by its deadline.
    TimedOut {
        /// The deadline, in the caller's milliseconds.
        deadline_ms: u64,
    },
    /// The handshake already finished or failed; a connection has one handshake.
    Finished,
    /// The Noise library refused an operation this module never asks for in valid use.
    Noise,
    /// Initiator: the responder sent the busy notice instead of message 2: it has too many
    /// connections now. Retry later (not authenticated: nothing else may follow from it).
    Busy,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Frame(e) => write!(f, "handshake framing: {e}"),
            HandshakeError::UnsupportedVersion { offered, min, max } => write!(
                f,
                "protocol version {offered} not supported (accepted: {min}..={max}): update the older peer"
            ),
            HandshakeError::UnknownMode { mode } => write!(f, "unknown handshake mode {mode}"),
            HandshakeError::Truncated { message, expected, got } => write!(
                f,
                "handshake message {message} truncated: expected {expected} bytes, got {got}"
            ),
            HandshakeError::TrailingBytes { message, count } => write!(
                f,
                "handshake message {message} has {count} unexpected trailing bytes"
            ),
            HandshakeError::Unauthenticated => f.write_str(
                "handshake did not authenticate: the peer used another key, version or hub identity than this one, or the message was altered in transit",
            ),
            HandshakeError::KeyMismatch => f.write_str(
                "key mismatch: this is not the hub you enrolled with (its reply does not prove the key in your enrollment code), or the reply was altered in transit",
            ),
            HandshakeError::EnrollmentRefused => f.write_str(
                "enrollment refused: the code's token is used, expired or from another hub (or this is not the hub the code names); ask for a new enrollment code",
            ),
            HandshakeError::TokenMismatch => f.write_str(
                "enrollment failed: the peer does not hold the enrollment token it named",
            ),
            HandshakeError::Refused(r) => write!(f, "refused: {r}"),
            HandshakeError::ReplayedHandshake { counter, last } => write!(
                f,
                "replayed handshake: counter {counter} is not above the last accepted ({last})"
            ),
            HandshakeError::BadPayload => f.write_str("handshake payload is malformed"),
            HandshakeError::TimedOut { deadline_ms } => {
                write!(f, "handshake not finished by its deadline ({deadline_ms} ms)")
            }
            HandshakeError::Finished => {
                f.write_str("second handshake on this connection: reconnect to handshake again")
            }
            HandshakeError::Noise => f.write_str("internal handshake failure"),
            HandshakeError::Busy => {
                f.write_str("peer busy (too many connections): retry later")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HandshakeError {}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        HandshakeError::Frame(e)
    }
}

fn check_len(message: u8, got: usize, expected: usize) -> Result<(), HandshakeError> {
    if got < expected {
        Err(HandshakeError::Truncated {
            message,
            expected,
            got,
        })
    } else if got > expected {
        Err(HandshakeError::TrailingBytes {
            message,
            count: got - expected,
        })
    } else {
        Ok(())
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2);
    // Handshake messages are at most HANDSHAKE_MAX_FRAME bytes: always a valid frame.
    encode_frame(payload, &mut out).expect("handshake message fits a frame");
    out
}

/// Shared sans-I/O plumbing: bytes in, one frame at a time; bytes out; a deadline.
struct Wire {
    frames: FrameDecoder,
    out: Vec<u8>,
    deadline_ms: u64,
    limits: Limits,
}

impl Wire {
    fn new(limits: Limits, now_ms: u64) -> Wire {
        Wire {
            frames: FrameDecoder::with_max_len(HANDSHAKE_MAX_FRAME),
            out: Vec::new(),
            deadline_ms: now_ms.saturating_add(limits.handshake_ms),
            limits,
        }
    }

    fn next_frame(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, HandshakeError> {
        if now_ms > self.deadline_ms {
            return Err(HandshakeError::TimedOut {
                deadline_ms: self.deadline_ms,
            });
        }
        Ok(self.frames.decode(input)?)
    }
}

enum InitState {
    AwaitReply(Box<snow::HandshakeState>),
    Done,
}

/// The initiator's side of a handshake. Send [`Initiator::take_outgoing`], feed what arrives to
/// [`Initiator::receive`] until it returns the open [`Channel`].
pub struct Initiator {
    state: InitState,
    wire: Wire,
    enroll: bool,
    responder_key: PublicKey,
    responder_site: SiteId,
    counter: u64,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("responder", &self.responder_key)
            .field("enroll", &self.enroll)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Writes message 1 (taken with [`Initiator::take_outgoing`]). The caller must have persisted
    /// `config.counter` as used before sending it: a counter must never be offered twice.
    pub fn start(
        config: &InitiatorConfig,
        ephemeral: Ephemeral,
        limits: Limits,
        now_ms: u64,
    ) -> Result<Initiator, HandshakeError> {
        let (enroll, mode, psk) = match &config.purpose {
            Purpose::Session => (false, MODE_SESSION, None),
            Purpose::Enroll { token } => (true, MODE_ENROLL, Some(*token)),
            Purpose::Admit { admission, token } => {
                if admission.is_empty() || admission.len() > crate::enroll_code::MAX_ADMISSION_BYTES
                {
                    return Err(HandshakeError::BadPayload);
                }
                (true, MODE_ADMIT, Some(*token))
            }
        };
        let prologue = prologue(config.version, mode, config.responder_site.as_bytes());
        let builder = snow::Builder::with_resolver(params(enroll), Resolver::boxed(ephemeral.0))
            .local_private_key(config.identity.secret_bytes())
            .and_then(|b| b.remote_public_key(config.responder_key.as_bytes()))
            .and_then(|b| b.prologue(&prologue));
        let builder = match (builder, &psk) {
            (Ok(b), Some(psk)) => b.psk(2, psk),
            (b, _) => b,
        };
        let mut hs = builder
            .and_then(|b| b.build_initiator())
            .map_err(|_| HandshakeError::Noise)?;
        let mut payload = Vec::with_capacity(PAYLOAD_ENROLL);
        payload.extend_from_slice(&config.counter.to_be_bytes());
        payload.extend_from_slice(config.site.as_bytes());
        let len = match (&config.purpose, &psk) {
            (Purpose::Admit { admission, .. }, _) => {
                payload.extend_from_slice(admission);
                MSG1_ADMIT_MIN + admission.len()
            }
            (_, Some(token)) => {
                payload.extend_from_slice(&TokenId::of(token).0);
                MSG1_LEN[1]
            }
            (_, None) => MSG1_LEN[0],
        };
        let mut msg = vec![0u8; len];
        msg[..2].copy_from_slice(&config.version.to_be_bytes());
        msg[2] = mode;
        let n = hs
            .write_message(&payload, &mut msg[HEADER_LEN..])
            .map_err(|_| HandshakeError::Noise)?;
        debug_assert_eq!(HEADER_LEN + n, len);
        let mut wire = Wire::new(limits, now_ms);
        wire.out = framed(&msg);
        Ok(Initiator {
            state: InitState::AwaitReply(Box::new(hs)),
            wire,
            enroll,
            responder_key: config.responder_key,
            responder_site: config.responder_site,
            counter: config.counter,
        })
    }

    /// The counter this handshake offers.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Bytes to send now.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.wire.out)
    }

    /// When the handshake must have finished (caller's milliseconds).
    pub fn deadline_ms(&self) -> u64 {
        self.wire.deadline_ms
    }

    /// `Err(TimedOut)` once `now_ms` is past the deadline.
    pub fn check_deadline(&self, now_ms: u64) -> Result<(), HandshakeError> {
        if now_ms > self.wire.deadline_ms {
            return Err(HandshakeError::TimedOut {
                deadline_ms: self.wire.deadline_ms,
            });
        }
        Ok(())
    }

    /// Consumes bytes from `input` up to the end of the reply. Returns the open channel once the
    /// reply authenticated; bytes after it in `input` belong to the channel. In enrollment the
    /// channel's outgoing bytes start with message 3.
    pub fn receive(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
    ) -> Result<Option<Channel>, HandshakeError> {
        if matches!(self.state, InitState::Done) {
            return Err(HandshakeError::Finished);
        }
        let r = self.receive_inner(input, now_ms);
        if !matches!(r, Ok(None)) {
            self.state = InitState::Done;
        }
        r
    }

    fn receive_inner(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
    ) -> Result<Option<Channel>, HandshakeError> {
        let Some(frame) = self.wire.next_frame(input, now_ms)? else {
            return Ok(None);
        };
        let InitState::AwaitReply(hs) = core::mem::replace(&mut self.state, InitState::Done) else {
            return Err(HandshakeError::Finished);
        };
        let mut hs = *hs;
        if frame == BUSY_PAYLOAD {
            return Err(HandshakeError::Busy);
        }
        check_len(2, frame.len(), MSG2_LEN)?;
        let mut status = [0u8; MSG2_LEN];
        let n = hs.read_message(&frame, &mut status).map_err(|_| {
            if self.enroll {
                HandshakeError::EnrollmentRefused
            } else {
                HandshakeError::KeyMismatch
            }
        })?;
        if n != 1 {
            return Err(HandshakeError::BadPayload);
        }
        if status[0] != 0 {
            return Err(match Refusal::from_code(status[0]) {
                Some(r) => HandshakeError::Refused(r),
                None => HandshakeError::BadPayload,
            });
        }
        let hash = handshake_hash(&hs);
        let transport = hs
            .into_transport_mode()
            .map_err(|_| HandshakeError::Noise)?;
        let peer = Peer {
            key: self.responder_key,
            site: self.responder_site,
            counter: self.counter,
            enrolled: self.enroll,
        };
        let mut channel = Channel::open(transport, peer, hash, self.wire.limits, now_ms);
        if self.enroll {
            channel
                .seal_raw(ENROLL_CONFIRM)
                .map_err(|_| HandshakeError::Noise)?;
        }
        Ok(Some(channel))
    }
}

fn handshake_hash(hs: &snow::HandshakeState) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(&hs.get_handshake_hash()[..32]);
    h
}

/// What message 1 of an enrollment names its token by.
enum Token<'p> {
    /// Its id (a code this responder issued).
    Id(TokenId),
    /// A two-part code's admission, encoded.
    Admission(&'p [u8]),
}

enum RespState {
    AwaitFirst,
    AwaitConfirm {
        channel: Box<Channel>,
        token: TokenId,
    },
    Done,
}

/// The responder's side of a handshake. Feed what arrives to [`Responder::receive`] and send
/// [`Responder::take_outgoing`] after every call, **also after an error** (it may hold a refusal
/// the initiator can authenticate), then close on error.
pub struct Responder {
    config: ResponderConfig,
    rng_seed: [u8; 32],
    state: RespState,
    wire: Wire,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("site", &self.config.site)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// A responder waiting for message 1. `ephemeral` seeds its ephemeral key.
    pub fn new(
        config: ResponderConfig,
        ephemeral: Ephemeral,
        limits: Limits,
        now_ms: u64,
    ) -> Responder {
        Responder {
            config,
            rng_seed: ephemeral.0,
            state: RespState::AwaitFirst,
            wire: Wire::new(limits, now_ms),
        }
    }

    /// Bytes to send now.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.wire.out)
    }

    /// When the handshake must have finished (caller's milliseconds).
    pub fn deadline_ms(&self) -> u64 {
        self.wire.deadline_ms
    }

    /// `Err(TimedOut)` once `now_ms` is past the deadline.
    pub fn check_deadline(&self, now_ms: u64) -> Result<(), HandshakeError> {
        if now_ms > self.wire.deadline_ms {
            return Err(HandshakeError::TimedOut {
                deadline_ms: self.wire.deadline_ms,
            });
        }
        Ok(())
    }

    /// Consumes bytes from `input` up to the end of the handshake. Returns the open channel when
    /// the initiator is admitted (in enrollment: after [`Gatekeeper::admit`] succeeded).
    pub fn receive(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
        gate: &mut dyn Gatekeeper,
    ) -> Result<Option<Channel>, HandshakeError> {
        loop {
            let r = match self.state {
                RespState::Done => return Err(HandshakeError::Finished),
                RespState::AwaitFirst => self.first(input, now_ms, gate),
                RespState::AwaitConfirm { .. } => self.confirm(input, now_ms, gate),
            };
            match r {
                Ok(None) if matches!(self.state, RespState::AwaitConfirm { .. }) => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                }
                Ok(None) if matches!(self.state, RespState::AwaitFirst) => return Ok(None),
                Ok(other) => return Ok(other),
                Err(e) => {
                    self.state = RespState::Done;
                    return Err(e);
                }
            }
        }
    }

    fn first(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
        gate: &mut dyn Gatekeeper,
    ) -> Result<Option<Channel>, HandshakeError> {
        let Some(frame) = self.wire.next_frame(input, now_ms)? else {
            return Ok(None);
        };
        if frame.len() < HEADER_LEN {
            return Err(HandshakeError::Truncated {
                message: 1,
                expected: MSG1_LEN[0],
                got: frame.len(),
            });
        }
        let version = u16::from_be_bytes([frame[0], frame[1]]);
        let mode = frame[2];
        let enroll = match mode {
            MODE_SESSION => false,
            MODE_ENROLL | MODE_ADMIT => true,
            _ => return Err(HandshakeError::UnknownMode { mode }),
        };
        let (min, max) = (self.config.min_version, self.config.max_version);
        if version < min || version > max {
            return Err(HandshakeError::UnsupportedVersion {
                offered: version,
                min,
                max,
            });
        }
        if mode == MODE_ADMIT {
            // Any length from one admission byte up: the frame decoder bounded it
            // (`HANDSHAKE_MAX_FRAME`), and the admission's own decoder checks the rest.
            if frame.len() <= MSG1_ADMIT_MIN {
                return Err(HandshakeError::Truncated {
                    message: 1,
                    expected: MSG1_ADMIT_MIN + 1,
                    got: frame.len(),
                });
            }
        } else {
            check_len(1, frame.len(), MSG1_LEN[enroll as usize])?;
        }
        let prologue = prologue(version, mode, self.config.site.as_bytes());
        let mut hs = snow::Builder::with_resolver(params(enroll), Resolver::boxed(self.rng_seed))
            .local_private_key(self.config.identity.secret_bytes())
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_responder())
            .map_err(|_| HandshakeError::Noise)?;
        let mut payload = vec![0u8; frame.len()];
        let n = hs
            .read_message(&frame[HEADER_LEN..], &mut payload)
            .map_err(|_| HandshakeError::Unauthenticated)?;
        let want = match mode {
            MODE_ADMIT => frame.len() - MSG1_ADMIT_MIN + PAYLOAD_SESSION,
            MODE_ENROLL => PAYLOAD_ENROLL,
            _ => PAYLOAD_SESSION,
        };
        if n != want {
            return Err(HandshakeError::BadPayload);
        }
        let counter = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
        let site = SiteId::from_slice(&payload[8..24]).expect("16 bytes");
        let key = hs
            .get_remote_static()
            .and_then(|k| PublicKey::from_sec1(k).ok())
            .ok_or(HandshakeError::Unauthenticated)?;
        let token = match mode {
            MODE_ENROLL => Some(Token::Id(TokenId(
                payload[24..40].try_into().expect("16 bytes"),
            ))),
            MODE_ADMIT => Some(Token::Admission(&payload[24..n])),
            _ => None,
        };

        let verdict = self.admission(gate, &key, &site, counter, token, &mut hs);
        let status = match &verdict {
            Ok(_) => 0,
            Err(HandshakeError::Refused(r)) => r.code(),
            Err(HandshakeError::ReplayedHandshake { .. }) => Refusal::ReplayedHandshake.code(),
            Err(_) => Refusal::Unavailable.code(),
        };
        let mut reply = [0u8; MSG2_LEN];
        let n = hs
            .write_message(&[status], &mut reply)
            .map_err(|_| HandshakeError::Noise)?;
        self.wire.out.extend_from_slice(&framed(&reply[..n]));
        let token = verdict?;
        let hash = handshake_hash(&hs);
        let transport = hs
            .into_transport_mode()
            .map_err(|_| HandshakeError::Noise)?;
        let peer = Peer {
            key,
            site,
            counter,
            enrolled: enroll,
        };
        let channel = Channel::open(transport, peer, hash, self.wire.limits, now_ms);
        match token {
            None => {
                self.state = RespState::Done;
                Ok(Some(channel))
            }
            Some(token) => {
                self.state = RespState::AwaitConfirm {
                    channel: Box::new(channel),
                    token,
                };
                Ok(None)
            }
        }
    }

    /// The checks of message 1, in order; sets the pre-shared key for the reply in enrollment.
    /// Returns the id of the token the enrollment uses (`None` for a session).
    fn admission(
        &mut self,
        gate: &mut dyn Gatekeeper,
        key: &PublicKey,
        site: &SiteId,
        counter: u64,
        token: Option<Token>,
        hs: &mut snow::HandshakeState,
    ) -> Result<Option<TokenId>, HandshakeError> {
        // An admission makes its token usable here first (or is refused like a bad token).
        let token = match token {
            Some(Token::Admission(bytes)) => {
                let usable = crate::enroll_code::Admission::decode(bytes)
                    .map_err(|_| Refusal::UnknownToken)
                    .and_then(|a| gate.admission_token(&a).map(|t| TokenId::of(&t)));
                match usable {
                    Ok(id) => Some(id),
                    Err(r) => return Err(self.token_refused(hs, r)),
                }
            }
            Some(Token::Id(id)) => Some(id),
            None => None,
        };
        if let Some(id) = &token {
            let psk = match gate.enrollment_token(id) {
                Ok(psk) => psk,
                Err(r) => return Err(self.token_refused(hs, r)),
            };
            hs.set_psk(2, &psk).map_err(|_| HandshakeError::Noise)?;
            gate.check_enrollment(key, site)
                .map_err(HandshakeError::Refused)?;
        } else {
            gate.authorize(key, site).map_err(HandshakeError::Refused)?;
        }
        if let Some(last) = gate.last_counter(key).map_err(HandshakeError::Refused)? {
            if counter <= last {
                return Err(HandshakeError::ReplayedHandshake { counter, last });
            }
        }
        gate.record_counter(key, counter)
            .map_err(HandshakeError::Refused)?;
        Ok(token)
    }

    /// A refusal of the token: the reply must still be a valid message 2; keyed with a random
    /// psk, the initiator cannot read it and reports EnrollmentRefused.
    fn token_refused(&self, hs: &mut snow::HandshakeState, r: Refusal) -> HandshakeError {
        let mut rng = SeededRng::new(self.rng_seed);
        if hs.set_psk(2, &rng.bytes32()).is_err() {
            return HandshakeError::Noise;
        }
        HandshakeError::Refused(if r.is_token() {
            r
        } else {
            Refusal::Unavailable
        })
    }

    fn confirm(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
        gate: &mut dyn Gatekeeper,
    ) -> Result<Option<Channel>, HandshakeError> {
        let Some(frame) = self.wire.next_frame(input, now_ms)? else {
            return Ok(None);
        };
        let RespState::AwaitConfirm { mut channel, token } =
            core::mem::replace(&mut self.state, RespState::Done)
        else {
            return Err(HandshakeError::Finished);
        };
        check_len(3, frame.len(), MSG3_LEN)?;
        let plain = channel
            .open_raw(&frame)
            .map_err(|_| HandshakeError::TokenMismatch)?;
        if plain != ENROLL_CONFIRM {
            return Err(HandshakeError::BadPayload);
        }
        let peer = *channel.peer();
        gate.admit(&token, &peer.key, &peer.site)
            .map_err(HandshakeError::Refused)?;
        channel.touch(now_ms);
        Ok(Some(*channel))
    }
}

#[cfg(test)]
mod tests;
