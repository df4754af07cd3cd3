//! The hub's embassy-net stack over AF_PACKET on a veth pair: a static address and a DHCP
//! lease, and a std TcpStream from the other namespace through the relay bridge.

mod net_support;

use net_support::{can_run, echo_services, spawn_in, Veth};
use outpost_hub::net::IpConfig;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SITE: &str = "00112233445566778899aabbccddeeff";

/// Sends `len` seeded bytes to `addr`, reading the echo concurrently; returns what came back.
fn echo_exchange(addr: SocketAddr, len: usize) -> (Vec<u8>, Vec<u8>, Duration) {
    let start = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the hub");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let sent: Vec<u8> = (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut writer = stream.try_clone().unwrap();
    let to_send = sent.clone();
    let sender = std::thread::spawn(move || {
        for chunk in to_send.chunks(7000) {
            writer.write_all(chunk).expect("write to the hub");
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut received = Vec::with_capacity(len);
    stream
        .read_to_end(&mut received)
        .expect("read the echo (a stall times out after 10 s)");
    sender.join().unwrap();
    (sent, received, start.elapsed())
}

#[test]
fn packet_driver_static_address_echoes_a_megabyte_through_the_relay_bridge() {
    if !can_run("packet_driver_static_address_echoes_a_megabyte_through_the_relay_bridge") {
        return;
    }
    let veth = Veth::new("s", 41);
    let address = veth.start_hub(
        IpConfig::Static {
            address: Ipv4Addr::new(10, 213, 41, 2),
            prefix: 24,
            gateway: Some(veth.peer_ip),
        },
        echo_services(SITE),
    );
    assert_eq!(address.ip, Ipv4Addr::new(10, 213, 41, 2));
    assert_eq!(address.prefix, 24);
    let hub = SocketAddr::from((address.ip, 7420));
    let (sent, received, took) = veth.peer(move || echo_exchange(hub, 1 << 20));
    assert_eq!(received.len(), sent.len(), "echoed length");
    assert!(received == sent, "echoed bytes differ");
    eprintln!("1 MiB echoed through embassy-net over AF_PACKET in {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");

    // Several connections at once, each served by its own handler thread.
    let clients: Vec<_> = (0..4)
        .map(|_| spawn_in(&veth.peer_ns, move || echo_exchange(hub, 64 * 1024)))
        .collect();
    for c in clients {
        let (sent, received, _) = c.join().unwrap();
        assert!(received == sent, "concurrent echo differs");
    }
}

#[test]
fn packet_driver_takes_its_address_from_dhcp() {
    if !can_run("packet_driver_takes_its_address_from_dhcp") {
        return;
    }
    let mut veth = Veth::new("d", 42);
    veth.start_dhcp();
    let address = veth.start_hub(IpConfig::Dhcp, echo_services(SITE));
    let octets = address.ip.octets();
    assert_eq!(
        &octets[..3],
        &[10, 213, 42],
        "lease from the peer's subnet: {address}"
    );
    assert!(
        (50..=60).contains(&octets[3]),
        "lease from the DHCP range: {address}"
    );
    assert_eq!(address.prefix, 24);
    let hub = SocketAddr::from((address.ip, 7420));
    let (sent, received, _) = veth.peer(move || echo_exchange(hub, 100_000));
    assert!(received == sent, "echo over the leased address differs");
}
