//! `outpost_sync([peer [, options]])`: one sync with an enrolled peer, through the protocol's
//! `ClientSession` over the engine (`store.rs`) and an encrypted TCP link (`transport.rs`).

use super::discover;
use super::identity::{self, Identity};
use super::live::{self, Live};
use super::peers::{self, Peer};
use super::store::{self, Counts, EngineStore};
use super::transport::{self, Link, Timeouts};
use super::{unix_now, SyncError};
use crate::error::Error;
use crate::functions::{Arg, Call};
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::handshake::Purpose;
use outpost_protocol::message::{Message, PeerRole, SessionId};
use outpost_protocol::session::{ClientConfig, ClientSession, ClientStore, SessionError};
use outpost_protocol::Value;
use serde_json::json;
use std::time::Instant;

/// Sessions one `outpost_sync` runs at most (each pushes up to `store::PUSH_BUDGET`).
const MAX_SESSIONS: u32 = 64;

/// Options of `outpost_sync`'s second argument.
#[derive(Debug, Default)]
struct Options {
    timeouts: Timeouts,
    /// Stay connected this long after the sync (`live_seconds`).
    live: Option<std::time::Duration>,
}

fn parse_options(arg: Option<&Arg>) -> Result<Options, SyncError> {
    let mut o = Options::default();
    let text =
        match arg {
            None | Some(Arg::Null) => return Ok(o),
            Some(Arg::Text(t)) => t,
            Some(_) => return Err(SyncError::Argument(
                "outpost_sync: options must be a JSON object text, e.g. '{\"timeout_ms\": 5000}'"
                    .into(),
            )),
        };
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| SyncError::Argument(format!("outpost_sync: options are not JSON: {e}")))?;
    let Some(map) = v.as_object() else {
        return Err(SyncError::Argument(
            "outpost_sync: options must be a JSON object".into(),
        ));
    };
    for (k, v) in map {
        match k.as_str() {
            "timeout_ms" => {
                let ms = v
                    .as_u64()
                    .filter(|&n| (1..=600_000).contains(&n))
                    .ok_or_else(|| {
                        SyncError::Argument(
                            "outpost_sync: timeout_ms must be an integer from 1 to 600000".into(),
                        )
                    })?;
                let d = std::time::Duration::from_millis(ms);
                o.timeouts = Timeouts { connect: d, io: d };
            }
            "live_seconds" => {
                let n = v
                    .as_u64()
                    .filter(|&n| n <= live::MAX_SECONDS)
                    .ok_or_else(|| {
                        SyncError::Argument(format!(
                            "outpost_sync: live_seconds must be an integer from 0 to {} (0: no live mode)",
                            live::MAX_SECONDS
                        ))
                    })?;
                o.live = (n > 0).then(|| std::time::Duration::from_secs(n));
            }
            other => {
                return Err(SyncError::Argument(format!(
                "outpost_sync: unknown option {other:?}; known options: timeout_ms, live_seconds"
            )))
            }
        }
    }
    Ok(o)
}

/// `outpost_sync([peer [, options]])`.
pub(crate) fn sql_sync(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let started = Instant::now();
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_sync"));
    }
    let _progress = super::progress::Running::start(call.conn);
    sync(call, args, started).map_err(|e| e.into_error("outpost_sync"))
}

fn sync(call: &Call, args: &[Arg], started: Instant) -> Result<Value, SyncError> {
    let wanted = match args.first() {
        None | Some(Arg::Null) => None,
        Some(Arg::Text(t)) => {
            peers::wanted(t)?;
            Some(t.to_string())
        }
        Some(_) => {
            return Err(SyncError::Argument(
                "outpost_sync: peer must be text: \"hub\", \"cloud\" or a site id prefix".into(),
            ))
        }
    };
    let options = parse_options(args.get(1))?;
    crate::schema::ensure(call.conn)?;
    identity::ensure_tables(call.conn)?;
    let all = peers::load(call.conn)?;
    if all.is_empty() {
        return Err(SyncError::NotEnrolled { wanted: None });
    }
    let candidates = match &wanted {
        Some(w) => peers::select(all, w)?,
        None => all,
    };
    let site = crate::sites::site_id(call.conn)?;
    let id = identity::load_or_create(call.conn, site)?;
    let mut skipped: Vec<(Peer, SyncError)> = Vec::new();
    for peer in candidates {
        match sync_with(call, &id, &peer, options.timeouts) {
            Ok((mut counts, address, ids_granted)) => {
                peers::synced(call.conn, peer.site, unix_now())?;
                let live_run = options
                    .live
                    .map(|window| live::run(call, &id, &peer, options.timeouts, window));
                if let Some(run) = &live_run {
                    add(&mut counts, &run.counts);
                    if run.counts.pushed + run.counts.pulled > 0 {
                        peers::synced(call.conn, peer.site, unix_now())?;
                    }
                }
                let skipped: Vec<serde_json::Value> = skipped
                    .iter()
                    .map(|(p, e)| json!({"peer": peers::role_name(p.role), "site": p.site.to_string(), "error": e.to_string()}))
                    .collect();
                let mut out = json!({
                    "peer": peers::role_name(peer.role),
                    "site": peer.site.to_string(),
                    "address": address,
                    "pushed": counts.pushed,
                    "pulled": counts.pulled,
                    "applied": counts.applied,
                    "unchanged": counts.unchanged,
                    "conflicts": counts.conflicts,
                    "quarantined": counts.quarantined,
                    "batches_pushed": counts.batches_pushed,
                    "batches_pulled": counts.batches_pulled,
                    "bytes_pulled": counts.bytes_pulled,
                    "ms": started.elapsed().as_millis() as u64,
                });
                let mut granted = serde_json::Map::new();
                for (sequence, n) in ids_granted {
                    let total = granted.get(&sequence).and_then(|v| v.as_u64()).unwrap_or(0);
                    granted.insert(sequence, json!(total + n));
                }
                out["ids_granted"] = serde_json::Value::Object(granted);
                out["live_ms"] = json!(0);
                if let Some(run) = live_run {
                    out["live_ms"] = json!(run.elapsed.as_millis() as u64);
                    out["live_sessions"] = json!(run.sessions);
                    if let Some(e) = run.error {
                        out["live_error"] = json!(e.to_string());
                    }
                }
                if !skipped.is_empty() {
                    out["skipped"] = serde_json::Value::Array(skipped);
                }
                return Ok(Value::Text(out.to_string()));
            }
            Err(e) => skipped.push((peer, e)),
        }
    }
    // Every candidate failed: report the first (the preferred peer), and the others after it.
    let mut errors = skipped.into_iter();
    let (_, first) = errors
        .next()
        .ok_or(SyncError::NotEnrolled { wanted: None })?;
    let rest: Vec<String> = errors.map(|(p, e)| format!("{}: {e}", p.label())).collect();
    if rest.is_empty() {
        return Err(first);
    }
    Err(SyncError::Argument(format!(
        "{first} (also tried {})",
        rest.join("; ")
    )))
}

/// Numbers granted in a sync, per sequence (one entry per grant).
type Granted = Vec<(String, u64)>;

/// Sessions with one peer until nothing is left to push; the counts, the address used and the
/// ids granted (per sequence).
fn sync_with(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    timeouts: Timeouts,
) -> Result<(Counts, String, Granted), SyncError> {
    let mut total = Counts::default();
    let mut address = String::new();
    let mut granted = Vec::new();
    for _ in 0..MAX_SESSIONS {
        let mut store = EngineStore::new(call, id.site);
        let r = session(call, id, peer, timeouts, &mut store, None);
        add(&mut total, &store.counts);
        granted.append(&mut store.ids_granted);
        address = r?.0;
        if !store.more_to_push {
            break;
        }
    }
    Ok((total, address, granted))
}

pub(super) fn add(total: &mut Counts, c: &Counts) {
    total.pushed += c.pushed;
    total.pulled += c.pulled;
    total.batches_pushed += c.batches_pushed;
    total.batches_pulled += c.batches_pulled;
    total.bytes_pulled += c.bytes_pulled;
    total.applied += c.applied;
    total.unchanged += c.unchanged;
    total.conflicts += c.conflicts;
    total.quarantined += c.quarantined;
}

/// Connects and authenticates to `peer` (the counter is committed before message 1).
pub(crate) fn open(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    purpose: Purpose,
    timeouts: Timeouts,
    label: String,
) -> Result<(Link, String), SyncError> {
    let mut discovered = false;
    let (stream, address) = match transport::connect(&peer.addresses, timeouts) {
        Ok(found) => found,
        // The hub's known addresses are dead: ask the LAN where a hub with its site id is now.
        Err(mut tried) => {
            let lan = discover::lan_addresses(peer);
            if peer.role == PeerRole::Hub && lan.is_empty() {
                tried.push((
                    "LAN (mDNS)".into(),
                    "no hub with this site id answered".into(),
                ));
            }
            match transport::connect(&lan, timeouts) {
                Ok(found) => {
                    discovered = true;
                    found
                }
                Err(more) => {
                    tried.extend(more);
                    return Err(SyncError::Unreachable {
                        peer: label.clone(),
                        tried,
                    });
                }
            }
        }
    };
    let counter = identity::next_counter(call.conn)?;
    let link = transport::handshake(
        stream,
        transport::Hello {
            identity: &id.keypair,
            site: id.site,
            counter,
            peer_key: peer.key,
            peer_site: peer.site,
            purpose,
            peer: label,
            address: address.clone(),
        },
    )?;
    if discovered {
        // The handshake proved the pinned key at this address: try it first next time.
        discover::remember(call.conn, peer, &address)?;
    }
    Ok((link, address))
}

/// One session: hello, push, commit, pull, bye; with `live`, between the pull and the bye, the
/// live wait (`live.rs`). Returns the address used and how the live wait ended.
pub(super) fn session(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    timeouts: Timeouts,
    store: &mut EngineStore,
    live: Option<Live>,
) -> Result<(String, live::End), SyncError> {
    let (mut link, address) = open(call, id, peer, Purpose::Session, timeouts, peer.label())?;
    let mut sid = [0u8; 16];
    getrandom::getrandom(&mut sid)
        .map_err(|e| SyncError::Argument(format!("no randomness for a session id: {e}")))?;
    let mut client = ClientSession::new(ClientConfig {
        site: id.site,
        role: PeerRole::Device,
        fingerprint: store::fingerprint(call)?,
        wall_clock_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        session: SessionId(sid),
        live: live.is_some(),
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    });
    let r = drive(&mut link, &mut client, store).and_then(|()| match live {
        None => Ok(live::End::Done),
        Some(l) => {
            let end = live::wait(call, &mut link, &mut client, store, l, timeouts)?;
            // The deadline may fall inside a pull: apply what arrived before ending cleanly.
            ClientStore::flush(store)
                .map_err(|e| typed(SessionError::Store(e.to_string()), store))?;
            link.send(&Message::Bye)?;
            Ok(end)
        }
    });
    match &r {
        Err(SyncError::Session(e)) => {
            if let Some(m) = e.to_message() {
                let _ = link.send(&m);
            }
        }
        // A local failure: tell the peer without its detail.
        Err(SyncError::Engine(_) | SyncError::Restored { .. }) => {
            let e = SessionError::Store(String::new());
            if let Some(m) = e.to_message() {
                let _ = link.send(&m);
            }
        }
        _ => {}
    }
    link.close();
    r.map(|end| (address, end))
}

/// Runs the session until it is done, or, in live mode, until its first pull (and the id
/// requests after it) is complete.
fn drive<'c>(
    link: &mut Link,
    client: &mut ClientSession<EngineStore<'c>>,
    store: &mut EngineStore<'c>,
) -> Result<(), SyncError> {
    loop {
        loop {
            let polled = client.poll(store);
            match polled.map_err(|e| typed(e, store))? {
                Some(m) => link.send(&m)?,
                None => break,
            }
        }
        if client.is_done() {
            return Ok(());
        }
        let msg = link.recv()?;
        let handled = client.handle(msg, store);
        handled.map_err(|e| typed(e, store))?;
        if client.is_live() {
            // Live: the client now waits for `Notify` (nothing to send).
            return Ok(());
        }
    }
}

/// A session error, or the store's typed error behind a `SessionError::Store`.
pub(super) fn typed(e: SessionError, store: &mut EngineStore) -> SyncError {
    match (&e, store.failed.take()) {
        (SessionError::Store(_), Some(failed)) => failed,
        _ => SyncError::Session(e),
    }
}
