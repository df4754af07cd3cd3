//! What the tests against the real cloud share (live_mode, cloud_bench, story, id_blocks,
//! uplink_live): the release-built
//! `outpost-cloud` next to the hub, extension and CLI of `built`, a running cloud process (killed
//! on drop), device databases with the extension loaded, and the REST API through `curl`.
#![allow(dead_code)] // each test file uses part of this

use crate::built::{built, free_port};
use rusqlite::{Connection, OpenFlags};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `outpost-cloud` (release), built by `built()` with the hub, the extension and the CLI.
pub fn cloud_bin() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let cloud = built().hub.with_file_name("outpost-cloud");
        assert!(cloud.exists(), "{cloud:?} missing");
        cloud
    })
}

/// The `outpost:` code in a command's stdout.
pub fn code_of(out: std::process::Output) -> String {
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

/// `outpost-cloud init` + `run` on 127.0.0.1 (session port free, HTTPS on a free port), killed
/// on drop. Its log goes to `DATA.log`.
pub struct Cloud {
    pub data: PathBuf,
    pub port: u16,
    /// `https://127.0.0.1:PORT`.
    pub https: String,
    child: Child,
}

impl Cloud {
    pub fn start(data: &Path) -> Cloud {
        let out = Command::new(cloud_bin())
            .args(["init", "--data"])
            .arg(data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let mut child = Command::new(cloud_bin())
            .args(["run", "--data"])
            .arg(data)
            .args(["--https", "127.0.0.1:0", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        // "https ADDR" comes before "protocol ADDR"; drain the rest in the background.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut https = None;
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("https ") => {
                    https = Some(format!("https://{}", l[6..].trim()));
                }
                Some(Ok(l)) if l.starts_with("protocol ") => break,
                Some(Ok(_)) => {}
                _ => panic!(
                    "outpost-cloud run ended early (see {:?})",
                    data.with_extension("log")
                ),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Cloud {
            data: data.to_path_buf(),
            port,
            https: https.expect("an https line before the protocol line"),
            child,
        }
    }

    /// The `outpost-cloud run` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A fresh device enrollment code with the cloud's loopback address.
    pub fn device_code(&self) -> String {
        code_of(
            Command::new(cloud_bin())
                .args(["enroll-code", "--no-qr", "--device", "--data"])
                .arg(&self.data)
                .args(["--address", &format!("127.0.0.1:{}", self.port)])
                .output()
                .unwrap(),
        )
    }

    /// A new API token named `name`.
    pub fn api_token(&self, name: &str) -> String {
        let out = Command::new(cloud_bin())
            .args(["api-token", "--data"])
            .arg(&self.data)
            .arg(name)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .last()
            .expect("a token on stdout")
            .to_string()
    }

    /// A read-only connection to the tenant database.
    pub fn tenant(&self) -> Connection {
        let c = Connection::open_with_flags(
            self.data.join("tenant.db"),
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// Rows in tenant table `table` (0 while it does not exist).
    pub fn count(&self, table: &str) -> i64 {
        let c = self.tenant();
        c.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })
        .unwrap_or(0)
    }

    /// `curl` against the REST API: (HTTP status, body as JSON).
    pub fn rest(
        &self,
        token: &str,
        method: &str,
        query: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-w", "\n%{http_code}", "-X", method])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("{}/watermelon/sync?{query}", self.https));
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = cmd.output().expect("curl");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cloud data directory on a fixed session port that can be stopped, signalled and started
/// again (id_blocks, uplink_live); its log goes to `DATA.log`, appended at each start. Killed on
/// drop (continued first, in case it was stopped).
pub struct Stoppable {
    pub data: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Stoppable {
    /// `outpost-cloud init`; not running yet.
    pub fn init(data: &Path) -> Stoppable {
        let out = Command::new(cloud_bin())
            .args(["init", "--data"])
            .arg(data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Stoppable {
            data: data.to_path_buf(),
            port: free_port(),
            child: None,
        }
    }

    /// `outpost-cloud run`, returning once its session port listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .unwrap();
        let mut child = Command::new(cloud_bin())
            .args(["run", "--data"])
            .arg(&self.data)
            .args(["--https", "127.0.0.1:0", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::piped())
            .stderr(log)
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
        self.child = Some(child);
    }

    /// `kill SIG PID` on the running process (`-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Kills the running process (if any) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An enrollment code (`kind`: `--hub` or `--device`) with the cloud's loopback address.
    pub fn code(&self, kind: &str) -> String {
        code_of(
            Command::new(cloud_bin())
                .args(["enroll-code", "--no-qr", kind, "--data"])
                .arg(&self.data)
                .args(["--address", &format!("127.0.0.1:{}", self.port)])
                .output()
                .unwrap(),
        )
    }

    /// `outpost-cloud status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(cloud_bin())
            .args(["status", "--json", "--data"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

/// One connection to a device database file, with the extension loaded and `schema` run.
pub struct Device {
    pub conn: Connection,
}

impl Device {
    pub fn open(path: &Path, schema: &str) -> Device {
        let conn = Connection::open(path).unwrap();
        // SAFETY: loading the extension built from this workspace.
        unsafe {
            conn.load_extension_enable().unwrap();
            conn.load_extension(&built().ext, Some("sqlite3_outpost_init"))
                .unwrap();
            conn.load_extension_disable().unwrap();
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch(schema).unwrap();
        Device { conn }
    }

    pub fn call(&self, sql: &str) -> Result<String, String> {
        self.conn
            .query_row(sql, [], |r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())
    }

    pub fn json(&self, sql: &str) -> serde_json::Value {
        let text = self.call(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    pub fn enroll(&self, code: &str) -> serde_json::Value {
        self.json(&format!("SELECT outpost_enroll('{code}')"))
    }

    pub fn sync(&self, peer: &str) -> serde_json::Value {
        self.json(&format!("SELECT outpost_sync('{peer}')"))
    }

    pub fn exec(&self, sql: &str) {
        self.conn.execute_batch(sql).unwrap();
    }

    pub fn has(&self, table: &str, id: &str) -> bool {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM \"{table}\" WHERE id = ?1"),
                [id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    }
}

/// `outpost_sync(peer, '{"live_seconds": seconds}')` on its own thread and connection.
pub fn live(
    path: &Path,
    schema: &'static str,
    peer: &'static str,
    seconds: u64,
) -> JoinHandle<Result<serde_json::Value, String>> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let d = Device::open(&path, schema);
        d.call(&format!(
            "SELECT outpost_sync('{peer}', '{{\"live_seconds\": {seconds}}}')"
        ))
        .map(|j| serde_json::from_str(&j).unwrap())
    })
}

/// Polls `d` for row `id` of `table` up to `wait`; how long it took to appear.
pub fn appears(
    d: &Device,
    table: &str,
    id: &str,
    wait: Duration,
    every: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if d.has(table, id) {
            return Some(start.elapsed());
        }
        if start.elapsed() > wait {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Numeric field `k` of a JSON answer.
pub fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Median, p90, min and max of `ms`, as text.
pub fn summary(ms: &[f64]) -> String {
    let mut sorted = ms.to_vec();
    sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let pct = |p: f64| sorted[((p * (sorted.len() - 1) as f64).round()) as usize];
    format!(
        "median {:.0} ms, p90 {:.0} ms, min {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.9),
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
