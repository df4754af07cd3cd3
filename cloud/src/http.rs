//! The REST API over HTTP/1.1 (hyper on a small tokio runtime): admission, deadlines, the token
//! checked from the head before any body byte is read, bounded bodies, and the routes of
//! docs/rest-api.md. `https.rs` owns the certificate and starts [`serve`].
//!
//! The rest of the cloud is threads and blocking SQLite: the handlers call it through
//! `spawn_blocking`, so a slow database never stalls the connections. Limits (numbers in
//! docs/rest-api.md): admission in [`admission`], phase deadlines in [`deadline`], the head at most
//! [`MAX_HEAD`], a body at most [`MAX_BODY`], at most [`BODIES_IN_FLIGHT`] bytes of push bodies
//! received at once.

pub mod admission;
pub mod deadline;

use crate::error_chain::Chain;
use crate::service::Cloud;
use admission::{counted_as, Admission, Limits, Refused, Ticket};
use bytes::Bytes;
use deadline::{Deadline, Watched};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Largest request head (request line + headers): hyper's read buffer, so also the most it
/// reads ahead of the handler.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body, by `Content-Length` or chunked.
pub const MAX_BODY: usize = 32 << 20;
/// Push bodies being received or applied at once, in bytes: a body is charged its
/// `Content-Length` (a chunked one [`MAX_BODY`]) before its first byte is read.
pub const BODIES_IN_FLIGHT: usize = 64 << 20;
/// Blocking threads of the REST runtime (token checks, pulls, pushes).
const BLOCKING_THREADS: usize = 8;
/// Of those, how many may wait on the tenant database at once (see [`Server::tenant_work`]).
const TENANT_WORK: usize = 4;
/// `Retry-After` of a 503, seconds.
const RETRY_AFTER: &str = "1";
/// At most one warning about refused connections per this long (each is logged at debug).
const REFUSALS_WARNED_EVERY: Duration = Duration::from_secs(10);

/// What every connection shares.
struct Server {
    cloud: Arc<Cloud>,
    admission: Arc<Admission>,
    bodies: Arc<Semaphore>,
    /// Pulls and pushes handed to blocking threads at once (they take the tenant database's
    /// lock one at a time anyway); the other blocking threads stay free for token checks.
    tenant_work: Semaphore,
}

/// One connection's state, shared by its task and its requests.
struct Conn {
    peer: SocketAddr,
    ticket: Mutex<Ticket>,
    deadline: Arc<Deadline>,
}

/// Accepts HTTPS connections on `listener` until accepting fails for good.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cloud: Arc<Cloud>,
    limits: Limits,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = Arc::new(Server {
        cloud,
        admission: Admission::new(limits),
        bodies: Arc::new(Semaphore::new(BODIES_IN_FLIGHT)),
        tenant_work: Semaphore::new(TENANT_WORK),
    });
    let acceptor = TlsAcceptor::from(tls);
    let mut refusals = Refusals::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, usually: let some connections end.
                log::warn!("https accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let deadline = Deadline::new();
        match server.admission.arrive(peer.ip(), deadline.clone()) {
            Ok(ticket) => {
                tokio::spawn(connection(
                    server.clone(),
                    acceptor.clone(),
                    tcp,
                    peer,
                    ticket,
                    deadline,
                ));
            }
            // Closed at once: answering would cost a TLS handshake, what a flood wants spent.
            Err(refused) => {
                drop(tcp);
                refusals.note(peer, refused);
            }
        }
    }
}

/// Counts refused connections, to warn about a flood without a log line per connection.
#[derive(Default)]
struct Refusals {
    count: usize,
    warned: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, refused: Refused) {
        log::debug!("https peer={peer} closed at accept: {refused}");
        self.count += 1;
        if self
            .warned
            .is_none_or(|at| at.elapsed() >= REFUSALS_WARNED_EVERY)
        {
            log::warn!(
                "https closed {} connection(s) at accept, the last from {}: {refused}",
                self.count,
                counted_as(peer.ip())
            );
            self.count = 0;
            self.warned = Some(Instant::now());
        }
    }
}

async fn connection(
    server: Arc<Server>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    deadline: Arc<Deadline>,
) {
    let conn = Arc::new(Conn {
        peer,
        ticket: Mutex::new(ticket),
        deadline: deadline.clone(),
    });
    let work = async {
        let tls = acceptor.accept(tcp).await?;
        deadline.handshake_done();
        let io = TokioIo::new(Watched::new(tls, deadline.clone()));
        let service = hyper::service::service_fn(move |req| {
            let (server, conn) = (server.clone(), conn.clone());
            async move { Ok::<_, Infallible>(handle(&server, &conn, req).await) }
        });
        hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD)
            .keep_alive(true)
            .serve_connection(io, service)
            .await
            .map_err(io::Error::other)
    };
    tokio::select! {
        done = work => if let Err(e) = done {
            log::debug!("https peer={peer}: {}", Chain(&e));
        },
        phase = deadline.expired() => {
            log::debug!("https peer={peer} closed: {}", phase.too_slow());
        }
    }
}

/// An answer: status, extra headers, JSON body, and whether the connection must close (the
/// request's body was not read, so the next request's start is unknown).
struct Answer {
    status: StatusCode,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    body: Bytes,
    close: bool,
}

impl Answer {
    fn json(status: StatusCode, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
            close: false,
        }
    }

    fn error(status: StatusCode, msg: impl Into<String>) -> Answer {
        let body = json!({ "error": msg.into() }).to_string().into_bytes();
        Answer::json(status, body)
    }

    fn closing(mut self) -> Answer {
        self.close = true;
        self
    }

    fn with(mut self, name: header::HeaderName, value: &'static str) -> Answer {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    fn busy(refused: impl std::fmt::Display) -> Answer {
        Answer::error(StatusCode::SERVICE_UNAVAILABLE, refused.to_string())
            .with(header::RETRY_AFTER, RETRY_AFTER)
            .closing()
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        for (n, v) in self.headers {
            h.append(n, v);
        }
        r
    }
}

async fn handle(server: &Server, conn: &Conn, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut answer = route(server, conn, req).await;
    // A connection that has not shown a valid token gets one answer: strangers do not keep
    // connections alive.
    if !conn
        .ticket
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_authenticated()
    {
        answer.close = true;
    }
    log::info!(
        "https peer={} {} {} -> {}",
        conn.peer,
        method.as_str(),
        path,
        answer.status.as_u16()
    );
    conn.deadline.responding();
    answer.into_response()
}

/// Runs blocking cloud code off the connection threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => {
            log::error!("https: a request's work failed: {e}");
            None
        }
    }
}

fn server_error() -> Answer {
    Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "server error")
}

fn unauthorized() -> Answer {
    Answer::error(
        StatusCode::UNAUTHORIZED,
        "a valid api token is required: Authorization: Bearer <token from `outpost-cloud api-token`>",
    )
    .with(header::WWW_AUTHENTICATE, "Bearer")
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first query parameter named `name`, percent-decoded.
fn param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .find(|(k, _)| percent_decode(k) == name)
        .map(|(_, v)| percent_decode(v))
}

/// `last_pulled_at`: missing, empty, `null` or `undefined` (what a first WatermelonDB pull sends)
/// is `None`; otherwise a non-negative integer.
fn last_pulled_at(req: &Request<Incoming>) -> Result<Option<i64>, Answer> {
    match param(req, "last_pulled_at").as_deref() {
        None | Some("" | "null" | "undefined") => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(t) if t >= 0 => Ok(Some(t)),
            _ => Err(Answer::error(
                StatusCode::BAD_REQUEST,
                format!("last_pulled_at {v:?}: a timestamp from a previous pull, or null"),
            )),
        },
    }
}

/// The bearer token of the head, if any.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    let h = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))?;
    Some(t.trim().to_string())
}

async fn route(server: &Server, conn: &Conn, req: Request<Incoming>) -> Answer {
    // Nothing below reads the body unless it is a push with a valid token; until then the
    // request is over, and a connection whose body is left unread must close.
    let unread = !req.body().is_end_stream();
    let early = |a: Answer| if unread { a.closing() } else { a };
    if req.uri().path() != "/watermelon/sync" {
        conn.deadline.request_read();
        return early(Answer::error(
            StatusCode::NOT_FOUND,
            format!("no route {}", req.uri().path()),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        conn.deadline.request_read();
        return early(Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET (pull) or POST (push)",
        ));
    }
    let name = match bearer(&req) {
        None => None,
        Some(token) => {
            let cloud = server.cloud.clone();
            match blocking(move || cloud.check_api_token(&token)).await {
                Some(Ok(name)) => name,
                Some(Err(e)) => {
                    log::error!("checking an api token: {}", Chain(&e));
                    conn.deadline.request_read();
                    return early(server_error());
                }
                None => return early(server_error()),
            }
        }
    };
    let Some(name) = name else {
        conn.deadline.request_read();
        return early(unauthorized());
    };
    let promoted = conn
        .ticket
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .authenticate();
    if let Err(refused) = promoted {
        conn.deadline.request_read();
        log::info!("https peer={} token {name}: {refused}", conn.peer);
        return Answer::busy(refused);
    }
    let since = match last_pulled_at(&req) {
        Ok(t) => t,
        Err(a) => {
            conn.deadline.request_read();
            return early(a);
        }
    };
    if req.method() == Method::GET {
        conn.deadline.request_read();
        let cloud = server.cloud.clone();
        let Ok(_turn) = server.tenant_work.acquire().await else {
            return early(server_error());
        };
        let token = name.clone();
        return match blocking(move || cloud.rest_pull(&token, since)).await {
            Some(Ok(body)) => early(Answer::json(StatusCode::OK, body)),
            Some(Err(e)) => {
                log::error!("pull for token {name}: {}", Chain(&e));
                early(server_error())
            }
            None => early(server_error()),
        };
    }
    let Some(since) = since else {
        conn.deadline.request_read();
        return early(Answer::error(
            StatusCode::BAD_REQUEST,
            "a push needs last_pulled_at (the timestamp of the pull it follows)",
        ));
    };
    push(server, conn, req, since, &name).await
}

/// Why a push body could not be received.
enum BodyRefused {
    TooLarge,
    Busy,
    Cut(hyper::Error),
}

/// Receives a push body within [`MAX_BODY`] and the bodies' budget: the budget's permit comes
/// back with it and is held until the push is done.
async fn receive(
    server: &Server,
    req: Request<Incoming>,
) -> Result<(Vec<u8>, tokio::sync::OwnedSemaphorePermit), BodyRefused> {
    let body = req.into_body();
    let declared = body.size_hint().exact();
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(BodyRefused::TooLarge);
    }
    // A chunked body is charged the most it may grow to.
    let charge = declared.map_or(MAX_BODY, |n| n as usize);
    let permit = server
        .bodies
        .clone()
        .try_acquire_many_owned(charge as u32)
        .map_err(|_| BodyRefused::Busy)?;
    // Exactly the declared size: a body read whole never reallocates. The pages are touched
    // only as bytes arrive.
    let mut buf = Vec::with_capacity(declared.map_or(64 << 10, |n| n as usize));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyRefused::Cut)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                return Err(BodyRefused::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((buf, permit))
}

async fn push(
    server: &Server,
    conn: &Conn,
    req: Request<Incoming>,
    since: i64,
    name: &str,
) -> Answer {
    let received = receive(server, req).await;
    conn.deadline.request_read();
    let (body, permit) = match received {
        Ok(b) => b,
        Err(BodyRefused::TooLarge) => {
            return Answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY} bytes"),
            )
            .closing()
        }
        Err(BodyRefused::Busy) => {
            return Answer::busy("busy: other pushes are being received; retry")
        }
        Err(BodyRefused::Cut(e)) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                format!("the body did not arrive whole: {e}"),
            )
            .closing()
        }
    };
    let cloud = server.cloud.clone();
    let Ok(turn) = server.tenant_work.acquire().await else {
        return server_error();
    };
    let token = name.to_string();
    let pushed = blocking(move || cloud.rest_push(&token, since, body)).await;
    drop(turn);
    drop(permit);
    match pushed {
        Some(Ok(p)) => {
            log::info!(
                "push by token {name} ({}): {} records written",
                p.summary,
                p.written
            );
            Answer::json(
                StatusCode::OK,
                json!({ "written": p.written }).to_string().into_bytes(),
            )
        }
        Some(Err(e)) => {
            log::info!("push by token {name} refused: {}", e.answer());
            if e.status() == 500 {
                log::error!("{}", Chain(&e));
            }
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Answer::error(status, e.answer())
        }
        None => server_error(),
    }
}

/// Starts the REST server's runtime on this thread and serves `listener` with the default
/// [`Limits`]; returns only if the runtime cannot start or the listener cannot be used.
pub fn run(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cloud: Arc<Cloud>,
) -> io::Result<()> {
    // Two workers: TLS handshakes are the CPU work here, and the machine the cloud runs on is
    // small. Blocking work (SQLite) is serialized by the cloud's locks, so few threads suffice.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("https")
        .enable_all()
        .build()?
        .block_on(serve(listener, tls, cloud, Limits::DEFAULT))
}
