//! The hub's own network stack: embassy-net (smoltcp) on Linux, so the box needs no kernel IP
//! configuration and the same code runs on the Pi, under QEMU and in tests (docs/design.md §6).
//!
//! - [`stack`]: `--net packet:IFACE` / `tap:IFACE`, DHCP or `--ip`, the executor, [`run`].
//! - [`packet`]: the `AF_PACKET` driver; [`tap`]: the TAP driver.
//! - [`tcp`]: accepting connections and handing them to an async [`tcp::ConnHandler`].
//! - [`bridge`]: running a blocking handler (the relay) on a thread per connection, over a
//!   `std::io::Read + Write` [`bridge::BridgedConn`].
//! - [`dial`]: outgoing connections for threads (the uplink), bridged the same way.
//! - [`mdns`]: the responder; [`discovery`]: the DNS-SD codec and the device-side querier.
//! - [`http`]: the read-only status page.
//!
//! [`run_hub`] puts these together: relay, mDNS and status page on one stack
//! ([`run_hub_with_dials`]: and outgoing connections).
//!
//! **API boundary**: only this module knows embassy. The relay sees a blocking byte stream.

pub mod bridge;
pub mod dial;
pub mod discovery;
pub mod http;
pub mod mdns;
pub mod packet;
pub mod stack;
pub mod tap;
pub mod tcp;

pub use stack::{run, Address, IpConfig, Link, NetConfig, NetError};

use bridge::{BlockingHandler, Bridge};
use outpost_relay::listener::Limits;
use std::convert::Infallible;

/// Connections the relay serves at once on the hub's stack (one socket each, 32 KiB of buffers):
/// at most [`RELAY_LIMITS`]`.max_pending` of them handshaking, so the others are always there
/// for enrolled devices' sessions.
pub const RELAY_SLOTS: usize = 64;
/// Admission on the hub's stack (docs/hub.md, "Connection limits"): 16 connections handshaking,
/// 4 per address; the other 48 sockets are for sessions (4 per device key).
pub const RELAY_LIMITS: Limits = Limits {
    max_pending: 16,
    pending_per_address: 4,
    max_sessions: RELAY_SLOTS - 16,
    ..Limits::HUB
};
/// Outgoing connections open at once on the hub's stack (the uplink uses one at a time).
pub const DIAL_SLOTS: usize = 2;

// Every slot is a socket of the stack's set, which panics when it is full: DHCP and mDNS take
// one each.
const _: () = assert!(RELAY_SLOTS + http::SLOTS + DIAL_SLOTS + 2 <= stack::MAX_SOCKETS);

/// What the hub serves on its stack.
pub struct HubServices<H, F> {
    /// The hub's site id (32 hex digits), announced over mDNS.
    pub site: String,
    /// The relay's TCP port (the devices' port, e.g. 7420).
    pub relay_port: u16,
    /// The relay, run on a thread per connection.
    pub relay: H,
    /// The status page's TCP port (80), or `None` for no page.
    pub status_port: Option<u16>,
    /// Renders the status page; called on the network thread, so it must not block.
    pub render: F,
}

/// Runs the relay (`RELAY_SLOTS` connections at once, admitted within [`RELAY_LIMITS`]), the mDNS responder and the status page
/// on the hub's stack, forever. `on_address` is called once the stack has its address (to
/// record it for enrollment codes, for instance). Returns only if the link cannot be opened.
pub fn run_hub<H, F, A>(
    config: NetConfig,
    services: HubServices<H, F>,
    on_address: A,
) -> Result<Infallible, NetError>
where
    H: BlockingHandler,
    F: Fn() -> String + 'static,
    A: FnOnce(Address) + 'static,
{
    run_hub_with_dials(config, services, None, on_address)
}

/// [`run_hub`], and with `dials` also the outgoing connections its [`dial::Dialer`] asks for
/// (`DIAL_SLOTS` at once): the uplink to the cloud over the hub's own stack.
pub fn run_hub_with_dials<H, F, A>(
    config: NetConfig,
    services: HubServices<H, F>,
    dials: Option<dial::DialRequests>,
    on_address: A,
) -> Result<Infallible, NetError>
where
    H: BlockingHandler,
    F: Fn() -> String + 'static,
    A: FnOnce(Address) + 'static,
{
    run(config, move |stack, address| async move {
        on_address(address);
        let HubServices {
            site,
            relay_port,
            relay,
            status_port,
            render,
        } = services;
        let relay = Bridge::admitting(relay, RELAY_LIMITS);
        log::info!("relay: listening on {}:{relay_port}", address.ip);
        let relay =
            tcp::serve::<_, RELAY_SLOTS>(stack, relay_port, tcp::TcpOptions::default(), &relay);
        let mdns = mdns::respond(stack, &site, relay_port);
        let status = async {
            match status_port {
                Some(port) => http::serve_status(stack, port, render).await,
                None => core::future::pending().await,
            }
        };
        let outgoing = async {
            match &dials {
                Some(d) => {
                    dial::serve_dials::<DIAL_SLOTS>(stack, tcp::TcpOptions::default(), d).await
                }
                None => core::future::pending().await,
            }
        };
        embassy_futures::join::join4(relay, mdns, status, outgoing).await;
    })
}
