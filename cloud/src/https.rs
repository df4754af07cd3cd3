//! The HTTPS front: rustls over std TCP, one thread per connection (at most 64 at once), and the
//! REST routes (`docs/rest-api.md`).
//!
//! The certificate is `--tls-cert`/`--tls-key` when given, else `tls/cert.pem` + `tls/key.pem` in
//! the data directory, made self-signed (for `localhost`, `127.0.0.1`, `::1` and the machine's host
//! name) on the first `run` that finds none. Clients pin it or add it as a root.

use crate::error_chain::Chain;
use crate::http::{read_request, respond, Request};
use crate::service::Cloud;
use crate::watermelon;
use outpost_relay::private_file::{write_new_file, FileError};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why the certificate and key could not be made or loaded.
#[derive(Debug)]
pub enum TlsError {
    /// Only one of the pair exists (a new pair would not match the one left).
    HalfPair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's directory could not be created.
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// Writing the new certificate or key failed.
    File(FileError),
    /// The self-signed certificate could not be generated.
    Generate(rcgen::Error),
    /// The certificate file could not be read or is not PEM.
    ReadCert {
        /// The certificate file.
        path: PathBuf,
        /// The reader's error.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file could not be read or holds no private key.
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The reader's error.
        source: pem::Error,
    },
    /// rustls refused the protocol versions (a build without TLS 1.2 and 1.3).
    Versions(rustls::Error),
    /// rustls refused the pair (the key does not match the certificate, or is not supported).
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's error.
        source: rustls::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::HalfPair { cert, key } => write!(
                f,
                "only one of {} and {} exists; restore the other or remove both to make a new \
                 certificate",
                cert.display(),
                key.display()
            ),
            TlsError::CreateDir { path, .. } => write!(f, "creating {}", path.display()),
            TlsError::File(e) => e.fmt(f),
            TlsError::Generate(_) => f.write_str("generating a self-signed certificate"),
            TlsError::ReadCert { path, .. } => write!(f, "reading {}", path.display()),
            TlsError::NoCertificate { path } => {
                write!(f, "{} holds no certificate", path.display())
            }
            TlsError::ReadKey { path, .. } => {
                write!(f, "reading the private key {}", path.display())
            }
            TlsError::Versions(_) => f.write_str("TLS protocol versions"),
            TlsError::Unusable { cert, key, .. } => write!(
                f,
                "{} and {} do not form a usable certificate and key",
                cert.display(),
                key.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::CreateDir { source, .. } => Some(source),
            // Transparent: the file error says what failed itself.
            TlsError::File(e) => e.source(),
            TlsError::Generate(e) => Some(e),
            TlsError::ReadCert { source, .. } | TlsError::ReadKey { source, .. } => Some(source),
            TlsError::Versions(e) | TlsError::Unusable { source: e, .. } => Some(e),
            TlsError::HalfPair { .. } | TlsError::NoCertificate { .. } => None,
        }
    }
}

/// Why one HTTPS connection ended without an answer (logged at debug: peers hang up).
#[derive(Debug)]
enum ConnectionError {
    /// The socket failed or timed out.
    Io(io::Error),
    /// rustls could not start the session.
    Tls(rustls::Error),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Io(e) => e.fmt(f),
            ConnectionError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Transparent: the inner error is the whole story.
        match self {
            ConnectionError::Io(e) => e.source(),
            ConnectionError::Tls(e) => e.source(),
        }
    }
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(e)
    }
}

/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// A request must arrive, and a response be taken, within this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the certificate and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The data directory's own pair.
    pub fn in_data_dir(data: &Path) -> TlsFiles {
        TlsFiles {
            cert: data.join("tls").join("cert.pem"),
            key: data.join("tls").join("key.pem"),
        }
    }
}

/// Makes a self-signed certificate at `files` unless both files exist. Returns whether it did.
pub fn ensure_self_signed(files: &TlsFiles) -> Result<bool, TlsError> {
    if files.cert.exists() && files.key.exists() {
        return Ok(false);
    }
    if files.cert.exists() != files.key.exists() {
        return Err(TlsError::HalfPair {
            cert: files.cert.clone(),
            key: files.key.clone(),
        });
    }
    let dir = files.cert.parent().ok_or_else(|| {
        TlsError::File(FileError::NoDirectory {
            path: files.cert.clone(),
        })
    })?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names).map_err(TlsError::Generate)?;
    write_new_file(
        &files.key,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )
    .map_err(TlsError::File)?;
    write_new_file(&files.cert, certified.cert.pem().as_bytes(), 0o644).map_err(TlsError::File)?;
    Ok(true)
}

/// SHA-256 of the first certificate in `cert` (DER), hex: what a client pins.
pub fn fingerprint(cert: &Path) -> Result<String, TlsError> {
    let read = |source| TlsError::ReadCert {
        path: cert.to_path_buf(),
        source,
    };
    let der = CertificateDer::pem_file_iter(cert)
        .map_err(read)?
        .next()
        .ok_or_else(|| TlsError::NoCertificate {
            path: cert.to_path_buf(),
        })?
        .map_err(read)?;
    Ok(Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The rustls server configuration for `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |source| TlsError::ReadCert {
        path: files.cert.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::ReadKey {
        path: files.key.clone(),
        source,
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Versions)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|source| TlsError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })?;
    Ok(Arc::new(config))
}

/// Accepts HTTPS connections forever.
pub fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, cloud: Arc<Cloud>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("https accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            log::warn!("https peer={peer} refused: {MAX_CONNECTIONS} connections open");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let (tls, cloud, open_in) = (tls.clone(), cloud.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("https {peer}"))
            .spawn(move || {
                if let Err(e) = connection(stream, tls, &cloud) {
                    log::debug!("https peer={peer}: {}", Chain(&e));
                }
                open_in.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
            log::error!("https peer={peer} refused: cannot start a thread");
        }
    }
}

fn connection(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    cloud: &Cloud,
) -> Result<(), ConnectionError> {
    let peer = stream.peer_addr()?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let conn = rustls::ServerConnection::new(tls).map_err(ConnectionError::Tls)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let req = match read_request(&mut tls)? {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(bad) => {
            let status = bad.status();
            log::info!("https peer={peer} bad request ({status}): {bad}");
            respond(&mut tls, status, &[], &json!({ "error": bad.to_string() }))?;
            return Ok(());
        }
    };
    let (status, headers, body) = route(&req, cloud);
    log::info!("https peer={peer} {} {} -> {status}", req.method, req.path);
    respond(&mut tls, status, headers, &body)?;
    tls.conn.send_close_notify();
    let _ = tls.flush_tls();
    Ok(())
}

trait FlushTls {
    fn flush_tls(&mut self) -> std::io::Result<()>;
}

impl FlushTls for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn flush_tls(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

type Response = (
    u16,
    &'static [(&'static str, &'static str)],
    serde_json::Value,
);

fn error(status: u16, msg: impl Into<String>) -> Response {
    (status, &[], json!({ "error": msg.into() }))
}

/// `last_pulled_at`: missing, empty, `null` or `undefined` (what a first WatermelonDB pull sends)
/// is `None`; otherwise a non-negative integer.
fn last_pulled_at(req: &Request) -> Result<Option<i64>, Response> {
    match req.param("last_pulled_at") {
        None | Some("" | "null" | "undefined") => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(t) if t >= 0 => Ok(Some(t)),
            _ => Err(error(
                400,
                format!("last_pulled_at {v:?}: a timestamp from a previous pull, or null"),
            )),
        },
    }
}

fn route(req: &Request, cloud: &Cloud) -> Response {
    if req.path != "/watermelon/sync" {
        return error(404, format!("no route {}", req.path));
    }
    if req.method != "GET" && req.method != "POST" {
        return error(405, "GET (pull) or POST (push)");
    }
    let token = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    let name = match token.map(|t| cloud.check_api_token(t)) {
        Some(Ok(Some(name))) => name,
        Some(Err(e)) => {
            log::error!("checking an api token: {}", Chain(&e));
            return error(500, "server error");
        }
        _ => {
            return (
                401,
                &[("WWW-Authenticate", "Bearer")],
                json!({"error": "a valid api token is required: Authorization: Bearer <token from `outpost-cloud api-token`>"}),
            )
        }
    };
    let since = match last_pulled_at(req) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if req.method == "GET" {
        return match cloud.rest_pull(since) {
            Ok(v) => (200, &[], v),
            Err(e) => {
                log::error!("pull for token {name}: {}", Chain(&e));
                error(500, "server error")
            }
        };
    }
    let Some(since) = since else {
        return error(
            400,
            "a push needs last_pulled_at (the timestamp of the pull it follows)",
        );
    };
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return error(400, format!("the body is not JSON: {e}")),
    };
    let what = watermelon::describe(&body);
    match cloud.rest_push(since, &body) {
        Ok(n) => {
            log::info!("push by token {name} ({what}): {n} records written");
            (200, &[], json!({ "written": n }))
        }
        Err(e) => {
            log::info!("push by token {name} ({what}) refused: {}", e.answer());
            if e.status() == 500 {
                log::error!("{}", Chain(&e));
            }
            error(e.status(), e.answer())
        }
    }
}
