//! Devices (real SQLite files with the built `liboutpost.so`) syncing through the real
//! `outpost-hub` binary over loopback TCP: enrollment, convergence, the refusals, and faults
//! (the connection cut at every byte offset of a session, the client process killed mid-sync).
//!
//! The test builds `outpost-hub` and `liboutpost.so` in release mode first (`cargo build
//! --release -p outpost-hub -p outpost`), so it always runs the current code. Files live under
//! `/dev/shm` when it exists (the hub fsyncs every commit; the fault tests run thousands of
//! sessions).

use outpost_protocol::enroll_code::EnrollCode;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod built;
use built::{built, free_port, scratch, Proxy};

/// A running `outpost-hub run`, killed on drop.
struct Hub {
    child: Child,
    data: PathBuf,
    port: u16,
}

impl Hub {
    fn start(data: &Path, port: u16) -> Hub {
        std::fs::create_dir_all(data).unwrap();
        let child = Command::new(&built().hub)
            .args(["run", "--data"])
            .arg(data)
            .args(["--net", &format!("std:127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "hub did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Hub {
            child,
            data: data.to_path_buf(),
            port,
        }
    }

    /// A fresh enrollment code (addresses: `--address` values, else the hub's own).
    fn code(&self, addresses: &[String]) -> String {
        let mut cmd = Command::new(&built().hub);
        cmd.args(["enroll-code", "--no-qr", "--data"])
            .arg(&self.data);
        for a in addresses {
            cmd.args(["--address", a]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace()
            .find(|w| w.starts_with("outpost:"))
            .expect("an outpost: code on stdout")
            .to_string()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, village TEXT, visits INTEGER NOT NULL DEFAULT 0);
SELECT outpost_track('patients', '{\"columns\": {\"visits\": \"counter\"}}');";

/// A device database file with the extension loaded.
struct Device {
    path: PathBuf,
    conn: Connection,
}

impl Device {
    fn open(path: &Path) -> Device {
        let conn = Connection::open(path).unwrap();
        // SAFETY: loading the extension built from this workspace.
        unsafe {
            conn.load_extension_enable().unwrap();
            conn.load_extension(&built().ext, Some("sqlite3_outpost_init"))
                .unwrap();
            conn.load_extension_disable().unwrap();
        }
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
            .unwrap();
        conn.query_row("SELECT 1 FROM (SELECT outpost_site_id())", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        Device {
            path: path.to_path_buf(),
            conn,
        }
    }

    fn call(&self, sql: &str) -> Result<String, String> {
        self.conn
            .query_row(sql, [], |r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())
    }

    fn enroll(&self, code: &str) -> Result<serde_json::Value, String> {
        self.call(&format!("SELECT outpost_enroll('{code}')"))
            .map(|j| serde_json::from_str(&j).unwrap())
    }

    fn sync(&self) -> Result<serde_json::Value, String> {
        self.call("SELECT outpost_sync()")
            .map(|j| serde_json::from_str(&j).unwrap())
    }

    fn exec(&self, sql: &str) {
        self.conn.execute_batch(sql).unwrap();
    }

    fn rows(&self) -> Vec<String> {
        let mut s = self
            .conn
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

    /// App rows, vector, quarantine and conflicts: what must be identical after converging.
    fn state(&self) -> (Vec<String>, String, i64, i64) {
        let q = |sql: &str| -> i64 { self.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        (
            self.rows(),
            self.call("SELECT outpost_vector()").unwrap(),
            q("SELECT count(*) FROM outpost_quarantine"),
            q("SELECT count(*) FROM outpost_conflicts"),
        )
    }

    fn integrity_ok(&self) {
        let r: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(r, "ok");
        assert!(self.conn.is_autocommit(), "left inside a transaction");
    }
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn the_real_hubs_enrollment_code_decodes_and_encodes_to_the_same_text() {
    let dir = scratch();
    let port = free_port();
    let hub = Hub::start(&dir.path().join("hub"), port);
    let text = hub.code(&["192.168.1.20:7420".into(), format!("127.0.0.1:{port}")]);
    let code = EnrollCode::decode(&text).unwrap();
    assert_eq!(code.encode(), text, "byte-identical format");
    assert!(code.public_key().is_ok());
    assert_eq!(
        code.addresses,
        vec!["192.168.1.20:7420".to_string(), format!("127.0.0.1:{port}")]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(code.expires_at > now && code.expires_at <= now + 15 * 60 + 5);
    // the hub's status names the same site id as the code
    let status = Command::new(&built().hub)
        .args(["status", "--json", "--data"])
        .arg(&hub.data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains(&code.hub_site.to_string()));
}

#[test]
fn three_devices_enroll_and_converge_with_each_change_applied_once() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), free_port());
    let devices: Vec<Device> = ["a", "b", "c"]
        .iter()
        .map(|d| Device::open(&dir.path().join(format!("{d}.db"))))
        .collect();
    for d in &devices {
        let info = d.enroll(&hub.code(&[])).unwrap();
        assert_eq!(info["role"], "hub");
        assert_eq!(info["fingerprint"].as_str().unwrap().len(), 16);
    }
    for (i, d) in devices.iter().enumerate() {
        d.exec(&format!(
            "INSERT INTO patients(id, name, village) VALUES ('p{i}a', 'n{i}', 'v'), ('p{i}b', 'm{i}', 'w');
             UPDATE patients SET visits = visits + 1 WHERE id = 'p{i}a';"
        ));
    }
    let mut applied = 0;
    let mut unchanged = 0;
    let mut pushed = 0;
    for _round in 0..2 {
        for d in &devices {
            let r = d.sync().unwrap();
            assert_eq!(r["peer"], "hub");
            assert_eq!(n(&r, "quarantined"), 0);
            assert!(n(&r, "ms") < 10_000);
            applied += n(&r, "applied");
            unchanged += n(&r, "unchanged");
            pushed += n(&r, "pushed");
        }
    }
    // every row (its existence and 3 cells: 4 changes) reached the two other devices, and
    // nothing arrived twice
    assert_eq!(applied, 6 * 2 * 4);
    assert_eq!(unchanged, 0);
    assert_eq!(pushed, 3 * 3);
    let first = devices[0].state();
    assert_eq!(first.0.len(), 6);
    for d in &devices {
        assert_eq!(d.state(), first);
        d.integrity_ok();
    }
    // a third round has nothing to move
    for d in &devices {
        let r = d.sync().unwrap();
        assert_eq!((n(&r, "pushed"), n(&r, "pulled")), (0, 0), "{r}");
    }
}

#[test]
fn an_enrollment_code_is_single_use() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), free_port());
    let code = hub.code(&[]);
    let a = Device::open(&dir.path().join("a.db"));
    let b = Device::open(&dir.path().join("b.db"));
    a.enroll(&code).unwrap();
    let e = b.enroll(&code).unwrap_err();
    assert!(e.contains("enrollment refused"), "{e}");
    let e = b.sync().unwrap_err();
    assert!(e.contains("not enrolled"), "{e}");
}

#[test]
fn a_rogue_hub_at_the_same_address_is_refused_and_changes_nothing() {
    let dir = scratch();
    let port = free_port();
    let hub = Hub::start(&dir.path().join("hub1"), port);
    let a = Device::open(&dir.path().join("a.db"));
    a.enroll(&hub.code(&[])).unwrap();
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    a.sync().unwrap();
    hub.stop();
    let rogue = Hub::start(&dir.path().join("hub2"), port);
    a.exec("INSERT INTO patients(id, name) VALUES ('p2', 'Baraka')");
    let before = a.state();
    let peers_before = a
        .call("SELECT group_concat(hex(site) || hex(key) || addresses) FROM _outpost_peers")
        .unwrap();
    let e = a.sync().unwrap_err();
    assert!(e.contains("key mismatch"), "{e}");
    assert!(e.contains("not the hub you enrolled with"), "{e}");
    assert_eq!(a.state(), before);
    assert_eq!(
        a.call("SELECT group_concat(hex(site) || hex(key) || addresses) FROM _outpost_peers")
            .unwrap(),
        peers_before
    );
    a.integrity_ok();
    // the rogue learned nothing: its mailbox holds no batch
    let status = Command::new(&built().hub)
        .args(["status", "--json", "--data"])
        .arg(&rogue.data)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.contains(
            &a.call("SELECT hex(outpost_site_id())")
                .unwrap()
                .to_lowercase()
        ),
        "{status}"
    );
}

#[test]
fn an_unreachable_hub_is_reported_with_the_addresses_tried() {
    let dir = scratch();
    let port = free_port();
    let hub = Hub::start(&dir.path().join("hub"), port);
    let a = Device::open(&dir.path().join("a.db"));
    a.enroll(&hub.code(&[])).unwrap();
    hub.stop();
    let e = a.sync().unwrap_err();
    assert!(e.contains("peer unreachable"), "{e}");
    assert!(
        e.contains(&format!("127.0.0.1:{port} (connection refused)")),
        "{e}"
    );
    a.integrity_ok();
}

#[test]
fn a_copied_database_with_a_new_key_is_told_to_re_enroll() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), free_port());
    let a = Device::open(&dir.path().join("a.db"));
    a.enroll(&hub.code(&[])).unwrap();
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    a.sync().unwrap();
    a.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    let copy = dir.path().join("copy.db");
    std::fs::copy(&a.path, &copy).unwrap();
    let c = Device::open(&copy);
    assert!(!dir.path().join("copy.db-outpost.key").exists());
    let e = c.sync().unwrap_err();
    assert!(e.contains("re-enroll"), "{e}");
    // the original still syncs
    a.sync().unwrap();
}

#[test]
fn sync_inside_a_transaction_is_refused() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), free_port());
    let a = Device::open(&dir.path().join("a.db"));
    a.enroll(&hub.code(&[])).unwrap();
    a.exec("BEGIN; INSERT INTO patients(id) VALUES ('p1');");
    let e = a.sync().unwrap_err();
    assert!(e.contains("outside a transaction"), "{e}");
    a.exec("COMMIT");
    assert_eq!(n(&a.sync().unwrap(), "pushed"), 1);
}

/// Applies one round of edits: each of `ids` gets a new name of `len` bytes and one more visit.
fn edit(d: &Device, ids: &[String], round: usize, len: usize) {
    let name: String = std::iter::repeat_n((b'a' + (round % 26) as u8) as char, len).collect();
    let tx = d.conn.unchecked_transaction().unwrap();
    for id in ids {
        tx.execute(
            "INSERT INTO patients(id, name, visits) VALUES (?1, ?2, 1)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, visits = visits + 1",
            (id, format!("{name}{round}")),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// How many independent hub + proxy + device sets share the cut offsets (offset `k` goes to set
/// `k % CUT_SHARDS`): a cut session mostly waits (connects, timeouts, fsyncs), so sets in
/// parallel finish sooner even on two cores.
const CUT_SHARDS: usize = 4;
/// Bytes past its own session's size each set still cuts at (see the loop).
const SIZE_SLACK: usize = 32;

#[test]
fn a_session_cut_at_every_byte_offset_loses_and_doubles_nothing() {
    let started = Instant::now();
    let shards: Vec<_> = (0..CUT_SHARDS)
        .map(|shard| std::thread::spawn(move || cut_every_offset_of_shard(shard)))
        .collect();
    let results: Vec<(usize, usize)> = shards
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect();
    // Each set cut its own session at its share of the offsets, up to its size plus a slack.
    let total = results.iter().map(|(t, _)| *t).max().unwrap_or(0);
    let smallest = results.iter().map(|(t, _)| *t).min().unwrap_or(0);
    assert!(
        total <= smallest + SIZE_SLACK,
        "the sets' sessions differ by more than the slack: {results:?}"
    );
    let cuts: usize = results
        .iter()
        .enumerate()
        .map(|(shard, (t, _))| (shard..=*t + SIZE_SLACK).step_by(CUT_SHARDS).count())
        .sum();
    let failures: usize = results.iter().map(|(_, f)| f).sum();
    assert!(
        failures as f64 > cuts as f64 * 0.9,
        "{failures} of {cuts} cuts failed a sync"
    );
    println!(
        "{cuts} cut offsets (sessions of up to {total} bytes) in {:.1} s over {CUT_SHARDS} sets ({failures} sessions failed at the cut)",
        started.elapsed().as_secs_f64(),
    );
}

/// Cuts the session at offsets `shard, shard + CUT_SHARDS, ...` of a session's bytes, retrying and
/// checking after each; returns the session's size and how many cut sessions failed.
fn cut_every_offset_of_shard(shard: usize) -> (usize, usize) {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), free_port());
    let proxy = Proxy::start(hub.port);
    let a = Device::open(&dir.path().join("a.db"));
    let b = Device::open(&dir.path().join("b.db"));
    a.enroll(&hub.code(&[format!("127.0.0.1:{}", proxy.port)]))
        .unwrap();
    b.enroll(&hub.code(&[])).unwrap();
    // ~4 KB each way: 16 rows of ~240 bytes per device per round
    let ids = |p: &str| (0..16).map(|i| format!("{p}{i:02}")).collect::<Vec<_>>();
    let (a_ids, b_ids) = (ids("a"), ids("b"));
    let round = |r: usize| {
        edit(&b, &b_ids, r, 240);
        b.sync().unwrap();
        edit(&a, &a_ids, r, 240);
    };
    round(0);
    let first = a.sync().unwrap();
    round(1);
    proxy.budget.store(usize::MAX, Ordering::SeqCst);
    let r = a.sync().unwrap();
    let total = *proxy.forwarded.lock().unwrap();
    // Round 1 changes two columns (name, visits) of each of the 16 rows on each side: 32 changes
    // (origin sequence numbers) each way.
    assert!(
        n(&r, "pushed") == 32 && n(&r, "pulled") == 32,
        "{first} {r}"
    );
    assert!(
        total > 7_000,
        "a session moves about 4 KB each way, got {total}"
    );
    let mut failures = 0;
    let mut rounds = 1;
    // A few offsets past this set's own session size: another set's session may be a few bytes
    // longer (clock deltas are varints), and every offset of every size must be cut somewhere.
    for cut in (shard..=total + SIZE_SLACK).step_by(CUT_SHARDS) {
        rounds += 1;
        round(rounds);
        proxy.budget.store(cut, Ordering::SeqCst);
        if a.sync().is_err() {
            failures += 1;
        }
        a.integrity_ok();
        proxy.budget.store(usize::MAX, Ordering::SeqCst);
        let r = a
            .sync()
            .unwrap_or_else(|e| panic!("retry after a cut at {cut}: {e}"));
        assert_eq!(n(&r, "quarantined"), 0);
        // every change of B's is here once: its latest names, and exactly its visit count
        let want_visits = (rounds + 1) as i64;
        let rows = a.rows();
        assert_eq!(rows.len(), 32, "cut at {cut}");
        for row in &rows {
            let f: Vec<&str> = row.split('|').collect();
            assert!(f[1].ends_with(&rounds.to_string()), "cut at {cut}: {row}");
            assert_eq!(
                f[3].parse::<i64>().unwrap(),
                want_visits,
                "cut at {cut}: {row}"
            );
        }
    }
    b.sync().unwrap();
    assert_eq!(a.state(), b.state());
    a.integrity_ok();
    b.integrity_ok();
    (total, failures)
}

#[test]
fn killing_the_client_process_mid_sync_loses_and_doubles_nothing() {
    let seed: u64 = std::env::var("OUTPOST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with OUTPOST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), free_port());
    let a = Device::open(&dir.path().join("a.db"));
    let b = Device::open(&dir.path().join("b.db"));
    a.enroll(&hub.code(&[])).unwrap();
    b.enroll(&hub.code(&[])).unwrap();
    let ids = |p: &str| (0..400).map(|i| format!("{p}{i:03}")).collect::<Vec<_>>();
    let (a_ids, b_ids) = (ids("a"), ids("b"));
    let mut kills = 0;
    for round in 0..8 {
        edit(&b, &b_ids, round, 600);
        let t0 = std::time::Instant::now();
        b.sync().unwrap();
        // A's sync does the same work (plus the shell's start): a delay drawn up to twice B's
        // duration lands inside it most of the time, however fast the machine or the client is.
        let window_us = (t0.elapsed().as_micros() as u64 * 2).max(1);
        edit(&a, &a_ids, round, 600);
        // a sqlite3 shell syncs A; it is killed after a random delay
        let mut child = Command::new("sqlite3")
            .arg(&a.path)
            .arg(format!(".load {}", built().ext.display()))
            .arg("SELECT outpost_sync();")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sqlite3 shell");
        let delay = rng.gen_range(0..window_us);
        std::thread::sleep(Duration::from_micros(delay));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        a.integrity_ok();
        let r = a
            .sync()
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        assert_eq!(n(&r, "quarantined"), 0);
        let rows = a.rows();
        assert_eq!(rows.len(), 800, "seed {seed}");
        for row in &rows {
            let f: Vec<&str> = row.split('|').collect();
            assert!(f[1].ends_with(&round.to_string()), "seed {seed}: {row}");
            assert_eq!(f[3], (round + 1).to_string(), "seed {seed}: {row}");
        }
    }
    b.sync().unwrap();
    assert_eq!(a.state(), b.state(), "seed {seed}");
    println!("{kills} of 8 client processes killed mid-sync");
    assert!(
        kills > 0,
        "seed {seed}: no sync was interrupted; the delays are too long"
    );
}
