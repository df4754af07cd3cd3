//! The PostgreSQL tenant's ingest, printed (not asserted): the twin of `cloud_bench.rs`'s
//! `cloud_ingest_throughput` with the cloud's tenant in PostgreSQL (`outpost-cloud init
//! --postgres`, the test cluster `OUTPOST_TEST_POSTGRES_URL` names). Devices (the built
//! `liboutpost.so`) each hold W1 of docs/workload.md (`testkit::e2e::workload`, 100,000 patients
//! and 200,000 visits with UUID keys, each device from its own seed; `OUTPOST_BENCH_SCALE`
//! scales it), inserted before the clock starts; all of them call `outpost_sync('cloud')` at once
//! against the release-built `outpost-cloud run` on loopback, and the clock runs until the
//! tenant's tables in PostgreSQL hold every row. Plain PostgreSQL inserting the same rows into
//! untracked tables of the same database in the same run (`testkit::e2e::workload_pg`) gives
//! the ratio.
//!
//! The CPU time the cloud's process and its PostgreSQL backends used is printed too (from
//! `/proc`, backends sampled while the run goes, so one that closes early is counted), and the
//! devices' (this process's, from the clock's start): unlike the seconds, it hardly moves with
//! what else the shared machine runs.
//!
//! `cloud_postgres_ingest_of_a_hub_backlog` is the twin of `cloud_bench.rs`'s
//! `cloud_ingest_of_a_hub_backlog`: the devices push to a hub whose uplink is cut, before the
//! clock; the clock runs from the uplink's return until the tenant holds every row. No device
//! works during it: the figures are the cloud's and its backends' alone.
//!
//! Ignored (and left out of `scripts/test`): run with
//! `cargo test --release -p outpost-tests --test cloud_bench_postgres -- --ignored --nocapture`.
//! Results are recorded in docs/performance.md ("The cloud on PostgreSQL: ingest end to end";
//! the backlog in "The cloud's own CPU ingesting into PostgreSQL, and a hub's backlog").

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{n, DeviceDb};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::ingest_log::{applies, Applies};
use outpost_testkit::e2e::ingest_wait::await_ingested;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::e2e::workload::{insert_w1, w1_rows_seeded, W1Rows, W1_SCHEMA};
use outpost_testkit::e2e::workload_pg::plain_insert;
use outpost_testkit::env::number;
use outpost_testkit::pg;
use std::time::{Duration, Instant};

/// A PostgreSQL tenant's cloud, running, and the rows each device will hold.
struct Setup {
    db: pg::TestDatabase,
    dir: tempfile::TempDir,
    cloud: Cloud,
    schema: String,
    /// `OUTPOST_BENCH_SCALE`.
    scale: f64,
    sets: Vec<W1Rows>,
    rows: usize,
}

impl Setup {
    /// A database named `name` on the test cluster (`None` without one), an unsealed cloud
    /// serving it, and W1 for `OUTPOST_BENCH_DEVICES` devices at `OUTPOST_BENCH_SCALE`.
    fn new(name: &str) -> Option<Setup> {
        let db = pg::database(name)?;
        let scale: f64 = number("OUTPOST_BENCH_SCALE", 1.0);
        let devices: usize = number("OUTPOST_BENCH_DEVICES", 2);
        let dir = scratch();
        let mut cloud = Cloud::init_postgres(&dir.path().join("cloud"), &db.url, true);
        cloud.start();
        let schema = format!(
            "{W1_SCHEMA}\nSELECT outpost_track('patients'); SELECT outpost_track('visits');"
        );
        let sets: Vec<_> = (0..devices as u64)
            .map(|d| w1_rows_seeded(scale, 0x5eed_0000 + d))
            .collect();
        let rows = sets.iter().map(|s| s.0.len() + s.1.len()).sum();
        Some(Setup {
            db,
            dir,
            cloud,
            schema,
            scale,
            sets,
            rows,
        })
    }

    /// A connection to watch the tenant with, and a [`Sampler`] of the other backends' CPU.
    fn watching(&self) -> (postgres::Client, Sampler) {
        let mut watch = self.db.superuser();
        let watcher: i32 = watch
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let sampler = Sampler::start(self.db.superuser(), pg::backends, watcher);
        (watch, sampler)
    }

    /// Device `d`'s database, enrolled with `code`, holding its rows.
    fn device(&self, d: usize, code: &str) -> DeviceDb {
        let device = DeviceDb::open(&self.dir.path().join(format!("d{d}.db")), &self.schema);
        device.enroll(code);
        insert_w1(&device.conn, &self.sets[d]);
        device
    }
}

#[test]
#[ignore = "benchmark: prints the PostgreSQL tenant's ingest throughput"]
fn cloud_postgres_ingest_throughput() {
    let Some(setup) = Setup::new("bench_pg_ingest") else {
        return;
    };
    // An enrolment code is used once: one each.
    let dbs: Vec<DeviceDb> = (0..setup.sets.len())
        .map(|d| setup.device(d, &setup.cloud.device_code()))
        .collect();
    let (mut watch, sampler) = setup.watching();
    // The database and the directory stay in `setup` until the end.
    let (cloud, sets, rows, scale) = (setup.cloud, setup.sets, setup.rows, setup.scale);
    let devices = sets.len();
    let devices_cpu0 = cpu_s(std::process::id());
    let t0 = Instant::now();
    let pushers: Vec<_> = dbs
        .into_iter()
        .map(|d| {
            std::thread::spawn(move || {
                // As in `cloud_ingest_throughput`: a device told `Busy` (the staging budget)
                // syncs again, as an app would.
                let mut busy = 0;
                loop {
                    match d.try_json("SELECT outpost_sync('cloud', '{\"timeout_ms\": 600000}')") {
                        Ok(r) => return (r, t0.elapsed(), busy),
                        Err(e) if e.to_string().contains("(Busy)") && busy < 20 => {
                            busy += 1;
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Err(e) => panic!("{:?}: outpost_sync: {e}", d.path),
                    }
                }
            })
        })
        .collect();
    let results: Vec<_> = pushers.into_iter().map(|h| h.join().unwrap()).collect();
    let pushed_at = results.iter().map(|r| r.1).max().unwrap();
    let busy: u32 = results.iter().map(|r| r.2).sum();
    let changes: u64 = results.iter().map(|r| n(&r.0, "pushed")).sum();
    let batches: u64 = results.iter().map(|r| n(&r.0, "batches_pushed")).sum();
    await_ingested(
        &mut watch,
        changes,
        rows as i64,
        Duration::from_secs(60),
        || cloud.log_tail(),
    );
    let total = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let cloud_cpu = cpu_s(cloud.pid());
    // This process: the devices' exports and sessions, and the watching.
    let devices_cpu = cpu_s(std::process::id()) - devices_cpu0;
    let backends_cpu = sampler.stop();
    let log = std::fs::read_to_string(cloud.data.with_extension("log")).unwrap_or_default();
    let a = applies(&log);
    drop(cloud);
    let plain_s = plain_insert(&mut watch, &sets.iter().collect::<Vec<_>>());
    println!(
        "PostgreSQL tenant ingest: {devices} devices x W1 at scale {scale} = {rows} rows, \
         {changes} changes in {batches} batches"
    );
    if busy > 0 {
        println!("  (the devices were told Busy {busy} times and synced again; the counts above are their last syncs')");
    }
    println!(
        "  pushed (all acks) after {:.2} s; every row in the tenant's tables after {total:.2} s",
        pushed_at.as_secs_f64()
    );
    print_applies(&a, rows, ", overlapping the pushes");
    println!(
        "  CPU: the cloud's process {cloud_cpu:.1} s, its PostgreSQL backends {:.1} s \
         ({:.1} us a row together); the devices {devices_cpu:.1} s",
        backends_cpu,
        (cloud_cpu + backends_cpu) * 1e6 / rows as f64
    );
    println!(
        "  load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "  {:.0} changes/s, {:.0} rows/s end to end; plain PostgreSQL inserting the same rows: \
         {plain_s:.2} s ({:.0} rows/s): cloud ingest = {:.1}x plain",
        changes as f64 / total,
        rows as f64 / total,
        rows as f64 / plain_s,
        total / plain_s
    );
}

#[test]
#[ignore = "benchmark: prints the PostgreSQL tenant's ingest of a hub's backlog"]
fn cloud_postgres_ingest_of_a_hub_backlog() {
    use std::sync::atomic::Ordering;
    let Some(setup) = Setup::new("bench_pg_backlog") else {
        return;
    };
    let (hub, proxy) = Hub::behind_cut_uplink(&setup.dir.path().join("hub"), &setup.cloud);
    let mut changes = 0;
    for d in 0..setup.sets.len() {
        let device = setup.device(d, &hub.code());
        let r = device.json("SELECT outpost_sync('hub', '{\"timeout_ms\": 600000}')");
        changes += n(&r, "pushed");
    }
    let (mut watch, sampler) = setup.watching();
    // The database and the directory stay in `setup` until the end.
    let (cloud, sets, rows, scale) = (setup.cloud, setup.sets, setup.rows, setup.scale);
    let devices = sets.len();
    let cloud_cpu0 = cpu_s(cloud.pid());
    let t0 = Instant::now();
    proxy.budget.store(usize::MAX, Ordering::SeqCst);
    await_ingested(
        &mut watch,
        changes,
        rows as i64,
        Duration::from_secs(60),
        || cloud.log_tail(),
    );
    let total = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let cloud_cpu = cpu_s(cloud.pid()) - cloud_cpu0;
    let backends_cpu = sampler.stop();
    let log = std::fs::read_to_string(cloud.data.with_extension("log")).unwrap_or_default();
    let a = applies(&log);
    drop(hub);
    drop(cloud);
    let plain_s = plain_insert(&mut watch, &sets.iter().collect::<Vec<_>>());
    println!(
        "PostgreSQL tenant, a hub's backlog: {devices} devices x W1 at scale {scale} = {rows} \
         rows, {changes} changes, pushed to the hub before the clock"
    );
    print_applies(&a, rows, "");
    println!(
        "  CPU: the cloud's process {cloud_cpu:.1} s, its PostgreSQL backends {backends_cpu:.1} \
         s ({:.1} us a row together); load average at the end: {}",
        (cloud_cpu + backends_cpu) * 1e6 / rows as f64,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "  {:.0} changes/s end to end (uplink let through until every row is in the tenant: \
         {total:.2} s); plain PostgreSQL inserting the same rows: {plain_s:.2} s ({:.0} rows/s): \
         cloud ingest = {:.1}x plain",
        changes as f64 / total,
        rows as f64 / plain_s,
        total / plain_s
    );
}

/// What the cloud's log says of its applies (`while` follows "while applying").
fn print_applies(a: &Applies, rows: usize, while_: &str) {
    if a.window_s > 0.0 {
        println!(
            "  the cloud's log: {} batches applied, {:.2} s from the first to the last ({:.0} \
             rows/s while applying{while_}); {} groups (of {} batches), {} alone",
            a.batches,
            a.window_s,
            rows as f64 / a.window_s,
            a.groups.len(),
            a.groups.iter().sum::<usize>(),
            a.alone
        );
    }
}

/// CPU seconds (user and system) process `pid` used so far, from `/proc/PID/stat` (0 when it is
/// gone). Its clock ticks are Linux's `USER_HZ`, 100 a second.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's name (in parentheses, which may hold spaces): utime and stime are the
    // 12th and 13th fields.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    ticks(11).unwrap_or(0.0) / 100.0 + ticks(12).unwrap_or(0.0) / 100.0
}

/// A thread reading the CPU time of the tenant database's backends every 200 ms while the run
/// goes (so one that closes early is counted), each as last seen; not the watcher's, nor its own.
struct Sampler {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<f64>,
}

impl Sampler {
    /// Starts it on `client`, listing the backends with `pids` (`pg::backends`).
    fn start<C: Send + 'static>(
        mut client: C,
        pids: fn(&mut C) -> Vec<i32>,
        watcher: i32,
    ) -> Sampler {
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut seen = std::collections::HashMap::new();
            loop {
                for pid in pids(&mut client) {
                    let cpu = cpu_s(pid as u32);
                    if pid != watcher && cpu > 0.0 {
                        seen.insert(pid, cpu);
                    }
                }
                if stopped.recv_timeout(Duration::from_millis(200)).is_ok() {
                    return seen.values().sum();
                }
            }
        });
        Sampler { stop, thread }
    }

    /// The backends' CPU seconds, read once more.
    fn stop(self) -> f64 {
        let _ = self.stop.send(());
        self.thread.join().unwrap()
    }
}
