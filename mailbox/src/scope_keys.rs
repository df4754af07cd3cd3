//! A sealed tenant's keys, held by its cloud (docs/design.md section 10, "Sealed batches"): the
//! tenant's digest key, and per scope AES-256-GCM keys with epochs. The cloud generates them and
//! hands each device, in the answer to its hello, an envelope wrapped to the device's static key
//! holding every epoch of every scope its grant holds ([`Mailbox::envelope_for`]), so history
//! stays readable to a new device and a device back from weeks offline learns a new epoch
//! before it pushes. A hub's mailbox holds none of these: it relays sealed bodies it cannot read.
//!
//! - `digest_key(id = 0, key)`: present iff the tenant is sealed ([`Mailbox::seal_tenant`],
//!   written by `outpost-cloud init`).
//! - `scope_keys(scope, epoch, key, created_at)`: by the scope's wire id, its digest's text
//!   (`DigestKey::wire_scope`), as grants, streams and epochs name it everywhere in a sealed
//!   tenant; the unscoped stream's key is scope `""`. Envelopes file keys under the digest
//!   (`DigestKey::key_digest`). A scope's first key is made when it is first needed: a grant
//!   naming it, a device's own stream in it, the cloud's own write to it.
//!
//! - `key_envelopes(site, keys_hash, envelope)`: at the cloud, the last envelope made for each
//!   device with the hash of the key set it wraps, reused while that set is unchanged (a hub's
//!   hello is answered with the envelopes of every device it may serve: one ECDH each only when
//!   a device's keys changed); at a hub, the envelopes its cloud handed it, one per device,
//!   handed on unopened in the answer to that device's hello (a hub holds no key itself).
//!
//! - `scope_names(wire, name)`: at the cloud of a sealed tenant, the names it knows of the
//!   digests it states (every name it translated for a grant, and the scope sealed inside each
//!   batch its tenant opened), so its status and commands show names. Empty at a hub and in an
//!   unsealed tenant.
//!
//! The tables are created at every open (empty): a file made before them is an unsealed
//! tenant's. The keys are as secret as the tenant's rows: the file is 0600 like the rest.

use crate::error::MailboxError;
use crate::mailbox::Mailbox;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::{Hello, PeerRole, SealedKeys};
use outpost_protocol::scope::Scopes;
use outpost_protocol::seal::envelope::{wrap_keys, KeyEntry, KeySet, MAX_ENTRIES};
use outpost_protocol::seal::{DigestKey, ScopeKey};
use outpost_protocol::SiteId;
use outpost_sql::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// Created at every open.
pub(crate) const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS digest_key(
    id INTEGER PRIMARY KEY CHECK (id = 0),
    key BLOB NOT NULL CHECK (length(key) = 32)
);
CREATE TABLE IF NOT EXISTS scope_keys(
    scope TEXT NOT NULL,
    epoch INTEGER NOT NULL CHECK (epoch >= 1),
    key BLOB NOT NULL CHECK (length(key) = 32),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scope_names(
    wire TEXT PRIMARY KEY,
    name TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_envelopes(
    site BLOB PRIMARY KEY CHECK (length(site) = 16),
    keys_hash BLOB NOT NULL,
    envelope BLOB NOT NULL
) WITHOUT ROWID;
";

/// The most scopes one key set makes a first key for from a peer's hello (`Mailbox::key_set`).
pub(crate) const MAX_NEW_SCOPES_PER_SET: usize = 16;

fn random_key() -> Result<[u8; 32], MailboxError> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| MailboxError::Random {
        what: "a scope key",
        detail: e.to_string(),
    })?;
    Ok(key)
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Mailbox {
    /// `scopes` (names) as this tenant's control stream states them: by digest in a sealed
    /// tenant (`DigestKey::wire_scopes`, each name remembered: [`Mailbox::scope_name`]),
    /// unchanged otherwise.
    pub fn wire_scopes(&self, scopes: &Scopes) -> Result<Scopes, MailboxError> {
        let (Some(dk), Scopes::Only(names)) = (self.digest_key()?, scopes) else {
            return Ok(scopes.clone());
        };
        Ok(Scopes::Only(
            names
                .iter()
                .map(|n| self.remembered(&dk, n))
                .collect::<Result<_, _>>()?,
        ))
    }

    /// Scope `name`'s wire id in this tenant (`DigestKey::wire_scope`, the name remembered;
    /// the name itself when unsealed).
    pub fn wire_scope(&self, name: &str) -> Result<String, MailboxError> {
        match self.digest_key()? {
            Some(dk) => self.remembered(&dk, name),
            None => Ok(name.to_string()),
        }
    }

    /// Remembers that `wire` is scope `name` (a sealed tenant's cloud: the scope sealed inside
    /// a batch it opened). Ignored unless `wire` is `name`'s digest under this tenant's key.
    pub fn learn_scope_name(&self, wire: &str, name: &str) -> Result<(), MailboxError> {
        if let Some(dk) = self.digest_key()? {
            if dk.wire_scope(name) == wire {
                self.remembered(&dk, name)?;
            }
        }
        Ok(())
    }

    /// `name`'s wire id under `dk`, its name remembered. Grants are stated at every session and
    /// names learnt from every batch ingested: a name already known costs a read, no write.
    fn remembered(&self, dk: &DigestKey, name: &str) -> Result<String, MailboxError> {
        let wire = dk.wire_scope(name);
        if wire != name && self.scope_name(&wire)? == wire {
            self.conn
                .prepare_cached("INSERT OR IGNORE INTO scope_names(wire, name) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![wire, name]))
                .map_err(|e| self.sql(e))?;
        }
        Ok(wire)
    }

    /// The name of wire scope id `wire` when this mailbox knows it (`""`, `*` and an unsealed
    /// tenant's ids are names already); else `wire` itself.
    pub fn scope_name(&self, wire: &str) -> Result<String, MailboxError> {
        let name: Option<String> = self
            .conn
            .prepare_cached("SELECT name FROM scope_names WHERE wire = ?1")
            .and_then(|mut s| s.query_row([wire], |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))?;
        Ok(name.unwrap_or_else(|| wire.to_string()))
    }

    /// The control item stating table `name`'s settings: sealed in a sealed tenant
    /// (`seal::table`: a hub's control stream names no table or column), clear otherwise.
    pub fn table_item(
        &self,
        name: &str,
        direction: outpost_protocol::batch::Direction,
        scope: Option<outpost_protocol::scope::ScopeRule>,
    ) -> Result<outpost_protocol::control::ControlItem, MailboxError> {
        let item = outpost_protocol::control::table_item(name, direction, scope);
        let (Some(dk), outpost_protocol::control::ControlItem::Table(entry)) =
            (self.digest_key()?, &item)
        else {
            return Ok(item);
        };
        let mut nonce = [0u8; outpost_protocol::seal::NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| MailboxError::Random {
            what: "a table settings nonce",
            detail: e.to_string(),
        })?;
        Ok(outpost_protocol::control::ControlItem::SealedTable(
            outpost_protocol::message::Bytes(outpost_protocol::seal::table::seal_table(
                &dk, entry, nonce,
            )),
        ))
    }

    /// Makes this the mailbox of a sealed tenant: writes a new digest key unless one is held.
    /// Returns whether it wrote one.
    pub fn seal_tenant(&mut self) -> Result<bool, MailboxError> {
        if self.digest_key()?.is_some() {
            return Ok(false);
        }
        let key = random_key()?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO digest_key(id, key) VALUES (0, ?1)",
                [key.as_slice()],
            )
            .map_err(|e| self.sql(e))?;
        Ok(true)
    }

    /// The tenant's digest key: `Some` iff the tenant is sealed.
    pub fn digest_key(&self) -> Result<Option<DigestKey>, MailboxError> {
        let key: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT key FROM digest_key WHERE id = 0", (), |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(key
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .map(DigestKey::from_bytes))
    }

    /// The key of `scope` (a wire id, `""` for the unscoped stream) of `epoch`.
    pub fn scope_key_at(&self, scope: &str, epoch: u32) -> Result<Option<ScopeKey>, MailboxError> {
        let key: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT key FROM scope_keys WHERE scope = ?1 AND epoch = ?2",
                params![scope, epoch],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(key.and_then(|k| ScopeKey::new(epoch, k.as_slice().try_into().ok()?)))
    }

    /// The current (highest) epoch's key of `scope` in a sealed tenant, made (epoch 1) when the
    /// scope has none yet; `None` in an unsealed tenant.
    pub fn scope_key(&mut self, scope: &str) -> Result<Option<ScopeKey>, MailboxError> {
        if self.digest_key()?.is_none() {
            return Ok(None);
        }
        if let Some(key) = self.current_key(scope)? {
            return Ok(Some(key));
        }
        let key = random_key()?;
        // Two connections making a scope's first key at once keep the first written.
        self.conn
            .execute(
                "INSERT OR IGNORE INTO scope_keys(scope, epoch, key, created_at) \
                 VALUES (?1, 1, ?2, ?3)",
                params![scope, key.as_slice(), now_s()],
            )
            .map_err(|e| self.sql(e))?;
        self.current_key(scope)
    }

    fn current_key(&self, scope: &str) -> Result<Option<ScopeKey>, MailboxError> {
        let row: Option<(u32, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT epoch, key FROM scope_keys WHERE scope = ?1 ORDER BY epoch DESC LIMIT 1",
                [scope],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(row.and_then(|(epoch, k)| ScopeKey::new(epoch, k.as_slice().try_into().ok()?)))
    }

    /// Starts a new epoch of `scope`'s key (a revocation, or the scope removed from a grant):
    /// later pushes are sealed under it. Returns the new epoch (0 in an unsealed tenant).
    pub fn rotate_scope_key(&mut self, scope: &str) -> Result<u32, MailboxError> {
        if self.digest_key()?.is_none() {
            return Ok(0);
        }
        let key = random_key()?;
        self.conn
            .execute(
                "INSERT INTO scope_keys(scope, epoch, key, created_at) VALUES (?1, \
                 coalesce((SELECT max(epoch) FROM scope_keys WHERE scope = ?1), 0) + 1, ?2, ?3)",
                params![scope, key.as_slice(), now_s()],
            )
            .map_err(|e| self.sql(e))?;
        Ok(self.current_key(scope)?.map_or(0, |k| k.epoch()))
    }

    /// Every scope's current epoch: (scope name, epoch), by name.
    pub fn scope_key_epochs(&self) -> Result<Vec<(String, u32)>, MailboxError> {
        let mut stmt = self
            .conn
            .prepare("SELECT scope, max(epoch) FROM scope_keys GROUP BY scope ORDER BY scope")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Every epoch of the unscoped stream's key and of each scope `grant` holds (`*`: every
    /// scope with a key), plus `also` (scopes the grant holds that need a key now, named by a
    /// peer: at most 16 of them get a first key per call), each made
    /// when it has none yet; at most [`MAX_ENTRIES`] keys, the newest epochs first kept.
    /// `None` in an unsealed tenant.
    pub fn key_set(
        &mut self,
        grant: &Scopes,
        also: &[String],
    ) -> Result<Option<KeySet>, MailboxError> {
        let Some(digest_key) = self.digest_key()? else {
            return Ok(None);
        };
        let mut scopes: BTreeSet<String> = BTreeSet::from([String::new()]);
        match grant {
            Scopes::All => scopes.extend(self.scope_key_epochs()?.into_iter().map(|(s, _)| s)),
            Scopes::Only(names) => scopes.extend(names.iter().cloned()),
        }
        // `also` comes from a peer's hello (the own streams its vector names): a scope with no
        // key yet gets one only for the first few, so a stolen `*` tablet naming thousands of
        // streams makes a handful of keys per session, not thousands.
        let held: BTreeSet<String> = self
            .scope_key_epochs()?
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        // Only scope ids this tenant states (digests): a name sent in clear has no key.
        let also: Vec<&String> = also
            .iter()
            .filter(|s| digest_key.key_digest(s).is_some())
            .collect();
        let new_scopes = also
            .iter()
            .copied()
            .filter(|s| grant.contains(s) && !held.contains(*s) && !scopes.contains(*s))
            .take(MAX_NEW_SCOPES_PER_SET)
            .cloned()
            .collect::<Vec<_>>();
        scopes.extend(
            also.iter()
                .copied()
                .filter(|s| grant.contains(s) && held.contains(*s))
                .cloned(),
        );
        scopes.extend(new_scopes);
        let mut entries = Vec::new();
        for scope in &scopes {
            self.scope_key(scope)?;
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT epoch, key FROM scope_keys WHERE scope = ?1 ORDER BY epoch DESC",
                )
                .map_err(|e| self.sql(e))?;
            let rows = stmt
                .query_map([scope], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(|e| self.sql(e))?;
            let Some(digest) = digest_key.key_digest(scope) else {
                continue;
            };
            for row in rows {
                let (epoch, key) = row.map_err(|e| self.sql(e))?;
                if let Some(key) = key
                    .as_slice()
                    .try_into()
                    .ok()
                    .and_then(|k| ScopeKey::new(epoch, k))
                {
                    entries.push(KeyEntry { scope: digest, key });
                }
            }
        }
        if entries.len() > MAX_ENTRIES {
            log::warn!(
                "mailbox={} a key set of {} keys: only the newest {MAX_ENTRIES} fit an envelope",
                self.path().display(),
                entries.len()
            );
            entries.sort_by_key(|e| std::cmp::Reverse(e.key.epoch()));
            entries.truncate(MAX_ENTRIES);
        }
        Ok(Some(KeySet {
            digest_key,
            entries,
        }))
    }

    /// The envelopes answering `hello` (see the module doc): at the cloud, a device's own, or
    /// for a hub every device's; at a hub, the one its cloud handed it for the device. Nothing for an unsealed
    /// tenant, a revoked key, or a site no entry binds.
    pub fn envelope_for(&mut self, hello: &Hello) -> Result<Vec<SealedKeys>, MailboxError> {
        if self.digest_key()?.is_none() {
            if hello.role != PeerRole::Device {
                return Ok(Vec::new());
            }
            return self.relayed_envelope(&hello.site);
        }
        let site: SiteId = hello.site;
        match hello.role {
            PeerRole::Device => {
                let own: Vec<String> = hello
                    .vector
                    .iter()
                    .filter(|(s, _)| s.origin == site && !s.scope.is_empty())
                    .map(|(s, _)| s.scope.clone())
                    .collect();
                Ok(self.device_envelope(&site, &own)?.into_iter().collect())
            }
            PeerRole::Hub => {
                // Every device holds the unscoped stream, and a tablet may sync at any clinic's
                // hub: a hub gets every device's envelope (each opens for its device only).
                let mut sites: Vec<SiteId> = self
                    .bindings()?
                    .into_iter()
                    .filter(|(_, b)| b.role == PeerRole::Device && !b.revoked)
                    .map(|(s, _)| s)
                    .collect();
                let max = outpost_protocol::message::MAX_HELLO_KEYS;
                if sites.len() > max {
                    log::warn!(
                        "mailbox={} {} devices: the envelopes of the first {max} go in hub \
                         {site}'s hello",
                        self.path().display(),
                        sites.len(),
                    );
                    sites.truncate(max);
                }
                let mut out = Vec::with_capacity(sites.len());
                for s in sites {
                    out.extend(self.device_envelope(&s, &[])?);
                }
                Ok(out)
            }
            PeerRole::Cloud => Ok(Vec::new()),
        }
    }

    /// Every site the directory binds, with its binding.
    fn bindings(
        &mut self,
    ) -> Result<Vec<(SiteId, outpost_protocol::control::Binding)>, MailboxError> {
        Ok(self
            .directory()?
            .bindings()
            .map(|(s, b)| (*s, *b))
            .collect())
    }

    /// At the cloud: `site`'s envelope (its grant's keys, and those of `own` scopes it wrote
    /// into), made again only when its key set changed since the last one.
    fn device_envelope(
        &mut self,
        site: &SiteId,
        own: &[String],
    ) -> Result<Option<SealedKeys>, MailboxError> {
        let directory = self.directory()?;
        let Some(binding) = directory.binding(site).filter(|b| !b.revoked) else {
            return Ok(None);
        };
        let recipient = binding.key;
        let grant = directory
            .grant_of(site)
            .map_or(Scopes::All, |g| g.scopes.clone());
        let Some(set) = self.key_set(&grant, own)? else {
            return Ok(None);
        };
        let hash = keys_hash(&set, &recipient);
        let cached: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT keys_hash, envelope FROM key_envelopes WHERE site = ?1",
                [site.as_bytes().as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let envelope = match cached {
            Some((h, envelope)) if h == hash => envelope,
            _ => {
                let ephemeral = Keypair::generate().map_err(|e| MailboxError::Random {
                    what: "an envelope's ephemeral key",
                    detail: e.to_string(),
                })?;
                let envelope =
                    wrap_keys(&set, &recipient, ephemeral).map_err(|e| MailboxError::Random {
                        what: "a key envelope",
                        detail: e.to_string(),
                    })?;
                self.conn
                    .execute(
                        "INSERT INTO key_envelopes(site, keys_hash, envelope) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(site) DO UPDATE SET keys_hash = excluded.keys_hash, \
                         envelope = excluded.envelope",
                        params![site.as_bytes().as_slice(), hash, envelope],
                    )
                    .map_err(|e| self.sql(e))?;
                envelope
            }
        };
        Ok(Some(SealedKeys {
            site: *site,
            envelope: outpost_protocol::message::Bytes(envelope),
        }))
    }

    /// At a hub: the envelope its cloud handed it for `site`, if any.
    fn relayed_envelope(&self, site: &SiteId) -> Result<Vec<SealedKeys>, MailboxError> {
        let envelope: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT envelope FROM key_envelopes WHERE site = ?1",
                [site.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(envelope
            .map(|e| SealedKeys {
                site: *site,
                envelope: outpost_protocol::message::Bytes(e),
            })
            .into_iter()
            .collect())
    }

    /// At a hub: keeps the envelopes its cloud's hello carried, one per device (a newer one
    /// replaces the older), to hand on unopened (see the module doc). Envelopes for this box's
    /// own site are not kept: a hub holds no key. Returns how many were kept.
    pub fn keep_envelopes(
        &mut self,
        keys: &[SealedKeys],
        own: &SiteId,
    ) -> Result<usize, MailboxError> {
        let path = self.path().to_path_buf();
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut kept = 0;
        {
            let mut s = tx
                .prepare_cached(
                    "INSERT INTO key_envelopes(site, keys_hash, envelope) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(site) DO UPDATE SET keys_hash = excluded.keys_hash, \
                     envelope = excluded.envelope",
                )
                .map_err(sql)?;
            for k in keys.iter().filter(|k| k.site != *own) {
                let hash: [u8; 32] = Sha256::digest(&k.envelope.0).into();
                s.execute(params![
                    k.site.as_bytes().as_slice(),
                    hash.as_slice(),
                    k.envelope.0
                ])
                .map_err(sql)?;
                kept += 1;
            }
        }
        tx.commit().map_err(sql)?;
        Ok(kept)
    }

    /// How many devices' envelopes this box holds (a hub's status).
    pub fn envelopes_held(&self) -> Result<u64, MailboxError> {
        self.conn
            .query_row("SELECT count(*) FROM key_envelopes", (), |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.sql(e))
    }
}

/// What an envelope for `recipient` wraps, as one hash: the same set for the same key makes the
/// same hash, so an unchanged set reuses its envelope.
fn keys_hash(set: &KeySet, recipient: &outpost_protocol::handshake::PublicKey) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"outpost key set v1\n");
    h.update(recipient.as_bytes());
    h.update(set.digest_key.as_bytes());
    let mut entries: Vec<_> = set
        .entries
        .iter()
        .map(|e| (e.scope.0, e.key.epoch(), *e.key.as_bytes()))
        .collect();
    entries.sort();
    for (scope, epoch, key) in entries {
        h.update(scope);
        h.update(epoch.to_be_bytes());
        h.update(key);
    }
    h.finalize().to_vec()
}
