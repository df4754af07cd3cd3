//! Batches between real device databases and the cloud's real tables: a device's batch stored in
//! the cloud's mailbox is applied into tables created from its header (the operator reads them with
//! the `sqlite3` shell, a REST client pulls them); a REST push and an operator's write become
//! cloud-origin batches that a device applies.

mod common;
use common::*;
use outpost_mailbox::Mailbox;
use outpost_protocol::{SiteId, VersionVector};
use rusqlite::Connection;
use serde_json::json;

const SCHEMA: &str = "
CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT NOT NULL, visits INTEGER NOT NULL DEFAULT 0, notes VARCHAR(200));
CREATE TABLE vitals(id TEXT PRIMARY KEY, patient_id TEXT NOT NULL REFERENCES patients(id), temp REAL);
SELECT outpost_track('patients', '{\"columns\": {\"visits\": \"counter\", \"notes\": \"review\"}}');
SELECT outpost_track('vitals');
";

fn vector_of(db: &Connection) -> VersionVector {
    let text: String = db
        .query_row("SELECT outpost_vector()", [], |r| r.get(0))
        .unwrap();
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut v = VersionVector::new();
    for (k, c) in json {
        v.set(k.parse().unwrap(), c.as_u64().unwrap());
    }
    v
}

fn site_of(db: &Connection) -> SiteId {
    let b: Vec<u8> = db
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .unwrap();
    SiteId::from_slice(&b).unwrap()
}

/// What a device pulls from the cloud's mailbox, applied on the device; returns batches applied.
fn device_pulls(mailbox: &Mailbox, db: &Connection) -> usize {
    let me = site_of(db);
    let mut n = 0;
    for b in mailbox
        .batches_for(
            &vector_of(db),
            Some(me),
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap()
    {
        let b = b.unwrap();
        let out: String = db
            .query_row("SELECT outpost_apply(?1)", [&b.bytes], |r| r.get(0))
            .unwrap();
        assert!(out.contains("\"applied\""), "{out}");
        n += 1;
    }
    n
}

#[test]
fn a_device_batch_lands_in_real_tables_and_rest_pushes_reach_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, rest) = serving(tmp.path());
    let d = data.to_str().unwrap();
    let tenant = data.join("tenant.db");

    // A tablet writes offline.
    let tablet = device(&tmp.path().join("tablet.db"));
    tablet.execute_batch(SCHEMA).unwrap();
    tablet
        .execute_batch(
            "INSERT INTO patients(id, name, notes) VALUES ('p1', 'Asha', 'penicillin'), ('p2', 'Bo', NULL);
             UPDATE patients SET visits = visits + 2 WHERE id = 'p1';
             INSERT INTO vitals VALUES ('v1', 'p1', 38.5);",
        )
        .unwrap();
    let batch: Vec<u8> = tablet
        .query_row("SELECT outpost_changes(0)", [], |r| r.get(0))
        .unwrap();

    // The batch arrives in the cloud's mailbox (durable, acked) ...
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    let receipts = mailbox.store(vec![batch.clone()]).unwrap();
    assert!(receipts[0].stored && receipts[0].covered);

    // ... and is applied into real tables created from its header, which the operator queries
    // with the sqlite3 shell.
    let rows = wait_for("the batch to be applied", || {
        let has = shell_json(
            &tenant,
            "SELECT count(*) AS n FROM sqlite_master WHERE name = 'vitals'",
        );
        if has != json!([{"n": 1}]) {
            return None;
        }
        let rows = shell_json(
            &tenant,
            "SELECT p.id, p.name, p.visits, p.notes, v.temp FROM patients p LEFT JOIN vitals v ON v.patient_id = p.id ORDER BY p.id",
        );
        (rows.as_array().unwrap().len() == 2).then_some(rows)
    });
    assert_eq!(
        rows,
        json!([
            {"id": "p1", "name": "Asha", "visits": 2, "notes": "penicillin", "temp": 38.5},
            {"id": "p2", "name": "Bo", "visits": 0, "notes": null, "temp": null}
        ])
    );
    // Declared types, key and foreign key came from the header.
    let ddl = shell_json(
        &tenant,
        "SELECT sql FROM sqlite_master WHERE name = 'vitals'",
    );
    let ddl = ddl[0]["sql"].as_str().unwrap();
    assert!(
        ddl.contains("\"temp\" REAL") && ddl.contains("REFERENCES \"patients\""),
        "{ddl}"
    );
    let notes_type = shell_json(
        &tenant,
        "SELECT type FROM pragma_table_info('patients') WHERE name = 'notes'",
    );
    // Reduced to its affinity's fixed spelling (schema is data: docs/security.md).
    assert_eq!(notes_type, json!([{"type": "TEXT"}]));
    // Applying again (a duplicate delivery) changes nothing.
    assert!(!mailbox.store(vec![batch]).unwrap()[0].stored);

    // A REST client pulls the device's records.
    let (s, pull) = rest.pull(None);
    assert_eq!(s, 200, "{pull}");
    assert_eq!(
        records(&pull, "patients", "created"),
        vec![
            json!({"id": "p1", "name": "Asha", "visits": 2, "notes": "penicillin"}),
            json!({"id": "p2", "name": "Bo", "visits": 0, "notes": null})
        ]
    );
    assert_eq!(
        records(&pull, "vitals", "created"),
        vec![json!({"id": "v1", "patient_id": "p1", "temp": 38.5})]
    );
    let t = pull["timestamp"].as_i64().unwrap();

    // A REST push is a local write on the cloud: exported as a cloud-origin batch ...
    let (s, r) = rest.push(
        t,
        &json!({"patients": {"created": [{"id": "p3", "name": "Chen", "visits": 0}], "updated": [{"id": "p2", "name": "Bo Li"}], "deleted": []}}),
    );
    assert_eq!(s, 200, "{r}");
    let cloud_site: SiteId = std::fs::read_to_string(data.join("site-id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(mailbox.vector().unwrap().get(&cloud_site.into()) > 0);

    // ... that the tablet pulls and applies (never its own batch back).
    assert_eq!(device_pulls(&mailbox, &tablet), 1);
    let on_tablet: Vec<(String, String, i64)> = tablet
        .prepare("SELECT id, name, visits FROM patients ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        on_tablet,
        vec![
            ("p1".into(), "Asha".into(), 2),
            ("p2".into(), "Bo Li".into(), 0),
            ("p3".into(), "Chen".into(), 0)
        ]
    );
    assert_eq!(device_pulls(&mailbox, &tablet), 0, "nothing twice");

    // An operator publishes a form in a `down` table on the cloud: it reaches a new tablet.
    cli_ok(&["table", "--data", d, "forms", "--direction", "down"]);
    {
        let op = device(&tenant);
        op.execute_batch(
            "CREATE TABLE forms(id TEXT PRIMARY KEY, title TEXT NOT NULL, version INTEGER);
             SELECT outpost_track('forms');
             INSERT INTO forms VALUES ('intake', 'Intake form', 3);",
        )
        .unwrap();
    }
    let second = device(&tmp.path().join("second.db"));
    second.execute_batch(SCHEMA).unwrap();
    second
        .execute_batch(
            "CREATE TABLE forms(id TEXT PRIMARY KEY, title TEXT NOT NULL, version INTEGER);
             SELECT outpost_track('forms', '{\"direction\": \"down\"}');",
        )
        .unwrap();
    wait_for("the operator's write to be exported", || {
        let v = mailbox.vector().unwrap().get(&cloud_site.into());
        let db: i64 = Connection::open(&tenant)
            .unwrap()
            .query_row("SELECT max(seq) FROM _outpost_log", [], |r| r.get(0))
            .unwrap_or(0);
        (v as i64 >= db && v >= 3).then_some(())
    });
    assert!(device_pulls(&mailbox, &second) >= 2);
    let form: (String, i64) = second
        .query_row(
            "SELECT title, version FROM forms WHERE id = 'intake'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(form, ("Intake form".into(), 3));
    let n: i64 = second
        .query_row("SELECT count(*) FROM patients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        n, 3,
        "the second tablet has the first tablet's and the REST client's records"
    );

    // The operator's form shows in REST pulls too, and status counts it all.
    let (_, pull2) = rest.pull(Some(t));
    assert_eq!(
        records(&pull2, "forms", "created"),
        vec![json!({"id": "intake", "title": "Intake form", "version": 3})]
    );
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(&["status", "--data", d, "--json"])).unwrap();
    let tables = status["tenant"]["tables"].as_array().unwrap();
    assert!(
        tables.contains(&json!({"name": "patients", "rows": 3, "scope": null})),
        "{status}"
    );
    assert!(
        tables.contains(&json!({"name": "forms", "rows": 1, "scope": null})),
        "{status}"
    );
    assert_eq!(status["tenant"]["quarantined"], 0);
    drop(run);
}

#[test]
fn a_batch_the_engine_refuses_stays_in_the_mailbox_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let d = data.to_str().unwrap();
    // The operator made a table of the same name with another key: the header's schema cannot
    // be applied there, but the batch must not be lost.
    {
        let op = device(&data.join("tenant.db"));
        op.execute_batch(
            "CREATE TABLE notes(k TEXT PRIMARY KEY, body TEXT); SELECT outpost_track('notes');",
        )
        .unwrap();
    }
    let run = start(&data);
    let tablet = device(&tmp.path().join("tablet.db"));
    tablet
        .execute_batch(
            "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT); SELECT outpost_track('notes');
             INSERT INTO notes VALUES ('n1', 'hello');",
        )
        .unwrap();
    let batch: Vec<u8> = tablet
        .query_row("SELECT outpost_changes(0)", [], |r| r.get(0))
        .unwrap();
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    mailbox.store(vec![batch]).unwrap();
    let status = wait_for("the apply outcome in status", || {
        let s: serde_json::Value =
            serde_json::from_str(&cli_ok(&["status", "--data", d, "--json"])).unwrap();
        let reported = !s["tenant"]["last_apply_error"].is_null()
            || s["tenant"]["quarantined"].as_u64() > Some(0);
        reported.then_some(s)
    });
    // Refused whole (rows could not be matched by key): the batch is still held, and status says why.
    assert_eq!(status["mailbox"]["batches"], 1, "{status}");
    let why = status["tenant"]["last_apply_error"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("primary key"), "{status}");
    assert!(cli_ok(&["status", "--data", d]).contains("LAST APPLY ERROR"));
    assert_eq!(
        shell_json(&data.join("tenant.db"), "SELECT count(*) AS n FROM notes"),
        json!([{"n": 0}])
    );
    drop(run);
}

/// docs/design.md section 10, "Time": the cloud's clock is the time source, so a received
/// clock more than a day ahead of it (a tablet ten days ahead, its batch admitted) never
/// advances the engine's clock: the cloud's own next write (a REST push) carries the cloud's
/// time, not a clock after the tablet's.
#[test]
fn a_far_future_clock_received_does_not_drag_the_clouds_own_writes() {
    use outpost_protocol::batch::codec::{decode_header, Limits};
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let tmp = tempfile::tempdir().unwrap();
    let (data, _run, rest) = serving(tmp.path());
    let path = tmp.path().join("tablet.db");
    let tablet = device(&path);
    tablet.execute_batch(SCHEMA).unwrap();
    // Ten days ahead (the engine's test hook), read by the next connection's clock.
    tablet
        .execute_batch("INSERT INTO _outpost_meta(k, v) VALUES ('test_wall_shift_ms', 864000000)")
        .unwrap();
    drop(tablet);
    let tablet = device(&path);
    tablet
        .execute_batch("INSERT INTO patients(id, name) VALUES ('p1', 'Asha')")
        .unwrap();
    let batch: Vec<u8> = tablet
        .query_row("SELECT outpost_changes(0)", [], |r| r.get(0))
        .unwrap();
    let far = decode_header(&batch, &Limits::default()).unwrap().max_hlc;
    assert!(far.millis() as i64 > now_ms() + 9 * 86_400_000);
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    mailbox.store(vec![batch]).unwrap();

    let t = wait_for("the tablet's batch to be applied", || {
        let (s, pull) = rest.pull(None);
        (s == 200 && records(&pull, "patients", "created").len() == 1)
            .then(|| pull["timestamp"].as_i64().unwrap())
    });
    let (s, r) = rest.push(
        t,
        &json!({"patients": {"created": [{"id": "p2", "name": "Bo", "visits": 0}], "updated": [], "deleted": []}}),
    );
    assert_eq!(s, 200, "{r}");
    let cloud_site: SiteId = std::fs::read_to_string(data.join("site-id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let own = mailbox
        .batches_for(
            &VersionVector::new(),
            None,
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap()
        .map(|b| b.unwrap())
        .filter(|b| b.origin == cloud_site)
        .map(|b| decode_header(&b.bytes, &Limits::default()).unwrap().max_hlc)
        .max()
        .expect("the REST push exported");
    let ahead = own.millis() as i64 - now_ms();
    assert!(
        ahead.abs() < 60_000,
        "the cloud's write is stamped {ahead} ms from its time (the tablet's was {} ms)",
        far.millis() as i64 - now_ms()
    );
}
