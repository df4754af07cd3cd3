//! `outpost_enroll(code)`: enrolls this database with the hub (or cloud) that printed `code`.
//!
//! Runs the `IKpsk2` handshake with the code's one-time token to the code's pinned key, sends
//! the token proof (message 3), then a session `Hello`: the peer answers only once it has marked
//! the token used and admitted this key (one transaction on its side), so its `Hello` is the
//! confirmation, and tells the peer's role. Only then is the peer pinned in `_outpost_peers`.

use super::identity;
use super::peers::{self, Peer};
use super::session::open;
use crate::clock::unix_now;
use crate::error::Error;
use crate::error::SyncError;
use crate::functions::{Arg, Call};
use outpost_link::{LinkError, Timeouts};
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::{HandshakeError, Purpose};
use outpost_protocol::message::{Hello, Message, PeerRole, SessionId};
use outpost_protocol::{Value, PROTOCOL_VERSION};
use serde_json::json;

/// `outpost_enroll(code)`.
pub(crate) fn sql_enroll(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_enroll"));
    }
    let Arg::Text(text) = args[0] else {
        return Err(call.arg_error("expects the enrollment code text ('outpost:...')"));
    };
    enroll(call, text).map_err(|e| e.into_error("outpost_enroll"))
}

fn enroll(call: &Call, text: &str) -> Result<Value, SyncError> {
    let code = EnrollCode::decode(text).map_err(SyncError::Code)?;
    let key = code.public_key().map_err(SyncError::Code)?;
    crate::schema::ensure(call.conn)?;
    identity::ensure_tables(call.conn)?;
    let site = crate::sites::site_id(call.conn)?;
    let id = identity::load_or_create(call.conn, site)?;
    let mut peer = Peer {
        site: code.hub_site,
        role: PeerRole::Hub,
        key,
        addresses: code.addresses.clone(),
    };
    let label = format!(
        "the peer of the enrollment code ({})",
        &code.hub_site.to_string()[..12]
    );
    let expired = (unix_now() > code.expires_at).then_some(code.expires_at);
    let opened = open(
        call,
        &id,
        &peer,
        Purpose::Enroll { token: code.token },
        Timeouts::default(),
        label,
    );
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
        // Enrolment only confirms admission: no control entries are exchanged.
        control: outpost_protocol::VersionVector::new(),
    });
    let role = link
        .confirm_enrollment(&hello, code.hub_site)
        .map_err(SyncError::EnrollmentUnconfirmed)?
        .role;
    let _ = link.send(&Message::Bye);
    link.close();
    peer.role = role;
    peers::pin(call.conn, &peer, unix_now())?;
    // The code's cloud anchor: a device enrolled at a hub verifies the cloud's key directory
    // entries and changes with it (docs/security.md).
    super::control::store_anchor(call.conn, code.cloud.as_ref())?;
    let out = json!({
        "role": peers::role_name(role),
        "site": peer.site.to_string(),
        "key": peer.key.to_string(),
        "fingerprint": peer.key.fingerprint(),
        "addresses": peer.addresses,
        "address": address,
        "device_site": site.to_string(),
        "device_key_fingerprint": id.keypair.public().fingerprint(),
        "key_file": id.key_file.as_ref().map(|p| p.display().to_string()),
        "cloud_anchor": code.cloud.as_ref().map(|c| c.site.to_string()),
    });
    Ok(Value::Text(out.to_string()))
}
