//! mDNS discovery of a hub running embassy-net over AF_PACKET, queried with std sockets from
//! the other namespace: the device-side querier, and a multicast query from port 5353.

mod net_support;

use net_support::{can_run, echo_services, sh, Veth};
use outpost_hub::net::discovery::{self, FoundHub, MDNS_GROUP, MDNS_PORT};
use outpost_hub::net::IpConfig;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

const SITE: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn a_device_finds_the_hub_by_mdns_with_its_site_address_and_port() {
    if !can_run("a_device_finds_the_hub_by_mdns_with_its_site_address_and_port") {
        return;
    }
    let veth = Veth::new("m", 43);
    let hub_ip = Ipv4Addr::new(10, 213, 43, 2);
    veth.start_hub(
        IpConfig::Static {
            address: hub_ip,
            prefix: 24,
            gateway: None,
        },
        echo_services(SITE),
    );
    let peer_ip = veth.peer_ip;
    // The querier (legacy unicast: from an ephemeral port, answered to it).
    let found = veth.peer(move || discovery::find_hubs(peer_ip, Duration::from_secs(2)));
    assert_eq!(
        found.expect("query"),
        vec![FoundHub {
            site: SITE.into(),
            addr: SocketAddrV4::new(hub_ip, 7420),
        }]
    );

    // A full mDNS querier: from port 5353, answered to the multicast group.
    sh(&[
        "ip",
        "-n",
        &veth.peer_ns,
        "route",
        "add",
        "224.0.0.0/4",
        "dev",
        &veth.peer_if,
    ]);
    let answer = veth.peer(move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).unwrap();
        socket.join_multicast_v4(&MDNS_GROUP, &peer_ip).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..3 {
            socket
                .send_to(&discovery::encode_query(0), (MDNS_GROUP, MDNS_PORT))
                .unwrap();
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let message = discovery::parse(&buf[..n]).unwrap();
                if message.is_response() {
                    return Some((from, message));
                }
            }
        }
        None
    });
    let (from, message) = answer.expect("a multicast answer within 3 s");
    assert_eq!(from.ip(), hub_ip);
    assert_eq!(message.id, 0);
    assert_eq!(
        discovery::hubs_in(&message),
        vec![FoundHub {
            site: SITE.into(),
            addr: SocketAddrV4::new(hub_ip, 7420),
        }]
    );
}
