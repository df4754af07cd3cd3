//! Table directions end to end (issue 16 item 5, finding 6), with real `outpost-cloud` and
//! `outpost-hub` processes and device databases on the built `liboutpost.so`: the operator
//! declares `forms` down and `submissions` up on the cloud; tablets enrolled at a clinic hub
//! cannot write `forms` but receive the operator's; a tablet's submissions reach the cloud and
//! no other tablet; a tablet tracking `forms` as `both` is refused at sync and pushes nothing.

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, DeviceDb};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::process::run_ok;
use outpost_testkit::e2e::scratch::scratch;
use std::process::Command;
use std::time::{Duration, Instant};

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
CREATE TABLE IF NOT EXISTS forms(id TEXT PRIMARY KEY NOT NULL, title TEXT);
CREATE TABLE IF NOT EXISTS submissions(id TEXT PRIMARY KEY NOT NULL, body TEXT);
SELECT outpost_track('patients');
SELECT outpost_track('submissions', '{\"direction\": \"up\"}');";

fn schema(forms: &str) -> String {
    format!("{TABLES}\nSELECT outpost_track('forms', '{{\"direction\": \"{forms}\"}}');")
}

/// Polls `f` every 200 ms up to 30 s: its value, or a panic naming `what`.
fn within<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn reference_data_flows_down_submissions_flow_up_and_a_tablet_cannot_rewrite_either() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    for (table, direction) in [("forms", "down"), ("submissions", "up")] {
        run_ok(
            Command::new(&built().cloud)
                .args(["table", "--data"])
                .arg(&cloud.data)
                .args([table, "--direction", direction]),
        );
    }
    // The operator publishes a form on the cloud.
    {
        let op = device_db::open(&cloud.data.join("tenant.db"));
        op.busy_timeout(Duration::from_secs(10)).unwrap();
        op.execute_batch(
            "CREATE TABLE forms(id TEXT PRIMARY KEY NOT NULL, title TEXT);
             SELECT outpost_track('forms');
             INSERT INTO forms VALUES ('intake', 'Intake form');",
        )
        .unwrap();
    }
    let hub = Hub::uplinked(&dir.path().join("hub"), &cloud.code("--hub"), 500, &[]);
    let a = DeviceDb::open(&dir.path().join("a.db"), &schema("down"));
    let b = DeviceDb::open(&dir.path().join("b.db"), &schema("down"));
    a.enroll(&hub.code());
    b.enroll(&hub.code());

    // A tablet cannot write the reference data.
    let refused = a
        .conn
        .execute("INSERT INTO forms VALUES ('evil', 'Rewritten')", [])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("\"forms\" is down"), "{refused}");
    a.exec("INSERT INTO patients VALUES ('p1', 'Amina')");
    a.exec("INSERT INTO submissions VALUES ('s1', 'visit survey')");
    a.sync();

    // The hub relays A's batches to the cloud: the submission arrives there.
    within("A's rows at the cloud", || {
        (cloud.count("patients") == 1 && cloud.count("submissions") == 1).then_some(())
    });
    // B gets the patient and the operator's form (pulled by the hub from the cloud), never the
    // submission: the hub serves it an `up` batch's clear header only.
    within("the patient and the form on B", || {
        b.sync();
        (b.has("patients", "p1") && b.has("forms", "intake")).then_some(())
    });
    assert_eq!(
        b.count("submissions"),
        0,
        "an up table reached another tablet"
    );
    b.assert_intact();

    // A tablet whose app tracks `forms` both ways is refused before it pushes anything.
    let c = DeviceDb::open(&dir.path().join("c.db"), &schema("both"));
    c.enroll(&hub.code());
    c.exec("INSERT INTO forms VALUES ('intake', 'Rewritten')");
    let err = c
        .try_sync()
        .expect_err("a mismatching tablet syncs")
        .to_string();
    assert!(
        err.contains("\"forms\" is \"down\" in this tenant") && err.contains("track it with"),
        "{err}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let title: String = cloud
        .tenant()
        .query_row("SELECT title FROM forms WHERE id = 'intake'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(title, "Intake form");
    assert!(!hub.log().contains("Rewritten"));
}
