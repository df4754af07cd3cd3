//! Live mode of `outpost_sync` (`live_seconds`): after the normal sync, stay connected to the
//! peer for a while, applying what it announces and pushing this database's new commits.
//!
//! ```text
//! session (live)  Hello ⇄ Hello, push, commit, pull          (as a normal session)
//!                 wait, one socket read at a time (≤ POLL):
//!                   Notify  → Pull, Chunk × m (applied in groups), PullDone (the rest applied)
//!                   Ping    → Pong
//!                   silence → own change sequence moved?  → Bye, next session (it pushes)
//!                             nothing sent for KEEPALIVE  → Ping (the hub drops idle links)
//!                   deadline → (chunks kept mid-pull applied) Bye
//! ```
//!
//! Everything runs in the calling thread (a SQLite connection is used by one thread at a time):
//! the waiting is a socket read with a short timeout, between which the connection is idle, in
//! autocommit, holding no transaction, so the app's other connections write freely. New local
//! commits are detected by polling the database's own change sequence (`max(seq)` of the log).
//! The session protocol has no push after the pull of a live session, so local commits are
//! pushed by ending the session and starting the next one at once (a handshake, ~1 ms on a LAN):
//! its push sends them and its pull catches up, then it waits again.

use super::client::{add, session, typed};
use super::identity::Identity;
use super::peers::Peer;
use super::store::{Counts, EngineStore};
use super::transport::{Link, Timeouts};
use super::SyncError;
use crate::fold::db_version;
use crate::functions::Call;
use outpost_protocol::message::Message;
use outpost_protocol::session::ClientSession;
use std::time::{Duration, Instant};

/// The largest `live_seconds` accepted (one hour).
pub(crate) const MAX_SECONDS: u64 = 3600;
/// How often the database's change sequence is checked while waiting.
const POLL: Duration = Duration::from_millis(100);
/// A `Ping` after this long without sending anything (the hub closes links idle for 120 s).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Live sessions one call runs at most (each local commit burst starts one).
const MAX_LIVE_SESSIONS: u32 = 100_000;

/// What a live session waits with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Live {
    /// When to stop (Bye).
    pub deadline: Instant,
    /// The database's own change sequence before the session started: above it, there is news
    /// to push.
    pub baseline: u64,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Not live: the session ran to its `Bye`.
    Done,
    /// The deadline passed.
    Deadline,
    /// Local commits (or a push left over): start the next session now.
    Again,
}

/// What the live phase of one call did.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub counts: Counts,
    pub elapsed: Duration,
    pub sessions: u32,
    /// Why live mode ended before its deadline, if it did (the sync before it succeeded).
    pub error: Option<SyncError>,
}

/// Live sessions with `peer` for `window`.
pub(crate) fn run(
    call: &Call,
    id: &Identity,
    peer: &Peer,
    timeouts: Timeouts,
    window: Duration,
) -> Run {
    let started = Instant::now();
    let deadline = started + window;
    let mut out = Run::default();
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
        add(&mut out.counts, &store.counts);
        match r {
            Ok((_, End::Again)) => {}
            Ok((_, End::Done | End::Deadline)) => break,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out.elapsed = started.elapsed();
    out
}

/// The live wait of a session whose first pull is complete: until the deadline, or until there
/// is something of this database's own to push.
pub(crate) fn wait<'c>(
    call: &Call,
    link: &mut Link,
    client: &mut ClientSession<EngineStore<'c>>,
    store: &mut EngineStore<'c>,
    live: Live,
    timeouts: Timeouts,
) -> Result<End, SyncError> {
    if store.more_to_push {
        return Ok(End::Again);
    }
    let mut last_sent = Instant::now();
    let mut last_check = Instant::now();
    let mut pulling = false;
    let mut nonce = 0u64;
    loop {
        let now = Instant::now();
        if now >= live.deadline {
            return Ok(End::Deadline);
        }
        // Between pulls: is there anything of our own to push?
        if !pulling && now.duration_since(last_check) >= POLL {
            last_check = now;
            if db_version(call.conn)? > live.baseline {
                return Ok(End::Again);
            }
        }
        if now.duration_since(last_sent) >= KEEPALIVE {
            nonce += 1;
            link.send(&Message::Ping { nonce })?;
            last_sent = now;
        }
        let wait = POLL.min(live.deadline - now);
        let Some(msg) = link.recv_within(wait, timeouts.io)? else {
            continue;
        };
        match &msg {
            Message::Notify => pulling = true,
            Message::PullDone { .. } => pulling = false,
            _ => {}
        }
        let handled = client.handle(msg, store);
        handled.map_err(|e| typed(e, store))?;
        loop {
            let polled = client.poll(store);
            match polled.map_err(|e| typed(e, store))? {
                Some(m) => {
                    link.send(&m)?;
                    last_sent = Instant::now();
                }
                None => break,
            }
        }
        if client.is_done() {
            return Ok(End::Done);
        }
    }
}
