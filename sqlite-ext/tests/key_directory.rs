//! Signed batches and the key directory on the device (docs/security.md, "Batch signatures"):
//! real SQLite files syncing with the scripted hub over TCP, which serves control entries and
//! batches signed with whatever key a test chooses.
//!
//! Batches of "another site" are made by a second, never-enrolled replica (`outpost_changes`
//! exports them unsigned) and signed here with a key of the test's choosing.

mod common;
use common::scripted_hub::Hub;
use common::{clinic, Replica};
use outpost_protocol::batch::signature;
use outpost_protocol::control;
use outpost_protocol::enroll_code::CloudAnchor;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::PeerRole;
use outpost_protocol::SiteId;
use outpost_testkit::keys::site_keypair;

fn site_of(r: &Replica) -> SiteId {
    SiteId::from_slice(&hex::decode(r.site_hex()).unwrap()).unwrap()
}

/// `r`'s own changes from `since` as one batch signed with `key` (`None`: unsigned).
fn batch_of(r: &Replica, since: i64, key: Option<&Keypair>) -> Vec<u8> {
    let mut b = r.changes(since, None).expect("changes to export");
    if let Some(key) = key {
        signature::sign(&mut b, key).unwrap();
    }
    b
}

/// A writer (not the device itself) with a patient row, its site and its test key.
fn other_site(name: &str, patient: &str) -> (Replica, SiteId, Keypair) {
    let o = clinic(name);
    o.exec(&format!(
        "INSERT INTO patients(id, name) VALUES ('{patient}', 'from {name}')"
    ));
    let site = site_of(&o);
    (o, site, site_keypair(site))
}

fn patients(r: &Replica) -> i64 {
    r.one("SELECT count(*) FROM patients")
}

#[test]
fn a_batch_signed_by_the_wrong_key_is_refused_and_nothing_applied() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    let (o, site, key) = other_site("o", "p1");
    hub.certify_key(site, key.public());
    // The hub (or anyone on the way) signs o's batch with a key of its own.
    let forger = Keypair::generate().unwrap();
    hub.inject(batch_of(&o, 0, Some(&forger)));
    let e = hub.sync_failing(&a);
    assert!(e.contains("signature does not verify"), "{e}");
    assert!(
        e.contains(&site.to_string()),
        "the error names the origin: {e}"
    );
    assert_eq!(patients(&a), 0, "nothing of the forged batch applied");
    assert_eq!(a.covered(&site.to_string()), 0);
    assert_eq!(a.one::<i64>("SELECT count(*) FROM outpost_quarantine"), 0);
}

#[test]
fn an_unsigned_batch_of_a_known_origin_is_refused_at_sync() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    let (o, site, key) = other_site("o", "p1");
    hub.certify_key(site, key.public());
    hub.inject(batch_of(&o, 0, None));
    let e = hub.sync_failing(&a);
    assert!(e.contains("not signed"), "{e}");
    assert_eq!(patients(&a), 0);
}

#[test]
fn a_batch_of_an_unknown_origin_is_held_then_applied_once_its_key_arrives() {
    let hub = Hub::start();
    hub.set_certify(false);
    let (a, b) = (clinic("a"), clinic("b"));
    hub.enroll(&a);
    hub.enroll(&b);
    b.exec("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')");
    hub.sync(&b);
    b.exec("INSERT INTO patients(id, name) VALUES ('p2', 'Baraka')");
    hub.sync(&b);
    let b_site = b.site_hex();

    // The hub relays b's two batches before any key entry for b: a holds them.
    let out = hub.sync(&a);
    assert_eq!(out["held"], 2, "{out}");
    assert_eq!(out["held_origins"][&b_site], 2, "{out}");
    assert_eq!(out["applied"], 0, "{out}");
    assert_eq!(patients(&a), 0, "a held batch is not applied");
    assert_eq!(a.one::<i64>("SELECT count(*) FROM outpost_quarantine"), 0);
    assert_eq!(a.covered(&b_site), 0, "the vector does not advance for it");
    let status: serde_json::Value =
        serde_json::from_str(&a.one::<String>("SELECT outpost_status()")).unwrap();
    assert_eq!(status["held"], 2, "{status}");
    assert_eq!(status["held_origins"][&b_site], 2, "{status}");

    // The hub's key entry for b arrives with the next session, ahead of the pull.
    hub.set_certify(true);
    let out = hub.sync(&a);
    assert_eq!(
        out["control_accepted"], 2,
        "one entry each for a and b: {out}"
    );
    assert_eq!(out["held"], 0, "{out}");
    assert_eq!(out["batches_pulled"], 2, "{out}");
    assert_eq!(
        a.rows("SELECT id, name FROM patients ORDER BY id"),
        b.rows("SELECT id, name FROM patients ORDER BY id")
    );
    assert_eq!(a.covered(&b_site), 2);
    let status: serde_json::Value =
        serde_json::from_str(&a.one::<String>("SELECT outpost_status()")).unwrap();
    assert_eq!(status["held"], 0, "{status}");
    // The directory was stored: the next session asks for nothing the device holds.
    assert_eq!(
        a.one::<i64>("SELECT count(*) FROM _outpost_control"),
        2,
        "accepted entries are stored"
    );
    let out = hub.sync(&a);
    assert_eq!(out["control_accepted"], 0, "{out}");
}

#[test]
fn a_device_enrolled_with_a_cloud_anchor_verifies_the_clouds_batches_relayed_by_its_hub() {
    let (cloud_db, cloud, cloud_key) = other_site("cloud", "c1");
    let hub = Hub::start_with_cloud(Some(CloudAnchor {
        site: cloud,
        key: cloud_key.public().as_bytes().to_vec(),
    }));
    let a = clinic("a");
    hub.enroll(&a);
    assert_eq!(
        a.one::<i64>("SELECT count(*) FROM _outpost_roots WHERE role = 'cloud'"),
        1,
        "the code's anchor is stored as a cloud root"
    );
    // The cloud's own change, signed with its key, relayed by the hub: verified and applied.
    hub.inject(batch_of(&cloud_db, 0, Some(&cloud_key)));
    // A device the cloud certified (its entry, relayed by the hub) is known too.
    let (d, d_site, d_key) = other_site("d", "d1");
    let item = control::key_item(d_site, d_key.public(), PeerRole::Device, false);
    hub.relay_control(control::encode_entry(cloud, 1, &item, &cloud_key));
    hub.inject(batch_of(&d, 0, Some(&d_key)));
    let out = hub.sync(&a);
    assert_eq!(out["held"], 0, "{out}");
    assert_eq!(out["batches_pulled"], 2, "{out}");
    assert_eq!(
        a.rows("SELECT id FROM patients ORDER BY id"),
        ["Text(\"c1\")", "Text(\"d1\")"]
    );

    // The hub cannot speak for the cloud: an entry of its own rebinding the cloud's site
    // changes nothing (the root wins), and a cloud batch it signs is refused.
    let forger = Keypair::generate().unwrap();
    hub.certify_key(cloud, forger.public());
    cloud_db.exec("INSERT INTO patients(id, name) VALUES ('c2', 'forged')");
    hub.inject(batch_of(&cloud_db, 1, Some(&forger)));
    let e = hub.sync_failing(&a);
    assert!(e.contains("signature does not verify"), "{e}");
    assert_eq!(
        a.maybe::<String>("SELECT name FROM patients WHERE id = 'c2'"),
        None
    );
}

#[test]
fn without_a_cloud_anchor_the_clouds_batches_are_held() {
    let (cloud_db, cloud, cloud_key) = other_site("cloud", "c1");
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    hub.inject(batch_of(&cloud_db, 0, Some(&cloud_key)));
    let out = hub.sync(&a);
    assert_eq!(out["held"], 1, "{out}");
    assert_eq!(out["held_origins"][&cloud.to_string()], 1, "{out}");
    assert_eq!(patients(&a), 0);
}

fn apply_error(r: &Replica, batch: &[u8]) -> String {
    r.apply(batch)
        .expect_err("the batch must be refused")
        .to_string()
}

#[test]
fn a_database_enrolled_with_a_relay_applies_only_batches_signed_by_their_origin() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    let (o, site, key) = other_site("o", "p1");
    let origin = site.to_string();

    // Unknown origin: refused, naming the origin and what to do.
    let e = apply_error(&a, &batch_of(&o, 0, Some(&key)));
    assert!(
        e.contains(&origin) && e.contains("does not know") && e.contains("outpost_sync"),
        "{e}"
    );
    assert_eq!(patients(&a), 0);

    // Its key arrives with a sync; then unsigned and wrongly signed batches are refused...
    hub.certify_key(site, key.public());
    hub.sync(&a);
    let e = apply_error(&a, &batch_of(&o, 0, None));
    assert!(e.contains(&origin) && e.contains("not signed"), "{e}");
    let e = apply_error(&a, &batch_of(&o, 0, Some(&Keypair::generate().unwrap())));
    assert!(
        e.contains(&origin) && e.contains("signature does not verify"),
        "{e}"
    );
    // ... also inside outpost_apply_many, where a good batch beside a bad one is not applied.
    o.exec("INSERT INTO patients(id, name) VALUES ('p2', 'two')");
    let good = batch_of(&o, 0, Some(&key));
    let bad = batch_of(&o, 1, None);
    let e = a
        .conn
        .query_row(
            "SELECT outpost_apply_many(?1, ?2)",
            rusqlite::params![good, bad],
            |_| Ok(()),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("not signed"), "{e}");
    assert_eq!(patients(&a), 0, "nothing applied");

    // The batch its origin signed applies.
    let out = a.apply(&good).unwrap();
    assert!(out["applied"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(patients(&a), 2);
}

#[test]
fn a_standalone_pair_accepts_unsigned_and_signed_batches() {
    let (o, _, key) = other_site("o", "p1");
    let b = clinic("b");
    b.apply(&batch_of(&o, 0, None)).unwrap();
    o.exec("INSERT INTO patients(id, name) VALUES ('p2', 'two')");
    b.apply(&batch_of(&o, 1, Some(&key))).unwrap();
    assert_eq!(patients(&b), 2);
}

#[test]
fn entries_no_root_vouches_for_are_refused_without_failing_the_sync() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    let (o, site, key) = other_site("o", "p1");
    // A writer nobody certified binds o's key: the entry is dropped, the sync goes on.
    let stranger = SiteId([0x5e; 16]);
    let stranger_key = site_keypair(stranger);
    let item = control::key_item(site, key.public(), PeerRole::Device, false);
    hub.relay_control(control::encode_entry(stranger, 1, &item, &stranger_key));
    hub.inject(batch_of(&o, 0, Some(&key)));
    let out = hub.sync(&a);
    assert_eq!(out["control_refused"], 1, "{out}");
    assert_eq!(out["control_accepted"], 1, "the hub's entry for a: {out}");
    assert_eq!(out["held"], 1, "o's key is still unknown: {out}");
    assert_eq!(patients(&a), 0);
}

#[test]
fn an_entry_written_into_the_table_by_hand_counts_for_nothing() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    hub.sync(&a);
    let (o, site, key) = other_site("o", "p1");
    // Claims to be the hub's next entry, but is signed with o's own key.
    let item = control::key_item(site, key.public(), PeerRole::Device, false);
    let forged = control::encode_entry(common::scripted_hub::HUB, 2, &item, &key);
    a.conn
        .execute(
            "INSERT INTO _outpost_control(writer, seq, bytes) VALUES (?1, 2, ?2)",
            rusqlite::params![common::scripted_hub::HUB.0.to_vec(), forged],
        )
        .unwrap();
    let e = apply_error(&a, &batch_of(&o, 0, Some(&key)));
    assert!(e.contains("does not know"), "{e}");
    assert_eq!(patients(&a), 0);
}

/// Not a test: what checking a manual apply costs with a large directory, loaded cold and then
/// reused by the connection. `cargo test --release -p outpost --test key_directory -- --ignored
/// --nocapture` (OUTPOST_ENTRIES, default 1000).
#[test]
#[ignore = "benchmark: prints the manual API's directory cost"]
fn manual_apply_directory_cost() {
    let n: u64 = outpost_testkit::env::number("OUTPOST_ENTRIES", 1000);
    let a = clinic("a");
    let cloud = SiteId([0xc1; 16]);
    let cloud_key = site_keypair(cloud);
    // Enrolled with the cloud (by hand: the directory only reads the rows).
    a.exec("SELECT outpost_status()");
    a.conn
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS _outpost_peers(site BLOB PRIMARY KEY, role TEXT NOT NULL,
               key BLOB NOT NULL, addresses TEXT NOT NULL, enrolled_at INTEGER NOT NULL,
               last_sync_at INTEGER) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS _outpost_control(writer BLOB NOT NULL, seq INTEGER NOT NULL,
               bytes BLOB NOT NULL, PRIMARY KEY(writer, seq)) WITHOUT ROWID;",
        )
        .unwrap();
    a.conn
        .execute(
            "INSERT INTO _outpost_peers VALUES (?1, 'cloud', ?2, '[]', 0, NULL)",
            rusqlite::params![cloud.0.to_vec(), cloud_key.public().as_bytes().to_vec()],
        )
        .unwrap();
    let device_key = *site_keypair(SiteId([0xd0; 16])).public();
    for seq in 1..=n {
        let mut site = [0u8; 16];
        site[..8].copy_from_slice(&seq.to_be_bytes());
        let item = control::key_item(SiteId(site), &device_key, PeerRole::Device, false);
        a.conn
            .execute(
                "INSERT INTO _outpost_control VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    cloud.0.to_vec(),
                    seq as i64,
                    control::encode_entry(cloud, seq, &item, &cloud_key)
                ],
            )
            .unwrap();
    }
    let (o, site, key) = other_site("o", "p1");
    let item = control::key_item(site, key.public(), PeerRole::Device, false);
    a.conn
        .execute(
            "INSERT INTO _outpost_control VALUES (?1, ?2, ?3)",
            rusqlite::params![
                cloud.0.to_vec(),
                (n + 1) as i64,
                control::encode_entry(cloud, n + 1, &item, &cloud_key)
            ],
        )
        .unwrap();
    let batch = batch_of(&o, 0, Some(&key));
    let unsigned = batch_of(&o, 0, None);
    let time = |b: &[u8]| {
        let t = std::time::Instant::now();
        let _ = a.apply(b);
        t.elapsed()
    };
    let cold = time(&unsigned);
    let warm = time(&unsigned);
    let applied = time(&batch);
    assert_eq!(patients(&a), 1);
    println!(
        "directory of {} entries: refused apply cold {:.2} ms, warm {:.3} ms; a signed 1-row apply {:.3} ms",
        n + 1,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        applied.as_secs_f64() * 1e3
    );
}
