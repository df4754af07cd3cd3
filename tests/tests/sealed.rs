//! Sealed tenants with devices syncing with the cloud directly (issue 20, first stage): a real
//! `outpost-cloud init --sealed` and `run`, and device databases on the built `liboutpost.so`.
//! Each device gets its grant's scope keys wrapped to its own static key in the answer to its
//! hello; what it pushes is sealed under its scope's current epoch, what it pulls is opened with
//! the epoch's key; the cloud's tenant tables hold the rows (it opens every body), the batches its
//! mailbox holds are all sealed (no patient name, no table or column name in any of them), and a
//! device granted one clinic holds the keys of that clinic and of the unscoped stream only.
//! A hub of a sealed tenant gets every device's envelope from its cloud and hands each tablet
//! its own unopened; no patient name and no scope name is readable in its data directory: the
//! stream ids, grants and key epochs it holds name scopes by digest.

use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::control::{decode_entry, ControlItem};
use outpost_protocol::seal::{self, DigestKey, ScopeKey, SealError};
use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::process::{code_of, run_ok};
use outpost_testkit::e2e::scratch::scratch;
use std::process::Command;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
CREATE TABLE IF NOT EXISTS forms(id TEXT PRIMARY KEY NOT NULL, title TEXT);
SELECT outpost_track('patients', '{\"scope\": \"clinic\"}');
SELECT outpost_track('forms');";

/// What the stories write that must never be readable where sealed bodies rest: patient names,
/// a form title, scope names, table and column names.
const MARKERS: [&str; 11] = [
    "Zawadi",
    "Mwakilema",
    "Kheri",
    "Rehema",
    "Antenatal",
    "moshi",
    "tanga",
    "patients",
    "forms",
    "clinic",
    "title",
];

fn within(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn names(d: &DeviceDb) -> Vec<String> {
    let mut st = d
        .conn
        .prepare("SELECT name FROM patients ORDER BY id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every batch the mailbox in the data directory `data` holds, as stored.
fn held_batches(data: &std::path::Path) -> Vec<Vec<u8>> {
    let mailbox = rusqlite::Connection::open(data.join("mailbox.db")).unwrap();
    let mut st = mailbox.prepare("SELECT bytes FROM batches").unwrap();
    let batches = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    batches
}

/// `outpost-cloud init --sealed`, then `run`.
fn sealed_cloud(data: &std::path::Path) -> Cloud {
    run_ok(
        Command::new(&built().cloud)
            .args(["init", "--sealed", "--data"])
            .arg(data),
    );
    Cloud::running(data)
}

#[test]
fn devices_of_a_sealed_tenant_sync_through_the_cloud_and_its_mailbox_holds_only_sealed_bodies() {
    let dir = scratch();
    let data = dir.path().join("cloud");
    let cloud = sealed_cloud(&data);
    let office = DeviceDb::open(&dir.path().join("office.db"), SCHEMA);
    let moshi = DeviceDb::open(&dir.path().join("moshi.db"), SCHEMA);
    office.enroll(&cloud.scoped_code("--device", "*"));
    moshi.enroll(&cloud.scoped_code("--device", "moshi"));

    // The keys come with enrolment (the cloud's hello): the grant names moshi by digest, and
    // the write check reads it with the tenant's digest key, before any sync.
    let keys = moshi.json("SELECT json_extract(outpost_status(), '$.keys')");
    assert_eq!(keys.as_object().map(|k| k.len()), Some(2), "{keys}");
    moshi.exec("INSERT INTO patients VALUES ('m1', 'Zawadi Mwakilema', 'moshi')");
    // Outside the grant (by digest): refused at write time, naming the scope by its name.
    let refused = moshi
        .conn
        .execute(
            "INSERT INTO patients VALUES ('x1', 'Eshe Mrema', 'tanga')",
            [],
        )
        .unwrap_err()
        .to_string();
    assert!(refused.contains("'tanga' is not granted"), "{refused}");
    office.exec(
        "INSERT INTO patients VALUES ('t1', 'Kheri Ndalichako', 'tanga'), \
                                     ('m2', 'Rehema Shangali', 'moshi');
         INSERT INTO forms VALUES ('f1', 'Antenatal intake');",
    );
    moshi.sync();
    within("both devices hold what they may", || {
        moshi.sync();
        office.sync();
        names(&office) == ["Zawadi Mwakilema", "Rehema Shangali", "Kheri Ndalichako"]
            && names(&moshi) == ["Zawadi Mwakilema", "Rehema Shangali"]
            && moshi.count("forms") == 1
    });
    // The tenant tables hold every row: the cloud opened every body.
    within("the cloud's tenant holds every patient", || {
        cloud.count("patients") == 3
    });

    // Keys: the moshi tablet holds the unscoped stream's and moshi's, epoch 1; the office every
    // clinic's.
    let keys = moshi.json("SELECT json_extract(outpost_status(), '$.keys')");
    assert_eq!(
        keys,
        serde_json::json!({
            "": {"epoch": 1, "current": true},
            "moshi": {"epoch": 1, "current": true}
        })
    );
    let office_keys = office.json("SELECT json_extract(outpost_status(), '$.keys')");
    assert!(
        office_keys.get("tanga").is_some() && office_keys.get("moshi").is_some(),
        "{office_keys}"
    );

    // Every batch the cloud's mailbox holds is sealed, and the file holds no name, no table or
    // column name, no form title of the story in the clear.
    let batches = held_batches(&data);
    assert!(batches.len() >= 3, "{} batches", batches.len());
    for b in &batches {
        let h = codec::decode_header(b, &Limits::default()).unwrap();
        assert!(h.key_epoch >= 1, "a batch of {} is not sealed", h.origin);
        // No name, no scope, table or column name, no form title of the story in the clear.
        for marker in MARKERS {
            assert!(
                !b.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{marker:?} is readable in a batch of {} the cloud's mailbox holds",
                h.origin
            );
        }
    }
}

/// A hub of a sealed tenant relays what it cannot read: it knows its grant's scopes by digest
/// only, and prints no codes (it could give a device no key); a tablet joins it with the cloud's
/// two-part code, whose admission the hub checks against the cloud's key and whose keys let the
/// tablet write and read its clinic's rows at once; its cloud hands the hub every device's
/// envelope, which it keeps and hands on unopened. No patient name and no scope name is
/// readable anywhere in the hub's data directory.
#[test]
fn a_hub_of_a_sealed_tenant_hands_its_tablets_their_keys_and_holds_no_readable_row() {
    let dir = scratch();
    let data = dir.path().join("cloud");
    let cloud = sealed_cloud(&data);
    let hub = Hub::uplinked(
        &dir.path().join("hub"),
        &cloud.scoped_code("--hub", "moshi,tanga"),
        500,
        &[],
    );
    within("the hub learns its grant from the cloud, by digest", || {
        let scopes = hub.status()["scopes"].clone();
        scopes.as_array().is_some_and(|s| {
            s.len() == 2
                && s.iter().all(|d| {
                    d.as_str()
                        .is_some_and(|d| d.parse::<seal::ScopeDigest>().is_ok())
                })
        })
    });
    let status = hub.status().to_string();
    assert!(
        !status.contains("moshi") && !status.contains("tanga"),
        "{status}"
    );
    // The hub's own codes are refused, naming the two ways a sealed tenant's codes come.
    let refused = Command::new(&built().hub)
        .args(["enroll-code", "--no-qr", "--data"])
        .arg(&hub.data)
        .args(["--address", &hub.addr(), "--scopes", "moshi"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("sealed") && why.contains("--at-hub") && why.contains("outpost_enroll_code"),
        "{why}"
    );

    let office = DeviceDb::open(&dir.path().join("office.db"), SCHEMA);
    office.enroll(&cloud.scoped_code("--device", "*"));
    let hub_site = hub.status()["site"].as_str().unwrap().to_string();
    let tablet = DeviceDb::open(&dir.path().join("tablet.db"), SCHEMA);
    tablet.enroll(&code_of(
        Command::new(&built().cloud)
            .args(["enroll-code", "--no-qr", "--device", "--data"])
            .arg(&cloud.data)
            .args(["--scopes", "moshi", "--at-hub", &hub_site[..8]])
            .args(["--address", &hub.addr()]),
    ));
    // The code's keys: the tablet holds moshi's before any sync.
    let keys = tablet.json("SELECT json_extract(outpost_status(), '$.keys')");
    assert_eq!(keys.as_object().map(|k| k.len()), Some(2), "{keys}");
    office.exec(
        "INSERT INTO patients VALUES ('m1', 'Zawadi Mwakilema', 'moshi'), \
                                     ('t1', 'Kheri Ndalichako', 'tanga');
         INSERT INTO forms VALUES ('f1', 'Antenatal intake');",
    );
    tablet.exec("INSERT INTO patients VALUES ('m2', 'Rehema Shangali', 'moshi')");
    within("the tablet and the office converge through the hub", || {
        office.sync();
        tablet.sync();
        names(&tablet) == ["Zawadi Mwakilema", "Rehema Shangali"]
            && names(&office) == ["Zawadi Mwakilema", "Rehema Shangali", "Kheri Ndalichako"]
            && tablet.count("forms") == 1
    });
    let keys = tablet.json("SELECT json_extract(outpost_status(), '$.keys')");
    assert_eq!(keys["moshi"]["epoch"], 1, "{keys}");
    assert!(keys.get("tanga").is_none(), "{keys}");

    // The hub holds the office's and the tablet's envelopes, and no key.
    assert!(
        hub.status()["envelopes"].as_u64().unwrap() >= 2,
        "{}",
        hub.status()
    );
    // The hub's control stream states the patients table's scope rule sealed, never in clear.
    let control = rusqlite::Connection::open(dir.path().join("hub").join("mailbox.db")).unwrap();
    let mut st = control
        .prepare("SELECT bytes FROM control_entries")
        .unwrap();
    let items: Vec<ControlItem> = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|b| decode_entry(&b.unwrap()).unwrap().item)
        .collect();
    assert!(
        items
            .iter()
            .any(|i| matches!(i, ControlItem::SealedTable(_))),
        "{items:?}"
    );
    assert!(!items.iter().any(|i| matches!(i, ControlItem::Table(_))));
    drop(st);
    drop(control);
    // Nothing of a row, no scope name and no table or column name is readable in the hub's
    // data directory (table settings travel sealed: `seal::table`).
    drop(hub);
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("hub")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(bytes.len() > 10_000, "the hub's files were read");
    for marker in MARKERS {
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{marker:?} is readable in the hub's data directory"
        );
    }
}

/// The cloud's two-part code for a device at `hub` granted `scopes`, with `extra` flags.
fn at_hub_code(cloud: &Cloud, hub: &Hub, scopes: &str, extra: &[&str]) -> String {
    let site = hub.status()["site"].as_str().unwrap().to_string();
    code_of(
        Command::new(&built().cloud)
            .args(["enroll-code", "--no-qr", "--device", "--data"])
            .arg(&cloud.data)
            .args(["--scopes", scopes, "--at-hub", &site[..8]])
            .args(["--address", &hub.addr()])
            .args(extra),
    )
}

/// Offline enrolment at a clinic (issue 20 item 3's acceptance): a supervisor's tablet, joined
/// with the cloud's code at the hub and granted `enroll` by the operator, mints a two-part code with `outpost_enroll_code` while the cloud is down; a new
/// tablet enrolled with it through the hub writes at once, reads the clinic's rows the office
/// wrote through the cloud before, and its row reaches the supervisor, all without the cloud.
/// What the supervisor may not grant (another clinic, `*`) it cannot mint.
#[test]
fn a_tablet_enrolled_with_a_supervisors_code_works_through_a_hub_cut_off_from_the_cloud() {
    let dir = scratch();
    let mut cloud = sealed_cloud(&dir.path().join("cloud"));
    let hub = Hub::uplinked(
        &dir.path().join("hub"),
        &cloud.scoped_code("--hub", "moshi,tanga"),
        500,
        &[],
    );
    let office = DeviceDb::open(&dir.path().join("office.db"), SCHEMA);
    office.enroll(&cloud.scoped_code("--device", "*"));
    let supervisor = DeviceDb::open(&dir.path().join("supervisor.db"), SCHEMA);
    supervisor.enroll(&at_hub_code(&cloud, &hub, "moshi", &[]));
    // The operator makes it the clinic's supervisor: the cloud's grant, with `enroll`.
    supervisor.sync();
    let site: Vec<u8> = supervisor.call("SELECT outpost_site_id()").unwrap();
    let site: String = site.iter().map(|b| format!("{b:02x}")).collect();
    within(
        "the cloud knows the supervisor's tablet through the hub",
        || {
            Command::new(&built().cloud)
                .args(["grant", "--data"])
                .arg(&cloud.data)
                .args(["--device", &site[..12], "--scopes", "moshi", "--enroll"])
                .output()
                .unwrap()
                .status
                .success()
        },
    );
    office.exec(
        "INSERT INTO patients VALUES ('m1', 'Zawadi Mwakilema', 'moshi'), \
                                     ('t1', 'Kheri Ndalichako', 'tanga');",
    );
    within(
        "the supervisor holds the office's moshi patient through the hub",
        || {
            office.sync();
            supervisor.sync();
            names(&supervisor) == ["Zawadi Mwakilema"]
                && supervisor
                    .call::<String>("SELECT outpost_enroll_code('{\"scopes\": [\"moshi\"]}')")
                    .is_ok()
        },
    );

    // The clinic loses the cloud.
    cloud.kill();
    let refused = supervisor
        .try_json("SELECT outpost_enroll_code('{\"scopes\": [\"tanga\"]}')")
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("tanga") && refused.contains("grant"),
        "{refused}"
    );
    let code: String = supervisor
        .call("SELECT outpost_enroll_code('{\"scopes\": [\"moshi\"], \"hours\": 2}')")
        .unwrap();
    assert!(code.starts_with("outpost:"), "{code}");
    let tablet = DeviceDb::open(&dir.path().join("tablet.db"), SCHEMA);
    tablet.enroll(&code);
    // Its keys came in the code: it writes its clinic's rows before any sync.
    tablet.exec("INSERT INTO patients VALUES ('m2', 'Rehema Shangali', 'moshi')");
    within(
        "the new tablet and the supervisor converge through the offline hub",
        || {
            tablet.sync();
            supervisor.sync();
            names(&tablet) == ["Zawadi Mwakilema", "Rehema Shangali"]
                && names(&supervisor) == ["Zawadi Mwakilema", "Rehema Shangali"]
        },
    );
    // A code is used once.
    let again = DeviceDb::open(&dir.path().join("again.db"), SCHEMA);
    assert!(again.try_enroll(&code).is_err());
    // The cloud's code, minted from its data directory while it is down: the hub has never
    // reached the cloud since, and admits the tablet all the same.
    let late = DeviceDb::open(&dir.path().join("late.db"), SCHEMA);
    late.enroll(&at_hub_code(&cloud, &hub, "moshi", &[]));
    within(
        "a tablet with the cloud's newer code reads through the offline hub",
        || {
            late.sync();
            names(&late) == ["Zawadi Mwakilema", "Rehema Shangali"]
        },
    );
}

/// Revocation rotates (issue 20 item 4): revoking a tablet starts a new key epoch for every
/// scope it could read; the other tablets get it in the answer to their next hello and seal
/// under it. With the revoked tablet's own key material (every key it unwrapped, read from its
/// database file), every batch written before the revocation still opens and none written
/// after it does, reading them straight from the cloud's mailbox file.
#[test]
fn a_revoked_tablets_keys_open_nothing_pushed_after_its_revocation() {
    let dir = scratch();
    let cloud = sealed_cloud(&dir.path().join("cloud"));
    let gone = DeviceDb::open(&dir.path().join("gone.db"), SCHEMA);
    let kept = DeviceDb::open(&dir.path().join("kept.db"), SCHEMA);
    gone.enroll(&cloud.scoped_code("--device", "moshi"));
    kept.enroll(&cloud.scoped_code("--device", "moshi"));
    gone.exec("INSERT INTO patients VALUES ('m1', 'Zawadi Mwakilema', 'moshi')");
    kept.exec("INSERT INTO patients VALUES ('m2', 'Rehema Shangali', 'moshi')");
    within("both tablets hold both patients", || {
        gone.sync();
        kept.sync();
        names(&gone).len() == 2 && names(&kept).len() == 2
    });
    let site = |d: &DeviceDb| -> String {
        let id: Vec<u8> = d.call("SELECT outpost_site_id()").unwrap();
        id.iter().map(|b| format!("{b:02x}")).collect()
    };
    let (gone_site, kept_site) = (site(&gone), site(&kept));
    let out = run_ok(
        Command::new(&built().cloud)
            .args(["revoke", "--data"])
            .arg(&cloud.data)
            .arg(&gone_site[..12]),
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("key epoch 2"), "{out}");
    let epochs = cloud.status()["sealed"]["epochs"].clone();
    assert_eq!(epochs["moshi"], 2, "{epochs}");
    assert_eq!(epochs[""], 2, "{epochs}");

    kept.exec("INSERT INTO patients VALUES ('m3', 'Kheri Ndalichako', 'moshi')");
    within("the kept tablet pushes under the new epoch", || {
        kept.sync();
        kept.json("SELECT json_extract(outpost_status(), '$.keys.moshi')")
            == serde_json::json!({"epoch": 2, "current": true})
            && cloud.count("patients") == 3
    });

    // The revoked tablet's keys, as its database holds them.
    let gone_conn = rusqlite::Connection::open(dir.path().join("gone.db")).unwrap();
    let digest_key: Vec<u8> = gone_conn
        .query_row("SELECT key FROM _outpost_digest_key", [], |r| r.get(0))
        .unwrap();
    let digest_key = DigestKey::from_bytes(digest_key.try_into().unwrap());
    let mut st = gone_conn
        .prepare("SELECT scope, epoch, key FROM _outpost_keys")
        .unwrap();
    let gone_keys: Vec<(String, u32, Vec<u8>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(gone_keys.iter().all(|(_, e, _)| *e == 1), "{gone_keys:?}");

    let batches = held_batches(&cloud.data);
    let (mut before, mut after) = (0, 0);
    for b in &batches {
        let h = codec::decode_header(b, &Limits::default()).unwrap();
        if h.origin.to_string() != kept_site || h.stream != digest_key.wire_scope("moshi") {
            continue;
        }
        let opened = seal::decode_sealed(b, &Limits::default(), &digest_key, |stream, epoch| {
            let scope = digest_key.key_digest(stream).unwrap().to_stream();
            gone_keys
                .iter()
                .find(|(s, e, _)| *s == scope && *e == epoch)
                .and_then(|(_, e, k)| ScopeKey::new(*e, k.as_slice().try_into().ok()?))
        });
        match h.key_epoch {
            1 => {
                assert!(opened.is_ok(), "history stays readable: {opened:?}");
                before += 1;
            }
            _ => {
                assert!(
                    matches!(opened, Err(SealError::NoKey { epoch: 2 })),
                    "a batch pushed after the revocation opened with the revoked keys"
                );
                after += 1;
            }
        }
    }
    assert!(before >= 1 && after >= 1, "{before} before, {after} after");
}
