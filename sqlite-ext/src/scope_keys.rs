//! A sealed tenant's keys as this database holds them (docs/design.md section 10, "Sealed
//! batches"): the tenant's digest key and, per scope, the AES-256-GCM keys of each epoch it was
//! handed. A device receives them wrapped to its static key in the answer to its hello
//! (`sync/store.rs`); the cloud writes its own here (it generates them, `cloud/src/scope_keys.rs`).
//!
//! A database holding a digest key belongs to a sealed tenant: what it pushes is sealed under the
//! current (highest) epoch of its stream's scope ([`seal_for_push`]), and what it applies is
//! opened with the key of the batch's epoch ([`decode`]). A batch whose key is not held yet is
//! not applied: a sync holds it (it comes again with a later pull, by when the key has arrived),
//! the manual API refuses it with `NoKey`.
//!
//! `_outpost_keys(scope, epoch, key)`: `scope` is the scope's digest as text (32 hex digits,
//! `seal::ScopeDigest::to_stream`), the unscoped stream's included (the digest of `""`).
//! `_outpost_digest_key(id = 0, key)`: at most one row.

use crate::error::{ApplyError, Error};
use crate::ffi::Conn;
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::Batch;
use outpost_protocol::seal::envelope::{KeyEntry, KeySet};
use outpost_protocol::seal::{self, DigestKey, ScopeKey};

/// Created with the bookkeeping (`schema::ensure`).
pub(crate) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS _outpost_keys(scope TEXT NOT NULL, epoch INTEGER NOT NULL CHECK (epoch >= 1),
  key BLOB NOT NULL CHECK (length(key) = 32), PRIMARY KEY (scope, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outpost_digest_key(id INTEGER PRIMARY KEY CHECK (id = 0),
  key BLOB NOT NULL CHECK (length(key) = 32));
";

/// The tenant's digest key, if this database holds one (it is then a sealed tenant's).
pub(crate) fn digest_key(conn: Conn) -> Result<Option<DigestKey>, Error> {
    let mut s = conn.prepare("SELECT key FROM _outpost_digest_key WHERE id = 0")?;
    if !s.step()? {
        return Ok(None);
    }
    let bytes = s.blob(0);
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::Internal("the stored digest key is not 32 bytes".into()))?;
    Ok(Some(DigestKey::from_bytes(key)))
}

/// The digest (as text) of the scope a stream `stream` names, under `digest_key`.
pub(crate) fn scope_of(digest_key: &DigestKey, stream: &str) -> String {
    digest_key.digest(stream).to_stream()
}

/// Keeps `keys` (an envelope's contents): the digest key when none is held, and every scope key
/// not held yet. Returns how many scope keys were new. A digest key other than the one held is
/// refused: the keys are another tenant's.
pub(crate) fn store(conn: Conn, keys: &KeySet) -> Result<usize, Error> {
    match digest_key(conn)? {
        Some(held) if held.as_bytes() != keys.digest_key.as_bytes() => {
            return Err(Error::Internal(
                "the key envelope's digest key is not this tenant's: refused".into(),
            ))
        }
        Some(_) => {}
        None => {
            let mut s = conn.prepare("INSERT INTO _outpost_digest_key(id, key) VALUES (0, ?1)")?;
            s.bind_blob(1, keys.digest_key.as_bytes())?;
            s.run()?;
        }
    }
    let count = |conn: Conn| conn.query_i64("SELECT count(*) FROM _outpost_keys", &[]);
    let before = count(conn)?.unwrap_or(0);
    let mut s =
        conn.prepare("INSERT OR IGNORE INTO _outpost_keys(scope, epoch, key) VALUES (?1, ?2, ?3)")?;
    for KeyEntry { scope, key } in &keys.entries {
        s.reset();
        s.bind_text(1, &scope.to_stream())?;
        s.bind_i64(2, i64::from(key.epoch()))?;
        s.bind_blob(3, key.as_bytes())?;
        s.run()?;
    }
    drop(s);
    Ok(usize::try_from(count(conn)?.unwrap_or(0) - before).unwrap_or(0))
}

/// The key of `epoch` for the scope whose digest text is `scope`.
pub(crate) fn key(conn: Conn, scope: &str, epoch: u32) -> Result<Option<ScopeKey>, Error> {
    let mut s = conn.prepare("SELECT key FROM _outpost_keys WHERE scope = ?1 AND epoch = ?2")?;
    s.bind_text(1, scope)?;
    s.bind_i64(2, i64::from(epoch))?;
    if !s.step()? {
        return Ok(None);
    }
    Ok(scope_key(epoch, &s.blob(0)))
}

/// The highest epoch's key held for the scope whose digest text is `scope`.
pub(crate) fn current(conn: Conn, scope: &str) -> Result<Option<ScopeKey>, Error> {
    let mut s = conn.prepare(
        "SELECT epoch, key FROM _outpost_keys WHERE scope = ?1 ORDER BY epoch DESC LIMIT 1",
    )?;
    s.bind_text(1, scope)?;
    if !s.step()? {
        return Ok(None);
    }
    let epoch = u32::try_from(s.i64(0)).unwrap_or(0);
    Ok(scope_key(epoch, &s.blob(1)))
}

/// Every scope's highest epoch held: (scope digest text, epoch), for status.
pub(crate) fn epochs(conn: Conn) -> Result<Vec<(String, u32)>, Error> {
    let mut s =
        conn.prepare("SELECT scope, max(epoch) FROM _outpost_keys GROUP BY scope ORDER BY scope")?;
    let mut out = Vec::new();
    while s.step()? {
        out.push((s.text(0), u32::try_from(s.i64(1)).unwrap_or(0)));
    }
    Ok(out)
}

fn scope_key(epoch: u32, bytes: &[u8]) -> Option<ScopeKey> {
    ScopeKey::new(epoch, bytes.try_into().ok()?)
}

/// Where the keys of wire scope id `stream` are filed (`_outpost_keys.scope`); `None` for a
/// stream that has none (a scope name sent unsealed).
fn filed_under(dk: &DigestKey, stream: &str) -> Option<String> {
    dk.key_digest(stream).map(|d| d.to_stream())
}

/// Whether this database holds the key a sealed batch with this clear header (`stream` its wire
/// id) needs (an unsealed one needs none).
pub(crate) fn can_open(conn: Conn, stream: &str, epoch: u32) -> Result<bool, Error> {
    if epoch == 0 {
        return Ok(true);
    }
    let Some(dk) = digest_key(conn)? else {
        return Ok(false);
    };
    let Some(id) = filed_under(&dk, stream) else {
        return Ok(false);
    };
    Ok(key(conn, &id, epoch)?.is_some())
}

/// A batch as received: decoded, and opened first when it is sealed.
pub(crate) struct Received {
    /// The batch; its header's stream is the wire id.
    pub(crate) batch: Batch,
    /// Its stream's scope name (`wire_scope.rs`): sealed inside a sealed batch, the header's
    /// stream otherwise.
    pub(crate) scope: String,
}

/// Decodes a batch, opening it first when it is sealed (with the key of its stream and epoch).
pub(crate) fn decode(conn: Conn, bytes: &[u8]) -> Result<Received, Error> {
    let header = codec::decode_header(bytes, &Limits::default()).map_err(ApplyError::Decode)?;
    if header.key_epoch == 0 {
        let batch = codec::decode(bytes, &Limits::default()).map_err(ApplyError::Decode)?;
        let scope = batch.header.stream.clone();
        return Ok(Received { batch, scope });
    }
    let Some(dk) = digest_key(conn)? else {
        return Err(ApplyError::Sealed(seal::SealError::NoKey {
            epoch: header.key_epoch,
        })
        .into());
    };
    let mut lookup = Ok(None);
    let opened = seal::decode_sealed(bytes, &Limits::default(), &dk, |stream, epoch| {
        lookup = match filed_under(&dk, stream) {
            Some(id) => key(conn, &id, epoch),
            None => Ok(None),
        };
        lookup.as_ref().ok().cloned().flatten()
    });
    lookup?;
    let opened = opened.map_err(ApplyError::Sealed)?;
    Ok(Received {
        batch: opened.batch,
        scope: opened.scope,
    })
}

/// `batch` (encoded, signed) sealed under the current epoch of its stream's scope and signed
/// again with `key`, when this database belongs to a sealed tenant; unchanged otherwise.
/// `Ok(None)`: sealed tenant, but no key of that scope is held yet (the stream waits).
pub(crate) fn seal_for_push(
    conn: Conn,
    batch: Vec<u8>,
    stream: &str,
    signer: Option<&outpost_protocol::handshake::Keypair>,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(dk) = digest_key(conn)? else {
        return Ok(Some(batch));
    };
    let Some(scope_key) = current(conn, &scope_of(&dk, stream))? else {
        return Ok(None);
    };
    let mut nonce = [0u8; seal::NONCE_LEN];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| Error::Internal(format!("no randomness for a sealing nonce: {e}")))?;
    let mut sealed =
        seal::seal_batch(&batch, &scope_key, &dk, nonce).map_err(ApplyError::Sealed)?;
    if let Some(signer) = signer {
        outpost_protocol::batch::signature::sign(&mut sealed, signer)
            .map_err(|e| Error::Internal(format!("signing a sealed batch: {e}")))?;
    }
    Ok(Some(sealed))
}

/// Opens the key envelopes among `keys` meant for `site` with its static `keypair` and keeps
/// their keys ([`store`]), each in a savepoint; returns how many scope keys were new. An
/// envelope that does not open is logged and skipped: a relay cannot make a device stop
/// syncing by sending garbage, and its keys come again with the next hello.
pub(crate) fn keep_envelopes(
    conn: Conn,
    site: outpost_protocol::SiteId,
    keypair: &outpost_protocol::handshake::Keypair,
    keys: &[outpost_protocol::message::SealedKeys],
) -> Result<usize, Error> {
    crate::schema::ensure(conn)?;
    let mut added = 0;
    for k in keys.iter().filter(|k| k.site == site) {
        match outpost_protocol::seal::envelope::unwrap_keys(&k.envelope.0, keypair) {
            Ok(set) => {
                conn.exec("SAVEPOINT outpost_keys")?;
                let r = store(conn, &set);
                added += crate::schema::finish_savepoint(conn, "outpost_keys", r)?;
            }
            Err(e) => log::warn!("a key envelope for this device was skipped: {e}"),
        }
    }
    Ok(added)
}

/// `outpost_status().keys`: per scope this database holds keys of, its highest epoch, under the
/// scope's name when `names` holds one whose digest it is (else the digest), `""` for the
/// unscoped stream, and whether that is the scope's current epoch as the control stream
/// publishes it (`directory`; epoch 1 when none was published).
pub(crate) fn status(
    conn: Conn,
    names: &[String],
    directory: Option<&outpost_protocol::control::Directory>,
) -> Result<serde_json::Value, Error> {
    let Some(dk) = digest_key(conn)? else {
        return Ok(serde_json::Value::Object(Default::default()));
    };
    let published: Vec<(String, u32)> = directory
        .map(|d| {
            d.epochs()
                .filter_map(|(s, e)| Some((filed_under(&dk, s)?, e)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (scope, epoch) in epochs(conn)? {
        let name = std::iter::once("")
            .chain(names.iter().map(String::as_str))
            .find(|n| scope_of(&dk, n) == scope)
            .map_or(scope.clone(), str::to_string);
        let current = published
            .iter()
            .find(|(s, _)| *s == scope)
            .map_or(1, |(_, e)| *e);
        out.insert(
            name,
            serde_json::json!({ "epoch": epoch, "current": epoch >= current }),
        );
    }
    Ok(serde_json::Value::Object(out))
}
