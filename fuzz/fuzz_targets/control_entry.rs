//! Control entries as a peer sends them: `decode_entry` never panics on any bytes; an entry it
//! accepts re-encodes to the same bytes when signed again by a key (one encoding per entry), and
//! checking its signature never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::control::{decode_entry, encode_entry, DOMAIN, MAX_ENTRY_BYTES};
use outpost_protocol::handshake::Keypair;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = decode_entry(data) else {
        return;
    };
    assert!(data.len() <= MAX_ENTRY_BYTES);
    assert!(!DOMAIN.is_empty());
    let key = Keypair::from_secret(&[7; 32]).expect("a valid scalar");
    let _ = entry.verify(key.public());
    // The same fields signed again decode to the same entry but for the signature.
    let again = encode_entry(entry.writer, entry.seq, &entry.item, &key);
    let back = decode_entry(&again).expect("a fresh entry decodes");
    assert_eq!(back.item, entry.item);
    assert_eq!(back.signed_digest, entry.signed_digest);
    back.verify(key.public())
        .expect("its own signature verifies");
});
