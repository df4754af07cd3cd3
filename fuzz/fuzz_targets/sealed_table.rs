//! Sealed table settings (control tag 6): `open_table` never panics on any input; authentic
//! bytes of any shape (sealed with the primitives around the fuzzer's bytes) are refused with a
//! typed error or open to an entry that seals and opens again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::seal::primitives::{aes_256_gcm_seal, hkdf_sha256};
use outpost_protocol::seal::table::{open_table, seal_table, TABLE_AAD, TABLE_KEY_INFO};
use outpost_protocol::seal::DigestKey;

fuzz_target!(|data: &[u8]| {
    let dk = DigestKey::from_bytes([0x5d; 32]);
    let _ = open_table(&dk, data);
    // The fuzzer's bytes as the plaintext of authentic sealed settings.
    let mut key = [0u8; 32];
    hkdf_sha256(b"", dk.as_bytes(), TABLE_KEY_INFO, &mut key).expect("32 bytes");
    let nonce = [7u8; 12];
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(data);
    let tag = aes_256_gcm_seal(&key, &nonce, TABLE_AAD, &mut sealed[12..]).expect("small");
    sealed.extend_from_slice(&tag);
    if let Ok(entry) = open_table(&dk, &sealed) {
        let again = seal_table(&dk, &entry, [9; 12]);
        assert_eq!(open_table(&dk, &again), Ok(entry));
    }
});
