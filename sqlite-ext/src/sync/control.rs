//! The control streams this database holds and the key directory they make (docs/design.md
//! section 10): which key each origin signs its batches with.
//!
//! | table | one row per | holds |
//! |---|---|---|
//! | `_outpost_control` | accepted control entry (writer, seq) | the exact bytes its writer signed |
//! | `_outpost_roots` | key trusted from an enrolment code, not from an entry | site id, role, 65-byte key |
//!
//! **Roots.** A device trusts, from its own enrolments: each pinned peer (`_outpost_peers`: a
//! hub as a Hub root, a cloud as a Cloud root) and the cloud anchor of the enrolment code it used
//! (`_outpost_roots`, a Cloud root). Everything else it knows of keys comes from entries those
//! roots (or hubs the cloud certifies) signed, judged by [`Directory`]. Devices write no entries.
//!
//! Only entries the directory accepted are stored, so loading replays them in (writer, seq)
//! order and admits them all again: the stored rows are never trusted on their own (a tampered
//! row is dropped at load, as a refused entry is at a sync). A connection keeps the directory it
//! loaded last and reuses it while the stored rows are byte for byte the same.

use crate::error::Error;
use crate::ffi::Conn;
use crate::functions::Call;
use outpost_protocol::control::{self, ControlEntry, Directory, Refusal, Root};
use outpost_protocol::enroll_code::CloudAnchor;
use outpost_protocol::handshake::PublicKey;
use outpost_protocol::message::PeerRole;
use outpost_protocol::{SiteId, Value};
use sha2::{Digest, Sha256};

/// Created with the sync bookkeeping (`peers::TABLES`).
pub(crate) const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS _outpost_control(writer BLOB NOT NULL, seq INTEGER NOT NULL,
  bytes BLOB NOT NULL, PRIMARY KEY(writer, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_roots(site BLOB PRIMARY KEY, role TEXT NOT NULL,
  key BLOB NOT NULL) WITHOUT ROWID;
"#;

fn has_table(conn: Conn, name: &str) -> Result<bool, Error> {
    Ok(conn
        .query_i64(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            &[Value::Text(name.into())],
        )?
        .is_some())
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(what.to_string())
}

/// Whether this database enrolled with any relay (a hub or the cloud): then every batch it
/// applies must carry its origin's signature as the directory knows it.
pub(crate) fn enrolled(conn: Conn) -> Result<bool, Error> {
    Ok(has_table(conn, "_outpost_peers")?
        && conn
            .query_i64("SELECT 1 FROM _outpost_peers LIMIT 1", &[])?
            .is_some())
}

/// What the directory is made of, as stored: the roots (site, role, key) of `_outpost_peers` and
/// `_outpost_roots`, and the entries of `_outpost_control` in (writer, seq) order.
struct Stored {
    roots: Vec<(Vec<u8>, String, Vec<u8>)>,
    entries: Vec<Vec<u8>>,
}

impl Stored {
    fn read(conn: Conn) -> Result<Stored, Error> {
        let mut roots = Vec::new();
        for table in ["_outpost_peers", "_outpost_roots"] {
            if !has_table(conn, table)? {
                continue;
            }
            let mut s = conn.prepare(&format!(
                "SELECT site, role, key FROM {table} ORDER BY site"
            ))?;
            while s.step()? {
                roots.push((s.blob(0), s.text(1), s.blob(2)));
            }
        }
        let mut entries = Vec::new();
        if has_table(conn, "_outpost_control")? {
            let mut s = conn.prepare("SELECT bytes FROM _outpost_control ORDER BY writer, seq")?;
            while s.step()? {
                entries.push(s.blob(0));
            }
        }
        Ok(Stored { roots, entries })
    }

    /// SHA-256 over everything stored: equal digests, equal directories.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut part = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        for (site, role, key) in &self.roots {
            part(site);
            part(role.as_bytes());
            part(key);
        }
        part(b"entries");
        for e in &self.entries {
            part(e);
        }
        h.finalize().into()
    }

    /// The directory: the roots, and every stored entry admitted again (verified) in order.
    fn directory(&self) -> Result<Directory, Error> {
        let mut roots = Vec::new();
        for (site, role, key) in &self.roots {
            let site = SiteId::from_slice(site).ok_or_else(|| corrupt("a root's site id"))?;
            let role = match role.as_str() {
                "hub" => PeerRole::Hub,
                "cloud" => PeerRole::Cloud,
                // A device is no root: it certifies nothing.
                _ => continue,
            };
            let key = PublicKey::from_sec1(key).map_err(|_| corrupt("a root's key"))?;
            roots.push(Root { site, key, role });
        }
        let mut directory = Directory::new(roots);
        let mut entries = Vec::new();
        for bytes in &self.entries {
            match control::decode_entry(bytes) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    log::warn!("_outpost_control: a stored entry does not decode ({e}): ignored")
                }
            }
        }
        for (e, why) in directory.admit(entries) {
            log::warn!(
                "_outpost_control: stored entry {} of writer {} not accepted again: {why}",
                e.seq,
                e.writer
            );
        }
        Ok(directory)
    }
}

/// A directory loaded earlier on this connection, with the digest of what it was made from.
struct Cached {
    digest: [u8; 32],
    directory: Directory,
}

/// The directory: the roots and every stored entry, admitted again in order. Admitting verifies
/// each entry's signature, so the connection keeps the last directory it loaded and reuses it
/// while the stored rows are byte for byte the same (`outpost_apply` called once per batch
/// would otherwise verify every entry again each call).
pub(crate) fn load(call: &Call) -> Result<Directory, Error> {
    let stored = Stored::read(call.conn)?;
    let digest = stored.digest();
    let mut directory = match call.session.directory.take::<Cached>() {
        Some(c) if c.digest == digest => c.directory,
        _ => stored.directory()?,
    };
    // A sealed tenant's table settings open with its digest key (`seal::table`).
    if let Some(dk) = crate::scope_keys::digest_key(call.conn)? {
        directory.set_table_key(&dk);
    }
    call.session.directory.put(Cached {
        digest,
        directory: directory.clone(),
    });
    Ok(directory)
}

/// Keeps `directory` as the connection's loaded one: it holds exactly the stored entries (a
/// session admitted and stored new ones), so the next session need not verify them all again.
pub(crate) fn remember(call: &Call, directory: &Directory) -> Result<(), Error> {
    let digest = Stored::read(call.conn)?.digest();
    call.session.directory.put(Cached {
        digest,
        directory: directory.clone(),
    });
    Ok(())
}

/// What became of control entries a peer sent.
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Entries accepted now (stored).
    pub accepted: u64,
    /// Entries refused: undecodable, or not accepted by the directory (they come again).
    pub refused: u64,
}

/// Admits `entries` (encoded, as a peer sent them) into `directory` and stores the accepted ones
/// in one transaction; refused ones are logged and counted, never an error.
pub(crate) fn receive(
    conn: Conn,
    directory: &mut Directory,
    entries: Vec<Vec<u8>>,
) -> Result<Received, Error> {
    let mut out = Received::default();
    let mut decoded: Vec<(ControlEntry, Vec<u8>)> = Vec::with_capacity(entries.len());
    for bytes in entries {
        match control::decode_entry(&bytes) {
            Ok(e) => decoded.push((e, bytes)),
            Err(e) => {
                out.refused += 1;
                log::warn!("outpost_sync: a control entry does not decode ({e}): dropped");
            }
        }
    }
    let before = directory.vector();
    let refused = directory.admit(decoded.iter().map(|(e, _)| e.clone()).collect());
    for (e, why) in &refused {
        out.refused += 1;
        log_refusal(e, why);
    }
    let after = directory.vector();
    // A peer may send an entry twice: each accepted (writer, seq) is stored and counted once.
    let mut new: Vec<&(ControlEntry, Vec<u8>)> = decoded
        .iter()
        .filter(|(e, _)| e.seq > before.get(&e.writer) && e.seq <= after.get(&e.writer))
        .collect();
    new.sort_by_key(|(e, _)| (e.writer, e.seq));
    new.dedup_by_key(|(e, _)| (e.writer, e.seq));
    if new.is_empty() {
        return Ok(out);
    }
    conn.exec(TABLES)?;
    conn.exec("SAVEPOINT outpost_control")?;
    let stored = (|| -> Result<(), Error> {
        let mut s = conn.prepare(
            "INSERT OR IGNORE INTO _outpost_control(writer, seq, bytes) VALUES (?1, ?2, ?3)",
        )?;
        for (e, bytes) in &new {
            s.bind_blob(1, e.writer.as_bytes())?;
            s.bind_i64(2, e.seq as i64)?;
            s.bind_blob(3, bytes)?;
            s.run()?;
        }
        Ok(())
    })();
    crate::schema::finish_savepoint(conn, "outpost_control", stored)?;
    out.accepted = new.len() as u64;
    Ok(out)
}

fn log_refusal(e: &ControlEntry, why: &Refusal) {
    log::warn!(
        "outpost_sync: control entry {} of writer {} refused: {why}",
        e.seq,
        e.writer
    );
}

/// Stores the cloud anchor of an enrolment code as a Cloud root (a code without one stores
/// nothing).
pub(crate) fn store_anchor(conn: Conn, anchor: Option<&CloudAnchor>) -> Result<(), Error> {
    let Some(anchor) = anchor else {
        return Ok(());
    };
    conn.exec(TABLES)?;
    let mut s = conn.prepare(
        "INSERT INTO _outpost_roots(site, role, key) VALUES (?1, 'cloud', ?2)
         ON CONFLICT(site) DO UPDATE SET role = excluded.role, key = excluded.key",
    )?;
    s.bind_blob(1, anchor.site.as_bytes())?;
    s.bind_blob(2, &anchor.key)?;
    s.run()
}
