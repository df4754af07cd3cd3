//! Sealed batches: `decode_sealed` never panics on any input, with a key for any epoch it asks
//! for; a batch that decodes unsealed seals to at most 64 bytes more, opens to the same changes,
//! and refuses its sealed body with one byte changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::codec::{decode, DecodeError, Limits};
use outpost_protocol::seal::{decode_sealed, seal_batch, ScopeKey, SealError};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_batch_bytes: 1 << 20,
        max_body_bytes: 4 << 20,
    };
    let any_key = |_: &str, epoch: u32| ScopeKey::new(epoch, [7; 32]);
    let _ = decode_sealed(data, &limits, any_key);
    let Ok(batch) = decode(data, &limits) else {
        return;
    };
    let key = ScopeKey::new(1, [7; 32]).expect("epoch 1");
    let sealed = seal_batch(data, &key, [9; 12]).expect("a decodable batch seals");
    assert!(sealed.len() <= data.len() + 64);
    match decode_sealed(&sealed, &limits, any_key) {
        Ok(opened) => {
            assert_eq!(opened.tables, batch.tables);
            assert_eq!(opened.header.tables, batch.header.tables);
        }
        // The opened copy is charged to the budget: a batch at its budget's edge unsealed
        // can pass it sealed.
        Err(SealError::Decode(DecodeError::DecodedTooLarge { .. })) => {}
        Err(e) => panic!("a sealed batch does not open: {e}"),
    }
    let at = sealed.len() - 1 - data.len() % 28;
    let mut bad = sealed;
    bad[at] ^= 0x20;
    assert!(decode_sealed(&bad, &limits, any_key).is_err());
});
