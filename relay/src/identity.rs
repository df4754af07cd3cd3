//! The hub's static identity: a P-256 key pair (the Noise `s` key) and the hub's site id.
//!
//! The private key lives in `identity.key` (32 raw bytes, the scalar), created with mode 0600 by
//! write-to-temporary + fsync + rename, so a crash never leaves a half-written key. It is never
//! logged and never printed; [`Identity`]'s `Debug` shows the public key's fingerprint only. A key
//! file readable by others is refused, as ssh does, because anyone who reads it can impersonate
//! the hub to every enrolled device.

use anyhow::{bail, Context, Result};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::SiteId;
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Length of an uncompressed SEC1 P-256 public key (what Noise P-256 puts on the wire).
pub const PUBLIC_KEY_LEN: usize = 65;

/// The hub's key pair and site id.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    /// The public key, uncompressed SEC1 (65 bytes, starting with 0x04).
    pub public: [u8; PUBLIC_KEY_LEN],
    /// The hub's site id.
    pub site: SiteId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &fingerprint(&self.public))
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// A short, printable name for a public key: the first 8 bytes of its SHA-256, in hex.
pub fn fingerprint(public: &[u8]) -> String {
    Sha256::digest(public)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The public key of a private scalar, or `None` if it is not a valid scalar (0 or >= n).
pub fn public_key_of(private: &[u8; 32]) -> Option<[u8; PUBLIC_KEY_LEN]> {
    Keypair::from_secret(private)
        .ok()
        .map(|k| *k.public().as_bytes())
}

/// A fresh private key from the system's random source (the protocol's key generation).
pub fn generate_private() -> Result<[u8; 32]> {
    let k =
        Keypair::generate().context("generating the hub's key from the system's random source")?;
    Ok(*k.secret_bytes())
}

/// Writes `bytes` to `path` atomically with `mode`: a temporary file, fsync, rename, fsync of the
/// directory. Refuses to replace an existing file.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("a data file has a directory")?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    if path.exists() {
        let _ = fs::remove_file(&tmp);
        bail!("{} already exists; not replacing it", path.display());
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

impl Identity {
    /// Loads the identity from `dir` (`identity.key`, `site-id`), creating both on first use.
    /// Returns it and whether it was just created.
    pub fn load_or_create(dir: &Path) -> Result<(Identity, bool)> {
        let key_path = dir.join("identity.key");
        let site_path = dir.join("site-id");
        let mut created = false;
        if !key_path.exists() {
            write_new_file(&key_path, &generate_private()?, 0o600)?;
            created = true;
        }
        if !site_path.exists() {
            let mut site = [0u8; 16];
            getrandom::getrandom(&mut site).context("reading the system's random source")?;
            write_new_file(&site_path, format!("{}\n", SiteId(site)).as_bytes(), 0o644)?;
            created = true;
        }
        let meta =
            fs::metadata(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
                key_path.display(),
                key_path.display()
            );
        }
        let raw = fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let private = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| {
            anyhow::anyhow!(
                "{} holds {} bytes; a P-256 private key file holds 32",
                key_path.display(),
                raw.len()
            )
        })?;
        let public = public_key_of(&private).with_context(|| {
            format!(
                "{} does not hold a valid P-256 private key",
                key_path.display()
            )
        })?;
        let text = fs::read_to_string(&site_path)
            .with_context(|| format!("reading {}", site_path.display()))?;
        let site: SiteId = text
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a site id", site_path.display()))?;
        Ok((
            Identity {
                private,
                public,
                site,
            },
            created,
        ))
    }

    /// The private scalar, for the Noise responder only.
    pub fn private_key(&self) -> &[u8; 32] {
        &self.private
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
        assert_eq!(again.public, first.public);
        assert_eq!(again.site, first.site);
        assert_eq!(first.public[0], 0x04);
        assert!(!format!("{first:?}").contains(&format!("{:02x}", first.private[0]).repeat(2)));
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
        let err = format!("{:#}", Identity::load_or_create(dir.path()).unwrap_err());
        assert!(err.contains("identity.key") && err.contains("32"), "{err}");
    }

    #[test]
    fn public_keys_match_the_p256_generator_for_scalar_one() {
        let mut one = [0u8; 32];
        one[31] = 1;
        let public = public_key_of(&one).unwrap();
        // G of P-256 (SEC 2, section 2.4.2), uncompressed.
        let gx = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
        let hex: String = public[1..33].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, gx);
        assert!(public_key_of(&[0u8; 32]).is_none());
        assert!(public_key_of(&[0xff; 32]).is_none());
    }
}
