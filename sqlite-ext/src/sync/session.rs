//! Connecting to a pinned peer (its known addresses, then the LAN for a moved hub; the
//! handshake counter committed before message 1) and one sync session over that link: hello,
//! push, commit, pull, and with `live`, the live wait (`live.rs`) before `Bye`.

use super::discover;
use super::identity::{self, Identity};
use super::live::{self, End, Live};
use super::peers::Peer;
use super::store::{self, EngineStore};
use crate::error::SyncError;
use outpost_link::{connect, Attempt, ConnectFailure, Endpoint, Link, LinkError, Timeouts};
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::handshake::{Ephemeral, InitiatorConfig, Purpose};
use outpost_protocol::message::{Message, PeerRole, SessionId};
use outpost_protocol::session::{ClientConfig, ClientSession, SessionError};
use outpost_protocol::PROTOCOL_VERSION;
use std::net::TcpStream;

use crate::functions::Call;

/// `N` bytes of the operating system's randomness, for `purpose`.
fn random<const N: usize>(purpose: &'static str) -> Result<[u8; N], SyncError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|error| SyncError::Randomness { purpose, error })?;
    Ok(b)
}

/// Connects and authenticates to `peer` (the counter is committed before message 1); errors
/// name it `label`. Returns the link and the address used.
pub(crate) fn open(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    purpose: Purpose,
    timeouts: Timeouts,
    label: String,
) -> Result<(Link<TcpStream>, String), SyncError> {
    let mut discovered = false;
    let (stream, address) = match connect(&peer.addresses, timeouts) {
        Ok(found) => found,
        // The hub's known addresses are dead: ask the LAN where a hub with its site id is now.
        Err(mut tried) => {
            let lan = discover::lan_addresses(peer);
            if peer.role == PeerRole::Hub && lan.is_empty() {
                tried.push(Attempt {
                    address: "LAN (mDNS)".into(),
                    failure: ConnectFailure::NotDiscovered,
                });
            }
            match connect(&lan, timeouts) {
                Ok(found) => {
                    discovered = true;
                    found
                }
                Err(more) => {
                    tried.extend(more);
                    return Err(SyncError::Link(LinkError::Unreachable {
                        peer: label,
                        tried,
                    }));
                }
            }
        }
    };
    let counter = identity::next_counter(call.conn)?;
    let config = InitiatorConfig {
        identity: id.keypair.clone(),
        site: id.site,
        counter,
        responder_key: peer.key,
        responder_site: peer.site,
        purpose,
        version: PROTOCOL_VERSION,
    };
    let ephemeral = Ephemeral::from_seed(random("the handshake")?);
    let at = Endpoint {
        peer: label,
        address: address.clone(),
    };
    let link = Link::open(stream, at, &config, ephemeral, timeouts.io)?;
    if discovered {
        // The handshake proved the pinned key at this address: try it first next time.
        discover::remember(call.conn, peer, &address)?;
    }
    Ok((link, address))
}

/// One session: hello, push, commit, pull, bye; with `live`, between the pull and the bye, the
/// live wait (`live.rs`). Returns the address used and how the live wait ended.
pub(crate) fn session(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    timeouts: Timeouts,
    store: &mut EngineStore,
    live: Option<Live>,
) -> Result<(String, End), SyncError> {
    let (mut link, address) = open(call, id, peer, Purpose::Session, timeouts, peer.label())?;
    let sid = random("a session id")?;
    let mut client = ClientSession::new(ClientConfig {
        site: id.site,
        role: PeerRole::Device,
        fingerprint: store::fingerprint(call)?,
        wall_clock_ms: crate::clock::wall_ms(),
        session: SessionId(sid),
        live: live.is_some(),
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    });
    let driven = link.drive(&mut client, store, |_| {});
    // The peer's clock, as its hello stated it (0: it has no trusted time). Checked whatever
    // became of the session: the hello arrived before anything could fail.
    let skew = match client.server_hello() {
        Some(hello) => crate::skew::check(call.conn, crate::clock::wall_ms(), hello.wall_clock_ms)
            .map(|_| call.session.clock.reload_offset())
            .map_err(SyncError::Engine),
        None => Ok(()),
    };
    let r = driven
        .map_err(|e| store.typed(e))
        .and_then(|()| match live {
            None => Ok(End::Done),
            Some(l) => {
                let end = live::wait(call, &mut link, &mut client, store, l, timeouts)?;
                // The deadline may fall inside a pull: apply what arrived before ending cleanly.
                store.apply_kept()?;
                link.send(&Message::Bye)?;
                Ok(end)
            }
        });
    match &r {
        Err(SyncError::Link(LinkError::Session { error, .. })) => link.report(error),
        // A local failure: tell the peer without its detail.
        Err(SyncError::Engine(_) | SyncError::Restored { .. }) => {
            link.report(&SessionError::Store(String::new()))
        }
        _ => {}
    }
    link.close();
    let end = r?;
    skew?;
    Ok((address, end))
}
