//! The read-only status page: a tiny HTTP/1.0 server on the hub's stack. `GET /` (and `HEAD /`)
//! answer with what the renderer returns, as HTML; other paths are 404, other methods 405.
//! One request per connection; a request head must arrive within 5 s and fit in 2 KiB.
//!
//! [`spawn_std_status`] serves the same responses over the kernel's sockets (`--net std:`).

use super::tcp::{serve, ConnHandler, SocketError, TcpOptions};
use embassy_net::Stack;
use embassy_time::{with_timeout, Duration};
use embedded_io_async::{Error as _, Read, Write};
use std::net::SocketAddr;

const MAX_HEAD: usize = 2048;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the status page on `port` forever (two connections at once), calling `render` for
/// each `GET /`. `render` runs on the network executor: it must be quick and must not block
/// (read a snapshot the hub keeps up to date, not the database).
pub async fn serve_status<F: Fn() -> String>(stack: Stack<'_>, port: u16, render: F) -> ! {
    let options = TcpOptions {
        rx_buffer: 2048,
        tx_buffer: 8192,
        ..TcpOptions::default()
    };
    log::info!("http: status page on port {port}");
    serve::<_, 2>(stack, port, options, &StatusPage { render }).await
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
        let mut head = Vec::with_capacity(512);
        let complete = with_timeout(HEAD_TIMEOUT, read_head(rx, &mut head)).await;
        let response = match complete {
            Ok(Ok(true)) => respond(&head, &self.render),
            Ok(Ok(false)) => status_only(400, "Bad Request"),
            Ok(Err(e)) => return Err(SocketError::Read(e.kind())),
            Err(_) => status_only(408, "Request Timeout"),
        };
        log::debug!(
            "http: peer={peer} {:?} -> {}",
            head.split(|b| *b == b'\r')
                .next()
                .map(String::from_utf8_lossy),
            String::from_utf8_lossy(response.split(|b| *b == b'\r').next().unwrap_or(&[]))
        );
        tx.write_all(&response)
            .await
            .map_err(|e| SocketError::Write(e.kind()))?;
        tx.flush().await.map_err(|e| SocketError::Flush(e.kind()))
    }
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

/// Serves the status page over a std listener on a thread of its own (two requests at once at
/// most; more wait for the listener). `render` must be quick (a cached page).
pub fn spawn_std_status<F>(
    listener: std::net::TcpListener,
    render: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let render = Arc::new(render);
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("status-http".into())
        .spawn(move || loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("http: accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            while busy.load(Ordering::SeqCst) >= 2 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            busy.fetch_add(1, Ordering::SeqCst);
            let (render, busy_in) = (render.clone(), busy.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("http {peer}"))
                .spawn(move || {
                    let deadline =
                        std::time::Instant::now() + std::time::Duration::from(HEAD_TIMEOUT);
                    let mut head = Vec::with_capacity(512);
                    let mut buf = [0u8; 512];
                    let complete = loop {
                        if head.windows(4).any(|w| w == b"\r\n\r\n")
                            || head.windows(2).any(|w| w == b"\n\n")
                        {
                            break Some(true);
                        }
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        if head.len() > MAX_HEAD || left.is_zero() {
                            break if left.is_zero() { None } else { Some(false) };
                        }
                        let _ = stream.set_read_timeout(Some(left));
                        match stream.read(&mut buf) {
                            Ok(0) => break Some(false),
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                            Err(_) => break None,
                        }
                    };
                    let response = match complete {
                        Some(true) => respond(&head, &|| render()),
                        Some(false) => status_only(400, "Bad Request"),
                        None => status_only(408, "Request Timeout"),
                    };
                    let _ = stream.set_write_timeout(Some(std::time::Duration::from(HEAD_TIMEOUT)));
                    if let Err(e) = stream.write_all(&response) {
                        log::debug!("http: peer={peer} write failed: {e}");
                    }
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    busy_in.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                busy.fetch_sub(1, Ordering::SeqCst);
                log::warn!("http: peer={peer} refused: cannot start a thread: {e}");
            }
        })
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
