//! The plain code's bytes and checks, and the framing both kinds share.

use super::*;
use alloc::format;
use alloc::string::ToString;

fn sample() -> EnrollCode {
    let mut hub_key = vec![0x04];
    hub_key.extend((1..=64).map(|i| i as u8));
    EnrollCode {
        hub_key,
        hub_site: SiteId([0x5a; 16]),
        addresses: vec!["192.168.1.20:7420".into(), "10.0.0.2:7420".into()],
        token: [0x77; 32],
        expires_at: 1_800_000_900,
        cloud: None,
    }
}

/// The sample's bytes, written out: version, postcard body (length-prefixed key, the site's
/// 16 bytes, two length-prefixed strings, the token, the varint expiry), checksum.
#[test]
fn the_sample_code_has_the_documented_bytes() {
    let text = sample().encode();
    let bytes = base64url_decode(&text[PREFIX.len()..]).unwrap();
    let mut want = vec![2u8, 65];
    want.extend_from_slice(&sample().hub_key);
    want.extend_from_slice(&[0x5a; 16]);
    want.push(2);
    want.push(17);
    want.extend_from_slice(b"192.168.1.20:7420");
    want.push(13);
    want.extend_from_slice(b"10.0.0.2:7420");
    want.extend_from_slice(&[0x77; 32]);
    // 1_800_000_900 as a LEB128 varint.
    want.extend_from_slice(&[0x84, 0xab, 0xa7, 0xda, 0x06]);
    // No cloud.
    want.push(0);
    let sum = Sha256::digest(&want);
    want.extend_from_slice(&sum[..4]);
    assert_eq!(bytes, want);
}

#[test]
fn base64url_matches_rfc4648_vectors_without_padding() {
    // RFC 4648 section 10, padding removed.
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64url_encode(plain.as_bytes()), enc);
        assert_eq!(base64url_decode(enc).unwrap(), plain.as_bytes());
    }
    assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
    assert_eq!(base64url_decode("Z"), Err(CodeError::Truncated));
    assert_eq!(base64url_decode("Zh"), Err(CodeError::Truncated));
}

#[test]
fn a_code_round_trips_and_is_one_compact_line() {
    let code = sample();
    let text = code.encode();
    assert!(text.starts_with("outpost:"));
    assert!(!text.contains(char::is_whitespace));
    assert!(text.len() < 220, "{} characters", text.len());
    assert_eq!(EnrollCode::decode(&text).unwrap(), code);
    assert_eq!(EnrollCode::decode(&format!("  {text}\n")).unwrap(), code);
}

#[test]
fn every_single_character_change_is_caught() {
    let text = sample().encode();
    for i in PREFIX.len()..text.len() {
        let mut b = text.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(b).unwrap();
        assert!(
            EnrollCode::decode(&changed).is_err(),
            "change at {i} accepted"
        );
    }
}

#[test]
fn damaged_codes_get_the_error_that_says_why() {
    let text = sample().encode();
    assert_eq!(EnrollCode::decode("hello"), Err(CodeError::Prefix));
    assert_eq!(
        EnrollCode::decode("outpost:ab$d"),
        Err(CodeError::Character { at: 2 })
    );
    assert!(EnrollCode::decode(&text[..text.len() - 8]).is_err());
    assert_eq!(
        EnrollCode::decode("outpost:AAAA"),
        Err(CodeError::Truncated)
    );
    let mut bytes = vec![4u8, 0, 0];
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum[..4]);
    let future = format!("{PREFIX}{}", base64url_encode(&bytes));
    assert_eq!(
        EnrollCode::decode(&future),
        Err(CodeError::Version { found: 4 })
    );
    assert_eq!(Code::decode(&future), Err(CodeError::Version { found: 4 }));
    // Format 3 is a two-part code, which the plain entry point names as such.
    let mut bytes = vec![3u8, 0, 0];
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum[..4]);
    let two_part = format!("{PREFIX}{}", base64url_encode(&bytes));
    assert_eq!(EnrollCode::decode(&two_part), Err(CodeError::TwoPart));
    assert_eq!(Code::decode(&two_part), Err(CodeError::Body));
    // Longer than any code: refused before it is decoded.
    let long = format!("{PREFIX}{}", "A".repeat(MAX_CODE_CHARS + 1));
    assert_eq!(
        EnrollCode::decode(&long),
        Err(CodeError::TooLong {
            chars: MAX_CODE_CHARS + 1
        })
    );
    // A first-wave code (format 1) is made by an older version.
    let mut bytes = vec![1u8, 0, 0];
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum[..4]);
    let old = format!("{PREFIX}{}", base64url_encode(&bytes));
    let err = EnrollCode::decode(&old).unwrap_err();
    assert_eq!(err, CodeError::Version { found: 1 });
    assert!(err.to_string().contains("older version"), "{err}");
    let mut short = sample();
    short.hub_key.truncate(33);
    assert_eq!(EnrollCode::decode(&short.encode()), Err(CodeError::Body));
    // The sample key is 65 bytes but not a point on the curve.
    assert_eq!(sample().public_key(), Err(CodeError::Key));
    assert!(CodeError::Checksum.to_string().contains("mistyped"));
}

#[test]
fn a_real_key_is_pinned_and_the_token_never_printed() {
    let kp = crate::handshake::Keypair::from_secret(&[7; 32]).unwrap();
    let mut code = sample();
    code.hub_key = kp.public().as_bytes().to_vec();
    let back = EnrollCode::decode(&code.encode()).unwrap();
    assert_eq!(back.public_key().unwrap(), *kp.public());
    assert_eq!(key_fingerprint(&back.hub_key), kp.public().fingerprint());
    let shown = format!("{back:?}");
    assert!(!shown.contains("119"), "{shown}"); // 0x77 as a decimal byte
    assert!(!shown.contains("token"), "{shown}");
}
