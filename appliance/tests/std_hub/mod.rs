//! The hub on host sockets for the relay and flood tests: the real `Hub` (allowlist, Noise
//! responder, server session, SQLite mailbox) behind the std listener on a loopback port, and
//! devices enrolled with tokens its allowlist issues.
#![allow(dead_code)]

use outpost_hub::datadir::{unix_now, DataDir};
use outpost_hub::hub::Hub;
use outpost_protocol::channel::Limits as ChannelLimits;
use outpost_relay::allowlist::{PeerGrant, Role, DEFAULT_TOKEN_TTL_SECS};
use outpost_relay::listener::{serve, Conn, Limits, LiveSessions};
use outpost_relay::serve_connection;
use outpost_testkit::{enroll_token, Device, HubInfo};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

/// A hub on `data` serving a loopback port with `limits`; its address and the hub.
pub fn start_hub_with(data: &Path, limits: Limits) -> (SocketAddr, Arc<Hub>) {
    let hub = Hub::new(DataDir::open(data).unwrap(), ChannelLimits::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = hub.serving().clone();
    let handler = move |conn: &mut Conn| serve_connection(&serving, conn);
    std::thread::spawn(move || {
        serve(
            listener,
            limits,
            Arc::new(LiveSessions::default()),
            Arc::new(handler),
        )
    });
    (addr, hub)
}

/// [`start_hub_with`] the default limits.
pub fn start_hub(data: &Path) -> (SocketAddr, Arc<Hub>) {
    start_hub_with(data, Limits::default())
}

/// What a device needs to reach the hub at `addr`.
pub fn info(addr: SocketAddr, hub: &Hub) -> HubInfo {
    HubInfo {
        addr,
        key: *hub.dir().identity.public(),
        site: hub.dir().identity.site,
    }
}

/// Enrolls `dev` with a token the hub's allowlist issues.
pub fn enroll(hub: &HubInfo, h: &Hub, dev: &mut Device) {
    enroll_granted(hub, h, dev, &PeerGrant::default());
}

/// [`enroll`] with a code granting `grant`.
pub fn enroll_granted(hub: &HubInfo, h: &Hub, dev: &mut Device, grant: &PeerGrant) {
    let token = h
        .dir()
        .allowlist()
        .unwrap()
        .issue_granted_token(unix_now(), DEFAULT_TOKEN_TTL_SECS, Role::Device, grant)
        .unwrap()
        .secret;
    enroll_token(hub, dev, token);
}
