//! The uplink's configuration, its pinned key, and a cloud that cuts the stream mid-frame.

use super::*;
use outpost_protocol::channel::Limits as ChannelLimits;
use outpost_protocol::handshake::{Keypair, Responder, ResponderConfig};
use outpost_testkit::gate::MemGate;
use std::io::{Read, Write};
use std::net::TcpListener;

#[test]
fn a_config_with_max_below_min_is_refused() {
    assert!(Config::new(Some(Duration::from_secs(2)), Some(Duration::from_secs(1))).is_err());
    assert!(Config::new(Some(Duration::ZERO), None).is_err());
}

#[test]
fn the_pinned_key_round_trips_through_hex() {
    let k = outpost_protocol::handshake::Keypair::generate().unwrap();
    let text = hex(k.public().as_bytes());
    assert_eq!(key_of(&text).unwrap(), *k.public());
    assert!(key_of("zz").is_err());
}

/// A hub whose uplink is pinned to a cloud on a loopback port that answers the handshake,
/// then sends half of an encrypted frame and closes.
#[test]
fn a_cloud_cut_inside_a_frame_is_reported_as_a_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::new(
        crate::datadir::DataDir::open(tmp.path()).unwrap(),
        ChannelLimits::default(),
    );
    let cloud = Keypair::from_secret(&[9; 32]).unwrap();
    let cloud_site = SiteId([0xcc; 16]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = CloudPeer {
        key: hex(cloud.public().as_bytes()),
        site: cloud_site.to_string(),
        addresses: vec![listener.local_addr().unwrap().to_string()],
    };
    let allowlist = hub.dir().allowlist().unwrap();
    allowlist
        .set_setting(UPLINK_CLOUD, &serde_json::to_string(&peer).unwrap())
        .unwrap();
    let cloud_end = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut responder = Responder::new(
            ResponderConfig {
                identity: cloud,
                site: cloud_site,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            },
            Ephemeral::from_seed([4; 32]),
            ChannelLimits::default(),
            0,
        );
        let mut buf = [0u8; 4096];
        let mut gate = MemGate::open();
        let mut channel = loop {
            let n = s.read(&mut buf).unwrap();
            let r = responder.receive(&mut &buf[..n], 1, &mut gate).unwrap();
            s.write_all(&responder.take_outgoing()).unwrap();
            if let Some(channel) = r {
                break channel;
            }
        };
        channel.send(&Message::Ping { nonce: 1 }.encode()).unwrap();
        let frame = channel.take_outgoing();
        s.write_all(&frame[..frame.len() / 2]).unwrap();
        // End the stream with a FIN, then drain what the hub sent (its hello) until it closes:
        // closing with unread input would reset the connection instead, and the hub would see a
        // reset, not a cut.
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut uplink = Uplink {
        mailbox: hub.dir().mailbox().unwrap(),
        hub,
        dial: Box::new(StdDial),
        config: Config::new(None, None).unwrap(),
        allowlist,
        state: UplinkState::default(),
        seen: 0,
        id_seen: 0,
        check_exports: false,
    };
    let e = uplink.round().unwrap_err();
    cloud_end.join().unwrap();
    assert!(
        matches!(e, UplinkError::Link(LinkError::Cut { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("the connection was cut"), "{e}");
    assert!(e.to_string().contains("the cloud"), "{e}");
}
