//! Helpers for the cloud's end-to-end tests: the real binary on real ports, a real HTTPS client
//! that trusts only the certificate the cloud generated, real device databases through the
//! statically linked engine, and the `sqlite3` shell.
#![allow(dead_code)]

use rusqlite::Connection;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_outpost-cloud");

/// Runs an `outpost-cloud` command to completion; returns (status ok, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("OUTPOST_LOG", "debug")
        .output()
        .expect("running outpost-cloud");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like [`cli`], failing the test when the command fails.
pub fn cli_ok(args: &[&str]) -> String {
    let (ok, out, err) = cli(args);
    assert!(ok, "outpost-cloud {args:?} failed: {err}");
    out
}

/// `outpost-cloud init --unsealed` of `DIR/cloud`: the data directory (unsealed, so the tests
/// read what the mailbox holds; sealed tenants are `tests/tests/sealed.rs`'s).
pub fn init(dir: &Path) -> PathBuf {
    let data = dir.join("cloud");
    cli_ok(&["init", "--unsealed", "--data", data.to_str().unwrap()]);
    data
}

/// A new API token named `name` for the cloud at `data`.
pub fn api_token(data: &Path, name: &str) -> String {
    cli_ok(&["api-token", "--data", data.to_str().unwrap(), name])
        .trim()
        .to_string()
}

/// A cloud initialized in `DIR/cloud` and running, with a REST client holding a new API token
/// (`app`): the data directory, the process, the client.
pub fn serving(dir: &Path) -> (PathBuf, Running, Rest) {
    let data = init(dir);
    let token = api_token(&data, "app");
    let run = start(&data);
    let rest = Rest::new(&data, &run.https, &token);
    (data, run, rest)
}

/// A running `outpost-cloud run`, killed on drop.
pub struct Running {
    pub child: Child,
    pub https: String,
    pub protocol: String,
    pub stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- outpost-cloud run log:\n{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(data: &Path) -> Running {
    let stderr = data.with_extension("stderr");
    let mut child = Command::new(BIN)
        .args(["run", "--data"])
        .arg(data)
        .args(["--https", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .env("OUTPOST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("starting outpost-cloud run");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut https, mut protocol, mut cert) = (None, None, None);
    while https.is_none() || protocol.is_none() || cert.is_none() {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            _ => panic!(
                "outpost-cloud run ended early: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            ),
        };
        if let Some(a) = line.strip_prefix("https ") {
            https = Some(a.to_string());
        } else if let Some(a) = line.strip_prefix("protocol ") {
            protocol = Some(a.to_string());
        } else if let Some(a) = line.strip_prefix("cert-sha256 ") {
            cert = Some(a.to_string());
        }
    }
    Running {
        child,
        https: https.unwrap(),
        protocol: protocol.unwrap(),
        stderr,
    }
}

/// An HTTPS client that trusts only `data`'s generated certificate.
pub struct Rest {
    agent: ureq::Agent,
    base: String,
    pub token: String,
}

impl Rest {
    pub fn new(data: &Path, https: &str, token: &str) -> Rest {
        let pem = std::fs::read(data.join("tls/cert.pem")).unwrap();
        let cert = ureq::tls::Certificate::from_pem(&pem).unwrap().to_owned();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        // The certificate names 127.0.0.1 (and localhost): the client checks it.
        Rest {
            agent,
            base: format!("https://{https}"),
            token: token.to_string(),
        }
    }

    pub fn pull(&self, last_pulled_at: Option<i64>) -> (u16, Value) {
        let q = last_pulled_at.map_or("null".to_string(), |t| t.to_string());
        let mut r = self
            .agent
            .get(format!("{}/watermelon/sync?last_pulled_at={q}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
        )
    }

    pub fn push(&self, last_pulled_at: i64, changes: &Value) -> (u16, Value) {
        let mut r = self
            .agent
            .post(format!(
                "{}/watermelon/sync?last_pulled_at={last_pulled_at}",
                self.base
            ))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(changes.to_string())
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
        )
    }

    pub fn get_with(&self, auth: Option<&str>) -> u16 {
        let mut req = self.agent.get(format!("{}/watermelon/sync", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call().unwrap().status().as_u16()
    }
}

/// A device database with the engine (registered once per test process).
pub fn device(path: &Path) -> Connection {
    outpost_embed::register().unwrap();
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// `sqlite3 FILE SQL` with the shell, `-json` output.
pub fn shell_json(db: &Path, sql: &str) -> Value {
    let out = Command::new("sqlite3")
        .arg("-json")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 shell is installed");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap()
}

/// Polls `f` until it returns `Some` (at most 20 s).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The records of `table` in a pull answer, by kind, sorted by id.
pub fn records(pull: &Value, table: &str, kind: &str) -> Vec<Value> {
    let mut v = pull["changes"][table][kind]
        .as_array()
        .cloned()
        .unwrap_or_default();
    v.sort_by_key(|r| r.get("id").map_or_else(|| r.to_string(), |i| i.to_string()));
    v
}

/// A running cloud with a tracked `patients` table and an API token named `app`: its data
/// directory, the process and the token (the hostile-load and HTTP tests).
pub fn running_with_patients(tmp: &Path) -> (PathBuf, Running, String) {
    let data = init(tmp);
    device(&data.join("tenant.db"))
        .execute_batch(
            "CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT);
             SELECT outpost_track('patients');",
        )
        .unwrap();
    let token = api_token(&data, "app");
    let run = start(&data);
    (data, run, token)
}
