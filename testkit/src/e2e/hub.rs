//! A running `outpost-hub run` (the release build) on loopback, as the device-level end-to-end
//! tests use it: started on a port, its enrollment codes and status read through its own
//! commands, its log kept beside its data directory, killed on drop.

use crate::e2e::built::built;
use crate::e2e::cloud::Cloud;
use crate::e2e::port::{free_port, wait_port};
use crate::e2e::process::{code_of, json_of};
use crate::e2e::proxy::Proxy;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `outpost-hub run --data DATA --net std:127.0.0.1:PORT ARGS...`; its stderr is appended to
/// `DATA.log`. Killed on drop.
pub struct Hub {
    child: Child,
    /// Its data directory.
    pub data: PathBuf,
    /// The loopback port it serves on.
    pub port: u16,
}

impl Hub {
    /// On a free port; returns once it listens.
    pub fn start(data: &Path, args: &[&str]) -> Hub {
        Hub::start_on(data, free_port(), args)
    }

    /// [`Hub::uplinked`] to `cloud` through a [`Proxy`] that closes every connection until its
    /// `budget` is raised: the hub holds what devices push (a backlog) until the test lets the
    /// uplink through. The hub backs off up to 500 ms.
    pub fn behind_cut_uplink(data: &Path, cloud: &Cloud) -> (Hub, Proxy) {
        let port: u16 = cloud
            .address()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the cloud's port");
        let proxy = Proxy::start(port);
        proxy.budget.store(0, Ordering::SeqCst);
        let code = cloud.code_naming("--hub", &format!("127.0.0.1:{}", proxy.port));
        (Hub::uplinked(data, &code, 500, &[]), proxy)
    }

    /// `outpost-hub run` without mDNS, with an uplink to the cloud of `cloud_code`, backing off
    /// from 100 ms up to `max_ms`, and `extra` arguments.
    pub fn uplinked(data: &Path, cloud_code: &str, max_ms: u64, extra: &[&str]) -> Hub {
        let max_ms = max_ms.to_string();
        let mut args = vec![
            "--no-mdns",
            "--cloud",
            cloud_code,
            "--uplink-min-ms",
            "100",
            "--uplink-max-ms",
            &max_ms,
        ];
        args.extend_from_slice(extra);
        Hub::start(data, &args)
    }

    /// On `port` (a hub restarted on its data directory keeps its address); returns once it
    /// listens.
    pub fn start_on(data: &Path, port: u16, args: &[&str]) -> Hub {
        std::fs::create_dir_all(data).expect("the hub's data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("the hub's log file");
        let child = Command::new(&built().hub)
            .args(["run", "--data"])
            .arg(data)
            .args(["--net", &format!("std:127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting outpost-hub run");
        wait_port(port, "the hub");
        Hub {
            child,
            data: data.to_path_buf(),
            port,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A fresh enrollment code naming the hub's loopback address. (The port answers a moment
    /// before `run` records its address in the data directory: naming it does not race that.)
    pub fn code(&self) -> String {
        self.code_naming(&[self.addr()])
    }

    /// A fresh enrollment code naming `addresses` (the hub's recorded own when empty).
    pub fn code_naming<A: AsRef<str>>(&self, addresses: &[A]) -> String {
        let mut cmd = Command::new(&built().hub);
        cmd.args(["enroll-code", "--no-qr", "--data"])
            .arg(&self.data);
        for a in addresses {
            cmd.args(["--address", a.as_ref()]);
        }
        code_of(&mut cmd)
    }

    /// `outpost-hub status --json`.
    pub fn status(&self) -> serde_json::Value {
        json_of(
            Command::new(&built().hub)
                .args(["status", "--json", "--data"])
                .arg(&self.data),
        )
    }

    /// Waits (up to `bound`, polling every 100 ms) until the status's `uplink` object satisfies
    /// `ok`; panics naming `what`, with the last status and the hub's log.
    pub fn wait_uplink(
        &self,
        what: &str,
        bound: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let u = self.status()["uplink"].clone();
            if ok(&u) {
                return;
            }
            assert!(
                start.elapsed() < bound,
                "{what}: not within {bound:?}: {u}\nhub log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything it logged so far (all its runs on this data directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it now (its data directory stays).
    pub fn stop(self) {}
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Now, in unix seconds (the unit of the hub's status times).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}
