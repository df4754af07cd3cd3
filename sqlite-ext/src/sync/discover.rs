//! Finding an enrolled hub on the clinic LAN when its known addresses do not answer (a new DHCP
//! lease, a hub moved to another switch port): DNS-SD over mDNS (`outpost_protocol::discovery`).
//!
//! Discovery only proposes addresses. The handshake still proves the pinned key, so a device
//! answered by a rogue box that copies the hub's site id in its TXT record gets `key mismatch`,
//! never a session. An address that worked is remembered first in `_outpost_peers`, so the next
//! sync connects directly instead of asking the LAN again.

use super::peers::{self, Peer};
use crate::error::SyncError;
use crate::ffi::Conn;
use outpost_protocol::discovery::find_hubs;
use outpost_protocol::message::PeerRole;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How long a device listens for hubs' answers: mDNS responders answer within a few hundred ms.
const WAIT: Duration = Duration::from_millis(700);

/// Addresses on the LAN where `peer` (a hub) answers now, excluding ones already tried. Empty
/// for clouds (they are not on the LAN) and when nothing answers.
pub(crate) fn lan_addresses(peer: &Peer) -> Vec<String> {
    if peer.role != PeerRole::Hub {
        return Vec::new();
    }
    let site = peer.site.to_string();
    match find_hubs(Ipv4Addr::UNSPECIFIED, WAIT) {
        Ok(found) => found
            .into_iter()
            .filter(|h| h.site.eq_ignore_ascii_case(&site))
            .map(|h| h.addr.to_string())
            .filter(|a| !peer.addresses.contains(a))
            .collect(),
        Err(e) => {
            log::debug!("outpost: hub discovery unavailable: {e}");
            Vec::new()
        }
    }
}

/// Puts `address` first in the peer's remembered addresses (its own small transaction: called
/// after a handshake proved the pinned key at that address).
pub(crate) fn remember(conn: Conn, peer: &Peer, address: &str) -> Result<(), SyncError> {
    if peer.addresses.first().map(String::as_str) == Some(address) {
        return Ok(());
    }
    let mut updated = peer.clone();
    updated.addresses.retain(|a| a != address);
    updated.addresses.insert(0, address.to_string());
    peers::update_addresses(conn, &updated)
}
