//! Two-part enrolment codes (docs/design.md section 10, "Offline enrolment";
//! docs/wire-format.md 6.4): the golden code, rebuilt from the documented layout with the bare
//! primitives; round trips through both entry points; every flipped bit of the admission fails
//! its signature and every flipped bit of the sealed keys fails opening; a wrong secret or
//! another code's admission opens nothing; the expiry is carried; a grant wider than
//! `MAX_SCOPES_PER_GRANT` is refused when the code is read; Debug shows neither token nor secret.

use outpost_protocol::enroll_code::{
    base64url_decode, base64url_encode, Admission, AdmissionError, CloudAnchor, Code, CodeError,
    EnrollCode, MintError, TwoPartCode, MAX_ADDRESSES, MAX_CODE_BYTES, PREFIX,
};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::scope::{ScopeError, Scopes, MAX_SCOPES_PER_GRANT};
use outpost_protocol::seal::code_keys::{open_code_keys, CodeKeysError, CodeSecret};
use outpost_protocol::seal::{DigestKey, KeyEntry, KeySet, ScopeKey};
use outpost_protocol::SiteId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// The golden code's bytes (the text after `outpost:`, base64url-decoded), 478 bytes, 646
/// characters of text: see [`golden_admission`] and [`golden_keys`] for what it says, and
/// docs/wire-format.md 6.4 for the same bytes annotated.
const GOLDEN_CODE: &str = "\
    03 d102 \
    5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a \
    41 041e18532fd4754c02f3041d9c75ceb33b83ffd81ac7ce4fe882ccb1c98bc589\
       6ea46c311c4e2ff40dd96a3653e6e45445d32dfe486eced75c7a90c6a18881c0a3 \
    01 11 3139322e3136382e312e32303a37343230 \
    7777777777777777777777777777777777777777777777777777777777777777 \
    84aba7da06 \
    01 c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1 \
    41 0442ad971d037d1ab2bedfce3f17f97dbad1205ea7cc75a04ff582ddca56a0bf38\
       1fdba5e5242d51ce760f27c03e12379d8372d9c1c9cf9baab1d558b117c7b901 \
    0101 20 3636323435353364323433613662353465626536623161373736333430663661 \
    00 \
    c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1 \
    9f598d5cd623d83a7c78eac83120843b9ec82156c5ddd406696fd6ba7d66dda1\
    03cb3696163275c483381c6042add5555f93cb3c9563a1913901a909a6a178f0 \
    5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c \
    f12a9b6cce01da66579ad790845ab5fc0451449494683ba3d24749925b493d15\
    395f76384036b597cf9f75e754e74be5ceda25ee72c00839f0552238392f06e5\
    a79d788a2ac50279535bdbc1a15b4d9e94739fadcd47 \
    b7d3fce3b4b462ce4fa553c8980b86ec \
    66a7429e";

/// The scalars of the fixed keys: the hub's and the cloud's (the minter).
const HUB_SECRET: [u8; 32] = [0x07; 32];
const CLOUD_SECRET: [u8; 32] = [0x0c; 32];
const DIGEST_KEY: [u8; 32] = [0x5d; 32];

fn hub() -> Keypair {
    Keypair::from_secret(&HUB_SECRET).unwrap()
}

fn cloud() -> Keypair {
    Keypair::from_secret(&CLOUD_SECRET).unwrap()
}

fn moshi() -> String {
    DigestKey::from_bytes(DIGEST_KEY)
        .digest("moshi")
        .to_stream()
}

/// The admission of the golden code, signed by the cloud: the hub `5a..5a` at one address, token
/// `77..77`, expiring at 1 800 000 900, the cloud `c1..c1` as anchor and minter, a grant of
/// `moshi` by its digest, no `enroll` flag.
fn golden_admission() -> Admission {
    let mut a = Admission {
        hub_site: SiteId([0x5a; 16]),
        hub_key: *hub().public(),
        addresses: vec!["192.168.1.20:7420".into()],
        token: [0x77; 32],
        expires_at: 1_800_000_900,
        cloud: Some(CloudAnchor {
            site: SiteId([0xc1; 16]),
            key: cloud().public().as_bytes().to_vec(),
        }),
        scopes: Scopes::parse([moshi().as_str()]).unwrap(),
        enroll: false,
        minter: SiteId([0xc1; 16]),
        signature: [0; 64],
    };
    a.sign(&cloud()).unwrap();
    a
}

/// The tenant's digest key `5d..5d` and `moshi`'s key of epoch 1, `5e..5e`.
fn golden_keys() -> KeySet {
    KeySet {
        digest_key: DigestKey::from_bytes(DIGEST_KEY),
        entries: vec![KeyEntry {
            scope: DigestKey::from_bytes(DIGEST_KEY).digest("moshi"),
            key: ScopeKey::new(1, [0x5e; 32]).unwrap(),
        }],
    }
}

fn golden() -> TwoPartCode {
    TwoPartCode::mint(
        golden_admission(),
        cloud().public(),
        &golden_keys(),
        CodeSecret::from_bytes([0x5c; 32]),
    )
    .unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

fn code_bytes(text: &str) -> Vec<u8> {
    base64url_decode(&text[PREFIX.len()..]).unwrap()
}

/// A code's text around `content` (format byte first): the documented framing by hand.
fn framed(content: &[u8]) -> String {
    let mut bytes = content.to_vec();
    bytes.extend_from_slice(&Sha256::digest(content)[..4]);
    format!("{PREFIX}{}", base64url_encode(&bytes))
}

/// The admission's fields as docs/wire-format.md 6.4 lists them, for postcard.
#[derive(Serialize)]
struct Fields<'a> {
    hub_site: [u8; 16],
    hub_key: &'a [u8],
    addresses: Vec<&'a str>,
    token: [u8; 32],
    expires_at: u64,
    cloud: Option<([u8; 16], &'a [u8])>,
    scopes: Scopes,
    enroll: bool,
    minter: [u8; 16],
}

fn golden_fields(scopes: Scopes) -> Vec<u8> {
    let hub = hub();
    let cloud = cloud();
    postcard::to_allocvec(&Fields {
        hub_site: [0x5a; 16],
        hub_key: hub.public().as_bytes(),
        addresses: vec!["192.168.1.20:7420"],
        token: [0x77; 32],
        expires_at: 1_800_000_900,
        cloud: Some(([0xc1; 16], cloud.public().as_bytes())),
        scopes,
        enroll: false,
        minter: [0xc1; 16],
    })
    .unwrap()
}

/// The fields signed by the cloud: SHA-256 of the domain and the fields, ECDSA (RFC 6979).
fn signed(fields: &[u8]) -> Vec<u8> {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(b"outpost admission v1\n")
        .chain_update(fields)
        .finalize()
        .into();
    let mut out = fields.to_vec();
    out.extend_from_slice(&outpost_protocol::signing::sign_digest(&digest, &cloud()));
    out
}

/// The golden code rebuilt from the documented layout with the primitives alone.
fn golden_by_hand() -> Vec<u8> {
    use outpost_protocol::seal::primitives::{aes_256_gcm_seal, hkdf_sha256};
    let scopes = Scopes::Only(BTreeSet::from([moshi()]));
    let admission = signed(&golden_fields(scopes));
    let mut contents = DIGEST_KEY.to_vec();
    contents.extend_from_slice(&1u16.to_be_bytes());
    contents.extend_from_slice(&DigestKey::from_bytes(DIGEST_KEY).digest("moshi").0);
    contents.extend_from_slice(&1u32.to_be_bytes());
    contents.extend_from_slice(&[0x5e; 32]);
    let mut key = [0u8; 32];
    hkdf_sha256(
        b"outpost code keys v1",
        &[0x5c; 32],
        &Sha256::digest(&admission),
        &mut key,
    )
    .unwrap();
    let tag = aes_256_gcm_seal(&key, &[0; 12], &[], &mut contents).unwrap();
    let mut out = vec![3u8];
    outpost_protocol::varint::write_u64(&mut out, admission.len() as u64);
    out.extend_from_slice(&admission);
    out.extend_from_slice(&[0x5c; 32]);
    out.extend_from_slice(&contents);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&Sha256::digest(&out)[..4]);
    out
}

#[test]
fn the_golden_code_has_the_documented_bytes() {
    let text = golden().encode();
    let bytes = code_bytes(&text);
    assert_eq!((text.len(), bytes.len()), (646, 478));
    assert_eq!(hex::encode(&bytes), hex::encode(golden_by_hand()));
    assert_eq!(hex::encode(&bytes), hex::encode(unhex(GOLDEN_CODE)));
}

#[test]
fn the_golden_code_reads_back_verifies_and_opens() {
    let text = framed(&unhex(GOLDEN_CODE)[..unhex(GOLDEN_CODE).len() - 4]);
    let Code::TwoPart(code) = Code::decode(&text).unwrap() else {
        panic!("a two-part code read as plain");
    };
    assert_eq!(code, golden());
    assert_eq!(*code.admission(), golden_admission());
    code.admission().verify(cloud().public()).unwrap();
    assert!(code.admission().verify(hub().public()).is_err());
    assert_eq!(code.open_keys().unwrap(), golden_keys());
    assert_eq!(code.secret().as_bytes(), &[0x5c; 32]);
    assert_eq!(code.admission_bytes(), golden_admission().encode());
    // The hub reads the admission alone, as the device presents it.
    assert_eq!(
        Admission::decode(code.admission_bytes()).unwrap(),
        golden_admission()
    );
}

#[test]
fn codes_round_trip_through_both_entry_points() {
    let code = golden();
    let text = code.encode();
    assert!(text.starts_with("outpost:") && !text.contains(char::is_whitespace));
    assert_eq!(TwoPartCode::decode(&text).unwrap(), code);
    assert_eq!(
        Code::decode(&format!("  {text}\n")).unwrap(),
        Code::TwoPart(code.clone())
    );
    assert_eq!(Code::TwoPart(code).encode(), text);
    // The plain entry point still reads plain codes, and names a two-part one for what it is.
    let err = EnrollCode::decode(&text).unwrap_err();
    assert_eq!(err, CodeError::TwoPart);
    assert!(err.to_string().contains("two-part"), "{err}");
    let plain = EnrollCode {
        hub_key: hub().public().as_bytes().to_vec(),
        hub_site: SiteId([0x5a; 16]),
        addresses: vec!["192.168.1.20:7420".into()],
        token: [0x77; 32],
        expires_at: 1_800_000_900,
        cloud: None,
    };
    let plain_text = plain.encode();
    assert_eq!(EnrollCode::decode(&plain_text).unwrap(), plain);
    assert_eq!(
        Code::decode(&plain_text).unwrap(),
        Code::Plain(plain.clone())
    );
    assert_eq!(
        TwoPartCode::decode(&plain_text),
        Err(CodeError::Version { found: 2 })
    );
    // A grant of every scope, the enroll flag and no cloud round trip too.
    let mut a = golden_admission();
    a.scopes = Scopes::All;
    a.enroll = true;
    a.cloud = None;
    a.sign(&cloud()).unwrap();
    let code = TwoPartCode::mint(
        a.clone(),
        cloud().public(),
        &golden_keys(),
        CodeSecret::from_bytes([9; 32]),
    )
    .unwrap();
    let back = TwoPartCode::decode(&code.encode()).unwrap();
    assert_eq!(*back.admission(), a);
    assert_eq!(back.open_keys().unwrap(), golden_keys());
}

#[test]
fn the_expiry_is_carried_and_judged_by_the_callers_clock() {
    let code = TwoPartCode::decode(&golden().encode()).unwrap();
    assert_eq!(code.admission().expires_at, 1_800_000_900);
    assert!(!code.admission().expired(1_800_000_900));
    assert!(code.admission().expired(1_800_000_901));
    let mut a = golden_admission();
    a.expires_at = 1_700_000_000;
    a.sign(&cloud()).unwrap();
    let code = TwoPartCode::mint(
        a,
        cloud().public(),
        &golden_keys(),
        CodeSecret::from_bytes([1; 32]),
    )
    .unwrap();
    let back = TwoPartCode::decode(&code.encode()).unwrap();
    assert_eq!(back.admission().expires_at, 1_700_000_000);
    // The expiry is signed: a hub cannot be shown a later one.
    let mut later = back.admission().clone();
    later.expires_at = 1_900_000_000;
    assert!(later.verify(cloud().public()).is_err());
}

#[test]
fn every_flipped_bit_of_the_admission_fails_its_signature() {
    let bytes = golden_admission().encode();
    let cloud = cloud();
    let mut decoded = 0;
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(a) = Admission::decode(&b) {
            decoded += 1;
            assert!(
                a.verify(cloud.public()).is_err(),
                "bit {i} flipped still verifies"
            );
        }
    }
    // Most flips land in bytes any value of which decodes (sites, token, signature, names).
    assert!(decoded > bytes.len() * 4, "only {decoded} flips decoded");
}

#[test]
fn every_flipped_bit_of_the_sealed_keys_fails_opening() {
    let code = golden();
    let sealed = code.sealed_keys();
    for i in 0..sealed.len() * 8 {
        let mut b = sealed.to_vec();
        b[i / 8] ^= 1 << (i % 8);
        assert_eq!(
            open_code_keys(&b, code.secret(), code.admission_bytes()),
            Err(CodeKeysError::TagMismatch),
            "bit {i}"
        );
    }
}

#[test]
fn a_wrong_secret_or_another_codes_admission_opens_nothing() {
    let code = golden();
    let wrong = CodeSecret::from_bytes([0x5d; 32]);
    assert_eq!(
        open_code_keys(code.sealed_keys(), &wrong, code.admission_bytes()),
        Err(CodeKeysError::TagMismatch)
    );
    let mut other = golden_admission();
    other.token = [0x78; 32];
    other.sign(&cloud()).unwrap();
    assert_eq!(
        open_code_keys(code.sealed_keys(), code.secret(), &other.encode()),
        Err(CodeKeysError::TagMismatch)
    );
    // Within a whole code: one changed secret byte (checksum fixed) opens nothing.
    let mut content = code_bytes(&code.encode());
    content.truncate(content.len() - 4);
    let secret_at = content.len() - code.sealed_keys().len() - 32;
    content[secret_at] ^= 1;
    let changed = TwoPartCode::decode(&framed(&content)).unwrap();
    assert_eq!(changed.open_keys(), Err(CodeKeysError::TagMismatch));
    let err = changed.open_keys().unwrap_err().to_string();
    assert!(err.contains("do not open"), "{err}");
}

#[test]
fn a_grant_wider_than_the_limit_is_refused_when_the_code_is_read() {
    let wide: BTreeSet<String> = (0..=MAX_SCOPES_PER_GRANT)
        .map(|i| format!("s{i}"))
        .collect();
    let admission = signed(&golden_fields(Scopes::Only(wide.clone())));
    assert_eq!(
        Admission::decode(&admission),
        Err(AdmissionError::Grant(ScopeError::TooMany {
            count: MAX_SCOPES_PER_GRANT + 1
        }))
    );
    let mut content = vec![3u8];
    outpost_protocol::varint::write_u64(&mut content, admission.len() as u64);
    content.extend_from_slice(&admission);
    content.extend_from_slice(&[0x5c; 32]);
    content.extend_from_slice(golden().sealed_keys());
    let err = Code::decode(&framed(&content)).unwrap_err();
    assert_eq!(
        err,
        CodeError::Admission(AdmissionError::Grant(ScopeError::TooMany {
            count: MAX_SCOPES_PER_GRANT + 1
        }))
    );
    assert!(err.to_string().contains("65 scopes"), "{err}");
    // A minter cannot sign one either.
    let mut a = golden_admission();
    a.scopes = Scopes::Only(wide);
    assert!(matches!(
        a.sign(&cloud()),
        Err(AdmissionError::Grant(ScopeError::TooMany { count: 65 }))
    ));
    // The widest grant allowed is read.
    let widest: BTreeSet<String> = (0..MAX_SCOPES_PER_GRANT).map(|i| format!("s{i}")).collect();
    let ok = signed(&golden_fields(Scopes::Only(widest)));
    assert!(Admission::decode(&ok).is_ok());
}

#[test]
fn malformed_admissions_get_their_own_errors() {
    let good = golden_admission().encode();
    assert_eq!(
        Admission::decode(&good[..good.len() - 1]),
        Err(AdmissionError::Truncated)
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(Admission::decode(&long), Err(AdmissionError::TrailingBytes));
    assert_eq!(
        Admission::decode(&vec![0; 5000]),
        Err(AdmissionError::TooLong { len: 5000 })
    );
    assert_eq!(Admission::decode(&[]), Err(AdmissionError::Malformed));
    // Names out of order: not the one encoding of the grant.
    let mut fields = golden_fields(Scopes::Only(BTreeSet::from(["a".into(), "b".into()])));
    let at = fields
        .windows(4)
        .position(|w| w == [1, b'a', 1, b'b'])
        .unwrap();
    fields[at + 1] = b'b';
    fields[at + 3] = b'a';
    assert_eq!(
        Admission::decode(&signed(&fields)),
        Err(AdmissionError::Malformed)
    );
    // The hub key compressed (33 bytes) is a valid point but not the admission's form.
    let compressed = {
        let mut k = vec![0x02 | (hub().public().as_bytes()[64] & 1)];
        k.extend_from_slice(&hub().public().as_bytes()[1..33]);
        k
    };
    let fields = golden_fields(Scopes::All);
    let mut other = fields[..16].to_vec();
    other.push(33);
    other.extend_from_slice(&compressed);
    other.extend_from_slice(&fields[16 + 66..]);
    assert_eq!(
        Admission::decode(&signed(&other)),
        Err(AdmissionError::BadKey)
    );
    // Too many addresses: refused when read, and never signed.
    let mut a = golden_admission();
    a.addresses = (0..=MAX_ADDRESSES)
        .map(|i| format!("10.0.0.{i}:7420"))
        .collect();
    assert_eq!(
        a.sign(&cloud()),
        Err(AdmissionError::TooManyAddresses { count: 17 })
    );
}

#[test]
fn minting_refuses_an_unsigned_admission_and_an_oversized_code() {
    let mut a = golden_admission();
    a.signature = [0; 64];
    assert_eq!(
        TwoPartCode::mint(
            a,
            cloud().public(),
            &golden_keys(),
            CodeSecret::from_bytes([1; 32])
        ),
        Err(MintError::Unsigned)
    );
    // 200 epochs of one scope: more than a code holds.
    let digest = DigestKey::from_bytes(DIGEST_KEY).digest("moshi");
    let keys = KeySet {
        digest_key: DigestKey::from_bytes(DIGEST_KEY),
        entries: (1..=200)
            .map(|e| KeyEntry {
                scope: digest,
                key: ScopeKey::new(e, [e as u8; 32]).unwrap(),
            })
            .collect(),
    };
    let err = TwoPartCode::mint(
        golden_admission(),
        cloud().public(),
        &keys,
        CodeSecret::from_bytes([1; 32]),
    )
    .unwrap_err();
    assert!(
        matches!(err, MintError::TooLong { len } if len > MAX_CODE_BYTES),
        "{err:?}"
    );
}

#[test]
fn damaged_codes_get_the_error_that_says_why() {
    let text = golden().encode();
    let huge = format!("{PREFIX}{}", "A".repeat(20_000));
    assert!(matches!(
        Code::decode(&huge),
        Err(CodeError::TooLong { chars: 20_000 })
    ));
    // Every single changed character is caught (the checksum, as for plain codes).
    for i in PREFIX.len()..text.len() {
        let mut b = text.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        assert!(
            Code::decode(&String::from_utf8(b).unwrap()).is_err(),
            "change at {i} accepted"
        );
    }
    let mut content = code_bytes(&text);
    content.truncate(content.len() - 4);
    // Cut keys: a length no key set gives.
    let cut = &content[..content.len() - 1];
    assert!(matches!(
        Code::decode(&framed(cut)),
        Err(CodeError::Keys(CodeKeysError::Truncated { .. }))
    ));
    // An admission length beyond the code.
    let mut wrong = content.clone();
    wrong[1] = 0xff;
    wrong[2] = 0x7f;
    assert_eq!(Code::decode(&framed(&wrong)), Err(CodeError::Body));
    // A newer format.
    assert_eq!(
        Code::decode(&framed(&[4, 0, 0])),
        Err(CodeError::Version { found: 4 })
    );
    let err = CodeError::Version { found: 4 }.to_string();
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn debug_shows_neither_the_token_nor_the_secret() {
    let shown = format!("{:?}", golden());
    // The token is 77 77 .. 77 (119 as a decimal byte), the secret 5c 5c .. 5c (92).
    for secret in ["119, 119", "92, 92", "7777", "5c5c", "token", "secret"] {
        assert!(!shown.contains(secret), "{secret:?} in {shown}");
    }
    assert!(shown.contains("Admission"), "{shown}");
    assert_eq!(
        format!("{:?}", CodeSecret::from_bytes([0x5c; 32])),
        "CodeSecret(..)"
    );
}
