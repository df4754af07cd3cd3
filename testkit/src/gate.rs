//! An allowlist in memory, as the hub keeps it in SQLite: the protocol's `Gatekeeper` over maps
//! of enrolled keys (each bound to its site), revoked keys, handshake counters and enrollment
//! tokens, with every admission recorded. The handshake tests configure it per case; `open`
//! admits any key, for tests where the gate is not under test.

use outpost_protocol::enroll_code::Admission;
use outpost_protocol::handshake::{Gatekeeper, Keypair, PublicKey, Refusal, TokenId};
use outpost_protocol::SiteId;
use std::collections::{HashMap, HashSet};

/// An enrollment token's state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TokenState {
    /// Not used yet.
    Fresh,
    /// Used by an admission.
    Used,
    /// Past its time.
    Expired,
}

/// The allowlist in memory.
#[derive(Default)]
pub struct MemGate {
    /// Admit every key at any site to sessions (nothing else changes).
    pub open: bool,
    /// Enrolled keys and the site each is bound to.
    pub devices: HashMap<PublicKey, SiteId>,
    /// Revoked keys.
    pub revoked: HashSet<PublicKey>,
    /// The last handshake counter accepted per key.
    pub counters: HashMap<PublicKey, u64>,
    /// Enrollment tokens by id: the secret and its state.
    pub tokens: HashMap<TokenId, ([u8; 32], TokenState)>,
    /// Every admission, in order.
    pub admitted: Vec<(TokenId, PublicKey, SiteId)>,
    /// Two-part codes: the sites whose signed admissions this gate takes, with their keys.
    pub minters: HashMap<SiteId, PublicKey>,
    /// Two-part codes: the site an admission must name (this responder's).
    pub site: Option<SiteId>,
}

impl MemGate {
    /// Admits every key to sessions.
    pub fn open() -> MemGate {
        MemGate {
            open: true,
            ..MemGate::default()
        }
    }

    /// `key` enrolled at `site`.
    pub fn with_device(key: &Keypair, site: SiteId) -> MemGate {
        let mut g = MemGate::default();
        g.devices.insert(*key.public(), site);
        g
    }

    /// One enrollment token in `state`.
    pub fn with_token(token: [u8; 32], state: TokenState) -> MemGate {
        let mut g = MemGate::default();
        g.tokens.insert(TokenId::of(&token), (token, state));
        g
    }
}

impl Gatekeeper for MemGate {
    fn authorize(&mut self, key: &PublicKey, site: &SiteId) -> Result<(), Refusal> {
        if self.open {
            return Ok(());
        }
        if self.revoked.contains(key) {
            return Err(Refusal::Revoked);
        }
        match self.devices.get(key) {
            None => Err(Refusal::UnknownKey),
            Some(s) if s != site => Err(Refusal::SiteReused),
            Some(_) => Ok(()),
        }
    }
    fn last_counter(&mut self, key: &PublicKey) -> Result<Option<u64>, Refusal> {
        Ok(self.counters.get(key).copied())
    }
    fn record_counter(&mut self, key: &PublicKey, counter: u64) -> Result<(), Refusal> {
        self.counters.insert(*key, counter);
        Ok(())
    }
    fn enrollment_token(&mut self, id: &TokenId) -> Result<[u8; 32], Refusal> {
        match self.tokens.get(id) {
            None => Err(Refusal::UnknownToken),
            Some((_, TokenState::Used)) => Err(Refusal::TokenUsed),
            Some((_, TokenState::Expired)) => Err(Refusal::TokenExpired),
            Some((t, TokenState::Fresh)) => Ok(*t),
        }
    }
    fn check_enrollment(&mut self, key: &PublicKey, site: &SiteId) -> Result<(), Refusal> {
        if self.revoked.contains(key) {
            return Err(Refusal::Revoked);
        }
        if self.devices.iter().any(|(k, s)| s == site && k != key) {
            return Err(Refusal::SiteReused);
        }
        Ok(())
    }
    fn admission_token(&mut self, admission: &Admission) -> Result<[u8; 32], Refusal> {
        let minter = self
            .minters
            .get(&admission.minter)
            .ok_or(Refusal::UnknownToken)?;
        admission
            .verify(minter)
            .map_err(|_| Refusal::UnknownToken)?;
        if self.site.is_some_and(|s| s != admission.hub_site) {
            return Err(Refusal::UnknownToken);
        }
        let id = TokenId::of(&admission.token);
        self.tokens
            .entry(id)
            .or_insert((admission.token, TokenState::Fresh));
        Ok(admission.token)
    }
    fn admit(&mut self, id: &TokenId, key: &PublicKey, site: &SiteId) -> Result<(), Refusal> {
        let entry = self.tokens.get_mut(id).ok_or(Refusal::UnknownToken)?;
        if entry.1 != TokenState::Fresh {
            return Err(Refusal::TokenUsed);
        }
        entry.1 = TokenState::Used;
        self.devices.insert(*key, *site);
        self.admitted.push((*id, *key, *site));
        Ok(())
    }
}
