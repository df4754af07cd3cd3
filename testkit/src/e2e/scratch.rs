//! Scratch directories for test data, on tmpfs when there is one: the hub fsyncs every commit
//! and the fault tests run thousands of sessions.

use std::path::Path;

/// A scratch directory (deleted on drop), under `/dev/shm` when it exists.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("a scratch directory in /dev/shm")
    } else {
        tempfile::tempdir().expect("a scratch directory")
    }
}
