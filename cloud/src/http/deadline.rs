//! Deadlines per connection phase, not per read: a peer trickling a byte at a time gains nothing
//! (issue 17, finding 2: the old 15 s limit was per read, so a byte every 5 s held a slot
//! forever).
//!
//! A connection is always in one phase, each with a deadline from its start:
//! - the TLS handshake: [`TLS_HANDSHAKE`];
//! - a request, head and body, from the end of the handshake (the first request) or from its
//!   first byte (the next ones on a kept-alive connection): [`REQUEST`];
//! - working on it (the request is read, the cloud answers): no deadline;
//! - the answer, until it is written and flushed: [`RESPONSE`];
//! - idle between requests: [`IDLE`].
//!
//! [`Watched`] wraps the connection's stream and moves the phases it can see (bytes arriving
//! while idle, a flush ending the answer); the request handler moves the others. The connection
//! task races the connection against [`Deadline::expired`] and drops it when that wins.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// To complete the TLS handshake, from accept.
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// To send a whole request, head and body.
pub const REQUEST: Duration = Duration::from_secs(15);
/// To take a whole answer.
pub const RESPONSE: Duration = Duration::from_secs(15);
/// Idle between two requests on one connection.
pub const IDLE: Duration = Duration::from_secs(5);

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TLS handshake.
    Handshake,
    /// Receiving a request.
    Request,
    /// The request is in; the cloud is answering.
    Working,
    /// Sending the answer.
    Responding,
    /// Between requests.
    Idle,
    /// Closed to make room for a newer connection (no token shown while the slots were full).
    Evicted,
}

impl Phase {
    /// What the peer was too slow at, for logs.
    pub fn too_slow(self) -> &'static str {
        match self {
            Phase::Handshake => "TLS handshake not done within the deadline",
            Phase::Request => "request not received within the deadline",
            Phase::Working => "answer not ready",
            Phase::Responding => "answer not taken within the deadline",
            Phase::Idle => "idle",
            Phase::Evicted => "no token shown while the listener was full: closed to make room",
        }
    }
}

/// One connection's phase and when it must end.
#[derive(Debug)]
pub struct Deadline {
    state: Mutex<(Phase, Option<Instant>)>,
    /// Wakes [`Deadline::expired`] when the phase changes: a new deadline may be earlier.
    changed: Notify,
}

impl Deadline {
    /// A connection just accepted: the handshake's deadline runs.
    pub fn new() -> Arc<Deadline> {
        Arc::new(Deadline {
            state: Mutex::new((Phase::Handshake, Some(Instant::now() + TLS_HANDSHAKE))),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, (Phase, Option<Instant>)> {
        // A plain value: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, phase: Phase, within: Option<Duration>) {
        *self.state() = (phase, within.map(|d| Instant::now() + d));
        self.changed.notify_one();
    }

    /// [`Deadline::enter`] if the phase is `from` (checked and changed under one lock).
    fn enter_from(&self, from: Phase, phase: Phase, within: Duration) {
        let mut s = self.state();
        if s.0 == from {
            *s = (phase, Some(Instant::now() + within));
            drop(s);
            self.changed.notify_one();
        }
    }

    /// The handshake is done: the first request's deadline runs.
    pub fn handshake_done(&self) {
        self.enter(Phase::Request, Some(REQUEST));
    }

    /// Request bytes arrived: if the connection was idle, a new request's deadline starts.
    pub fn bytes_arrived(&self) {
        self.enter_from(Phase::Idle, Phase::Request, REQUEST);
    }

    /// The request is read (or will not be): no deadline while the cloud works on it.
    pub fn request_read(&self) {
        self.enter(Phase::Working, None);
    }

    /// The answer is ready: it must be taken within [`RESPONSE`].
    pub fn responding(&self) {
        self.enter(Phase::Responding, Some(RESPONSE));
    }

    /// Everything written was flushed: if that ended an answer, the connection is idle.
    pub fn flushed(&self) {
        self.enter_from(Phase::Responding, Phase::Idle, IDLE);
    }

    /// Closes the connection now (its slot is given to a newer one).
    pub fn evict(&self) {
        self.enter(Phase::Evicted, Some(Duration::ZERO));
    }

    /// The phase now.
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.state().0
    }

    /// Resolves when the current phase's deadline passes, with that phase.
    pub async fn expired(&self) -> Phase {
        loop {
            let (phase, at) = *self.state();
            match at {
                // Working: no deadline until the phase changes.
                None => self.changed.notified().await,
                Some(at) if at <= Instant::now() => return phase,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// A stream that tells its [`Deadline`] when request bytes arrive and when a flush completes.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    deadline: Arc<Deadline>,
}

impl<S> Watched<S> {
    /// Watches `inner` for `deadline`.
    pub fn new(inner: S, deadline: Arc<Deadline>) -> Watched<S> {
        Watched { inner, deadline }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.deadline.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.deadline.flushed();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickled_bytes_do_not_move_a_request_deadline() {
        let d = Deadline::new();
        d.handshake_done();
        let first = d.state().1.unwrap();
        std::thread::sleep(Duration::from_millis(20));
        d.bytes_arrived();
        assert_eq!(
            d.state().1.unwrap(),
            first,
            "a byte must not extend the request"
        );
        d.request_read();
        assert_eq!(*d.state(), (Phase::Working, None));
        d.responding();
        d.bytes_arrived();
        assert_eq!(d.phase(), Phase::Responding);
        d.flushed();
        assert_eq!(d.phase(), Phase::Idle);
        d.bytes_arrived();
        assert_eq!(d.phase(), Phase::Request);
    }

    #[test]
    fn a_deadline_moved_earlier_wakes_the_watch() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let d = Deadline::new();
        d.responding();
        let t0 = std::time::Instant::now();
        let phase = rt.block_on(async {
            let watch = d.expired();
            tokio::pin!(watch);
            // The watch sleeps towards the answer's 15 s; then the answer is flushed.
            tokio::select! {
                _ = &mut watch => unreachable!("expired too early"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            *d.state() = (Phase::Responding, Some(Instant::now()));
            d.changed.notify_one();
            watch.await
        });
        assert_eq!(phase, Phase::Responding);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_passed_deadline_expires_with_its_phase() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let d = Deadline::new();
        *d.state() = (
            Phase::Request,
            Some(Instant::now() + Duration::from_millis(30)),
        );
        let t0 = std::time::Instant::now();
        assert_eq!(rt.block_on(d.expired()), Phase::Request);
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
}
