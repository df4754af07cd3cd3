//! A PostgreSQL tenant restored from a real backup (`pg_dump`, then the database dropped and
//! `pg_restore`d) behind what a hub and its tablet hold (issue 21, DESIGN section 11,
//! "Durability"; docs/cloud.md, "Restored behind its peers"). The cloud finds it at its first
//! round, takes a new origin bound to its key, and the hub pushes back up the cloud's own batches
//! the restore lost; what the back office wrote between the restore and the recovery, and its
//! next write, reach the tablet under the new origin, and no (site, seq) is issued twice.

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::patients;
use outpost_testkit::e2e::process::{code_of, run_ok};
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::pg::{self, psql};
use outpost_testkit::wait::within;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn office_insert(url: &str, id: &str) {
    psql(
        url,
        &format!(
            "INSERT INTO public.patients(id, name, village, visits) \
             VALUES ('{id}', 'office', 'hq', 0)"
        ),
    );
}

/// The database as `pg_dump` saw it at `dump`, in place of what it holds now.
fn restore(db: &pg::TestDatabase, dump: &Path) {
    let cluster = pg::with_database(&db.url, "postgres");
    psql(
        &cluster,
        &format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name),
    );
    psql(&cluster, &format!("CREATE DATABASE \"{}\"", db.name));
    run_ok(
        Command::new("pg_restore")
            .args(["--no-owner", "--exit-on-error", "-d", &db.url])
            .arg(dump),
    );
}

#[test]
fn a_restored_tenant_takes_a_new_origin_and_pulls_back_what_the_restore_lost_from_a_hub() {
    new_origin("pg_new_origin", true);
}

/// The same in a sealed tenant: the hub holds the cloud's batches sealed, and pushes them back
/// sealed.
#[test]
fn a_restored_sealed_tenant_takes_a_new_origin_and_pulls_back_what_the_restore_lost() {
    new_origin("pg_new_origin_sealed", false);
}

/// A code for a tablet at `hub`: the hub's own, or in a sealed tenant the cloud's two-part code
/// naming the hub (a sealed tenant's hub mints none once its uplink told it the tenant is sealed).
fn tablet_code(cloud: &Cloud, hub: &Hub, unsealed: bool) -> String {
    if unsealed {
        return hub.code();
    }
    hub.wait_uplink("the hub's first uplink", Duration::from_secs(30), |u| {
        u["last_success"].as_u64().is_some()
    });
    let site = hub.status()["site"].as_str().unwrap().to_string();
    code_of(
        Command::new(&built().cloud)
            .args(["enroll-code", "--no-qr", "--device", "--data"])
            .arg(&cloud.data)
            .args(["--scopes", "*", "--at-hub", &site[..8]])
            .args(["--address", &hub.addr()]),
    )
}

fn new_origin(name: &str, unsealed: bool) {
    let Some(db) = pg::database(name) else {
        return;
    };
    let tmp = scratch();
    let mut cloud = Cloud::init_postgres(&tmp.path().join("cloud"), &db.url, unsealed);
    cloud.start();
    let hub = Hub::uplinked(&tmp.path().join("hub"), &cloud.code("--hub"), 500, &[]);
    let a = DeviceDb::patients(&tmp.path().join("a.db"));
    a.enroll(&tablet_code(&cloud, &hub, unsealed));
    patients::write(&a.conn, "a", 1);
    a.sync_with("hub");
    within("a's row in PostgreSQL", Duration::from_secs(30), || {
        pg::patient_rows(&db.url).len() == 1
    });
    office_insert(&db.url, "o1");
    within("o1 on a, through the hub", Duration::from_secs(30), || {
        a.sync_with("hub");
        a.has("patients", "o1")
    });
    // The backup: the tenant with the cloud's seq 1.
    let dump = tmp.path().join("tenant.dump");
    run_ok(
        Command::new("pg_dump")
            .args(["-Fc", "-d", &db.url, "-f"])
            .arg(&dump),
    );
    office_insert(&db.url, "o2");
    office_insert(&db.url, "o3");
    within("o3 on a, through the hub", Duration::from_secs(30), || {
        a.sync_with("hub");
        a.has("patients", "o3")
    });
    let before = cloud.status();
    let old = before["site"]
        .as_str()
        .expect("status names the site")
        .to_string();

    // The restore, while the cloud is down: o2 and o3 (the cloud's seqs 2 and 3, which the hub
    // and the tablet hold) are gone from PostgreSQL.
    cloud.kill();
    restore(&db, &dump);
    assert_eq!(
        pg::patient_rows(&db.url)
            .iter()
            .filter(|r| r.starts_with('o'))
            .count(),
        1
    );
    // The back office writes on before the cloud is back: captured under the old origin at
    // seqs 2 and 3, which the hub and the tablet hold for o2 and o3.
    office_insert(&db.url, "o5");
    psql(
        &db.url,
        "UPDATE public.patients SET name = 'renamed' WHERE id = 'o1'",
    );
    cloud.start();

    // The cloud takes a new origin, and the hub pushes back what the restore lost.
    within(
        "o2 and o3 back in PostgreSQL, from the hub",
        Duration::from_secs(60),
        || {
            let rows = pg::patient_rows(&db.url);
            rows.iter().any(|r| r.starts_with("o2|")) && rows.iter().any(|r| r.starts_with("o3|"))
        },
    );
    let origin = psql(
        &db.url,
        "SELECT value FROM outpost.meta WHERE name = 'origin'",
    );
    assert_eq!(origin.len(), 1, "outpost.meta names a new origin");
    assert_ne!(origin[0], old);
    let st = cloud.status();
    assert_eq!(st["tenant"]["origin"], origin[0].as_str(), "{st}");
    assert_eq!(
        st["tenant"]["retired_origins"][0]["origin"],
        old.as_str(),
        "{st}"
    );
    assert!(
        st["mailbox"]["restored_behind"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "the latch is released: {st}"
    );

    // What the back office wrote between the restore and the recovery reaches the tablet too,
    // sent again as transfers under the new origin (not under seqs 2 and 3, which it holds).
    within(
        "o5 and o1's new name on a, through the hub",
        Duration::from_secs(30),
        || {
            a.sync_with("hub");
            a.has("patients", "o5")
                && patients::rows(&a.conn)
                    .iter()
                    .any(|r| r.starts_with("o1|renamed|"))
        },
    );
    // The back office writes on: under the new origin, it reaches the tablet through the hub.
    office_insert(&db.url, "o4");
    within("o4 on a, through the hub", Duration::from_secs(30), || {
        a.sync_with("hub");
        a.has("patients", "o4")
    });
    let log = std::fs::read_to_string(tmp.path().join("cloud.log")).unwrap_or_default();
    assert!(log.contains("writes under a new origin"), "{log}");
    // The tablet and PostgreSQL hold the same rows.
    assert_eq!(patients::rows(&a.conn), pg::patient_rows(&db.url));
    assert!(
        psql(&db.url, "SELECT count(*) FROM outpost.retired_outbox") == ["0"],
        "nothing kept aside"
    );
    cloud.kill();
}
