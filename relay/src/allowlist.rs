//! Who may talk to a serving box (the hub; the cloud keeps the same file): enrolled peers,
//! one-time enrollment tokens, handshake counters and the box's few settings, in one SQLite file
//! (`allowlist.db`, WAL, `synchronous=FULL`). A "device" here is any enrolled peer: a tablet on
//! the hub, a tablet or a hub on the cloud.
//!
//! Everything that must be true before the box answers a handshake is committed (and fsynced)
//! first: consuming a token and admitting the device happen in one transaction
//! ([`Allowlist::admit`]); a handshake counter is recorded durably before the responder's reply
//! ([`Allowlist::record_counter`]). Tokens are looked up by their id ([`token_id`]: a hash the
//! device sends in the first handshake message, so the token itself never crosses the wire). A
//! crash at any instant therefore leaves either "token unused, device unknown" or "token used,
//! device admitted", never half of it, and a replayed first handshake message is refused even
//! across restarts.
//!
//! It also remembers what each peer is known to cover when its last session ended
//! ([`Allowlist::record_vector`], [`Allowlist::peer_vector`]), so a status can say what a peer
//! still lacks; the vectors are kept in their strict text form ([`crate::vector_text`]).

use crate::vector_text::{self, VectorTextError};
use outpost_protocol::handshake::{PublicKey, TokenId};
use outpost_protocol::scope::Scopes;
use outpost_protocol::{SiteId, VersionVector};
use outpost_sql::{params, Connection, OptionalExtension, TransactionBehavior};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

// Version 2 records each peer's role (a device, or a hub that relays other origins); version 3
// the grant each code carries and each peer was admitted with (scopes, `*` for all; the `enroll`
// flag). A version-2 file is widened in place (its codes and peers grant everything).
const SCHEMA_VERSION: i64 = 3;
const WIDEN_2_TO_3: &str = "
ALTER TABLE devices ADD COLUMN scopes TEXT NOT NULL DEFAULT '*';
ALTER TABLE devices ADD COLUMN enroll INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '*';
ALTER TABLE tokens ADD COLUMN enroll INTEGER NOT NULL DEFAULT 0;
";
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices(
    key BLOB PRIMARY KEY,
    site BLOB NOT NULL UNIQUE CHECK (length(site) = 16),
    role TEXT NOT NULL CHECK (role IN ('device', 'hub')),
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER,
    revoked_at INTEGER,
    scopes TEXT NOT NULL DEFAULT '*',
    enroll INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens(
    id BLOB PRIMARY KEY CHECK (length(id) = 16),
    token BLOB NOT NULL UNIQUE CHECK (length(token) = 32),
    role TEXT NOT NULL CHECK (role IN ('device', 'hub')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    used_by BLOB,
    scopes TEXT NOT NULL DEFAULT '*',
    enroll INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS handshake_counters(
    key BLOB PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings(
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// The id naming a token in the first handshake message: the protocol's
/// [`TokenId::of`] (the first 16 bytes of SHA-256(`outpost-enroll-token` ‖ token)).
pub fn token_id(token: &[u8; 32]) -> [u8; 16] {
    TokenId::of(token).0
}

/// How long an enrollment token is valid by default: 15 minutes.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 15 * 60;

/// What an enrolled peer is, fixed by the enrolment code it used: it decides which batches the
/// peer may push (a device only its own origin's; a hub those of the devices behind it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// An app's database: pushes only its own changes.
    Device,
    /// A clinic hub enrolled with the cloud: relays other origins' batches.
    Hub,
}

impl Role {
    /// `device` or `hub`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Hub => "hub",
        }
    }

    fn from_stored(s: &str) -> Option<Role> {
        match s {
            "device" => Some(Role::Device),
            "hub" => Some(Role::Hub),
            _ => None,
        }
    }
}

/// One enrolled device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its static public key (the Noise `s` it authenticates with).
    pub key: PublicKey,
    /// Its site id, bound to that key.
    pub site: SiteId,
    /// What it enrolled as.
    pub role: Role,
    /// Unix seconds.
    pub enrolled_at: u64,
    /// Unix seconds of its last session, if any.
    pub last_seen: Option<u64>,
    /// Unix seconds of its revocation, if revoked.
    pub revoked_at: Option<u64>,
    /// What it was granted (by its code, or by `grant` since).
    pub grant: PeerGrant,
}

/// The scopes a code grants the peer that enrolls with it, and whether that peer may mint codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerGrant {
    /// Its scopes (`*`: all).
    pub scopes: Scopes,
    /// It may mint enrolment codes.
    pub enroll: bool,
}

impl Default for PeerGrant {
    /// Every scope, no `enroll`: what a code of an unscoped tenant grants.
    fn default() -> Self {
        PeerGrant {
            scopes: Scopes::All,
            enroll: false,
        }
    }
}

/// A fresh one-time enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The 32 secret bytes (the Noise pre-shared key of the enrollment handshake).
    pub secret: [u8; 32],
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why the allowlist refused or failed. Refusals change nothing stored.
#[derive(Debug)]
#[non_exhaustive]
pub enum AllowlistError {
    /// SQLite failed on the allowlist file.
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: outpost_sql::Error,
    },
    /// The store could not be reached (a cloud's allowlist in PostgreSQL: its server is down or
    /// refuses the connection); nothing was read or changed.
    Unreachable {
        /// What was tried, and why it failed.
        detail: String,
    },
    /// The file was written by an older build whose format this one does not read.
    OlderSchema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// The file was written by a newer build.
    SchemaVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// The system's random source failed.
    Random(getrandom::Error),
    /// No such enrollment token was issued by this hub.
    UnknownToken,
    /// The token was already used (tokens are single use).
    TokenUsed,
    /// The token expired.
    TokenExpired {
        /// Unix seconds it expired at.
        expired_at: u64,
    },
    /// The device's key was revoked; it cannot enroll again.
    Revoked,
    /// The site id is already bound to another key: a copied or restored database.
    SiteBoundToOtherKey {
        /// The site id.
        site: SiteId,
    },
    /// The key is not enrolled (or was revoked).
    NotEnrolled,
    /// A handshake counter did not increase: a replayed or stale handshake.
    CounterReplay {
        /// The counter received.
        got: u64,
        /// The last counter accepted from this key.
        last: u64,
    },
    /// `revoke` matched no device.
    NoSuchDevice {
        /// What was asked for.
        selector: String,
    },
    /// `revoke` matched more than one device.
    AmbiguousDevice {
        /// What was asked for.
        selector: String,
        /// How many matched.
        matches: usize,
    },
    /// A peer's recorded vector is not in its text form: the file was damaged or edited.
    DamagedVector {
        /// The file.
        path: PathBuf,
        /// The peer whose vector it is.
        site: SiteId,
        /// What is wrong with it.
        source: VectorTextError,
    },
}

impl fmt::Display for AllowlistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowlistError::Unreachable { detail } => write!(f, "allowlist: {detail}"),
            AllowlistError::Sqlite { path, source } => {
                write!(f, "allowlist {}: {source}", path.display())
            }
            AllowlistError::OlderSchema { path, found } => write!(
                f,
                "allowlist {}: made by an older version of Outpost (schema {found}, this build \
                 reads {SCHEMA_VERSION}); move the data directory aside, start again and re-enroll \
                 its devices",
                path.display()
            ),
            AllowlistError::SchemaVersion { path, found } => write!(
                f,
                "allowlist {}: schema version {found} is newer than this build ({SCHEMA_VERSION})",
                path.display()
            ),
            AllowlistError::Random(e) => write!(f, "the system's random source failed: {e}"),
            AllowlistError::UnknownToken => {
                f.write_str("this enrollment code was not issued by this hub")
            }
            AllowlistError::TokenUsed => f.write_str(
                "this enrollment code was already used; ask for a new one (outpost-hub enroll-code)",
            ),
            AllowlistError::TokenExpired { expired_at } => write!(
                f,
                "this enrollment code expired (at unix time {expired_at}); ask for a new one"
            ),
            AllowlistError::Revoked => f.write_str("this device was revoked by the hub's operator"),
            AllowlistError::SiteBoundToOtherKey { site } => write!(
                f,
                "site id {site} is already enrolled with another key: this database was copied \
                 or restored; re-enroll it as a new database"
            ),
            AllowlistError::NotEnrolled => f.write_str("this device is not enrolled with this hub"),
            AllowlistError::CounterReplay { got, last } => write!(
                f,
                "handshake counter {got} is not above the last accepted ({last}): replayed handshake"
            ),
            AllowlistError::NoSuchDevice { selector } => {
                write!(f, "no enrolled device matches {selector:?}")
            }
            AllowlistError::AmbiguousDevice { selector, matches } => write!(
                f,
                "{matches} devices match {selector:?}; give more digits of the site id"
            ),
            AllowlistError::DamagedVector { path, site, source } => write!(
                f,
                "allowlist {}: the recorded vector of {site} is damaged ({source}); its next \
                 session records it again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for AllowlistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AllowlistError::Sqlite { source, .. } => Some(source),
            AllowlistError::Random(e) => Some(e),
            AllowlistError::DamagedVector { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The allowlist file.
pub struct Allowlist {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allowlist")
            .field("path", &self.path)
            .finish()
    }
}

fn device_from_row(r: &outpost_sql::Row) -> outpost_sql::Result<Device> {
    let key: Vec<u8> = r.get(0)?;
    let site: Vec<u8> = r.get(1)?;
    Ok(Device {
        // Only keys that completed a handshake are stored, so this refuses a damaged file only.
        key: PublicKey::from_sec1(&key).map_err(|e| outpost_sql::Error::Invalid {
            column: 0,
            detail: format!("not a public key: {e}"),
        })?,
        site: SiteId::from_slice(&site).unwrap_or_default(),
        // The CHECK constraint keeps anything else out; a damaged file is refused.
        role: Role::from_stored(&r.get::<_, String>(2)?).ok_or_else(|| {
            outpost_sql::Error::Invalid {
                column: 2,
                detail: "not a role".into(),
            }
        })?,
        enrolled_at: r.get::<_, i64>(3)? as u64,
        last_seen: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        grant: PeerGrant {
            scopes: stored_scopes(&r.get::<_, String>(6)?).ok_or_else(|| {
                outpost_sql::Error::Invalid {
                    column: 6,
                    detail: "not a list of scopes".into(),
                }
            })?,
            enroll: r.get::<_, i64>(7)? != 0,
        },
    })
}

/// Scopes as stored: `*`, or names joined by commas (names never hold one).
fn stored_scopes(text: &str) -> Option<Scopes> {
    Scopes::parse(text.split(',')).ok()
}

const DEVICE_COLUMNS: &str = "key, site, role, enrolled_at, last_seen, revoked_at, scopes, enroll";

impl Allowlist {
    /// Opens (creating if needed) the allowlist at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Allowlist, AllowlistError> {
        let path = path.as_ref().to_path_buf();
        let sql = |source: rusqlite::Error| AllowlistError::Sqlite {
            path: path.clone(),
            source: source.into(),
        };
        let conn = rusqlite::Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if found > SCHEMA_VERSION {
            return Err(AllowlistError::SchemaVersion { path, found });
        }
        if found > 0 && found < 2 {
            return Err(AllowlistError::OlderSchema { path, found });
        }
        if found == 2 {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {WIDEN_2_TO_3} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sql)?;
        } else if found < SCHEMA_VERSION {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sql)?;
        }
        Ok(Allowlist {
            conn: conn.into(),
            path,
        })
    }

    /// The allowlist of a cloud whose tenant is in PostgreSQL: its tables in schema `schema` of
    /// `client`'s database (made if missing), shared by every process serving the tenant, so a
    /// token is used once whichever process admits it. `location` names it in errors (never
    /// with a password).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(
        client: postgres::Client,
        schema: &str,
        location: &str,
    ) -> Result<Allowlist, AllowlistError> {
        let path = PathBuf::from(location);
        let sql = |source| AllowlistError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::postgres(client, schema).map_err(sql)?;
        let found = conn
            .make_postgres_tables(SCHEMA, SCHEMA_VERSION)
            .map_err(sql)?;
        if found != SCHEMA_VERSION {
            return Err(AllowlistError::SchemaVersion { path, found });
        }
        Ok(Allowlist { conn, path })
    }

    fn sql(&self, source: outpost_sql::Error) -> AllowlistError {
        AllowlistError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Issues a one-time enrollment token valid for `ttl_secs` from `now` (unix seconds), for a
    /// peer that enrolls as `role`, granted everything.
    pub fn issue_token(
        &mut self,
        now: u64,
        ttl_secs: u64,
        role: Role,
    ) -> Result<Token, AllowlistError> {
        self.issue_granted_token(now, ttl_secs, role, &PeerGrant::default())
    }

    /// [`issue_token`](Allowlist::issue_token) for a peer granted `grant`.
    pub fn issue_granted_token(
        &mut self,
        now: u64,
        ttl_secs: u64,
        role: Role,
        grant: &PeerGrant,
    ) -> Result<Token, AllowlistError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(AllowlistError::Random)?;
        let token = Token {
            secret,
            expires_at: now + ttl_secs,
        };
        self.conn
            .execute(
                "INSERT INTO tokens(id, token, role, created_at, expires_at, scopes, enroll) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    token_id(&token.secret),
                    token.secret,
                    role.as_str(),
                    now as i64,
                    token.expires_at as i64,
                    grant.scopes.to_string(),
                    grant.enroll as i64
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(token)
    }

    /// Takes a two-part code's token as if this box had issued it (its admission checked by
    /// the caller: signed by a minter this box trusts, for this box, within what the minter may
    /// grant): a device of `grant`, usable until `expires_at`. A token already here (presented
    /// before, used or not) is left as it is, so an admission admits once.
    pub fn import_token(
        &mut self,
        secret: &[u8; 32],
        expires_at: u64,
        now: u64,
        grant: &PeerGrant,
    ) -> Result<(), AllowlistError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO tokens(id, token, role, created_at, expires_at, scopes, enroll) \
                 VALUES (?1, ?2, 'device', ?3, ?4, ?5, ?6)",
                params![
                    token_id(secret),
                    secret,
                    now as i64,
                    i64::try_from(expires_at).unwrap_or(i64::MAX),
                    grant.scopes.to_string(),
                    grant.enroll as i64
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The token named `id` if it could still admit a device at `now` (not used, not expired),
    /// without consuming it: the enrollment handshake's pre-shared key.
    pub fn usable_token(&self, id: &[u8; 16], now: u64) -> Result<[u8; 32], AllowlistError> {
        let row = self
            .conn
            .query_row(
                "SELECT token, expires_at, used_at FROM tokens WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        match row {
            None => Err(AllowlistError::UnknownToken),
            Some((_, _, Some(_))) => Err(AllowlistError::TokenUsed),
            Some((_, expires_at, None)) if now >= expires_at => Err(AllowlistError::TokenExpired {
                expired_at: expires_at,
            }),
            Some((token, _, None)) => <[u8; 32]>::try_from(token.as_slice()).map_err(|_| {
                self.sql(outpost_sql::Error::Invalid {
                    column: 0,
                    detail: "a token of another length than 32 bytes".into(),
                })
            }),
        }
    }

    /// Whether `(key, site)` may enroll: the key is not revoked and the site id is not bound to
    /// another key. Changes nothing.
    pub fn check_enrollment(&self, key: &[u8], site: SiteId) -> Result<(), AllowlistError> {
        check_enrollment(&self.conn, key, site)
            .map(|_| ())
            .map_err(|e| match e {
                Checked::Refused(r) => r,
                Checked::Sql(e) => self.sql(e),
            })
    }

    /// Consumes the token named `id` and admits the device `(key, site)`, in one fsynced
    /// transaction, at `now`. Re-enrolling an admitted key with a fresh token is allowed (it just
    /// uses the token); a revoked key, or a site id bound to another key, is refused and the token
    /// stays unused. Only a [`PublicKey`] is admitted, so every stored key reads back as one.
    pub fn admit(
        &mut self,
        id: &[u8; 16],
        key: &PublicKey,
        site: SiteId,
        now: u64,
    ) -> Result<Device, AllowlistError> {
        let key = &key.as_bytes()[..];
        self.usable_token(id, now)?;
        let path = self.path.clone();
        let sql = |source| AllowlistError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        // Re-check inside the write transaction: another connection may have used it meanwhile.
        type Used = (Option<i64>, String, String, i64);
        let used: Option<Used> = tx
            .query_row(
                "SELECT used_at, role, scopes, enroll FROM tokens WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(sql)?;
        let (role, scopes, enroll) = match used {
            None => return Err(AllowlistError::UnknownToken),
            Some((Some(_), ..)) => return Err(AllowlistError::TokenUsed),
            Some((None, role, scopes, enroll)) => (role, scopes, enroll),
        };
        let existing = check_enrollment(&tx, key, site).map_err(|e| match e {
            Checked::Refused(r) => r,
            Checked::Sql(e) => sql(e),
        })?;
        match existing {
            Some(_) => {
                // The same key again (perhaps with a new database, or enrolled as something
                // else): the key is what authenticates, so site and role follow the newest
                // enrollment.
                tx.execute(
                    "UPDATE devices SET site = ?2, role = ?3, scopes = ?4, enroll = ?5 \
                     WHERE key = ?1",
                    params![key, site.as_bytes(), role, scopes, enroll],
                )
                .map_err(sql)?;
            }
            None => {
                tx.execute(
                    "INSERT INTO devices(key, site, role, enrolled_at, scopes, enroll) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![key, site.as_bytes(), role, now as i64, scopes, enroll],
                )
                .map_err(sql)?;
            }
        }
        tx.execute(
            "UPDATE tokens SET used_at = ?2, used_by = ?3 WHERE id = ?1",
            params![id, now as i64, key],
        )
        .map_err(sql)?;
        let device = tx
            .query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE key = ?1"),
                [key],
                device_from_row,
            )
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(device)
    }

    /// The enrolled, unrevoked device with `key` and site id `site`. A site id bound to another
    /// key is [`AllowlistError::SiteBoundToOtherKey`]; a key enrolled with another site id is
    /// [`AllowlistError::NotEnrolled`] (that database must enroll).
    pub fn authorize_site(&self, key: &[u8], site: SiteId) -> Result<Device, AllowlistError> {
        let d = self.authorize(key);
        match d {
            Ok(d) if d.site == site => Ok(d),
            Err(AllowlistError::Revoked) => Err(AllowlistError::Revoked),
            _ => {
                let holder: Option<Vec<u8>> = self
                    .conn
                    .query_row(
                        "SELECT key FROM devices WHERE site = ?1",
                        [site.as_bytes()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| self.sql(e))?;
                match holder {
                    Some(k) if k != key => Err(AllowlistError::SiteBoundToOtherKey { site }),
                    _ => d.and(Err(AllowlistError::NotEnrolled)),
                }
            }
        }
    }

    /// The enrolled, unrevoked device with `key`, or [`AllowlistError::NotEnrolled`] /
    /// [`AllowlistError::Revoked`].
    pub fn authorize(&self, key: &[u8]) -> Result<Device, AllowlistError> {
        let d = self
            .conn
            .query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE key = ?1"),
                [key],
                device_from_row,
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .ok_or(AllowlistError::NotEnrolled)?;
        if d.revoked_at.is_some() {
            return Err(AllowlistError::Revoked);
        }
        Ok(d)
    }

    /// The highest handshake counter accepted from `key`, if any.
    pub fn last_counter(&self, key: &[u8]) -> Result<Option<u64>, AllowlistError> {
        self.conn
            .query_row(
                "SELECT last FROM handshake_counters WHERE key = ?1",
                [key],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| self.sql(e))
    }

    /// Records `counter` as the last accepted from `key`, durably, refusing (and changing
    /// nothing) if it is not above the one recorded: the check and the write are one
    /// transaction, so two connections replaying the same message cannot both pass.
    pub fn record_counter(&mut self, key: &[u8], counter: u64) -> Result<(), AllowlistError> {
        let path = self.path.clone();
        let sql = |source| AllowlistError::Sqlite {
            path: path.clone(),
            source,
        };
        let counter_i = i64::try_from(counter).map_err(|_| AllowlistError::CounterReplay {
            got: counter,
            last: i64::MAX as u64,
        })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT last FROM handshake_counters WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if let Some(last) = last {
            if counter_i <= last {
                return Err(AllowlistError::CounterReplay {
                    got: counter,
                    last: last as u64,
                });
            }
        }
        tx.execute(
            "INSERT INTO handshake_counters(key, last) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET last = excluded.last",
            params![key, counter_i],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// Records that `key` had a session at `now`.
    pub fn touch(&self, key: &[u8], now: u64) -> Result<(), AllowlistError> {
        self.conn
            .execute(
                "UPDATE devices SET last_seen = ?2 WHERE key = ?1",
                params![key, now as i64],
            )
            .map(|_| ())
            .map_err(|e| self.sql(e))
    }

    /// Every device ever enrolled, revoked ones included, by enrollment time.
    pub fn devices(&self) -> Result<Vec<Device>, AllowlistError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY enrolled_at, site"
            ))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map((), device_from_row)
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// The one peer (revoked or not) whose site id (hex) starts with `selector` (at least 4
    /// digits).
    pub fn find(&self, selector: &str) -> Result<Device, AllowlistError> {
        let wanted = selector.trim().to_ascii_lowercase();
        let mut matches: Vec<Device> = if wanted.len() >= 4 {
            self.devices()?
                .into_iter()
                .filter(|d| d.site.to_string().starts_with(&wanted))
                .collect()
        } else {
            Vec::new()
        };
        match matches.len() {
            0 => Err(AllowlistError::NoSuchDevice {
                selector: selector.to_string(),
            }),
            1 => Ok(matches.remove(0)),
            n => Err(AllowlistError::AmbiguousDevice {
                selector: selector.to_string(),
                matches: n,
            }),
        }
    }

    /// Replaces the grant of the one peer whose site id (hex) starts with `selector` (at least 4
    /// digits); returns it as it is now.
    pub fn set_grant(
        &mut self,
        selector: &str,
        grant: &PeerGrant,
    ) -> Result<Device, AllowlistError> {
        let device = self.find(selector)?;
        self.conn
            .execute(
                "UPDATE devices SET scopes = ?2, enroll = ?3 WHERE key = ?1",
                params![
                    &device.key.as_bytes()[..],
                    grant.scopes.to_string(),
                    grant.enroll as i64
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(Device {
            grant: grant.clone(),
            ..device
        })
    }

    /// Revokes the one device whose site id (hex) starts with `selector` (at least 4 digits), at
    /// `now`. Revoking a revoked device keeps the first revocation time.
    pub fn revoke(&mut self, selector: &str, now: u64) -> Result<Device, AllowlistError> {
        let device = self.find(selector)?;
        self.conn
            .execute(
                "UPDATE devices SET revoked_at = coalesce(revoked_at, ?2) WHERE key = ?1",
                params![device.key.as_bytes(), now as i64],
            )
            .map_err(|e| self.sql(e))?;
        self.conn
            .query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE key = ?1"),
                [device.key.as_bytes()],
                device_from_row,
            )
            .map_err(|e| self.sql(e))
    }

    /// A stored setting.
    pub fn setting(&self, name: &str) -> Result<Option<String>, AllowlistError> {
        self.conn
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Stores a setting.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), AllowlistError> {
        self.conn
            .execute(
                "INSERT INTO settings(name, value) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map(|_| ())
            .map_err(|e| self.sql(e))
    }

    /// Records what peer `site` is known to cover (when its session ends), replacing what was
    /// recorded before.
    pub fn record_vector(
        &self,
        site: &SiteId,
        vector: &VersionVector,
    ) -> Result<(), AllowlistError> {
        self.set_setting(&vector_setting(site), &vector_text::encode(vector))
    }

    /// What peer `site` was known to cover when its last session ended; `None` when it never
    /// completed one.
    pub fn peer_vector(&self, site: &SiteId) -> Result<Option<VersionVector>, AllowlistError> {
        let Some(text) = self.setting(&vector_setting(site))? else {
            return Ok(None);
        };
        vector_text::decode(&text)
            .map(Some)
            .map_err(|source| AllowlistError::DamagedVector {
                path: self.path.clone(),
                site: *site,
                source,
            })
    }
}

/// The setting under which a peer's vector is kept.
fn vector_setting(site: &SiteId) -> String {
    format!("vector:{site}")
}

enum Checked {
    Refused(AllowlistError),
    Sql(outpost_sql::Error),
}

/// The device already holding `key` (if any), after checking `(key, site)` may enroll.
fn check_enrollment(
    conn: &Connection,
    key: &[u8],
    site: SiteId,
) -> Result<Option<Device>, Checked> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE key = ?1 OR site = ?2"
        ))
        .map_err(Checked::Sql)?;
    let rows = stmt
        .query_map(params![key, site.as_bytes()], device_from_row)
        .map_err(Checked::Sql)?;
    let mut mine = None;
    for d in rows {
        let d = d.map_err(Checked::Sql)?;
        if d.key.as_bytes() != key {
            return Err(Checked::Refused(AllowlistError::SiteBoundToOtherKey {
                site: d.site,
            }));
        }
        if d.revoked_at.is_some() {
            return Err(Checked::Refused(AllowlistError::Revoked));
        }
        mine = Some(d);
    }
    Ok(mine)
}

#[cfg(test)]
mod tests;
