//! Batch decoding: never panics; whatever decodes re-encodes to a batch that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::codec::{decode, decode_header, encode, verify, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_batch_bytes: 1 << 20,
        max_body_bytes: 4 << 20,
    };
    let header = decode_header(data, &limits);
    let verified = verify(data, &limits);
    if let Ok(batch) = decode(data, &limits) {
        assert_eq!(header.as_ref(), Ok(&batch.header));
        assert_eq!(verified.as_ref(), Ok(&batch.header));
        let h = &batch.header;
        let again = encode(
            h.origin,
            h.range,
            h.tables.clone(),
            &batch.tables,
            h.compression,
        );
        let round = decode(&again, &limits).expect("a re-encoded batch decodes");
        assert_eq!(round.tables, batch.tables);
        assert_eq!(round.header.body_sha256.len(), 32);
    }
});
