//! The server side of a session: [`ServerConfig`] and [`ServerSession`], which stages pushed
//! batches, commits them through a [`ServerStore`], serves pulls and answers id requests.

use super::{check_signature, control_messages, covered_of, peer_error, push_digest, store_err};
use super::{CommitRecord, ServerStore, SessionError, StagedBatch};
use crate::batch::codec::{self, Limits as BatchLimits};
use crate::batch::Direction;
use crate::handshake::PublicKey;
use crate::hlc::admission_limit_ms;
use crate::id_range::IdGrant;
use crate::message::{Bytes, Hello, Message, PeerRole, PushAgainReason, SessionId};
use crate::scope::Scopes;
use crate::site::SiteId;
use crate::vector::{ControlVector, VersionVector};
use crate::PROTOCOL_VERSION;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

/// Which origins a peer may push batches of: the origin binding of docs/design.md section 10.
/// The handshake authenticated the peer's key and site; its enrolment says what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOrigins {
    /// Only its own site's changes: every device.
    Own,
    /// Other sites' changes, but never the server's own: a hub enrolled as one, relaying the
    /// batches of the devices behind it.
    Relayed,
}

/// A server's settings for one session.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The server's site id.
    pub site: SiteId,
    /// Hub or cloud.
    pub role: PeerRole,
    /// The fingerprint to require of clients; `None` for a schema-free mailbox (sends zeros).
    pub fingerprint: Option<[u8; 32]>,
    /// The client's site id as the handshake authenticated it.
    pub peer_site: SiteId,
    /// The client's static key as the handshake authenticated it: a device's own batches must
    /// carry its signature.
    pub peer_key: PublicKey,
    /// The origins the client may push (from what it enrolled as).
    pub peer_pushes: PushOrigins,
    /// The scopes granted to the client (docs/design.md section 10): pulls serve only those
    /// streams (and the unscoped one), and a device's own push holding a batch of any other
    /// stream is refused whole ([`SessionError::ScopeRefused`]). A relay's own pushes are judged
    /// per origin by the receiver, not by this.
    pub peer_grant: Scopes,
    /// The server's trusted time at hello (ms since the Unix epoch), for the client's skew
    /// check; 0 when the server has none (a hub not synced with the cloud since it booted).
    pub wall_clock_ms: u64,
    /// How far ahead of trusted time a device's own pushed clocks may run
    /// (`hlc::MAX_CLOCK_AHEAD_MS`): a push beyond it, and beyond the highest clock the store
    /// holds ([`ServerStore::highest_admitted`]), is refused as [`SessionError::ClockAhead`].
    /// Checked only when `wall_clock_ms` is not 0 (without trusted time a server cannot judge)
    /// and only for [`PushOrigins::Own`] (a relayed batch was judged by its first relay).
    pub max_clock_ahead_ms: u64,
    /// Staged batches expire this long after the first push of a session.
    pub stage_ttl_ms: u64,
    /// Largest total of staged bytes per session.
    pub max_staged_bytes: usize,
    /// Batch decoding limits.
    pub batch_limits: BatchLimits,
}

enum ServerState<P> {
    AwaitHello,
    Ready,
    Serving { plan: P, vector: VersionVector },
    Done,
}

impl<P> ServerState<P> {
    fn name(&self) -> &'static str {
        match self {
            ServerState::AwaitHello => "awaiting hello",
            ServerState::Ready => "ready",
            ServerState::Serving { .. } => "serving a pull",
            ServerState::Done => "ended",
        }
    }
}

/// The server side of one session.
pub struct ServerSession<S: ServerStore> {
    config: ServerConfig,
    state: ServerState<S::PullPlan>,
    session: SessionId,
    staged: Vec<StagedBatch>,
    staged_bytes: usize,
    staged_since_ms: u64,
    /// `now_ms` when the hello arrived: trusted time later is `wall_clock_ms` plus the time
    /// since (a live session may last longer than the bound).
    hello_at_ms: u64,
    peer_hello: Option<Hello>,
    /// The key envelopes last sent to the client (its hello's answer, or a later `Keys`).
    keys_sent: Vec<crate::message::SealedKeys>,
    /// The control entries the client holds: its hello's, and every one sent it since.
    peer_control: ControlVector,
    out: VecDeque<Message>,
}

impl<S: ServerStore> fmt::Debug for ServerSession<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSession")
            .field("state", &self.state.name())
            .field("staged", &self.staged.len())
            .finish_non_exhaustive()
    }
}

impl<S: ServerStore> ServerSession<S> {
    /// A session waiting for the client's hello.
    pub fn new(config: ServerConfig) -> Self {
        ServerSession {
            config,
            state: ServerState::AwaitHello,
            session: SessionId::default(),
            staged: Vec::new(),
            staged_bytes: 0,
            staged_since_ms: 0,
            hello_at_ms: 0,
            peer_hello: None,
            keys_sent: Vec::new(),
            peer_control: ControlVector::new(),
            out: VecDeque::new(),
        }
    }

    /// Replaces the client's grant (a regrant written while it stays connected): later pulls
    /// serve, and later pushes are judged by, the new one. Returns whether it changed.
    pub fn set_peer_grant(&mut self, grant: Scopes) -> bool {
        let changed = self.config.peer_grant != grant;
        self.config.peer_grant = grant;
        changed
    }

    /// Queues the control entries written since the client last got any (a revocation, a
    /// grant, a table setting made while it stays connected in live mode). Only between pulls
    /// (state ready): a pull in progress keeps its order, and the next call sends them.
    /// Returns how many entries were queued.
    pub fn send_control(&mut self, store: &mut S) -> Result<usize, SessionError> {
        if !matches!(self.state, ServerState::Ready) {
            return Ok(0);
        }
        let entries = store.control_for(&self.peer_control).map_err(store_err)?;
        self.note_sent(&entries);
        let n = entries.len();
        self.out.extend(control_messages(entries));
        self.send_keys(store)?;
        Ok(n)
    }

    /// Queues the key envelopes for the client when they differ from the last it was sent (a
    /// new device's, after a hub's entries admitted it; new keys after a grant or an epoch).
    fn send_keys(&mut self, store: &mut S) -> Result<(), SessionError> {
        let Some(hello) = &self.peer_hello else {
            return Ok(());
        };
        let keys = store.keys_for(hello).map_err(store_err)?;
        if keys != self.keys_sent {
            self.keys_sent = keys.clone();
            self.out.push_back(Message::Keys { keys });
        }
        Ok(())
    }

    /// Adds `entries` (about to be sent) to what the client holds.
    fn note_sent(&mut self, entries: &[Vec<u8>]) {
        for e in entries {
            // The store hands out entries it accepted: they decode. One that does not is not
            // counted, and is offered again next time.
            if let Ok(e) = crate::control::decode_entry(e) {
                if e.seq > self.peer_control.get(&e.writer) {
                    self.peer_control.set(e.writer, e.seq);
                }
            }
        }
    }

    /// The client's hello, once received (skew assessment, status).
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref()
    }

    /// Bytes of pushed batches held in memory until the next `Commit` (what the server's
    /// staging budget counts for this session).
    pub fn staged_bytes(&self) -> usize {
        self.staged_bytes
    }

    /// True when [`ServerSession::poll`] has something to return (a queued answer, or a pull in
    /// progress): a caller lending the store per call can skip polling an idle session.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || matches!(self.state, ServerState::Serving { .. })
    }

    /// True once the session ended cleanly (`Bye`).
    pub fn is_done(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// Live mode: new changes arrived; tells an idle client to pull.
    pub fn notify(&mut self) {
        if matches!(self.state, ServerState::Ready) {
            self.out.push_back(Message::Notify);
        }
    }

    /// Handles one message from the client.
    pub fn handle(&mut self, msg: Message, now_ms: u64, store: &mut S) -> Result<(), SessionError> {
        let r = self.handle_inner(msg, now_ms, store);
        if r.is_err() {
            self.state = ServerState::Done;
            self.out.clear();
            // Nothing will be committed: give the memory back now, not when the caller drops
            // the session (it may keep the connection open a while to say why).
            self.staged = Vec::new();
            self.staged_bytes = 0;
        }
        r
    }

    fn handle_inner(
        &mut self,
        msg: Message,
        now_ms: u64,
        store: &mut S,
    ) -> Result<(), SessionError> {
        let unexpected = |state: &ServerState<S::PullPlan>, msg: &Message| {
            Err(SessionError::Unexpected {
                state: state.name(),
                tag: msg.tag(),
            })
        };
        match (&self.state, msg) {
            (ServerState::Done, _) => Err(SessionError::Finished),
            (_, msg @ Message::Error { .. }) => Err(peer_error(msg)),
            (ServerState::AwaitHello, Message::Hello(h)) => {
                self.hello_at_ms = now_ms;
                self.hello(h, store)
            }
            (ServerState::AwaitHello, msg) => unexpected(&self.state, &msg),
            (_, Message::Ping { nonce }) => {
                self.out.push_back(Message::Pong { nonce });
                Ok(())
            }
            (_, Message::Pong { .. }) => Ok(()),
            (_, Message::Bye) => {
                self.state = ServerState::Done;
                Ok(())
            }
            // Only a hub relays other writers' control entries; a device writes none.
            (ServerState::Ready, Message::Control { entries })
                if self.config.peer_pushes == PushOrigins::Relayed =>
            {
                let entries: Vec<Vec<u8>> = entries.into_iter().map(|b| b.0).collect();
                // The hub holds what it sent: never offered back to it.
                self.note_sent(&entries);
                store.control_received(entries).map_err(store_err)?;
                // The devices its entries admitted get their envelopes now, not a session later.
                self.send_keys(store)
            }
            (ServerState::Ready, Message::Push { session, batch }) => {
                self.stage(session, batch, now_ms, store)
            }
            (ServerState::Ready, Message::Commit { session }) => {
                self.commit(session, now_ms, store)
            }
            (ServerState::Ready, Message::Pull { vector }) => {
                // Only a device is served its own past batches (a regained scope); a relay's
                // hello declares none.
                let regain = match (&self.peer_hello, self.config.peer_pushes) {
                    (Some(h), PushOrigins::Own) => h.regain.as_slice(),
                    _ => &[],
                };
                let plan = store
                    .batches_for(
                        &vector,
                        &self.config.peer_site,
                        regain,
                        &self.config.peer_grant,
                    )
                    .map_err(store_err)?;
                if let Some((batches, bytes)) = store.pull_size(&plan).map_err(store_err)? {
                    self.out.push_back(Message::PullSize { batches, bytes });
                }
                self.state = ServerState::Serving { plan, vector };
                Ok(())
            }
            (ServerState::Ready, Message::IdRequest(request)) => {
                let ranges = store
                    .grant_ids(
                        &self.config.peer_site,
                        self.config.peer_pushes == PushOrigins::Own,
                        &request,
                    )
                    .map_err(store_err)?;
                let total = crate::id_range::check_ranges(&ranges)
                    .map_err(SessionError::StoreGrantInvalid)?;
                if !ranges.is_empty()
                    && (total != request.count || ranges[0].first <= request.above)
                {
                    return Err(SessionError::StoreGrantMismatch {
                        granted: total,
                        first: ranges[0].first,
                        count: request.count,
                        above: request.above,
                    });
                }
                self.out.push_back(Message::IdGrant(IdGrant {
                    request: request.request,
                    sequence: request.sequence,
                    ranges,
                }));
                Ok(())
            }
            (_, msg) => unexpected(&self.state, &msg),
        }
    }

    fn hello(&mut self, h: Hello, store: &mut S) -> Result<(), SessionError> {
        if h.protocol_version != PROTOCOL_VERSION {
            return Err(SessionError::UnsupportedVersion {
                peer: h.protocol_version,
                ours: PROTOCOL_VERSION,
            });
        }
        if h.site != self.config.peer_site {
            return Err(SessionError::SiteMismatch {
                hello: h.site,
                channel: self.config.peer_site,
            });
        }
        if let Some(fp) = self.config.fingerprint {
            if fp != h.fingerprint {
                return Err(SessionError::ConfigMismatch);
            }
        }
        let vector = store.vector().map_err(store_err)?;
        let control = store.control_vector().map_err(store_err)?;
        // The control entries the client lacks go right after the hello, before anything it
        // could pull: it judges every batch with them.
        let entries = store.control_for(&h.control).map_err(store_err)?;
        self.peer_control = h.control.clone();
        // Only a device's own streams drain; a relay's hello declares nothing of its own.
        if self.config.peer_pushes == PushOrigins::Own && !h.drains.is_empty() {
            store
                .drains_declared(&h.site, &h.drains)
                .map_err(store_err)?;
        }
        let keys = store.keys_for(&h).map_err(store_err)?;
        self.keys_sent = keys.clone();
        self.note_sent(&entries);
        self.session = h.session;
        self.peer_hello = Some(h);
        self.out.push_back(Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            site: self.config.site,
            role: self.config.role,
            fingerprint: self.config.fingerprint.unwrap_or([0; 32]),
            wall_clock_ms: self.config.wall_clock_ms,
            vector,
            session: SessionId::default(),
            control,
            drains: Vec::new(),
            regain: Vec::new(),
            keys,
        }));
        self.out.extend(control_messages(entries));
        self.state = ServerState::Ready;
        Ok(())
    }

    fn stage(
        &mut self,
        session: SessionId,
        batch: Bytes,
        now_ms: u64,
        store: &mut S,
    ) -> Result<(), SessionError> {
        // The first push after the hello or after a commit may start a new push session (a
        // client pushing again after `PushAgain` uses a fresh id); the rest must follow it.
        if self.staged.is_empty() {
            self.session = session;
        } else if session != self.session {
            return Err(SessionError::WrongSession);
        }
        let staged = self.staged_bytes + batch.0.len();
        if staged > self.config.max_staged_bytes {
            return Err(SessionError::TooLarge {
                staged,
                max: self.config.max_staged_bytes,
            });
        }
        let header =
            codec::verify(&batch.0, &self.config.batch_limits).map_err(SessionError::BadBatch)?;
        // A retired origin's batches are the cloud's own, pulled back (`retired_origin`).
        let retired = self.config.peer_pushes == PushOrigins::Relayed
            && store.retired_origin(&header.origin).map_err(store_err)?;
        let allowed = match self.config.peer_pushes {
            PushOrigins::Own => header.origin == self.config.peer_site,
            PushOrigins::Relayed => header.origin != self.config.site || retired,
        };
        if !allowed {
            // Ending the session drops everything staged with it: nothing of this push is stored.
            return Err(SessionError::ForeignOrigin {
                origin: header.origin,
                peer: self.config.peer_site,
                allowed: self.config.peer_pushes,
            });
        }
        // Signed by its origin: a device's own batches with the key its handshake proved; a
        // relayed batch with the key the store knows for its origin. An origin the store knows
        // no key for is not taken on the relay's word: the push is refused as "retry later"
        // (ending the session drops everything staged with it).
        let key = if header.origin == self.config.peer_site {
            self.config.peer_key
        } else {
            store.origin_key(&header.origin).map_err(store_err)?.ok_or(
                SessionError::KeyUnknown {
                    origin: header.origin,
                    range: header.range,
                },
            )?
        };
        check_signature(&header, &key)?;
        self.check_scope(&header, store)?;
        // A sealed tenant's bodies are stored sealed by every relay (docs/design.md section 10,
        // invariant S5): the first relay refuses a device's unsealed push. A relayed one is
        // taken (its relay took it before it knew the tenant is sealed; refusing it would stop
        // that relay's uplink for good, and losing it would lose the device's changes).
        if self.config.peer_pushes == PushOrigins::Own
            && header.key_epoch == 0
            && store.sealed_tenant().map_err(store_err)?
        {
            return Err(SessionError::Unsealed {
                origin: header.origin,
                scope: header.stream.clone(),
                range: header.range,
            });
        }
        self.check_epoch(&header, store)?;
        // Only the cloud writes `down` tables, and the cloud never pushes: it is the top of the
        // tree, and relays take its batches by pulling. So no push may carry one, but for a
        // retired origin's, pulled back to the cloud that lost them.
        if header.flags.direction == Direction::Down && !retired {
            return Err(SessionError::DirectionRefused {
                origin: header.origin,
                range: header.range,
            });
        }
        // Only the cloud writes transfers (cells credited to the sites that wrote them), and its
        // batches travel by pull: a pushed one claims other sites' writes (but for a retired
        // origin's, above).
        if header.flags.transfer && !retired {
            return Err(SessionError::TransferPushed {
                origin: header.origin,
                range: header.range,
            });
        }
        self.check_clock(&header, now_ms, store)?;
        if self.staged.is_empty() {
            self.staged_since_ms = now_ms;
        }
        self.staged_bytes = staged;
        self.staged.push(StagedBatch {
            header,
            bytes: batch.0,
        });
        Ok(())
    }

    /// A device writes only into scopes it holds (a referral travels in the row's old scope,
    /// which it held): a batch of any other stream is refused with the whole push. The batch
    /// is judged by the grant version it names (docs/design.md section 10, "One decision
    /// everywhere"), so changes written before a regrant still go up (the removed scope drains);
    /// a batch naming no version (0) by the grant the peer holds now; a version this relay does
    /// not know yet is refused as "retry later". A relayed batch is judged by its receiver.
    /// A scope the peer's grant no longer holds drains only up to the seq the device declared
    /// (its hello, or an earlier one the store kept): a batch reaching above it is refused.
    fn check_scope(
        &self,
        header: &crate::batch::BatchHeader,
        store: &mut S,
    ) -> Result<(), SessionError> {
        if self.config.peer_pushes != PushOrigins::Own || header.stream.is_empty() {
            return Ok(());
        }
        let granted = if header.grant_version == 0 {
            self.config.peer_grant.contains(&header.stream)
        } else {
            store
                .grant_at(&header.origin, header.grant_version)
                .map_err(store_err)?
                .ok_or(SessionError::GrantUnknown {
                    origin: header.origin,
                    version: header.grant_version,
                })?
                .contains(&header.stream)
        };
        let refused = || SessionError::ScopeRefused {
            origin: header.origin,
            scope: header.stream.clone(),
            range: header.range,
        };
        if !granted {
            return Err(refused());
        }
        if self.config.peer_grant.contains(&header.stream) {
            return Ok(());
        }
        let declared = self
            .peer_hello
            .as_ref()
            .and_then(|h| h.drains.iter().find(|d| d.scope == header.stream))
            .map(|d| d.last);
        let declared = match declared {
            Some(last) => Some(last),
            None => store
                .drain_of(&header.origin, &header.stream)
                .map_err(store_err)?,
        };
        match declared {
            Some(last) if header.range.hi > last => Err(refused()),
            _ => Ok(()),
        }
    }

    /// A relay refuses a push under a retired epoch only from a device it has handed the new one
    /// (docs/design.md section 10, "Sealed batches"): this session's hello answer carried the
    /// device's envelope, so it holds every current epoch; a device that learnt of none seals
    /// under what it holds and is not refused. A scope it drains (no longer in its grant) is
    /// not judged: its own batches pass under the epoch it held.
    fn check_epoch(
        &self,
        header: &crate::batch::BatchHeader,
        store: &mut S,
    ) -> Result<(), SessionError> {
        let handed = self.keys_sent.iter().any(|k| k.site == header.origin);
        if header.key_epoch == 0
            || !handed
            || self.config.peer_pushes != PushOrigins::Own
            || !self.config.peer_grant.contains(&header.stream)
        {
            return Ok(());
        }
        let current = store.current_epoch(&header.stream).map_err(store_err)?;
        if header.key_epoch < current {
            return Err(SessionError::RetiredEpoch {
                origin: header.origin,
                scope: header.stream.clone(),
                epoch: header.key_epoch,
                current,
            });
        }
        Ok(())
    }

    /// The first relay's time bound (docs/design.md section 10, "Time"): a device's own batch
    /// may run at most `max_clock_ahead_ms` ahead of trusted time, or up to a second above the
    /// highest clock the store holds (an edit of a far-future version the relay already
    /// admitted is stamped just above it). A relayed batch is not judged again, and a server
    /// without trusted time judges nothing.
    fn check_clock(
        &self,
        header: &crate::batch::BatchHeader,
        now_ms: u64,
        store: &mut S,
    ) -> Result<(), SessionError> {
        if self.config.peer_pushes != PushOrigins::Own || self.config.wall_clock_ms == 0 {
            return Ok(());
        }
        let trusted_ms = self
            .config
            .wall_clock_ms
            .saturating_add(now_ms.saturating_sub(self.hello_at_ms));
        let limit =
            |admitted| admission_limit_ms(trusted_ms, self.config.max_clock_ahead_ms, admitted);
        if header.max_hlc.millis() <= limit(crate::hlc::Hlc::ZERO) {
            return Ok(());
        }
        // Only a clock past the bound costs a read of the store.
        let admitted = store.highest_admitted().map_err(store_err)?;
        if header.max_hlc.millis() <= limit(admitted) {
            return Ok(());
        }
        Err(SessionError::ClockAhead {
            origin: header.origin,
            range: header.range,
            max_hlc: header.max_hlc,
            trusted_ms,
            admitted,
        })
    }

    fn commit(
        &mut self,
        session: SessionId,
        now_ms: u64,
        store: &mut S,
    ) -> Result<(), SessionError> {
        if session != self.session && !self.staged.is_empty() {
            return Err(SessionError::WrongSession);
        }
        let staged = core::mem::take(&mut self.staged);
        self.staged_bytes = 0;
        let again = |reason| Message::PushAgain { session, reason };
        if staged.is_empty() {
            self.out.push_back(again(PushAgainReason::UnknownSession));
            return Ok(());
        }
        if now_ms.saturating_sub(self.staged_since_ms) > self.config.stage_ttl_ms {
            self.out.push_back(again(PushAgainReason::SessionExpired));
            return Ok(());
        }
        let digest = push_digest(staged.iter().map(|b| &b.header));
        if let Some(record) = store.committed(&session).map_err(store_err)? {
            self.out.push_back(if record.digest == digest {
                Message::Ack {
                    session,
                    covered: record.covered,
                }
            } else {
                again(PushAgainReason::DifferentContent)
            });
            return Ok(());
        }
        let mut vector = store.vector().map_err(store_err)?;
        for b in &staged {
            if vector
                .advance(b.header.stream_id(), b.header.range)
                .is_err()
            {
                self.out.push_back(again(PushAgainReason::Gap));
                return Ok(());
            }
        }
        let record = CommitRecord {
            digest,
            covered: staged.iter().map(|b| covered_of(&b.header)).collect(),
        };
        store
            .commit(&session, &record, &staged)
            .map_err(store_err)?;
        self.out.push_back(Message::Ack {
            session,
            covered: record.covered,
        });
        Ok(())
    }

    /// The next message to send, or `None` when there is nothing more for now. Streams a pull
    /// one batch per call, so the caller can stop while the channel is full.
    pub fn poll(&mut self, store: &mut S) -> Result<Option<Message>, SessionError> {
        if let Some(m) = self.out.pop_front() {
            return Ok(Some(m));
        }
        let ServerState::Serving { plan, vector } = &mut self.state else {
            return Ok(None);
        };
        match store.next_batch(plan).map_err(store_err) {
            Ok(Some(bytes)) => {
                let header = match codec::decode_header(&bytes, &self.config.batch_limits) {
                    Ok(h) => h,
                    Err(e) => {
                        self.state = ServerState::Done;
                        return Err(SessionError::StoredBatchUndecodable(e));
                    }
                };
                // A plan sends each origin in seq order from the client's coverage; anything
                // else would be a store bug, and the client's own vector stays authoritative.
                let _ = vector.advance(header.stream_id(), header.range);
                // `up` tables are never served to devices: a device gets an `up` batch's signed
                // clear header alone, and covers its range with nothing to apply.
                let bytes = match self.config.peer_pushes {
                    PushOrigins::Own => match codec::withhold(&bytes) {
                        Ok(Some(clear)) => clear,
                        Ok(None) => bytes,
                        Err(e) => {
                            self.state = ServerState::Done;
                            return Err(SessionError::StoredBatchUndecodable(e));
                        }
                    },
                    PushOrigins::Relayed => bytes,
                };
                Ok(Some(Message::Chunk {
                    batch: Bytes(bytes),
                }))
            }
            Ok(None) => {
                let vector = core::mem::take(vector);
                self.state = ServerState::Ready;
                Ok(Some(Message::PullDone { vector }))
            }
            Err(e) => {
                self.state = ServerState::Done;
                Err(e)
            }
        }
    }
}
