//! The uplink's state file (`uplink-state.json` in the data directory): what it last did, for
//! `status` and the page, rewritten atomically.

use super::error::UplinkError;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::path::Path;

/// The uplink's state file in the data directory.
pub const STATE_FILE: &str = "uplink-state.json";

/// How many of the cloud's revocations the state keeps (the allowlist keeps them all).
const MAX_REVOKED_SHOWN: usize = 32;

/// What the uplink last did (for `status` and the page).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UplinkState {
    /// `never` (no success yet), `connected` (the last round succeeded), `backing off`.
    pub state: String,
    /// The address last tried or used.
    pub address: Option<String>,
    /// The cloud's site id, once pinned.
    pub cloud_site: Option<String>,
    /// Last successful round, unix seconds.
    pub last_success: Option<u64>,
    /// Last attempt, unix seconds.
    pub last_attempt: Option<u64>,
    /// The last failure (cleared by a success).
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// While backing off: the delay before the next attempt.
    pub retry_in_ms: Option<u64>,
    /// The cloud's vector as last known (its hello, advanced by its acks), `status::encode_vector`.
    pub cloud_vector: Option<String>,
    /// Since when (unix seconds) the uplink has been in live sessions without a failure; `None`
    /// when not live.
    #[serde(default)]
    pub live_since: Option<u64>,
    /// Trusted time minus the hub's clock (ms), as the cloud's last hello gave it; `None` until
    /// a session with the cloud since this process started (a Pi has no battery clock).
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    /// When the hub's clock was last synced with the cloud's (unix seconds, trusted time).
    #[serde(default)]
    pub clock_synced_at: Option<u64>,
    /// Pulled batches held back in the last session because no control entry named their
    /// origin's key yet ("origin seqs lo..=hi"); they come again with a later pull.
    #[serde(default)]
    pub held: Vec<String>,
    /// Origins held back from the push because their batch does not verify with the key the
    /// hub's directory holds (after the cloud refused a push as badly signed).
    #[serde(default)]
    pub withheld: Vec<String>,
    /// Devices the uplink revoked in the allowlist because the cloud's control stream revokes
    /// them ("site at unix-seconds"), the latest 32.
    #[serde(default)]
    pub revoked_by_cloud: Vec<String>,
    /// Seqs pushed and pulled by this process's uplink.
    pub pushed: u64,
    /// See `pushed`.
    pub pulled: u64,
}

impl UplinkState {
    /// Records that the uplink revoked `site` at `at` (unix seconds) for the cloud.
    pub fn note_revoked(&mut self, site: &outpost_protocol::SiteId, at: u64) {
        self.revoked_by_cloud.push(format!("{site} at {at}"));
        let over = self
            .revoked_by_cloud
            .len()
            .saturating_sub(MAX_REVOKED_SHOWN);
        self.revoked_by_cloud.drain(..over);
    }

    /// The state in `dir`, if the uplink ever ran there.
    pub fn load(dir: &Path) -> Result<Option<UplinkState>, UplinkError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| UplinkError::StateJson { path, source }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(UplinkError::StateFile { path, source }),
        }
    }

    /// Writes the state (temporary file + rename: a reader never sees half of it).
    pub fn save(&self, dir: &Path) -> Result<(), UplinkError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| UplinkError::StateJson {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(|source| UplinkError::StateFile {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| UplinkError::StateFile { path, source })
    }
}
