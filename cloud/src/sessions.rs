//! The session protocol listener (hubs and devices): the relay shared with the hub
//! (`outpost_relay`: Noise IK responder admitting from the allowlist, then the protocol's
//! `ServerSession` over the mailbox), serving from the cloud's own data directory
//! ([`crate::datadir::DataDir::stores`]: its identity, `mailbox.db` and `allowlist.db`). Batches a
//! peer pushes are committed to the mailbox by the relay (fsynced before the ack); the cloud's
//! sync loop then applies them to the tenant tables, and is kicked when each session ends so that
//! happens at once. Pulls are served from the mailbox, which holds the cloud's own batches too.
//!
//! The relay announces `PeerRole::Cloud`. Live sessions (a device idle after a pull in
//! `outpost_sync` live mode) are notified of every new batch in the mailbox: the relay counts the
//! commits it acknowledges itself, and the cloud calls `Serving::note_commit` after every export
//! that stored batches of its own origin (REST pushes at once, operator writes at the next
//! round), through [`Cloud::notify_sessions`].

use crate::service::Cloud;
use outpost_protocol::channel::Limits as ChannelLimits;
use outpost_protocol::message::PeerRole;
use outpost_relay::allowlist::AllowlistError;
use outpost_relay::listener::{serve, watch_allowlist, Conn, Limits as ServerLimits, LiveSessions};
use outpost_relay::{serve_connection, Serving};
use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Why the session listener could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionsError {
    /// The revocation watcher's allowlist connection could not be opened.
    Allowlist(AllowlistError),
    /// Where the stores are could not be read from the data directory.
    DataDir(crate::datadir::DataDirError),
    /// A thread of the listener could not be started.
    Thread {
        /// Which thread.
        name: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
}

impl fmt::Display for SessionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionsError::Allowlist(e) => e.fmt(f),
            SessionsError::DataDir(e) => e.fmt(f),
            SessionsError::Thread { name, source } => {
                write!(f, "starting the {name}: {source}")
            }
        }
    }
}

impl std::error::Error for SessionsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the allowlist's error text is this one's.
            SessionsError::Allowlist(e) => e.source(),
            SessionsError::DataDir(e) => e.source(),
            SessionsError::Thread { source, .. } => Some(source),
        }
    }
}

/// Serves sessions on `listener` from new threads; returns once they are started. Pushes in
/// progress may hold `staging_bytes` of memory together (`outpost_relay::staging`).
pub fn spawn(
    listener: TcpListener,
    cloud: Arc<Cloud>,
    staging_bytes: usize,
) -> Result<(), SessionsError> {
    let serving = Serving::with_staging_budget(
        cloud.dir.stores().map_err(SessionsError::DataDir)?,
        ChannelLimits::default(),
        PeerRole::Cloud,
        staging_bytes,
    );
    cloud.notify_sessions(serving.clone());
    let live = Arc::new(LiveSessions::default());
    let watcher = serving
        .stores()
        .allowlist()
        .map_err(SessionsError::Allowlist)?;
    watch_allowlist(live.clone(), Duration::from_secs(1), watcher).map_err(|source| {
        SessionsError::Thread {
            name: "revocation watcher",
            source,
        }
    })?;
    serving
        .watch_control(Duration::from_secs(1))
        .map_err(|source| SessionsError::Thread {
            name: "control watcher",
            source,
        })?;
    let handler = move |conn: &mut Conn| {
        let r = serve_connection(&serving, conn);
        cloud.kick();
        r
    };
    std::thread::Builder::new()
        .name("sessions".into())
        .spawn(move || {
            if let Err(e) = serve(listener, ServerLimits::CLOUD, live, Arc::new(handler)) {
                log::error!("the session listener stopped: {e}");
            }
        })
        .map_err(|source| SessionsError::Thread {
            name: "session listener",
            source,
        })?;
    Ok(())
}
