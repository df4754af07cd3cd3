//! Network namespaces for the tests that need a LAN of their own (root): created and deleted
//! with `ip netns`, entered by a thread with setns(2), and the commands that wire them.

use std::process::Command;
use std::thread::JoinHandle;

/// Runs a command (`args[0]` with the rest), panicking with its stderr when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (is {} installed?)", args[0]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with its loopback up, named for this process and `tag`; deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// Creates `optk-PID-TAG`.
    pub fn new(tag: &str) -> Netns {
        let name = format!("optk-{}-{tag}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// Gives `dev` (the kernel's side of a TAP the hub created in this namespace) the address
    /// `cidr` and brings it up.
    pub fn host_side(&self, dev: &str, cidr: &str) {
        sh(&["ip", "-n", &self.0, "addr", "add", cidr, "dev", dev]);
        sh(&["ip", "-n", &self.0, "link", "set", dev, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `f` on a new thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: the fd is an open namespace file; setns only changes this thread's netns.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Runs `f` on a thread inside namespace `ns` and returns its result (its panic, re-raised).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in(ns, f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}
