//! Creating the data directory's files: an empty file with mode 0600 (a SQLite database SQLite then
//! opens, so its `-wal`/`-shm` files get the same mode), and a file written whole at once
//! (temporary file, fsync, rename, fsync of the directory) so a crash never leaves half of it.
//!
//! A serving box's identity files (`identity.rs`), the cloud's data directory, control file and
//! TLS files are created this way. A file written whole is never put over an existing one: each
//! is created once, and one that appeared meanwhile (another process) is left as it is.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be created. The path is the file the step failed on.
#[derive(Debug)]
pub enum FileError {
    /// The file (or its temporary twin) could not be created.
    Create {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// Writing or syncing the temporary file failed.
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The temporary file could not be renamed to its final name.
    Rename {
        /// The final name.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The directory could not be synced after the rename (the new name may not be durable).
    SyncDirectory {
        /// The directory.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The file appeared while this one was being written (another process created it): it is
    /// not replaced.
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The permissions of an existing file or directory could not be read or narrowed.
    Restrict {
        /// The file or directory.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The path has no parent directory to write the file in.
    NoDirectory {
        /// The path.
        path: PathBuf,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Create { path, .. } => write!(f, "creating {}", path.display()),
            FileError::Write { path, .. } => write!(f, "writing {}", path.display()),
            FileError::Rename { path, .. } => write!(f, "renaming into {}", path.display()),
            FileError::SyncDirectory { path, .. } => {
                write!(f, "syncing directory {}", path.display())
            }
            FileError::Restrict { path, .. } => {
                write!(f, "restricting the permissions of {}", path.display())
            }
            FileError::Exists { path } => {
                write!(f, "{} already exists; not replacing it", path.display())
            }
            FileError::NoDirectory { path } => {
                write!(f, "{} has no directory to write it in", path.display())
            }
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Create { source, .. }
            | FileError::Write { source, .. }
            | FileError::Rename { source, .. }
            | FileError::SyncDirectory { source, .. }
            | FileError::Restrict { source, .. } => Some(source),
            FileError::Exists { .. } | FileError::NoDirectory { .. } => None,
        }
    }
}

/// Creates `path` empty with mode 0600 unless it exists.
pub fn create_private_file(path: &Path) -> Result<(), FileError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(FileError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Narrows an existing file's or directory's permissions to at most `mode` (0600 for a file of
/// secrets or data, 0700 for a directory), whatever made it wider before (an earlier version, a
/// copy, a umask); a missing path is left alone. Returns the old mode when it had to change it.
pub fn restrict(path: &Path, mode: u32) -> Result<Option<u32>, FileError> {
    let err = |source| FileError::Restrict {
        path: path.to_path_buf(),
        source,
    };
    let old = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    if old & !mode == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(old & mode)).map_err(err)?;
    Ok(Some(old))
}

/// [`restrict`], with a warning in the log naming the path and its old mode when it changed.
pub fn make_private(path: &Path, mode: u32) -> Result<(), FileError> {
    if let Some(old) = restrict(path, mode)? {
        log::warn!("{}: was mode {old:o}, now private", path.display());
    }
    Ok(())
}

/// A SQLite database file and its `-wal` and `-shm` files narrowed to 0600 ([`make_private`]).
pub fn make_database_private(path: &Path) -> Result<(), FileError> {
    make_private(path, 0o600)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        make_private(Path::new(&side), 0o600)?;
    }
    Ok(())
}

/// Writes `bytes` to a new file `path` with `mode`: temporary file, fsync, rename, fsync of the
/// directory, so a crash never leaves a half-written file. An existing `path` is not replaced.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = path.parent().ok_or_else(|| FileError::NoDirectory {
        path: path.to_path_buf(),
    })?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|source| FileError::Create {
            path: tmp.clone(),
            source,
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|source| FileError::Write {
            path: tmp.clone(),
            source,
        })?;
    if path.exists() {
        let _ = fs::remove_file(&tmp);
        return Err(FileError::Exists {
            path: path.to_path_buf(),
        });
    }
    fs::rename(&tmp, path).map_err(|source| FileError::Rename {
        path: path.to_path_buf(),
        source,
    })?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| FileError::SyncDirectory {
            path: dir.to_path_buf(),
            source,
        })
}
