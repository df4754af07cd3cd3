//! Devices (real SQLite files with the built `liboutpost.so`) syncing through the real
//! `outpost-hub` binary over loopback TCP: enrollment, convergence, the refusals, and faults
//! (the connection cut at every byte offset of a session, the client process killed mid-sync).
//!
//! The test builds `outpost-hub` and `liboutpost.so` in release mode first (the testkit's
//! `built()`), so it always runs the current code. Files live under
//! `/dev/shm` when it exists (the hub fsyncs every commit; the fault tests run thousands of
//! sessions).

use outpost_protocol::enroll_code::EnrollCode;
use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::device_db::{n, DeviceDb};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::proxy::Proxy;
use outpost_testkit::e2e::scratch::scratch;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A device database `NAME.db` in `dir`, enrolled with `hub`.
fn enrolled(dir: &Path, name: &str, hub: &Hub) -> DeviceDb {
    let d = DeviceDb::patients(&dir.join(format!("{name}.db")));
    d.try_enroll(&hub.code()).unwrap();
    d
}

/// App rows, vector, quarantine and conflicts: what must be identical after converging.
fn state(d: &DeviceDb) -> (Vec<String>, String, i64, i64) {
    (
        d.patient_rows(),
        d.vector(),
        d.count("outpost_quarantine"),
        d.count("outpost_conflicts"),
    )
}

#[test]
fn the_real_hubs_enrollment_code_decodes_and_encodes_to_the_same_text() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let port = hub.port;
    let text = hub.code_naming(&["192.168.1.20:7420".into(), format!("127.0.0.1:{port}")]);
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
    let status = hub.status().to_string();
    assert!(status.contains(&code.hub_site.to_string()));
}

#[test]
fn three_devices_enroll_and_converge_with_each_change_applied_once() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let devices: Vec<DeviceDb> = ["a", "b", "c"]
        .iter()
        .map(|d| DeviceDb::patients(&dir.path().join(format!("{d}.db"))))
        .collect();
    for d in &devices {
        let info = d.try_enroll(&hub.code()).unwrap();
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
            let r = d.try_sync().unwrap();
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
    let first = state(&devices[0]);
    assert_eq!(first.0.len(), 6);
    for d in &devices {
        assert_eq!(state(d), first);
        d.assert_intact();
    }
    // a third round has nothing to move
    for d in &devices {
        let r = d.try_sync().unwrap();
        assert_eq!((n(&r, "pushed"), n(&r, "pulled")), (0, 0), "{r}");
    }
}

#[test]
fn an_enrollment_code_is_single_use() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let code = hub.code();
    let a = DeviceDb::patients(&dir.path().join("a.db"));
    let b = DeviceDb::patients(&dir.path().join("b.db"));
    a.try_enroll(&code).unwrap();
    let e = b.try_enroll(&code).unwrap_err().to_string();
    assert!(e.contains("enrollment refused"), "{e}");
    let e = b.try_sync().unwrap_err().to_string();
    assert!(e.contains("not enrolled"), "{e}");
}

#[test]
fn a_rogue_hub_at_the_same_address_is_refused_and_changes_nothing() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub1"), &[]);
    let port = hub.port;
    let a = enrolled(dir.path(), "a", &hub);
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    a.try_sync().unwrap();
    hub.stop();
    let rogue = Hub::start_on(&dir.path().join("hub2"), port, &[]);
    a.exec("INSERT INTO patients(id, name) VALUES ('p2', 'Baraka')");
    let before = state(&a);
    let peers_before = a
        .call::<String>(
            "SELECT group_concat(hex(site) || hex(key) || addresses) FROM _outpost_peers",
        )
        .unwrap();
    let e = a.try_sync().unwrap_err().to_string();
    assert!(e.contains("key mismatch"), "{e}");
    assert!(e.contains("not the hub you enrolled with"), "{e}");
    assert_eq!(state(&a), before);
    assert_eq!(
        a.call::<String>(
            "SELECT group_concat(hex(site) || hex(key) || addresses) FROM _outpost_peers"
        )
        .unwrap(),
        peers_before
    );
    a.assert_intact();
    // the rogue learned nothing: its mailbox holds no batch
    let status = rogue.status().to_string();
    assert!(
        !status.contains(
            &a.call::<String>("SELECT hex(outpost_site_id())")
                .unwrap()
                .to_lowercase()
        ),
        "{status}"
    );
}

#[test]
fn an_unreachable_hub_is_reported_with_the_addresses_tried() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let port = hub.port;
    let a = enrolled(dir.path(), "a", &hub);
    hub.stop();
    let e = a.try_sync().unwrap_err().to_string();
    assert!(e.contains("peer unreachable"), "{e}");
    assert!(
        e.contains(&format!("127.0.0.1:{port} (connection refused)")),
        "{e}"
    );
    a.assert_intact();
}

#[test]
fn a_copied_database_with_a_new_key_is_told_to_re_enroll() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let a = enrolled(dir.path(), "a", &hub);
    a.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    a.try_sync().unwrap();
    a.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    let copy = dir.path().join("copy.db");
    std::fs::copy(&a.path, &copy).unwrap();
    let c = DeviceDb::patients(&copy);
    assert!(!dir.path().join("copy.db-outpost.key").exists());
    let e = c.try_sync().unwrap_err().to_string();
    assert!(e.contains("re-enroll"), "{e}");
    // the original still syncs
    a.try_sync().unwrap();
}

#[test]
fn sync_inside_a_transaction_is_refused() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let a = enrolled(dir.path(), "a", &hub);
    a.exec("BEGIN; INSERT INTO patients(id) VALUES ('p1');");
    let e = a.try_sync().unwrap_err().to_string();
    assert!(e.contains("outside a transaction"), "{e}");
    a.exec("COMMIT");
    assert_eq!(n(&a.try_sync().unwrap(), "pushed"), 1);
}

/// Applies one round of edits: each of `ids` gets a new name of `len` bytes and one more visit.
fn edit(d: &DeviceDb, ids: &[String], round: usize, len: usize) {
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
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let proxy = Proxy::start(hub.port);
    let a = DeviceDb::patients(&dir.path().join("a.db"));
    let b = DeviceDb::patients(&dir.path().join("b.db"));
    a.try_enroll(&hub.code_naming(&[format!("127.0.0.1:{}", proxy.port)]))
        .unwrap();
    b.try_enroll(&hub.code()).unwrap();
    // ~4 KB each way: 16 rows of ~240 bytes per device per round
    let ids = |p: &str| (0..16).map(|i| format!("{p}{i:02}")).collect::<Vec<_>>();
    let (a_ids, b_ids) = (ids("a"), ids("b"));
    let round = |r: usize| {
        edit(&b, &b_ids, r, 240);
        b.try_sync().unwrap();
        edit(&a, &a_ids, r, 240);
    };
    round(0);
    let first = a.try_sync().unwrap();
    round(1);
    proxy.budget.store(usize::MAX, Ordering::SeqCst);
    let r = a.try_sync().unwrap();
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
        if a.try_sync().is_err() {
            failures += 1;
        }
        a.assert_intact();
        proxy.budget.store(usize::MAX, Ordering::SeqCst);
        let r = a
            .try_sync()
            .unwrap_or_else(|e| panic!("retry after a cut at {cut}: {e}"));
        assert_eq!(n(&r, "quarantined"), 0);
        // every change of B's is here once: its latest names, and exactly its visit count
        let want_visits = (rounds + 1) as i64;
        let rows = a.patient_rows();
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
    b.try_sync().unwrap();
    assert_eq!(state(&a), state(&b));
    a.assert_intact();
    b.assert_intact();
    (total, failures)
}

#[test]
fn killing_the_client_process_mid_sync_loses_and_doubles_nothing() {
    let seed = outpost_testkit::env::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &[]);
    let a = enrolled(dir.path(), "a", &hub);
    let b = enrolled(dir.path(), "b", &hub);
    let ids = |p: &str| (0..400).map(|i| format!("{p}{i:03}")).collect::<Vec<_>>();
    let (a_ids, b_ids) = (ids("a"), ids("b"));
    let mut kills = 0;
    for round in 0..8 {
        edit(&b, &b_ids, round, 600);
        let t0 = std::time::Instant::now();
        b.try_sync().unwrap();
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
        a.assert_intact();
        let r = a
            .try_sync()
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        assert_eq!(n(&r, "quarantined"), 0);
        let rows = a.patient_rows();
        assert_eq!(rows.len(), 800, "seed {seed}");
        for row in &rows {
            let f: Vec<&str> = row.split('|').collect();
            assert!(f[1].ends_with(&round.to_string()), "seed {seed}: {row}");
            assert_eq!(f[3], (round + 1).to_string(), "seed {seed}: {row}");
        }
    }
    b.try_sync().unwrap();
    assert_eq!(state(&a), state(&b), "seed {seed}");
    println!("{kills} of 8 client processes killed mid-sync");
    assert!(
        kills > 0,
        "seed {seed}: no sync was interrupted; the delays are too long"
    );
}
