//! A cloud whose tenant is in PostgreSQL (issue 21), end to end: `outpost-cloud init --postgres`
//! against the test cluster, `run`, and device databases on the built `liboutpost.so`. What the
//! devices push lands in real PostgreSQL tables (read back with `psql`, as a back office would);
//! what the back office writes there with `psql` reaches the devices at their next sync, and a
//! device in live mode within a second or two; the replicas end identical. The mailbox and the
//! allowlist live in the same database. Sealed and unsealed tenants both.

use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, DeviceDb};
use outpost_testkit::e2e::patients;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::pg::{self, psql};
use outpost_testkit::wait::within;
use std::time::{Duration, Instant};

fn story(unsealed: bool) {
    let Some(db) = pg::database(if unsealed {
        "pg_story_unsealed"
    } else {
        "pg_story_sealed"
    }) else {
        return;
    };
    let tmp = scratch();
    let mut cloud = Cloud::init_postgres(&tmp.path().join("cloud"), &db.url, unsealed);
    cloud.start();
    let peer = "cloud";

    // Two tablets enrol; one writes patients and a visit, and syncs.
    let a = DeviceDb::patients(&tmp.path().join("a.db"));
    a.enroll(&cloud.device_code());
    let b = DeviceDb::patients(&tmp.path().join("b.db"));
    b.enroll(&cloud.device_code());
    patients::write(&a.conn, "a", 3);
    a.sync_with(peer);
    within("a's rows in PostgreSQL", Duration::from_secs(20), || {
        pg::patient_rows(&db.url).len() == 3
    });
    assert_eq!(pg::patient_rows(&db.url), patients::rows(&a.conn));
    // Real column types, made from the batch header.
    let types = psql(
        &db.url,
        "SELECT column_name || ' ' || data_type FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'patients' ORDER BY ordinal_position",
    );
    assert_eq!(
        types,
        ["id text", "name text", "village text", "visits bigint"],
        "{types:?}"
    );

    // The back office writes with psql: an update, a counter increment, a new row, a delete.
    psql(
        &db.url,
        "BEGIN; \
         UPDATE public.patients SET village = 'office' WHERE id = 'a1'; \
         UPDATE public.patients SET visits = visits + 2 WHERE id = 'a0'; \
         INSERT INTO public.patients(id, name, village, visits) VALUES ('bo1', 'Office', 'hq', 0); \
         DELETE FROM public.patients WHERE id = 'a2'; \
         COMMIT;",
    );
    // A device writes too, concurrently with the office: another visit to a0.
    a.exec("UPDATE patients SET visits = visits + 1 WHERE id = 'a0'");
    // The office's commit is exported at once (LISTEN) or at the next round (500 ms).
    within("the office's writes on a", Duration::from_secs(10), || {
        a.sync_with(peer);
        a.has("patients", "bo1")
    });
    b.sync_with(peer);
    let mut seen = Vec::new();
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within(
            "the tenant to hold a's second visit",
            Duration::from_secs(20),
            || {
                seen = pg::patient_rows(&db.url);
                seen.first().map(String::as_str) == Some("a0|na0|va|4")
            },
        )
    }));
    if waited.is_err() {
        let log = std::fs::read_to_string(tmp.path().join("cloud.log")).unwrap_or_default();
        panic!(
            "the tenant holds {seen:?}; a holds {:?}; b {:?}; the cloud's log:\n{log}",
            patients::rows(&a.conn),
            patients::rows(&b.conn)
        );
    }
    let expected = [
        "a0|na0|va|4", // 1 from a, 2 from the office, 1 from a again: summed once each
        "a1|na1|office|0",
        "bo1|Office|hq|0",
    ];
    assert_eq!(pg::patient_rows(&db.url), expected);
    assert_eq!(patients::rows(&a.conn), expected, "a");
    assert_eq!(patients::rows(&b.conn), expected, "b");

    // Live: a device waiting in live mode gets the office's write within seconds.
    let live = device_db::live(&tmp.path().join("b.db"), patients::SCHEMA, peer, 8);
    std::thread::sleep(Duration::from_millis(1500));
    psql(
        &db.url,
        "INSERT INTO public.patients(id, name, village, visits) VALUES ('live1', 'Live', 'hq', 0)",
    );
    let took = within(
        "the office's row on the live device",
        Duration::from_secs(6),
        || b.has("patients", "live1"),
    );
    println!("a back-office insert reached a live device in {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    live.join().unwrap().expect("the live sync");

    // `status` reads the tenant in PostgreSQL: its store, its tables and rows.
    let st = cloud.status();
    assert_eq!(st["store"]["kind"], "postgres", "{st}");
    assert_eq!(st["store"]["database"], db.name.as_str(), "{st}");
    let tables = st["tenant"]["tables"].as_array().expect("tables");
    assert!(
        tables
            .iter()
            .any(|t| t["name"] == "patients" && t["rows"] == 4),
        "{st}"
    );
    assert_eq!(st["tenant"]["quarantined"], 0, "{st}");

    // The mailbox and the allowlist are in the database too, shared by every process serving
    // the tenant: the batches the devices pushed, the cloud's own, the enrolled tablets.
    for f in ["mailbox.db", "allowlist.db"] {
        assert!(
            !tmp.path().join("cloud").join(f).exists(),
            "{f} in the data directory"
        );
    }
    let held = psql(&db.url, "SELECT count(*) FROM outpost_mailbox.batches");
    assert!(held[0].parse::<u64>().unwrap() >= 4, "{held:?}");
    let enrolled = psql(
        &db.url,
        "SELECT count(*) FROM outpost_allowlist.devices WHERE role = 'device'",
    );
    assert_eq!(enrolled, ["2"]);
    cloud.kill();
}

#[test]
fn devices_and_the_back_office_meet_in_an_unsealed_postgres_tenant() {
    story(true);
}

#[test]
fn devices_and_the_back_office_meet_in_a_sealed_postgres_tenant() {
    story(false);
}

/// A database restored behind what peers hold (docs/cloud.md, "Restored behind its peers"): the
/// back office's writes reached a device as the cloud's seqs 1..=3; the database then goes back
/// to seq 1 (as a backup restore would leave it). At its first round the cloud finds the tenant
/// behind what its data directory recorded exporting: it latches the stream, exports nothing
/// more of it (a new back-office write would take seq 2 again, which the device holds for another
/// change), and takes a new origin, under which the next back-office write reaches the device.
/// (A peer's hello claim latching nothing is the mailbox's own test.)
#[test]
fn a_database_restored_behind_its_peers_is_detected_and_its_seqs_not_issued_twice() {
    restored_behind("pg_restored_behind", false);
}

/// As above, but the back office writes twice while no cloud process runs, so the restored
/// tenant has issued seqs 2 and 3 again (for other changes) before the cloud's first round: the
/// count matches what the data directory recorded exporting, the clock of seq 3 does not.
#[test]
fn a_database_restored_and_written_past_its_peers_is_detected_by_the_clock_of_its_top_seq() {
    restored_behind("pg_restored_written_past", true);
}

fn restored_behind(name: &str, written_past: bool) {
    let Some(db) = pg::database(name) else {
        return;
    };
    let tmp = scratch();
    let mut cloud = Cloud::init_postgres(&tmp.path().join("cloud"), &db.url, true);
    cloud.start();
    let a = DeviceDb::patients(&tmp.path().join("a.db"));
    a.enroll(&cloud.device_code());
    patients::write(&a.conn, "a", 1);
    a.sync_with("cloud");
    within("a's row in PostgreSQL", Duration::from_secs(60), || {
        pg::patient_rows(&db.url).len() == 1
    });
    for i in 1..=3 {
        psql(
            &db.url,
            &format!(
                "INSERT INTO public.patients(id, name, village, visits) \
                 VALUES ('o{i}', 'office', 'hq', 0)"
            ),
        );
    }
    within("the office's rows on a", Duration::from_secs(60), || {
        a.sync_with("cloud");
        a.has("patients", "o3")
    });
    // Once more: the session that brought o3 may have told the cloud a's vector as it was
    // before (covering seq 2), and the latch below is of what a says it holds (seq 3).
    a.sync_with("cloud");
    // The "restore": the cloud's own stream back to seq 1, in the outbox and the mailbox alike.
    cloud.kill();
    let own = psql(
        &db.url,
        "SELECT value FROM outpost.meta WHERE name = 'site_id'",
    )[0]
    .clone();
    psql(
        &db.url,
        &format!(
            // As the cloud's own session: a restore writes nothing the capture would record.
            "BEGIN; SET LOCAL outpost.applying = 'on'; \
             DELETE FROM outpost.outbox WHERE seq > 1; \
             UPDATE outpost.streams SET seq = 1, folded = least(folded, 1); \
             DELETE FROM outpost_mailbox.batches WHERE origin = '\\x{own}'::bytea AND lo > 1; \
             UPDATE outpost_mailbox.coverage SET covered = 1 WHERE origin = '\\x{own}'::bytea; \
             DELETE FROM public.patients WHERE id IN ('o2', 'o3'); \
             COMMIT;"
        ),
    );
    if written_past {
        for id in ["w2", "w3"] {
            psql(
                &db.url,
                &format!(
                    "INSERT INTO public.patients(id, name, village, visits) \
                     VALUES ('{id}', 'office', 'hq', 0)"
                ),
            );
        }
        let top = psql(
            &db.url,
            "SELECT max(seq) FROM outpost.outbox WHERE stream = ''",
        );
        assert_eq!(top, ["3"], "the back office reissued seqs 2 and 3");
    }
    // At its first round the cloud finds the tenant behind what it exported before (its data
    // directory keeps that), before any device said so.
    cloud.start();
    let debug = || {
        format!(
            "claims {:?} behind {:?}\n{}",
            psql(
                &db.url,
                "SELECT stream, peer_has FROM outpost_mailbox.own_claims"
            ),
            psql(
                &db.url,
                "SELECT stream, peer_has, held FROM outpost_mailbox.behind"
            ),
            std::fs::read_to_string(tmp.path().join("cloud.log")).unwrap_or_default()
        )
    };
    // It latches the stream and, the tenant being in PostgreSQL, takes a new origin in the same
    // round (tests/tests/postgres_restore.rs follows a recovery through a hub).
    let st = within_value(Duration::from_secs(60), debug, || {
        let st = cloud.status();
        (st["tenant"]["origin"] != st["site"]).then_some(st)
    });
    let retired = &st["tenant"]["retired_origins"][0];
    assert_eq!(retired["origin"], own.as_str(), "{st}");
    assert_eq!(retired["held"], serde_json::json!({"": 1}), "{st}");
    assert!(
        st["mailbox"]["restored_behind"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{st}"
    );
    let log = std::fs::read_to_string(tmp.path().join("cloud.log")).unwrap_or_default();
    let latched = format!(
        "covers seqs up to 3 of this box's own stream \"\", whose writer issued up to {}",
        if written_past { 2 } else { 1 }
    );
    assert!(log.contains(&latched), "{latched}\n{log}");
    if written_past {
        assert!(log.contains("written past that seq again"), "{log}");
    }
    // What the back office wrote between the restore and the recovery took seqs the device holds
    // for other changes: never exported under them, but sent again as transfers under the new
    // origin (each row whole, credited to the old origin that wrote it).
    let aside = psql(&db.url, "SELECT count(*) FROM outpost.retired_outbox");
    assert_eq!(aside, ["0"]);
    assert_eq!(cloud.status()["tenant"]["kept_aside"], 0);
    let sent = format!(
        "the {} rows they and pending transfers wrote are sent again as transfers",
        if written_past { 2 } else { 0 }
    );
    assert!(log.contains(&sent), "{sent}\n{log}");
    // A back-office write after the recovery goes out under the new origin.
    psql(
        &db.url,
        "INSERT INTO public.patients(id, name, village, visits) VALUES ('late', 'x', 'hq', 0)",
    );
    within("late on the device", Duration::from_secs(60), || {
        a.sync_with("cloud");
        a.has("patients", "late")
    });
    assert!(a.has("patients", "o2") && a.has("patients", "o3"));
    for id in ["w2", "w3"] {
        assert_eq!(
            a.has("patients", id),
            written_past,
            "{id}: on the device as a transfer of the new origin when the office wrote it"
        );
    }
    cloud.kill();
}

fn within_value<T>(
    limit: Duration,
    explain: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out: {}", explain());
        std::thread::sleep(Duration::from_millis(100));
    }
}
