//! The sync session (docs/design.md section 5) as two sans-I/O state machines: [`ClientSession`] and
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
//! `PushAgain(Gap)`. Never an ack for something not stored. Each pushed batch is verified before
//! it is staged: a device's own with its handshake key, a relayed one with the key the store
//! knows for its origin ([`ServerStore::origin_key`]); a relayed batch of an origin the store
//! knows no key for ends the session as [`SessionError::KeyUnknown`] (retry later), nothing of
//! the push stored. A server stating trusted time at hello also bounds a device's own batches by
//! their clear header's max HLC: more than [`ServerConfig::max_clock_ahead_ms`] ahead of that time
//! and more than a second above the highest clock its store holds
//! ([`ServerStore::highest_admitted`]) ends the session as [`SessionError::ClockAhead`], nothing
//! of the push stored (docs/design.md section 10, "Time").
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

mod client;
mod server;

pub use client::{ClientConfig, ClientSession};
pub use server::{PushOrigins, ServerConfig, ServerSession};

use crate::batch::codec::DecodeError;
use crate::batch::BatchHeader;
use crate::handshake::PublicKey;
use crate::hlc::{Hlc, UtcDate};
use crate::id_range::{IdRange, IdRangeError, IdRequest};
use crate::message::{Covered, ErrorCode, Message, PushAgainReason, SessionId};
use crate::scope::Scopes;
use crate::signing::SignatureError;
use crate::site::SiteId;
use crate::vector::{ControlVector, SeqRange, VersionVector};
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
    /// Plans sending what `vector` lacks, never batches of `exclude_origin` except its own
    /// streams of the scopes in `regain` above their `since` (a device regaining a dropped
    /// scope, [`crate::message::Hello::regain`]), and only streams of scopes in `grant` (and
    /// the unscoped stream, which is every grant's).
    fn batches_for(
        &mut self,
        vector: &VersionVector,
        exclude_origin: &SiteId,
        regain: &[crate::message::Regain],
        grant: &Scopes,
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
    /// a retried request returns the recorded ranges. `metered`: the peer is a device, whose
    /// grants the store may cap per period (an empty grant: "not now"); a hub's refills are not
    /// (it serves many devices, each metered at the hub). The default grants nothing.
    fn grant_ids(
        &mut self,
        peer: &SiteId,
        metered: bool,
        request: &IdRequest,
    ) -> Result<Vec<IdRange>, Self::Error> {
        let _ = (peer, metered, request);
        Ok(Vec::new())
    }
    /// The scopes of version `version` of `site`'s grant, if this store knows that version
    /// (its control streams' `Directory::grant_at`); `None` (the default) when it does not.
    fn grant_at(&mut self, site: &SiteId, version: u64) -> Result<Option<Scopes>, Self::Error> {
        let _ = (site, version);
        Ok(None)
    }
    /// A device declared in its hello the scopes it drains (docs/design.md section 10,
    /// "Regrants"): the store keeps each (site, scope) → last seq **durably** (a later
    /// declaration of the same pair replaces it), so later sessions refuse the device's own
    /// batches above it while its grant does not hold the scope. Default: not kept (the
    /// session still judges by its hello).
    fn drains_declared(
        &mut self,
        site: &SiteId,
        drains: &[crate::message::Drain],
    ) -> Result<(), Self::Error> {
        let _ = (site, drains);
        Ok(())
    }
    /// The last seq `site` declared it would push of its stream of `scope`, if it declared one
    /// ([`ServerStore::drains_declared`]). Default: none.
    fn drain_of(&mut self, site: &SiteId, scope: &str) -> Result<Option<u64>, Self::Error> {
        let _ = (site, scope);
        Ok(None)
    }
    /// The key this store knows for `origin`, to verify a relayed batch's signature with (a
    /// device's own pushes are verified with the key its handshake authenticated). `None` (the
    /// default): not known here, and the push is refused with [`SessionError::KeyUnknown`]
    /// (nothing is taken on a relay's word).
    fn origin_key(&mut self, origin: &SiteId) -> Result<Option<PublicKey>, Self::Error> {
        let _ = origin;
        Ok(None)
    }
    /// The control streams this store holds: the last entry of each writer. Default: none.
    fn control_vector(&mut self) -> Result<ControlVector, Self::Error> {
        Ok(ControlVector::new())
    }
    /// The encoded control entries `peer` lacks, each writer's in seq order. Default: none.
    fn control_for(&mut self, peer: &ControlVector) -> Result<Vec<Vec<u8>>, Self::Error> {
        let _ = peer;
        Ok(Vec::new())
    }
    /// Control entries the peer sent: the store checks each (signature, writer, order) with its
    /// directory, stores those it accepts durably, and drops the rest (they come again). Its
    /// error ends the session. Default: ignored.
    fn control_received(&mut self, entries: Vec<Vec<u8>>) -> Result<(), Self::Error> {
        let _ = entries;
        Ok(())
    }
    /// The highest clock (clear header's max HLC) of any batch this store ever stored, from any
    /// origin, pushed, relayed or pulled: a device's push whose clocks run up to a second past
    /// it is admitted whatever the trusted time says (docs/design.md section 10, "Time": an
    /// edit stamped just above a far-future version it replaced). Default: none, no allowance.
    fn highest_admitted(&mut self) -> Result<Hlc, Self::Error> {
        Ok(Hlc::ZERO)
    }
    /// Whether `origin` is one a cloud wrote under before it took another (its database was
    /// restored behind its peers: [`crate::control::Directory::is_retired`]). A relay may push a
    /// retired origin's batches (the server's own earlier origin included), whatever their
    /// direction: they are the cloud's own writes, signed with its key, pulled back to the cloud
    /// that lost them. Default: none is.
    fn retired_origin(&mut self, origin: &SiteId) -> Result<bool, Self::Error> {
        let _ = origin;
        Ok(false)
    }
    /// Whether the tenant is sealed: then a push with any unsealed batch is refused whole.
    /// Default: not sealed.
    fn sealed_tenant(&mut self) -> Result<bool, Self::Error> {
        Ok(false)
    }
    /// The current key epoch of the scope stream id `scope` names, as the control stream
    /// publishes it (0: unknown, nothing is judged by it). Default: 0.
    fn current_epoch(&mut self, scope: &str) -> Result<u32, Self::Error> {
        let _ = scope;
        Ok(0)
    }
    /// A sealed tenant's scope keys for the peer whose hello is `hello`, each envelope wrapped
    /// to one site's static key (docs/design.md section 10, "Sealed batches"), for the answer
    /// to that hello: the peer's own envelope for a device (its grant's scopes, and the scopes
    /// of the own streams its vector names). At most [`crate::message::MAX_HELLO_KEYS`].
    /// Default: none (an unsealed tenant, or a store that holds no keys).
    fn keys_for(
        &mut self,
        hello: &crate::message::Hello,
    ) -> Result<Vec<crate::message::SealedKeys>, Self::Error> {
        let _ = hello;
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
    /// The key this store knows for `origin`, to verify pulled batches with: a pulled batch of a
    /// known origin must carry that origin's valid signature, or the session ends before it is
    /// applied. `None` (the default): not known here; the batch still reaches
    /// [`apply_chunk`](ClientStore::apply_chunk), where a store with a key directory **holds** it
    /// (neither applies nor stores it, skips its origin's later batches in this pull and leaves
    /// its vector alone) until its directory names the origin.
    fn origin_key(&mut self, origin: &SiteId) -> Result<Option<PublicKey>, Self::Error> {
        let _ = origin;
        Ok(None)
    }
    /// The control streams this store holds: the last entry of each writer. Default: none.
    fn control_vector(&mut self) -> Result<ControlVector, Self::Error> {
        Ok(ControlVector::new())
    }
    /// The encoded control entries `peer` lacks, each writer's in seq order. Default: none.
    fn control_for(&mut self, peer: &ControlVector) -> Result<Vec<Vec<u8>>, Self::Error> {
        let _ = peer;
        Ok(Vec::new())
    }
    /// Control entries the peer sent: the store checks each (signature, writer, order) with its
    /// directory, stores those it accepts durably, and drops the rest (they come again). Its
    /// error ends the session. Default: ignored.
    fn control_received(&mut self, entries: Vec<Vec<u8>>) -> Result<(), Self::Error> {
        let _ = entries;
        Ok(())
    }
    /// The key envelopes the server's hello carried (`crate::message::Hello::keys`), before
    /// anything is pushed: the store opens those for its own site and keeps the keys (a hub
    /// keeps the others for its devices). Default: ignored.
    fn keys_received(&mut self, keys: &[crate::message::SealedKeys]) -> Result<(), Self::Error> {
        let _ = keys;
        Ok(())
    }
    /// The scopes its grant no longer holds whose own streams this store still pushes, each
    /// with the last seq it will push there, for its hello ([`crate::message::Hello::drains`];
    /// at most [`crate::message::MAX_DRAINS`]). Default: none.
    fn drains(&mut self) -> Result<Vec<crate::message::Drain>, Self::Error> {
        Ok(Vec::new())
    }
    /// The scopes it dropped and holds again whose own past batches it wants served back, each
    /// with the seq of its own stream there it holds up to, for its hello
    /// ([`crate::message::Hello::regain`]; at most [`crate::message::MAX_REGAINS`]). Pulled
    /// batches of its own origin are accepted for exactly these streams. Default: none.
    fn regain(&mut self) -> Result<Vec<crate::message::Regain>, Self::Error> {
        Ok(Vec::new())
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
    /// A batch is unsigned or its signature does not verify with the key known for its origin:
    /// the whole push (or the pull) is refused and nothing of it stored or applied.
    BadSignature {
        /// The origin the batch names.
        origin: SiteId,
        /// Its seq range.
        range: SeqRange,
        /// Missing or invalid.
        problem: SignatureError,
    },
    /// A relayed batch names an origin whose key the server's store does not know (no control
    /// entry names it yet): held, not taken on the relay's word. The whole push is refused and
    /// nothing of it stored; the relay retries later, once the entries have arrived.
    KeyUnknown {
        /// The origin the batch names.
        origin: SiteId,
        /// Its seq range.
        range: SeqRange,
    },
    /// A device's own batch carries clocks beyond what the relay admits (docs/design.md section
    /// 10, "Time"): more than [`ServerConfig::max_clock_ahead_ms`] ahead of the relay's trusted
    /// time, and more than a second above the highest clock the relay holds. The whole push is
    /// refused and nothing of it stored; the device re-stamps and pushes again.
    ClockAhead {
        /// The origin (the pushing device).
        origin: SiteId,
        /// The batch's seq range.
        range: SeqRange,
        /// The batch's largest clock (its clear header's).
        max_hlc: Hlc,
        /// The relay's trusted time when it checked (ms since the Unix epoch).
        trusted_ms: u64,
        /// The highest clock of any batch the relay holds (its allowance).
        admitted: Hlc,
    },
    /// A pushed batch's origin is not one this peer may push for (origin binding): the whole push
    /// is refused and nothing of it stored.
    ForeignOrigin {
        /// The origin the batch names.
        origin: SiteId,
        /// The pushing peer, as the handshake authenticated it.
        peer: SiteId,
        /// What the peer may push.
        allowed: PushOrigins,
    },
    /// A pushed batch is flagged `down` (tables only the cloud writes): no peer pushes one (the
    /// cloud's batches travel by pull), so the whole push is refused and nothing stored.
    DirectionRefused {
        /// The origin the batch names.
        origin: SiteId,
        /// Its seq range.
        range: SeqRange,
    },
    /// A device pushed a batch of a scope outside its grant: the whole push is refused and
    /// nothing stored.
    ScopeRefused {
        /// The origin the batch names.
        origin: SiteId,
        /// The batch's stream (scope id).
        scope: String,
        /// Its seq range.
        range: SeqRange,
    },
    /// A device's batch names a version of its grant this relay does not know yet (the device
    /// learnt it elsewhere, from the cloud); nothing of the push was stored: retry later, once
    /// the control entries reached this relay.
    GrantUnknown {
        /// The origin (the pushing device).
        origin: SiteId,
        /// The grant version the batch names.
        version: u64,
    },
    /// A pushed batch is not sealed, in a sealed tenant (docs/design.md section 10, "Sealed
    /// batches"): nothing of the push was stored.
    Unsealed {
        /// The origin the batch names.
        origin: SiteId,
        /// Its stream (scope id).
        scope: String,
        /// Its seq range.
        range: SeqRange,
    },
    /// A device pushed a batch sealed under a key epoch older than its scope's current one,
    /// though this session handed it the current one (docs/design.md section 10, "Sealed
    /// batches"); nothing of the push was stored. A draining scope's batches are not judged so.
    RetiredEpoch {
        /// The origin (the pushing device).
        origin: SiteId,
        /// The batch's stream (scope id).
        scope: String,
        /// The epoch it is sealed under.
        epoch: u32,
        /// The scope's current epoch.
        current: u32,
    },
    /// A pushed batch is flagged `transfer` (cells credited to other sites): only the cloud
    /// writes transfers and its batches travel by pull, so no push may carry one; nothing of the
    /// push was stored.
    TransferPushed {
        /// The origin the batch names.
        origin: SiteId,
        /// Its seq range.
        range: SeqRange,
    },
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
    /// The store granted ranges that break the id-block rules (a bug of the store).
    StoreGrantInvalid(IdRangeError),
    /// The store granted ids that do not answer the request (another total, or numbers not above
    /// the request's floor): a bug of the store.
    StoreGrantMismatch {
        /// Numbers granted.
        granted: u64,
        /// The first one.
        first: u64,
        /// Numbers asked for.
        count: u64,
        /// The floor the grant had to start above.
        above: u64,
    },
    /// A batch the store holds does not decode (the store was damaged or is buggy).
    StoredBatchUndecodable(DecodeError),
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
            SessionError::BadSignature {
                origin,
                range,
                problem,
            } => write!(
                f,
                "batch of origin {origin} seqs {}..={} refused: {problem}; it was not made by the \
                 site it names (a forged or tampered batch), so nothing of it was stored or applied",
                range.lo, range.hi
            ),
            SessionError::KeyUnknown { origin, range } => write!(
                f,
                "push refused: batch of origin {origin} seqs {}..={} names a site whose key no \
                 control entry has brought yet; nothing of this push was stored, retry later",
                range.lo, range.hi
            ),
            SessionError::ClockAhead {
                origin,
                range,
                max_hlc,
                trusted_ms,
                admitted,
            } => write!(
                f,
                "push refused: batch of origin {origin} seqs {}..={} is stamped up to {}, more \
                 than a day ahead of this relay's trusted time {} and above every clock it holds \
                 (up to {}); nothing of this push was stored: the device's clock was wrong when \
                 it wrote them, so it re-stamps its unsent changes with trusted time and pushes again",
                range.lo,
                range.hi,
                UtcDate(max_hlc.millis()),
                UtcDate(*trusted_ms),
                UtcDate(admitted.millis()),
            ),
            SessionError::ForeignOrigin {
                origin,
                peer,
                allowed: PushOrigins::Own,
            } => write!(
                f,
                "push refused: a batch of origin {origin} pushed by {peer}; a device pushes only \
                 its own changes (a copied or tampered database?), so nothing of this push was stored"
            ),
            SessionError::ForeignOrigin {
                origin,
                peer,
                allowed: PushOrigins::Relayed,
            } => write!(
                f,
                "push refused: hub {peer} relayed a batch of origin {origin}, this server's own; \
                 nothing of this push was stored"
            ),
            SessionError::DirectionRefused { origin, range } => write!(
                f,
                "push refused: batch of origin {origin} seqs {}..={} holds tables the tenant \
                 declares `down` (only the cloud writes them); nothing of this push was stored",
                range.lo, range.hi
            ),
            SessionError::ScopeRefused {
                origin,
                scope,
                range,
            } => write!(
                f,
                "push refused: batch of origin {origin} seqs {}..={} is in scope '{scope}', \
                 which is not granted to this device; nothing of this push was stored",
                range.lo, range.hi
            ),
            SessionError::GrantUnknown { origin, version } => write!(
                f,
                "push refused for now: a batch of origin {origin} was written under version \
                 {version} of its grant, which this relay does not know yet; nothing of this \
                 push was stored, retry later"
            ),
            SessionError::Unsealed {
                origin,
                scope,
                range,
            } => write!(
                f,
                "push refused: batch of origin {origin} seqs {}..={} of stream '{scope}' is not \
                 sealed, and this tenant is sealed; nothing of this push was stored (the device \
                 pushes once it holds the scope's key)",
                range.lo, range.hi
            ),
            SessionError::RetiredEpoch {
                origin,
                scope,
                epoch,
                current,
            } => write!(
                f,
                "push refused: a batch of origin {origin} in stream '{scope}' is sealed under \
                 retired key epoch {epoch}, though this relay handed the device epoch {current}; \
                 nothing of this push was stored"
            ),
            SessionError::TransferPushed { origin, range } => write!(
                f,
                "push refused: batch of origin {origin} seqs {}..={} is a transfer (cells \
                 credited to other sites), which only the cloud writes; nothing of this push \
                 was stored",
                range.lo, range.hi
            ),
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
            SessionError::StoreGrantInvalid(e) => write!(f, "local store failed: {e}"),
            SessionError::StoreGrantMismatch {
                granted,
                first,
                count,
                above,
            } => write!(
                f,
                "local store failed: the store granted {granted} ids from {first} for a request of {count} above {above}"
            ),
            SessionError::StoredBatchUndecodable(e) => {
                write!(f, "local store failed: stored batch does not decode: {e}")
            }
            SessionError::Peer { code, message } => write!(f, "peer error {code:?}: {message}"),
            SessionError::Finished => f.write_str("session already ended"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::BadBatch(e) | SessionError::StoredBatchUndecodable(e) => Some(e),
            SessionError::StoreGrantInvalid(e) => Some(e),
            _ => None,
        }
    }
}

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
            SessionError::ForeignOrigin { .. } => ErrorCode::ForeignOrigin,
            SessionError::BadSignature { .. } => ErrorCode::BadSignature,
            SessionError::KeyUnknown { .. } => ErrorCode::KeyUnknown,
            SessionError::DirectionRefused { .. } => ErrorCode::DirectionRefused,
            SessionError::ScopeRefused { .. } => ErrorCode::ScopeRefused,
            SessionError::GrantUnknown { .. } => ErrorCode::GrantUnknown,
            SessionError::Unsealed { .. } => ErrorCode::Unsealed,
            SessionError::RetiredEpoch { .. } => ErrorCode::RetiredEpoch,
            SessionError::TransferPushed { .. } => ErrorCode::ForeignOrigin,
            SessionError::ClockAhead { .. } => ErrorCode::ClockAhead,
            SessionError::AckMismatch
            | SessionError::IdGrantMismatch
            | SessionError::PushAttemptsExhausted { .. }
            | SessionError::Finished => ErrorCode::BadMessage,
            SessionError::Store(_)
            | SessionError::StoreGrantInvalid(_)
            | SessionError::StoreGrantMismatch { .. }
            | SessionError::StoredBatchUndecodable(_) => ErrorCode::Internal,
            SessionError::Peer { code, .. } => *code,
        }
    }

    /// The `Error` message to send before closing; `None` when the peer already sent one or
    /// the session is over. Store failures are reported without their detail.
    pub fn to_message(&self) -> Option<Message> {
        let message = match self {
            SessionError::Peer { .. } | SessionError::Finished => return None,
            SessionError::Store(_)
            | SessionError::StoreGrantInvalid(_)
            | SessionError::StoreGrantMismatch { .. }
            | SessionError::StoredBatchUndecodable(_) => {
                String::from("the peer's store failed; try again later")
            }
            other => other.to_string(),
        };
        Some(Message::Error {
            code: self.code(),
            message,
        })
    }
}

/// Checks a batch's signature against its origin's key.
fn check_signature(header: &BatchHeader, key: &PublicKey) -> Result<(), SessionError> {
    crate::batch::signature::verify(header, key).map_err(|problem| SessionError::BadSignature {
        origin: header.origin,
        range: header.range,
        problem,
    })
}

/// `entries` as `Control` messages of at most [`crate::control::MAX_ENTRIES_PER_MESSAGE`] each.
fn control_messages(entries: Vec<Vec<u8>>) -> impl Iterator<Item = Message> {
    let mut entries = entries.into_iter().map(crate::message::Bytes).peekable();
    core::iter::from_fn(move || {
        entries.peek()?;
        let chunk: Vec<_> = entries
            .by_ref()
            .take(crate::control::MAX_ENTRIES_PER_MESSAGE)
            .collect();
        Some(Message::Control { entries: chunk })
    })
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
        // Length-prefixed: stream names vary in length.
        h.update([b.stream.len() as u8]);
        h.update(b.stream.as_bytes());
        h.update(b.range.lo.to_be_bytes());
        h.update(b.range.hi.to_be_bytes());
        h.update(b.body_sha256);
    }
    h.finalize().into()
}

fn covered_of(header: &BatchHeader) -> Covered {
    Covered {
        origin: header.origin,
        scope: header.stream.clone(),
        range: header.range,
        batch_sha256: header.body_sha256,
    }
}
