//! The release-built binaries the end-to-end tests run: `outpost-hub`, `liboutpost.so`, the
//! `outpost` command and `outpost-cloud`, built once per test process so the tests always run the
//! current code (a no-op when the suite's build stage already built them).
//!
//! Every test builds the same set of packages: cargo unifies shared crates' features over the
//! set it builds, so a different set would rebuild them, and the extension, at every test
//! process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the release artifacts.
pub struct Built {
    /// `outpost-hub`.
    pub hub: PathBuf,
    /// `liboutpost.so`.
    pub ext: PathBuf,
    /// `outpost` (the device command).
    pub cli: PathBuf,
    /// `outpost-cloud`.
    pub cloud: PathBuf,
}

/// The workspace's root directory.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ sits in the workspace root")
}

/// The target directory (`CARGO_TARGET_DIR`, else `target/` in the workspace).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds the hub, the extension, the CLI and the cloud (release), once per test process.
///
/// `OUTPOST_BUILT_DIR` names a directory holding the four artifacts instead (nothing is built):
/// a benchmark then runs a saved build, so runs before and after a change can alternate on a
/// loaded machine without rebuilding between them.
pub fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        if let Some(dir) = std::env::var_os("OUTPOST_BUILT_DIR").map(PathBuf::from) {
            let b = Built {
                hub: dir.join("outpost-hub"),
                ext: dir.join("liboutpost.so"),
                cli: dir.join("outpost"),
                cloud: dir.join("outpost-cloud"),
            };
            for p in [&b.hub, &b.ext, &b.cli, &b.cloud] {
                assert!(p.exists(), "{p:?} missing (OUTPOST_BUILT_DIR)");
            }
            return b;
        }
        let status = Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["build", "--release", "-p", "outpost-hub", "-p", "outpost"])
            .args(["-p", "outpost-cli", "-p", "outpost-cloud"])
            .status()
            .expect("cargo build");
        assert!(
            status.success(),
            "building the hub, extension, CLI and cloud failed"
        );
        let release = target_dir().join("release");
        let b = Built {
            hub: release.join("outpost-hub"),
            ext: release.join("liboutpost.so"),
            cli: release.join("outpost"),
            cloud: release.join("outpost-cloud"),
        };
        for p in [&b.hub, &b.ext, &b.cli, &b.cloud] {
            assert!(p.exists(), "{p:?} missing after the build");
        }
        b
    })
}
