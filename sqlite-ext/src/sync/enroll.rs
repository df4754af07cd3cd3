//! `outpost_enroll(code)`: enrolls this database with the hub (or cloud) that printed `code`.
//!
//! Runs the `IKpsk2` handshake with the code's one-time token to the code's pinned key, sends
//! the token proof (message 3), then a session `Hello`: the peer answers only once it has marked
//! the token used and admitted this key (one transaction on its side), so its `Hello` is the
//! confirmation, and tells the peer's role. Only then is the peer pinned in `_outpost_peers`.
//!
//! The control entries that follow the peer's hello (the key directory, the tenant's table
//! settings, and this device's own grant, which the peer wrote as it admitted it) are stored
//! too, once the peer is pinned (it is their root): `outpost_status()` shows the device's
//! scopes from the moment of enrolment. So are a sealed tenant's keys that hello carries.

use super::identity;
use super::peers::{self, Peer};
use super::session::open;
use crate::clock::unix_now;
use crate::error::Error;
use crate::error::SyncError;
use crate::functions::{Arg, Call};
use outpost_link::{Link, LinkError, Timeouts};
use outpost_protocol::enroll_code::{CloudAnchor, Code};
use outpost_protocol::handshake::{HandshakeError, Purpose};
use outpost_protocol::message::{Hello, Message, PeerRole, SessionId};
use outpost_protocol::seal::KeySet;
use outpost_protocol::{ControlVector, Value, PROTOCOL_VERSION};
use serde_json::json;
use std::net::TcpStream;

/// The most control entries kept from an enrolment's answer: what does not fit comes with the
/// first sync.
const MAX_ENROLMENT_ENTRIES: u64 = 65_536;

/// The control entries the peer sends right after its hello, which states `theirs` (this
/// database stated none: it is all of them), up to [`MAX_ENROLMENT_ENTRIES`]. A failure to read
/// them is no failure of the enrolment: the first sync brings them.
fn control_after_hello(link: &mut Link<TcpStream>, theirs: &ControlVector) -> Vec<Vec<u8>> {
    let mut left = theirs
        .iter()
        .map(|(_, &seq)| seq)
        .sum::<u64>()
        .min(MAX_ENROLMENT_ENTRIES);
    let mut entries = Vec::new();
    while left > 0 {
        match link.recv() {
            Ok(Message::Control { entries: got }) => {
                left = left.saturating_sub(got.len() as u64);
                entries.extend(got.into_iter().map(|b| b.0));
            }
            _ => break,
        }
    }
    entries
}

/// `outpost_enroll(code)`.
pub(crate) fn sql_enroll(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_enroll"));
    }
    let Arg::Text(text) = args[0] else {
        return Err(call.arg_error("expects the enrollment code text ('outpost:...')"));
    };
    let r = enroll(call, text).map_err(|e| e.into_error("outpost_enroll"));
    // Enrolling stores the device's grant: the write checks read it again.
    call.session.grant.forget();
    r
}

/// What enrolment needs of a code of either kind.
struct Joining {
    peer: Peer,
    purpose: Purpose,
    expires_at: u64,
    cloud: Option<CloudAnchor>,
    /// A two-part code's keys (opened with its secret): the device reads its scopes at once.
    keys: Option<KeySet>,
}

/// Reads `text` as a plain code (a hub's or the cloud's one-time token) or a sealed tenant's
/// two-part code (an admission signed by its minter, presented to a hub that may never have
/// seen it, and the scope keys sealed under the code's secret).
fn joining(text: &str) -> Result<Joining, SyncError> {
    match Code::decode(text).map_err(SyncError::Code)? {
        Code::Plain(code) => Ok(Joining {
            peer: Peer {
                site: code.hub_site,
                role: PeerRole::Hub,
                key: code.public_key().map_err(SyncError::Code)?,
                addresses: code.addresses.clone(),
            },
            purpose: Purpose::Enroll { token: code.token },
            expires_at: code.expires_at,
            cloud: code.cloud,
            keys: None,
        }),
        Code::TwoPart(code) => {
            let keys = code.open_keys().map_err(|e| {
                SyncError::Engine(Error::Internal(format!(
                    "the enrolment code's keys do not open: {e}"
                )))
            })?;
            let a = code.admission();
            Ok(Joining {
                peer: Peer {
                    site: a.hub_site,
                    role: PeerRole::Hub,
                    key: a.hub_key,
                    addresses: a.addresses.clone(),
                },
                purpose: Purpose::Admit {
                    admission: code.admission_bytes().to_vec(),
                    token: a.token,
                },
                expires_at: a.expires_at,
                cloud: a.cloud.clone(),
                keys: Some(keys),
            })
        }
    }
}

fn enroll(call: &Call, text: &str) -> Result<Value, SyncError> {
    let Joining {
        mut peer,
        purpose,
        expires_at,
        cloud,
        keys,
    } = joining(text)?;
    crate::schema::ensure(call.conn)?;
    identity::ensure_tables(call.conn)?;
    let site = crate::sites::site_id(call.conn)?;
    let id = identity::load_or_create(call.conn, site)?;
    let label = format!(
        "the peer of the enrollment code ({})",
        &peer.site.to_string()[..12]
    );
    let expired = (unix_now() > expires_at).then_some(expires_at);
    let opened = open(call, &id, &peer, purpose, Timeouts::default(), label);
    let (mut link, address) = match opened {
        Err(SyncError::Link(LinkError::Handshake {
            error: HandshakeError::EnrollmentRefused,
            ..
        })) => {
            return Err(SyncError::EnrollmentRefused {
                expired_at: expired,
            })
        }
        other => other?,
    };
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        site,
        role: PeerRole::Device,
        fingerprint: super::store::fingerprint(call)?,
        wall_clock_ms: unix_now() * 1000,
        vector: super::store::vector(call, site)?,
        session: SessionId::default(),
        // None held yet (a re-enrolment's come again): the peer answers with all of them.
        control: ControlVector::new(),
        drains: Vec::new(),
        regain: Vec::new(),
        keys: Vec::new(),
    });
    let answer = link
        .confirm_enrollment(&hello, peer.site)
        .map_err(SyncError::EnrollmentUnconfirmed)?;
    let entries = control_after_hello(&mut link, &answer.control);
    let _ = link.send(&Message::Bye);
    link.close();
    peer.role = answer.role;
    peers::pin(call.conn, &peer, unix_now())?;
    // The code's cloud anchor: a device enrolled at a hub verifies the cloud's key directory
    // entries and changes with it (docs/security.md).
    super::control::store_anchor(call.conn, cloud.as_ref())?;
    // A sealed tenant's keys come in the two-part code, or in the peer's hello: kept now, the
    // device writes and reads its scopes before its first sync (their ids in its grant are
    // digests: `wire_scope.rs`).
    if let Some(keys) = &keys {
        call.conn.exec("SAVEPOINT outpost_keys")?;
        let r = crate::scope_keys::store(call.conn, keys);
        crate::schema::finish_savepoint(call.conn, "outpost_keys", r)?;
    }
    crate::scope_keys::keep_envelopes(call.conn, site, &id.keypair, &answer.keys)?;
    if !entries.is_empty() {
        let mut directory = super::control::load(call)?;
        super::control::receive(call.conn, &mut directory, entries)?;
        super::control::remember(call, &directory)?;
        // A strict tenant's tables refuse values PostgreSQL could not hold from now on.
        crate::strict::follow(call.conn, &directory)?;
    }
    let out = json!({
        "role": peers::role_name(answer.role),
        "site": peer.site.to_string(),
        "key": peer.key.to_string(),
        "fingerprint": peer.key.fingerprint(),
        "addresses": peer.addresses,
        "address": address,
        "device_site": site.to_string(),
        "device_key_fingerprint": id.keypair.public().fingerprint(),
        "key_file": id.key_file.as_ref().map(|p| p.display().to_string()),
        "cloud_anchor": cloud.as_ref().map(|c| c.site.to_string()),
    });
    Ok(Value::Text(out.to_string()))
}
