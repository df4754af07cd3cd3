//! A new device's first sync of ~40 chunks (applied by `outpost_sync` in groups of 16 per
//! transaction) through the real `outpost-hub`, cut by a proxy at points spread over the pull:
//! each cut leaves the database at a group boundary (whole groups committed with their vector,
//! the kept chunks dropped), and the retry pulls exactly what was not committed: nothing lost,
//! nothing applied twice.

use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::proxy::Proxy;
use outpost_testkit::e2e::scratch::scratch;
use std::path::Path;
use std::sync::atomic::Ordering;

const ROWS: i64 = 20_000;

fn device(path: &Path) -> DeviceDb {
    DeviceDb::open(
        path,
        "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT);
         SELECT outpost_track('notes');",
    )
}

/// What the device covers of `origin` (hex site id), from `outpost_vector()`.
fn covered(d: &DeviceDb, origin: &str) -> u64 {
    d.json("SELECT outpost_vector()")[origin]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_first_sync_cut_mid_pull_keeps_whole_groups_and_the_retry_pulls_the_rest_once() {
    let dir = scratch();
    let hub = Hub::start(&dir.path().join("hub"), &["--no-mdns"]);
    let proxy = Proxy::start(hub.port);
    let via = format!("127.0.0.1:{}", proxy.port);
    // The source: ~20 MB in ~40 chunks of 512 KiB.
    let src = device(&dir.path().join("src.db"));
    src.exec(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO notes SELECT printf('n%06d', i), hex(randomblob(500)) FROM n;
         COMMIT;"
    ));
    src.enroll(&hub.code_naming(&[&via]));
    let pushed = src.sync();
    assert_eq!(pushed["pushed"].as_u64(), Some(ROWS as u64), "{pushed}");
    let origin: String = src
        .call::<String>("SELECT hex(outpost_site_id())")
        .unwrap()
        .to_lowercase();

    // A whole first sync through the proxy: its size.
    let full = device(&dir.path().join("full.db"));
    full.enroll(&hub.code_naming(&[&via]));
    let r = full.sync();
    let total = *proxy.forwarded.lock().unwrap();
    let chunks = r["batches_pulled"].as_u64().unwrap();
    assert!(chunks > 32, "more than two groups of 16: {r}");
    assert_eq!(full.count("notes"), ROWS);

    let mut committed_mid_pull = 0;
    for pct in [5, 30, 45, 60, 75, 90, 99] {
        let d = device(&dir.path().join(format!("d{pct}.db")));
        d.enroll(&hub.code_naming(&[&via]));
        proxy.budget.store(total * pct / 100, Ordering::SeqCst);
        let cut = d.try_sync();
        proxy.budget.store(usize::MAX, Ordering::SeqCst);
        assert!(cut.is_err(), "{pct}%: the cut sync failed: {cut:?}");
        d.assert_intact();
        // Whole groups only: the rows held are exactly what the vector covers.
        let have = covered(&d, &origin);
        assert_eq!(d.count("notes") as u64, have, "{pct}%");
        if have > 0 {
            committed_mid_pull += 1;
        }
        println!("cut at {pct}% of {total} bytes: {have} of {ROWS} rows committed");
        let r = d.try_sync().unwrap_or_else(|e| panic!("{pct}%: {e}"));
        assert_eq!(
            r["pulled"].as_u64(),
            Some(ROWS as u64 - have),
            "{pct}%: the retry pulls what was not committed, once: {r}"
        );
        assert_eq!(d.count("notes"), ROWS, "{pct}%");
        assert_eq!(covered(&d, &origin), ROWS as u64, "{pct}%");
        assert_eq!(r["quarantined"].as_u64(), Some(0));
    }
    assert!(
        committed_mid_pull >= 3,
        "groups commit during the pull, not only at its end"
    );
}
