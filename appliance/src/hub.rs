//! The running hub as its uplink and status see it: its data directory, and the relays' shared
//! [`Serving`] state (whose commit and id-shortfall counters the uplink watches, and whose commit
//! counter it bumps for what it pulls).

use crate::datadir::DataDir;
use outpost_protocol::channel::Limits as ChannelLimits;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::PeerRole;
use outpost_relay::Serving;
use std::sync::Arc;

/// The hub process's shared state.
#[derive(Debug)]
pub struct Hub {
    dir: DataDir,
    serving: Arc<Serving>,
}

impl Hub {
    /// The hub over an opened data directory: its relays announce [`PeerRole::Hub`].
    pub fn new(dir: DataDir, limits: ChannelLimits) -> Arc<Hub> {
        let serving = Serving::new(dir.stores(), limits, PeerRole::Hub);
        Arc::new(Hub { dir, serving })
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// What the relays share (hand it to [`outpost_relay::serve_connection`]).
    pub fn serving(&self) -> &Arc<Serving> {
        &self.serving
    }

    /// The hub's static key pair (the relay's Noise `s`, and the uplink's as initiator).
    pub fn keypair(&self) -> &Keypair {
        self.serving.keypair()
    }

    /// Commits acknowledged so far by this process (relays and uplink): a change means news.
    pub fn commits(&self) -> u64 {
        self.serving.commits()
    }

    /// Records a commit made outside the relay (the uplink storing what it pulled), so live
    /// devices are notified of it.
    pub fn note_commit(&self) {
        self.serving.note_commit();
    }

    /// Empty id grants sent so far by this process's relays (each after the demand was
    /// recorded): a change means the id pool may want a refill.
    pub fn id_shortfalls(&self) -> u64 {
        self.serving.id_shortfalls()
    }
}
