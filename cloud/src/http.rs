//! A deliberately small HTTP/1.1 server side: one request per connection (`Connection: close`),
//! `Content-Length` bodies only (chunked uploads are refused with 411), bounded head and body, and
//! deadlines, so a slow or hostile client holds one thread for a bounded time only.

use std::io::{self, Read, Write};

/// Largest request head (request line + headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 32 << 20;

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read; [`BadRequest::status`] is the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// The request line and headers are longer than [`MAX_HEAD`] (431).
    HeadTooLarge,
    /// The peer closed before the end of the head (400).
    ClosedMidRequest,
    /// The head is not UTF-8 (400).
    HeadNotUtf8,
    /// The request line is not `METHOD TARGET VERSION` (400).
    RequestLine {
        /// The line.
        line: String,
    },
    /// Another version than HTTP/1.x (505).
    Version {
        /// The version asked for.
        version: String,
    },
    /// A header line without `:` (400).
    HeaderLine {
        /// The line.
        line: String,
    },
    /// A `Transfer-Encoding` body (411: only `Content-Length` bodies are read).
    NoContentLength,
    /// `Content-Length` above [`MAX_BODY`] (413).
    BodyTooLarge,
    /// `Content-Length` is not a number (400).
    ContentLength {
        /// The header's value.
        value: String,
    },
    /// More bytes arrived than `Content-Length` says (400).
    ExtraBytes,
    /// The peer closed before the end of the body (400).
    ClosedMidBody,
}

impl BadRequest {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            BadRequest::HeadTooLarge => 431,
            BadRequest::Version { .. } => 505,
            BadRequest::NoContentLength => 411,
            BadRequest::BodyTooLarge => 413,
            BadRequest::ClosedMidRequest
            | BadRequest::HeadNotUtf8
            | BadRequest::RequestLine { .. }
            | BadRequest::HeaderLine { .. }
            | BadRequest::ContentLength { .. }
            | BadRequest::ExtraBytes
            | BadRequest::ClosedMidBody => 400,
        }
    }
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRequest::HeadTooLarge => f.write_str("request head too large"),
            BadRequest::ClosedMidRequest => f.write_str("connection closed mid-request"),
            BadRequest::HeadNotUtf8 => f.write_str("request head is not UTF-8"),
            BadRequest::RequestLine { line } => write!(f, "bad request line {line:?}"),
            BadRequest::Version { version } => write!(f, "{version} is not supported"),
            BadRequest::HeaderLine { line } => write!(f, "bad header line {line:?}"),
            BadRequest::NoContentLength => f.write_str("send the body with Content-Length"),
            BadRequest::BodyTooLarge => write!(f, "body larger than {MAX_BODY} bytes"),
            BadRequest::ContentLength { value } => write!(f, "bad Content-Length {value:?}"),
            BadRequest::ExtraBytes => f.write_str("more bytes than Content-Length"),
            BadRequest::ClosedMidBody => f.write_str("connection closed mid-body"),
        }
    }
}

impl std::error::Error for BadRequest {}

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

/// Reads one request. `Ok(None)`: the peer closed before sending anything.
pub fn read_request(stream: &mut impl Read) -> io::Result<Result<Option<Request>, BadRequest>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if p > MAX_HEAD {
                return Ok(Err(BadRequest::HeadTooLarge));
            }
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err(BadRequest::HeadTooLarge));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(Ok(None));
            }
            return Ok(Err(BadRequest::ClosedMidRequest));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Ok(Err(BadRequest::HeadNotUtf8));
    };
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(BadRequest::RequestLine {
            line: line.to_string(),
        }));
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(Err(BadRequest::Version {
            version: version.to_string(),
        }));
    }
    let mut headers = Vec::new();
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            return Ok(Err(BadRequest::HeaderLine {
                line: l.to_string(),
            }));
        };
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut req = Request {
        method: method.to_string(),
        path: percent_decode(path),
        query,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Ok(Err(BadRequest::NoContentLength));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            Ok(_) => return Ok(Err(BadRequest::BodyTooLarge)),
            Err(_) => {
                return Ok(Err(BadRequest::ContentLength {
                    value: v.to_string(),
                }))
            }
        },
    };
    let mut body = buf[head_end + 4..].to_vec();
    if body.len() > len {
        return Ok(Err(BadRequest::ExtraBytes));
    }
    // Grow with what actually arrives, not with what Content-Length promises.
    let have = body.len();
    stream
        .by_ref()
        .take((len - have) as u64)
        .read_to_end(&mut body)?;
    if body.len() != len {
        return Ok(Err(BadRequest::ClosedMidBody));
    }
    req.body = body;
    Ok(Ok(Some(req)))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

/// Writes a JSON response and flushes.
pub fn respond(
    stream: &mut impl Write,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> io::Result<()> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        reason(status),
        body.len()
    );
    for (n, v) in extra_headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Request>, BadRequest> {
        read_request(&mut &raw[..]).unwrap()
    }

    #[test]
    fn a_request_with_query_and_body_is_read_whole() {
        let r = parse(b"POST /watermelon/sync?last_pulled_at=17&x=a%20b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nAuthorization: Bearer t\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/watermelon/sync");
        assert_eq!(r.param("last_pulled_at"), Some("17"));
        assert_eq!(r.param("x"), Some("a b"));
        assert_eq!(r.header("authorization"), Some("Bearer t"));
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn malformed_requests_get_the_matching_status() {
        assert!(parse(b"").unwrap().is_none());
        assert_eq!(parse(b"GET / HTTP/2\r\n\r\n").unwrap_err().status(), 505);
        assert_eq!(parse(b"GET /\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err()
                .status(),
            411
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
                .unwrap_err()
                .status(),
            413
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(big.as_bytes()).unwrap_err().status(), 431);
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
                .unwrap_err()
                .status(),
            400
        );
    }
}
