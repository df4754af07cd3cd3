//! A hub's uplink session with its cloud, both real mailbox files, driven in memory: the hub's
//! `MailboxClient` against the cloud's `Mailbox` as the server store.

use outpost_mailbox::{ControlOwner, Limits, Mailbox, MailboxClient, Moved};
use outpost_protocol::control::Root;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::{PeerRole, SessionId};
use outpost_protocol::scope::Scopes;
use outpost_protocol::session::{
    ClientConfig, ClientSession, PushOrigins, ServerConfig, ServerSession,
};
use outpost_protocol::SiteId;

pub const CLOUD: SiteId = SiteId([0xc1; 16]);
pub const HUB: SiteId = SiteId([0xb1; 16]);

/// The key pair of secret scalar `n n … n`.
pub fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32]).unwrap()
}

/// The control owner of a box `site` with `keypair` as `role`, trusting itself and `extra`.
pub fn owner(site: SiteId, keypair: &Keypair, role: PeerRole, extra: Option<Root>) -> ControlOwner {
    let mut roots = vec![Root {
        site,
        key: *keypair.public(),
        role,
    }];
    roots.extend(extra);
    ControlOwner {
        site,
        keypair: keypair.clone(),
        roots,
        recertify: role == PeerRole::Cloud,
    }
}

/// One uplink session of `hub` (key `hub_key`) with `cloud`, to its end: what it moved, and how
/// many origins' pulled batches it held.
pub fn uplink_session(hub: &mut Mailbox, cloud: &mut Mailbox, hub_key: &Keypair) -> (Moved, usize) {
    let mut server = ServerSession::<Mailbox>::new(ServerConfig {
        site: CLOUD,
        role: PeerRole::Cloud,
        fingerprint: None,
        peer_site: HUB,
        peer_key: *hub_key.public(),
        peer_pushes: PushOrigins::Relayed,
        peer_grant: Scopes::All,
        wall_clock_ms: 1,
        max_clock_ahead_ms: outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS,
        stage_ttl_ms: 60_000,
        max_staged_bytes: 1 << 20,
        batch_limits: Limits::default(),
    });
    let mut store = MailboxClient::new(hub, CLOUD);
    let mut client = ClientSession::new(ClientConfig {
        site: HUB,
        role: PeerRole::Hub,
        fingerprint: [0; 32],
        wall_clock_ms: 1,
        session: SessionId([4; 16]),
        live: false,
        max_push_attempts: 3,
        batch_limits: Limits::default(),
    });
    while !client.is_done() {
        while let Some(m) = client.poll(&mut store).unwrap() {
            server.handle(m, 0, cloud).unwrap();
        }
        while let Some(m) = server.poll(cloud).unwrap() {
            client.handle(m, &mut store).unwrap();
        }
    }
    (store.moved, store.held.len())
}
