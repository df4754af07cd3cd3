//! The hub's embassy-net stack over a TAP device (`--net tap:IFACE`): the kernel side of the
//! TAP, in the same namespace, talks to the hub with std sockets.

mod net_support;

use net_support::{can_run, echo_services, in_netns, start_hub_in};
use outpost_hub::net::{IpConfig, Link};
use outpost_testkit::netns::Netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

#[test]
fn tap_link_serves_the_relay_to_the_kernel_side() {
    if !can_run("tap_link_serves_the_relay_to_the_kernel_side") {
        return;
    }
    let pid = std::process::id();
    let ns = Netns::new("tap");
    let tap = format!("ot{}", pid % 1_000_000);
    let hub_ip = Ipv4Addr::new(10, 213, 45, 2);
    let address = start_hub_in(
        &ns.0,
        Link::Tap(tap.clone()),
        IpConfig::Static {
            address: hub_ip,
            prefix: 24,
            gateway: None,
        },
        echo_services("abcdefabcdefabcdefabcdefabcdefab"),
    );
    assert_eq!(address.ip, hub_ip);
    ns.host_side(&tap, "10.213.45.1/24");
    let echoed = in_netns(&ns.0, move || {
        let addr = SocketAddr::from((hub_ip, 7420));
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect over TAP");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut writer = stream.try_clone().unwrap();
        let to_send = sent.clone();
        let sender = std::thread::spawn(move || {
            writer.write_all(&to_send).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut received = Vec::new();
        stream.read_to_end(&mut received).expect("read the echo");
        sender.join().unwrap();
        received == sent
    });
    assert!(echoed, "200 kB echoed over the TAP link differ");
}
