//! The client side of a session: [`ClientConfig`] and [`ClientSession`], which says hello,
//! pushes what the server lacks from a [`ClientStore`], pulls, and asks for id blocks.

use super::{check_signature, control_messages, covered_of, peer_error, store_err};
use super::{ClientStore, SessionError};
use crate::batch::codec::{self, Limits as BatchLimits};
use crate::id_range::IdRequest;
use crate::message::{Bytes, Covered, Hello, Message, PeerRole, SessionId};
use crate::site::SiteId;
use crate::vector::ControlVector;
use crate::PROTOCOL_VERSION;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use sha2::{Digest, Sha256};

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
    /// The server's hello said it holds control entries this client lacks: they come next,
    /// and the push starts once they are taken.
    AwaitControl,
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
            ClientState::AwaitControl => "awaiting control entries",
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
    /// The scopes whose own streams the hello asked served back ([`ClientStore::regain`]):
    /// pulled batches of this site's origin are accepted for those streams only.
    regain: Vec<String>,
    /// The control vector the hello stated: a server holding more sends its entries right
    /// after its hello, and the push waits for them (they may say the tenant is sealed).
    sent_control: ControlVector,
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
            regain: Vec::new(),
            sent_control: ControlVector::new(),
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
            // The server's control entries follow its hello, ahead of anything they judge.
            (ClientState::AwaitControl, Message::Control { entries }) => {
                store
                    .control_received(entries.into_iter().map(|b| b.0).collect())
                    .map_err(store_err)?;
                self.start_push(store)
            }
            (_, Message::Control { entries }) => store
                .control_received(entries.into_iter().map(|b| b.0).collect())
                .map_err(store_err),
            (_, Message::Keys { keys }) => store.keys_received(&keys).map_err(store_err),
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
                if header.origin == self.config.site && !self.regain.contains(&header.stream) {
                    return Err(SessionError::OwnBatchReturned);
                }
                if let Some(key) = store.origin_key(&header.origin).map_err(store_err)? {
                    check_signature(&header, &key)?;
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
        // A hub passes on the control entries the server lacks (its own, for the devices it
        // admitted), before its push: the server judges the push with them.
        if self.config.role == PeerRole::Hub {
            let entries = store.control_for(&h.control).map_err(store_err)?;
            self.out.extend(control_messages(entries));
        }
        // Keys before the push: what it seals is sealed under the epochs the server knows.
        if !h.keys.is_empty() {
            store.keys_received(&h.keys).map_err(store_err)?;
        }
        // Entries this client lacks come right after the hello: the push waits for them (a
        // tenant sealed since, a table setting), so nothing is exported on an older word.
        let pending = h
            .control
            .iter()
            .any(|(writer, &seq)| seq > self.sent_control.get(writer));
        self.server_hello = Some(h);
        if pending {
            self.state = ClientState::AwaitControl;
            return Ok(());
        }
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
                let control = store.control_vector().map_err(store_err)?;
                self.sent_control = control.clone();
                let drains = store.drains().map_err(store_err)?;
                let regain = store.regain().map_err(store_err)?;
                self.regain = regain.iter().map(|r| r.scope.clone()).collect();
                self.state = ClientState::AwaitHello;
                Ok(Some(Message::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    site: self.config.site,
                    role: self.config.role,
                    fingerprint: self.config.fingerprint,
                    wall_clock_ms: self.config.wall_clock_ms,
                    vector,
                    session: self.session,
                    control,
                    drains,
                    regain,
                    keys: Vec::new(),
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
