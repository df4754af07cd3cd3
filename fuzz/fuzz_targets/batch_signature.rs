//! Batch signatures: for any input `decode_header` accepts (whole batches, and the withheld form
//! of an `up` batch: its clear header alone), checking its signature never panics;
//! signed with a key it verifies with that key only, and any byte changed in the clear header
//! after signing either fails to decode or fails to verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::codec::{decode_header, Limits};
use outpost_protocol::batch::signature;
use outpost_protocol::handshake::Keypair;

fuzz_target!(|data: &[u8]| {
    let Some((&flip, data)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    let Ok(header) = decode_header(data, &limits) else {
        return;
    };
    let (a, b) = (
        Keypair::from_secret(&[1; 32]).expect("a valid scalar"),
        Keypair::from_secret(&[2; 32]).expect("a valid scalar"),
    );
    let _ = signature::verify(&header, a.public());
    let mut signed = data.to_vec();
    signature::sign(&mut signed, &a).expect("a decodable batch can be signed");
    let h = decode_header(&signed, &limits).expect("signing changes only the signature");
    signature::verify(&h, a.public()).expect("verifies with its key");
    assert!(signature::verify(&h, b.public()).is_err());
    // Change one byte of the clear header (after the magic and format byte). A withheld `up`
    // batch (its clear header alone) ends at its signature.
    let body_len = if h.withheld { 0 } else { h.sent_len as usize };
    let clear_len = signed.len() - body_len - signature::SIGNATURE_LEN;
    if clear_len > 4 {
        let at = 4 + usize::from(flip) % (clear_len - 4);
        signed[at] ^= 1 | flip;
        if let Ok(h2) = decode_header(&signed, &limits) {
            assert!(signature::verify(&h2, a.public()).is_err(), "byte {at}");
        }
    }
});
