//! Key envelopes: `unwrap_keys` never panics on any input; authentic contents of any shape (an
//! envelope made with the primitives around the fuzzer's bytes) are either refused with a typed
//! error or unwrap to a key set that wraps back to the very same bytes (one encoding per key
//! set).
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::seal::envelope::{unwrap_keys, wrap_keys, MAX_LEN};
use outpost_protocol::seal::primitives::{aes_256_gcm_seal, ecdh, hkdf_sha256};
use std::sync::OnceLock;

/// The fixed device and ephemeral keys and the KEK they give (computed once: scalar
/// multiplications dominate a run).
fn fixed() -> &'static (Keypair, Keypair, [u8; 32]) {
    static FIXED: OnceLock<(Keypair, Keypair, [u8; 32])> = OnceLock::new();
    FIXED.get_or_init(|| {
        let device = Keypair::from_secret(&[0x31; 32]).expect("a valid scalar");
        let e = Keypair::from_secret(&[0x55; 32]).expect("a valid scalar");
        let mut info = e.public().as_bytes().to_vec();
        info.extend_from_slice(device.public().as_bytes());
        let mut kek = [0u8; 32];
        hkdf_sha256(
            b"outpost key envelope v1",
            &ecdh(&e, device.public()),
            &info,
            &mut kek,
        )
        .expect("32 bytes");
        (device, e, kek)
    })
}

fuzz_target!(|data: &[u8]| {
    let (device, ephemeral, kek) = fixed();
    let _ = unwrap_keys(data, device);
    if data.len() > MAX_LEN {
        return;
    }
    let mut env = b"OPK\x01".to_vec();
    env.extend_from_slice(ephemeral.public().as_bytes());
    let mut contents = data.to_vec();
    let tag = aes_256_gcm_seal(kek, &[0; 12], &env, &mut contents).expect("small");
    env.extend_from_slice(&contents);
    env.extend_from_slice(&tag);
    if let Ok(keys) = unwrap_keys(&env, device) {
        let again =
            wrap_keys(&keys, device.public(), ephemeral.clone()).expect("an unwrapped set wraps");
        assert_eq!(again, env);
    }
});
