//! The hub's mDNS responder: answers DNS-SD questions for `_outpost._tcp.local` on UDP 5353
//! (multicast group 224.0.0.251) with the records of [`super::discovery`], so devices find the
//! hub without typing an address.
//!
//! Replies: a query from port 5353 asking for a multicast reply gets one to the group; a query
//! with the "QU" bit, or from another port (a "legacy" one-shot querier such as
//! [`super::discovery::find_hubs`]), gets a unicast reply to its source.
//! The A record always carries the stack's current address (it can change at a DHCP renewal).

use super::discovery::{answer, parse, HubRecord, MDNS_GROUP, MDNS_PORT};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::Timer;

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
