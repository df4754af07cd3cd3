//! Message decoding: never panics; whatever decodes has exactly these bytes as its encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::message::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data, 1 << 20) {
        assert_eq!(message.encode(), data);
    }
});
