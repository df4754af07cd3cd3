//! The HTTPS front: the certificate and rustls configuration, and [`serve`], which runs the REST
//! API (`http.rs`, `docs/rest-api.md`) over TLS with them.
//!
//! The certificate is `--tls-cert`/`--tls-key` when given, else `tls/cert.pem` + `tls/key.pem` in
//! the data directory, made self-signed (for `localhost`, `127.0.0.1`, `::1` and the machine's host
//! name) on the first `run` that finds none. Clients pin it or add it as a root.

use crate::service::Cloud;
use outpost_relay::private_file::{write_new_file, FileError};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Serves the REST API on `listener` (`http.rs`: hyper on a tokio runtime of its own, on this
/// thread). Returns only if that runtime cannot start or the listener cannot be used.
pub fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cloud: Arc<Cloud>,
) -> io::Result<()> {
    crate::http::run(listener, tls, cloud)
}
