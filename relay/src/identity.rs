//! A serving box's static identity: a P-256 key pair (the Noise `s` key) and its site id, in two
//! files of the box's data directory. The hub and the cloud both keep theirs this way.
//!
//! The private key lives in `identity.key` (32 raw bytes, the scalar), created with mode 0600 by
//! write-to-temporary + fsync + rename, so a crash never leaves a half-written key. It is never
//! logged and never printed; [`Identity`]'s `Debug` shows the public key's fingerprint only. A key
//! file readable by others is refused, as ssh does, because anyone who reads it can impersonate
//! the box to every enrolled peer. The site id lives in `site-id` (32 hex digits and a newline).

use crate::private_file::{write_new_file, FileError};
use outpost_protocol::handshake::{KeyError, Keypair, PublicKey};
use outpost_protocol::site::ParseSiteIdError;
use outpost_protocol::SiteId;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The private key file in the data directory.
pub const KEY_FILE: &str = "identity.key";
/// The site id file in the data directory.
pub const SITE_FILE: &str = "site-id";

/// The box's key pair and site id.
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
    /// The box's site id.
    pub site: SiteId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.keypair.public().fingerprint())
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// Why the identity could not be loaded or created.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdentityError {
    /// An identity file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A new identity file could not be written.
    Write(FileError),
    /// The key file is readable by other users.
    ReadableByOthers {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold 32 bytes.
    KeyLength {
        /// The key file.
        path: PathBuf,
        /// How many bytes it holds.
        len: usize,
    },
    /// The key file's 32 bytes are not a P-256 scalar (0, or not below the group order).
    InvalidKey {
        /// The key file.
        path: PathBuf,
    },
    /// The site id file does not hold 32 hex digits.
    SiteId {
        /// The site id file.
        path: PathBuf,
        /// The parse error.
        source: ParseSiteIdError,
    },
    /// The system's random source failed while generating the key.
    KeyGeneration(KeyError),
    /// The system's random source failed while choosing the site id.
    Random(getrandom::Error),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            IdentityError::Write(e) => e.fmt(f),
            IdentityError::ReadableByOthers { path, mode } => write!(
                f,
                "{} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
            IdentityError::KeyLength { path, len } => write!(
                f,
                "{} holds {len} bytes; a P-256 private key file holds 32",
                path.display()
            ),
            IdentityError::InvalidKey { path } => write!(
                f,
                "{} does not hold a valid P-256 private key",
                path.display()
            ),
            IdentityError::SiteId { path, source } => {
                write!(f, "{} does not hold a site id: {source}", path.display())
            }
            IdentityError::KeyGeneration(e) => write!(
                f,
                "generating the identity key from the system's random source: {e}"
            ),
            IdentityError::Random(e) => write!(f, "reading the system's random source: {e}"),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Read { source, .. } => Some(source),
            IdentityError::Write(e) => e.source(),
            IdentityError::SiteId { source, .. } => Some(source),
            IdentityError::KeyGeneration(e) => Some(e),
            IdentityError::Random(e) => Some(e),
            _ => None,
        }
    }
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    }
}

impl Identity {
    /// Loads the identity from `dir` (`identity.key`, `site-id`), creating what is missing (a
    /// fresh key, a random site id). Returns it and whether anything was just created.
    pub fn load_or_create(dir: &Path) -> Result<(Identity, bool), IdentityError> {
        let key_path = dir.join(KEY_FILE);
        let site_path = dir.join(SITE_FILE);
        let mut created = false;
        if !key_path.exists() {
            let key = Keypair::generate().map_err(IdentityError::KeyGeneration)?;
            write_new_file(&key_path, key.secret_bytes(), 0o600).map_err(IdentityError::Write)?;
            created = true;
        }
        if !site_path.exists() {
            let mut site = [0u8; 16];
            getrandom::getrandom(&mut site).map_err(IdentityError::Random)?;
            write_new_file(&site_path, format!("{}\n", SiteId(site)).as_bytes(), 0o644)
                .map_err(IdentityError::Write)?;
            created = true;
        }
        let meta = fs::metadata(&key_path).map_err(read_error(&key_path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::ReadableByOthers {
                path: key_path,
                mode,
            });
        }
        let raw = fs::read(&key_path).map_err(read_error(&key_path))?;
        let Ok(secret) = <[u8; 32]>::try_from(raw.as_slice()) else {
            return Err(IdentityError::KeyLength {
                path: key_path,
                len: raw.len(),
            });
        };
        let keypair = Keypair::from_secret(&secret)
            .map_err(|_| IdentityError::InvalidKey { path: key_path })?;
        let text = fs::read_to_string(&site_path).map_err(read_error(&site_path))?;
        let site = text
            .trim()
            .parse()
            .map_err(|source| IdentityError::SiteId {
                path: site_path,
                source,
            })?;
        Ok((Identity { keypair, site }, created))
    }

    /// The public key (what peers pin, and what enrollment codes carry).
    pub fn public(&self) -> &PublicKey {
        self.keypair.public()
    }

    /// The key pair, for the Noise responder and the uplink's initiator only.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_created_once_with_a_private_key_only_the_owner_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = fs::metadata(dir.path().join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again.public(), first.public());
        assert_eq!(again.site, first.site);
        assert_eq!(first.public().as_bytes()[0], 0x04);
        let secret = first.keypair().secret_bytes();
        assert!(!format!("{first:?}").contains(&format!("{:02x}", secret[0]).repeat(2)));
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let key = dir.path().join("identity.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("identity.key") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let key = dir.path().join("identity.key");
        fs::write(&key, b"short").unwrap();
        let err = Identity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity.key") && err.contains("32"), "{err}");
    }

    #[test]
    fn public_keys_match_the_p256_generator_for_scalar_one() {
        let mut one = [0u8; 32];
        one[31] = 1;
        let public = *Keypair::from_secret(&one).unwrap().public().as_bytes();
        // G of P-256 (SEC 2, section 2.4.2), uncompressed.
        let gx = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
        let hex: String = public[1..33].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, gx);
        assert!(Keypair::from_secret(&[0u8; 32]).is_err());
        assert!(Keypair::from_secret(&[0xff; 32]).is_err());
    }

    #[test]
    fn a_key_file_of_an_invalid_scalar_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        fs::write(dir.path().join("identity.key"), [0u8; 32]).unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::InvalidKey { .. }), "{err}");
    }
}
