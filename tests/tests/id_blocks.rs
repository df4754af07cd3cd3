//! Id blocks end to end (issue 7): real `outpost-cloud` and `outpost-hub` processes (the hub with
//! an uplink, `--cloud CODE`, and a small `--id-block` so it refills often), real TCP on
//! loopback, device databases with the built `liboutpost.so`.
//!
//! - Devices reserving concurrently, two through the hub (which sub-allocates from ranges the
//!   cloud grants it) and one straight at the cloud, over many rounds: every number handed out by
//!   `outpost_next_id` anywhere is handed out once, each device gets exactly what it reserved,
//!   and running out is a clear error.
//! - A hub cut from the cloud keeps granting from its pool, records what it cannot cover, and
//!   the device gets it once the cloud is back; a rolled back `outpost_next_id` gives its number
//!   back; bad arguments are named.
//!
//! The test builds `outpost-hub`, `outpost-cloud` and `liboutpost.so` in release mode first.

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, DeviceDb};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::scratch::scratch;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// `outpost-hub run`: with `Some(code)`, an uplink to that cloud (delegated ids, refilled
/// `id_block` at a time); without, the hub is the root.
fn start_hub(data: &Path, cloud_code: Option<&str>, id_block: u64) -> Hub {
    let id_block = id_block.to_string();
    let mut args = vec!["--no-mdns"];
    if let Some(code) = cloud_code {
        args.extend(["--cloud", code]);
        args.extend(["--uplink-min-ms", "100", "--uplink-max-ms", "1000"]);
        args.extend(["--id-block", &id_block]);
    }
    Hub::start(data, &args)
}

/// Devices `a` and `c` enrolled with `hub`, `b` with `cloud`.
fn three_devices(dir: &Path, hub: &Hub, cloud: &Cloud) -> (Device, Device, Device) {
    let a = Device::open(dir, "a");
    let c = Device::open(dir, "c");
    let b = Device::open(dir, "b");
    a.enroll(&hub.code());
    c.enroll(&hub.code());
    b.enroll(&cloud.code("--device"));
    (a, b, c)
}

/// A device database with the extension loaded.
struct Device {
    name: &'static str,
    db: DeviceDb,
}

impl Device {
    fn open(dir: &Path, name: &'static str) -> Device {
        let db = DeviceDb::open(
            &dir.join(format!("{name}.db")),
            "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, registration INTEGER);
             SELECT outpost_track('patients');",
        );
        Device { name, db }
    }

    fn call<T: rusqlite::types::FromSql>(&self, sql: &str) -> Result<T, String> {
        self.db.call(sql).map_err(|e| e.to_string())
    }

    fn json(&self, sql: &str) -> serde_json::Value {
        let text: String = self
            .call(sql)
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
        serde_json::from_str(&text).unwrap()
    }

    fn enroll(&self, code: &str) {
        self.json(&format!("SELECT outpost_enroll('{code}')"));
    }

    fn ids(&self) -> (u64, u64) {
        let s = self.json("SELECT outpost_status()");
        let p = &s["ids"]["patients"];
        (
            p["remaining"].as_u64().unwrap_or(0),
            p["pending"].as_u64().unwrap_or(0),
        )
    }

    /// Syncs until `want` numbers are on hand; returns what the syncs reported as granted.
    fn sync_until(&self, want: u64, bound: Duration) -> u64 {
        let start = Instant::now();
        let mut granted = 0;
        loop {
            let r = self.json("SELECT outpost_sync()");
            granted += r["ids_granted"]["patients"].as_u64().unwrap_or(0);
            if self.ids().0 >= want {
                return granted;
            }
            assert!(
                start.elapsed() < bound,
                "{}: {want} ids not granted within {bound:?}: {:?}",
                self.name,
                self.ids()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Takes every number on hand, each in a row of its own; the call after the last one fails.
    fn use_all(&self) -> Vec<u64> {
        let mut got = Vec::new();
        loop {
            match self.call::<i64>("SELECT outpost_next_id('patients')") {
                Ok(n) => {
                    self.db
                        .conn
                        .execute(
                            "INSERT INTO patients(id, registration) VALUES (?1, ?2)",
                            rusqlite::params![format!("{}-{n}", self.name), n],
                        )
                        .unwrap();
                    got.push(n as u64);
                }
                Err(e) => {
                    assert!(
                        e.contains("outpost_next_id: no ids left for sequence 'patients'")
                            && e.contains("call outpost_reserve_ids('patients', n) and sync"),
                        "{e}"
                    );
                    return got;
                }
            }
        }
    }
}

#[test]
fn devices_reserving_concurrently_through_the_hub_and_the_cloud_never_get_a_number_twice() {
    const ROUNDS: usize = 30;
    let seed = outpost_testkit::env::seed();
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = start_hub(&dir.path().join("hub"), Some(&cloud.code("--hub")), 200);
    let (a, b, c) = three_devices(dir.path(), &hub, &cloud);
    let start = Instant::now();
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = [a, b, c]
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64 + 1));
                let (mut asked, mut got, mut reported) = (0u64, Vec::new(), 0u64);
                for _ in 0..ROUNDS {
                    barrier.wait();
                    let n: u64 = rng.gen_range(1..=150);
                    let pending: i64 = d
                        .call(&format!("SELECT outpost_reserve_ids('patients', {n})"))
                        .unwrap();
                    assert_eq!(pending as u64, n);
                    asked += n;
                    reported += d.sync_until(n, Duration::from_secs(20));
                    let taken = d.use_all();
                    assert_eq!(taken.len() as u64, n, "{}: exactly what it asked", d.name);
                    got.extend(taken);
                }
                assert_eq!(d.ids(), (0, 0));
                (d.name, asked, reported, got)
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in threads {
        let (name, asked, reported, got) = t.join().unwrap_or_else(|_| {
            panic!(
                "a device thread failed (seed {seed})\nhub log:\n{}",
                hub.log()
            )
        });
        assert_eq!(got.len() as u64, asked, "{name}");
        assert_eq!(
            reported, asked,
            "{name}: outpost_sync reported each grant once"
        );
        for n in got {
            assert!(seen.insert(n), "number {n} handed out twice (seed {seed})");
        }
        total += asked;
    }
    eprintln!(
        "{ROUNDS} rounds, {total} numbers, no number twice, in {:?}",
        start.elapsed()
    );
    // The hub sub-allocated from the cloud (delegated), and the cloud is the root.
    let s = hub.status();
    assert_eq!(s["id_mode"], "delegated", "{s}");
    assert!(
        hub.log().contains("the cloud granted"),
        "the hub refilled from the cloud"
    );
    let next = cloud.status()["ids"]["patients"]["next"].as_u64().unwrap();
    assert!(
        next > *seen.iter().max().unwrap(),
        "the cloud granted every number"
    );
}

#[test]
fn a_hub_cut_from_the_cloud_keeps_granting_from_its_pool() {
    let dir = scratch();
    let mut cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = start_hub(&dir.path().join("hub"), Some(&cloud.code("--hub")), 1000);
    let (a, b, c) = three_devices(dir.path(), &hub, &cloud);
    // Bad arguments are named; nothing is reserved.
    for (sql, says) in [
        (
            "SELECT outpost_reserve_ids('has space', 5)",
            "outpost_reserve_ids: sequence: sequence name has a character",
        ),
        (
            "SELECT outpost_reserve_ids('patients', 0)",
            "outpost_reserve_ids: n must be an integer from 1 to 1000000",
        ),
        (
            "SELECT outpost_reserve_ids(7, 5)",
            "outpost_reserve_ids: sequence must be text",
        ),
        (
            "SELECT outpost_next_id('patients')",
            "no ids left for sequence 'patients' (none requested)",
        ),
    ] {
        let e = a.call::<i64>(sql).unwrap_err();
        assert!(e.contains(says), "{sql}: {e}");
    }
    // The hub's first pool: a device's reservation brings it in.
    a.call::<i64>("SELECT outpost_reserve_ids('patients', 10)")
        .unwrap();
    a.sync_until(10, Duration::from_secs(20));
    let mut all: Vec<u64> = a.use_all();
    cloud.kill();

    // Offline clinic: the pool (990 left) covers 300 + 500 at once.
    a.call::<i64>("SELECT outpost_reserve_ids('patients', 300)")
        .unwrap();
    c.call::<i64>("SELECT outpost_reserve_ids('patients', 500)")
        .unwrap();
    assert_eq!(
        a.json("SELECT outpost_sync()")["ids_granted"]["patients"],
        300
    );
    assert_eq!(
        c.json("SELECT outpost_sync()")["ids_granted"]["patients"],
        500
    );
    // Inside the app's transaction: a rollback gives the number back.
    a.db.exec("BEGIN");
    let first = a.call::<i64>("SELECT outpost_next_id('patients')").unwrap();
    a.db.exec("ROLLBACK");
    assert_eq!(
        a.call::<i64>("SELECT outpost_next_id('patients')").unwrap(),
        first
    );
    all.push(first as u64);
    all.extend(a.use_all());
    all.extend(c.use_all());
    // More than the pool holds: nothing now, the demand is recorded, the error says so.
    a.call::<i64>("SELECT outpost_reserve_ids('patients', 500)")
        .unwrap();
    let r = a.json("SELECT outpost_sync()");
    assert_eq!(r["ids_granted"], serde_json::json!({}), "{r}");
    assert_eq!(a.ids(), (0, 500));
    let e = a
        .call::<i64>("SELECT outpost_next_id('patients')")
        .unwrap_err();
    assert!(
        e.contains("(500 requested, waiting for the next sync)"),
        "{e}"
    );
    let s = hub.status();
    let ids = &s["ids"][0];
    assert_eq!(
        (
            ids["sequence"].as_str(),
            ids["pool"].as_u64(),
            ids["demand"].as_u64()
        ),
        (Some("patients"), Some(190), Some(500)),
        "{s}"
    );
    let text = Command::new(&built().hub)
        .args(["status", "--data"])
        .arg(&hub.data)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("ids         delegated") && text.contains("  patients  pool 190  demand 500"),
        "{text}"
    );

    // The cloud is back: a device at the cloud reserves meanwhile, the hub refills.
    cloud.start();
    b.call::<i64>("SELECT outpost_reserve_ids('patients', 100)")
        .unwrap();
    b.sync_until(100, Duration::from_secs(20));
    a.sync_until(500, Duration::from_secs(20));
    all.extend(a.use_all());
    all.extend(b.use_all());
    let n = all.len();
    assert_eq!(n, 10 + 300 + 500 + 500 + 100);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a number handed out twice");
}

#[test]
fn a_live_device_that_asked_for_ids_is_still_notified_of_news() {
    let dir = scratch();
    let hub = start_hub(&dir.path().join("hub"), None, 0);
    let a = Device::open(dir.path(), "a");
    let b = Device::open(dir.path(), "b");
    a.enroll(&hub.code());
    b.enroll(&hub.code());
    // A stays live for 8 s on a thread of its own.
    let live = std::thread::spawn(move || {
        let r = a.json("SELECT outpost_sync('hub', '{\"live_seconds\": 8}')");
        (a, r)
    });
    // Another connection of the app reserves ids meanwhile; A asks for them after its next pull.
    let watcher = device_db::open(&dir.path().join("a.db"));
    std::thread::sleep(Duration::from_millis(500));
    watcher
        .query_row("SELECT outpost_reserve_ids('patients', 5)", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
    let arrives = |id: &str| {
        let since = Instant::now();
        loop {
            let n: i64 = watcher
                .query_row("SELECT count(*) FROM patients WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap();
            if n == 1 {
                return;
            }
            assert!(
                since.elapsed() < Duration::from_secs(3),
                "live A did not get {id} within 3 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // B's first write: A is notified, pulls, then asks for its ids.
    b.db.conn
        .execute(
            "INSERT INTO patients(id, registration) VALUES ('b1', 1)",
            [],
        )
        .unwrap();
    b.json("SELECT outpost_sync()");
    arrives("b1");
    let deadline = Instant::now() + Duration::from_secs(3);
    while watcher
        .query_row("SELECT outpost_status()", [], |r| r.get::<_, String>(0))
        .map(|s| !s.contains("\"remaining\":5"))
        .unwrap()
    {
        assert!(Instant::now() < deadline, "no grant in the live session");
        std::thread::sleep(Duration::from_millis(20));
    }
    // B's second write: the hub must still notify A after its id request.
    b.db.conn
        .execute(
            "INSERT INTO patients(id, registration) VALUES ('b2', 2)",
            [],
        )
        .unwrap();
    b.json("SELECT outpost_sync()");
    arrives("b2");
    let (a, _) = live.join().unwrap();
    assert_eq!(a.use_all(), vec![1, 2, 3, 4, 5], "a root hub counts from 1");
}
