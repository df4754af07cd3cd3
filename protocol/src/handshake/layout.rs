//! The byte layout of the three handshake messages (the table in `handshake.rs`): the mode
//! byte, the frame length each message must have, and how to recognise a message 1.
//!
//! It is apart from the handshake's state machines because the channel needs it too: a frame
//! that fails to decrypt on an open channel and has exactly message 1's shape is reported as a
//! second handshake (`channel.rs`). With the layout here, the channel depends on these constants
//! and the keys' length, and the handshake, which opens channels, on the channel: no cycle.

use super::keys::PUBLIC_KEY_LEN;
use crate::enroll_code::MAX_ADMISSION_BYTES;
use crate::frame::TAG_LEN;

/// Mode byte of a session handshake.
pub const MODE_SESSION: u8 = 0;
/// Mode byte of an enrollment handshake.
pub const MODE_ENROLL: u8 = 1;
/// Mode byte of an enrollment handshake with a two-part code's admission: message 1 carries the
/// admission instead of a token id (its length varies), and its token is the pre-shared key.
pub const MODE_ADMIT: u8 = 2;
/// The plaintext of enrollment message 3.
pub const ENROLL_CONFIRM: &[u8; 8] = b"OPENROLL";
/// The payload of the busy notice: what a responder refusing a connection for load (too many
/// connections) writes, framed ([`BUSY_NOTICE`]), instead of message 2 before it closes.
pub const BUSY_PAYLOAD: &[u8; 6] = b"OPBUSY";
/// The busy notice as it goes on the stream: a 2-byte length (6) and [`BUSY_PAYLOAD`]. It is not
/// authenticated (it is sent before, or instead of, any key is proven): an initiator takes it as
/// "retry later", never as a refusal that changes what it stores.
pub const BUSY_NOTICE: [u8; 8] = [0x00, 0x06, b'O', b'P', b'B', b'U', b'S', b'Y'];
/// Largest frame accepted while handshaking: message 1 carrying the largest admission (a plain
/// message 1 is at most 205 bytes).
pub const HANDSHAKE_MAX_FRAME: usize = MSG1_ADMIT_MIN + MAX_ADMISSION_BYTES;

pub(crate) const HEADER_LEN: usize = 3;
const NOISE_OVERHEAD_1: usize = PUBLIC_KEY_LEN + PUBLIC_KEY_LEN + TAG_LEN + TAG_LEN;
pub(crate) const PAYLOAD_SESSION: usize = 8 + 16;
pub(crate) const PAYLOAD_ENROLL: usize = PAYLOAD_SESSION + 16;
/// Frame length of message 1: session, enrollment.
pub const MSG1_LEN: [usize; 2] = [
    HEADER_LEN + NOISE_OVERHEAD_1 + PAYLOAD_SESSION,
    HEADER_LEN + NOISE_OVERHEAD_1 + PAYLOAD_ENROLL,
];
/// Frame length of message 1 with an admission, less the admission's bytes.
pub const MSG1_ADMIT_MIN: usize = HEADER_LEN + NOISE_OVERHEAD_1 + PAYLOAD_SESSION;
/// Frame length of message 2.
pub const MSG2_LEN: usize = PUBLIC_KEY_LEN + 1 + TAG_LEN;
/// Frame length of message 3.
pub const MSG3_LEN: usize = ENROLL_CONFIRM.len() + TAG_LEN;

/// A frame that has exactly the layout of a handshake message 1 (a mode byte and the length that
/// mode implies). Only used to name an error; never to accept anything.
pub(crate) fn looks_like_first_message(frame: &[u8]) -> bool {
    frame.len() <= HANDSHAKE_MAX_FRAME
        && frame.len() >= HEADER_LEN
        && match frame[2] {
            MODE_SESSION => frame.len() == MSG1_LEN[0],
            MODE_ENROLL => frame.len() == MSG1_LEN[1],
            MODE_ADMIT => frame.len() > MSG1_ADMIT_MIN,
            _ => false,
        }
}
