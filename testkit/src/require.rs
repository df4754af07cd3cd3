//! What a test needs from the machine (root, a tool on `PATH`): without it the test prints
//! `SKIPPED <test>: <why>` and returns, except under `CI=true`, where a skip would hide a broken
//! setup and the test fails instead.

use std::process::{Command, Stdio};

/// True when the test can run; otherwise prints `SKIPPED <test>: <why>`, or panics under
/// CI=true.
pub fn require(test: &str, why: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true: failing, not skipping");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// True when the test process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when `tool` is on `PATH` (or in /sbin, /usr/sbin).
pub fn has(tool: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x /sbin/{tool} || test -x /usr/sbin/{tool}"),
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
