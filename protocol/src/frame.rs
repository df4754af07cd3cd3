//! The one framing layer of the protocol, and the chunking of messages larger than a frame.
//!
//! **Frames.** On the stream, a frame is a 2-byte big-endian length `n` then `n` bytes of payload,
//! `1 <= n <= 65,535`. When the secure channel is up, the payload is ciphertext and its 16-byte
//! AES-GCM tag ([`TAG_LEN`]) counts toward the limit. [`FrameDecoder`] is sans-I/O: feed it bytes
//! as they arrive, get whole frames out; it rejects a zero or oversized length before allocating.
//!
//! **Messages over frames.** Each (decrypted) frame payload starts with a kind byte:
//!
//! | kind | name  | rest of the payload                                        |
//! |------|-------|------------------------------------------------------------|
//! | 0    | whole | one whole message                                          |
//! | 1    | part  | part index (u32 BE, from 0), then at least one message byte |
//! | 2    | end   | part count (u32 BE), SHA-256 of the whole message (32)     |
//!
//! A message that fits in one frame goes as `whole`; a larger one as `part` frames in order then
//! one `end`. [`Reassembler`] rejects gaps, duplicates, a count or hash that does not match, and a
//! message larger than its limit (before allocating for it). Any error is final: the connection
//! should be closed, as nothing after a damaged frame can be trusted.

use alloc::vec::Vec;
use core::fmt;
use sha2::{Digest, Sha256};

/// The largest frame payload the length prefix can express.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;
/// The AES-GCM tag the secure channel adds inside each frame.
pub const TAG_LEN: usize = 16;
/// The largest plaintext payload of an encrypted frame.
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - TAG_LEN;
/// The default largest message a [`Reassembler`] accepts: a 64 MiB batch plus its envelope.
pub const DEFAULT_MAX_MESSAGE: usize = (64 << 20) + 4096;

const KIND_WHOLE: u8 = 0;
const KIND_PART: u8 = 1;
const KIND_END: u8 = 2;
const PART_OVERHEAD: usize = 5;
const END_LEN: usize = 1 + 4 + 32;

/// Why framing failed. Every variant means the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame declared length 0.
    EmptyFrame,
    /// A frame declared (or was given) a payload larger than the limit.
    Oversize {
        /// The length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes the frame needed (prefix included).
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A frame payload starts with an unknown kind byte.
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A `part` or `end` frame is shorter (or an `end` longer) than its layout.
    BadLayout {
        /// The kind byte.
        kind: u8,
        /// The payload length.
        len: usize,
    },
    /// A part arrived after a missing one.
    PartGap {
        /// The index expected next.
        expected: u32,
        /// The index received.
        got: u32,
    },
    /// A part arrived twice.
    DuplicatePart {
        /// Its index.
        index: u32,
    },
    /// The `end` frame's part count differs from the parts received.
    PartCountMismatch {
        /// The count in the `end` frame.
        declared: u32,
        /// Parts received.
        received: u32,
    },
    /// The reassembled message does not match the SHA-256 in the `end` frame.
    MessageHashMismatch,
    /// An `end` frame arrived with no parts before it.
    EndWithoutParts,
    /// A `whole` frame arrived while a chunked message was unfinished.
    UnfinishedMessage {
        /// Parts received of the unfinished message.
        parts: u32,
    },
    /// The stream ended between the parts of a chunked message.
    EndedInMessage {
        /// Parts received of the unfinished message.
        parts: u32,
    },
    /// The reassembled message would exceed the limit.
    MessageTooLarge {
        /// Its length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::EmptyFrame => f.write_str("frame of length 0: not a valid frame"),
            FrameError::Oversize { len, max } => {
                write!(f, "frame too large: {len} bytes, the limit is {max}")
            }
            FrameError::Truncated { expected, got } => {
                write!(f, "frame truncated: expected {expected} bytes, got {got}")
            }
            FrameError::UnknownKind { kind } => write!(
                f,
                "unknown frame kind {kind}: the peer speaks a newer protocol or the stream is corrupt"
            ),
            FrameError::BadLayout { kind, len } => {
                write!(f, "frame of kind {kind} has an impossible length {len}")
            }
            FrameError::PartGap { expected, got } => {
                write!(f, "message part {got} arrived but part {expected} is missing")
            }
            FrameError::DuplicatePart { index } => {
                write!(f, "message part {index} arrived twice")
            }
            FrameError::PartCountMismatch { declared, received } => write!(
                f,
                "message end declares {declared} parts but {received} arrived"
            ),
            FrameError::MessageHashMismatch => {
                f.write_str("reassembled message does not match its SHA-256")
            }
            FrameError::EndWithoutParts => f.write_str("message end frame without any part"),
            FrameError::UnfinishedMessage { parts } => write!(
                f,
                "a new message began after {parts} parts of an unfinished one"
            ),
            FrameError::EndedInMessage { parts } => write!(
                f,
                "stream ended after {parts} parts of a chunked message, before its end frame"
            ),
            FrameError::MessageTooLarge { len, max } => {
                write!(f, "message too large: {len} bytes, the limit is {max}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// Appends one frame (length prefix + payload) to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.is_empty() {
        return Err(FrameError::EmptyFrame);
    }
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::Oversize {
            len: payload.len(),
            max: MAX_FRAME_LEN,
        });
    }
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Splits a message into frame payloads of at most `max_payload` bytes (use [`MAX_FRAME_LEN`] on a
/// plain stream, [`MAX_PLAINTEXT_LEN`] under the secure channel). `max_payload` is clamped to
/// `38..=MAX_FRAME_LEN` so an `end` frame always fits.
pub fn split_message(message: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    let max_payload = max_payload.clamp(END_LEN + 1, MAX_FRAME_LEN);
    if message.len() < max_payload {
        let mut whole = Vec::with_capacity(message.len() + 1);
        whole.push(KIND_WHOLE);
        whole.extend_from_slice(message);
        return alloc::vec![whole];
    }
    let chunk = max_payload - PART_OVERHEAD;
    let mut frames: Vec<Vec<u8>> = message
        .chunks(chunk)
        .enumerate()
        .map(|(i, data)| {
            let mut part = Vec::with_capacity(PART_OVERHEAD + data.len());
            part.push(KIND_PART);
            part.extend_from_slice(&(i as u32).to_be_bytes());
            part.extend_from_slice(data);
            part
        })
        .collect();
    let mut end = Vec::with_capacity(END_LEN);
    end.push(KIND_END);
    end.extend_from_slice(&(frames.len() as u32).to_be_bytes());
    end.extend_from_slice(&Sha256::digest(message));
    frames.push(end);
    frames
}

/// A message as a plain (unencrypted) byte stream: its frames, length-prefixed.
pub fn encode_message(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 8192 + 64);
    for payload in split_message(message, MAX_FRAME_LEN) {
        encode_frame(&payload, &mut out).expect("split_message respects the frame limit");
    }
    out
}

/// Cuts a byte stream into frame payloads. Sans-I/O: call [`FrameDecoder::decode`] with whatever
/// bytes arrived; it consumes them and returns each frame as soon as it is complete.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_len: usize,
    prefix: [u8; 2],
    prefix_len: usize,
    /// The payload being filled; its capacity is the declared length.
    payload: Option<Vec<u8>>,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// A decoder accepting frames up to `max_len` bytes (for peers with small buffers).
    pub fn with_max_len(max_len: usize) -> Self {
        FrameDecoder {
            max_len: max_len.min(MAX_FRAME_LEN),
            prefix: [0; 2],
            prefix_len: 0,
            payload: None,
            failed: None,
        }
    }

    /// Consumes bytes from the front of `input` until one frame is complete (returned) or `input`
    /// is empty (`Ok(None)`). After an error, every call returns that error.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while self.payload.is_none() {
            let Some((&b, rest)) = input.split_first() else {
                return Ok(None);
            };
            *input = rest;
            self.prefix[self.prefix_len] = b;
            self.prefix_len += 1;
            if self.prefix_len == 2 {
                let len = u16::from_be_bytes(self.prefix) as usize;
                let err = if len == 0 {
                    Some(FrameError::EmptyFrame)
                } else if len > self.max_len {
                    Some(FrameError::Oversize {
                        len,
                        max: self.max_len,
                    })
                } else {
                    None
                };
                if let Some(e) = err {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
                self.payload = Some(Vec::with_capacity(len));
            }
        }
        let payload = self.payload.as_mut().expect("set above");
        let want = u16::from_be_bytes(self.prefix) as usize - payload.len();
        let take = want.min(input.len());
        payload.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if take < want {
            return Ok(None);
        }
        self.prefix_len = 0;
        Ok(self.payload.take())
    }

    /// True between frames: the stream may end here without losing anything.
    pub fn is_idle(&self) -> bool {
        self.failed.is_none() && self.prefix_len == 0
    }

    /// Call when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.prefix_len == 0 {
            return Ok(());
        }
        let (expected, got) = match &self.payload {
            Some(p) => (2 + u16::from_be_bytes(self.prefix) as usize, 2 + p.len()),
            None => (2, self.prefix_len),
        };
        Err(FrameError::Truncated { expected, got })
    }
}

/// Rebuilds messages from frame payloads (decrypted, when the secure channel is up).
#[derive(Debug, Clone)]
pub struct Reassembler {
    max_message: usize,
    parts: u32,
    buf: Vec<u8>,
    failed: Option<FrameError>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl Reassembler {
    /// A reassembler accepting messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Reassembler {
            max_message,
            parts: 0,
            buf: Vec::new(),
            failed: None,
        }
    }

    /// True when no chunked message is in progress.
    pub fn is_idle(&self) -> bool {
        self.failed.is_none() && self.parts == 0
    }

    /// Bytes of the chunked message in progress held so far (what a server counts against its
    /// memory budget before the message is whole).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes one frame payload; returns a message when one is complete. After an error, every
    /// call returns that error.
    pub fn push(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.push_inner(payload);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        r
    }

    fn push_inner(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let Some((&kind, rest)) = payload.split_first() else {
            return Err(FrameError::EmptyFrame);
        };
        match kind {
            KIND_WHOLE => {
                if self.parts != 0 {
                    return Err(FrameError::UnfinishedMessage { parts: self.parts });
                }
                if rest.len() > self.max_message {
                    return Err(FrameError::MessageTooLarge {
                        len: rest.len(),
                        max: self.max_message,
                    });
                }
                Ok(Some(rest.to_vec()))
            }
            KIND_PART => {
                if payload.len() <= PART_OVERHEAD {
                    return Err(FrameError::BadLayout {
                        kind,
                        len: payload.len(),
                    });
                }
                let index = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                if index < self.parts {
                    return Err(FrameError::DuplicatePart { index });
                }
                if index > self.parts {
                    return Err(FrameError::PartGap {
                        expected: self.parts,
                        got: index,
                    });
                }
                let data = &rest[4..];
                let len = self.buf.len() + data.len();
                if len > self.max_message {
                    return Err(FrameError::MessageTooLarge {
                        len,
                        max: self.max_message,
                    });
                }
                self.buf.extend_from_slice(data);
                self.parts = self
                    .parts
                    .checked_add(1)
                    .ok_or(FrameError::MessageTooLarge {
                        len,
                        max: self.max_message,
                    })?;
                Ok(None)
            }
            KIND_END => {
                if payload.len() != END_LEN {
                    return Err(FrameError::BadLayout {
                        kind,
                        len: payload.len(),
                    });
                }
                if self.parts == 0 {
                    return Err(FrameError::EndWithoutParts);
                }
                let declared = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                if declared != self.parts {
                    return Err(FrameError::PartCountMismatch {
                        declared,
                        received: self.parts,
                    });
                }
                if Sha256::digest(&self.buf).as_slice() != &rest[4..] {
                    return Err(FrameError::MessageHashMismatch);
                }
                self.parts = 0;
                Ok(Some(core::mem::take(&mut self.buf)))
            }
            _ => Err(FrameError::UnknownKind { kind }),
        }
    }
}

/// Both layers for a plain (unencrypted) stream: bytes in, messages out.
#[derive(Debug, Clone, Default)]
pub struct MessageDecoder {
    frames: FrameDecoder,
    messages: Reassembler,
}

impl MessageDecoder {
    /// A decoder accepting messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        MessageDecoder {
            frames: FrameDecoder::new(),
            messages: Reassembler::new(max_message),
        }
    }

    /// Consumes bytes from the front of `input` until a message is complete or `input` is empty.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        while let Some(frame) = self.frames.decode(input)? {
            if let Some(message) = self.messages.push(&frame)? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Call when the stream ends: an error if it ended inside a frame or a chunked message.
    pub fn finish(&self) -> Result<(), FrameError> {
        self.frames.finish()?;
        if !self.messages.is_idle() {
            return Err(FrameError::EndedInMessage {
                parts: self.messages.parts,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
