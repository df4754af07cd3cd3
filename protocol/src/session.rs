//! The sync session (DESIGN.md section 5) as two sans-I/O state machines: [`ClientSession`] and
//! [`ServerSession`]. No sockets and no clock: the caller decodes messages off the channel, feeds
//! them to `handle` with its `now_ms`, and sends whatever `poll` returns until it returns `None`.
//! The same code runs over std sockets and embassy-net.
//!
//! ```text
//! client                                   server
//! Hello(site, version, fingerprint, clock, vector, session) ─►
//!                                        ◄─ Hello(.., server vector)
//! Push(session, batch) × n ─►              (stages and verifies each, stores nothing)
//! Commit(session) ─►                       (stores all staged batches in one transaction)
//!                                        ◄─ Ack(session, covered) | PushAgain(session, reason)
//! Pull(client vector) ─►
//!                                        ◄─ PullSize(batches, bytes), Chunk(batch) × m, PullDone(vector)
//!                   (the client applies each chunk or keeps it for a group; all applied at PullDone)
//! IdRequest(request, sequence, count) ─►   (only for pending reservations, one at a time)
//!                                        ◄─ IdGrant(request, ranges)
//! Bye ─►            (or, in live mode, wait for Notify and pull again)
//! ```
//!
//! **Push is two-phase and idempotent.** The server keeps pushed batches in memory (verified:
//! header, body length, SHA-256; bodies are never parsed: the hub is a mailbox) until `Commit`,
//! then calls [`ServerStore::commit`] once with all of them and the ack it will send, which the
//! store records with the batches in the same transaction. A retried commit under the same session
//! id with the same content (same batches, same order) returns the recorded ack; different content
//! gets `PushAgain(DifferentContent)`; a commit with nothing staged in this connection gets
//! `PushAgain(UnknownSession)`; staging older than [`ServerConfig::stage_ttl_ms`] gets
//! `PushAgain(SessionExpired)`; batches that would leave a gap in the server's coverage get
//! `PushAgain(Gap)`. Never an ack for something not stored.
//!
//! **Pull** streams what the client's vector lacks, never the client's own batches. The client
//! hands each chunk to [`ClientStore::apply_chunk`], which applies it with its vector advance in
//! one transaction, or buffers it and applies several together, each group in one transaction
//! with the vector advances of all its chunks; the session calls [`ClientStore::flush`] when the
//! pull ends (`PullDone`, before anything else reads the vector or the session ends cleanly) and
//! before every `Pull` it sends. So what a pull brought is **applied and durable by the time the
//! pull ends**, and no transaction is held while waiting on the network; an interrupted pull
//! loses only the chunks not flushed yet (the vector did not advance for them), and the next
//! pull resumes from the last flushed group: nothing lost, nothing applied twice. Before the
//! first chunk the server announces the pull's size ([`ServerStore::pull_size`], `PullSize`)
//! when its store can tell it, so a client can show what is left ([`ClientStore::pull_size`]).
//!
//! **Id blocks** (`crate::id_range`). After the pull the client asks for each reservation
//! [`ClientStore::id_requests`] returns, one request at a time, and hands each grant to
//! [`ClientStore::ids_granted`] (which stores it in one transaction, ignoring a request it no
//! longer holds). The server answers from [`ServerStore::grant_ids`], which records the grant
//! durably under (peer, request id) before it returns: a request retried after a cut gets the
//! same ranges, so no number is granted twice and none is lost to the cut. The client checks a
//! grant names its request and sequence, totals its count (or is empty), and lies above its floor.
//!
//! **Errors.** A message not allowed in the current state, a peer's `Error`, a bad batch, a
//! version or configuration mismatch end the session with a [`SessionError`]; send
//! [`SessionError::to_message`] (when it returns one) and close.

use crate::batch::codec::{self, DecodeError, Limits as BatchLimits};
use crate::batch::BatchHeader;
use crate::id_range::{IdGrant, IdRange, IdRequest};
use crate::message::{
    Bytes, Covered, ErrorCode, Hello, Message, PeerRole, PushAgainReason, SessionId,
};
use crate::site::SiteId;
use crate::vector::VersionVector;
use crate::PROTOCOL_VERSION;
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use sha2::{Digest, Sha256};

/// A batch the server staged: its verified header and its bytes as received.
#[derive(Clone, Debug, PartialEq)]
pub struct StagedBatch {
    /// The header (checked, body hash verified).
    pub header: BatchHeader,
    /// The encoded batch.
    pub bytes: Vec<u8>,
}

/// What a server records with a committed push, and answers a retry with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    /// SHA-256 over the staged batches' (origin, lo, hi, body hash), in push order.
    pub digest: [u8; 32],
    /// The ack's content.
    pub covered: Vec<Covered>,
}

/// The server's storage, implemented by the mailbox (hub, cloud).
pub trait ServerStore {
    /// The store's error; its text goes to the server's log, not to the peer.
    type Error: fmt::Display;
    /// A pull in progress (e.g. the list of batches to send, loaded one at a time).
    type PullPlan;
    /// What the server holds.
    fn vector(&mut self) -> Result<VersionVector, Self::Error>;
    /// The record of an already committed push session, if any.
    fn committed(&mut self, session: &SessionId) -> Result<Option<CommitRecord>, Self::Error>;
    /// Stores `batches` and `record` under `session` in **one durable transaction**; returns only
    /// once it is durable.
    fn commit(
        &mut self,
        session: &SessionId,
        record: &CommitRecord,
        batches: &[StagedBatch],
    ) -> Result<(), Self::Error>;
    /// Plans sending what `vector` lacks, never batches of `exclude_origin`.
    fn batches_for(
        &mut self,
        vector: &VersionVector,
        exclude_origin: &SiteId,
    ) -> Result<Self::PullPlan, Self::Error>;
    /// The next encoded batch of a plan, in seq order per origin.
    fn next_batch(&mut self, plan: &mut Self::PullPlan) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The size of a plan just made, (batches, encoded bytes), announced to the client as
    /// `PullSize`; `None` (the default) when the store cannot tell, and then nothing is announced.
    fn pull_size(&mut self, plan: &Self::PullPlan) -> Result<Option<(u64, u64)>, Self::Error> {
        let _ = plan;
        Ok(None)
    }
    /// Grants `request.count` numbers of `request.sequence` to `peer`, all above
    /// `request.above`, or nothing when it cannot now (then it should remember the demand). The
    /// grant must be **durable** before this returns and **idempotent** on (peer, request id):
    /// a retried request returns the recorded ranges. The default grants nothing.
    fn grant_ids(
        &mut self,
        peer: &SiteId,
        request: &IdRequest,
    ) -> Result<Vec<IdRange>, Self::Error> {
        let _ = (peer, request);
        Ok(Vec::new())
    }
}

/// The client's storage, implemented by the extension's engine (or by a hub pushing to the cloud).
pub trait ClientStore {
    /// The store's error.
    type Error: fmt::Display;
    /// An export in progress.
    type ExportPlan;
    /// What the client holds.
    fn vector(&mut self) -> Result<VersionVector, Self::Error>;
    /// Plans exporting what `server_vector` lacks, starting at its coverage of each origin.
    fn plan_export(
        &mut self,
        server_vector: &VersionVector,
    ) -> Result<Self::ExportPlan, Self::Error>;
    /// The next encoded batch of an export.
    fn next_export(&mut self, plan: &mut Self::ExportPlan) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The server acknowledged holding these ranges (the only ones to trust).
    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), Self::Error>;
    /// Takes one pulled batch (its header decoded; its origin is not the client's): applies it
    /// and advances the vector in **one transaction**, or keeps it to apply with the next ones
    /// at the next [`flush`](ClientStore::flush). A store that keeps batches applies each group
    /// in one transaction with the vector advances of all its batches, in the order received,
    /// all or nothing, and must not hold a transaction open between calls (the session waits
    /// on the network in between).
    fn apply_chunk(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<(), Self::Error>;
    /// Applies the batches [`apply_chunk`](ClientStore::apply_chunk) kept, as one transaction
    /// with their vector advances, and returns once that is durable. The session calls it when
    /// the pull ends (`PullDone`, before asking for ids, before `Bye`) and before it reads the
    /// vector for a `Pull`; a session cut before a flush loses only the kept batches, which the
    /// next pull brings again because the vector did not advance for them. A store's owner ending
    /// a session early but cleanly (a live session's deadline mid-pull) may call it too. Default:
    /// nothing (a store that applies each batch at once).
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The server announced the pull it is about to send (for progress). Default: ignored.
    fn pull_size(&mut self, batches: u64, bytes: u64) -> Result<(), Self::Error> {
        let _ = (batches, bytes);
        Ok(())
    }
    /// The id reservations to ask the server for after the pull, each under the id it keeps
    /// until the grant is stored. Default: none.
    fn id_requests(&mut self) -> Result<Vec<IdRequest>, Self::Error> {
        Ok(Vec::new())
    }
    /// The server granted `ranges` for `request` (checked against it; empty: not now). Store
    /// them and retire the request in **one transaction**; a request no longer held (already
    /// granted) is ignored. Default: ignored.
    fn ids_granted(&mut self, request: &IdRequest, ranges: &[IdRange]) -> Result<(), Self::Error> {
        let _ = (request, ranges);
        Ok(())
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// A message kind not allowed in the current state.
    Unexpected {
        /// The state.
        state: &'static str,
        /// The message's wire tag.
        tag: u64,
    },
    /// The peer speaks another protocol version.
    UnsupportedVersion {
        /// The peer's.
        peer: u16,
        /// Ours.
        ours: u16,
    },
    /// Schema/merge configuration fingerprints differ.
    ConfigMismatch,
    /// The hello names another site than the channel authenticated.
    SiteMismatch {
        /// In the hello.
        hello: SiteId,
        /// From the handshake.
        channel: SiteId,
    },
    /// A push or commit under another session id than the push in progress.
    WrongSession,
    /// A batch failed to decode or verify.
    BadBatch(DecodeError),
    /// The server sent the client one of its own batches.
    OwnBatchReturned,
    /// The staged push exceeds the server's limit.
    TooLarge {
        /// Bytes staged with this batch.
        staged: usize,
        /// The limit.
        max: usize,
    },
    /// The ack does not name exactly what was pushed.
    AckMismatch,
    /// An id grant does not answer the request in flight (another request or sequence, another
    /// total, or numbers not above the request's floor).
    IdGrantMismatch,
    /// The server asked to push again too many times.
    PushAttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last reason given.
        reason: PushAgainReason,
    },
    /// The local store failed (its message).
    Store(String),
    /// The peer sent an error.
    Peer {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The session already ended.
    Finished,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Unexpected { state, tag } => {
                write!(f, "message tag {tag} is not allowed while {state}")
            }
            SessionError::UnsupportedVersion { peer, ours } => write!(
                f,
                "peer speaks protocol version {peer}, this build {ours}: update the older side"
            ),
            SessionError::ConfigMismatch => f.write_str(
                "schema or merge configuration differs from the peer's (a column configured differently): align the app's outpost_track options",
            ),
            SessionError::SiteMismatch { hello, channel } => write!(
                f,
                "hello names site {hello} but the handshake authenticated site {channel}"
            ),
            SessionError::WrongSession => {
                f.write_str("push or commit under a session id other than the push in progress")
            }
            SessionError::BadBatch(e) => write!(f, "bad batch: {e}"),
            SessionError::OwnBatchReturned => {
                f.write_str("the server sent back one of this site's own batches")
            }
            SessionError::TooLarge { staged, max } => write!(
                f,
                "push too large: {staged} bytes staged, the limit is {max}; push fewer batches per session"
            ),
            SessionError::AckMismatch => {
                f.write_str("the server's ack does not name exactly the batches pushed")
            }
            SessionError::IdGrantMismatch => f.write_str(
                "the server's id grant does not answer the request sent (request, sequence, count or floor)",
            ),
            SessionError::PushAttemptsExhausted { attempts, reason } => write!(
                f,
                "push refused {attempts} times (last: {reason:?}); try again later"
            ),
            SessionError::Store(m) => write!(f, "local store failed: {m}"),
            SessionError::Peer { code, message } => write!(f, "peer error {code:?}: {message}"),
            SessionError::Finished => f.write_str("session already ended"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {}

impl SessionError {
    /// The error code to send the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::Unexpected { .. } | SessionError::WrongSession => ErrorCode::BadMessage,
            SessionError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            SessionError::ConfigMismatch => ErrorCode::ConfigMismatch,
            SessionError::SiteMismatch { .. } => ErrorCode::Unauthorized,
            SessionError::BadBatch(_) | SessionError::OwnBatchReturned => ErrorCode::BadBatch,
            SessionError::TooLarge { .. } => ErrorCode::TooLarge,
            SessionError::AckMismatch
            | SessionError::IdGrantMismatch
            | SessionError::PushAttemptsExhausted { .. }
            | SessionError::Finished => ErrorCode::BadMessage,
            SessionError::Store(_) => ErrorCode::Internal,
            SessionError::Peer { code, .. } => *code,
        }
    }

    /// The `Error` message to send before closing; `None` when the peer already sent one or
    /// the session is over. Store failures are reported without their detail.
    pub fn to_message(&self) -> Option<Message> {
        let message = match self {
            SessionError::Peer { .. } | SessionError::Finished => return None,
            SessionError::Store(_) => String::from("the peer's store failed; try again later"),
            other => other.to_string(),
        };
        Some(Message::Error {
            code: self.code(),
            message,
        })
    }
}

fn store_err(e: impl fmt::Display) -> SessionError {
    SessionError::Store(e.to_string())
}

fn peer_error(msg: Message) -> SessionError {
    match msg {
        Message::Error { code, message } => SessionError::Peer { code, message },
        _ => SessionError::Finished,
    }
}

/// Content digest of a staged push.
fn push_digest<'a>(batches: impl Iterator<Item = &'a BatchHeader>) -> [u8; 32] {
    let mut h = Sha256::new();
    for b in batches {
        h.update(b.origin.as_bytes());
        h.update(b.range.lo.to_be_bytes());
        h.update(b.range.hi.to_be_bytes());
        h.update(b.body_sha256);
    }
    h.finalize().into()
}

fn covered_of(header: &BatchHeader) -> Covered {
    Covered {
        origin: header.origin,
        range: header.range,
        batch_sha256: header.body_sha256,
    }
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
    /// The server's wall clock at hello (ms since the Unix epoch), for the client's skew check.
    pub wall_clock_ms: u64,
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
    peer_hello: Option<Hello>,
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
            peer_hello: None,
            out: VecDeque::new(),
        }
    }

    /// The client's hello, once received (skew assessment, status).
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref()
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
            (ServerState::AwaitHello, Message::Hello(h)) => self.hello(h, store),
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
            (ServerState::Ready, Message::Push { session, batch }) => {
                self.stage(session, batch, now_ms)
            }
            (ServerState::Ready, Message::Commit { session }) => {
                self.commit(session, now_ms, store)
            }
            (ServerState::Ready, Message::Pull { vector }) => {
                let plan = store
                    .batches_for(&vector, &self.config.peer_site)
                    .map_err(store_err)?;
                if let Some((batches, bytes)) = store.pull_size(&plan).map_err(store_err)? {
                    self.out.push_back(Message::PullSize { batches, bytes });
                }
                self.state = ServerState::Serving { plan, vector };
                Ok(())
            }
            (ServerState::Ready, Message::IdRequest(request)) => {
                let ranges = store
                    .grant_ids(&self.config.peer_site, &request)
                    .map_err(store_err)?;
                let total = crate::id_range::check_ranges(&ranges).map_err(store_err)?;
                if !ranges.is_empty()
                    && (total != request.count || ranges[0].first <= request.above)
                {
                    return Err(SessionError::Store(alloc::format!(
                        "the store granted {total} ids from {} for a request of {} above {}",
                        ranges[0].first,
                        request.count,
                        request.above
                    )));
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
        }));
        self.state = ServerState::Ready;
        Ok(())
    }

    fn stage(&mut self, session: SessionId, batch: Bytes, now_ms: u64) -> Result<(), SessionError> {
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
            if vector.advance(b.header.origin, b.header.range).is_err() {
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
                        return Err(SessionError::Store(alloc::format!(
                            "stored batch does not decode: {e}"
                        )));
                    }
                };
                // A plan sends each origin in seq order from the client's coverage; anything
                // else would be a store bug, and the client's own vector stays authoritative.
                let _ = vector.advance(header.origin, header.range);
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

/// A client's settings for one session.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client's site id.
    pub site: SiteId,
    /// Device (or hub, when it syncs with the cloud).
    pub role: PeerRole,
    /// SHA-256 of the schema and merge configuration.
    pub fingerprint: [u8; 32],
    /// The client's wall clock at hello.
    pub wall_clock_ms: u64,
    /// The push session id: random, fresh per push (reuse it only to retry the same push).
    pub session: SessionId,
    /// Stay connected after the pull and pull again on `Notify`.
    pub live: bool,
    /// How many pushes to try before giving up on `PushAgain`.
    pub max_push_attempts: u32,
    /// Batch decoding limits.
    pub batch_limits: BatchLimits,
}

enum ClientState<E> {
    Start,
    AwaitHello,
    Pushing {
        plan: E,
    },
    AwaitAck,
    Pulling,
    /// Asking for id blocks after a pull: the front request is in flight.
    Ids {
        queue: VecDeque<IdRequest>,
        /// A `Notify` arrived meanwhile (live mode): pull again once the ids are done.
        notified: bool,
    },
    Live,
    Done,
}

impl<E> ClientState<E> {
    fn name(&self) -> &'static str {
        match self {
            ClientState::Start => "starting",
            ClientState::AwaitHello => "awaiting hello",
            ClientState::Pushing { .. } => "pushing",
            ClientState::AwaitAck => "awaiting the ack",
            ClientState::Pulling => "pulling",
            ClientState::Ids { .. } => "requesting ids",
            ClientState::Live => "live",
            ClientState::Done => "ended",
        }
    }
}

/// The client side of one session.
pub struct ClientSession<C: ClientStore> {
    config: ClientConfig,
    state: ClientState<C::ExportPlan>,
    session: SessionId,
    server_hello: Option<Hello>,
    pushed: Vec<Covered>,
    attempts: u32,
    applied: u64,
    out: VecDeque<Message>,
}

impl<C: ClientStore> fmt::Debug for ClientSession<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("state", &self.state.name())
            .field("pushed", &self.pushed.len())
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl<C: ClientStore> ClientSession<C> {
    /// A session; its first `poll` returns the hello.
    pub fn new(config: ClientConfig) -> Self {
        ClientSession {
            session: config.session,
            config,
            state: ClientState::Start,
            server_hello: None,
            pushed: Vec::new(),
            attempts: 0,
            applied: 0,
            out: VecDeque::new(),
        }
    }

    /// The server's hello, once received (its wall clock, for the skew check).
    pub fn server_hello(&self) -> Option<&Hello> {
        self.server_hello.as_ref()
    }

    /// The push session id in use (it changes after a `PushAgain`).
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Chunks handed to [`ClientStore::apply_chunk`] so far (applied, or kept by the store
    /// until its next flush; all of them are applied once the pull is done).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// True once the session ended cleanly.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ClientState::Done)
    }

    /// True while a live session waits for `Notify` (its pull and id requests are complete).
    pub fn is_live(&self) -> bool {
        matches!(self.state, ClientState::Live)
    }

    /// Handles one message from the server.
    pub fn handle(&mut self, msg: Message, store: &mut C) -> Result<(), SessionError> {
        let r = self.handle_inner(msg, store);
        if r.is_err() {
            self.state = ClientState::Done;
            self.out.clear();
        }
        r
    }

    fn handle_inner(&mut self, msg: Message, store: &mut C) -> Result<(), SessionError> {
        let state = self.state.name();
        match (&self.state, msg) {
            (ClientState::Done, _) => Err(SessionError::Finished),
            (_, msg @ Message::Error { .. }) => Err(peer_error(msg)),
            (ClientState::AwaitHello, Message::Hello(h)) => self.hello(h, store),
            (ClientState::Start | ClientState::AwaitHello, msg) => Err(SessionError::Unexpected {
                state,
                tag: msg.tag(),
            }),
            (_, Message::Ping { nonce }) => {
                self.out.push_back(Message::Pong { nonce });
                Ok(())
            }
            (_, Message::Pong { .. }) => Ok(()),
            (ClientState::AwaitAck, Message::Ack { session, covered }) => {
                if session != self.session {
                    return Err(SessionError::WrongSession);
                }
                if covered != self.pushed {
                    return Err(SessionError::AckMismatch);
                }
                store.acknowledged(&covered).map_err(store_err)?;
                self.pull(store)
            }
            (ClientState::AwaitAck, Message::PushAgain { session, reason }) => {
                if session != self.session {
                    return Err(SessionError::WrongSession);
                }
                self.attempts += 1;
                if self.attempts >= self.config.max_push_attempts {
                    return Err(SessionError::PushAttemptsExhausted {
                        attempts: self.attempts,
                        reason,
                    });
                }
                // A fresh id: the old one may be recorded with other content.
                let mut h = Sha256::new();
                h.update(b"outpost-push-again");
                h.update(self.session.0);
                let mut id = [0u8; 16];
                id.copy_from_slice(&h.finalize()[..16]);
                self.session = SessionId(id);
                self.start_push(store)
            }
            (ClientState::Pulling, Message::Chunk { batch }) => {
                let header = codec::decode_header(&batch.0, &self.config.batch_limits)
                    .map_err(SessionError::BadBatch)?;
                if header.origin == self.config.site {
                    return Err(SessionError::OwnBatchReturned);
                }
                store.apply_chunk(&header, &batch.0).map_err(store_err)?;
                self.applied += 1;
                Ok(())
            }
            (ClientState::Pulling, Message::PullSize { batches, bytes }) => {
                store.pull_size(batches, bytes).map_err(store_err)
            }
            (ClientState::Pulling, Message::PullDone { .. }) => {
                // Everything pulled is applied before the vector is read again (id requests,
                // a live re-pull) and before the session can end.
                store.flush().map_err(store_err)?;
                let queue: VecDeque<IdRequest> = store
                    .id_requests()
                    .map_err(store_err)?
                    .into_iter()
                    .collect();
                match queue.front() {
                    Some(first) => {
                        self.out.push_back(Message::IdRequest(first.clone()));
                        self.state = ClientState::Ids {
                            queue,
                            notified: false,
                        };
                        Ok(())
                    }
                    None => self.pulled(store, false),
                }
            }
            (ClientState::Ids { queue, .. }, Message::IdGrant(grant)) => {
                let Some(request) = queue.front() else {
                    return Err(SessionError::Finished);
                };
                let total = grant.total();
                if grant.request != request.request
                    || grant.sequence != request.sequence
                    || (!grant.ranges.is_empty()
                        && (total != request.count || grant.ranges[0].first <= request.above))
                {
                    return Err(SessionError::IdGrantMismatch);
                }
                store
                    .ids_granted(request, &grant.ranges)
                    .map_err(store_err)?;
                let ClientState::Ids { queue, notified } = &mut self.state else {
                    return Err(SessionError::Finished);
                };
                queue.pop_front();
                match queue.front() {
                    Some(next) => {
                        self.out.push_back(Message::IdRequest(next.clone()));
                        Ok(())
                    }
                    None => {
                        let notified = *notified;
                        self.pulled(store, notified)
                    }
                }
            }
            (ClientState::Ids { .. }, Message::Notify) => {
                if let ClientState::Ids { notified, .. } = &mut self.state {
                    *notified = true;
                }
                Ok(())
            }
            (ClientState::Live, Message::Notify) => self.pull(store),
            // A notify racing a pull in progress: the pull will fetch the news or the next one.
            (ClientState::Pulling, Message::Notify) => Ok(()),
            (_, msg) => Err(SessionError::Unexpected {
                state,
                tag: msg.tag(),
            }),
        }
    }

    fn hello(&mut self, h: Hello, store: &mut C) -> Result<(), SessionError> {
        if h.protocol_version != PROTOCOL_VERSION {
            return Err(SessionError::UnsupportedVersion {
                peer: h.protocol_version,
                ours: PROTOCOL_VERSION,
            });
        }
        // A zero fingerprint is a schema-free mailbox (hub): it merges nothing.
        if h.fingerprint != [0; 32] && h.fingerprint != self.config.fingerprint {
            return Err(SessionError::ConfigMismatch);
        }
        self.server_hello = Some(h);
        self.start_push(store)
    }

    fn start_push(&mut self, store: &mut C) -> Result<(), SessionError> {
        let server_vector = match &self.server_hello {
            Some(h) => &h.vector,
            None => return Err(SessionError::Finished),
        };
        let plan = store.plan_export(server_vector).map_err(store_err)?;
        self.pushed.clear();
        self.state = ClientState::Pushing { plan };
        Ok(())
    }

    /// The pull (and its id requests) is complete: end, or wait live (pulling again at once when
    /// a `Notify` arrived meanwhile).
    fn pulled(&mut self, store: &mut C, notified: bool) -> Result<(), SessionError> {
        if !self.config.live {
            store.flush().map_err(store_err)?;
            self.out.push_back(Message::Bye);
            self.state = ClientState::Done;
            return Ok(());
        }
        if notified {
            return self.pull(store);
        }
        self.state = ClientState::Live;
        Ok(())
    }

    fn pull(&mut self, store: &mut C) -> Result<(), SessionError> {
        // The vector must include every chunk received, or the server would send them again.
        store.flush().map_err(store_err)?;
        let vector = store.vector().map_err(store_err)?;
        self.out.push_back(Message::Pull { vector });
        self.state = ClientState::Pulling;
        Ok(())
    }

    /// The next message to send, or `None` when there is nothing more for now. Streams a push
    /// one batch per call.
    pub fn poll(&mut self, store: &mut C) -> Result<Option<Message>, SessionError> {
        let r = self.poll_inner(store);
        if r.is_err() {
            self.state = ClientState::Done;
        }
        r
    }

    fn poll_inner(&mut self, store: &mut C) -> Result<Option<Message>, SessionError> {
        if let Some(m) = self.out.pop_front() {
            return Ok(Some(m));
        }
        match &mut self.state {
            ClientState::Start => {
                let vector = store.vector().map_err(store_err)?;
                self.state = ClientState::AwaitHello;
                Ok(Some(Message::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    site: self.config.site,
                    role: self.config.role,
                    fingerprint: self.config.fingerprint,
                    wall_clock_ms: self.config.wall_clock_ms,
                    vector,
                    session: self.session,
                })))
            }
            ClientState::Pushing { plan } => match store.next_export(plan).map_err(store_err)? {
                Some(bytes) => {
                    let header = codec::decode_header(&bytes, &self.config.batch_limits)
                        .map_err(SessionError::BadBatch)?;
                    self.pushed.push(covered_of(&header));
                    Ok(Some(Message::Push {
                        session: self.session,
                        batch: Bytes(bytes),
                    }))
                }
                None if self.pushed.is_empty() => {
                    self.pull(store)?;
                    Ok(self.out.pop_front())
                }
                None => {
                    self.state = ClientState::AwaitAck;
                    Ok(Some(Message::Commit {
                        session: self.session,
                    }))
                }
            },
            _ => Ok(None),
        }
    }
}
