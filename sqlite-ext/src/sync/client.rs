//! `outpost_sync([peer [, options]])`: sessions with an enrolled peer (`session.rs`) until
//! nothing is left to push, then, with `live_seconds`, live sessions (`live.rs`) for that long.

use super::identity::{self, Identity};
use super::live::{self, End, Live};
use super::peers::{self, Peer};
use super::session::session;
use super::store::{Counts, EngineStore, Held, SentMarks};
use crate::clock::unix_now;
use crate::clock_ahead::{self, Refusal};
use crate::error::Error;
use crate::error::SyncError;
use crate::fold::db_version;
use crate::functions::{Arg, Call};
use outpost_link::{Backoff, LinkError, Timeouts};
use outpost_protocol::message::ErrorCode;
use outpost_protocol::Value;
use serde_json::json;
use std::time::{Duration, Instant};

/// Sessions one `outpost_sync` runs at most (each pushes up to `store::PUSH_BUDGET`).
const MAX_SESSIONS: u32 = 64;
/// Attempts of one session while the peer answers busy (its memory for pushes is full, or it
/// has too many connections) before the sync gives up: with [`BUSY_WAIT_MIN`] to
/// [`BUSY_WAIT_MAX`] between them, about 15-20 s of waiting, several times what one full
/// session of another device takes to commit and give its memory back.
const BUSY_ATTEMPTS: u32 = 8;
/// The first wait after a busy answer; each next one doubles, up to [`BUSY_WAIT_MAX`] (drawn in
/// the upper quarter of the step, so devices refused together do not come back together).
const BUSY_WAIT_MIN: Duration = Duration::from_millis(250);
/// The longest wait between two attempts of a busy peer.
const BUSY_WAIT_MAX: Duration = Duration::from_secs(4);
/// Live sessions one call runs at most (each local commit burst starts one).
const MAX_LIVE_SESSIONS: u32 = 100_000;

/// Options of `outpost_sync`'s second argument.
#[derive(Debug, Default)]
struct Options {
    timeouts: Timeouts,
    /// Stay connected this long after the sync (`live_seconds`).
    live: Option<Duration>,
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
                let d = Duration::from_millis(ms);
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
                o.live = (n > 0).then(|| Duration::from_secs(n));
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
            Ok((mut counts, address, ids_granted, mut held)) => {
                peers::synced(call.conn, peer.site, unix_now())?;
                let live_run = options
                    .live
                    .map(|window| run_live(call, &id, &peer, options.timeouts, window));
                if let Some(run) = &live_run {
                    counts.add(&run.counts);
                    if let Some(h) = &run.held {
                        held = h.clone();
                    }
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
                    "outside_grant": counts.outside_grant,
                    "batches_pushed": counts.batches_pushed,
                    "batches_pulled": counts.batches_pulled,
                    "bytes_pulled": counts.bytes_pulled,
                    "control_accepted": counts.control_accepted,
                    "control_refused": counts.control_refused,
                    "scopes_dropped": counts.scopes_dropped,
                    "keys_received": counts.keys_received,
                    "keys_missing": counts.keys_missing,
                    "busy_retries": counts.busy_retries,
                    "held": held.values().map(|h| h.batches).sum::<u64>(),
                    "held_origins": held_json(&held),
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
    let others: Vec<(String, SyncError)> = errors.map(|(p, e)| (p.label(), e)).collect();
    if others.is_empty() {
        return Err(first);
    }
    Err(SyncError::AllFailed {
        first: Box::new(first),
        others,
    })
}

/// Numbers granted in a sync, per sequence (one entry per grant).
type Granted = Vec<(String, u64)>;

/// Held batches as the sync result and `outpost_status()` show them: origin (hex) → batches.
pub(crate) fn held_json(held: &Held) -> serde_json::Value {
    held.iter()
        .map(|(origin, h)| (origin.to_string(), json!(h.batches)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Sessions with one peer until nothing is left to push; the counts, the address used, the ids
/// granted (per sequence) and what the last pull held (each pull brings the held batches again,
/// so they are not summed over sessions).
///
/// A session the peer refuses as busy is run again after a wait ([`BUSY_ATTEMPTS`] at most in a
/// row): a relay refuses a push when the memory all its peers' pushes share is full (two
/// devices pushing full sessions at once can fill a cloud's), before it keeps any of it, and
/// what earlier sessions committed stays acknowledged. Nothing of the refused session was
/// stored, so the next one pushes it again from the peer's vector.
fn sync_with(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    timeouts: Timeouts,
) -> Result<(Counts, String, Granted, Held), SyncError> {
    let mut total = Counts::default();
    let mut address = String::new();
    let mut granted = Vec::new();
    let mut held = Held::new();
    let mut restamped = false;
    let mut busy = Backoff::new(BUSY_WAIT_MIN, BUSY_WAIT_MAX);
    let mut busy_waited = Duration::ZERO;
    let mut sessions = 0;
    while sessions < MAX_SESSIONS {
        let mut store = EngineStore::new(call, id.site);
        let r = session(call, id, peer, timeouts, &mut store, None);
        total.add(&store.counts);
        granted.append(&mut store.ids_granted);
        held = std::mem::take(&mut store.held);
        match r {
            Err(e) if refused_clock_ahead(&e) => {
                sessions += 1;
                answer_clock_ahead(call, peer, &store, &mut restamped)?;
                continue;
            }
            Err(e) if refused_busy(&e) => {
                if busy.failures() + 1 >= BUSY_ATTEMPTS {
                    return Err(SyncError::StayedBusy {
                        peer: peers::role_name(peer.role).to_string(),
                        attempts: busy.failures() + 1,
                        waited: busy_waited,
                        last: Box::new(e),
                    });
                }
                let wait = busy.fail();
                busy_waited += wait;
                total.busy_retries += 1;
                log::info!(
                    "outpost_sync: {} busy, session again in {} ms: {e}",
                    peers::role_name(peer.role),
                    wait.as_millis()
                );
                std::thread::sleep(wait);
                continue;
            }
            r => address = r?.0,
        }
        sessions += 1;
        // A session went through: the next refusal starts the waits again.
        busy = Backoff::new(BUSY_WAIT_MIN, BUSY_WAIT_MAX);
        busy_waited = Duration::ZERO;
        if !store.more_to_push {
            break;
        }
    }
    Ok((total, address, granted, held))
}

/// Whether the peer said it is busy: its memory for pushes is full (`Error(Busy)`), or it has
/// too many connections (the busy notice). Both mean retry later, as is.
fn refused_busy(e: &SyncError) -> bool {
    matches!(
        e,
        SyncError::Link(
            LinkError::Peer {
                code: ErrorCode::Busy,
                ..
            } | LinkError::Busy { .. }
        )
    )
}

/// Answers a push the peer refused as stamped too far ahead: the first time in a call,
/// re-stamps what the push was the first to carry (nothing of it was stored; `clock_ahead.rs`)
/// so the caller pushes again in a new session; the second time, the typed error.
fn answer_clock_ahead(
    call: &Call,
    peer: &Peer,
    store: &EngineStore,
    restamped: &mut bool,
) -> Result<(), SyncError> {
    let refusal = Refusal {
        stamped_ms: store.pushed_max_ms,
        relay_ms: store.peer_clock_ms,
    };
    if *restamped {
        clock_ahead::refused_again(call, refusal)?;
        return Err(SyncError::ClockAhead {
            peer: peers::role_name(peer.role).to_string(),
            stamped_ms: refusal.stamped_ms,
            relay_ms: refusal.relay_ms,
        });
    }
    let marks = store.sent_marks.clone().unwrap_or(SentMarks {
        before: None,
        after: None,
    });
    clock_ahead::answer(call, marks.before, marks.after, refusal)?;
    *restamped = true;
    Ok(())
}

/// Whether the peer refused the push as stamped too far ahead of its trusted time.
fn refused_clock_ahead(e: &SyncError) -> bool {
    matches!(
        e,
        SyncError::Link(LinkError::Peer {
            code: ErrorCode::ClockAhead,
            ..
        })
    )
}

/// What the live phase of one call did.
#[derive(Debug, Default)]
struct LiveRun {
    counts: Counts,
    elapsed: Duration,
    sessions: u32,
    /// What the last live session's last pull held.
    held: Option<Held>,
    /// Why live mode ended before its deadline, if it did (the sync before it succeeded).
    error: Option<SyncError>,
}

/// Live sessions with `peer` for `window` (each burst of local commits starts the next).
fn run_live(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    timeouts: Timeouts,
    window: Duration,
) -> LiveRun {
    let started = Instant::now();
    let deadline = started + window;
    let mut out = LiveRun::default();
    let mut restamped = false;
    while Instant::now() < deadline && out.sessions < MAX_LIVE_SESSIONS {
        let baseline = match db_version(call.conn) {
            Ok(v) => v,
            Err(e) => {
                out.error = Some(e.into());
                break;
            }
        };
        let mut store = EngineStore::new(call, id.site);
        let r = session(
            call,
            id,
            peer,
            timeouts,
            &mut store,
            Some(Live { deadline, baseline }),
        );
        out.sessions += 1;
        out.counts.add(&store.counts);
        out.held = Some(std::mem::take(&mut store.held));
        match r {
            Ok((_, End::Again)) => {}
            Ok((_, End::Done | End::Deadline)) => break,
            // A write of a connection still on its old clock, refused: re-stamped, and the
            // next live session pushes it again (once per call, as the sync before).
            Err(e) if refused_clock_ahead(&e) => {
                if let Err(e) = answer_clock_ahead(call, peer, &store, &mut restamped) {
                    out.error = Some(e);
                    break;
                }
            }
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out.elapsed = started.elapsed();
    out
}
