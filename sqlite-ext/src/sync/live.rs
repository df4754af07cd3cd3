//! Live mode of `outpost_sync` (`live_seconds`), the device's side: after the normal sync, stay
//! connected to the peer for a while, applying what it announces and pushing this database's
//! new commits.
//!
//! ```text
//! session (live)  Hello ⇄ Hello, push, commit, pull          (as a normal session)
//!                 outpost_link::LiveWait, one socket read at a time (≤ POLL):
//!                   Notify  → Pull, Chunk × m (applied in groups), PullDone (the rest applied)
//!                   Ping    → Pong
//!                   between pulls, every POLL: own change sequence moved? → Bye, next session
//!                   nothing sent for KEEPALIVE  → Ping (the hub drops idle links)
//!                   nothing received for KEEPALIVE + the I/O timeout → the link is dead
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
//!
//! A peer that stops answering (a hub that hangs, a cable pulled without a reset) is noticed:
//! it answers every keepalive `Ping`, so nothing received for a keepalive interval plus the
//! sync's I/O timeout (`timeout_ms`, 30 s by default) ends live mode with `live_error`.

use super::store::EngineStore;
use crate::error::SyncError;
use crate::fold::db_version;
use crate::functions::Call;
use outpost_link::{Event, Link, LiveConfig, LiveWait, Timeouts};
use outpost_protocol::session::ClientSession;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest `live_seconds` accepted (one hour).
pub(crate) const MAX_SECONDS: u64 = 3600;
/// How often the database's change sequence is checked while waiting.
const POLL: Duration = Duration::from_millis(100);
/// A `Ping` after this long without sending anything (the hub closes links idle for 120 s).
const KEEPALIVE: Duration = Duration::from_secs(20);

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

/// The live wait's timing for a sync with `timeouts`.
fn config(timeouts: Timeouts) -> LiveConfig {
    LiveConfig {
        poll: POLL,
        keepalive: KEEPALIVE,
        // The peer answers the keepalive ping within the I/O timeout, as any expected reply.
        silence: KEEPALIVE + timeouts.io,
    }
}

/// The live wait of a session whose first pull is complete: until the deadline, or until there
/// is something of this database's own to push.
pub(crate) fn wait<'c>(
    call: &Call,
    link: &mut Link<TcpStream>,
    client: &mut ClientSession<EngineStore<'c>>,
    store: &mut EngineStore<'c>,
    live: Live,
    timeouts: Timeouts,
) -> Result<End, SyncError> {
    if store.more_to_push {
        return Ok(End::Again);
    }
    let mut wait = LiveWait::new(config(timeouts), live.deadline);
    loop {
        let event = wait.next(link, client, store);
        match event.map_err(|e| store.typed(e))? {
            Event::Poll if db_version(call.conn)? > live.baseline => return Ok(End::Again),
            Event::Poll | Event::Received => {}
            Event::Deadline => return Ok(End::Deadline),
            Event::Done => return Ok(End::Done),
        }
    }
}
