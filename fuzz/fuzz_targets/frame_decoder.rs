//! Frame decoding and message reassembly: never panic, never yield more than was fed, and agree
//! with the encoder on what they accept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::frame::{encode_message, FrameDecoder, MessageDecoder};

fuzz_target!(|data: &[u8]| {
    // Raw frames, fed in two uneven pieces.
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut frames = FrameDecoder::new();
    let mut total = 0;
    for mut piece in [&data[..split], &data[split..]] {
        while let Ok(Some(frame)) = frames.decode(&mut piece) {
            assert!(!frame.is_empty() && frame.len() <= 65_535);
            total += frame.len() + 2;
        }
    }
    assert!(total <= data.len());
    let _ = frames.finish();

    // Whole messages: whatever decodes is a message whose encoding the decoder accepts back.
    let mut messages = MessageDecoder::new(1 << 20);
    let mut input = data;
    while let Ok(Some(message)) = messages.decode(&mut input) {
        let again = encode_message(&message);
        let mut d = MessageDecoder::new(1 << 20);
        assert_eq!(d.decode(&mut &again[..]), Ok(Some(message)));
    }
    let _ = messages.finish();
});
