//! Real network namespaces for the hub's embassy-net stack: the hub runs on a thread inside
//! one namespace, std sockets talk to it from another, over a veth pair. Needs root (skips
//! outside CI, fails under CI=true) and `ip`, `ethtool` (and `dnsmasq` for DHCP).

#![allow(dead_code)] // each test file uses part of this

use outpost_hub::net::{self, Address, HubServices, IpConfig, Link, NetConfig};
pub use outpost_testkit::netns::{in_netns, sh, spawn_in};
use outpost_testkit::require::{is_root, require};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Whether the test can run: true as root; otherwise prints why it is skipped, or panics under
/// CI=true (where a skip would hide a broken setup).
pub fn can_run(test: &str) -> bool {
    require(
        test,
        "needs root (network namespaces, AF_PACKET)",
        is_root(),
    )
}

/// Two namespaces joined by a veth pair: the hub's side (no kernel address: smoltcp owns it)
/// and the peer's (a kernel address, std sockets). Deleted on drop.
pub struct Veth {
    pub hub_ns: String,
    pub peer_ns: String,
    pub hub_if: String,
    pub peer_if: String,
    pub peer_ip: Ipv4Addr,
    dnsmasq: Option<Child>,
}

impl Veth {
    /// `subnet`: the third octet of 10.213.SUBNET.0/24; the peer is .1.
    pub fn new(tag: &str, subnet: u8) -> Veth {
        let pid = std::process::id();
        let veth = Veth {
            hub_ns: format!("ophub-{pid}-{tag}"),
            peer_ns: format!("oppeer-{pid}-{tag}"),
            hub_if: format!("oh{}{tag}", pid % 1_000_000),
            peer_if: format!("op{}{tag}", pid % 1_000_000),
            peer_ip: Ipv4Addr::new(10, 213, subnet, 1),
            dnsmasq: None,
        };
        assert!(
            veth.hub_if.len() < 16,
            "interface name too long: {}",
            veth.hub_if
        );
        sh(&["ip", "netns", "add", &veth.hub_ns]);
        sh(&["ip", "netns", "add", &veth.peer_ns]);
        sh(&[
            "ip",
            "link",
            "add",
            &veth.hub_if,
            "type",
            "veth",
            "peer",
            "name",
            &veth.peer_if,
        ]);
        sh(&["ip", "link", "set", &veth.hub_if, "netns", &veth.hub_ns]);
        sh(&["ip", "link", "set", &veth.peer_if, "netns", &veth.peer_ns]);
        sh(&["ip", "-n", &veth.hub_ns, "link", "set", &veth.hub_if, "up"]);
        let cidr = format!("{}/24", veth.peer_ip);
        sh(&[
            "ip",
            "-n",
            &veth.peer_ns,
            "addr",
            "add",
            &cidr,
            "dev",
            &veth.peer_if,
        ]);
        sh(&[
            "ip",
            "-n",
            &veth.peer_ns,
            "link",
            "set",
            &veth.peer_if,
            "up",
        ]);
        sh(&["ip", "-n", &veth.peer_ns, "link", "set", "lo", "up"]);
        // Segmentation offload would hand the hub 64 KiB "frames"; tx checksum offload stays
        // on so the driver's completion of unfinished checksums is exercised.
        sh(&[
            "ip",
            "netns",
            "exec",
            &veth.peer_ns,
            "ethtool",
            "-K",
            &veth.peer_if,
            "tso",
            "off",
            "gso",
            "off",
        ]);
        veth
    }

    /// Serves DHCP on the peer's side (leases 10.213.SUBNET.50-60).
    pub fn start_dhcp(&mut self) {
        let octets = self.peer_ip.octets();
        let range = format!(
            "{0}.{1}.{2}.50,{0}.{1}.{2}.60,255.255.255.0,1h",
            octets[0], octets[1], octets[2]
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.peer_ns,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
            ])
            .arg(format!("--interface={}", self.peer_if))
            .args(["--bind-interfaces", "--port=0", "--no-hosts", "--no-resolv"])
            .arg(format!("--dhcp-range={range}"))
            .arg(format!(
                "--dhcp-leasefile=/tmp/outpost-net-test-{}.leases",
                self.peer_ns
            ))
            .arg("--pid-file")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq)");
        self.dnsmasq = Some(child);
    }

    /// Runs `f` in the peer's namespace and returns its result.
    pub fn peer<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.peer_ns, f)
    }

    /// Starts the hub's stack on the hub side (`packet:` link) with `services`, and returns the
    /// address it got (within 15 s).
    pub fn start_hub<H, F>(&self, ip: IpConfig, services: HubServices<H, F>) -> Address
    where
        H: net::bridge::BlockingHandler,
        F: Fn() -> String + Send + 'static,
    {
        start_hub_in(
            &self.hub_ns,
            Link::Packet(self.hub_if.clone()),
            ip,
            services,
        )
    }
}

/// Starts the hub in namespace `ns` on `link`; returns the address it got (within 15 s).
pub fn start_hub_in<H, F>(
    ns: &str,
    link: Link,
    ip: IpConfig,
    services: HubServices<H, F>,
) -> Address
where
    H: net::bridge::BlockingHandler,
    F: Fn() -> String + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let config = NetConfig { link, ip };
    spawn_in(ns, move || {
        let error = net::run_hub(config, services, move |a| {
            let _ = tx.send(a);
        });
        panic!("the hub's stack did not start: {}", error.unwrap_err());
    });
    rx.recv_timeout(Duration::from_secs(15))
        .expect("the hub got no address within 15 s")
}

impl Drop for Veth {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.hub_ns, &self.peer_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// An echo relay: what the peer sends comes back, until it closes.
pub fn echo(conn: &mut net::bridge::BridgedConn) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

/// The type of [`echo`].
pub type EchoFn = fn(&mut net::bridge::BridgedConn) -> anyhow::Result<()>;

/// The hub's services with an echo relay on 7420, no status page.
pub fn echo_services(site: &str) -> HubServices<EchoFn, fn() -> String> {
    HubServices {
        site: site.to_owned(),
        relay_port: 7420,
        relay: echo,
        status_port: None,
        render: String::new,
    }
}
