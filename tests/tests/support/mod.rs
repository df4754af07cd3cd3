//! What the hub end-to-end tests share: building the static hub and its QEMU image, running the
//! hub (QEMU, a network namespace, loopback), skipping without root/QEMU (failing under
//! CI=true), and a protocol-level device (the protocol's Initiator and ClientSession over std
//! TCP, its database in memory) whose pushes and pulls the tests can count exactly.
#![allow(dead_code)] // each test file uses part of this

use outpost_protocol::batch::codec::{self, Limits as BatchLimits};
use outpost_protocol::batch::{BatchHeader, Compression, TableSchema};
use outpost_protocol::channel::{Channel, Limits as ChannelLimits};
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::{
    Ephemeral, Initiator, InitiatorConfig, Keypair, PublicKey, Purpose,
};
use outpost_protocol::message::{Covered, Message, PeerRole, SessionId};
use outpost_protocol::session::{ClientConfig, ClientSession, ClientStore, SessionError};
use outpost_protocol::{SeqRange, SiteId, VersionVector, PROTOCOL_VERSION};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// True when the test can run; otherwise prints `SKIPPED <test>: <why>`, or panics under
/// CI=true (where a skip would hide a broken setup).
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

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

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
            .current_dir(&root)
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process in its own process group, killed (the whole group, SIGKILL) on drop.
pub struct Group {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Group {
    /// Spawns `cmd` in a new process group; its stdout and stderr lines are collected.
    pub fn spawn(mut cmd: Command) -> Group {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Group { child, lines, log }
    }

    /// Waits for a line for which `f` returns something, up to `wait`.
    pub fn wait_for<T>(&self, wait: Duration, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no expected line within {wait:?}; output so far:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// SIGKILL to the whole group (QEMU and the script around it: a power cut).
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
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
        let image = image();
        let (port, status_port) = (free_port(), free_port());
        let mut cmd = Command::new(root().join("hardware/qemu/run"));
        cmd.env("IMG", image)
            .args(["--disk", disk.to_str().unwrap()])
            .args(["--port", &port.to_string()])
            .args(["--status-port", &status_port.to_string()])
            .args(["--codes", &codes.to_string()]);
        let t = Instant::now();
        let group = Group::spawn(cmd);
        let mut found = Vec::new();
        group.wait_for(Duration::from_secs(180), |line| {
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

// ---- the protocol-level device ----

/// An encoded batch of `origin` for `lo..=hi` (empty body; the table name makes each distinct).
pub fn batch(origin: SiteId, lo: u64, hi: u64) -> Vec<u8> {
    let table = TableSchema {
        name: format!("t{lo}_{hi}"),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
    };
    codec::encode(
        origin,
        SeqRange::new(lo, hi).unwrap(),
        vec![table],
        &[],
        Compression::None,
    )
}

pub fn header(b: &[u8]) -> BatchHeader {
    codec::decode_header(b, &BatchLimits::default()).unwrap()
}

/// Where a device reaches its hub, from the enrollment code.
#[derive(Clone, Debug)]
pub struct HubInfo {
    pub addr: SocketAddr,
    pub key: PublicKey,
    pub site: SiteId,
}

impl HubInfo {
    pub fn from_code(code: &EnrollCode) -> HubInfo {
        HubInfo {
            addr: code.addresses[0].parse().unwrap(),
            key: code.public_key().unwrap(),
            site: code.hub_site,
        }
    }
}

/// A device database in memory: its own batches, what it applied, what the hub acknowledged.
pub struct Device {
    pub keypair: Keypair,
    pub site: SiteId,
    pub counter: u64,
    pub own: Vec<Vec<u8>>,
    pub written: u64,
    pub vector: VersionVector,
    pub applied: Vec<(SiteId, SeqRange)>,
    pub acked: Vec<Covered>,
}

impl Device {
    pub fn new(n: u8) -> Device {
        Device {
            keypair: Keypair::generate().unwrap(),
            site: SiteId([n; 16]),
            counter: 0,
            own: Vec::new(),
            written: 0,
            vector: VersionVector::new(),
            applied: Vec::new(),
            acked: Vec::new(),
        }
    }

    /// Writes `n` new batches of one seq each.
    pub fn write(&mut self, n: u64) {
        for _ in 0..n {
            let seq = self.written + 1;
            self.own.push(batch(self.site, seq, seq));
            self.vector
                .advance(self.site, SeqRange::new(seq, seq).unwrap())
                .unwrap();
            self.written = seq;
        }
    }

    /// The highest seq of this device the hub acknowledged holding (contiguously).
    pub fn acked_up_to(&self) -> u64 {
        self.acked
            .iter()
            .filter(|c| c.origin == self.site)
            .map(|c| c.range.hi)
            .max()
            .unwrap_or(0)
    }

    /// Every seq of `origin` applied, sorted (duplicates kept: the tests look for them).
    pub fn applied_seqs(&self, origin: SiteId) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .applied
            .iter()
            .filter(|(o, _)| *o == origin)
            .flat_map(|(_, r)| r.lo..=r.hi)
            .collect();
        v.sort_unstable();
        v
    }
}

impl ClientStore for Device {
    type Error = String;
    type ExportPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        Ok(self.vector.clone())
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<VecDeque<Vec<u8>>, String> {
        let have = server.get(&self.site);
        Ok(self
            .own
            .iter()
            .filter(|b| header(b).range.lo > have)
            .cloned()
            .collect())
    }
    fn next_export(&mut self, plan: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        Ok(plan.pop_front())
    }
    fn acknowledged(&mut self, covered: &[Covered]) -> Result<(), String> {
        self.acked.extend_from_slice(covered);
        Ok(())
    }
    fn apply_chunk(&mut self, h: &BatchHeader, _b: &[u8]) -> Result<(), String> {
        self.vector
            .advance(h.origin, h.range)
            .map_err(|e| e.to_string())?;
        self.applied.push((h.origin, h.range));
        Ok(())
    }
}

/// Why a session did not complete.
#[derive(Debug)]
pub enum SyncError {
    /// The connection failed (refused, reset, closed, timed out).
    Io(std::io::Error),
    /// The session refused something.
    Session(SessionError),
    /// The channel or handshake failed.
    Protocol(String),
}

impl From<std::io::Error> for SyncError {
    fn from(e: std::io::Error) -> Self {
        SyncError::Io(e)
    }
}

pub fn connect(
    hub: &HubInfo,
    dev: &mut Device,
    purpose: Purpose,
) -> Result<(Channel, TcpStream), SyncError> {
    dev.counter += 1;
    let mut s = TcpStream::connect_timeout(&hub.addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let config = InitiatorConfig {
        identity: dev.keypair.clone(),
        site: dev.site,
        counter: dev.counter,
        responder_key: hub.key,
        responder_site: hub.site,
        purpose,
        version: PROTOCOL_VERSION,
    };
    let mut init = Initiator::start(
        &config,
        Ephemeral::from_os().unwrap(),
        ChannelLimits::default(),
        0,
    )
    .map_err(|e| SyncError::Protocol(format!("{e:?}")))?;
    s.write_all(&init.take_outgoing())?;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(SyncError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut input = &buf[..n];
        if let Some(mut ch) = init
            .receive(&mut input, 1)
            .map_err(|e| SyncError::Protocol(format!("{e:?}")))?
        {
            s.write_all(&ch.take_outgoing())?;
            return Ok((ch, s));
        }
    }
}

/// Enrolls `dev` with the code's one-time token, and returns once a session handshake is
/// admitted (the hub commits the admission after the handshake's last message, which it may
/// not have processed when the enrollment connection is closed).
pub fn enroll(code: &EnrollCode, dev: &mut Device) {
    let hub = HubInfo::from_code(code);
    let (_ch, s) = connect(&hub, dev, Purpose::Enroll { token: code.token }).expect("enrollment");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(&hub, dev, Purpose::Session) {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("enrolled device not admitted: {e:?}"),
        }
    }
}

/// One sync session (push what the hub lacks, then pull); the number of changes applied.
pub fn sync(hub: &HubInfo, dev: &mut Device, session: u64) -> Result<u64, SyncError> {
    let (mut ch, mut s) = connect(hub, dev, Purpose::Session)?;
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&session.to_le_bytes());
    id[8..].copy_from_slice(&dev.site.0[..8]);
    let mut client = ClientSession::new(ClientConfig {
        site: dev.site,
        role: PeerRole::Device,
        fingerprint: [9; 32],
        wall_clock_ms: 1_800_000_000_000,
        session: SessionId(id),
        live: false,
        max_push_attempts: 3,
        batch_limits: BatchLimits::default(),
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(m) = client.poll(dev).map_err(SyncError::Session)? {
            ch.send(&m.encode())
                .map_err(|e| SyncError::Protocol(format!("{e:?}")))?;
            // Flush per message: the channel bounds the bytes queued in flight.
            s.write_all(&ch.take_outgoing())?;
        }
        s.write_all(&ch.take_outgoing())?;
        if client.is_done() {
            return Ok(client.applied());
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(SyncError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut input = &buf[..n];
        while let Some(bytes) = ch
            .receive(&mut input, 2)
            .map_err(|e| SyncError::Protocol(format!("{e:?}")))?
        {
            let msg = Message::decode(&bytes, usize::MAX)
                .map_err(|e| SyncError::Protocol(format!("{e:?}")))?;
            client.handle(msg, dev).map_err(SyncError::Session)?;
        }
    }
}

/// The push/pull round every layer test runs: `a` and `b` each write batches and sync twice;
/// each must end with every batch of the other exactly once and none of its own.
pub fn exchange(hub: &HubInfo, a: &mut Device, b: &mut Device) {
    a.write(5);
    b.write(3);
    for round in 0..2 {
        sync(hub, a, 100 + round).expect("a syncs");
        sync(hub, b, 200 + round).expect("b syncs");
    }
    sync(hub, a, 102).expect("a syncs");
    assert_eq!(
        a.acked_up_to(),
        5,
        "the hub acknowledged all of a's batches"
    );
    assert_eq!(b.acked_up_to(), 3);
    assert_eq!(
        b.applied_seqs(a.site),
        (1..=5).collect::<Vec<_>>(),
        "b got a's batches once"
    );
    assert_eq!(
        a.applied_seqs(b.site),
        (1..=3).collect::<Vec<_>>(),
        "a got b's batches once"
    );
    assert!(a.applied_seqs(a.site).is_empty() && b.applied_seqs(b.site).is_empty());
}

/// Runs `f` on a thread inside network namespace `ns` and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    let handle = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: the fd is an open namespace file; setns only changes this thread's netns.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Runs a command, panicking with its stderr if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("ophubt-{}-{tag}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
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

/// `outpost-hub <args>` to completion; stdout.
pub fn hub_cli(args: &[&str]) -> String {
    let out = Command::new(hub_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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
