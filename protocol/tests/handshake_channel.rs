//! The secure channel end to end in memory: handshakes, the rejection list of the "Secure
//! sessions" issue (one test per rejection, each with its own error), limits and transport frames.

use outpost_protocol::channel::{Channel, ChannelError, Limits};
use outpost_protocol::frame::FrameError;
use outpost_protocol::handshake::{
    Ephemeral, HandshakeError, Initiator, InitiatorConfig, Keypair, Purpose, Refusal, Responder,
    ResponderConfig, TokenId,
};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use outpost_testkit::gate::{MemGate, TokenState};

fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32]).unwrap()
}

const HUB: SiteId = SiteId([0xaa; 16]);
const DEVICE: SiteId = SiteId([0x11; 16]);
const TOKEN: [u8; 32] = [0x5a; 32];

fn initiator_config(
    device: &Keypair,
    hub: &Keypair,
    counter: u64,
    purpose: Purpose,
) -> InitiatorConfig {
    InitiatorConfig {
        identity: device.clone(),
        site: DEVICE,
        counter,
        responder_key: *hub.public(),
        responder_site: HUB,
        purpose,
        version: PROTOCOL_VERSION,
    }
}

fn responder(hub: &Keypair, seed: u8) -> Responder {
    Responder::new(
        ResponderConfig {
            identity: hub.clone(),
            site: HUB,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
        },
        Ephemeral::from_seed([seed; 32]),
        Limits::default(),
        0,
    )
}

fn start(cfg: &InitiatorConfig, seed: u8) -> (Initiator, Vec<u8>) {
    let mut i =
        Initiator::start(cfg, Ephemeral::from_seed([seed; 32]), Limits::default(), 0).unwrap();
    let msg1 = i.take_outgoing();
    (i, msg1)
}

/// Runs a whole handshake; returns both results and the responder's error reply bytes.
fn handshake(
    cfg: &InitiatorConfig,
    hub: &Keypair,
    gate: &mut MemGate,
) -> (
    Result<Channel, HandshakeError>,
    Result<Channel, HandshakeError>,
) {
    let (mut i, msg1) = start(cfg, 1);
    let mut r = responder(hub, 2);
    let resp = r.receive(&mut msg1.as_slice(), 1, gate);
    let reply = r.take_outgoing();
    let mut init = i
        .receive(&mut reply.as_slice(), 2)
        .map(|c| c.expect("whole reply"));
    let resp = match resp {
        Ok(Some(c)) => Ok(c),
        // Enrollment: message 3 is the initiator channel's first outgoing bytes.
        Ok(None) => match &mut init {
            Ok(ch) => {
                let msg3 = ch.take_outgoing();
                r.receive(&mut msg3.as_slice(), 3, gate)
                    .map(|c| c.expect("confirmation"))
            }
            Err(_) => Err(HandshakeError::Finished),
        },
        Err(e) => Err(e),
    };
    (init, resp)
}

fn exchange(a: &mut Channel, b: &mut Channel, msg: &[u8]) -> Vec<u8> {
    a.send(msg).unwrap();
    let wire = a.take_outgoing();
    b.receive(&mut wire.as_slice(), 10)
        .unwrap()
        .expect("a whole message")
}

#[test]
fn session_handshake_opens_a_channel_both_ways() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let (i, r) = handshake(
        &initiator_config(&device, &hub, 7, Purpose::Session),
        &hub,
        &mut gate,
    );
    let (mut i, mut r) = (i.unwrap(), r.unwrap());
    assert_eq!(r.peer().key, *device.public());
    assert_eq!(r.peer().site, DEVICE);
    assert_eq!(r.peer().counter, 7);
    assert_eq!(i.peer().key, *hub.public());
    assert_eq!(i.handshake_hash(), r.handshake_hash());
    assert_eq!(exchange(&mut i, &mut r, b"hello hub"), b"hello hub");
    assert_eq!(exchange(&mut r, &mut i, b"hello device"), b"hello device");
    assert_eq!(gate.counters[device.public()], 7);
}

#[test]
fn large_messages_are_chunked_into_frames_of_at_most_65535_bytes() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let (i, r) = handshake(
        &initiator_config(&device, &hub, 1, Purpose::Session),
        &hub,
        &mut gate,
    );
    let (mut i, mut r) = (i.unwrap(), r.unwrap());
    let big: Vec<u8> = (0..300_000u32).map(|n| (n * 7) as u8).collect();
    i.send(&big).unwrap();
    let wire = i.take_outgoing();
    let mut at = 0;
    let mut frames = 0;
    while at < wire.len() {
        let len = u16::from_be_bytes([wire[at], wire[at + 1]]) as usize;
        assert!(len <= 65_535 && len > 16);
        at += 2 + len;
        frames += 1;
    }
    assert_eq!(frames, 6, "5 parts + end");
    // Fed one byte at a time, the message still arrives whole, once.
    let mut got = None;
    for b in wire.chunks(1) {
        if let Some(m) = r.receive(&mut &b[..], 5).unwrap() {
            assert!(got.is_none());
            got = Some(m);
        }
    }
    assert_eq!(got.unwrap(), big);
}

#[test]
fn enrollment_admits_the_device_only_after_it_proved_the_token() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_token(TOKEN, TokenState::Fresh);
    let cfg = initiator_config(&device, &hub, 1, Purpose::Enroll { token: TOKEN });
    let (mut i, msg1) = start(&cfg, 1);
    let mut r = responder(&hub, 2);
    assert!(r
        .receive(&mut msg1.as_slice(), 1, &mut gate)
        .unwrap()
        .is_none());
    assert!(
        gate.admitted.is_empty(),
        "nothing admitted before message 3"
    );
    let reply = r.take_outgoing();
    let mut ch = i.receive(&mut reply.as_slice(), 2).unwrap().unwrap();
    ch.send(b"first session message").unwrap();
    let wire = ch.take_outgoing(); // message 3 then the first message
    let mut rest = wire.as_slice();
    let mut rc = r.receive(&mut rest, 3, &mut gate).unwrap().unwrap();
    assert_eq!(
        gate.admitted,
        vec![(TokenId::of(&TOKEN), *device.public(), DEVICE)]
    );
    assert!(rc.peer().enrolled);
    assert_eq!(
        rc.receive(&mut rest, 4).unwrap().unwrap(),
        b"first session message"
    );
}

#[test]
fn unknown_key_is_refused_and_the_device_is_told() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::default();
    let (i, r) = handshake(
        &initiator_config(&device, &hub, 1, Purpose::Session),
        &hub,
        &mut gate,
    );
    assert_eq!(r.unwrap_err(), HandshakeError::Refused(Refusal::UnknownKey));
    let e = i.unwrap_err();
    assert_eq!(e, HandshakeError::Refused(Refusal::UnknownKey));
    assert!(e.to_string().contains("not enrolled"), "{e}");
    assert!(gate.counters.is_empty(), "a refused key records no counter");
}

#[test]
fn revoked_key_is_refused_and_the_device_is_told() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    gate.revoked.insert(*device.public());
    let (i, r) = handshake(
        &initiator_config(&device, &hub, 1, Purpose::Session),
        &hub,
        &mut gate,
    );
    assert_eq!(r.unwrap_err(), HandshakeError::Refused(Refusal::Revoked));
    let e = i.unwrap_err();
    assert_eq!(e, HandshakeError::Refused(Refusal::Revoked));
    assert!(e.to_string().contains("revoked"), "{e}");
}

#[test]
fn a_rogue_responder_cannot_complete_the_handshake_key_mismatch() {
    let (device, hub, rogue) = (key(1), key(2), key(3));
    let cfg = initiator_config(&device, &hub, 1, Purpose::Session);
    let (mut i, msg1) = start(&cfg, 1);
    // The rogue cannot read a message encrypted to the pinned key...
    let mut gate = MemGate::default();
    let mut r = responder(&rogue, 2);
    assert_eq!(
        r.receive(&mut msg1.as_slice(), 1, &mut gate).unwrap_err(),
        HandshakeError::Unauthenticated
    );
    assert!(r.take_outgoing().is_empty(), "no detail to the peer");
    // ...and any reply it forges (here a genuine reply from its own handshake) fails.
    let mut rogue_gate = MemGate::with_device(&device, DEVICE);
    let cfg_to_rogue = initiator_config(&device, &rogue, 1, Purpose::Session);
    let (_, msg1_to_rogue) = start(&cfg_to_rogue, 9);
    let mut r2 = responder(&rogue, 2);
    r2.receive(&mut msg1_to_rogue.as_slice(), 1, &mut rogue_gate)
        .unwrap();
    let forged = r2.take_outgoing();
    let e = i.receive(&mut forged.as_slice(), 2).unwrap_err();
    assert_eq!(e, HandshakeError::KeyMismatch);
    assert!(e
        .to_string()
        .starts_with("key mismatch: this is not the hub you enrolled with"));
}

#[test]
fn used_expired_and_foreign_tokens_are_refused() {
    let (device, hub) = (key(1), key(2));
    let cfg = initiator_config(&device, &hub, 1, Purpose::Enroll { token: TOKEN });
    for (mut gate, want) in [
        (
            MemGate::with_token(TOKEN, TokenState::Used),
            Refusal::TokenUsed,
        ),
        (
            MemGate::with_token(TOKEN, TokenState::Expired),
            Refusal::TokenExpired,
        ),
        (
            MemGate::with_token([1; 32], TokenState::Fresh),
            Refusal::UnknownToken,
        ),
    ] {
        let (i, r) = handshake(&cfg, &hub, &mut gate);
        assert_eq!(r.unwrap_err(), HandshakeError::Refused(want));
        let e = i.unwrap_err();
        assert_eq!(e, HandshakeError::EnrollmentRefused, "{want:?}");
        assert!(e.to_string().contains("new enrollment code"));
        assert!(gate.admitted.is_empty());
    }
}

#[test]
fn a_peer_naming_a_token_it_does_not_hold_fails_the_psk_check() {
    let (device, hub) = (key(1), key(2));
    // The hub's token under this id differs from the one the peer uses (a guessed or stolen id).
    let mut gate = MemGate::default();
    gate.tokens
        .insert(TokenId::of(&TOKEN), ([0x33; 32], TokenState::Fresh));
    let cfg = initiator_config(&device, &hub, 1, Purpose::Enroll { token: TOKEN });
    let (mut i, msg1) = start(&cfg, 1);
    let mut r = responder(&hub, 2);
    assert!(r
        .receive(&mut msg1.as_slice(), 1, &mut gate)
        .unwrap()
        .is_none());
    let reply = r.take_outgoing();
    assert_eq!(
        i.receive(&mut reply.as_slice(), 2).unwrap_err(),
        HandshakeError::EnrollmentRefused
    );
    // It cannot produce message 3 either: anything of the right length fails the psk.
    let mut forged = vec![0, 24];
    forged.extend_from_slice(&[0x42; 24]);
    assert_eq!(
        r.receive(&mut forged.as_slice(), 3, &mut gate).unwrap_err(),
        HandshakeError::TokenMismatch
    );
    assert!(gate.admitted.is_empty());
}

#[test]
fn a_known_site_id_under_a_new_key_is_told_to_re_enroll() {
    let (device, hub, copy) = (key(1), key(2), key(4));
    let mut gate = MemGate::with_token(TOKEN, TokenState::Fresh);
    gate.devices.insert(*device.public(), DEVICE);
    // A copied database (same site id) enrolling under a new key.
    let cfg = initiator_config(&copy, &hub, 1, Purpose::Enroll { token: TOKEN });
    let (i, r) = handshake(&cfg, &hub, &mut gate);
    assert_eq!(r.unwrap_err(), HandshakeError::Refused(Refusal::SiteReused));
    let e = i.unwrap_err();
    assert_eq!(e, HandshakeError::Refused(Refusal::SiteReused));
    assert!(e.to_string().contains("re-enroll"), "{e}");
    assert!(gate.admitted.is_empty());
}

#[test]
fn a_replayed_first_message_is_refused() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let cfg = initiator_config(&device, &hub, 5, Purpose::Session);
    let (_, msg1) = start(&cfg, 1);
    let mut r = responder(&hub, 2);
    r.receive(&mut msg1.as_slice(), 1, &mut gate)
        .unwrap()
        .unwrap();
    let mut again = responder(&hub, 3);
    assert_eq!(
        again
            .receive(&mut msg1.as_slice(), 2, &mut gate)
            .unwrap_err(),
        HandshakeError::ReplayedHandshake {
            counter: 5,
            last: 5
        }
    );
    // An older counter is refused too, and the device is told why.
    let (i, r) = handshake(
        &initiator_config(&device, &hub, 4, Purpose::Session),
        &hub,
        &mut gate,
    );
    assert_eq!(
        r.unwrap_err(),
        HandshakeError::ReplayedHandshake {
            counter: 4,
            last: 5
        }
    );
    assert_eq!(
        i.unwrap_err(),
        HandshakeError::Refused(Refusal::ReplayedHandshake)
    );
    // A higher one is fine.
    let (i, r) = handshake(
        &initiator_config(&device, &hub, 6, Purpose::Session),
        &hub,
        &mut gate,
    );
    assert!(i.is_ok() && r.is_ok());
}

fn open_pair() -> (Channel, Channel) {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let (i, r) = handshake(
        &initiator_config(&device, &hub, 1, Purpose::Session),
        &hub,
        &mut gate,
    );
    (i.unwrap(), r.unwrap())
}

#[test]
fn a_replayed_transport_frame_fails_and_closes_the_channel() {
    let (mut i, mut r) = open_pair();
    i.send(b"one").unwrap();
    let frame = i.take_outgoing();
    assert_eq!(
        r.receive(&mut frame.as_slice(), 1).unwrap().unwrap(),
        b"one"
    );
    assert_eq!(
        r.receive(&mut frame.as_slice(), 2).unwrap_err(),
        ChannelError::Decrypt
    );
    // Closed for good, nothing to send back.
    r.send(b"x").unwrap_err();
    assert!(r.take_outgoing().is_empty());
}

#[test]
fn a_reordered_transport_frame_fails() {
    let (mut i, mut r) = open_pair();
    i.send(b"one").unwrap();
    let first = i.take_outgoing();
    i.send(b"two").unwrap();
    let second = i.take_outgoing();
    assert_eq!(
        r.receive(&mut second.as_slice(), 1).unwrap_err(),
        ChannelError::Decrypt
    );
    assert_eq!(
        r.receive(&mut first.as_slice(), 1).unwrap_err(),
        ChannelError::Decrypt
    );
}

#[test]
fn a_modified_transport_frame_fails_at_every_byte() {
    let (mut i, _) = open_pair();
    i.send(b"a message worth protecting").unwrap();
    let frame = i.take_outgoing();
    for at in 2..frame.len() {
        let (_, mut r) = open_pair();
        let mut bad = frame.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            r.receive(&mut bad.as_slice(), 1).unwrap_err(),
            ChannelError::Decrypt,
            "byte {at}"
        );
    }
}

#[test]
fn a_version_downgrade_fails() {
    let (device, hub) = (key(1), key(2));
    // An old initiator is refused outright.
    let mut gate = MemGate::with_device(&device, DEVICE);
    let mut cfg = initiator_config(&device, &hub, 1, Purpose::Session);
    cfg.version = PROTOCOL_VERSION - 1;
    let (_, msg1) = start(&cfg, 1);
    let e = responder(&hub, 2)
        .receive(&mut msg1.as_slice(), 1, &mut gate)
        .unwrap_err();
    assert!(
        matches!(e, HandshakeError::UnsupportedVersion { offered, .. } if offered == PROTOCOL_VERSION - 1),
        "{e:?}"
    );
    // A man in the middle rewriting a newer offer to an older supported version breaks the
    // prologue: the responder cannot authenticate the message.
    cfg.version = PROTOCOL_VERSION + 1;
    let (_, mut msg1) = start(&cfg, 1);
    msg1[2..4].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    let mut r = Responder::new(
        ResponderConfig {
            identity: hub.clone(),
            site: HUB,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION + 1,
        },
        Ephemeral::from_seed([2; 32]),
        Limits::default(),
        0,
    );
    assert_eq!(
        r.receive(&mut msg1.as_slice(), 1, &mut gate).unwrap_err(),
        HandshakeError::Unauthenticated
    );
    assert!(r.take_outgoing().is_empty());
}

#[test]
fn a_handshake_aimed_at_another_hub_site_fails() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let mut cfg = initiator_config(&device, &hub, 1, Purpose::Session);
    cfg.responder_site = SiteId([0xbb; 16]);
    let (_, msg1) = start(&cfg, 1);
    assert_eq!(
        responder(&hub, 2)
            .receive(&mut msg1.as_slice(), 1, &mut gate)
            .unwrap_err(),
        HandshakeError::Unauthenticated
    );
}

#[test]
fn a_second_handshake_on_an_open_channel_is_refused() {
    let (device, hub) = (key(1), key(2));
    let (_, mut r) = open_pair();
    let (_, msg1) = start(&initiator_config(&device, &hub, 2, Purpose::Session), 1);
    assert_eq!(
        r.receive(&mut msg1.as_slice(), 1).unwrap_err(),
        ChannelError::HandshakeOnOpenChannel
    );
    // And a finished handshake object refuses to run again.
    let mut gate = MemGate::with_device(&device, DEVICE);
    let (_, msg1) = start(&initiator_config(&device, &hub, 3, Purpose::Session), 1);
    let mut resp = responder(&hub, 2);
    resp.receive(&mut msg1.as_slice(), 1, &mut gate)
        .unwrap()
        .unwrap();
    assert_eq!(
        resp.receive(&mut msg1.as_slice(), 1, &mut gate)
            .unwrap_err(),
        HandshakeError::Finished
    );
}

#[test]
fn a_zero_length_prefix_is_refused() {
    let (_, mut r) = open_pair();
    assert_eq!(
        r.receive(&mut &[0u8, 0][..], 1).unwrap_err(),
        ChannelError::Frame(FrameError::EmptyFrame)
    );
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let _ = hub;
    assert_eq!(
        responder(&key(2), 1)
            .receive(&mut &[0u8, 0][..], 1, &mut gate)
            .unwrap_err(),
        HandshakeError::Frame(FrameError::EmptyFrame)
    );
}

#[test]
fn a_length_prefix_below_the_tag_size_is_refused() {
    let (_, mut r) = open_pair();
    let mut frame = vec![0u8, 16];
    frame.extend_from_slice(&[0; 16]);
    assert_eq!(
        r.receive(&mut frame.as_slice(), 1).unwrap_err(),
        ChannelError::FrameTooShort { len: 16 }
    );
}

#[test]
fn a_length_prefix_above_the_limit_is_refused_before_allocating() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    // Handshake frames are small: message 1 with the largest admission at most.
    let e = responder(&hub, 1)
        .receive(&mut &[0x20u8, 0x00][..], 1, &mut gate)
        .unwrap_err();
    assert_eq!(
        e,
        HandshakeError::Frame(FrameError::Oversize {
            len: 8192,
            max: outpost_protocol::handshake::HANDSHAKE_MAX_FRAME
        })
    );
    assert_eq!(outpost_protocol::handshake::HANDSHAKE_MAX_FRAME, 189 + 4096);
    // A channel with a smaller frame limit refuses larger frames from the prefix alone.
    let limits = Limits {
        max_frame_len: 1024,
        ..Limits::default()
    };
    let cfg = initiator_config(&device, &hub, 1, Purpose::Session);
    let mut i = Initiator::start(&cfg, Ephemeral::from_seed([1; 32]), limits, 0).unwrap();
    let msg1 = i.take_outgoing();
    let mut r = responder(&hub, 2);
    r.receive(&mut msg1.as_slice(), 1, &mut gate).unwrap();
    let reply = r.take_outgoing();
    let mut ch = i.receive(&mut reply.as_slice(), 2).unwrap().unwrap();
    assert_eq!(
        ch.receive(&mut &[0xffu8, 0xff][..], 3).unwrap_err(),
        ChannelError::Frame(FrameError::Oversize {
            len: 65_535,
            max: 1024
        })
    );
}

#[test]
fn trailing_bytes_in_handshake_messages_are_refused() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let (mut i, msg1) = start(&initiator_config(&device, &hub, 1, Purpose::Session), 1);
    let mut longer = msg1.clone();
    longer.push(0);
    let len = (longer.len() - 2) as u16;
    longer[..2].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        responder(&hub, 2)
            .receive(&mut longer.as_slice(), 1, &mut gate)
            .unwrap_err(),
        HandshakeError::TrailingBytes {
            message: 1,
            count: 1
        }
    );
    let mut r = responder(&hub, 2);
    r.receive(&mut msg1.as_slice(), 1, &mut gate).unwrap();
    let mut reply = r.take_outgoing();
    reply.extend_from_slice(&[9, 9]);
    let len = (reply.len() - 2) as u16;
    reply[..2].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        i.receive(&mut reply.as_slice(), 2).unwrap_err(),
        HandshakeError::TrailingBytes {
            message: 2,
            count: 2
        }
    );
}

#[test]
fn a_truncated_first_message_is_refused() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let (_, msg1) = start(&initiator_config(&device, &hub, 1, Purpose::Session), 1);
    let mut short = msg1[..msg1.len() - 1].to_vec();
    let len = (short.len() - 2) as u16;
    short[..2].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        responder(&hub, 2)
            .receive(&mut short.as_slice(), 1, &mut gate)
            .unwrap_err(),
        HandshakeError::Truncated {
            message: 1,
            expected: 189,
            got: 188
        }
    );
}

#[test]
fn the_handshake_has_a_deadline() {
    let (device, hub) = (key(1), key(2));
    let mut gate = MemGate::with_device(&device, DEVICE);
    let (_, msg1) = start(&initiator_config(&device, &hub, 1, Purpose::Session), 1);
    let mut r = responder(&hub, 2);
    assert_eq!(r.deadline_ms(), 10_000);
    // A peer dribbling bytes: the first ones in time, the rest too late.
    assert!(r
        .receive(&mut &msg1[..10], 5_000, &mut gate)
        .unwrap()
        .is_none());
    assert!(r.check_deadline(10_000).is_ok());
    assert_eq!(
        r.receive(&mut &msg1[10..], 10_001, &mut gate).unwrap_err(),
        HandshakeError::TimedOut {
            deadline_ms: 10_000
        }
    );
}

#[test]
fn a_silent_peer_runs_into_the_idle_deadline() {
    let (mut i, mut r) = open_pair();
    let deadline = r.deadline_ms();
    i.send(b"ping").unwrap();
    let wire = i.take_outgoing();
    assert!(r.check_deadline(deadline).is_ok());
    assert_eq!(
        r.receive(&mut wire.as_slice(), deadline + 1).unwrap_err(),
        ChannelError::IdleTimeout {
            deadline_ms: deadline
        }
    );
}

#[test]
fn bytes_in_flight_are_bounded() {
    let (mut i, _) = open_pair();
    let chunk = vec![7u8; 1 << 20];
    // Four 1 MiB messages (plus frame overhead) pass the 4 MiB mark; the fifth waits.
    for _ in 0..4 {
        i.send(&chunk).unwrap();
    }
    let e = i.send(&chunk).unwrap_err();
    assert!(
        matches!(e, ChannelError::Backpressure { max, .. } if max == 4 << 20),
        "{e:?}"
    );
    i.take_outgoing();
    i.send(&chunk).unwrap();
}

#[test]
fn a_stream_ending_inside_a_frame_or_message_is_reported() {
    let (mut i, mut r) = open_pair();
    i.send(&vec![1u8; 100_000]).unwrap();
    let wire = i.take_outgoing();
    let first_frame = 2 + u16::from_be_bytes([wire[0], wire[1]]) as usize;
    assert!(r.receive(&mut &wire[..first_frame], 1).unwrap().is_none());
    assert_eq!(r.finish().unwrap_err(), ChannelError::EndedInMessage);
    let (mut i, mut r) = open_pair();
    i.send(b"x").unwrap();
    let wire = i.take_outgoing();
    assert!(r.receive(&mut &wire[..5], 1).unwrap().is_none());
    assert!(matches!(
        r.finish().unwrap_err(),
        ChannelError::Frame(FrameError::Truncated { .. })
    ));
}

#[test]
fn the_busy_notice_is_busy_for_the_initiator_in_both_modes() {
    use outpost_protocol::handshake::BUSY_NOTICE;
    // The documented bytes (docs/wire-format.md, "Busy notice").
    assert_eq!(
        BUSY_NOTICE,
        [0x00, 0x06, 0x4f, 0x50, 0x42, 0x55, 0x53, 0x59]
    );
    let (device, hub) = (key(1), key(2));
    for purpose in [Purpose::Session, Purpose::Enroll { token: TOKEN }] {
        let (mut i, _msg1) = start(&initiator_config(&device, &hub, 1, purpose), 1);
        // Delivered a byte at a time, as a slow link would.
        let mut got = Ok(None);
        for b in BUSY_NOTICE {
            got = i.receive(&mut &[b][..], 2);
            if !matches!(got, Ok(None)) {
                break;
            }
        }
        assert_eq!(got.unwrap_err(), HandshakeError::Busy);
    }
    // Any other 6-byte frame is still a truncated message 2.
    let (mut i, _) = start(&initiator_config(&device, &hub, 1, Purpose::Session), 1);
    let e = i
        .receive(
            &mut &[0x00, 0x06, b'O', b'P', b'B', b'U', b'S', b'X'][..],
            2,
        )
        .unwrap_err();
    assert!(
        matches!(e, HandshakeError::Truncated { message: 2, .. }),
        "{e:?}"
    );
}

/// A two-part code's admission for [`HUB`], minted and signed by `minter` (site 0x77..).
fn admission(minter: &Keypair, hub: &Keypair) -> outpost_protocol::enroll_code::Admission {
    let mut a = outpost_protocol::enroll_code::Admission {
        hub_site: HUB,
        hub_key: *hub.public(),
        addresses: vec!["10.0.0.2:7420".into()],
        token: TOKEN,
        expires_at: 1_900_000_000,
        cloud: None,
        scopes: outpost_protocol::scope::Scopes::parse(["5f0e3a9c1b2d4e6f708192a3b4c5d6e7"])
            .unwrap(),
        enroll: false,
        minter: SiteId([0x77; 16]),
        signature: [0; 64],
    };
    a.sign(minter).unwrap();
    a
}

fn admit_purpose(a: &outpost_protocol::enroll_code::Admission) -> Purpose {
    Purpose::Admit {
        admission: a.encode(),
        token: a.token,
    }
}

#[test]
fn a_hub_admits_a_device_from_an_admission_it_never_issued() {
    let (device, hub, minter) = (key(1), key(2), key(3));
    let mut gate = MemGate {
        site: Some(HUB),
        ..MemGate::default()
    };
    gate.minters.insert(SiteId([0x77; 16]), *minter.public());
    let a = admission(&minter, &hub);
    let cfg = initiator_config(&device, &hub, 1, admit_purpose(&a));
    let (mut i, mut r) = handshake(&cfg, &hub, &mut gate);
    let (ic, rc) = (i.as_mut().unwrap(), r.as_mut().unwrap());
    assert_eq!(exchange(ic, rc, b"hello"), b"hello");
    assert_eq!(
        gate.admitted,
        vec![(TokenId::of(&TOKEN), *device.public(), DEVICE)]
    );
    // The token is used now: the same admission again is refused.
    let cfg = initiator_config(&key(4), &hub, 1, admit_purpose(&a));
    let (i, r) = handshake(&cfg, &hub, &mut gate);
    assert_eq!(r.unwrap_err(), HandshakeError::Refused(Refusal::TokenUsed));
    assert_eq!(i.unwrap_err(), HandshakeError::EnrollmentRefused);
}

#[test]
fn an_admission_of_an_unknown_minter_a_forged_signature_or_another_hub_is_refused() {
    let (device, hub, minter) = (key(1), key(2), key(3));
    let gate = || {
        let mut g = MemGate {
            site: Some(HUB),
            ..MemGate::default()
        };
        g.minters.insert(SiteId([0x77; 16]), *minter.public());
        g
    };
    // Signed by another key than the minter's.
    let forged = admission(&key(9), &hub);
    // Names another hub.
    let mut elsewhere = admission(&minter, &hub);
    elsewhere.hub_site = SiteId([0xbb; 16]);
    elsewhere.sign(&minter).unwrap();
    // An unknown minter.
    let mut stranger = admission(&minter, &hub);
    stranger.minter = SiteId([0x66; 16]);
    stranger.sign(&minter).unwrap();
    // Not an admission at all.
    let garbage = Purpose::Admit {
        admission: vec![0x42; 40],
        token: TOKEN,
    };
    for purpose in [
        admit_purpose(&forged),
        admit_purpose(&elsewhere),
        admit_purpose(&stranger),
        garbage,
    ] {
        let mut g = gate();
        let cfg = initiator_config(&device, &hub, 1, purpose);
        let (i, r) = handshake(&cfg, &hub, &mut g);
        assert_eq!(
            r.unwrap_err(),
            HandshakeError::Refused(Refusal::UnknownToken)
        );
        assert_eq!(i.unwrap_err(), HandshakeError::EnrollmentRefused);
        assert!(g.admitted.is_empty());
    }
}

#[test]
fn an_admission_longer_than_the_bound_is_not_sent() {
    let (device, hub) = (key(1), key(2));
    let purpose = Purpose::Admit {
        admission: vec![1; outpost_protocol::enroll_code::MAX_ADMISSION_BYTES + 1],
        token: TOKEN,
    };
    let cfg = initiator_config(&device, &hub, 1, purpose);
    assert_eq!(
        Initiator::start(&cfg, Ephemeral::from_seed([1; 32]), Limits::default(), 0).unwrap_err(),
        HandshakeError::BadPayload
    );
}
