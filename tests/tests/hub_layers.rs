//! The same relay scenario through each network layer of the real `outpost-hub` binary, so a
//! failure points at the layer that broke:
//!
//! - `--net std:` on loopback (the kernel's sockets; no root needed);
//! - `--net tap:` in a network namespace the test creates (the hub's own embassy-net stack on a
//!   TAP device, the test on the kernel side), where the device finds the hub by mDNS with no
//!   address given (`outpost_protocol::discovery::find_hubs`).
//!
//! In each, two protocol-level devices push batches and pull each other's exactly once, and the
//! status page lists both. (`--net packet:` is exercised under QEMU, `hub_qemu.rs`.)

mod support;

use outpost_protocol::discovery::find_hubs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};
use support::*;

/// Polls the status page until it names every site.
fn page_lists(addr: SocketAddr, sites: &[String]) -> String {
    support::page_lists(
        addr,
        sites,
        Duration::from_secs(20),
        Duration::from_millis(500),
    )
}

#[test]
fn std_loopback_relays_each_batch_once_and_the_page_lists_devices() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    let (hub, addr) = loopback_hub(&data, &["--status", "127.0.0.1:0", "--no-mdns"]);
    // Logged before "serving on".
    let page_addr: SocketAddr = hub
        .log
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            l.split("status page on http://")
                .nth(1)
                .and_then(|a| a.trim_end_matches('/').parse().ok())
        })
        .expect("a 'status page on' line");
    let (mut a, mut b) = (Device::new(0xa1), Device::new(0xb1));
    let code = code_for(&data, addr);
    enroll(&code, &mut a);
    enroll(&code_for(&data, addr), &mut b);
    exchange(&HubInfo::from_code(&code), &mut a, &mut b);
    let page = page_lists(page_addr, &[a.site.to_string(), b.site.to_string()]);
    assert!(
        page.contains("Last uplink") && page.contains("never"),
        "{page}"
    );
    let status = hub_cli(&["status", "--data", d]);
    assert!(status.contains("uptime      up "), "{status}");
    assert!(status.contains(&format!("{}", a.site)), "{status}");
    assert!(status.contains("pending 0"), "{status}");
}

#[test]
fn tap_in_a_netns_is_discovered_by_mdns_and_relays_each_batch_once() {
    let test = "tap_in_a_netns_is_discovered_by_mdns_and_relays_each_batch_once";
    let Some((ns, tap)) = tap_netns(test, "tap", "ott") else {
        return;
    };
    let hub_ip = Ipv4Addr::new(10, 213, 61, 2);
    let host_ip = Ipv4Addr::new(10, 213, 61, 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    let host = format!("{host_ip}/24");
    let extra = ["--status-port", "8080"];
    let (_hub, addr) = tap_hub(&ns, &tap, &data, "10.213.61.2/24", &host, &extra);
    assert_eq!(addr, SocketAddr::from((hub_ip, 7420)));

    // Discovery: no address given; the hub's site from its enrollment code picks it out.
    let code = code_for(&data, addr);
    let site = code.hub_site.to_string();
    let found = in_netns(&ns.0, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let hubs = find_hubs(host_ip, Duration::from_millis(700)).unwrap();
            if let Some(h) = hubs.into_iter().find(|h| h.site == site) {
                return h;
            }
            assert!(Instant::now() < deadline, "no hub answered mDNS");
        }
    });
    assert_eq!(found.addr, SocketAddrV4::new(hub_ip, 7420));

    let code_b = code_for(&data, addr);
    let (a_sites, page) = in_netns(&ns.0, move || {
        let mut hub = HubInfo::from_code(&code);
        hub.addr = SocketAddr::V4(found.addr);
        let (mut a, mut b) = (Device::new(0xa2), Device::new(0xb2));
        enroll(&code, &mut a);
        enroll(&code_b, &mut b);
        exchange(&hub, &mut a, &mut b);
        let sites = vec![a.site.to_string(), b.site.to_string()];
        let page = page_lists(SocketAddr::from((hub_ip, 8080)), &sites);
        (sites, page)
    });
    assert!(page.contains("<h2>Devices</h2>"), "{page}");
    let status = hub_cli(&["status", "--data", d]);
    for s in &a_sites {
        assert!(status.contains(s.as_str()), "{status}");
    }
    assert!(status.contains("serving     10.213.61.2:7420"), "{status}");
}
