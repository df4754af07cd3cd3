//! The read-only status page: a tiny HTTP/1.0 server on the hub's stack. `GET /` (and `HEAD /`)
//! answer with what the renderer returns, as HTML; other paths are 404, other methods 405.
//! One request per connection.
//!
//! Limits, so that a flood from one address cannot keep another's request out (docs/hub.md,
//! "Status page"): each connection has [`REQUEST_DEADLINE`] for all of it (its head of at most
//! [`MAX_HEAD`] bytes, and the response), not per read; one address has at most
//! [`PER_ADDRESS`] connections at once, and one more is answered `503` and closed at once;
//! [`SLOTS`] connections at once in all on the hub's stack ([`STD_MAX`] on `--net std:`, where a
//! connection over it is answered `503` too). Serving one address's requests only one at a time
//! would be enough against a flood but would make a browser's second request (the favicon) fail
//! while the page loads: two it is.
//!
//! The page itself is a cached snapshot (rendering reads no database), so answering costs a copy.
//!
//! [`spawn_std_status`] serves the same responses over the kernel's sockets (`--net std:`).

use super::tcp::{serve, ConnHandler, SocketError, TcpOptions};
use embassy_net::Stack;
use embassy_time::{with_timeout, Duration};
use embedded_io_async::{Error as _, Read, Write};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Largest request head.
pub const MAX_HEAD: usize = 2048;
/// The whole of a connection: its request head arriving, and the response sent.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Connections of one address at once.
pub const PER_ADDRESS: usize = 2;
/// Connections at once on the hub's stack (sockets of 2 + 8 KiB).
pub const SLOTS: usize = 8;
/// Connections at once on `--net std:` (a thread each).
pub const STD_MAX: usize = 16;

/// Serves the status page on `port` forever ([`SLOTS`] connections at once, [`PER_ADDRESS`] per
/// address), calling `render` for each `GET /`. `render` runs on the network executor: it must
/// be quick and must not block (read a snapshot the hub keeps up to date, not the database).
pub async fn serve_status<F: Fn() -> String>(stack: Stack<'_>, port: u16, render: F) -> ! {
    let options = TcpOptions {
        rx_buffer: 2048,
        tx_buffer: 8192,
        per_address: PER_ADDRESS,
        // A page is sent within the deadline; the close then gets a moment, not seconds.
        linger: (Duration::from_millis(500), Duration::from_millis(500)),
        ..TcpOptions::default()
    };
    log::info!("http: status page on port {port}");
    serve::<_, SLOTS>(stack, port, options, &StatusPage { render }).await
}

struct StatusPage<F> {
    render: F,
}

impl<F: Fn() -> String> ConnHandler for StatusPage<F> {
    type Error = SocketError;

    async fn handle<R: Read, W: Write>(
        &self,
        rx: &mut R,
        tx: &mut W,
        peer: SocketAddr,
    ) -> Result<(), SocketError> {
        match with_timeout(REQUEST_DEADLINE, self.exchange(rx, tx, peer)).await {
            Ok(r) => r,
            // The deadline passed while the response was being sent: give up on this peer.
            Err(_) => Err(SocketError::Write(embedded_io_async::ErrorKind::TimedOut)),
        }
    }

    async fn refuse<W: Write>(&self, tx: &mut W) {
        let _ = tx.write_all(&busy()).await;
        let _ = tx.flush().await;
    }
}

impl<F: Fn() -> String> StatusPage<F> {
    /// Reads the request head and sends the response; the caller bounds the whole.
    async fn exchange<R: Read, W: Write>(
        &self,
        rx: &mut R,
        tx: &mut W,
        peer: SocketAddr,
    ) -> Result<(), SocketError> {
        let mut head = Vec::with_capacity(512);
        // The head gets what is left of the deadline after a margin to send the answer.
        let read = with_timeout(
            REQUEST_DEADLINE - Duration::from_millis(250),
            read_head(rx, &mut head),
        )
        .await;
        let response = match read {
            Ok(Ok(true)) => respond(&head, &self.render),
            Ok(Ok(false)) => status_only(400, "Bad Request"),
            Ok(Err(e)) => return Err(SocketError::Read(e.kind())),
            Err(_) => status_only(408, "Request Timeout"),
        };
        log::debug!(
            "http: peer={peer} {} -> {}",
            request_line(&head),
            String::from_utf8_lossy(response.split(|b| *b == b'\r').next().unwrap_or(&[]))
        );
        tx.write_all(&response)
            .await
            .map_err(|e| SocketError::Write(e.kind()))?;
        tx.flush().await.map_err(|e| SocketError::Flush(e.kind()))
    }
}

/// The request line as a log shows it: control characters escaped by the logger, at most 80
/// bytes (a peer's text).
fn request_line(head: &[u8]) -> String {
    let line = head
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or(&[]);
    String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned()
}

/// The answer to a connection over the limits.
fn busy() -> Vec<u8> {
    let body = "503 Service Unavailable: too many connections, retry in a moment\n";
    format!(
        "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads until the blank line ending the request head: `Ok(true)` when found, `Ok(false)` when
/// the head is too long or the peer closed first.
async fn read_head<R: Read>(rx: &mut R, head: &mut Vec<u8>) -> Result<bool, R::Error> {
    let mut buf = [0u8; 512];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(true);
        }
        if head.len() > MAX_HEAD {
            return Ok(false);
        }
        let n = rx.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        head.extend_from_slice(&buf[..n]);
    }
}

fn status_only(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    format!(
        "HTTP/1.0 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The whole response to a request head.
fn respond(head: &[u8], render: &impl Fn() -> String) -> Vec<u8> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/") => {
            let body = render();
            let mut out = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if method == "GET" {
                out.extend_from_slice(body.as_bytes());
            }
            out
        }
        ("GET" | "HEAD", _) => status_only(404, "Not Found"),
        _ => status_only(405, "Method Not Allowed"),
    }
}

/// Serves the status page over a std listener on a thread of its own: a thread per
/// connection, [`STD_MAX`] at once, [`PER_ADDRESS`] per address, [`REQUEST_DEADLINE`] each; a
/// connection over a limit is answered `503` at once, on the listener's thread. `render` must be
/// quick (a cached page).
pub fn spawn_std_status<F>(
    listener: std::net::TcpListener,
    render: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    use std::sync::{Arc, Mutex};
    let render = Arc::new(render);
    let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    std::thread::Builder::new()
        .name("status-http".into())
        .spawn(move || loop {
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("http: accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            let admitted = {
                let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
                let total: usize = open.values().sum();
                let of_peer = open.entry(peer.ip()).or_insert(0);
                if *of_peer < PER_ADDRESS && total < STD_MAX {
                    *of_peer += 1;
                    true
                } else {
                    if *of_peer == 0 {
                        open.remove(&peer.ip());
                    }
                    false
                }
            };
            if !admitted {
                log::debug!("http: peer={peer} refused: busy");
                refuse_std(&stream);
                continue;
            }
            let (render, open_in) = (render.clone(), open.clone());
            let release = move || {
                let mut open = open_in.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = open.get_mut(&peer.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        open.remove(&peer.ip());
                    }
                }
            };
            let spawned = std::thread::Builder::new()
                .name(format!("http {peer}"))
                .spawn({
                    let release = release.clone();
                    move || {
                        let mut stream = stream;
                        serve_std(&mut stream, peer, &*render);
                        // The place is free before the client sees the answer end: a browser's
                        // next request is not turned away by its own finished one.
                        release();
                        let _ = stream.shutdown(std::net::Shutdown::Write);
                    }
                });
            if let Err(e) = spawned {
                release();
                log::warn!("http: peer={peer} refused: cannot start a thread: {e}");
            }
        })
}

/// Answers `503` to a connection over the limits and closes it, without blocking.
fn refuse_std(stream: &std::net::TcpStream) {
    use std::io::{Read as _, Write as _};
    let _ = stream.set_nonblocking(true);
    let mut s = stream;
    let _ = s.write_all(&busy());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Read what already arrived, so the close is a FIN and not a reset that could drop the 503.
    let mut sink = [0u8; 512];
    for _ in 0..8 {
        if !matches!(s.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// One request on `stream`, all of it within [`REQUEST_DEADLINE`].
/// Answers one request on `stream`; the caller ends the connection (after giving back its
/// place, so a client that saw the answer end never finds its place still taken).
fn serve_std(stream: &mut std::net::TcpStream, peer: SocketAddr, render: &dyn Fn() -> String) {
    use std::io::{Read as _, Write as _};
    use std::time::Instant;
    let deadline = Instant::now() + std::time::Duration::from(REQUEST_DEADLINE);
    let left = || deadline.saturating_duration_since(Instant::now());
    // Keep a margin of the deadline to send the answer.
    let margin = std::time::Duration::from_millis(250);
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break Some(true);
        }
        if head.len() > MAX_HEAD {
            break Some(false);
        }
        let wait = left().saturating_sub(margin);
        if wait.is_zero() {
            break None;
        }
        let _ = stream.set_read_timeout(Some(wait));
        match stream.read(&mut buf) {
            Ok(0) => break Some(false),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => break None,
        }
    };
    let response = match complete {
        Some(true) => respond(&head, &render),
        Some(false) => status_only(400, "Bad Request"),
        None => status_only(408, "Request Timeout"),
    };
    log::debug!("http: peer={peer} {}", request_line(&head));
    let _ = stream.set_write_timeout(Some(left().max(std::time::Duration::from_millis(1))));
    if let Err(e) = stream.write_all(&response) {
        log::debug!("http: peer={peer} write failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::respond;

    fn render() -> String {
        "<p>hub</p>".into()
    }

    #[test]
    fn get_root_returns_the_rendered_page() {
        let out = respond(b"GET /?x=1 HTTP/1.1\r\nHost: hub\r\n\r\n", &render);
        assert_eq!(
            out,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 10\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n<p>hub</p>"
        );
        let head = respond(b"HEAD / HTTP/1.0\r\n\r\n", &render);
        assert!(head.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert!(head.ends_with(b"\r\n\r\n"), "HEAD has no body");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        assert!(respond(b"GET /admin HTTP/1.0\r\n\r\n", &render).starts_with(b"HTTP/1.0 404 "));
        assert!(respond(b"POST / HTTP/1.0\r\n\r\n", &render).starts_with(b"HTTP/1.0 405 "));
        assert!(respond(b"\r\n\r\n", &render).starts_with(b"HTTP/1.0 405 "));
    }
}
