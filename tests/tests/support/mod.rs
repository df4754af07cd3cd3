//! What the hub end-to-end tests share: building the static hub and its QEMU image, running the
//! hub (QEMU, a network namespace, loopback). The protocol-level device whose pushes and pulls
//! the tests count exactly, process groups and skipping without root or a tool come from
//! `outpost-testkit` (re-exported here).
#![allow(dead_code)] // each test file uses part of this

use outpost_protocol::enroll_code::EnrollCode;
use outpost_testkit::e2e::device_db::DeviceDb;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test file uses part of these
pub use outpost_testkit::e2e::built::root;
#[allow(unused_imports)]
pub use outpost_testkit::e2e::port::free_port;
#[allow(unused_imports)]
pub use outpost_testkit::e2e::process::{run_ok, Group};
#[allow(unused_imports)]
pub use outpost_testkit::netns::{in_netns, sh, Netns};
#[allow(unused_imports)]
pub use outpost_testkit::require::{has, is_root, require};
#[allow(unused_imports)]
pub use outpost_testkit::{connect, enroll, exchange, sync, Device, HubInfo, SyncError};

/// True when `test` can boot the QEMU image here (QEMU, the image's packages, a kernel);
/// otherwise see [`require`].
pub fn can_boot(test: &str) -> bool {
    require(test, "needs qemu-system-x86_64", has("qemu-system-x86_64"))
        && require(
            test,
            "needs busybox-static, cpio, e2fsprogs (mkfs.ext4, e2fsck, debugfs)",
            has("busybox") && has("cpio") && has("mkfs.ext4") && has("debugfs") && has("e2fsck"),
        )
        && require(
            test,
            "needs a kernel in /boot (linux-image-amd64)",
            std::fs::read_dir("/boot").is_ok_and(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")))
            }),
        )
}

/// The static hub binary and the QEMU image (`hardware/qemu/build`, under a file lock since
/// tests run in parallel processes), built once per test process so they match the sources.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let root = root();
        let lock = root.join("target/qemu.lock");
        std::fs::create_dir_all(root.join("target")).unwrap();
        let t = Instant::now();
        let out = Command::new("flock")
            .arg(&lock)
            .arg(root.join("hardware/qemu/build"))
            .current_dir(root)
            .output()
            .expect("flock + hardware/qemu/build");
        assert!(
            out.status.success(),
            "hardware/qemu/build failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("hardware/qemu/build: {:.1}s", t.elapsed().as_secs_f64());
        root.join("target/qemu")
    })
}

/// The statically linked hub (built by [`image`]); it runs on the host as well.
pub fn hub_bin() -> PathBuf {
    image();
    root().join("target/x86_64-unknown-linux-gnu/release/outpost-hub")
}

/// `hardware/qemu/run` on `disk` with fresh forwarded ports, `codes` enrollment codes printed
/// first; returns once it printed `ready:` (with the codes and the time it took).
pub struct Qemu {
    pub group: Group,
    pub port: u16,
    pub status_port: u16,
    pub codes: Vec<String>,
    pub boot: Duration,
}

impl Qemu {
    pub fn boot(disk: &Path, codes: usize) -> Qemu {
        Qemu::boot_with(
            &root().join("hardware/qemu/run"),
            image(),
            disk,
            codes,
            Duration::from_secs(180),
        )
    }

    /// [`Qemu::boot`] with another runner script and image (the arm64 one's
    /// `hardware/pi/qemu-boot` takes the same options), serving within `within`.
    pub fn boot_with(
        runner: &Path,
        image: &Path,
        disk: &Path,
        codes: usize,
        within: Duration,
    ) -> Qemu {
        let (port, status_port) = (free_port(), free_port());
        let mut cmd = Command::new(runner);
        cmd.env("IMG", image)
            .args(["--disk", disk.to_str().unwrap()])
            .args(["--port", &port.to_string()])
            .args(["--status-port", &status_port.to_string()])
            .args(["--codes", &codes.to_string()]);
        let t = Instant::now();
        let group = Group::spawn(cmd);
        let mut found = Vec::new();
        group.wait_for(within, |line| {
            if line.starts_with("outpost:") {
                found.push(line.to_string());
            }
            line.starts_with("ready: sync").then_some(())
        });
        let boot = t.elapsed();
        assert_eq!(found.len(), codes, "enrollment codes printed");
        Qemu {
            group,
            port,
            status_port,
            codes: found,
            boot,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// The status page at `addr` (HTTP/1.0 GET /): the body.
pub fn http_get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: hub\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Polls the status page at `addr` every `every` until it names every site (it is refreshed
/// every 2 s), for at most `within`: the page.
pub fn page_lists(addr: SocketAddr, sites: &[String], within: Duration, every: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let page = http_get(addr);
        if sites.iter().all(|s| page.contains(s.as_str())) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "status page never listed {sites:?}:\n{page}"
        );
        std::thread::sleep(every);
    }
}

/// Copies the hub's databases out of an ext4 data disk image: a copy of the image first gets
/// its journal replayed (`e2fsck -fy`, what the guest's next mount would do), then `debugfs`
/// dumps `mailbox.db` and its WAL. No root, no loop device.
pub fn dump_mailbox(disk: &Path, into: &Path) -> PathBuf {
    let copy = into.join("disk-copy.img");
    std::fs::copy(disk, &copy).unwrap();
    let fsck = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "PATH=$PATH:/sbin:/usr/sbin e2fsck -fy {} >/dev/null 2>&1; test $? -le 1",
            copy.display()
        ))
        .status()
        .unwrap();
    assert!(fsck.success(), "e2fsck found errors it could not fix");
    for f in ["mailbox.db", "mailbox.db-wal"] {
        let out = into.join(f);
        let _ = std::fs::remove_file(&out);
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PATH=$PATH:/sbin:/usr/sbin debugfs -R 'dump /{f} {}' {} >/dev/null 2>&1",
                out.display(),
                copy.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let _ = std::fs::remove_file(&copy);
    let db = into.join("mailbox.db");
    assert!(db.exists(), "no mailbox.db on the data disk");
    db
}

/// `outpost-hub` (the static binary) with `args`, in namespace `ns` if given, waiting for its
/// "serving on IP:PORT" line; returns the process and that address.
pub fn start_hub(ns: Option<&str>, args: &[&str]) -> (Group, SocketAddr) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(hub_bin());
            c
        }
        None => Command::new(hub_bin()),
    };
    cmd.args(args);
    let group = Group::spawn(cmd);
    let addr = group.wait_for(Duration::from_secs(30), |line| {
        line.split("serving on ")
            .nth(1)
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
    });
    (group, addr)
}

/// `outpost-hub run --data DATA --net std:127.0.0.1:0 EXTRA...` (the static binary) on this
/// machine: the process and the address it serves on.
pub fn loopback_hub(data: &Path, extra: &[&str]) -> (Group, SocketAddr) {
    let d = data.to_str().unwrap();
    let mut args = vec!["run", "--data", d, "--net", "std:127.0.0.1:0"];
    args.extend_from_slice(extra);
    start_hub(None, &args)
}

/// `outpost-hub run --data DATA --net tap:TAP --ip IP EXTRA...` (the static binary) in `ns`,
/// then the kernel's side of the TAP the hub created given address `host` (a CIDR): the hub and
/// the address it serves on.
pub fn tap_hub(
    ns: &Netns,
    tap: &str,
    data: &Path,
    ip: &str,
    host: &str,
    extra: &[&str],
) -> (Group, SocketAddr) {
    let net = format!("tap:{tap}");
    let d = data.to_str().unwrap();
    let mut args = vec!["run", "--data", d, "--net", &net, "--ip", ip];
    args.extend_from_slice(extra);
    let started = start_hub(Some(&ns.0), &args);
    ns.host_side(tap, host);
    started
}

/// For a test of the hub's own stack on a TAP (root, `ip`): a network namespace named for `tag`
/// and the TAP's name (`PREFIX` and this process's id); `None` when the test is skipped.
pub fn tap_netns(test: &str, tag: &str, prefix: &str) -> Option<(Netns, String)> {
    if !require(test, "needs root (network namespace, TAP)", is_root())
        || !require(test, "needs iproute2", has("ip"))
    {
        return None;
    }
    let tap = format!("{prefix}{}", std::process::id() % 1_000_000);
    Some((Netns::new(tag), tap))
}

/// `outpost-hub <args>` to completion; stdout.
pub fn hub_cli(args: &[&str]) -> String {
    String::from_utf8(run_ok(Command::new(hub_bin()).args(args)).stdout).unwrap()
}

/// A fresh enrollment code from a data directory on this machine.
pub fn code_for(data: &Path, address: SocketAddr) -> EnrollCode {
    let out = hub_cli(&[
        "enroll-code",
        "--no-qr",
        "--data",
        data.to_str().unwrap(),
        "--address",
        &address.to_string(),
    ]);
    EnrollCode::decode(out.lines().next().unwrap().trim()).unwrap()
}

/// A real device's site id (lowercase hex).
pub fn site(d: &DeviceDb) -> String {
    d.call("SELECT lower(hex(outpost_site_id()))").unwrap()
}

/// A real device's patients, `(id, name, visits)` by id.
pub fn rows(d: &DeviceDb) -> Vec<(String, String, i64)> {
    let mut s = d
        .conn
        .prepare("SELECT id, name, visits FROM patients ORDER BY id")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
