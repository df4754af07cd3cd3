//! `outpost_enroll_code(options)`: a supervisor's tablet mints a two-part enrolment code for its
//! clinic's hub (docs/design.md section 10, "Offline enrolment"; docs/sql-api.md).
//!
//! The tablet must be enrolled with a hub, in a sealed tenant, with a grant that has the
//! `enroll` flag. The code's admission (the hub, its addresses, a fresh one-time token, the
//! expiry, the scopes by digest, this tablet as minter, signed with its key) is what the new
//! device presents to the hub; the hub checks the signature against this tablet's key in its
//! directory, and that the scopes are within this tablet's grant, so it admits the device even
//! while it has not reached the cloud since. The tablet's keys of those scopes (every epoch it
//! holds) and the tenant's digest key go into the code sealed under a secret the device never
//! sends: the new device reads its clinic's rows at once.
//!
//! Options (JSON): `scopes` (names, required: within this tablet's grant), `hours` (how long
//! the code is valid, default 168: a week, at most 720), `addresses` (how devices reach the
//! hub; default the addresses this tablet knows it by).

use super::peers::{self, Peer};
use crate::error::{Error, SyncError};
use crate::functions::{Arg, Call};
use crate::wire_scope::WireScopes;
use outpost_protocol::enroll_code::{Admission, CloudAnchor, TwoPartCode};
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_protocol::seal::code_keys::CodeSecret;
use outpost_protocol::seal::{KeyEntry, KeySet};
use outpost_protocol::Value;

/// Default validity of a code: a week (it travels to the new device by hand or on paper).
const DEFAULT_HOURS: u64 = 7 * 24;
/// The longest validity asked for: thirty days.
const MAX_HOURS: u64 = 30 * 24;

fn refused(what: impl std::fmt::Display) -> Error {
    Error::Argument(format!("outpost_enroll_code: {what}"))
}

fn random32() -> Result<[u8; 32], Error> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b)
        .map_err(|e| Error::Internal(format!("no randomness for an enrolment code: {e}")))?;
    Ok(b)
}

/// What the options ask for.
struct Asked {
    scopes: Scopes,
    hours: u64,
    addresses: Option<Vec<String>>,
}

fn asked(text: &str) -> Result<Asked, Error> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        refused(format!(
            "options are not JSON ({e}): e.g. '{{\"scopes\": [\"a\"]}}'"
        ))
    })?;
    let names: Vec<&str> = json["scopes"]
        .as_array()
        .ok_or_else(|| refused("options need \"scopes\": the scope names the new device holds"))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| refused("\"scopes\" holds names (text)"))
        })
        .collect::<Result<_, _>>()?;
    let scopes = Scopes::parse(names).map_err(|e| refused(format!("\"scopes\": {e}")))?;
    if scopes == Scopes::All {
        return Err(refused(
            "\"scopes\": name the clinic's scopes; a tablet cannot grant '*'",
        ));
    }
    let hours = match &json["hours"] {
        serde_json::Value::Null => DEFAULT_HOURS,
        v => v
            .as_u64()
            .filter(|h| (1..=MAX_HOURS).contains(h))
            .ok_or_else(|| refused(format!("\"hours\": 1 to {MAX_HOURS}")))?,
    };
    let addresses = match &json["addresses"] {
        serde_json::Value::Null => None,
        v => Some(
            v.as_array()
                .ok_or_else(|| refused("\"addresses\": a list of \"HOST:PORT\""))?
                .iter()
                .map(|a| {
                    a.as_str()
                        .filter(|a| {
                            a.rsplit_once(':')
                                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                        })
                        .map(str::to_string)
                        .ok_or_else(|| refused(format!("\"addresses\": {a} is not \"HOST:PORT\"")))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Asked {
        scopes,
        hours,
        addresses,
    })
}

/// `outpost_enroll_code(options)`.
pub(crate) fn sql_enroll_code(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let Arg::Text(text) = args[0] else {
        return Err(call.arg_error("expects the options as JSON text: '{\"scopes\": [\"a\"]}'"));
    };
    mint(call, text).map_err(|e| e.into_error("outpost_enroll_code"))
}

fn mint(call: &Call, text: &str) -> Result<Value, SyncError> {
    let asked = asked(text)?;
    let conn = call.conn;
    crate::schema::ensure(conn)?;
    let me = crate::sites::site_id(conn)?;
    let hub: Peer = peers::load(conn)?
        .into_iter()
        .find(|p| p.role == PeerRole::Hub)
        .ok_or_else(|| {
            refused("this device is not enrolled with a hub: codes admit devices to the hub of the tablet that mints them")
        })?;
    let Some(dk) = crate::scope_keys::digest_key(conn)? else {
        return Err(refused(
            "this tenant is unsealed (no keys held): its hub prints codes (outpost-hub enroll-code)",
        )
        .into());
    };
    let directory = super::control::load(call)?;
    let Some(grant) = directory.grant_of(&me).filter(|g| g.enroll) else {
        return Err(
            refused("this device's grant has no enroll flag: it may not mint codes").into(),
        );
    };
    let wire = WireScopes::load(conn)?;
    let Scopes::Only(names) = &asked.scopes else {
        unreachable!("`asked` refuses '*'")
    };
    if let Some(n) = names.iter().find(|n| !wire.holds(&grant.scopes, n)) {
        return Err(refused(format!("scope {n:?} is not in this device's grant")).into());
    }
    // Every epoch this tablet holds of each scope, and of the unscoped stream.
    let mut entries = Vec::new();
    for name in std::iter::once("").chain(names.iter().map(String::as_str)) {
        let digest = dk.digest(name);
        let mut s =
            conn.prepare("SELECT epoch, key FROM _outpost_keys WHERE scope = ?1 ORDER BY epoch")?;
        s.bind_text(1, &digest.to_stream())?;
        let before = entries.len();
        while s.step()? {
            let key = u32::try_from(s.i64(0))
                .ok()
                .zip(<[u8; 32]>::try_from(s.blob(1).as_slice()).ok())
                .and_then(|(e, k)| outpost_protocol::seal::ScopeKey::new(e, k))
                .ok_or_else(|| Error::Corrupt("a stored scope key".into()))?;
            entries.push(KeyEntry { scope: digest, key });
        }
        if entries.len() == before && !name.is_empty() {
            return Err(refused(format!(
                "no key of scope {name:?} is held here yet: sync first"
            ))
            .into());
        }
    }
    let keys = KeySet {
        digest_key: dk.clone(),
        entries,
    };
    let keypair = super::identity::existing(conn, me)?
        .ok_or_else(|| Error::Internal("this device has no static key: enroll it first".into()))?;
    let cloud = directory
        .bindings()
        .find(|(_, b)| b.role == PeerRole::Cloud && !b.revoked)
        .map(|(site, b)| CloudAnchor {
            site: *site,
            key: b.key.as_bytes().to_vec(),
        });
    let expires_at = crate::clock::unix_now() + asked.hours * 3600;
    let mut admission = Admission {
        hub_site: hub.site,
        hub_key: hub.key,
        addresses: asked.addresses.unwrap_or_else(|| hub.addresses.clone()),
        token: random32()?,
        expires_at,
        cloud,
        scopes: dk.wire_scopes(&asked.scopes),
        enroll: false,
        minter: me,
        signature: [0; 64],
    };
    admission
        .sign(&keypair)
        .map_err(|e| refused(format!("the admission: {e}")))?;
    let code = TwoPartCode::mint(
        admission,
        keypair.public(),
        &keys,
        CodeSecret::from_bytes(random32()?),
    )
    .map_err(refused)?;
    log::info!(
        "outpost_enroll_code: minted a code for hub {}, {} scope(s), expires at unix {expires_at}",
        &hub.site.to_string()[..12],
        names.len()
    );
    Ok(Value::Text(code.encode()))
}
