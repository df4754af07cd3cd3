//! Two `outpost-cloud run` processes serving one tenant in PostgreSQL (issue 21, "Several
//! processes"): copies of one data directory (the same key), against one database, each listening
//! on its own port; the devices' codes name both addresses, so a device whose process is gone
//! syncs with the other. Over 20 rounds a device writes and pushes, another pulls, and one of the
//! two processes is killed (SIGKILL) at a random moment of the round and started again after it.
//! Nothing may be lost or doubled: at the end every device, and the tenant's tables (read with
//! `psql`), hold every row written, each row's visit counter exactly what was added. An API token
//! made with one copy of the data directory is accepted by both processes.

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::patients;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::pg::{self, psql};
use rand::{Rng, SeedableRng};
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;
const ROWS: usize = 400;

/// Syncs `d` until a sync succeeds (the other process takes over when one is killed): the
/// failed attempts and the time it took.
fn sync_through(d: &DeviceDb) -> (u32, Duration) {
    let start = Instant::now();
    let mut failed = 0;
    loop {
        match d.try_sync() {
            Ok(_) => return (failed, start.elapsed()),
            Err(e) => {
                failed += 1;
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "no sync succeeded in 60 s: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn two_processes_serve_one_tenant_and_killing_either_loses_nothing() {
    let Some(db) = pg::database("pg_two_processes") else {
        return;
    };
    let seed: u64 = std::env::var("OUTPOST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("OUTPOST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = scratch();
    let a = Cloud::init_postgres(&tmp.path().join("a"), &db.url, true);
    let b = a.copy_to(&tmp.path().join("b"));
    let mut clouds = [a, b];
    for c in &mut clouds {
        c.start();
    }
    let addresses = [clouds[0].address(), clouds[1].address()];
    let devices: Vec<DeviceDb> = (0..3)
        .map(|i| {
            let d = DeviceDb::patients(&tmp.path().join(format!("d{i}.db")));
            // Each device tries its own first process first: both serve sessions.
            let order = [addresses[i % 2].clone(), addresses[(i + 1) % 2].clone()];
            d.enroll(&clouds[i % 2].code_naming_all("--device", &order));
            d
        })
        .collect();
    let mut longest = Duration::ZERO;
    let mut retries = 0;
    for round in 0..ROUNDS {
        let writer = rng.gen_range(0..devices.len());
        let reader = (writer + 1 + rng.gen_range(0..devices.len() - 1)) % devices.len();
        let victim = rng.gen_range(0..2);
        let after = Duration::from_millis(rng.gen_range(0..120));
        patients::write(&devices[writer].conn, &format!("r{round}_"), ROWS);
        let pid = clouds[victim].pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
        for d in [writer, reader] {
            let (failed, took) = sync_through(&devices[d]);
            retries += failed;
            if failed > 0 {
                longest = longest.max(took);
            }
        }
        killer.join().unwrap();
        clouds[victim].kill();
        clouds[victim].start();
    }
    // Everyone meets everything: two passes, so the first pass's pushes reach the others.
    for _ in 0..2 {
        for d in &devices {
            sync_through(d);
        }
    }
    let expected = ROUNDS * ROWS;
    let start = Instant::now();
    while psql(&db.url, "SELECT count(*) FROM public.patients")[0] != expected.to_string() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the tenant lacks rows"
        );
        std::thread::sleep(Duration::from_millis(200));
        for d in &devices {
            sync_through(d);
        }
    }
    let tenant = psql(
        &db.url,
        "SELECT id || '|' || coalesce(name, '') || '|' || coalesce(village, '') || '|' || visits \
         FROM public.patients ORDER BY id COLLATE \"C\"",
    );
    assert_eq!(tenant.len(), expected);
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(
            patients::rows(&d.conn),
            tenant,
            "device {i} differs from the tenant"
        );
    }
    // Each round's first row got one visit: counted once, whichever process took the push.
    let visited: Vec<String> = tenant
        .iter()
        .filter(|r| !r.ends_with("|0"))
        .cloned()
        .collect();
    assert_eq!(visited.len(), ROUNDS, "{visited:?}");
    assert!(visited.iter().all(|r| r.ends_with("|1")), "{visited:?}");
    // An API token made with one copy of the data directory is the other process's too: the
    // tokens live in the database (a made-up token is refused by both).
    let token = clouds[0].api_token("shared");
    for c in &clouds {
        assert_ne!(c.rest(&token, "GET", "last_pulled_at=0", None).0, 401);
        assert_eq!(
            c.rest("outpost_api_madeup", "GET", "last_pulled_at=0", None)
                .0,
            401
        );
    }
    println!(
        "{ROUNDS} rounds, one process killed in each: {retries} failed sync attempts, the longest \
         sync that needed the other process took {longest:?}"
    );
}
