//! The session protocol listener (hubs and devices): the hub's relay (`outpost_hub::relay`: Noise
//! IK responder admitting from the allowlist, then the protocol's `ServerSession` over the mailbox)
//! run over the cloud's data directory, whose `identity.key`, `site-id`, `mailbox.db` and
//! `allowlist.db` have the hub's layout. Batches a peer pushes are committed to the mailbox by the
//! relay (fsynced before the ack); the cloud's sync loop then applies them to the tenant tables,
//! and is kicked when each session ends so that happens at once. Pulls are served from the mailbox,
//! which holds the cloud's own batches too.
//!
//! The relay announces `PeerRole::Cloud` (`Hub::with_role`). Live sessions (a device idle after a
//! pull in `outpost_sync` live mode) are notified of every new batch in the mailbox: the relay
//! counts the commits it acknowledges itself, and the cloud calls `Hub::note_commit` after every
//! export that stored batches of its own origin (REST pushes at once, operator writes at the next
//! round), through [`Cloud::notify_sessions`].

use crate::service::Cloud;
use anyhow::{Context, Result};
use outpost_hub::allowlist::{Allowlist, AllowlistError};
use outpost_hub::relay::{serve_stream, Hub, Relay};
use outpost_hub::server::{serve, watch_revocations, Conn, Limits as ServerLimits, LiveSessions};
use outpost_protocol::channel::Limits as ChannelLimits;
use outpost_protocol::message::PeerRole;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Serves sessions on `listener` from new threads; returns once they are started.
pub fn spawn(listener: TcpListener, cloud: Arc<Cloud>) -> Result<()> {
    let hub_dir = outpost_hub::datadir::DataDir::open(&cloud.dir.path)
        .with_context(|| format!("opening {} for sessions", cloud.dir.path.display()))?;
    let hub = Hub::with_role(hub_dir, ChannelLimits::default(), PeerRole::Cloud)?;
    cloud.notify_sessions(hub.clone());
    let live = Arc::new(LiveSessions::default());
    let watcher = Allowlist::open(cloud.dir.path.join("allowlist.db"))?;
    watch_revocations(
        live.clone(),
        Duration::from_secs(1),
        move |k| match watcher.authorize(k) {
            Ok(_) => true,
            Err(AllowlistError::Revoked | AllowlistError::NotEnrolled) => false,
            Err(e) => {
                log::warn!("revocation check: {e}");
                true
            }
        },
    )
    .context("starting the revocation watcher")?;
    let handler = move |conn: &mut Conn| -> Result<()> {
        let mut relay = Relay::new(hub.clone())?;
        let r = serve_stream(&mut relay, conn);
        cloud.kick();
        r
    };
    std::thread::Builder::new()
        .name("sessions".into())
        .spawn(move || {
            if let Err(e) = serve(listener, ServerLimits::default(), live, Arc::new(handler)) {
                log::error!("the session listener stopped: {e}");
            }
        })
        .context("starting the session listener")?;
    Ok(())
}
