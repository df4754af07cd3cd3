//! Enrolment codes of either kind: `Code::decode` never panics on any text (the input as text,
//! and the input framed as a code so the checksum passes and the decoders behind it run); a
//! code that reads back encodes to the very same text (one encoding per code); its admission
//! reads alone from the bytes the device presents; its keys either open or give a typed error
//! (the fixed secret of the seeds opens them when the rest is intact).
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::enroll_code::{base64url_encode, Admission, Code, PREFIX};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = Code::decode(text);
    }
    let mut framed = data.to_vec();
    framed.extend_from_slice(&Sha256::digest(data)[..4]);
    let text = format!("{PREFIX}{}", base64url_encode(&framed));
    match Code::decode(&text) {
        Ok(Code::TwoPart(code)) => {
            assert_eq!(code.encode(), text);
            let alone = Admission::decode(code.admission_bytes()).expect("read inside a code");
            assert_eq!(&alone, code.admission());
            assert_eq!(alone.encode(), code.admission_bytes());
            let _ = code.open_keys();
        }
        Ok(Code::Plain(code)) => {
            let _ = code.public_key();
        }
        Err(_) => {}
    }
});
