//! A raw HTTPS client for the hostile-load tests: rustls over a std TCP socket bound to a chosen
//! local address (127.0.0.2 is another host than 127.0.0.1 to the server), writing exactly the
//! bytes a test gives (a head alone, a byte at a time) and reading one answer.
#![allow(dead_code)]

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The server and a TLS configuration trusting only its certificate.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    tls: Arc<ClientConfig>,
    /// Read and write timeout of its sockets.
    pub timeout: Duration,
}

/// One answer: status, head (lowercased), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

impl Target {
    /// `https` is the `ADDR:PORT` the cloud printed; `cert` its PEM certificate.
    pub fn new(cert: &Path, https: &str) -> Target {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        Target {
            addr: https.parse().unwrap(),
            tls: Arc::new(tls),
            timeout: Duration::from_secs(10),
        }
    }

    /// A TCP connection from `local` (any port).
    pub fn tcp_from(&self, local: IpAddr) -> io::Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&SocketAddr::new(local, 0).into())?;
        s.connect_timeout(&self.addr.into(), Duration::from_secs(5))?;
        let tcp: TcpStream = s.into();
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        Ok(tcp)
    }

    /// A TLS connection from `local`, handshake done.
    pub fn connect_from(&self, local: IpAddr) -> io::Result<Tls> {
        let tcp = self.tcp_from(local)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let mut conn = ClientConnection::new(self.tls.clone(), name).map_err(io::Error::other)?;
        let mut tcp = tcp;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(StreamOwned::new(conn, tcp))
    }

    /// One request on a new connection from `local`: `Connection: close`, the token if given,
    /// the body if given. Returns the answer.
    pub fn request(
        &self,
        local: IpAddr,
        method: &str,
        target: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<Answer> {
        let mut tls = self.connect_from(local)?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())?;
        if let Some(b) = body {
            tls.write_all(b)?;
        }
        tls.flush()?;
        read_answer(&mut tls)
    }
}

/// Reads one answer (its head, then `Content-Length` bytes of body).
pub fn read_answer(tls: &mut impl Read) -> io::Result<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed before an answer ({} bytes)", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed mid-body",
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Answer {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A line of `/proc/PID/status` (`VmRSS`, `VmHWM`) in KiB.
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The raw client's target for the cloud `run` serves from `data`.
pub fn target_of(data: &Path, https: &str) -> Target {
    Target::new(&data.join("tls/cert.pem"), https)
}
