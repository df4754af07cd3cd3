//! Key envelopes: scope keys wrapped to a device's static key open with that key only, in one
//! canonical layout; every altered byte and every malformed envelope gets a typed error.

use outpost_protocol::handshake::Keypair;
use outpost_protocol::seal::envelope::{
    unwrap_keys, wrap_keys, EnvelopeError, KeyEntry, KeySet, ENTRY_LEN, MAX_ENTRIES, MAX_LEN,
    MIN_LEN, PREFIX_LEN,
};
use outpost_protocol::seal::{DigestKey, ScopeDigest, ScopeKey};
use proptest::prelude::*;

fn keypair(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32]).unwrap()
}

fn entry(scope: &str, epoch: u32) -> KeyEntry {
    let digest = DigestKey::from_bytes([0xd1; 32]).digest(scope);
    KeyEntry {
        scope: digest,
        key: ScopeKey::new(epoch, [epoch as u8 ^ digest.0[0]; 32]).unwrap(),
    }
}

fn keyset(entries: Vec<KeyEntry>) -> KeySet {
    KeySet {
        digest_key: DigestKey::from_bytes([0xd1; 32]),
        entries,
    }
}

fn sorted(mut k: KeySet) -> KeySet {
    k.entries.sort_by_key(|e| (e.scope, e.key.epoch()));
    k
}

#[test]
fn an_envelope_opens_with_its_recipients_key_only() {
    let device = keypair(0x31);
    let keys = keyset(vec![
        entry("moshi", 2),
        entry("moshi", 1),
        entry("arusha", 1),
    ]);
    let env = wrap_keys(&keys, device.public(), keypair(0x55)).unwrap();
    assert_eq!(env.len(), MIN_LEN + 3 * ENTRY_LEN);
    assert_eq!(unwrap_keys(&env, &device), Ok(sorted(keys.clone())));
    assert_eq!(
        unwrap_keys(&env, &keypair(0x32)),
        Err(EnvelopeError::TagMismatch)
    );
    // Nothing of the keys is in the clear.
    let key = keys.entries[0].key.as_bytes();
    assert!(env.windows(32).all(|w| w != key));
    assert!(env.windows(32).all(|w| w != keys.digest_key.as_bytes()));
}

#[test]
fn the_layout_is_canonical_whatever_the_entries_order() {
    let device = keypair(0x31);
    let a = keyset(vec![entry("b", 1), entry("a", 3), entry("a", 1)]);
    let b = sorted(a.clone());
    assert_eq!(
        wrap_keys(&a, device.public(), keypair(9)),
        wrap_keys(&b, device.public(), keypair(9))
    );
    let dup = keyset(vec![entry("a", 1), entry("b", 1), entry("a", 1)]);
    let a1 = entry("a", 1);
    assert_eq!(
        wrap_keys(&dup, device.public(), keypair(9)),
        Err(EnvelopeError::DuplicateEntry {
            scope: a1.scope,
            epoch: 1
        })
    );
}

#[test]
fn every_altered_byte_is_refused() {
    let device = keypair(0x31);
    let env = wrap_keys(
        &keyset(vec![entry("moshi", 1)]),
        device.public(),
        keypair(7),
    )
    .unwrap();
    for at in 0..env.len() {
        let mut bad = env.clone();
        bad[at] ^= 0x01;
        let e = unwrap_keys(&bad, &device).unwrap_err();
        let want = match at {
            0..=2 => matches!(e, EnvelopeError::BadMagic),
            3 => matches!(e, EnvelopeError::UnsupportedVersion { found: 0 }),
            // The ephemeral key: off the curve, or another point (another KEK).
            4..PREFIX_LEN => matches!(
                e,
                EnvelopeError::BadEphemeralKey | EnvelopeError::TagMismatch
            ),
            _ => e == EnvelopeError::TagMismatch,
        };
        assert!(want, "byte {at}: {e}");
    }
}

#[test]
fn malformed_envelopes_get_typed_errors_before_any_work() {
    let device = keypair(0x31);
    let env = wrap_keys(&keyset(vec![entry("a", 1)]), device.public(), keypair(7)).unwrap();
    assert_eq!(
        unwrap_keys(b"", &device),
        Err(EnvelopeError::Truncated {
            expected: MIN_LEN,
            got: 0
        })
    );
    assert_eq!(
        unwrap_keys(b"OPB\x02", &device),
        Err(EnvelopeError::BadMagic)
    );
    assert_eq!(
        unwrap_keys(&env[..MIN_LEN - 1], &device),
        Err(EnvelopeError::Truncated {
            expected: MIN_LEN,
            got: MIN_LEN - 1
        })
    );
    let mut v2 = env.clone();
    v2[3] = 2;
    assert_eq!(
        unwrap_keys(&v2, &device),
        Err(EnvelopeError::UnsupportedVersion { found: 2 })
    );
    assert!(matches!(
        unwrap_keys(&env[..env.len() - 1], &device),
        Err(EnvelopeError::Truncated { .. })
    ));
    let mut long = env.clone();
    long.resize(MAX_LEN + ENTRY_LEN, 0);
    assert_eq!(
        unwrap_keys(&long, &device),
        Err(EnvelopeError::TooLong {
            len: MAX_LEN + ENTRY_LEN,
            max: MAX_LEN
        })
    );
    // A compressed point where the uncompressed one belongs.
    let mut compressed = env.clone();
    compressed[4..4 + 33].copy_from_slice(&keypair(7).public().compressed());
    assert_eq!(
        unwrap_keys(&compressed, &device),
        Err(EnvelopeError::BadEphemeralKey)
    );
    let many = keyset(
        (0..=MAX_ENTRIES as u32)
            .map(|e| entry("a", e + 1))
            .collect(),
    );
    assert_eq!(
        wrap_keys(&many, device.public(), keypair(7)),
        Err(EnvelopeError::TooManyEntries {
            count: MAX_ENTRIES + 1
        })
    );
    assert!(EnvelopeError::TagMismatch
        .to_string()
        .contains("another device"));
}

#[test]
fn the_largest_envelope_round_trips() {
    let device = keypair(0x31);
    let keys = keyset(
        (0..MAX_ENTRIES as u32)
            .map(|e| entry(&format!("s{}", e % 64), e / 64 + 1))
            .collect(),
    );
    let env = wrap_keys(&keys, device.public(), keypair(8)).unwrap();
    assert_eq!(env.len(), MAX_LEN);
    const { assert!(MAX_LEN < 65_535, "one frame") };
    assert_eq!(unwrap_keys(&env, &device), Ok(sorted(keys)));
}

proptest! {
    #[test]
    fn random_key_sets_round_trip(
        entries in proptest::collection::btree_map(
            (any::<[u8; 16]>(), 1u32..),
            any::<[u8; 32]>(),
            0..40,
        ),
        digest_key in any::<[u8; 32]>(),
        device in 1u8..=200,
        ephemeral in 1u8..=200,
    ) {
        let keys = KeySet {
            digest_key: DigestKey::from_bytes(digest_key),
            entries: entries
                .into_iter()
                .map(|((scope, epoch), key)| KeyEntry {
                    scope: ScopeDigest(scope),
                    key: ScopeKey::new(epoch, key).unwrap(),
                })
                .collect(),
        };
        let device = keypair(device);
        let env = wrap_keys(&keys, device.public(), keypair(ephemeral)).unwrap();
        prop_assert_eq!(unwrap_keys(&env, &device), Ok(keys));
    }
}
