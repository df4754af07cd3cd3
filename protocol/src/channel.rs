//! The secure channel after the handshake: framing + Noise transport, sans-I/O.
//!
//! **Wire.** Every frame (2-byte length, see [`crate::frame`]) carries one Noise transport
//! message: AES-256-GCM ciphertext of one frame payload of the message layer (a `whole`, `part` or
//! `end` frame, [`crate::frame::split_message`]) followed by its 16-byte tag. So a frame is at most
//! 65,535 bytes and its plaintext at most [`MAX_PLAINTEXT_LEN`]. Nonces are counters, one key per
//! direction (Noise's split): a replayed, reordered, dropped or modified frame fails to decrypt.
//!
//! **Failure.** Any error is final: the channel refuses every later call with the same error and
//! produces no bytes, so a failed decryption closes the connection **with no detail to the peer**
//! (the caller just closes the socket). Callers should not answer a [`ChannelError`] with a
//! session error message.
//!
//! **Limits** ([`Limits`]): the handshake deadline, an idle deadline (no frame received for
//! `idle_ms`), the largest frame and message accepted (checked before allocating), and the bytes
//! in flight: [`Channel::send`] refuses while more than `max_in_flight` sealed bytes wait for the
//! caller to take them. Time is the caller's `now_ms`; nothing here reads a clock.

use crate::frame::{
    encode_frame, split_message, FrameDecoder, FrameError, Reassembler, DEFAULT_MAX_MESSAGE,
    MAX_FRAME_LEN, MAX_PLAINTEXT_LEN, TAG_LEN,
};
use crate::handshake::keys::PublicKey;
use crate::handshake::layout::looks_like_first_message;
use crate::site::SiteId;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Time, size and memory limits of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The whole handshake must finish within this many milliseconds of its start.
    pub handshake_ms: u64,
    /// The channel fails when no frame arrived for this many milliseconds.
    pub idle_ms: u64,
    /// Largest frame accepted (prefix excluded); at most [`MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// Largest reassembled message accepted.
    pub max_message: usize,
    /// [`Channel::send`] refuses while more sealed bytes than this wait to be taken.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_ms: 10_000,
            idle_ms: 120_000,
            max_frame_len: MAX_FRAME_LEN,
            max_message: DEFAULT_MAX_MESSAGE,
            max_in_flight: 4 << 20,
        }
    }
}

/// Who is on the other end, as the handshake proved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its static key.
    pub key: PublicKey,
    /// Its site id (initiator: as pinned; responder: as presented in message 1 and admitted).
    pub site: SiteId,
    /// The initiator's handshake counter.
    pub counter: u64,
    /// True when this channel came from an enrollment handshake.
    pub enrolled: bool,
}

/// Why the channel failed. Every variant is final: close the connection without answering.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// The framing layer refused the bytes (length 0, above the limit, a damaged chunk sequence).
    Frame(FrameError),
    /// A frame is too short to hold the 16-byte tag and one byte of payload.
    FrameTooShort {
        /// Its length.
        len: usize,
    },
    /// A frame failed to decrypt: replayed, reordered, modified or forged.
    Decrypt,
    /// A frame failed to decrypt and has the shape of a first handshake message: a peer tried a
    /// second handshake on an open channel.
    HandshakeOnOpenChannel,
    /// No frame arrived before the idle deadline.
    IdleTimeout {
        /// The deadline missed, in the caller's milliseconds.
        deadline_ms: u64,
    },
    /// More than the in-flight limit of sealed bytes waits to be sent: take them first.
    Backpressure {
        /// Bytes waiting.
        queued: usize,
        /// The limit.
        max: usize,
    },
    /// The nonce counter is exhausted (2^64 frames): reconnect.
    NonceExhausted,
    /// The stream ended between the frames of a chunked message.
    EndedInMessage,
    /// The channel was closed by [`Channel::close`].
    Closed,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Frame(e) => write!(f, "channel framing: {e}"),
            ChannelError::FrameTooShort { len } => write!(
                f,
                "encrypted frame of {len} bytes is shorter than its tag plus one byte ({})",
                TAG_LEN + 1
            ),
            ChannelError::Decrypt => f.write_str(
                "a frame failed to authenticate (replayed, reordered, altered or forged): connection closed",
            ),
            ChannelError::HandshakeOnOpenChannel => f.write_str(
                "a second handshake arrived on an open channel: refused; one handshake per connection",
            ),
            ChannelError::IdleTimeout { deadline_ms } => {
                write!(f, "peer silent past the idle deadline ({deadline_ms} ms)")
            }
            ChannelError::Backpressure { queued, max } => write!(
                f,
                "{queued} bytes wait to be sent (limit {max}): send them before queueing more"
            ),
            ChannelError::NonceExhausted => f.write_str("channel nonces exhausted: reconnect"),
            ChannelError::EndedInMessage => {
                f.write_str("stream ended inside a chunked message, before its end frame")
            }
            ChannelError::Closed => f.write_str("channel closed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ChannelError {}

impl From<FrameError> for ChannelError {
    fn from(e: FrameError) -> Self {
        ChannelError::Frame(e)
    }
}

/// An open secure channel. Created by [`crate::handshake::Initiator`] or
/// [`crate::handshake::Responder`].
pub struct Channel {
    transport: snow::TransportState,
    peer: Peer,
    handshake_hash: [u8; 32],
    frames: FrameDecoder,
    messages: Reassembler,
    out: Vec<u8>,
    limits: Limits,
    last_rx_ms: u64,
    failed: Option<ChannelError>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.peer)
            .field("queued", &self.out.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Channel {
    pub(crate) fn open(
        transport: snow::TransportState,
        peer: Peer,
        handshake_hash: [u8; 32],
        limits: Limits,
        now_ms: u64,
    ) -> Channel {
        Channel {
            transport,
            peer,
            handshake_hash,
            frames: FrameDecoder::with_max_len(limits.max_frame_len),
            messages: Reassembler::new(limits.max_message),
            out: Vec::new(),
            limits,
            last_rx_ms: now_ms,
            failed: None,
        }
    }

    /// The authenticated peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The Noise handshake hash: the same on both ends, unique per connection (channel binding).
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The idle deadline: fail the connection if nothing arrived by then.
    pub fn deadline_ms(&self) -> u64 {
        self.last_rx_ms.saturating_add(self.limits.idle_ms)
    }

    /// `Err(IdleTimeout)` (final) once `now_ms` is past the idle deadline.
    pub fn check_deadline(&mut self, now_ms: u64) -> Result<(), ChannelError> {
        self.ok()?;
        if now_ms > self.deadline_ms() {
            return Err(self.fail(ChannelError::IdleTimeout {
                deadline_ms: self.deadline_ms(),
            }));
        }
        Ok(())
    }

    /// Sealed bytes waiting to be sent.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Bytes of a message still being received (its parts so far), held until it is whole.
    pub fn receiving(&self) -> usize {
        self.messages.buffered()
    }

    /// Takes the bytes to send now.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.out)
    }

    /// Ends the channel: every later call fails with [`ChannelError::Closed`].
    pub fn close(&mut self) {
        if self.failed.is_none() {
            self.failed = Some(ChannelError::Closed);
        }
        self.out = Vec::new();
    }

    /// Seals one message (chunked into frames as needed) into the outgoing bytes.
    pub fn send(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        self.ok()?;
        if self.out.len() > self.limits.max_in_flight {
            return Err(ChannelError::Backpressure {
                queued: self.out.len(),
                max: self.limits.max_in_flight,
            });
        }
        let max_plain = self
            .limits
            .max_frame_len
            .min(MAX_FRAME_LEN)
            .saturating_sub(TAG_LEN)
            .min(MAX_PLAINTEXT_LEN);
        for payload in split_message(message, max_plain) {
            self.seal_raw(&payload)?;
        }
        Ok(())
    }

    /// Consumes bytes from the front of `input` until a message is complete (returned) or `input`
    /// is empty (`Ok(None)`).
    pub fn receive(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, ChannelError> {
        self.check_deadline(now_ms)?;
        loop {
            let frame = match self.frames.decode(input) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.fail(e.into())),
            };
            self.last_rx_ms = now_ms;
            let plain = match self.open_raw(&frame) {
                Ok(p) => p,
                Err(e) => return Err(self.fail(e)),
            };
            match self.messages.push(&plain) {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e.into())),
            }
        }
    }

    /// Call when the stream ends: an error if it ended inside a frame or a chunked message.
    pub fn finish(&mut self) -> Result<(), ChannelError> {
        self.ok()?;
        if let Err(e) = self.frames.finish() {
            return Err(self.fail(e.into()));
        }
        if !self.messages.is_idle() {
            return Err(self.fail(ChannelError::EndedInMessage));
        }
        Ok(())
    }

    /// Encrypts one frame payload and appends the frame.
    pub(crate) fn seal_raw(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        let mut buf = vec![0u8; payload.len() + TAG_LEN];
        let n = self
            .transport
            .write_message(payload, &mut buf)
            .map_err(|_| ChannelError::NonceExhausted)?;
        encode_frame(&buf[..n], &mut self.out)?;
        Ok(())
    }

    /// Decrypts one frame.
    pub(crate) fn open_raw(&mut self, frame: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if frame.len() <= TAG_LEN {
            return Err(ChannelError::FrameTooShort { len: frame.len() });
        }
        let mut plain = vec![0u8; frame.len() - TAG_LEN];
        match self.transport.read_message(frame, &mut plain) {
            Ok(n) => {
                plain.truncate(n);
                Ok(plain)
            }
            Err(_) if looks_like_first_message(frame) => Err(ChannelError::HandshakeOnOpenChannel),
            Err(_) => Err(ChannelError::Decrypt),
        }
    }

    pub(crate) fn touch(&mut self, now_ms: u64) {
        self.last_rx_ms = now_ms;
    }

    fn ok(&self) -> Result<(), ChannelError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: ChannelError) -> ChannelError {
        self.failed = Some(e.clone());
        self.out = Vec::new();
        e
    }
}
