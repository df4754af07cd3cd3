//! The device's identity: a static P-256 key bound to the database's site id, and the persisted
//! handshake counter.
//!
//! **Where the key lives.** In a file next to the database, `<db path>-outpost.key` (like SQLite's
//! own `-wal` and `-journal` files), created on first need with mode 0600, written to a temporary
//! file, fsynced and hard-linked into place (so two connections racing to create it end up with
//! one key), and refused when group or others can read it. It is never stored in the database,
//! so it is never in a batch, a backup of the database file, or a log. Layout (52 bytes):
//! `OPK1` ‖ site id (16) ‖ secret scalar (32). The site id binds the key to its database: a key
//! file that belongs to another database is refused instead of used.
//!
//! A copied database file arrives without its key file (or meets another one): it gets a new
//! key for a site id the hub already bound to the original key, and the hub refuses it with
//! "re-enroll" (docs/design.md section 3), which is what must happen: two databases writing under one
//! site id would reuse `(site, seq)` and lose writes.
//!
//! **In-memory and temporary databases** have no path: their key is kept in this process's
//! memory, keyed by the site id, and dies with the process, as the database does.
//!
//! **The handshake counter** is a row of `_outpost_identity`, bumped and committed in its own
//! transaction before message 1 is sent: `max(last + 1, unix ms)`. Strictly increasing whatever
//! the clock says; the wall-clock floor lets a database restored from an older copy (with its key
//! file) get past the counters its later self already used.

use crate::error::{Error, KeyFileProblem, SyncError};
use crate::ffi::Conn;
use outpost_protocol::handshake::{Keypair, SECRET_KEY_LEN};
use outpost_protocol::{SiteId, Value};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 4] = b"OPK1";
const FILE_LEN: usize = 4 + 16 + SECRET_KEY_LEN;

/// This database's key, and where it is kept.
pub(crate) struct Identity {
    pub keypair: Keypair,
    pub site: SiteId,
    /// `None` for an in-memory database.
    pub key_file: Option<PathBuf>,
}

/// Keys of databases without a file, by site id.
static MEMORY_KEYS: Mutex<Option<HashMap<SiteId, Keypair>>> = Mutex::new(None);

/// The main database's file, `None` for an in-memory or temporary database.
pub(crate) fn db_path(conn: Conn) -> Result<Option<PathBuf>, SyncError> {
    let mut s = conn.prepare("SELECT file FROM pragma_database_list WHERE name = 'main'")?;
    if s.step()? {
        let file = s.text(0);
        if !file.is_empty() {
            return Ok(Some(PathBuf::from(file)));
        }
    }
    Ok(None)
}

/// The key file of the database at `db`.
pub(crate) fn key_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-outpost.key");
    PathBuf::from(p)
}

/// Loads this database's key, creating it on first need.
pub(crate) fn load_or_create(conn: Conn, site: SiteId) -> Result<Identity, SyncError> {
    let Some(db) = db_path(conn)? else {
        let mut g = MEMORY_KEYS
            .lock()
            .map_err(|_| SyncError::Engine(Error::Internal("device key store poisoned".into())))?;
        let keys = g.get_or_insert_with(HashMap::new);
        let keypair = match keys.get(&site) {
            Some(k) => k.clone(),
            None => {
                let k = generate()?;
                keys.insert(site, k.clone());
                k
            }
        };
        return Ok(Identity {
            keypair,
            site,
            key_file: None,
        });
    };
    let path = key_path(&db);
    let keypair = match read(&path, site)? {
        Some(k) => k,
        None => create(&path, site)?,
    };
    Ok(Identity {
        keypair,
        site,
        key_file: Some(path),
    })
}

/// This database's key when it has one (its key file, or for a database without a file the
/// process's key), without creating it: what `outpost_changes` signs with. A database that was
/// never enrolled nor synced has none, and exports unsigned batches (a standalone pair).
pub(crate) fn existing(conn: Conn, site: SiteId) -> Result<Option<Keypair>, SyncError> {
    match db_path(conn)? {
        Some(db) => read(&key_path(&db), site),
        None => {
            let g = MEMORY_KEYS.lock().map_err(|_| {
                SyncError::Engine(Error::Internal("device key store poisoned".into()))
            })?;
            Ok(g.as_ref().and_then(|keys| keys.get(&site).cloned()))
        }
    }
}

fn generate() -> Result<Keypair, SyncError> {
    Keypair::generate()
        .map_err(|e| SyncError::Engine(Error::Internal(format!("no device key: {e}"))))
}

fn key_err(path: &Path, problem: KeyFileProblem) -> SyncError {
    SyncError::KeyFile {
        path: path.to_path_buf(),
        problem,
    }
}

/// The key in `path`, `None` if there is no file.
fn read(path: &Path, site: SiteId) -> Result<Option<Keypair>, SyncError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(key_err(path, KeyFileProblem::Read(e))),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(key_err(path, KeyFileProblem::Readable));
    }
    let bytes = std::fs::read(path).map_err(|e| key_err(path, KeyFileProblem::Read(e)))?;
    if bytes.len() != FILE_LEN || &bytes[..4] != MAGIC {
        return Err(key_err(path, KeyFileProblem::NotAKey));
    }
    let owner = SiteId::from_slice(&bytes[4..20]).unwrap_or_default();
    if owner != site {
        return Err(key_err(path, KeyFileProblem::OtherDatabase { owner, site }));
    }
    let mut secret = [0u8; SECRET_KEY_LEN];
    secret.copy_from_slice(&bytes[20..]);
    Keypair::from_secret(&secret)
        .map(Some)
        .map_err(|e| key_err(path, KeyFileProblem::Invalid(e)))
}

/// Creates the key file atomically; if another connection created it first, uses theirs.
fn create(path: &Path, site: SiteId) -> Result<Keypair, SyncError> {
    let keypair = generate()?;
    let mut bytes = Vec::with_capacity(FILE_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(site.as_bytes());
    bytes.extend_from_slice(keypair.secret_bytes());
    let mut tmp = path.as_os_str().to_owned();
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).map_err(|e| key_err(path, KeyFileProblem::Randomness(e)))?;
    tmp.push(format!(".tmp-{}", hex::encode(nonce)));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(keypair)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path, site)?.ok_or_else(|| key_err(path, KeyFileProblem::Vanished))
        }
        Err(e) => Err(key_err(path, KeyFileProblem::Create(e))),
    }
}

/// Creates the sync bookkeeping tables if missing.
pub(crate) fn ensure_tables(conn: Conn) -> Result<(), SyncError> {
    conn.exec(super::peers::TABLES)?;
    conn.exec(super::control::TABLES)?;
    Ok(())
}

/// Takes the next handshake counter and commits it before returning (the caller sends message 1
/// only afterwards). Must run outside a transaction.
pub(crate) fn next_counter(conn: Conn) -> Result<u64, SyncError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    conn.exec("SAVEPOINT outpost_counter")?;
    let r = (|| {
        let last = conn
            .query_i64(
                "SELECT v FROM _outpost_identity WHERE k = 'handshake_counter'",
                &[],
            )?
            .unwrap_or(0) as u64;
        let next = (last + 1).max(now_ms);
        let mut s = conn.prepare(
            "INSERT INTO _outpost_identity(k, v) VALUES ('handshake_counter', ?1) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        )?;
        s.bind(1, &Value::Integer(next as i64))?;
        s.run()?;
        Ok(next)
    })();
    Ok(crate::schema::finish_savepoint(conn, "outpost_counter", r)?)
}
