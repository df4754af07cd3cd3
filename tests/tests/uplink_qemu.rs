//! The hub's uplink over its own network stack: the real static hub under QEMU
//! (`hardware/qemu/run --cloud CODE`: TCG, `--net packet:eth0`, address from QEMU's DHCP)
//! relays to a real `outpost-cloud` on the host. The hub dials the cloud on embassy-net (a TCP
//! connection opened on the executor and bridged to the uplink thread); inside the guest the
//! host's loopback is 10.0.2.2 (QEMU user networking), so the cloud's code names
//! `10.0.2.2:PORT`.
//!
//! A device database (`liboutpost.so`) syncs with the QEMU hub, another with the cloud
//! directly; the hub enrolls with the cloud and relays; both devices and the cloud's tenant
//! tables converge, each change applied once, and the hub's disk (read after QEMU is killed)
//! covers exactly what the cloud holds. Needs qemu-system-x86_64 and the image's packages
//! (SKIPPED without them, FAILED under CI=true).
//!
//! The same over `--net tap:` in a network namespace (root): the hub dials the cloud listening
//! on the kernel's side of its TAP, and a device's rows synced through the hub reach the
//! cloud's tables.

mod support;

use outpost_mailbox::Mailbox;
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::VersionVector;
use rusqlite::{Connection, OpenFlags};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::*;

const TEST: &str = "a_qemu_hub_relays_to_a_cloud_on_the_host_over_its_own_stack";

fn can_boot() -> bool {
    require(TEST, "needs qemu-system-x86_64", has("qemu-system-x86_64"))
        && require(
            TEST,
            "needs busybox-static, cpio, e2fsprogs (mkfs.ext4, e2fsck, debugfs)",
            has("busybox") && has("cpio") && has("mkfs.ext4") && has("debugfs") && has("e2fsck"),
        )
        && require(
            TEST,
            "needs a kernel in /boot (linux-image-amd64)",
            std::fs::read_dir("/boot").is_ok_and(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")))
            }),
        )
}

/// `outpost-cloud` and `liboutpost.so`, built once (release).
fn built() -> &'static (PathBuf, PathBuf) {
    static B: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    B.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(root())
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "outpost-cloud",
                "-p",
                "outpost",
            ])
            .status()
            .expect("cargo build");
        assert!(
            status.success(),
            "building outpost-cloud and liboutpost.so failed"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        (
            target.join("release/outpost-cloud"),
            target.join("release/liboutpost.so"),
        )
    })
}

fn code_of(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("outpost:"))
        .expect("an outpost: code on stdout")
        .to_string()
}

/// `outpost-cloud run` on 127.0.0.1 (killed on drop).
struct Cloud {
    data: PathBuf,
    port: u16,
    child: Child,
}

impl Cloud {
    /// `outpost-cloud init` then `run` on 127.0.0.1.
    fn start(data: &Path) -> Cloud {
        Cloud::init(data);
        Cloud::run(data, None, Ipv4Addr::LOCALHOST, free_port())
    }

    fn init(data: &Path) {
        let out = Command::new(&built().0)
            .args(["init", "--data"])
            .arg(data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `outpost-cloud run` listening on `ip:port` (in network namespace `ns` if given).
    fn run(data: &Path, ns: Option<&str>, ip: Ipv4Addr, port: u16) -> Cloud {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&built().0);
                c
            }
            None => Command::new(&built().0),
        };
        let mut child = cmd
            .args(["run", "--data"])
            .arg(data)
            .args(["--https", &format!("{ip}:0"), "--listen"])
            .arg(format!("{ip}:{port}"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("protocol ") => break,
                Some(Ok(_)) => {}
                _ => panic!("outpost-cloud run ended early"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Cloud {
            data: data.to_path_buf(),
            port,
            child,
        }
    }

    /// An enrollment code for `kind` (`--hub`, `--device`) naming `address`.
    fn code(&self, kind: &str, address: &str) -> String {
        code_of(
            Command::new(&built().0)
                .args(["enroll-code", "--no-qr", kind, "--data"])
                .arg(&self.data)
                .args(["--address", address])
                .output()
                .unwrap(),
        )
    }

    fn rows(&self) -> Vec<String> {
        let c = Connection::open_with_flags(
            self.data.join("tenant.db"),
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let exists: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'patients'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if exists == 0 {
            return Vec::new();
        }
        rows_of(&c)
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows_of(c: &Connection) -> Vec<String> {
    let mut s = c
        .prepare("SELECT id, name, village, visits FROM patients ORDER BY id")
        .unwrap();
    s.query_map([], |r| {
        Ok(format!(
            "{}|{}|{}|{}",
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            r.get::<_, i64>(3)?
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// A device database with the extension loaded.
struct Device {
    conn: Connection,
    applied: u64,
}

impl Device {
    fn open(path: &Path) -> Device {
        let conn = Connection::open(path).unwrap();
        // SAFETY: loading the extension built from this workspace, by its entry point.
        unsafe {
            conn.load_extension_enable().unwrap();
            conn.load_extension(&built().1, Some("sqlite3_outpost_init"))
                .unwrap();
            conn.load_extension_disable().unwrap();
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, village TEXT, visits INTEGER NOT NULL DEFAULT 0);
             SELECT outpost_track('patients', '{\"columns\": {\"visits\": \"counter\"}}');",
        )
        .unwrap();
        Device { conn, applied: 0 }
    }

    fn call(&self, sql: &str) -> String {
        self.conn
            .query_row(sql, [], |r| r.get::<_, String>(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn enroll(&self, code: &str) -> serde_json::Value {
        serde_json::from_str(&self.call(&format!("SELECT outpost_enroll('{code}')"))).unwrap()
    }

    fn sync(&mut self) -> serde_json::Value {
        let r: serde_json::Value =
            serde_json::from_str(&self.call("SELECT outpost_sync()")).unwrap();
        assert_eq!(r["quarantined"], 0, "{r}");
        self.applied += r["applied"].as_u64().unwrap();
        r
    }

    fn write(&self, tag: &str, n: usize) {
        let mut sql = String::from("BEGIN;");
        for i in 0..n {
            sql.push_str(&format!(
                "INSERT INTO patients(id, name, village) VALUES ('{tag}{i}', 'n{tag}{i}', 'v{tag}');"
            ));
        }
        sql.push_str(&format!(
            "UPDATE patients SET visits = visits + 1 WHERE id = '{tag}0'; COMMIT;"
        ));
        self.conn.execute_batch(&sql).unwrap();
    }

    fn rows(&self) -> Vec<String> {
        rows_of(&self.conn)
    }
}

/// The mailbox's vector, after checking the file and that its served ranges chain per origin
/// with no seq twice.
fn check_mailbox(path: &Path) -> VersionVector {
    let m = Mailbox::open(path).unwrap();
    m.check().unwrap();
    let v = m.vector().unwrap();
    let mut next = VersionVector::new();
    for b in m.batches_for(&VersionVector::new(), None).unwrap() {
        let b = b.unwrap();
        assert_eq!(
            b.range.lo,
            next.get(&b.origin) + 1,
            "{path:?}: origin {}",
            b.origin
        );
        next.set(b.origin, b.range.hi);
    }
    assert_eq!(next, v, "{path:?}: served ranges = coverage");
    v
}

fn console(group: &Group) -> String {
    group.log.lock().unwrap().join("\n")
}

#[test]
fn a_qemu_hub_relays_to_a_cloud_on_the_host_over_its_own_stack() {
    if !can_boot() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"));

    // A device of another clinic, straight to the cloud.
    let mut far = Device::open(&dir.path().join("far.db"));
    let far_code = cloud.code("--device", &format!("127.0.0.1:{}", cloud.port));
    assert_eq!(far.enroll(&far_code)["role"], "cloud");
    far.write("f", 2);
    far.sync();

    // The hub under QEMU, with the cloud's hub code for the host as the guest sees it.
    let hub_code = cloud.code("--hub", &format!("10.0.2.2:{}", cloud.port));
    assert_eq!(
        EnrollCode::decode(&hub_code).unwrap().addresses,
        vec![format!("10.0.2.2:{}", cloud.port)]
    );
    let disk = dir.path().join("data.img");
    let (port, status_port) = (free_port(), free_port());
    let mut cmd = Command::new(root().join("hardware/qemu/run"));
    cmd.env("IMG", image())
        .args(["--disk", disk.to_str().unwrap()])
        .args(["--port", &port.to_string()])
        .args(["--status-port", &status_port.to_string()])
        .args(["--codes", "1"])
        .args(["--cloud", &hub_code])
        .args(["--uplink-max-ms", "2000"]);
    let t = Instant::now();
    let mut qemu = Group::spawn(cmd);
    let mut codes = Vec::new();
    qemu.wait_for(Duration::from_secs(180), |line| {
        if line.starts_with("outpost:") {
            codes.push(line.to_string());
        }
        line.starts_with("ready: sync").then_some(())
    });
    eprintln!("boot to serving: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(codes.len(), 1, "one device code printed");

    // The hub enrolls with the cloud over its own stack.
    qemu.wait_for(Duration::from_secs(120), |line| {
        line.contains("uplink: enrolled with the cloud")
            .then_some(())
    });
    eprintln!("enrolled with the cloud: {:.1}s", t.elapsed().as_secs_f64());

    // A device of the clinic syncs through the QEMU hub.
    let mut local = Device::open(&dir.path().join("local.db"));
    assert_eq!(local.enroll(&codes[0])["role"], "hub");
    local.write("l", 2);
    local.sync();

    // The hub relays (a device's commit wakes the uplink; it polls every 2 s here): keep
    // syncing both devices until they and the cloud's tables hold all four rows.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        local.sync();
        far.sync();
        let rows = local.rows();
        if rows.len() == 4 && far.rows() == rows && cloud.rows() == rows {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: local {rows:?}, far {:?}, cloud {:?}\nconsole:\n{}",
            far.rows(),
            cloud.rows(),
            console(&qemu)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("converged: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(
        local.call("SELECT outpost_vector()"),
        far.call("SELECT outpost_vector()")
    );
    // 4 rows x 4 changes, each applied once on the device that did not write it.
    assert_eq!(local.applied + far.applied, 4 * 4);
    for d in [&mut local, &mut far] {
        let r = d.sync();
        assert_eq!(
            (r["pushed"].as_u64(), r["pulled"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
    }
    let log = console(&qemu);
    assert!(
        log.contains("uplink: synced with the cloud: pushed"),
        "the uplink's sessions are logged:\n{log}"
    );

    // The hub's disk holds what the cloud holds (QEMU killed: the mailbox read off the image).
    qemu.kill();
    let hub_v = check_mailbox(&dump_mailbox(&disk, dir.path()));
    let cloud_v = check_mailbox(&cloud.data.join("mailbox.db"));
    assert_eq!(hub_v, cloud_v, "hub and cloud hold the same coverage");
}

#[test]
fn a_tap_hub_in_a_netns_relays_to_a_cloud_over_its_own_stack() {
    let test = "a_tap_hub_in_a_netns_relays_to_a_cloud_over_its_own_stack";
    if !require(test, "needs root (network namespace, TAP)", is_root())
        || !require(test, "needs iproute2", has("ip"))
    {
        return;
    }
    let ns = Netns::new("uplink");
    let tap = format!("otu{}", std::process::id() % 1_000_000);
    let host_ip = Ipv4Addr::new(10, 213, 62, 1);
    let dir = tempfile::tempdir().unwrap();
    // The cloud's data first: its port and code are known before it runs (it can only bind
    // the TAP's address once the hub has created the TAP).
    let cloud_data = dir.path().join("cloud");
    Cloud::init(&cloud_data);
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    let net = format!("tap:{tap}");
    // A hub code naming a name is refused on the hub's own stack (it resolves none).
    let named = code_of(
        Command::new(&built().0)
            .args(["enroll-code", "--no-qr", "--hub", "--data"])
            .arg(&cloud_data)
            .args(["--address", "cloud.example:7421"])
            .output()
            .unwrap(),
    );
    let refused = Command::new(hub_bin())
        .args(["run", "--data", d, "--net", &net, "--cloud", &named])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("resolves no names"), "{why}");

    // The cloud listens on the kernel's side of the TAP, which exists once the hub created
    // it; until the cloud runs, the hub's uplink backs off.
    let port = free_port();
    let code = code_of(
        Command::new(&built().0)
            .args(["enroll-code", "--no-qr", "--hub", "--data"])
            .arg(&cloud_data)
            .args(["--address", &format!("{host_ip}:{port}")])
            .output()
            .unwrap(),
    );
    let (hub, addr) = start_hub(
        Some(&ns.0),
        &[
            "run",
            "--data",
            d,
            "--net",
            &net,
            "--ip",
            "10.213.62.2/24",
            "--status-port",
            "0",
            "--cloud",
            &code,
            "--uplink-min-ms",
            "100",
            "--uplink-max-ms",
            "1000",
        ],
    );
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        &tap,
    ]);
    sh(&["ip", "-n", &ns.0, "link", "set", &tap, "up"]);
    let cloud = Cloud::run(&cloud_data, Some(&ns.0), host_ip, port);
    hub.wait_for(Duration::from_secs(60), |line| {
        line.contains("uplink: enrolled with the cloud")
            .then_some(())
    });

    // A device of the clinic (inside the namespace) syncs through the hub; its rows reach the
    // cloud's tables through the uplink.
    let code = code_for(&data, addr).encode();
    built();
    let db = dir.path().join("local.db");
    let rows = in_netns(&ns.0, move || {
        let mut local = Device::open(&db);
        assert_eq!(local.enroll(&code)["role"], "hub");
        local.write("t", 3);
        local.sync();
        local.rows()
    });
    assert_eq!(rows.len(), 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cloud.rows() != rows {
        assert!(
            Instant::now() < deadline,
            "cloud tables {:?}, device {rows:?}\nhub log:\n{}",
            cloud.rows(),
            console(&hub)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
