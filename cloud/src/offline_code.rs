//! Two-part enrolment codes minted by the cloud (docs/design.md section 10, "Offline
//! enrolment"; `outpost-cloud enroll-code --device --at-hub ID`): a device joins a clinic's hub
//! that may not have reached the cloud since the code was made. The code holds an admission
//! the cloud signs (the hub, its addresses, a one-time token, the expiry, the grant by scope
//! digest) and the tenant's keys of that grant sealed under a secret the device never sends;
//! the hub checks the signature against the cloud's key in its directory and admits the device
//! with a provisional entry, and the device opens its scopes' history with the keys at once.

use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::enroll_code::{Admission, CloudAnchor, MintError, TwoPartCode};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::scope::Scopes;
use outpost_protocol::seal::code_keys::{CodeSecret, SECRET_LEN};
use outpost_protocol::SiteId;
use outpost_relay::allowlist::Device;
use std::fmt;

/// How long a two-part code is valid by default: a week (it travels to a clinic by hand).
pub const DEFAULT_TTL_SECS: u64 = 7 * 24 * 3600;

/// Why a code could not be minted.
#[derive(Debug)]
pub enum OfflineCodeError {
    /// The tenant is not sealed: its hubs print their own codes (`outpost-hub enroll-code`).
    Unsealed,
    /// `--at-hub` names a peer that is not a hub, or a revoked one.
    NotAHub {
        /// The peer's site.
        site: SiteId,
    },
    /// No address to reach the hub at was given.
    NoAddress,
    /// The mailbox (keys, directory) could not be read.
    Mailbox(MailboxError),
    /// The code could not be made.
    Mint(String),
    /// No randomness for the token or the secret.
    Random(String),
}

impl fmt::Display for OfflineCodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfflineCodeError::Unsealed => f.write_str(
                "--at-hub makes a sealed tenant's two-part code; this tenant is unsealed: \
                 print the code on the hub (outpost-hub enroll-code)",
            ),
            OfflineCodeError::NotAHub { site } => {
                write!(f, "--at-hub {site}: not an enrolled hub, or revoked")
            }
            OfflineCodeError::NoAddress => f.write_str(
                "--at-hub needs --address HOST:PORT: where devices reach the hub on its clinic LAN",
            ),
            OfflineCodeError::Mailbox(e) => e.fmt(f),
            OfflineCodeError::Mint(e) => write!(f, "minting the code: {e}"),
            OfflineCodeError::Random(e) => write!(f, "no randomness for the code: {e}"),
        }
    }
}

impl std::error::Error for OfflineCodeError {}

impl From<MailboxError> for OfflineCodeError {
    fn from(e: MailboxError) -> Self {
        OfflineCodeError::Mailbox(e)
    }
}

impl From<MintError> for OfflineCodeError {
    fn from(e: MintError) -> Self {
        OfflineCodeError::Mint(e.to_string())
    }
}

fn random32() -> Result<[u8; SECRET_LEN], OfflineCodeError> {
    let mut b = [0u8; SECRET_LEN];
    getrandom::getrandom(&mut b).map_err(|e| OfflineCodeError::Random(e.to_string()))?;
    Ok(b)
}

/// What a code admits.
pub struct Offline<'a> {
    /// The hub the device joins (from the allowlist).
    pub hub: &'a Device,
    /// Where devices reach it (`HOST:PORT`, checked by the caller).
    pub addresses: Vec<String>,
    /// The scopes granted, by name.
    pub scopes: &'a Scopes,
    /// The device may mint codes itself.
    pub enroll: bool,
    /// Unix seconds after which the hub refuses it.
    pub expires_at: u64,
}

/// Mints a two-part code for `offline`, signed with the cloud's `key` (site `cloud`), holding
/// every epoch of the grant's scopes' keys (and the unscoped stream's).
pub fn mint(
    mailbox: &mut Mailbox,
    cloud: SiteId,
    key: &Keypair,
    offline: &Offline,
) -> Result<TwoPartCode, OfflineCodeError> {
    if mailbox.digest_key()?.is_none() {
        return Err(OfflineCodeError::Unsealed);
    }
    if offline.hub.role != outpost_relay::allowlist::Role::Hub || offline.hub.revoked_at.is_some() {
        return Err(OfflineCodeError::NotAHub {
            site: offline.hub.site,
        });
    }
    if offline.addresses.is_empty() {
        return Err(OfflineCodeError::NoAddress);
    }
    let scopes = mailbox.wire_scopes(offline.scopes)?;
    let keys = mailbox
        .key_set(&scopes, &[])?
        .ok_or(OfflineCodeError::Unsealed)?;
    let mut admission = Admission {
        hub_site: offline.hub.site,
        hub_key: offline.hub.key,
        addresses: offline.addresses.clone(),
        token: random32()?,
        expires_at: offline.expires_at,
        cloud: Some(CloudAnchor {
            site: cloud,
            key: key.public().as_bytes().to_vec(),
        }),
        scopes,
        enroll: offline.enroll,
        minter: cloud,
        signature: [0; 64],
    };
    admission
        .sign(key)
        .map_err(|e| OfflineCodeError::Mint(e.to_string()))?;
    let secret = CodeSecret::from_bytes(random32()?);
    Ok(TwoPartCode::mint(admission, key.public(), &keys, secret)?)
}
