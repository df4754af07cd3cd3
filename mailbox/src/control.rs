//! The control streams a mailbox holds (docs/design.md section 10): every accepted entry, as the
//! bytes its writer signed, in `control_entries(writer, seq, bytes)`, and the key directory they
//! make with the roots the mailbox's owner gives it ([`ControlOwner`]).
//!
//! **What is stored.** Only entries the directory accepted (signed by a writer it knows, each
//! following its writer's last one): a peer cannot make the mailbox keep anything no trusted
//! writer signed. Refused entries are logged with the reason and dropped; their writer's stream
//! brings them again. The box's own entries ([`Mailbox::append_control`]) are numbered after its
//! own stream's last stored entry and signed with its key, in one transaction.
//!
//! **The directory in memory.** Loaded from the stored entries and rebuilt when they change:
//! each use checks SQLite's `data_version` (another connection or process committed) and then
//! the number of stored entries, and admits only the rows above what it holds, so a hub's commit
//! of batches costs one pragma and an unchanged table one count. Each connection keeps its own
//! copy (connections are pooled per thread; the operator's `revoke` runs in another process); a
//! new connection starts from the fullest copy this process holds for the same file and roots,
//! so it verifies only what that copy lacks (a relay's extra connection under load would
//! otherwise verify every stored entry again, about 0.25 ms each).
//!
//! **Bounds.** One call of [`Mailbox::control_received`] takes at most
//! [`outpost_protocol::control::MAX_ENTRIES_PER_MESSAGE`] entries (what one `Control` message
//! may carry; more are dropped unread) of at most [`outpost_protocol::control::MAX_ENTRY_BYTES`]
//! each, so decoding is bounded by 512 KiB per message; the directory verifies a signature only
//! for an entry that is next in a known writer's stream, so garbage, replays and entries of
//! unknown writers cost a decode and no signature check. The relay bounds the messages per
//! session (`outpost_relay`).

use crate::error::MailboxError;
use crate::mailbox::Mailbox;
use outpost_protocol::control::{
    decode_entry, encode_entry, ControlEntry, ControlItem, Directory, GrantEntry, Root,
    MAX_ENTRIES_PER_MESSAGE,
};
use outpost_protocol::handshake::{Keypair, PublicKey};
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_protocol::{ControlVector, SiteId};
use outpost_sql::{params, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The table, created on every open: version 5 files made before it existed gain it empty.
pub(crate) const CONTROL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS control_entries(
    writer BLOB NOT NULL CHECK (length(writer) = 16),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    bytes BLOB NOT NULL,
    PRIMARY KEY (writer, seq)
) WITHOUT ROWID;
";

/// Who a mailbox's control streams answer to: the box that owns the file.
#[derive(Clone, Debug)]
pub struct ControlOwner {
    /// The box's site id: the writer of its own stream.
    pub site: SiteId,
    /// Its static key pair: signs its own entries.
    pub keypair: Keypair,
    /// The keys it trusts from its own enrolment (itself; a hub also the cloud it uplinks to).
    pub roots: Vec<Root>,
    /// The cloud: after admitting a hub's entries, certify in its own stream each device they
    /// bind that it has not certified yet (its entry then beats the hub's).
    pub recertify: bool,
}

impl PartialEq for ControlOwner {
    fn eq(&self, other: &ControlOwner) -> bool {
        self.site == other.site
            && self.keypair.public() == other.keypair.public()
            && self.roots == other.roots
            && self.recertify == other.recertify
    }
}

/// What [`Mailbox::control_received`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlReport {
    /// Entries accepted and stored.
    pub accepted: usize,
    /// Entries already held (skipped).
    pub known: usize,
    /// Entries refused, each described with why (writer, seq, reason).
    pub refused: Vec<String>,
    /// Entries this box wrote in its own stream in answer (the cloud's re-certifications).
    pub written: usize,
}

/// The directory one connection holds, and what it was loaded from.
#[derive(Debug, Default)]
pub(crate) struct ControlCache {
    owner: Option<ControlOwner>,
    directory: Directory,
    /// `PRAGMA data_version` and the stored entry count when last loaded.
    loaded: Option<(i64, i64)>,
    /// How many of the directory's voided ranges `voids` was brought up to (`voids.rs`).
    pub(crate) voids_synced: usize,
    /// How many entries of its own stream the owner saw stored before
    /// ([`Mailbox::set_control_floor`]).
    floor: u64,
}

impl Mailbox {
    /// Sets who owns this mailbox's control streams (its roots and signing key). Without an
    /// owner the directory has no roots, accepts nothing and knows no key.
    pub fn set_control_owner(&mut self, owner: ControlOwner) {
        if self.control.owner.as_ref() != Some(&owner) {
            self.control = ControlCache {
                directory: Directory::new(owner.roots.iter().copied()),
                owner: Some(owner),
                loaded: None,
                voids_synced: 0,
                floor: self.control.floor,
            };
        }
    }

    /// The owner set with [`Mailbox::set_control_owner`].
    pub fn control_owner(&self) -> Option<&ControlOwner> {
        self.control.owner.as_ref()
    }

    /// The key directory, brought up to date with the stored entries.
    pub fn directory(&mut self) -> Result<&Directory, MailboxError> {
        self.refresh_directory()?;
        Ok(&self.control.directory)
    }

    /// The key `site` signs with, if the directory knows it (revoked or not).
    pub fn key_of(&mut self, site: &SiteId) -> Result<Option<PublicKey>, MailboxError> {
        Ok(self.directory()?.key_of(site))
    }

    /// The control streams held: each writer's last accepted entry.
    pub fn control_vector(&mut self) -> Result<ControlVector, MailboxError> {
        Ok(self.directory()?.vector())
    }

    /// The stored bytes of the accepted entries a peer with control vector `peer` lacks, each
    /// writer's in seq order.
    pub fn control_for(&mut self, peer: &ControlVector) -> Result<Vec<Vec<u8>>, MailboxError> {
        let mine = self.directory()?.vector();
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT bytes FROM control_entries WHERE writer = ?1 AND seq > ?2 AND seq <= ?3 \
                 ORDER BY seq",
            )
            .map_err(|e| self.sql(e))?;
        for (writer, &have) in mine.iter() {
            let theirs = peer.get(writer);
            if theirs >= have {
                continue;
            }
            let rows = stmt
                .query_map(
                    params![writer.as_bytes(), clamp(theirs), clamp(have)],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .map_err(|e| self.sql(e))?;
            for row in rows {
                out.push(row.map_err(|e| self.sql(e))?);
            }
        }
        Ok(out)
    }

    /// Takes control entries a peer sent: decodes each, admits what the directory accepts and
    /// stores those in one transaction, logs the refused ones with the reason. Never fails for a
    /// refused entry (only for the file). The cloud ([`ControlOwner::recertify`]) then writes its
    /// own entry for each device a hub's accepted entries bind that it has not certified yet.
    pub fn control_received(
        &mut self,
        entries: Vec<Vec<u8>>,
    ) -> Result<ControlReport, MailboxError> {
        let mut report = ControlReport::default();
        if entries.len() > MAX_ENTRIES_PER_MESSAGE {
            log::warn!(
                "mailbox={} control: {} entries in one message, only the first {MAX_ENTRIES_PER_MESSAGE} read",
                self.path().display(),
                entries.len()
            );
        }
        let mut decoded = Vec::new();
        // Each entry with the bytes it came as: two different entries may claim the same
        // (writer, seq) (one forged), and only the accepted one's bytes may be stored.
        let mut raw: BTreeMap<(SiteId, u64), Arrived> = BTreeMap::new();
        for bytes in entries.into_iter().take(MAX_ENTRIES_PER_MESSAGE) {
            match decode_entry(&bytes) {
                Ok(e) => {
                    raw.entry((e.writer, e.seq))
                        .or_default()
                        .push((e.clone(), bytes));
                    decoded.push(e);
                }
                Err(why) => report
                    .refused
                    .push(format!("an entry that does not decode: {why}")),
            }
        }
        let decoded_count = decoded.len();
        self.refresh_directory()?;
        let before = self.control.directory.vector();
        let refused = self.control.directory.admit(decoded);
        let after = self.control.directory.vector();
        for (e, why) in &refused {
            report
                .refused
                .push(format!("entry {} of writer {}: {why}", e.seq, e.writer));
        }
        // The entries now accepted: every writer's seqs between its old and new last, each
        // stored as the bytes of exactly the entry the directory took.
        let mut accepted = Vec::new();
        for (writer, &last) in after.iter() {
            let taken = self
                .control
                .directory
                .entries_after(writer, before.get(writer));
            for e in taken.iter().take((last - before.get(writer)) as usize) {
                let bytes = raw
                    .get(&(e.writer, e.seq))
                    .and_then(|c| c.iter().find(|(d, _)| d == e))
                    .map(|(_, b)| b.clone());
                if let Some(bytes) = bytes {
                    accepted.push((e.writer, e.seq, bytes));
                }
            }
        }
        report.accepted = accepted.len();
        report.known = decoded_count.saturating_sub(accepted.len() + refused.len());
        if !accepted.is_empty() {
            self.store_entries(&accepted)?;
            self.sync_voids()?;
        }
        for why in report.refused.iter().take(8) {
            log::warn!("mailbox={} control: refused {why}", self.path().display());
        }
        if report.refused.len() > 8 {
            log::warn!(
                "mailbox={} control: {} more entries refused",
                self.path().display(),
                report.refused.len() - 8
            );
        }
        if report.accepted > 0 {
            log::info!(
                "mailbox={} control: {} entries accepted",
                self.path().display(),
                report.accepted
            );
            report.written = self.recertify()?;
        }
        Ok(report)
    }

    /// Appends `item` to this box's own stream: numbered after the last stored entry of its
    /// stream, signed with its key, stored in one transaction. Returns the seq. Fails with
    /// [`MailboxError::NoControlOwner`] when no owner was set.
    pub fn append_control(&mut self, item: &ControlItem) -> Result<u64, MailboxError> {
        let seqs = self.append_own(|_| vec![item.clone()])?;
        Ok(seqs[0])
    }

    /// Appends `item` to this box's own stream unless `held(directory)` says the directory
    /// states it already, decided inside the write transaction: two processes serving one
    /// mailbox that both decide to write the same statement write it once. Returns the seq, if
    /// one was written.
    pub fn append_control_unless(
        &mut self,
        item: &ControlItem,
        held: impl Fn(&Directory) -> bool,
    ) -> Result<Option<u64>, MailboxError> {
        let seqs = self.append_own(|d| {
            if held(d) {
                Vec::new()
            } else {
                vec![item.clone()]
            }
        })?;
        Ok(seqs.first().copied())
    }

    /// Appends the items `wanted(directory)` returns to this box's own stream, numbered after
    /// its last stored entry, all in one transaction; `wanted` is decided inside it (so two
    /// connections certifying the same peer at once write one entry). Returns the new seqs.
    fn append_own(
        &mut self,
        wanted: impl Fn(&Directory) -> Vec<ControlItem>,
    ) -> Result<Vec<u64>, MailboxError> {
        let Some(owner) = self.control.owner.clone() else {
            return Err(MailboxError::NoControlOwner {
                path: self.path().to_path_buf(),
            });
        };
        // A plain BEGIN IMMEDIATE (not a rusqlite transaction borrowing the connection), so
        // the directory can be refreshed inside it: other writers wait until COMMIT.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql(e))?;
        let r = self.append_in_transaction(&owner, wanted);
        let end = match &r {
            Ok(seqs) if !seqs.is_empty() => "COMMIT",
            _ => "ROLLBACK",
        };
        let ended = self.conn.execute_batch(end).map_err(|e| self.sql(e));
        let seqs = r?;
        ended?;
        if !seqs.is_empty() {
            // Our own commit does not move `data_version` for this connection: reload.
            self.control.loaded = None;
            self.refresh_directory()?;
        }
        Ok(seqs)
    }

    fn append_in_transaction(
        &mut self,
        owner: &ControlOwner,
        wanted: impl Fn(&Directory) -> Vec<ControlItem>,
    ) -> Result<Vec<u64>, MailboxError> {
        self.control.loaded = None;
        self.refresh_directory()?;
        let items = wanted(&self.control.directory);
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let last: i64 = self
            .conn
            .query_row(
                "SELECT coalesce(max(seq), 0) FROM control_entries WHERE writer = ?1",
                [owner.site.as_bytes()],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        if (last as u64) < self.control.floor {
            return Err(MailboxError::ControlBehind {
                path: self.path().to_path_buf(),
                held: last as u64,
                floor: self.control.floor,
            });
        }
        let mut seqs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let seq = last as u64 + 1 + i as u64;
            let bytes = encode_entry(owner.site, seq, item, &owner.keypair);
            self.conn
                .execute(
                    "INSERT INTO control_entries(writer, seq, bytes) VALUES (?1, ?2, ?3)",
                    params![owner.site.as_bytes(), clamp(seq), bytes],
                )
                .map_err(|e| self.sql(e))?;
            seqs.push(seq);
        }
        Ok(seqs)
    }

    /// Tells the mailbox how many entries of its own stream its owner saw stored before (the
    /// cloud keeps that outside the database, `cloud/src/high_water.rs`). A stream holding fewer
    /// was restored behind its peers: the next seq may be one they hold for another entry, which
    /// they would skip as held, so nothing is appended ([`MailboxError::ControlBehind`]) until
    /// peers brought the entries back (a hub passes them on at its hello).
    pub fn set_control_floor(&mut self, floor: u64) {
        self.control.floor = floor;
    }

    /// This box's own latest statement about `site` (key, role, revoked), if its stream has one.
    pub fn own_statement(
        &mut self,
        site: &SiteId,
    ) -> Result<Option<(PublicKey, PeerRole, bool)>, MailboxError> {
        let Some(own) = self.control.owner.as_ref().map(|o| o.site) else {
            return Ok(None);
        };
        Ok(statement(self.directory()?, &own, site))
    }

    /// Writes a Key entry for `site` in this box's own stream unless its latest statement about
    /// the site already says exactly this. Returns the new entry's seq, if one was written.
    pub fn certify(
        &mut self,
        site: SiteId,
        key: &PublicKey,
        role: PeerRole,
        revoked: bool,
    ) -> Result<Option<u64>, MailboxError> {
        let Some(own) = self.control.owner.as_ref().map(|o| o.site) else {
            return Err(MailboxError::NoControlOwner {
                path: self.path().to_path_buf(),
            });
        };
        let wanted = Some((*key, role, revoked));
        // Most calls change nothing: decide that without taking the write lock.
        if statement(self.directory()?, &own, &site) == wanted {
            return Ok(None);
        }
        let item = outpost_protocol::control::key_item(site, key, role, revoked);
        let seqs = self.append_own(|d| {
            if statement(d, &own, &site) == wanted {
                Vec::new()
            } else {
                vec![item.clone()]
            }
        })?;
        Ok(seqs.first().copied())
    }

    /// Writes what this box grants `site` (a new version of its grant, numbered after the last
    /// this box's stream gave it) if its stream does not say so already; returns the seq.
    /// `scopes` are names: a sealed tenant's stream states them by digest ([`Mailbox::wire_scopes`]).
    pub fn grant_scopes(
        &mut self,
        site: SiteId,
        scopes: &Scopes,
        enroll: bool,
    ) -> Result<Option<u64>, MailboxError> {
        let Some(own) = self.control.owner.as_ref().map(|o| o.site) else {
            return Err(MailboxError::NoControlOwner {
                path: self.path().to_path_buf(),
            });
        };
        let scopes = &self.wire_scopes(scopes)?;
        let same = |d: &Directory| {
            granted(d, &own, &site).is_some_and(|g| g.scopes == *scopes && g.enroll == enroll)
        };
        if same(self.directory()?) {
            return Ok(None);
        }
        let seqs = self.append_own(|d| {
            if same(d) {
                return Vec::new();
            }
            // Above every version any writer stated for the site (a hub's included): batches
            // name the version they were written under, so two grants never share one.
            let version = d.highest_grant_version(&site) + 1;
            vec![outpost_protocol::control::grant_item(
                site,
                version,
                scopes.clone(),
                enroll,
            )]
        })?;
        Ok(seqs.first().copied())
    }

    /// The cloud's answer to a hub's entries: its own entry for each device bound by a hub only.
    fn recertify(&mut self) -> Result<usize, MailboxError> {
        let Some(owner) = self.control.owner.clone().filter(|o| o.recertify) else {
            return Ok(0);
        };
        // All in one transaction: a hub's first session may bring thousands of devices.
        let written = self
            .append_own(|d| uncertified_devices(d, &owner.site))?
            .len();
        if written > 0 {
            log::info!(
                "mailbox={} control: certified {written} devices its hubs bound",
                self.path().display()
            );
        }
        Ok(written)
    }

    fn store_entries(&mut self, entries: &[(SiteId, u64, Vec<u8>)]) -> Result<(), MailboxError> {
        let path = self.path().to_path_buf();
        let sql = |source| MailboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        for (writer, seq, bytes) in entries {
            // Another connection may have stored the same entry meanwhile: the same bytes.
            tx.execute(
                "INSERT OR IGNORE INTO control_entries(writer, seq, bytes) VALUES (?1, ?2, ?3)",
                params![writer.as_bytes(), clamp(*seq), bytes],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        // The directory already holds them; count them as loaded.
        if let Some((version, count)) = self.control.loaded {
            self.control.loaded = Some((version, count + entries.len() as i64));
        }
        Ok(())
    }

    /// Admits the stored rows the directory lacks, when the table may have changed.
    fn refresh_directory(&mut self) -> Result<(), MailboxError> {
        let version: i64 = self.conn.data_version().map_err(|e| self.sql(e))?;
        if self.control.loaded.is_some_and(|(v, _)| v == version) {
            return Ok(());
        }
        // A sealed tenant's cloud opens the sealed table settings (`seal::table`).
        if let Some(dk) = self.digest_key()? {
            self.control.directory.set_table_key(&dk);
        }
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM control_entries", (), |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        if self.control.loaded.is_some_and(|(_, c)| c == count) {
            self.control.loaded = Some((version, count));
            return Ok(());
        }
        // Another connection of this process may have loaded more already: start from its
        // directory (the same roots and file make the same one), then admit what it lacks.
        let roots = self.control.roots();
        if let Some(shared) = shared_directory(self.path(), &roots) {
            if total(&shared) > total(&self.control.directory) {
                self.control.directory = shared;
            }
        }
        let have = self.control.directory.vector();
        let mut rows: Vec<ControlEntry> = Vec::new();
        let mut bad = 0usize;
        {
            // Entries the directory holds already are skipped before their bytes are read.
            // Per row: `None` undecodable, `Some(None)` held already, `Some(Some(entry))`.
            let read = self
                .conn
                .query_map("SELECT writer, seq, bytes FROM control_entries", (), |r| {
                    let writer: Vec<u8> = r.get(0)?;
                    let seq: i64 = r.get(1)?;
                    let Some(writer) = SiteId::from_slice(&writer) else {
                        return Ok(None);
                    };
                    if (seq as u64) <= have.get(&writer) {
                        return Ok(Some(None));
                    }
                    let bytes: Vec<u8> = r.get(2)?;
                    Ok(match decode_entry(&bytes) {
                        Ok(e) if e.writer == writer && e.seq == seq as u64 => Some(Some(e)),
                        _ => None,
                    })
                })
                .map_err(|e| self.sql(e))?;
            for entry in read {
                match entry.map_err(|e| self.sql(e))? {
                    Some(Some(e)) => rows.push(e),
                    Some(None) => {}
                    None => bad += 1,
                }
            }
        }
        let refused = self.control.directory.admit(rows);
        if bad + refused.len() > 0 {
            // Stored entries were accepted once: a refusal now means the file was changed, or
            // the roots were (a hub enrolled its uplink: entries wait for the cloud's).
            log::warn!(
                "mailbox={} control: {} stored entries not accepted ({} undecodable){}",
                self.path().display(),
                bad + refused.len(),
                bad,
                refused
                    .first()
                    .map(|(e, why)| format!(
                        "; first: entry {} of writer {}: {why}",
                        e.seq, e.writer
                    ))
                    .unwrap_or_default()
            );
        }
        self.control.loaded = Some((version, count));
        share_directory(self.path(), roots, &self.control.directory);
        self.sync_voids()
    }
}

impl ControlCache {
    pub(crate) fn directory_ref(&self) -> &Directory {
        &self.directory
    }

    fn roots(&self) -> Vec<Root> {
        self.owner
            .as_ref()
            .map_or_else(Vec::new, |o| o.roots.clone())
    }
}

/// The fullest directory each mailbox file's connections in this process loaded, with the roots
/// it was built from: a new connection (the relays open more under load) starts from it instead
/// of verifying every stored entry again (about 0.25 ms per entry).
static SHARED: Mutex<BTreeMap<PathBuf, (Vec<Root>, Directory)>> = Mutex::new(BTreeMap::new());

fn shared_directory(path: &Path, roots: &[Root]) -> Option<Directory> {
    let shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    shared
        .get(path)
        .filter(|(r, _)| r.as_slice() == roots)
        .map(|(_, d)| d.clone())
}

fn share_directory(path: &Path, roots: Vec<Root>, directory: &Directory) {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    let fuller = shared
        .get(path)
        .is_none_or(|(r, d)| *r != roots || total(d) < total(directory));
    if fuller {
        shared.insert(path.to_path_buf(), (roots, directory.clone()));
    }
}

/// Entries a directory accepted, all writers.
fn total(directory: &Directory) -> u64 {
    directory.vector().iter().map(|(_, n)| *n).sum()
}

/// Key entries (role device) for every device bound in `directory` by someone other than
/// `own`, about which `own`'s stream says nothing yet.
fn uncertified_devices(directory: &Directory, own: &SiteId) -> Vec<ControlItem> {
    let mut sites: Vec<SiteId> = Vec::new();
    for writer in directory.writers().filter(|w| *w != own) {
        for e in directory.entries_after(writer, 0) {
            if let ControlItem::Key(k) = &e.item {
                sites.push(k.site);
            }
        }
    }
    sites.sort();
    sites.dedup();
    sites
        .into_iter()
        .filter_map(|site| {
            let b = directory.binding(&site)?;
            (b.certified_by != *own
                && b.role == PeerRole::Device
                && statement(directory, own, &site).is_none())
            .then(|| outpost_protocol::control::key_item(site, &b.key, PeerRole::Device, b.revoked))
        })
        .collect()
}

/// The entries that arrived under one (writer, seq), each with the bytes it came as.
type Arrived = Vec<(ControlEntry, Vec<u8>)>;

/// `writer`'s latest statement about `site` in `directory`: (key, role, revoked).
fn statement(
    directory: &Directory,
    writer: &SiteId,
    site: &SiteId,
) -> Option<(PublicKey, PeerRole, bool)> {
    directory
        .entries_after(writer, 0)
        .iter()
        .rev()
        .find_map(|e| {
            let ControlItem::Key(k) = &e.item else {
                return None;
            };
            (k.site == *site)
                .then(|| k.public_key().ok().map(|key| (key, k.role, k.revoked)))
                .flatten()
        })
}

/// `writer`'s latest grant for `site` in `directory`.
fn granted<'d>(directory: &'d Directory, writer: &SiteId, site: &SiteId) -> Option<&'d GrantEntry> {
    directory
        .entries_after(writer, 0)
        .iter()
        .rev()
        .find_map(|e| match &e.item {
            ControlItem::Grant(g) if g.site == *site => Some(g),
            _ => None,
        })
}

fn clamp(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
