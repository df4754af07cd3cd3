//! A device as the dialer sees it: a static key, a site id and a handshake counter ([`Peer`]),
//! paired with whatever store it syncs ([`Keyed`]): the in-memory [`MemStore`](crate::MemStore)
//! of the protocol-level device, or a test's own (the cloud's tests sync a real database).

use outpost_protocol::batch::BatchHeader;
use outpost_protocol::handshake::{Keypair, PublicKey};
use outpost_protocol::id_range::{IdRange, IdRequest};
use outpost_protocol::message::Covered;
use outpost_protocol::session::ClientStore;
use outpost_protocol::{ControlVector, SiteId, VersionVector};
use std::ops::{Deref, DerefMut};

/// What the dialer needs of a device: its static key, its site id, and a fresh handshake counter
/// for each handshake (a counter is never offered twice).
pub trait Peer {
    /// The device's static key.
    fn keypair(&self) -> &Keypair;
    /// The device's site id.
    fn site(&self) -> SiteId;
    /// A counter above every one offered before.
    fn next_counter(&mut self) -> u64;
}

/// A device key and a store: dialed with the key, synced through the store. Derefs to the store,
/// so a test reads the store's fields on the device itself.
pub struct Keyed<S> {
    /// Its static key (the site's test key unless a test replaced it).
    pub keypair: Keypair,
    /// Its site id.
    pub site: SiteId,
    /// The last handshake counter offered.
    pub counter: u64,
    /// What it syncs.
    pub store: S,
}

impl<S> Keyed<S> {
    /// A device at `site` with its test key ([`crate::keys::site_keypair`]: the key its
    /// batches are signed with), syncing `store`.
    pub fn with_store(site: SiteId, store: S) -> Keyed<S> {
        Keyed {
            keypair: crate::keys::site_keypair(site),
            site,
            counter: 0,
            store,
        }
    }
}

impl<S> Deref for Keyed<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.store
    }
}

impl<S> DerefMut for Keyed<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.store
    }
}

impl<S> Peer for Keyed<S> {
    fn keypair(&self) -> &Keypair {
        &self.keypair
    }
    fn site(&self) -> SiteId {
        self.site
    }
    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// The store's, unchanged.
impl<S: ClientStore> ClientStore for Keyed<S> {
    type Error = S::Error;
    type ExportPlan = S::ExportPlan;

    fn vector(&mut self) -> Result<VersionVector, S::Error> {
        self.store.vector()
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<S::ExportPlan, S::Error> {
        self.store.plan_export(server)
    }
    fn next_export(&mut self, plan: &mut S::ExportPlan) -> Result<Option<Vec<u8>>, S::Error> {
        self.store.next_export(plan)
    }
    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), S::Error> {
        self.store.acknowledged(covered)
    }
    fn apply_chunk(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<(), S::Error> {
        self.store.apply_chunk(header, batch)
    }
    fn flush(&mut self) -> Result<(), S::Error> {
        self.store.flush()
    }
    fn pull_size(&mut self, batches: u64, bytes: u64) -> Result<(), S::Error> {
        self.store.pull_size(batches, bytes)
    }
    fn id_requests(&mut self) -> Result<Vec<IdRequest>, S::Error> {
        self.store.id_requests()
    }
    fn ids_granted(&mut self, request: &IdRequest, ranges: &[IdRange]) -> Result<(), S::Error> {
        self.store.ids_granted(request, ranges)
    }
    fn origin_key(&mut self, origin: &SiteId) -> Result<Option<PublicKey>, S::Error> {
        self.store.origin_key(origin)
    }
    fn control_vector(&mut self) -> Result<ControlVector, S::Error> {
        self.store.control_vector()
    }
    fn control_for(&mut self, peer: &ControlVector) -> Result<Vec<Vec<u8>>, S::Error> {
        self.store.control_for(peer)
    }
    fn control_received(&mut self, entries: Vec<Vec<u8>>) -> Result<(), S::Error> {
        self.store.control_received(entries)
    }
}
