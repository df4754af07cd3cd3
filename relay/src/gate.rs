//! The handshake's [`Gatekeeper`], answered from the allowlist.
//!
//! Store failures become [`Refusal::Unavailable`] (logged here with the file, since the refusal
//! itself carries no detail), so a full disk or a locked database never admits anyone. Token
//! expiry is judged at the time the relay hands in ([`AllowlistGate::set_now`]): the gate reads
//! no clock.
//!
//! A two-part code's admission ([`Gatekeeper::admission_token`]) is checked against the box's
//! key directory ([`Minters`]): it names this box, its minter may mint here (the cloud, or a
//! device whose grant has the `enroll` flag), its signature is the minter's, its grant is within
//! the minter's (and this box's), and it has not expired. Its token then goes into the
//! allowlist as if issued here, so the rest of the enrolment, and a second use, go as for any
//! token.

use crate::allowlist::{Allowlist, AllowlistError, PeerGrant};
use outpost_protocol::enroll_code::Admission;
use outpost_protocol::handshake::{Gatekeeper, PublicKey, Refusal, TokenId};
use outpost_protocol::scope::Scopes;
use outpost_protocol::SiteId;

/// A site that may mint two-part codes this box admits (docs/design.md section 10, "Offline
/// enrolment"), as the box's key directory states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minter {
    /// The key its admissions are signed with.
    pub key: PublicKey,
    /// What its admissions may grant (already narrowed to this box's own grant).
    pub scopes: Scopes,
    /// Whether its admissions may pass the `enroll` flag on (the cloud's; a device's may not).
    pub may_grant_enroll: bool,
}

/// Looks a minter up by site: `None` when the site may not mint codes here (unknown, revoked,
/// a device without the `enroll` flag), or the directory cannot be read.
pub type Minters = Box<dyn FnMut(&SiteId) -> Option<Minter> + Send>;

/// The gatekeeper of one connection, over its own allowlist connection.
pub struct AllowlistGate {
    allowlist: Allowlist,
    /// "Now" (unix seconds) for token expiry, as last set by the relay.
    now: u64,
    /// Two-part codes: this box's site and who may mint codes for it (`None`: no admissions).
    admissions: Option<(SiteId, Minters)>,
}

impl std::fmt::Debug for AllowlistGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowlistGate")
            .field("allowlist", &self.allowlist)
            .field("now", &self.now)
            .field("admissions", &self.admissions.as_ref().map(|(s, _)| s))
            .finish()
    }
}

impl AllowlistGate {
    /// A gatekeeper over `allowlist`, judging token expiry at `now` (unix seconds) until told
    /// otherwise.
    pub fn new(allowlist: Allowlist, now: u64) -> AllowlistGate {
        AllowlistGate {
            allowlist,
            now,
            admissions: None,
        }
    }

    /// Takes two-part codes' admissions naming `site` (this box), signed by a site `minters`
    /// knows.
    pub fn with_admissions(mut self, site: SiteId, minters: Minters) -> AllowlistGate {
        self.admissions = Some((site, minters));
        self
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

    fn admission_token(&mut self, admission: &Admission) -> Result<[u8; 32], Refusal> {
        let Some((site, minters)) = self.admissions.as_mut() else {
            return Err(Refusal::UnknownToken);
        };
        let refuse = |why: &str| {
            log::warn!(
                "refused a two-part code's admission minted by {}: {why}",
                admission.minter
            );
            Refusal::UnknownToken
        };
        if admission.hub_site != *site {
            return Err(refuse("it names another hub"));
        }
        let Some(minter) = minters(&admission.minter) else {
            return Err(refuse("its minter may not mint codes here"));
        };
        if admission.verify(&minter.key).is_err() {
            return Err(refuse("its signature is not its minter's"));
        }
        if !admission.scopes.within(&minter.scopes) {
            return Err(refuse("it grants scopes its minter does not hold"));
        }
        if admission.enroll && !minter.may_grant_enroll {
            return Err(refuse(
                "it passes on the enroll flag, which its minter may not",
            ));
        }
        if admission.expired(self.now) {
            return Err(Refusal::TokenExpired);
        }
        let grant = PeerGrant {
            scopes: admission.scopes.clone(),
            enroll: admission.enroll,
        };
        self.allowlist
            .import_token(&admission.token, admission.expires_at, self.now, &grant)
            .map_err(refusal)?;
        Ok(admission.token)
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
