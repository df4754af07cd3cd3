//! What a device does with more than one peer, and the one strategy no other end-to-end test
//! syncs, against real `outpost-hub` and `outpost-cloud` processes and device databases with the
//! built `liboutpost.so`:
//!
//! - a device enrolled with a hub and with the cloud syncs with the hub while it answers, with the
//!   cloud when it does not, and names the hub under `skipped` (issue 18, item 3);
//! - a table tracked with `"strategy": "row_lww"` converges through a hub and the cloud: the whole
//!   row follows its newest writer on every replica, the cloud's tenant included (item 2).
//!
//! The test builds `outpost-hub`, `outpost-cloud` and `liboutpost.so` in release mode first (the
//! testkit's `built()`).

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::{unix_now, Hub};
use outpost_testkit::e2e::patients;
use outpost_testkit::e2e::scratch::scratch;
use rusqlite::Connection;
use std::time::Duration;

#[test]
fn a_device_syncs_with_its_hub_while_it_answers_and_with_the_cloud_when_it_does_not() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = Hub::start(&dir.path().join("hub"), &["--no-mdns"]);
    let tablet = DeviceDb::patients(&dir.path().join("tablet.db"));
    assert_eq!(tablet.enroll(&cloud.code("--device"))["role"], "cloud");
    assert_eq!(tablet.enroll(&hub.code())["role"], "hub");

    patients::write(&tablet.conn, "t", 2);
    let first = tablet.sync();
    assert_eq!(first["peer"], "hub", "the hub first: {first}");
    assert!(first.get("skipped").is_none(), "{first}");
    assert_eq!(first["pushed"], 3, "{first}");

    // The hub is gone: the same call syncs with the cloud and says what it skipped and why.
    hub.stop();
    patients::write(&tablet.conn, "u", 1);
    let second = tablet.sync();
    assert_eq!(second["peer"], "cloud", "{second}");
    let skipped = second["skipped"].as_array().expect("skipped").clone();
    assert_eq!(skipped.len(), 1, "{second}");
    assert_eq!(skipped[0]["peer"], "hub");
    assert!(!skipped[0]["error"].as_str().unwrap().is_empty());
    // Everything the tablet wrote, the earlier rows included, is now at the cloud.
    assert_eq!(second["pushed"], 5, "{second}");
    // Asked for by name, a peer that does not answer is an error, not a fallback.
    assert!(tablet.try_json("SELECT outpost_sync('hub')").is_err());
}

const CONTACTS: &str =
    "CREATE TABLE IF NOT EXISTS contacts(id TEXT PRIMARY KEY NOT NULL, name TEXT, phone TEXT);
SELECT outpost_track('contacts', '{\"strategy\": \"row_lww\"}');";

fn contact(c: &Connection, id: &str) -> (String, String) {
    c.query_row(
        "SELECT name, phone FROM contacts WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap_or_else(|e| panic!("contact {id}: {e}"))
}

#[test]
fn a_row_lww_table_follows_its_newest_writer_through_a_hub_and_the_cloud() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = Hub::start(
        &dir.path().join("hub"),
        &[
            "--no-mdns",
            "--cloud",
            &cloud.code("--hub"),
            "--uplink-min-ms",
            "100",
            "--uplink-max-ms",
            "1000",
        ],
    );
    let clinic = DeviceDb::open(&dir.path().join("clinic.db"), CONTACTS);
    let field = DeviceDb::open(&dir.path().join("field.db"), CONTACTS);
    assert_eq!(clinic.enroll(&hub.code())["role"], "hub");
    assert_eq!(field.enroll(&cloud.code("--device"))["role"], "cloud");
    let relayed = |since: u64| {
        hub.wait_uplink("the uplink to relay", Duration::from_secs(20), |u| {
            u["last_success"].as_u64().is_some_and(|t| t > since)
                && u["backlog_seqs"].as_u64() == Some(0)
        })
    };

    clinic.exec("INSERT INTO contacts VALUES ('c1', 'Amina', '0700 000 001')");
    clinic.sync();
    let t = unix_now();
    relayed(t);
    field.sync();
    assert_eq!(
        contact(&field.conn, "c1"),
        ("Amina".into(), "0700 000 001".into())
    );

    // Concurrent edits of different columns: under field-level lww both would survive; under
    // row_lww the row follows the newest write, cells it did not change included.
    clinic.exec("UPDATE contacts SET name = 'Amina K.' WHERE id = 'c1'");
    std::thread::sleep(Duration::from_millis(20));
    field.exec("UPDATE contacts SET phone = '0700 000 002' WHERE id = 'c1'");
    clinic.sync();
    field.sync();
    let t = unix_now();
    relayed(t);
    clinic.sync();
    field.sync();
    let newest = ("Amina".to_string(), "0700 000 002".to_string());
    assert_eq!(contact(&clinic.conn, "c1"), newest, "the clinic tablet");
    assert_eq!(contact(&field.conn, "c1"), newest, "the field device");
    let tenant = Connection::open(dir.path().join("cloud").join("tenant.db")).unwrap();
    assert_eq!(contact(&tenant, "c1"), newest, "the cloud's tenant");
}
