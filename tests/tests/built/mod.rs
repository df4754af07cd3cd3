//! What the device-level end-to-end tests share: the release-built hub, extension and `outpost`
//! command (built once per test process; a no-op when the suite's build stage already ran), a
//! scratch directory on tmpfs, and a free loopback port.
#![allow(dead_code)] // each test file uses part of this

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the release artifacts the tests run.
pub struct Built {
    /// `outpost-hub`.
    pub hub: PathBuf,
    /// `liboutpost.so`.
    pub ext: PathBuf,
    /// `outpost` (the device command).
    pub cli: PathBuf,
}

/// Builds the hub, the extension and the CLI (release), once per test process.
pub fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let status = Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["build", "--release", "-p", "outpost-hub", "-p", "outpost"])
            // The cloud too (tests/tests/cloudrun uses it): building a different set of packages
            // unifies shared crates' features differently and rebuilds them, and the extension,
            // at every test process (uplink.rs builds hub + cloud + extension: the same set).
            .args(["-p", "outpost-cli", "-p", "outpost-cloud"])
            .status()
            .expect("cargo build");
        assert!(
            status.success(),
            "building the hub, extension and CLI failed"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let b = Built {
            hub: target.join("release/outpost-hub"),
            ext: target.join("release/liboutpost.so"),
            cli: target.join("release/outpost"),
        };
        assert!(b.hub.exists() && b.ext.exists() && b.cli.exists());
        b
    })
}

/// A scratch directory, on tmpfs when there is one (the tests fsync a lot).
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
