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
        wall_clock_ms: crate::clock::device_wall_ms(call.conn)?,
        session: SessionId(sid),
        live: live.is_some(),
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    });
    let r = drive(call, &mut link, &mut client, store).and_then(|()| match live {
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
        Err(
            SyncError::Engine(_) | SyncError::Restored { .. } | SyncError::DirectionMismatch { .. },
        ) => link.report(&SessionError::Store(String::new())),
        _ => {}
    }
    link.close();
    Ok((address, r?))
}

/// [`Link::drive`] with one step more: the peer's hello goes to the clock check first
/// (`skew.rs`), because the client plans its push as soon as it handles the hello, and the
/// changes it pushes must already carry their re-stamped clocks (once pushed they have left).
/// A check that fails ends the session before anything is pushed.
///
/// Then the control entries the server announced in its hello (they follow it at once) are
/// received before the push leaves, and the tenant's table settings they carry are checked
/// against the tracked tables (`table_settings.rs`): a mismatching database pushes nothing.
fn drive<'c>(
    call: &Call,
    link: &mut Link<TcpStream>,
    client: &mut ClientSession<EngineStore<'c>>,
    store: &mut EngineStore<'c>,
) -> Result<(), SyncError> {
    loop {
        link.send_queued(client, store)
            .map_err(|e| store.typed(e))?;
        if client.is_done() || client.is_live() {
            return Ok(());
        }
        let msg = link.recv()?;
        let mut announced = None;
        if let Message::Hello(hello) = &msg {
            // The peer's clock as its hello states it (0: it has no trusted time).
            crate::skew::check(call, hello.wall_clock_ms)?;
            announced = Some(store.control_announced(&hello.control)?);
            store.peer_clock_ms = hello.wall_clock_ms;
        }
        let handled = client.handle(msg, store);
        handled.map_err(|e| store.typed(LinkError::session(link.endpoint(), e)))?;
        if let Some(entries) = announced {
            receive_control(link, client, store, entries)?;
            store.check_table_settings()?;
        }
    }
}

/// Receives and handles the `entries` control entries that follow the server's hello (in as many
/// `Control` messages as it takes). Any other message ends the wait: it is handled as usual.
fn receive_control<'c>(
    link: &mut Link<TcpStream>,
    client: &mut ClientSession<EngineStore<'c>>,
    store: &mut EngineStore<'c>,
    mut entries: u64,
) -> Result<(), SyncError> {
    while entries > 0 {
        let msg = link.recv()?;
        entries = match &msg {
            Message::Control { entries: got } => entries.saturating_sub(got.len() as u64),
            _ => 0,
        };
        let handled = client.handle(msg, store);
        handled.map_err(|e| store.typed(LinkError::session(link.endpoint(), e)))?;
    }
    Ok(())
}
