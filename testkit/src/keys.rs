//! The static key a test site signs and dials with: derived from its site id, so a batch made
//! by [`mod@crate::batch`] for an origin carries the signature of the key that origin's test device
//! authenticates with (hubs and the cloud refuse a device's own batches signed by anyone else).
//! A test that needs a second key for the same site (a copied database) generates one.

use outpost_protocol::handshake::{Keypair, SECRET_KEY_LEN};
use outpost_protocol::SiteId;
use sha2::{Digest, Sha256};

/// The test key of `site`: the same for every call.
pub fn site_keypair(site: SiteId) -> Keypair {
    let mut attempt = 0u32;
    Keypair::generate_with(|secret: &mut [u8; SECRET_KEY_LEN]| {
        let mut h = Sha256::new();
        h.update(b"outpost-testkit site key\n");
        h.update(site.0);
        h.update(attempt.to_le_bytes());
        attempt += 1;
        secret.copy_from_slice(&h.finalize());
        Ok::<(), core::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {})
}

/// Signs an encoded batch with the test key of its origin. Panics when it is not a batch.
pub fn signed(mut batch: Vec<u8>) -> Vec<u8> {
    let origin = crate::batch::header(&batch).origin;
    outpost_protocol::batch::signature::sign(&mut batch, &site_keypair(origin))
        .expect("a test batch's clear header");
    batch
}
