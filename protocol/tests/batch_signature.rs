//! Batch signatures (issue 16, DESIGN section 10): the origin's key signs the clear header;
//! signing is deterministic (RFC 6979), and any change to what is signed, or another key, fails.

use outpost_protocol::batch::codec::{self, decode_header, Limits};
use outpost_protocol::batch::signature::{self, SignatureError};
use outpost_protocol::batch::{BatchHeader, Compression};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::{Hlc, SeqRange, SiteId};

const ORIGIN: SiteId = SiteId([0x11; 16]);

fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32]).unwrap()
}

fn unsigned() -> Vec<u8> {
    codec::encode(
        ORIGIN,
        SeqRange::new(1, 3).unwrap(),
        vec![],
        &[],
        Compression::None,
    )
}

/// A change to a decoded header.
type Edit = Box<dyn Fn(&mut BatchHeader)>;

fn header(bytes: &[u8]) -> BatchHeader {
    decode_header(bytes, &Limits::default()).unwrap()
}

#[test]
fn a_signed_batch_verifies_with_its_key_only() {
    let mut bytes = unsigned();
    assert_eq!(header(&bytes).signature, None);
    assert_eq!(
        signature::verify(&header(&bytes), key(1).public()),
        Err(SignatureError::Missing)
    );
    signature::sign(&mut bytes, &key(1)).unwrap();
    let h = header(&bytes);
    assert!(h.signature.is_some());
    signature::verify(&h, key(1).public()).unwrap();
    assert_eq!(
        signature::verify(&h, key(2).public()),
        Err(SignatureError::Invalid)
    );
    // The body as sent is unchanged by signing, and still hashes to what the clear header says.
    codec::verify(&bytes, &Limits::default()).unwrap();
}

#[test]
fn signing_is_deterministic() {
    let (mut a, mut b) = (unsigned(), unsigned());
    signature::sign(&mut a, &key(1)).unwrap();
    signature::sign(&mut b, &key(1)).unwrap();
    assert_eq!(a, b);
    // Signing again replaces the signature in place.
    signature::sign(&mut a, &key(2)).unwrap();
    assert_eq!(a.len(), b.len());
    signature::verify(&header(&a), key(2).public()).unwrap();
}

#[test]
fn every_clear_header_field_is_covered() {
    let mut signed = unsigned();
    signature::sign(&mut signed, &key(1)).unwrap();
    let good = header(&signed);
    let body = &signed[signed.len() - good.sent_len as usize..];
    // Rewrite each field the relays route by and re-assemble with the old signature.
    let edits: Vec<(&str, Edit)> = vec![
        ("origin", Box::new(|h| h.origin = SiteId([0x22; 16]))),
        (
            "range",
            Box::new(|h| h.range = SeqRange::new(1, 4).unwrap()),
        ),
        ("stream", Box::new(|h| h.stream = "clinic-7".into())),
        ("flags", Box::new(|h| h.flags.transfer = true)),
        ("key epoch", Box::new(|h| h.key_epoch = 1)),
        ("grant version", Box::new(|h| h.grant_version = 5)),
        ("max hlc", Box::new(|h| h.max_hlc = Hlc::new(1, 0))),
    ];
    for (what, edit) in edits {
        let mut h = good.clone();
        edit(&mut h);
        let forged = codec::assemble_raw(&h, &body[body.len() - h.body_len as usize..]);
        let decoded = decode_header(&forged, &Limits::default());
        if h.key_epoch != 0 && decoded.is_err() {
            // A key epoch makes the body a sealed one, which this body is too short to be:
            // refused before its signature is even looked at.
            continue;
        }
        let fh = decoded.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            signature::verify(&fh, key(1).public()),
            Err(SignatureError::Invalid),
            "{what}"
        );
    }
}

#[test]
fn a_high_s_twin_of_a_valid_signature_is_refused() {
    // (r, n - s) verifies mathematically too; accepting it would let anyone alter a signed batch's
    // bytes (and so its identity) without the key.
    let mut bytes = unsigned();
    signature::sign(&mut bytes, &key(1)).unwrap();
    let h = header(&bytes);
    let sig = h.signature.unwrap();
    let n = p256_order();
    let s = &sig[32..];
    let twin_s = sub_be(&n, s);
    let mut twin = sig;
    twin[32..].copy_from_slice(&twin_s);
    let mut h2 = h.clone();
    h2.signature = Some(twin);
    assert_eq!(
        signature::verify(&h2, key(1).public()),
        Err(SignatureError::Invalid)
    );
}

/// The order of the P-256 group, big-endian.
fn p256_order() -> [u8; 32] {
    let hex = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// a - b for 32-byte big-endian numbers with a >= b.
fn sub_be(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = a[i] as i16 - b[i] as i16 - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    out
}
