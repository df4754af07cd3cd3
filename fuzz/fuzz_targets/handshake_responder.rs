//! The handshake responder (what a hub exposes to anyone on the LAN): any bytes, delivered in any
//! slicing, never panic; nothing is admitted without a valid enrollment confirmation; a refusal
//! or nothing is all that goes back. The first input byte picks the slicing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::channel::Limits;
use outpost_protocol::handshake::{
    Ephemeral, Gatekeeper, Keypair, PublicKey, Refusal, Responder, ResponderConfig, TokenId,
};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};

/// Admits every key, knows one token; records admissions.
struct Gate(usize);

impl Gatekeeper for Gate {
    fn authorize(&mut self, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
    fn last_counter(&mut self, _: &PublicKey) -> Result<Option<u64>, Refusal> {
        Ok(Some(3))
    }
    fn record_counter(&mut self, _: &PublicKey, counter: u64) -> Result<(), Refusal> {
        assert!(counter > 3);
        Ok(())
    }
    fn enrollment_token(&mut self, id: &TokenId) -> Result<[u8; 32], Refusal> {
        if *id == TokenId::of(&[0x5a; 32]) {
            Ok([0x5a; 32])
        } else {
            Err(Refusal::UnknownToken)
        }
    }
    fn check_enrollment(&mut self, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
    fn admit(&mut self, _: &TokenId, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        self.0 += 1;
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = step as usize % 64 + 1;
    let hub = Keypair::from_secret(&[2; 32]).unwrap();
    let mut r = Responder::new(
        ResponderConfig {
            identity: hub,
            site: SiteId([0xaa; 16]),
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
        },
        Ephemeral::from_seed([4; 32]),
        Limits::default(),
        0,
    );
    let mut gate = Gate(0);
    for piece in data.chunks(step) {
        let mut input = piece;
        match r.receive(&mut input, 1, &mut gate) {
            Ok(Some(mut ch)) => {
                // Whatever follows goes to the channel, which must not panic either.
                let _ = ch.receive(&mut input, 1);
                break;
            }
            Ok(None) => {}
            Err(_) => {
                let reply = r.take_outgoing();
                assert!(reply.is_empty() || reply.len() == 2 + 82);
                break;
            }
        }
        let reply = r.take_outgoing();
        assert!(reply.is_empty() || reply.len() == 2 + 82);
    }
});
