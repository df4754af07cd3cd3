//! Sealed batches: `decode_sealed` never panics on any input, with a key for any epoch it asks
//! for; a batch that decodes unsealed and whose stream is a scope name seals to at most 64 bytes
//! more, opens to the same changes and scope name, and refuses its sealed body with one byte
//! changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::codec::{decode, DecodeError, Limits};
use outpost_protocol::seal::{decode_sealed, seal_batch, DigestKey, ScopeKey, SealError};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_batch_bytes: 1 << 20,
        max_body_bytes: 4 << 20,
    };
    let any_key = |_: &str, epoch: u32| ScopeKey::new(epoch, [7; 32]);
    let dk = DigestKey::from_bytes([5; 32]);
    let _ = decode_sealed(data, &limits, &dk, any_key);
    let Ok(batch) = decode(data, &limits) else {
        return;
    };
    let key = ScopeKey::new(1, [7; 32]).expect("epoch 1");
    let sealed = match seal_batch(data, &key, &dk, [9; 12]) {
        Ok(sealed) => sealed,
        Err(SealError::BadStream) => return,
        Err(e) => panic!("a decodable batch does not seal: {e}"),
    };
    assert!(sealed.len() <= data.len() + 64);
    match decode_sealed(&sealed, &limits, &dk, any_key) {
        Ok(opened) => {
            assert_eq!(opened.batch.tables, batch.tables);
            assert_eq!(opened.batch.header.tables, batch.header.tables);
            assert_eq!(opened.scope, batch.header.stream);
        }
        // The opened copy is charged to the budget: a batch at its budget's edge unsealed
        // can pass it sealed.
        Err(SealError::Decode(DecodeError::DecodedTooLarge { .. })) => {}
        Err(e) => panic!("a sealed batch does not open: {e}"),
    }
    let at = sealed.len() - 1 - data.len() % 28;
    let mut bad = sealed;
    bad[at] ^= 0x20;
    assert!(decode_sealed(&bad, &limits, &dk, any_key).is_err());
});
