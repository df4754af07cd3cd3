//! The peers this database enrolled with, their pinned keys and addresses.
//!
//! | table | one row per | holds |
//! |---|---|---|
//! | `_outpost_peers` | enrolled hub or cloud | site id, role, pinned 65-byte key, addresses (JSON), enrolled at, last sync |
//! | `_outpost_identity` | setting | `handshake_counter` (see `identity.rs`) |

use crate::error::SyncError;
use crate::ffi::Conn;
use outpost_protocol::handshake::PublicKey;
use outpost_protocol::message::PeerRole;
use outpost_protocol::{SiteId, Value};

pub(crate) const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS _outpost_peers(site BLOB PRIMARY KEY, role TEXT NOT NULL, key BLOB NOT NULL,
  addresses TEXT NOT NULL, enrolled_at INTEGER NOT NULL, last_sync_at INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_identity(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
"#;

/// One enrolled peer.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub site: SiteId,
    pub role: PeerRole,
    pub key: PublicKey,
    pub addresses: Vec<String>,
}

impl Peer {
    /// `hub 3f2a9c0d…`: how errors name it.
    pub(crate) fn label(&self) -> String {
        format!("{} {}", role_name(self.role), &self.site.to_string()[..12])
    }
}

pub(crate) fn role_name(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Device => "device",
        PeerRole::Hub => "hub",
        PeerRole::Cloud => "cloud",
    }
}

fn role_of(name: &str) -> Option<PeerRole> {
    match name {
        "device" => Some(PeerRole::Device),
        "hub" => Some(PeerRole::Hub),
        "cloud" => Some(PeerRole::Cloud),
        _ => None,
    }
}

/// Every enrolled peer, hubs first, then clouds, each in enrollment order.
pub(crate) fn load(conn: Conn) -> Result<Vec<Peer>, SyncError> {
    let mut s = conn.prepare(
        "SELECT site, role, key, addresses FROM _outpost_peers
         ORDER BY CASE role WHEN 'hub' THEN 0 WHEN 'cloud' THEN 1 ELSE 2 END, enrolled_at, site",
    )?;
    let mut out = Vec::new();
    let corrupt = |what: &str| {
        SyncError::Engine(crate::error::Error::Corrupt(format!(
            "_outpost_peers: {what}"
        )))
    };
    while s.step()? {
        let site = SiteId::from_slice(&s.blob(0)).ok_or_else(|| corrupt("site id"))?;
        let role = role_of(&s.text(1)).ok_or_else(|| corrupt("role"))?;
        let key = PublicKey::from_sec1(&s.blob(2)).map_err(|_| corrupt("key"))?;
        let addresses: Vec<String> =
            serde_json::from_str(&s.text(3)).map_err(|_| corrupt("addresses"))?;
        out.push(Peer {
            site,
            role,
            key,
            addresses,
        });
    }
    Ok(out)
}

/// Pins `peer` (replacing an earlier enrollment with the same site id). Its own transaction.
pub(crate) fn pin(conn: Conn, peer: &Peer, now: u64) -> Result<(), SyncError> {
    let mut s = conn.prepare(
        "INSERT INTO _outpost_peers(site, role, key, addresses, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(site) DO UPDATE SET role = excluded.role, key = excluded.key,
           addresses = excluded.addresses, enrolled_at = excluded.enrolled_at",
    )?;
    s.bind_blob(1, peer.site.as_bytes())?;
    s.bind_text(2, role_name(peer.role))?;
    s.bind_blob(3, peer.key.as_bytes())?;
    let addresses = serde_json::to_string(&peer.addresses).map_err(SyncError::PeerAddresses)?;
    s.bind_text(4, &addresses)?;
    s.bind(5, &Value::Integer(now as i64))?;
    s.run()?;
    Ok(())
}

/// Replaces the remembered addresses of an enrolled peer; nothing else changes (a peer not
/// pinned yet is left alone).
pub(crate) fn update_addresses(conn: Conn, peer: &Peer) -> Result<(), SyncError> {
    let mut s = conn.prepare("UPDATE _outpost_peers SET addresses = ?1 WHERE site = ?2")?;
    let addresses = serde_json::to_string(&peer.addresses).map_err(SyncError::PeerAddresses)?;
    s.bind_text(1, &addresses)?;
    s.bind_blob(2, peer.site.as_bytes())?;
    s.run()?;
    Ok(())
}

/// Records a successful sync with `site`.
pub(crate) fn synced(conn: Conn, site: SiteId, now: u64) -> Result<(), SyncError> {
    let mut s = conn.prepare("UPDATE _outpost_peers SET last_sync_at = ?2 WHERE site = ?1")?;
    s.bind_blob(1, site.as_bytes())?;
    s.bind(2, &Value::Integer(now as i64))?;
    s.run()?;
    Ok(())
}

/// How the caller names a peer.
pub(crate) enum Wanted {
    Role(PeerRole),
    SitePrefix(String),
}

/// Parses `hub`, `cloud`, or 4+ leading hex digits of a site id.
pub(crate) fn wanted(text: &str) -> Result<Wanted, SyncError> {
    let w = text.trim().to_ascii_lowercase();
    match role_of(&w) {
        Some(role) => Ok(Wanted::Role(role)),
        None if w.len() >= 4 && w.len() <= 32 && w.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Wanted::SitePrefix(w))
        }
        None => Err(SyncError::Argument(format!(
            "outpost_sync: peer {text:?}: give \"hub\", \"cloud\" or 4+ leading hex digits of a peer's site id"
        ))),
    }
}

/// The peers matching `wanted` (as the caller wrote it).
pub(crate) fn select(peers: Vec<Peer>, wanted_text: &str) -> Result<Vec<Peer>, SyncError> {
    let wanted_peer = wanted(wanted_text)?;
    let chosen: Vec<Peer> = match wanted_peer {
        Wanted::Role(role) => peers.into_iter().filter(|p| p.role == role).collect(),
        Wanted::SitePrefix(w) => peers
            .into_iter()
            .filter(|p| p.site.to_string().starts_with(&w))
            .collect(),
    };
    let wanted = wanted_text;
    if chosen.is_empty() {
        return Err(SyncError::NotEnrolled {
            wanted: Some(wanted.to_string()),
        });
    }
    Ok(chosen)
}
