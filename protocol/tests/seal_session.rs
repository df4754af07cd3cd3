//! A relay handles sealed batches with today's session code, holding no key: a device pushes
//! sealed, signed batches; the hub checks their clear headers, lengths, hashes and signatures,
//! stores them byte for byte and serves them to another device; only a holder of the scope key
//! reads them. (Nothing seals at push yet: this is what the next phases build on.)

mod session_support;

use outpost_protocol::batch::codec::{self, DecodeError, Limits};
use outpost_protocol::batch::signature;
use outpost_protocol::seal::{decode_sealed, seal_batch, DigestKey, ScopeKey};
use outpost_protocol::session::{ClientSession, ServerSession};
use outpost_protocol::{Hlc, SiteId};
use outpost_testkit::batch::text_rows_in;
use outpost_testkit::keys::site_keypair;
use session_support::*;

const OTHER: SiteId = SiteId([0x22; 16]);

fn dk() -> DigestKey {
    DigestKey::from_bytes([0x5d; 32])
}

/// The wire id of the batches' scope, `moshi`.
fn stream() -> String {
    dk().wire_scope("moshi")
}

fn key() -> ScopeKey {
    ScopeKey::new(1, [0x5e; 32]).unwrap()
}

/// A sealed batch of `origin` for `lo..=hi`, signed after sealing, holding a distinctive name.
fn sealed(origin: SiteId, lo: u64, hi: u64) -> Vec<u8> {
    let rows = (lo..=hi).map(|i| {
        let hlc = Hlc::new(1_760_000_000_000 + i, 0);
        (i as i64, hlc, format!("Zawadi Kisanga {i}"))
    });
    let plain = text_rows_in(origin, "moshi", lo, hi, "patients", "name", rows);
    let mut out = seal_batch(&plain, &key(), &dk(), [lo as u8; 12]).unwrap();
    signature::sign(&mut out, &site_keypair(origin)).unwrap();
    out
}

fn readable(bytes: &[u8]) -> bool {
    bytes.windows(7).any(|w| w == b"Zawadi " || w == b"patient")
}

#[test]
fn a_hub_stores_and_serves_sealed_batches_it_cannot_read() {
    let pushed = vec![sealed(DEVICE, 1, 3), sealed(DEVICE, 4, 4)];
    let mut sstore = MemServer::holding(vec![sealed(OTHER, 1, 2)]);
    let mut cstore = Device::holding(DEVICE, pushed.clone());
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    let (_, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    // Stored byte for byte, served to the device (the other origin's batch), all sealed.
    for b in &pushed {
        assert!(sstore.batches.contains(b), "stored as pushed");
    }
    assert_eq!(cstore.applied.len(), 1);
    for b in &sstore.batches {
        assert!(!readable(b), "the hub's store holds no readable row");
        assert_eq!(
            codec::decode(b, &Limits::default()),
            Err(DecodeError::Sealed { epoch: 1 })
        );
        let h = codec::verify(b, &Limits::default()).unwrap();
        signature::verify(&h, site_keypair(h.origin).public()).unwrap();
        // A holder of the scope key reads it.
        let batch = decode_sealed(b, &Limits::default(), &dk(), |s, e| {
            (s == stream() && e == 1).then(key)
        })
        .unwrap()
        .batch;
        assert!(!batch.tables[0].rows.is_empty());
    }
    let plain = text_rows_in(
        DEVICE,
        &stream(),
        1,
        1,
        "patients",
        "name",
        [(1, Hlc::new(1, 0), "Zawadi".into())],
    );
    assert!(readable(&plain), "the marker would show in a plain batch");
}
