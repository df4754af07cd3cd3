//! The hub's embassy-net stack over a TAP device (`--net tap:IFACE`): the kernel side of the
//! TAP, in the same namespace, talks to the hub with std sockets.

mod net_support;

use net_support::{can_run, echo_services, sh, start_hub_in, Veth};
use outpost_hub::net::{IpConfig, Link};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn tap_link_serves_the_relay_to_the_kernel_side() {
    if !can_run("tap_link_serves_the_relay_to_the_kernel_side") {
        return;
    }
    let pid = std::process::id();
    let ns = Namespace(format!("optap-{pid}"));
    sh(&["ip", "netns", "add", &ns.0]);
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
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "10.213.45.1/24",
        "dev",
        &tap,
    ]);
    sh(&["ip", "-n", &ns.0, "link", "set", &tap, "up"]);
    let echoed = Veth::in_ns(&ns.0, move || {
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
    })
    .join()
    .unwrap();
    assert!(echoed, "200 kB echoed over the TAP link differ");
}
