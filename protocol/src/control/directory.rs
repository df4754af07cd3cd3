//! The key directory: the control entries a peer accepted, and the one key each site signs with.
//!
//! **Who may write what.** A writer's entries are accepted into its stream when its key is known
//! (a *root*: a key this peer pinned at its own enrolment, the cloud, the hub it enrolled with,
//! itself; or a site the entries bind as a hub or the cloud), signed by it and next in order.
//! What an accepted entry *means* depends on its writer's authority, decided when bindings are
//! derived, so an entry one replica gives no weight never blocks the rest of its writer's stream
//! there: the cloud may bind any site; a hub binds devices only, except that a device's own hub
//! (a Hub root), on a peer that has no cloud root, introduces its cloud (the enrolment code that
//! carries the cloud's key comes from that hub too, so this trusts it no further).
//!
//! **One decision everywhere.** What a site's key is follows from the set of accepted entries
//! alone, never from their arrival order: a root wins for its own site; else the cloud's latest
//! entry for the site; else, among hubs the cloud certifies (or that are roots) and have not been
//! revoked, the latest entry of the hub with the smallest site id. Revoked keys stay, marked, so
//! history signed before the revocation stays verifiable.
//!
//! **Table settings** come from the clouds' entries only (latest per table); a hub's are given no
//! weight. A table no entry names travels both ways.
//!
//! **Grants**: a cloud's grant for a site, its highest version, wins; else a hub's (the hub the
//! directory trusts for that device, as for keys: its highest version), narrowed to the hub's
//! own grant from a cloud (a hub with no cloud grant on a peer with no cloud is trusted as
//! for keys). A site no entry grants has no grant here (the caller decides: a tenant without
//! scopes grants everything).
//!
//! **Voided ranges** come from the clouds' entries only: each is a range of an origin's stream
//! every replica treats as covered and empty ([`Directory::covered_over_voids`]).

use super::{ControlEntry, ControlItem, GrantEntry, KeyEntry, TableEntry, VoidReason};
use crate::batch::Direction;
use crate::handshake::PublicKey;
use crate::message::PeerRole;
use crate::scope::{ScopeRule, Scopes};
use crate::site::SiteId;
use crate::vector::{ControlVector, SeqRange, StreamId};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// A key this peer knows from its own enrolment, not from any entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root {
    /// The site.
    pub site: SiteId,
    /// Its key.
    pub key: PublicKey,
    /// What it is (a cloud root may bind any site; a hub root only devices).
    pub role: PeerRole,
}

/// What the directory says about a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The key its batches must be signed with.
    pub key: PublicKey,
    /// What it is.
    pub role: PeerRole,
    /// The key was revoked (still verifies what it signed).
    pub revoked: bool,
    /// Who said so: the site itself for a root, else the entry's writer.
    pub certified_by: SiteId,
}

/// What the directory says a site is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Its version.
    pub version: u64,
    /// The scopes.
    pub scopes: Scopes,
    /// It may mint enrolment codes.
    pub enroll: bool,
    /// Who granted it (a cloud, or the hub that admitted the device).
    pub granted_by: SiteId,
}

/// Why an entry was not accepted (it is then dropped; the writer's stream brings it again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its writer's key is not known (yet).
    UnknownWriter,
    /// Its signature does not verify with its writer's key.
    BadSignature,
    /// It does not follow the writer's last accepted entry.
    NotNext {
        /// The writer's last accepted seq.
        have: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownWriter => f.write_str("its writer's key is not known"),
            Refusal::BadSignature => f.write_str("its signature does not verify"),
            Refusal::NotNext { have } => write!(f, "it does not follow entry {have}"),
        }
    }
}

/// The accepted control entries of every writer and what they mean.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    roots: BTreeMap<SiteId, Root>,
    /// Accepted entries per writer, seqs 1..=n.
    streams: BTreeMap<SiteId, Vec<ControlEntry>>,
    bindings: BTreeMap<SiteId, Binding>,
    /// Every key a writer's entries may be signed with: its root key, and each key an accepted
    /// entry of a cloud ever bound it to as a hub or a cloud. It only grows, so which entries are
    /// accepted does not depend on their arrival order.
    writer_keys: BTreeMap<SiteId, Vec<PublicKey>>,
    /// Clouds a device's own hub introduced (on a peer with no cloud root).
    introduced: Vec<SiteId>,
    /// The tenant's table settings, from the clouds' entries.
    tables: BTreeMap<String, TableEntry>,
    /// Each site's grant.
    grants: BTreeMap<SiteId, Grant>,
    /// Every version of every site's grant the directory accepted (the cloud's word for a
    /// version, else the hub's narrowed one): batches are judged by the version they name.
    grant_versions: BTreeMap<SiteId, BTreeMap<u64, Scopes>>,
    /// A cloud is known (a root, or introduced by the device's own hub).
    has_cloud: bool,
    /// The ranges the clouds voided, per stream, ordered by `lo`.
    voids: BTreeMap<StreamId, Vec<(SeqRange, VoidReason)>>,
    /// A cloud said the tenant is sealed.
    sealed: bool,
    /// A cloud said the tenant's tracked tables are strict on devices.
    strict: bool,
    /// Each scope's highest epoch a cloud published.
    epochs: BTreeMap<String, u32>,
    /// The tenant's digest key, which opens sealed table settings (`None` at a hub).
    table_key: Option<crate::seal::DigestKey>,
    /// Origins a cloud wrote under before it took another ([`Directory::is_retired`]).
    retired: BTreeSet<SiteId>,
}

impl Directory {
    /// A directory with these roots and no entries.
    pub fn new(roots: impl IntoIterator<Item = Root>) -> Directory {
        let mut d = Directory {
            roots: roots.into_iter().map(|r| (r.site, r)).collect(),
            ..Directory::default()
        };
        d.writer_keys = d.roots.values().map(|r| (r.site, vec![r.key])).collect();
        d.derive();
        d
    }

    /// Opens the sealed table settings with the tenant's digest key from now on (a device or
    /// the cloud of a sealed tenant; a hub has none and never reads them).
    pub fn set_table_key(&mut self, key: &crate::seal::DigestKey) {
        if self.table_key.as_ref() != Some(key) {
            self.table_key = Some(key.clone());
            self.derive();
        }
    }

    /// The last accepted seq per writer (what `Hello` carries).
    pub fn vector(&self) -> ControlVector {
        let mut v = ControlVector::new();
        for (w, s) in &self.streams {
            v.set(*w, s.len() as u64);
        }
        v
    }

    /// The accepted entries of `writer` above `after`, in order.
    pub fn entries_after(&self, writer: &SiteId, after: u64) -> &[ControlEntry] {
        self.streams
            .get(writer)
            .map_or(&[][..], |s| &s[(after as usize).min(s.len())..])
    }

    /// The writers with accepted entries.
    pub fn writers(&self) -> impl Iterator<Item = &SiteId> {
        self.streams.keys()
    }

    /// What the directory binds `site` to.
    pub fn binding(&self, site: &SiteId) -> Option<&Binding> {
        self.bindings.get(site)
    }

    /// Every site the directory binds, with its binding, by site id.
    pub fn bindings(&self) -> impl Iterator<Item = (&SiteId, &Binding)> {
        self.bindings.iter()
    }

    /// The direction the tenant declares for `table` (`both` when no cloud entry names it).
    pub fn table_direction(&self, table: &str) -> Direction {
        self.tables
            .get(&table.to_ascii_lowercase())
            .map(|t| t.direction)
            .unwrap_or_default()
    }

    /// The scope rule the tenant declares for `table`: `None` when no cloud entry names it, or
    /// names it unscoped.
    pub fn table_scope(&self, table: &str) -> Option<&ScopeRule> {
        self.tables
            .get(&table.to_ascii_lowercase())
            .and_then(|t| t.scope.as_ref())
    }

    /// Every table the tenant has declared settings for, by name (ASCII lowercase: SQLite's
    /// names ignore its case).
    pub fn tables(&self) -> impl Iterator<Item = (&str, Direction)> {
        self.tables.iter().map(|(n, t)| (n.as_str(), t.direction))
    }

    /// Every table's settings, by name (ASCII lowercase), as the cloud last stated them.
    pub fn table_settings(&self) -> impl Iterator<Item = (&str, &TableEntry)> {
        self.tables.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// What `site` is granted, if any entry says (see the module doc).
    pub fn grant_of(&self, site: &SiteId) -> Option<&Grant> {
        self.grants.get(site)
    }

    /// The scopes of version `version` of `site`'s grant, if the directory holds that version
    /// (docs/design.md section 10, "One decision everywhere": a batch is judged by the grant
    /// version it names, so a later regrant never turns an accepted batch into a refused one).
    pub fn grant_at(&self, site: &SiteId, version: u64) -> Option<&Scopes> {
        self.grant_versions.get(site)?.get(&version)
    }

    /// The highest grant version any entry here states for `site` (0: none), whoever wrote
    /// it: a new grant takes the next one, so versions never collide.
    pub fn highest_grant_version(&self, site: &SiteId) -> u64 {
        self.streams
            .values()
            .flatten()
            .filter_map(|e| match &e.item {
                ControlItem::Grant(g) if g.site == *site => Some(g.version),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Every voided range: (stream, range, why), by stream and then `lo`.
    pub fn voids(&self) -> impl Iterator<Item = (&StreamId, SeqRange, VoidReason)> {
        self.voids
            .iter()
            .flat_map(|(s, v)| v.iter().map(move |(r, why)| (s, *r, *why)))
    }

    /// How many ranges are voided.
    pub fn void_count(&self) -> usize {
        self.voids.values().map(Vec::len).sum()
    }

    /// Whether every seq of `range` in `stream` is voided.
    pub fn is_voided(&self, stream: &StreamId, range: SeqRange) -> bool {
        self.voids
            .get(stream)
            .is_some_and(|v| v.iter().any(|(r, _)| r.lo <= range.lo && range.hi <= r.hi))
    }

    /// `covered` of `stream`, extended over the voided ranges that touch it (and those that
    /// touch them in turn): what a replica covering `covered` covers once voided seqs count as
    /// covered and empty.
    pub fn covered_over_voids(&self, stream: &StreamId, covered: u64) -> u64 {
        let Some(voids) = self.voids.get(stream) else {
            return covered;
        };
        let mut covered = covered;
        for (r, _) in voids {
            if r.lo > covered.saturating_add(1) {
                break;
            }
            covered = covered.max(r.hi);
        }
        covered
    }

    /// Whether a cloud said the tenant is sealed ([`ControlItem::Sealed`]).
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Whether a cloud said the tenant's tracked tables are strict on devices
    /// ([`ControlItem::Strict`]: a PostgreSQL tenant's values must fit their columns' types).
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// `scope`'s current key epoch as a cloud published it (1, every scope's first, when none
    /// was published).
    pub fn current_epoch(&self, scope: &str) -> u32 {
        self.epochs.get(scope).copied().unwrap_or(1)
    }

    /// Every published epoch: (scope, its current epoch), by scope.
    pub fn epochs(&self) -> impl Iterator<Item = (&str, u32)> {
        self.epochs.iter().map(|(s, e)| (s.as_str(), *e))
    }

    /// Whether a cloud is known here: then the tenant's table settings apply (a peer with no
    /// cloud keeps its own declarations).
    pub fn has_cloud(&self) -> bool {
        self.has_cloud
    }

    /// Whether `site` is bound as a cloud (the only origin that may write `down` tables).
    pub fn is_cloud(&self, site: &SiteId) -> bool {
        self.bindings
            .get(site)
            .is_some_and(|b| b.role == PeerRole::Cloud)
    }

    /// Whether `site` is an origin a cloud wrote under before it took another (docs/design.md
    /// section 11, "Durability"): a cloud whose database was restored behind its peers takes a
    /// new site id for its changes, bound to its own key as a cloud by an entry of its stream,
    /// so that no (site, seq) is issued twice. Its earlier origins' batches are then another
    /// origin's to every peer, the cloud included: a relay pushes those the cloud lacks back
    /// up to it, and it takes them, whatever their direction.
    pub fn is_retired(&self, site: &SiteId) -> bool {
        self.retired.contains(site)
    }

    /// The key `site` signs with, if known (revoked or not).
    pub fn key_of(&self, site: &SiteId) -> Option<PublicKey> {
        self.bindings.get(site).map(|b| b.key)
    }

    /// Accepts what it can of `entries` (any order, any writers): each writer's in seq order,
    /// repeating while an accepted entry makes another writer known. Returns the entries not
    /// accepted, with why; entries already held are skipped silently.
    pub fn admit(&mut self, mut entries: Vec<ControlEntry>) -> Vec<(ControlEntry, Refusal)> {
        entries.sort_by_key(|e| (e.writer, e.seq));
        loop {
            let mut progress = false;
            let mut left = Vec::new();
            for e in entries {
                match self.admit_one(&e) {
                    Ok(true) => progress = true,
                    Ok(false) => {}
                    Err(r) => left.push((e, r)),
                }
            }
            if progress {
                self.derive();
            }
            if !progress || left.is_empty() {
                return left;
            }
            entries = left.into_iter().map(|(e, _)| e).collect();
        }
    }

    /// `Ok(true)` accepted now, `Ok(false)` already held.
    fn admit_one(&mut self, e: &ControlEntry) -> Result<bool, Refusal> {
        let have = self.streams.get(&e.writer).map_or(0, |s| s.len() as u64);
        if e.seq <= have {
            return Ok(false);
        }
        if e.seq != have + 1 {
            return Err(Refusal::NotNext { have });
        }
        let keys = self
            .writer_keys
            .get(&e.writer)
            .ok_or(Refusal::UnknownWriter)?;
        if !keys.iter().any(|k| e.verify(k).is_ok()) {
            return Err(Refusal::BadSignature);
        }
        self.note_writer(e);
        self.streams.entry(e.writer).or_default().push(e.clone());
        Ok(true)
    }

    /// Records the writer key `e` makes known, if any: a cloud's entry binding a hub or a cloud,
    /// or (on a peer with no cloud root) a device's own hub introducing its cloud. Revoked or not:
    /// what a key signed stays verifiable.
    fn note_writer(&mut self, e: &ControlEntry) {
        let ControlItem::Key(k) = &e.item else {
            return;
        };
        if k.role == PeerRole::Device || self.roots.contains_key(&k.site) {
            return;
        }
        let cloud_root = self.roots.values().any(|r| r.role == PeerRole::Cloud);
        let by = self.roots.get(&e.writer).map(|r| r.role);
        let is_cloud = |w: &SiteId| {
            self.roots.get(w).is_some_and(|r| r.role == PeerRole::Cloud)
                || (!cloud_root && self.introduced.contains(w))
        };
        let authorised = is_cloud(&e.writer)
            || (!cloud_root && by == Some(PeerRole::Hub) && k.role == PeerRole::Cloud);
        if !authorised {
            return;
        }
        if by == Some(PeerRole::Hub) && k.role == PeerRole::Cloud {
            self.introduced.push(k.site);
        }
        if let Ok(key) = k.public_key() {
            let keys = self.writer_keys.entry(k.site).or_default();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }

    /// Recomputes every binding from the roots and the accepted entries.
    fn derive(&mut self) {
        let mut bindings: BTreeMap<SiteId, Binding> = BTreeMap::new();
        for r in self.roots.values() {
            bindings.insert(
                r.site,
                Binding {
                    key: r.key,
                    role: r.role,
                    revoked: false,
                    certified_by: r.site,
                },
            );
        }
        let mut clouds: Vec<SiteId> = self
            .roots
            .values()
            .filter(|r| r.role == PeerRole::Cloud)
            .map(|r| r.site)
            .collect();
        if clouds.is_empty() {
            // A device enrolled at a hub before the hub knew its cloud: the hub introduces it
            // (the latest such entry of the smallest Hub root that made one).
            let introduced = self
                .roots
                .values()
                .filter(|r| r.role == PeerRole::Hub)
                .find_map(|hub| {
                    self.entries_after(&hub.site, 0).iter().rev().find_map(|e| {
                        let ControlItem::Key(k) = &e.item else {
                            return None;
                        };
                        (k.role == PeerRole::Cloud && !self.roots.contains_key(&k.site))
                            .then(|| binding_of(k, hub.site).map(|b| (k.site, b)))
                            .flatten()
                    })
                });
            if let Some((site, b)) = introduced.filter(|(_, b)| !b.revoked) {
                bindings.insert(site, b);
                clouds.push(site);
            }
        }
        // The cloud's latest statement per site, and per table.
        let mut tables = BTreeMap::new();
        let mut grants: BTreeMap<SiteId, Grant> = BTreeMap::new();
        let mut versions: BTreeMap<SiteId, BTreeMap<u64, Scopes>> = BTreeMap::new();
        let mut voids: BTreeMap<StreamId, Vec<(SeqRange, VoidReason)>> = BTreeMap::new();
        let mut sealed = false;
        let mut strict = false;
        let mut epochs: BTreeMap<String, u32> = BTreeMap::new();
        let mut retired = BTreeSet::new();
        for cloud in &clouds {
            // The origins this cloud wrote under, in the order it took them (`is_retired`).
            let own_key = bindings.get(cloud).map(|b| b.key);
            let mut origins = vec![*cloud];
            for e in self.entries_after(cloud, 0) {
                let k = match &e.item {
                    ControlItem::Sealed => {
                        sealed = true;
                        continue;
                    }
                    ControlItem::Strict => {
                        strict = true;
                        continue;
                    }
                    ControlItem::Epoch(ep) => {
                        let held = epochs.entry(ep.scope.clone()).or_insert(ep.epoch);
                        *held = (*held).max(ep.epoch);
                        continue;
                    }
                    ControlItem::Void(v) => {
                        let stream = StreamId::new(v.origin, v.stream.clone());
                        voids.entry(stream).or_default().push((v.range, v.reason));
                        continue;
                    }
                    ControlItem::Key(k) => k,
                    ControlItem::Table(t) => {
                        // SQLite's names ignore ASCII case: so do the settings.
                        tables.insert(t.name.to_ascii_lowercase(), t.clone());
                        continue;
                    }
                    // Opened with the tenant's digest key when this peer holds it (a device,
                    // the cloud); a hub never learns table names.
                    ControlItem::SealedTable(b) => {
                        if let Some(t) = self
                            .table_key
                            .as_ref()
                            .and_then(|k| crate::seal::table::open_table(k, &b.0).ok())
                        {
                            tables.insert(t.name.to_ascii_lowercase(), t);
                        }
                        continue;
                    }
                    ControlItem::Grant(g) => {
                        raise(&mut grants, g, *cloud);
                        versions
                            .entry(g.site)
                            .or_default()
                            .insert(g.version, g.scopes.clone());
                        continue;
                    }
                };
                if self.roots.contains_key(&k.site) {
                    continue;
                }
                if let Some(b) = binding_of(k, *cloud) {
                    if b.role == PeerRole::Cloud && !b.revoked && Some(b.key) == own_key {
                        origins.retain(|o| *o != k.site);
                        origins.push(k.site);
                    }
                    bindings.insert(k.site, b);
                }
            }
            origins.pop();
            retired.extend(origins);
        }
        // Hubs: roots, or bound as hubs by the cloud and not revoked; smallest site id first.
        let hubs: Vec<SiteId> = self
            .streams
            .keys()
            .copied()
            .filter(|w| {
                bindings
                    .get(w)
                    .is_some_and(|b| b.role == PeerRole::Hub && !b.revoked)
            })
            .collect();
        let cloud_bound: Vec<SiteId> = bindings.keys().copied().collect();
        let mut by_hub: BTreeMap<SiteId, Binding> = BTreeMap::new();
        let mut hub_grants: BTreeMap<SiteId, (SiteId, Vec<&GrantEntry>)> = BTreeMap::new();
        let mut admitted: BTreeSet<(SiteId, SiteId)> = BTreeSet::new();
        for hub in hubs.iter().rev() {
            let mut latest: BTreeMap<SiteId, Binding> = BTreeMap::new();
            for e in self.entries_after(hub, 0) {
                let k = match &e.item {
                    ControlItem::Key(k) => k,
                    ControlItem::Grant(g) => {
                        // Iterating hubs from the largest site id down: the smallest one's
                        // statements replace the others'.
                        let slot = hub_grants.entry(g.site).or_insert((*hub, Vec::new()));
                        if slot.0 != *hub {
                            *slot = (*hub, Vec::new());
                        }
                        slot.1.push(g);
                        continue;
                    }
                    // A hub's word counts for devices' keys and grants only.
                    ControlItem::Table(_)
                    | ControlItem::SealedTable(_)
                    | ControlItem::Void(_)
                    | ControlItem::Sealed
                    | ControlItem::Strict
                    | ControlItem::Epoch(_) => continue,
                };
                if k.role == PeerRole::Device {
                    admitted.insert((*hub, k.site));
                }
                // A hub's word counts for devices only.
                if k.role != PeerRole::Device {
                    continue;
                }
                if let Some(b) = binding_of(k, *hub) {
                    latest.insert(k.site, b);
                }
            }
            // Iterating hubs from the largest site id down, the smallest one's statement wins.
            by_hub.extend(latest);
        }
        for (site, b) in by_hub {
            if !cloud_bound.contains(&site) {
                bindings.insert(site, b);
            }
        }
        // A hub's grant counts for a device it is trusted for, within its own cloud grant, when
        // no cloud granted that device.
        for (site, (hub, entries)) in hub_grants {
            let trusted = bindings
                .get(&site)
                .is_some_and(|b| b.role == PeerRole::Device)
                && admitted.contains(&(hub, site));
            if !trusted {
                continue;
            }
            // A hub grants within its own grant: what it says is narrowed to that (a code minted
            // before the hub learnt its grant says `*`, meaning all the hub holds); nothing
            // left, a grant of no scope (never "no grant", which callers read as every scope
            // of a tenant without scopes). The site's current grant is narrowed to the hub's
            // current one. A version, which batches are judged by, is narrowed to every scope
            // any version of the hub's grant held: that only grows as entries arrive, so a
            // regrant of the hub never turns a batch its device wrote, which a relay accepted,
            // into a refused one ("One decision everywhere").
            let ever: Option<Scopes> = versions
                .get(&hub)
                .and_then(|v| v.values().cloned().reduce(|a, b| a.union(&b)));
            let narrow = |g: &GrantEntry, own: Option<(&Scopes, bool)>| match own {
                Some((scopes, enroll)) => Some(GrantEntry {
                    scopes: scopes
                        .intersect(&g.scopes)
                        .unwrap_or_else(|| Scopes::Only(BTreeSet::new())),
                    enroll: enroll && g.enroll,
                    ..g.clone()
                }),
                None => clouds.is_empty().then(|| g.clone()),
            };
            // An entry beyond everything the hub was ever granted is given no weight; one the
            // hub has lost since is a grant of what remains, maybe nothing.
            let within_ever = |g: &&&GrantEntry| match &ever {
                Some(ever) => ever.intersect(&g.scopes).is_some(),
                None => true,
            };
            let current = grants.get(&hub).map(|own| (&own.scopes, own.enroll));
            let narrowed: Vec<GrantEntry> = entries
                .iter()
                .filter(within_ever)
                .filter_map(|g| narrow(g, current))
                .collect();
            // Versions the cloud did not state are the hub's (batches written under them are
            // judged by them); its current grant counts only while no cloud granted the site.
            let known = versions.entry(site).or_default();
            for g in entries
                .iter()
                .filter(within_ever)
                .filter_map(|g| narrow(g, ever.as_ref().map(|s| (s, true))))
            {
                known.entry(g.version).or_insert(g.scopes);
            }
            if grants.contains_key(&site) {
                continue;
            }
            let mut mine = BTreeMap::new();
            for g in &narrowed {
                raise(&mut mine, g, hub);
            }
            grants.extend(mine);
        }
        self.grants = grants;
        self.grant_versions = versions;
        self.bindings = bindings;
        self.has_cloud = !clouds.is_empty();
        self.tables = tables;
        for v in voids.values_mut() {
            v.sort_by_key(|(r, _)| (r.lo, r.hi));
            v.dedup_by_key(|(r, _)| *r);
        }
        self.voids = voids;
        self.sealed = sealed;
        self.strict = strict;
        self.epochs = epochs;
        self.retired = retired;
    }
}

/// Keeps `g` as its site's grant if its version is at least the one held (the later entry wins
/// a tie, as entries are read in order).
fn raise(grants: &mut BTreeMap<SiteId, Grant>, g: &GrantEntry, by: SiteId) {
    if grants
        .get(&g.site)
        .is_some_and(|held| held.version > g.version)
    {
        return;
    }
    grants.insert(
        g.site,
        Grant {
            version: g.version,
            scopes: g.scopes.clone(),
            enroll: g.enroll,
            granted_by: by,
        },
    );
}

fn binding_of(k: &KeyEntry, writer: SiteId) -> Option<Binding> {
    Some(Binding {
        key: k.public_key().ok()?,
        role: k.role,
        revoked: k.revoked,
        certified_by: writer,
    })
}
