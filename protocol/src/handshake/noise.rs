//! The glue to `snow`: protocol names, the prologue, and a crypto resolver whose only randomness
//! is a caller-provided 32-byte seed.
//!
//! snow asks its resolver for a random source when a handshake is built and draws the ephemeral
//! key from it. Ours is a SHA-256 counter stream over the seed, so the protocol never reads the
//! operating system itself (no_std devices pass bytes from their hardware RNG; `std` callers use
//! [`super::Ephemeral::from_os`]) and tests can fix the ephemeral key to check exact transcripts.
//! A 32-byte draw is repeated until it is a valid P-256 scalar: snow's P-256 backend unwraps the
//! scalar conversion, and this keeps a (2^-32-rare) invalid draw from ever reaching it.

use super::keys::is_valid_scalar;
use alloc::boxed::Box;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// The session handshake.
pub const SESSION_PATTERN: &str = "Noise_IK_P256_AESGCM_SHA256";
/// The enrollment handshake: IK with the one-time token as pre-shared key, mixed after message 2.
pub const ENROLL_PATTERN: &str = "Noise_IKpsk2_P256_AESGCM_SHA256";
/// What every prologue starts with.
pub const PROLOGUE_LABEL: &[u8] = b"outpost-noise";

pub(crate) fn params(enroll: bool) -> NoiseParams {
    let name = if enroll {
        ENROLL_PATTERN
    } else {
        SESSION_PATTERN
    };
    // Both names are constants this build of snow supports (checked by a unit test).
    name.parse().expect("supported Noise pattern")
}

/// `label ‖ version (u16 BE) ‖ mode ‖ responder site id`: both sides hash it into the handshake, so
/// a peer offering another version, mode or hub than the responder uses fails to authenticate.
pub(crate) fn prologue(version: u16, mode: u8, responder_site: &[u8; 16]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 19);
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(&version.to_be_bytes());
    p.push(mode);
    p.extend_from_slice(responder_site);
    p
}

/// A deterministic random stream: block `i` is SHA-256(seed ‖ i).
pub(crate) struct SeededRng {
    seed: [u8; 32],
    counter: u64,
}

impl SeededRng {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        SeededRng { seed, counter: 0 }
    }

    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_be_bytes());
            self.counter += 1;
            chunk.copy_from_slice(&h.finalize()[..chunk.len()]);
        }
    }

    /// 32 bytes; the handshake's fallback pre-shared key when it must refuse a token.
    pub(crate) fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }
}

impl Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        loop {
            self.fill(dest);
            // snow draws exactly one scalar's worth for an ephemeral key.
            if dest.len() != 32 || is_valid_scalar(dest) {
                return Ok(());
            }
        }
    }
}

/// snow's default P-256, AES-GCM and SHA-256 backends, with [`SeededRng`] as the random source.
pub(crate) struct Resolver {
    seed: [u8; 32],
}

impl Resolver {
    pub(crate) fn boxed(seed: [u8; 32]) -> Box<dyn CryptoResolver + Send> {
        Box::new(Resolver { seed })
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng::new(self.seed)))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::P256 => DefaultResolver.resolve_dh(choice),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match choice {
            HashChoice::SHA256 => DefaultResolver.resolve_hash(choice),
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::AESGCM => DefaultResolver.resolve_cipher(choice),
            _ => None,
        }
    }
}

/// The primitives the channel uses, exactly as snow gets them (for the Wycheproof tests).
#[doc(hidden)]
pub mod primitives {
    use super::*;

    /// snow's P-256 Diffie-Hellman object.
    pub fn p256() -> Box<dyn Dh> {
        DefaultResolver
            .resolve_dh(&DHChoice::P256)
            .expect("use-p256 is enabled")
    }

    /// snow's AES-256-GCM object.
    pub fn aes_gcm() -> Box<dyn Cipher> {
        DefaultResolver
            .resolve_cipher(&CipherChoice::AESGCM)
            .expect("use-aes-gcm is enabled")
    }

    /// snow's SHA-256 object (its `hmac` and `hkdf` are what the handshake derives keys with).
    pub fn sha256() -> Box<dyn Hash> {
        DefaultResolver
            .resolve_hash(&HashChoice::SHA256)
            .expect("use-sha2 is enabled")
    }
}
