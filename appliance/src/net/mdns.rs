//! The hub's mDNS responder: answers DNS-SD questions for `_outpost._tcp.local` on UDP 5353
//! (multicast group 224.0.0.251) with the records of [`super::discovery`], so devices find the
//! hub without typing an address.
//!
//! Replies: a query from port 5353 asking for a multicast reply gets one to the group; a query
//! with the "QU" bit, or from another port (a "legacy" one-shot querier such as
//! [`super::discovery::find_hubs`]), gets a unicast reply to its source.
//! The A record always carries the stack's current address (it can change at a DHCP renewal).
//!
//! [`spawn_std_responder`] is the same responder over the kernel's sockets, for `--net std:`
//! (so devices, and tests on loopback or in a network namespace, discover a std hub too).

use super::discovery::{answer, parse, HubRecord, MDNS_GROUP, MDNS_PORT};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::Timer;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Answers mDNS queries for the hub `site` whose relay listens on `port`, forever.
pub async fn respond(stack: Stack<'_>, site: &str, port: u16) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 8];
    let mut tx_meta = [PacketMetadata::EMPTY; 8];
    let mut rx_buffer = vec![0; 4096];
    let mut tx_buffer = vec![0; 4096];
    let mut socket = UdpSocket::new(
        stack,
        &mut rx_meta,
        &mut rx_buffer,
        &mut tx_meta,
        &mut tx_buffer,
    );
    loop {
        match stack.join_multicast_group(MDNS_GROUP) {
            Ok(()) => break,
            Err(e) => {
                log::warn!("mdns: cannot join {MDNS_GROUP}: {e:?}; retrying");
                Timer::after_secs(5).await;
            }
        }
    }
    if let Err(e) = socket.bind(MDNS_PORT) {
        log::error!("mdns: cannot bind UDP {MDNS_PORT}: {e:?}; discovery is off");
        core::future::pending::<()>().await;
    }
    log::info!("mdns: answering for _outpost._tcp.local (site {site}, port {port})");
    let mut packet = [0u8; 1500];
    loop {
        let (n, meta) = match socket.recv_from(&mut packet).await {
            Ok(r) => r,
            Err(e) => {
                log::debug!("mdns: receive failed: {e:?}");
                continue;
            }
        };
        let Ok(query) = parse(&packet[..n]) else {
            continue;
        };
        let Some(v4) = stack.config_v4() else {
            continue;
        };
        let hub = HubRecord {
            site: site.to_owned(),
            port,
            ip: v4.address.address(),
        };
        let legacy = meta.endpoint.port != MDNS_PORT;
        let Some(reply) = answer(&query, &hub, legacy) else {
            continue;
        };
        let unicast = legacy || query.questions.iter().any(|q| q.unicast_response);
        let to = if unicast {
            meta.endpoint
        } else {
            IpEndpoint::new(MDNS_GROUP.into(), MDNS_PORT)
        };
        log::debug!("mdns: answering {} to {to}", meta.endpoint);
        if let Err(e) = socket.send_to(&reply, to).await {
            log::debug!("mdns: reply to {to} failed: {e:?}");
        }
    }
}

/// A UDP socket on 0.0.0.0:5353 that shares the port with other mDNS responders of the machine
/// (SO_REUSEADDR + SO_REUSEPORT, as avahi does).
fn shared_mdns_socket() -> std::io::Result<std::net::UdpSocket> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call; the fd is owned by the UdpSocket built below (or closed).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; from here the UdpSocket closes it on every path.
    let socket = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: fd is a valid socket; the option value is a c_int of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: MDNS_PORT.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: addr is a valid sockaddr_in and the length is its size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

/// The address to announce to a querier at `peer`: `bound` when the relay listens on one
/// address, else the local address the kernel would use to reach the querier.
fn announced_ip(bound: Ipv4Addr, peer: SocketAddr) -> Option<Ipv4Addr> {
    if !bound.is_unspecified() {
        return Some(bound);
    }
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect(peer).ok()?;
    match probe.local_addr().ok()?.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// Answers mDNS queries for hub `site` whose relay listens on `relay` (kernel sockets), on a
/// thread of its own. The group is joined on every IPv4 interface (on `relay`'s only, when it
/// is a specific address); joins that fail (an interface without multicast) are skipped.
pub fn spawn_std_responder(
    site: String,
    relay: SocketAddr,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let IpAddr::V4(bound) = relay.ip() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "mDNS: the relay listens on IPv6; only IPv4 is announced",
        ));
    };
    let socket = shared_mdns_socket()?;
    let interfaces = if bound.is_unspecified() {
        crate::interfaces::ipv4_addresses()
    } else {
        vec![bound]
    };
    let mut joined = 0;
    for ip in &interfaces {
        match socket.join_multicast_v4(&MDNS_GROUP, ip) {
            Ok(()) => joined += 1,
            Err(e) => log::debug!("mdns: cannot join {MDNS_GROUP} on {ip}: {e}"),
        }
    }
    if joined == 0 {
        log::warn!("mdns: joined {MDNS_GROUP} on no interface; only legacy queries sent to this host's addresses are answered");
    }
    log::info!(
        "mdns: answering for _outpost._tcp.local (site {site}, port {})",
        relay.port()
    );
    std::thread::Builder::new()
        .name("mdns".into())
        .spawn(move || {
            let mut packet = [0u8; 1500];
            loop {
                let (n, from) = match socket.recv_from(&mut packet) {
                    Ok(r) => r,
                    Err(e) => {
                        log::debug!("mdns: receive failed: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                };
                let Ok(query) = parse(&packet[..n]) else {
                    continue;
                };
                let Some(ip) = announced_ip(bound, from) else {
                    continue;
                };
                let hub = HubRecord {
                    site: site.clone(),
                    port: relay.port(),
                    ip,
                };
                let legacy = from.port() != MDNS_PORT;
                let Some(reply) = answer(&query, &hub, legacy) else {
                    continue;
                };
                let unicast = legacy || query.questions.iter().any(|q| q.unicast_response);
                let to = if unicast {
                    from
                } else {
                    SocketAddr::from((MDNS_GROUP, MDNS_PORT))
                };
                log::debug!("mdns: answering {from} to {to}");
                if let Err(e) = socket.send_to(&reply, to) {
                    log::debug!("mdns: reply to {to} failed: {e}");
                }
            }
        })
}
