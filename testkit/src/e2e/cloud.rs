//! `outpost-cloud` (the release build) as the end-to-end tests run it: a data directory made by
//! `init`, a `run` process that can be started, stopped (SIGSTOP), killed and started again on
//! the same session port, its enrollment codes, API tokens and status through its own commands,
//! its tenant tables read directly, and its REST API through `curl`.

use crate::e2e::built::built;
use crate::e2e::patients;
use crate::e2e::port::free_port;
use crate::e2e::process::{code_of, json_of, run_ok};
use rusqlite::{Connection, OpenFlags};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A cloud data directory and, while running, its `outpost-cloud run` process, listening for
/// sessions on a fixed address (HTTPS on a free port of the same IP). Its log (stderr) is
/// appended to `DATA.log`. Killed on drop (continued first, in case it was stopped).
pub struct Cloud {
    /// Its data directory.
    pub data: PathBuf,
    /// The session port.
    pub port: u16,
    ip: Ipv4Addr,
    netns: Option<String>,
    https: Option<String>,
    child: Option<Child>,
    /// More arguments for `run` (e.g. `--staging-mib`).
    pub run_args: Vec<String>,
}

impl Cloud {
    /// `outpost-cloud init --unsealed`, to listen on 127.0.0.1 at a free port; not running yet.
    /// Unsealed, so its hubs print their own codes and tests may read the batches relays hold;
    /// `tests/tests/sealed.rs` and the README story run sealed tenants (the default of `init`).
    pub fn init(data: &Path) -> Cloud {
        Cloud::init_at(data, None, Ipv4Addr::LOCALHOST, free_port())
    }

    /// `outpost-cloud init --unsealed`, to listen on `ip:port`, inside network namespace `netns`
    /// when given;
    /// not running yet.
    pub fn init_at(data: &Path, netns: Option<&str>, ip: Ipv4Addr, port: u16) -> Cloud {
        // A tenant made before (`init --sealed`) stays what it is.
        let kind: &[&str] = if data.exists() { &[] } else { &["--unsealed"] };
        run_ok(
            Command::new(&built().cloud)
                .arg("init")
                .args(kind)
                .arg("--data")
                .arg(data),
        );
        Cloud {
            data: data.to_path_buf(),
            port,
            ip,
            netns: netns.map(str::to_string),
            https: None,
            child: None,
            run_args: Vec::new(),
        }
    }

    /// `outpost-cloud init --postgres URL` (sealed unless `unsealed`), to listen on 127.0.0.1 at
    /// a free port; not running yet (`run` reads the URL from the data directory).
    pub fn init_postgres(data: &Path, url: &str, unsealed: bool) -> Cloud {
        let kind: &[&str] = if unsealed { &["--unsealed"] } else { &[] };
        run_ok(
            Command::new(&built().cloud)
                .arg("init")
                .args(kind)
                .arg("--data")
                .arg(data)
                .args(["--postgres", url]),
        );
        Cloud {
            data: data.to_path_buf(),
            port: free_port(),
            ip: Ipv4Addr::LOCALHOST,
            netns: None,
            https: None,
            child: None,
            run_args: Vec::new(),
        }
    }

    /// `init` on loopback, then `start`.
    pub fn running(data: &Path) -> Cloud {
        let mut cloud = Cloud::init(data);
        cloud.start();
        cloud
    }

    /// `outpost-cloud run`, returning once its session port listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the cloud already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .expect("the cloud's log file");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&built().cloud);
                c
            }
            None => Command::new(&built().cloud),
        };
        let ip = self.ip;
        let mut child = cmd
            .args(["run", "--data"])
            .arg(&self.data)
            .args(["--https", &format!("{ip}:0"), "--listen"])
            .arg(format!("{ip}:{}", self.port))
            .args(&self.run_args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting outpost-cloud run");
        // "https ADDR" comes before "protocol ADDR"; the rest is drained in the background.
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("https ") => {
                    self.https = Some(format!("https://{}", l[6..].trim()));
                }
                Some(Ok(l)) if l.starts_with("protocol ") => break,
                Some(Ok(_)) => {}
                _ => panic!(
                    "outpost-cloud run ended early (see {:?})",
                    self.data.with_extension("log")
                ),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// `https://IP:PORT` of the running process's REST API.
    pub fn https(&self) -> &str {
        self.https
            .as_deref()
            .expect("the cloud printed its https address")
    }

    /// The last 15 lines of its log (`DATA.log`), last first, for a failure's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        format!("the cloud's log (last lines first):\n{}", tail.join("\n"))
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the cloud runs").id()
    }

    /// `kill SIG PID` on the running process (`-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGKILL to the running process (if any): whatever it was doing stops at that instant.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An enrollment code (`kind`: `--hub` or `--device`) naming the session address.
    pub fn code(&self, kind: &str) -> String {
        self.code_naming(kind, &format!("{}:{}", self.ip, self.port))
    }

    /// An enrollment code (`kind`: `--hub` or `--device`) naming `address`.
    pub fn code_naming(&self, kind: &str, address: &str) -> String {
        code_of(
            Command::new(&built().cloud)
                .args(["enroll-code", "--no-qr", kind, "--data"])
                .arg(&self.data)
                .args(["--address", address]),
        )
    }

    /// An enrollment code (`kind`: `--hub` or `--device`) naming every address of `addresses`
    /// (a device tries them in order: several processes serving one tenant).
    pub fn code_naming_all(&self, kind: &str, addresses: &[String]) -> String {
        let mut cmd = Command::new(&built().cloud);
        cmd.args(["enroll-code", "--no-qr", kind, "--data"])
            .arg(&self.data);
        for a in addresses {
            cmd.args(["--address", a]);
        }
        code_of(&mut cmd)
    }

    /// The session address (`IP:PORT`).
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// A second process's copy of this cloud's data directory, at `data`, listening on another
    /// free port: for a tenant in PostgreSQL, both serve the same tenant. Not running yet.
    pub fn copy_to(&self, data: &Path) -> Cloud {
        run_ok(Command::new("cp").arg("-a").arg(&self.data).arg(data));
        Cloud {
            data: data.to_path_buf(),
            port: free_port(),
            ip: self.ip,
            netns: self.netns.clone(),
            https: None,
            child: None,
            run_args: Vec::new(),
        }
    }

    /// An enrollment code (`kind`: `--hub` or `--device`) granting `scopes` (`a,b` or `*`),
    /// naming the session address.
    pub fn scoped_code(&self, kind: &str, scopes: &str) -> String {
        code_of(
            Command::new(&built().cloud)
                .args(["enroll-code", "--no-qr", kind, "--data"])
                .arg(&self.data)
                .args(["--address", &format!("{}:{}", self.ip, self.port)])
                .args(["--scopes", scopes]),
        )
    }

    /// A device enrollment code naming the session address.
    pub fn device_code(&self) -> String {
        self.code("--device")
    }

    /// A new API token named `name`.
    pub fn api_token(&self, name: &str) -> String {
        let out = run_ok(
            Command::new(&built().cloud)
                .args(["api-token", "--data"])
                .arg(&self.data)
                .arg(name),
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .last()
            .expect("a token on stdout")
            .to_string()
    }

    /// `outpost-cloud status --json`.
    pub fn status(&self) -> serde_json::Value {
        json_of(
            Command::new(&built().cloud)
                .args(["status", "--json", "--data"])
                .arg(&self.data),
        )
    }

    /// A read-only connection to the tenant database.
    pub fn tenant(&self) -> Connection {
        let c = Connection::open_with_flags(
            self.data.join("tenant.db"),
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the tenant database");
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// Rows in tenant table `table` (0 while it does not exist).
    pub fn count(&self, table: &str) -> i64 {
        self.tenant()
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .unwrap_or(0)
    }

    /// The tenant's `patients` rows as [`patients::rows`] shows them (none while the table does
    /// not exist).
    pub fn patients(&self) -> Vec<String> {
        let c = self.tenant();
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
        patients::rows(&c)
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
            .arg(format!("{}/watermelon/sync?{query}", self.https()));
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').expect("curl printed the status");
        (
            code.parse().expect("an HTTP status"),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process is killed only once it runs again; no assertion in a drop.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}
