//! Enrollment and session handshakes against a relay over real TCP, with the protocol's own
//! initiator as the device: tokens are single use, admission is durable, counters refuse replays,
//! revoked devices are refused, and a device pinned to another hub's key never gets a channel.

use outpost_protocol::channel::{Channel, Limits as ChannelLimits};
use outpost_protocol::handshake::{
    Ephemeral, HandshakeError, Initiator, InitiatorConfig, Keypair, PublicKey, Purpose, Refusal,
};
use outpost_protocol::message::PeerRole;
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use outpost_relay::allowlist::{Allowlist, Role, DEFAULT_TOKEN_TTL_SECS};
use outpost_relay::identity::Identity;
use outpost_relay::listener::{serve, Conn, Limits, LiveSessions};
use outpost_relay::{serve_connection, Event, Relay, Serving, Stores, Time};
use outpost_testkit::{HubInfo, SyncError};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct TestHub {
    addr: SocketAddr,
    hub: Arc<Serving>,
    _dir: tempfile::TempDir,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A relay serving from a fresh directory, as a hub would.
fn start_hub() -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = Identity::load_or_create(dir.path()).unwrap();
    let stores = Stores::files(
        identity,
        dir.path().join("mailbox.db"),
        dir.path().join("allowlist.db"),
    );
    let hub = Serving::new(stores, ChannelLimits::default(), PeerRole::Hub);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = hub.clone();
    let handler = move |conn: &mut Conn| serve_connection(&h, conn);
    std::thread::spawn(move || {
        serve(
            listener,
            Limits::default(),
            Arc::new(LiveSessions::default()),
            Arc::new(handler),
        )
    });
    TestHub {
        addr,
        hub,
        _dir: dir,
    }
}

impl TestHub {
    fn allowlist(&self) -> Allowlist {
        self.hub.stores().allowlist().unwrap()
    }

    fn token(&self) -> [u8; 32] {
        self.allowlist()
            .issue_token(unix_now(), DEFAULT_TOKEN_TTL_SECS, Role::Device)
            .unwrap()
            .secret
    }

    fn key(&self) -> PublicKey {
        *self.hub.identity().public()
    }

    fn site(&self) -> SiteId {
        self.hub.identity().site
    }
}

struct Device {
    keypair: Keypair,
    site: SiteId,
}

fn device(n: u8) -> Device {
    Device {
        keypair: Keypair::generate().unwrap(),
        site: SiteId([n; 16]),
    }
}

/// Runs the initiator over TCP; returns the channel and the stream, or the handshake error
/// (`Err(None)` when the hub closed without a reply).
fn handshake(
    addr: SocketAddr,
    dev: &Device,
    counter: u64,
    hub_key: PublicKey,
    hub_site: SiteId,
    purpose: Purpose,
) -> Result<(Channel, TcpStream), Option<HandshakeError>> {
    let hub = HubInfo {
        addr,
        key: hub_key,
        site: hub_site,
    };
    outpost_testkit::handshake(&hub, &dev.keypair, dev.site, counter, purpose).map_err(
        |e| match e {
            SyncError::Handshake(e) => Some(e),
            _ => None,
        },
    )
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_token_enrolls_one_device_and_then_its_sessions_are_admitted() {
    let hub = start_hub();
    let token = hub.token();
    let a = device(1);
    let enroll = Purpose::Enroll { token };
    let (_ch, _s) = handshake(hub.addr, &a, 1, hub.key(), hub.site(), enroll.clone()).unwrap();
    let allow = hub.allowlist();
    assert!(wait_for(|| allow
        .authorize_site(a.keypair.public().as_bytes(), a.site)
        .is_ok()));

    // The same token again, from another device: refused, and nobody else admitted.
    let b = device(2);
    let err = handshake(hub.addr, &b, 1, hub.key(), hub.site(), enroll).unwrap_err();
    assert_eq!(err, Some(HandshakeError::EnrollmentRefused));
    assert_eq!(allow.devices().unwrap().len(), 1);

    // A session handshake of the enrolled device is admitted; its counter cannot be replayed.
    handshake(hub.addr, &a, 2, hub.key(), hub.site(), Purpose::Session).unwrap();
    let err = handshake(hub.addr, &a, 2, hub.key(), hub.site(), Purpose::Session).unwrap_err();
    assert_eq!(
        err,
        Some(HandshakeError::Refused(Refusal::ReplayedHandshake))
    );
    handshake(hub.addr, &a, 3, hub.key(), hub.site(), Purpose::Session).unwrap();
}

#[test]
fn unknown_copied_and_revoked_devices_are_told_why() {
    let hub = start_hub();
    let a = device(1);
    let err = handshake(hub.addr, &a, 1, hub.key(), hub.site(), Purpose::Session).unwrap_err();
    assert_eq!(err, Some(HandshakeError::Refused(Refusal::UnknownKey)));

    let token = hub.token();
    handshake(
        hub.addr,
        &a,
        2,
        hub.key(),
        hub.site(),
        Purpose::Enroll { token },
    )
    .unwrap();
    let allow = hub.allowlist();
    assert!(wait_for(|| allow.devices().unwrap().len() == 1));

    // A copy of A's database (same site id) under another key.
    let copy = Device {
        keypair: Keypair::generate().unwrap(),
        site: a.site,
    };
    let err = handshake(hub.addr, &copy, 1, hub.key(), hub.site(), Purpose::Session).unwrap_err();
    assert_eq!(err, Some(HandshakeError::Refused(Refusal::SiteReused)));

    hub.allowlist().revoke("01010101", unix_now()).unwrap();
    let err = handshake(hub.addr, &a, 3, hub.key(), hub.site(), Purpose::Session).unwrap_err();
    assert_eq!(err, Some(HandshakeError::Refused(Refusal::Revoked)));
}

#[test]
fn a_device_pinned_to_another_hub_never_gets_a_channel_and_enrolls_nothing() {
    let real = start_hub();
    let rogue = start_hub();
    let token = real.token();
    let a = device(1);
    // The device dials the rogue (same role, other key) with the real hub's pinned key.
    let err = handshake(
        rogue.addr,
        &a,
        1,
        real.key(),
        real.site(),
        Purpose::Enroll { token },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            None | Some(HandshakeError::KeyMismatch) | Some(HandshakeError::EnrollmentRefused)
        ),
        "{err:?}"
    );
    assert!(rogue.allowlist().devices().unwrap().is_empty());
    // The token was not consumed: the real hub still accepts it.
    handshake(
        real.addr,
        &a,
        2,
        real.key(),
        real.site(),
        Purpose::Enroll { token },
    )
    .unwrap();
}

#[test]
fn an_expired_token_is_refused() {
    let hub = start_hub();
    let token = hub
        .allowlist()
        .issue_token(unix_now() - 1000, 60, Role::Device)
        .unwrap()
        .secret;
    let err = handshake(
        hub.addr,
        &device(1),
        1,
        hub.key(),
        hub.site(),
        Purpose::Enroll { token },
    )
    .unwrap_err();
    assert_eq!(err, Some(HandshakeError::EnrollmentRefused));
    assert!(hub.allowlist().devices().unwrap().is_empty());
}

/// Runs an enrollment handshake against `relay` in memory (no socket), every call at `at`:
/// whether the relay admitted the device.
fn enroll_in_memory(
    relay: &mut Relay,
    dev: &Device,
    hub: &TestHub,
    token: [u8; 32],
    at: Time,
) -> bool {
    let config = InitiatorConfig {
        identity: dev.keypair.clone(),
        site: dev.site,
        counter: 1,
        responder_key: hub.key(),
        responder_site: hub.site(),
        purpose: Purpose::Enroll { token },
        version: PROTOCOL_VERSION,
    };
    let mut init = Initiator::start(
        &config,
        Ephemeral::from_seed([7; 32]),
        ChannelLimits::default(),
        at.monotonic_ms,
    )
    .unwrap();
    let mut to_relay = init.take_outgoing();
    for _ in 0..4 {
        match relay.receive(&to_relay, at) {
            Ok(Event::Authenticated(_)) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        let back = relay.output().unwrap();
        let mut input = &back[..];
        match init.receive(&mut input, at.monotonic_ms) {
            Ok(Some(mut channel)) => to_relay = channel.take_outgoing(),
            Ok(None) => to_relay = init.take_outgoing(),
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn token_expiry_is_judged_at_the_time_the_driver_hands_in() {
    let hub = start_hub();
    // A token that expired long ago by the wall clock, but is fresh at the relay's time.
    let issued = 1_000_000;
    let token = hub
        .allowlist()
        .issue_token(issued, 60, Role::Device)
        .unwrap()
        .secret;
    let at = |unix_secs: u64| Time {
        monotonic_ms: 5,
        unix_ms: unix_secs * 1000,
    };
    let dev = device(1);
    let mut late = Relay::new(
        hub.hub.clone(),
        Ephemeral::from_seed([1; 32]),
        at(issued + 60),
    )
    .unwrap();
    assert!(!enroll_in_memory(
        &mut late,
        &dev,
        &hub,
        token,
        at(issued + 60)
    ));
    assert!(hub.allowlist().devices().unwrap().is_empty());
    let mut timely = Relay::new(
        hub.hub.clone(),
        Ephemeral::from_seed([2; 32]),
        at(issued + 59),
    )
    .unwrap();
    assert!(enroll_in_memory(
        &mut timely,
        &dev,
        &hub,
        token,
        at(issued + 59)
    ));
    let devices = hub.allowlist().devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].enrolled_at, issued + 59);
}
