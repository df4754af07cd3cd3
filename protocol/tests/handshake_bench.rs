//! In-memory figures for the secure channel (not a test; run with
//! `cargo test -p outpost-protocol --release --test handshake_bench -- --ignored --nocapture`):
//! full session handshakes per second (both sides, one thread) and transport throughput
//! (seal + open of 1 MiB messages). Loopback TCP throughput is measured by the hub.

use outpost_protocol::channel::Limits;
use outpost_protocol::handshake::{
    Ephemeral, Initiator, InitiatorConfig, Keypair, Purpose, Responder, ResponderConfig,
};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use outpost_testkit::gate::MemGate;
use std::time::Instant;

fn pair(
    n: u64,
) -> (
    outpost_protocol::channel::Channel,
    outpost_protocol::channel::Channel,
) {
    let device = Keypair::from_secret(&[1; 32]).unwrap();
    let hub = Keypair::from_secret(&[2; 32]).unwrap();
    let cfg = InitiatorConfig {
        identity: device,
        site: SiteId([1; 16]),
        counter: n,
        responder_key: *hub.public(),
        responder_site: SiteId([2; 16]),
        purpose: Purpose::Session,
        version: PROTOCOL_VERSION,
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    let mut i = Initiator::start(&cfg, Ephemeral::from_seed(seed), Limits::default(), 0).unwrap();
    seed[31] = 1;
    let mut r = Responder::new(
        ResponderConfig {
            identity: hub,
            site: SiteId([2; 16]),
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
        },
        Ephemeral::from_seed(seed),
        Limits::default(),
        0,
    );
    let m1 = i.take_outgoing();
    let rc = r
        .receive(&mut m1.as_slice(), 0, &mut MemGate::open())
        .unwrap()
        .unwrap();
    let m2 = r.take_outgoing();
    let ic = i.receive(&mut m2.as_slice(), 0).unwrap().unwrap();
    (ic, rc)
}

#[test]
#[ignore = "benchmark: prints figures"]
fn handshake_and_transport_figures() {
    let n = 200;
    let t = Instant::now();
    for k in 0..n {
        pair(k + 1);
    }
    let hs = n as f64 / t.elapsed().as_secs_f64();
    let (mut a, mut b) = pair(1);
    let msg = vec![0x5au8; 1 << 20];
    let rounds = 64;
    let t = Instant::now();
    for _ in 0..rounds {
        a.send(&msg).unwrap();
        let wire = a.take_outgoing();
        let got = b.receive(&mut wire.as_slice(), 0).unwrap().unwrap();
        assert_eq!(got.len(), msg.len());
    }
    let mbs = rounds as f64 / t.elapsed().as_secs_f64();
    println!("handshakes (both sides, one core): {hs:.0}/s; transport seal+open: {mbs:.1} MiB/s");
}
