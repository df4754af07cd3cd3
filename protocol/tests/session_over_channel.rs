//! A whole device ↔ hub session in memory over the real stack: Noise handshake, encrypted frames
//! of at most 65,535 bytes, chunked messages, the session state machines and in-memory stores.
//! Bytes are delivered in uneven slices, as a socket would.

mod session_support;

use outpost_protocol::channel::{Channel, Limits};
use outpost_protocol::handshake::{
    Ephemeral, Initiator, InitiatorConfig, Keypair, Purpose, Responder, ResponderConfig,
};
use outpost_protocol::hlc::Hlc;
use outpost_protocol::message::Message;
use outpost_protocol::session::{ClientSession, ServerSession};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use outpost_testkit::batch::text_rows;
use outpost_testkit::gate::MemGate;
use session_support::*;

/// A batch of `rows` rows with a text payload each: big enough to need chunking.
fn big_batch(origin: SiteId, seq: u64, rows: usize) -> Vec<u8> {
    let rows = (0..rows).map(|i| {
        let note = format!("note {i} {}", "x".repeat(i % 50));
        (i as i64, Hlc::new(1_700_000_000_000, 0), note)
    });
    text_rows(origin, seq, seq, "visits", "note", rows)
}

fn send(ch: &mut Channel, m: &Message) -> Vec<u8> {
    ch.send(&m.encode()).unwrap();
    ch.take_outgoing()
}

#[test]
fn a_device_syncs_with_a_hub_over_the_secure_channel() {
    let (device, hub) = (
        Keypair::from_secret(&[1; 32]).unwrap(),
        Keypair::from_secret(&[2; 32]).unwrap(),
    );
    let cfg = InitiatorConfig {
        identity: device.clone(),
        site: DEVICE,
        counter: 1,
        responder_key: *hub.public(),
        responder_site: HUB,
        purpose: Purpose::Session,
        version: PROTOCOL_VERSION,
    };
    let mut init =
        Initiator::start(&cfg, Ephemeral::from_seed([3; 32]), Limits::default(), 0).unwrap();
    let mut resp = Responder::new(
        ResponderConfig {
            identity: hub,
            site: HUB,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
        },
        Ephemeral::from_seed([4; 32]),
        Limits::default(),
        0,
    );
    let mut gate = MemGate::with_device(&device, DEVICE);
    let m1 = init.take_outgoing();
    let mut hc = resp
        .receive(&mut m1.as_slice(), 1, &mut gate)
        .unwrap()
        .unwrap();
    let m2 = resp.take_outgoing();
    let mut dc = init.receive(&mut m2.as_slice(), 2).unwrap().unwrap();

    let own: Vec<Vec<u8>> = (1..=3).map(|s| big_batch(DEVICE, s, 4_000)).collect();
    assert!(
        own[0].len() > 65_535,
        "a batch larger than a frame: {}",
        own[0].len()
    );
    let theirs: Vec<Vec<u8>> = (1..=2)
        .map(|s| big_batch(SiteId([0x22; 16]), s, 3_000))
        .collect();
    let mut cstore = Device::holding(DEVICE, own.clone());
    let mut sstore = MemServer::holding(theirs);
    let mut client = ClientSession::new(client_config(1));
    let mut sconfig = server_config();
    sconfig.peer_site = hc.peer().site;
    sconfig.max_staged_bytes = 64 << 20;
    let mut server = ServerSession::new(sconfig);

    let mut now = 10;
    for _round in 0..1_000 {
        now += 1;
        let mut to_hub = vec![];
        while let Some(m) = client.poll(&mut cstore).unwrap() {
            to_hub.extend(send(&mut dc, &m));
        }
        // Deliver in uneven slices.
        for piece in to_hub.chunks(7_777) {
            let mut input = piece;
            while let Some(bytes) = hc.receive(&mut input, now).unwrap() {
                let m = Message::decode(&bytes, usize::MAX).unwrap();
                server.handle(m, now, &mut sstore).unwrap();
            }
        }
        let mut to_device = vec![];
        while let Some(m) = server.poll(&mut sstore).unwrap() {
            to_device.extend(send(&mut hc, &m));
        }
        for piece in to_device.chunks(5_000) {
            let mut input = piece;
            while let Some(bytes) = dc.receive(&mut input, now).unwrap() {
                let m = Message::decode(&bytes, usize::MAX).unwrap();
                client.handle(m, &mut cstore).unwrap();
            }
        }
        if client.is_done() && server.is_done() {
            break;
        }
    }
    assert!(client.is_done() && server.is_done());
    assert_eq!(sstore.batches.iter().filter(|b| own.contains(b)).count(), 3);
    assert_eq!(cstore.vector.get(&(SiteId([0x22; 16])).into()), 2);
    assert_eq!(cstore.acked.len(), 3);
    dc.finish().unwrap();
    hc.finish().unwrap();
}
