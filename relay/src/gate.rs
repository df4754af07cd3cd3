//! The handshake's [`Gatekeeper`], answered from the allowlist.
//!
//! Store failures become [`Refusal::Unavailable`] (logged here with the file, since the refusal
//! itself carries no detail), so a full disk or a locked database never admits anyone. Token
//! expiry is judged at the time the relay hands in ([`AllowlistGate::set_now`]): the gate reads
//! no clock.

use crate::allowlist::{Allowlist, AllowlistError};
use outpost_protocol::handshake::{Gatekeeper, PublicKey, Refusal, TokenId};
use outpost_protocol::SiteId;

/// The gatekeeper of one connection, over its own allowlist connection.
#[derive(Debug)]
pub struct AllowlistGate {
    allowlist: Allowlist,
    /// "Now" (unix seconds) for token expiry, as last set by the relay.
    now: u64,
}

impl AllowlistGate {
    /// A gatekeeper over `allowlist`, judging token expiry at `now` (unix seconds) until told
    /// otherwise.
    pub fn new(allowlist: Allowlist, now: u64) -> AllowlistGate {
        AllowlistGate { allowlist, now }
    }

    /// Sets the time (unix seconds) the next checks happen at.
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// The allowlist, for what the relay asks once the handshake admitted the peer (its role).
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// The allowlist connection back, once the handshake is over.
    pub fn into_allowlist(self) -> Allowlist {
        self.allowlist
    }
}

fn refusal(e: AllowlistError) -> Refusal {
    match e {
        AllowlistError::UnknownToken => Refusal::UnknownToken,
        AllowlistError::TokenUsed => Refusal::TokenUsed,
        AllowlistError::TokenExpired { .. } => Refusal::TokenExpired,
        AllowlistError::Revoked => Refusal::Revoked,
        AllowlistError::SiteBoundToOtherKey { .. } => Refusal::SiteReused,
        AllowlistError::NotEnrolled => Refusal::UnknownKey,
        AllowlistError::CounterReplay { .. } => Refusal::ReplayedHandshake,
        other => {
            log::error!("allowlist check failed, refusing the peer for now: {other}");
            Refusal::Unavailable
        }
    }
}

impl Gatekeeper for AllowlistGate {
    fn authorize(&mut self, key: &PublicKey, site: &SiteId) -> Result<(), Refusal> {
        self.allowlist
            .authorize_site(key.as_bytes(), *site)
            .map(|_| ())
            .map_err(refusal)
    }

    fn last_counter(&mut self, key: &PublicKey) -> Result<Option<u64>, Refusal> {
        self.allowlist.last_counter(key.as_bytes()).map_err(refusal)
    }

    fn record_counter(&mut self, key: &PublicKey, counter: u64) -> Result<(), Refusal> {
        self.allowlist
            .record_counter(key.as_bytes(), counter)
            .map_err(refusal)
    }

    fn enrollment_token(&mut self, id: &TokenId) -> Result<[u8; 32], Refusal> {
        self.allowlist
            .usable_token(&id.0, self.now)
            .map_err(refusal)
    }

    fn check_enrollment(&mut self, key: &PublicKey, site: &SiteId) -> Result<(), Refusal> {
        self.allowlist
            .check_enrollment(key.as_bytes(), *site)
            .map_err(refusal)
    }

    fn admit(&mut self, id: &TokenId, key: &PublicKey, site: &SiteId) -> Result<(), Refusal> {
        let device = self
            .allowlist
            .admit(&id.0, key, *site, self.now)
            .map_err(refusal)?;
        log::info!(
            "enrolled device site={} key={}",
            device.site,
            key.fingerprint()
        );
        Ok(())
    }
}
