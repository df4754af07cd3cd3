//! Scopes end to end (issue 19), with real `outpost-cloud` and `outpost-hub` processes and device
//! databases on the built `liboutpost.so`: a clinic hub granted two clinics; each clinic's tablet
//! holds only its clinic's patients (and their visits, scoped through their patient), every
//! tablet holds the unscoped forms, the operator's write on the cloud reaches only its clinic's
//! tablet; a tablet granted every scope, synced with the cloud, holds all; a tablet tampered with to write into a clinic it is not granted has its push refused
//! whole, and nothing of it reaches the hub, the cloud or another tablet; a tablet regranted to
//! another clinic still pushes what it wrote before the regrant.

use outpost_protocol::control::{encode_entry, grant_item};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::scope::Scopes;
use outpost_protocol::SiteId;
use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::{self, DeviceDb};
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::process::code_of;
use outpost_testkit::e2e::scratch::scratch;
use std::process::Command;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
CREATE TABLE IF NOT EXISTS visits(id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT REFERENCES patients(id), note TEXT);
CREATE TABLE IF NOT EXISTS forms(id TEXT PRIMARY KEY NOT NULL, title TEXT);
SELECT outpost_track('patients', '{\"scope\": \"clinic\"}');
SELECT outpost_track('visits', '{\"scope\": {\"via\": \"patient_id\"}}');
SELECT outpost_track('forms');";

/// A code of `outpost-hub enroll-code --scopes scopes`.
fn hub_code(hub: &Hub, scopes: &str) -> String {
    code_of(
        Command::new(&built().hub)
            .args(["enroll-code", "--no-qr", "--data"])
            .arg(&hub.data)
            .args(["--address", &hub.addr(), "--scopes", scopes]),
    )
}

/// Polls `f` every 200 ms up to 30 s; panics naming `what`.
fn within(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The ids in `table`, sorted.
fn ids(dev: &DeviceDb, table: &str) -> Vec<String> {
    let mut st = dev
        .conn
        .prepare(&format!("SELECT id FROM \"{table}\" ORDER BY id"))
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A cloud, a hub granted moshi and tanga, a tablet per clinic at the hub, and a tablet granted
/// every scope at the cloud, each with the schema and enrolled.
struct Programme {
    _dir: tempfile::TempDir,
    cloud: Cloud,
    hub: Hub,
    moshi: DeviceDb,
    tanga: DeviceDb,
    office: DeviceDb,
}

fn programme() -> Programme {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let hub = Hub::uplinked(
        &dir.path().join("hub"),
        &cloud.scoped_code("--hub", "moshi,tanga"),
        500,
        &[],
    );
    within("the hub learns its grant", || {
        hub.status()["scopes"] == serde_json::json!(["moshi", "tanga"])
    });
    let moshi = DeviceDb::open(&dir.path().join("moshi.db"), SCHEMA);
    let tanga = DeviceDb::open(&dir.path().join("tanga.db"), SCHEMA);
    let office = DeviceDb::open(&dir.path().join("office.db"), SCHEMA);
    moshi.enroll(&hub_code(&hub, "moshi"));
    tanga.enroll(&hub_code(&hub, "tanga"));
    office.enroll(&cloud.scoped_code("--device", "*"));
    Programme {
        _dir: dir,
        cloud,
        hub,
        moshi,
        tanga,
        office,
    }
}

#[test]
fn two_clinics_tablets_hold_only_their_clinics_patients_and_every_form() {
    let p = programme();
    p.moshi.exec(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi'), ('m2', 'Baraka', 'moshi');
         INSERT INTO visits VALUES ('v1', 'm1', 'ANC 1');",
    );
    p.tanga.exec(
        "INSERT INTO patients VALUES ('t1', 'Chausiku', 'tanga');
         INSERT INTO visits VALUES ('v2', 't1', 'ANC 2');",
    );
    p.office
        .exec("INSERT INTO forms VALUES ('f1', 'ANC visit')");
    // The operator writes on the cloud: a tanga patient, exported in the cloud's tanga stream.
    {
        let op = device_db::open(&p.cloud.data.join("tenant.db"));
        op.busy_timeout(Duration::from_secs(10)).unwrap();
        within("the cloud learns the patients table from a tablet", || {
            p.moshi.sync();
            op.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'patients'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
                == 1
        });
        op.execute_batch("INSERT INTO patients VALUES ('t9', 'Zawadi', 'tanga')")
            .unwrap();
    }
    // Each tablet pushes; the hub relays to the cloud; each pulls what its grant holds.
    within("every change reaches every tablet its grant allows", || {
        for d in [&p.moshi, &p.tanga, &p.office] {
            d.sync();
        }
        ids(&p.office, "patients") == ["m1", "m2", "t1", "t9"]
            && ids(&p.moshi, "forms") == ["f1"]
            && ids(&p.tanga, "forms") == ["f1"]
    });
    assert_eq!(ids(&p.moshi, "patients"), ["m1", "m2"]);
    assert_eq!(ids(&p.moshi, "visits"), ["v1"]);
    assert_eq!(ids(&p.tanga, "patients"), ["t1", "t9"]);
    assert_eq!(ids(&p.tanga, "visits"), ["v2"]);
    assert_eq!(ids(&p.office, "visits"), ["v1", "v2"]);
    // The hub holds both clinics' streams and shows them per scope.
    let counts = p.hub.status()["scope_counts"].clone();
    let scopes: Vec<&str> = counts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["scope"].as_str().unwrap())
        .collect();
    assert!(
        scopes.contains(&"moshi") && scopes.contains(&"tanga"),
        "{counts}"
    );
    drop(p.cloud);
}

#[test]
fn a_tablet_tampered_into_another_clinic_is_refused_and_nothing_of_it_travels() {
    let p = programme();
    p.moshi
        .exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi')");
    p.moshi.sync();
    // The write-time check stops an honest app...
    let err = p
        .moshi
        .conn
        .execute("INSERT INTO patients VALUES ('x1', 'Dalila', 'tanga')", [])
        .unwrap_err()
        .to_string();
    assert!(err.contains("'tanga' is not granted"), "{err}");
    // ...a tampered one forges its local grant: a root of its own making and a grant entry it
    // signed, adding tanga. The device now believes it holds tanga, so it writes and pushes there.
    let forger = Keypair::from_secret(&[0x66; 32]).unwrap();
    let writer = SiteId([0xee; 16]);
    let me: Vec<u8> = p.moshi.call("SELECT outpost_site_id()").unwrap();
    let me = SiteId(me.try_into().unwrap());
    let both = Scopes::parse(["moshi", "tanga"]).unwrap();
    let entry = encode_entry(writer, 1, &grant_item(me, 99, both, false), &forger);
    p.moshi
        .conn
        .execute(
            "INSERT INTO _outpost_roots(site, role, key) VALUES (?1, 'cloud', ?2)",
            rusqlite::params![
                writer.as_bytes().to_vec(),
                forger.public().as_bytes().to_vec()
            ],
        )
        .unwrap();
    p.moshi
        .conn
        .execute(
            "INSERT INTO _outpost_control(writer, seq, bytes) VALUES (?1, 1, ?2)",
            rusqlite::params![writer.as_bytes().to_vec(), entry],
        )
        .unwrap();
    assert_eq!(
        p.moshi
            .json("SELECT json_extract(outpost_status(), '$.scopes')"),
        serde_json::json!(["moshi", "tanga"]),
        "the tampered grant is the device's belief"
    );
    // A fresh connection reads the (tampered) grant, as the app's next start would.
    let moshi = DeviceDb::open(&p._dir.path().join("moshi.db"), SCHEMA);
    moshi.exec("INSERT INTO patients VALUES ('x1', 'Dalila', 'tanga')");
    moshi.exec("UPDATE patients SET name = 'Amina K' WHERE id = 'm1'");
    // Its batches name the forged grant's version (99), which no relay knows: the push is
    // refused whole (docs/design.md section 10, "One decision everywhere").
    let refused = moshi.try_sync().unwrap_err().to_string();
    assert!(
        refused.contains("version 99") && refused.contains("nothing of this push was stored"),
        "{refused}"
    );
    // Nothing of that push was stored: not its tanga row, not its honest moshi write either.
    std::thread::sleep(Duration::from_secs(2));
    for d in [&p.tanga, &p.office] {
        d.sync();
        assert!(!d.has("patients", "x1"), "the forged row travelled");
    }
    assert!(ids(&p.office, "patients").contains(&"m1".to_string()));
    let name: String = p
        .office
        .call("SELECT name FROM patients WHERE id = 'm1'")
        .unwrap();
    assert_eq!(name, "Amina", "the refused push is refused whole");
}

/// The contract's regrant story at the cloud: the moshi tablet is reassigned to tanga with an
/// unsent moshi write; its batch names the grant version it was written under (moshi's), so the
/// cloud takes it after the regrant and the all-scopes device gets it; the tablet then drops its
/// moshi rows without writing a delete (nothing is deleted elsewhere) and holds tanga's.
#[test]
fn a_regranted_tablet_pushes_its_unsent_write_then_holds_only_its_new_clinic() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let m = DeviceDb::open(&dir.path().join("m.db"), SCHEMA);
    let s = DeviceDb::open(&dir.path().join("s.db"), SCHEMA);
    m.enroll(&cloud.scoped_code("--device", "moshi"));
    s.enroll(&cloud.scoped_code("--device", "*"));
    m.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi'), ('m2', 'Baraka', 'moshi')");
    within("the all-scopes device holds the moshi patients", || {
        m.sync();
        s.sync();
        ids(&s, "patients") == ["m1", "m2"]
    });
    m.exec("UPDATE patients SET name = 'Baraka J' WHERE id = 'm2'");
    let site: Vec<u8> = m.call("SELECT outpost_site_id()").unwrap();
    let hex: String = site.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(&built().cloud)
        .args(["grant", "--data"])
        .arg(&cloud.data)
        .args(["--device", &hex[..12], "--scopes", "tanga"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    within(
        "the write made before the regrant reaches the all-scopes device",
        || {
            m.sync();
            s.sync();
            s.call::<String>("SELECT name FROM patients WHERE id = 'm2'")
                .unwrap()
                == "Baraka J"
        },
    );
    assert_eq!(
        m.json("SELECT json_extract(outpost_status(), '$.scopes')"),
        serde_json::json!(["tanga"])
    );
    s.exec("INSERT INTO patients VALUES ('t1', 'Chausiku', 'tanga')");
    within("the regranted tablet holds tanga's patients only", || {
        s.sync();
        m.sync();
        ids(&m, "patients") == ["t1"]
    });
    assert_eq!(
        m.json("SELECT json_extract(outpost_status(), '$.draining')"),
        serde_json::json!([]),
        "the drain is over"
    );
    // Nothing the tablet dropped travelled as a delete.
    std::thread::sleep(Duration::from_secs(1));
    m.sync();
    s.sync();
    assert_eq!(
        ids(&s, "patients"),
        ["m1", "m2", "t1"],
        "a regrant deletes nothing elsewhere"
    );
    let name: String = s.call("SELECT name FROM patients WHERE id = 'm2'").unwrap();
    assert_eq!(name, "Baraka J");
}

/// Regaining a dropped scope through the cloud (docs/design.md section 10, "Regrants"): the
/// moshi tablet, regranted to tanga, drops its moshi rows; granted moshi again, its first sync
/// brings back the rows only it wrote (the cloud serves it its own past batches of moshi) and
/// the office's, cell for cell, and nothing is written twice: its moshi stream's top and the
/// office's coverage of it are what they were, and nothing is pending.
#[test]
fn a_tablet_granted_its_clinic_again_gets_back_the_rows_it_wrote() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let m = DeviceDb::open(&dir.path().join("m.db"), SCHEMA);
    let s = DeviceDb::open(&dir.path().join("s.db"), SCHEMA);
    m.enroll(&cloud.scoped_code("--device", "moshi"));
    s.enroll(&cloud.scoped_code("--device", "*"));
    m.exec(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi'), ('m2', 'Baraka', 'moshi');
         INSERT INTO visits VALUES ('v1', 'm1', 'ANC 1'), ('v2', 'm2', 'ANC 1');",
    );
    m.exec("UPDATE patients SET name = 'Baraka J' WHERE id = 'm2'");
    s.exec("INSERT INTO patients VALUES ('m3', 'Zuhura', 'moshi')");
    let rows = |d: &DeviceDb| -> String {
        d.call(
            "SELECT ifnull((SELECT group_concat(id || ':' || name || ':' || clinic, ',') FROM \
             (SELECT * FROM patients ORDER BY id)), '') || '|' || \
             ifnull((SELECT group_concat(id || ':' || patient_id || ':' || note, ',') FROM \
             (SELECT * FROM visits ORDER BY id)), '')",
        )
        .unwrap()
    };
    within("both hold the moshi rows", || {
        m.sync();
        s.sync();
        m.sync();
        ids(&m, "patients") == ["m1", "m2", "m3"] && ids(&s, "visits") == ["v1", "v2"]
    });
    let before = rows(&m);
    assert_eq!(
        before,
        "m1:Amina:moshi,m2:Baraka J:moshi,m3:Zuhura:moshi|v1:m1:ANC 1,v2:m2:ANC 1"
    );
    assert_eq!(rows(&s), before);
    let site: Vec<u8> = m.call("SELECT outpost_site_id()").unwrap();
    let hex: String = site.iter().map(|b| format!("{b:02x}")).collect();
    let own = format!("{hex}/moshi");
    let top = |d: &DeviceDb| d.json("SELECT outpost_vector()")[&own].clone();
    let own_top = top(&m);
    assert!(own_top.as_u64().unwrap() > 0, "{own_top}");
    let grant = |scopes: &str| {
        let out = Command::new(&built().cloud)
            .args(["grant", "--data"])
            .arg(&cloud.data)
            .args(["--device", &hex[..12], "--scopes", scopes])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    grant("tanga");
    within("the regranted tablet drops its moshi rows", || {
        m.sync();
        ids(&m, "patients").is_empty()
    });
    grant("moshi");
    within(
        "the tablet granted moshi again holds its moshi rows again",
        || {
            m.sync();
            rows(&m) == before
        },
    );
    assert_eq!(
        m.json("SELECT json_extract(outpost_status(), '$.scopes')"),
        serde_json::json!(["moshi"])
    );
    assert_eq!(top(&m), own_top, "no seq of its moshi stream was added");
    assert_eq!(
        m.call::<i64>("SELECT json_extract(outpost_status(), '$.pending_changes')")
            .unwrap(),
        0,
        "what came back is not pending again"
    );
    m.sync();
    s.sync();
    assert_eq!(top(&s), own_top, "the office received nothing more of it");
    assert_eq!(rows(&s), before);
    // Written as any again: the office gets the edit.
    m.exec("UPDATE patients SET name = 'Amina K' WHERE id = 'm1'");
    within("the office gets the regained tablet's edit", || {
        m.sync();
        s.sync();
        s.call::<String>("SELECT name FROM patients WHERE id = 'm1'")
            .unwrap()
            == "Amina K"
    });
}

/// The same regrant behind a hub: the cloud regrants the hub's moshi tablet to tanga; the hub
/// learns it over its uplink and the tablet from the hub. Its unsent moshi write reaches the
/// all-scopes device through the hub and the cloud, then the tablet holds tanga's patients only,
/// and the clinic tablets and the office keep every row. Granted moshi again, it gets its own
/// moshi rows back from the hub.
#[test]
fn a_tablet_behind_a_hub_regranted_to_another_clinic_drains_then_swaps() {
    let p = programme();
    p.moshi
        .exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi'), ('m2', 'Baraka', 'moshi')");
    p.tanga
        .exec("INSERT INTO patients VALUES ('t1', 'Chausiku', 'tanga')");
    within("every patient reaches the office", || {
        for d in [&p.moshi, &p.tanga, &p.office] {
            d.sync();
        }
        ids(&p.office, "patients") == ["m1", "m2", "t1"]
    });
    p.moshi
        .exec("UPDATE patients SET name = 'Baraka J' WHERE id = 'm2'");
    let site: Vec<u8> = p.moshi.call("SELECT outpost_site_id()").unwrap();
    let hex: String = site.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(&built().cloud)
        .args(["grant", "--data"])
        .arg(&p.cloud.data)
        .args(["--device", &hex[..12], "--scopes", "tanga"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    within(
        "the tablet swaps clinics and its last moshi write arrives",
        || {
            for d in [&p.moshi, &p.office] {
                d.sync();
            }
            let name: String = p
                .office
                .call("SELECT name FROM patients WHERE id = 'm2'")
                .unwrap();
            name == "Baraka J" && ids(&p.moshi, "patients") == ["t1"]
        },
    );
    assert_eq!(
        p.moshi
            .json("SELECT json_extract(outpost_status(), '$.scopes')"),
        serde_json::json!(["tanga"])
    );
    std::thread::sleep(Duration::from_secs(1));
    for d in [&p.moshi, &p.tanga, &p.office] {
        d.sync();
    }
    assert_eq!(
        ids(&p.office, "patients"),
        ["m1", "m2", "t1"],
        "nothing deleted"
    );
    assert_eq!(ids(&p.tanga, "patients"), ["t1"]);

    // Granted moshi again: a first sync of moshi through the hub, which serves the tablet its
    // own past moshi batches too (Hello.regain), so it holds what it wrote, as it wrote it.
    let out = Command::new(&built().cloud)
        .args(["grant", "--data"])
        .arg(&p.cloud.data)
        .args(["--device", &hex[..12], "--scopes", "moshi,tanga"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    within(
        "the tablet holds its moshi rows again, from the hub",
        || {
            p.moshi.sync();
            ids(&p.moshi, "patients") == ["m1", "m2", "t1"]
        },
    );
    let name: String = p
        .moshi
        .call("SELECT name FROM patients WHERE id = 'm2'")
        .unwrap();
    assert_eq!(name, "Baraka J");
    assert_eq!(
        p.moshi
            .call::<i64>("SELECT json_extract(outpost_status(), '$.pending_changes')")
            .unwrap(),
        0,
        "what came back is not pending again"
    );
}

#[test]
fn a_referral_moves_the_patient_and_its_visits_to_the_other_clinic_through_the_hub() {
    let p = programme();
    p.moshi.exec(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi');
         INSERT INTO visits VALUES ('v1', 'm1', 'ANC 1');",
    );
    within("the office holds the moshi patient", || {
        p.moshi.sync();
        p.office.sync();
        ids(&p.office, "visits") == ["v1"]
    });
    // The office refers her to tanga: the write travels in moshi's stream; the cloud transfers
    // the row (and its visit) into tanga's, which the hub relays to the tanga tablet.
    p.office
        .exec("UPDATE patients SET clinic = 'tanga', name = 'Amina K' WHERE id = 'm1'");
    within(
        "the tanga tablet receives the referred patient with her visit",
        || {
            for d in [&p.office, &p.tanga, &p.moshi] {
                d.sync();
            }
            ids(&p.tanga, "visits") == ["v1"] && ids(&p.moshi, "patients").is_empty()
        },
    );
    let row: String = p
        .tanga
        .conn
        .query_row(
            "SELECT name || '/' || clinic FROM patients WHERE id = 'm1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(row, "Amina K/tanga", "the row arrives with its cells");
    assert!(
        ids(&p.moshi, "visits").is_empty(),
        "the visit left with her"
    );
    assert_eq!(ids(&p.office, "patients"), ["m1"], "a move deletes nothing");
    // The tanga tablet goes on writing her record; the office sees it.
    p.tanga
        .exec("INSERT INTO visits VALUES ('v2', 'm1', 'ANC 2 at tanga')");
    within("the tanga visit reaches the office", || {
        p.tanga.sync();
        p.office.sync();
        ids(&p.office, "visits") == ["v1", "v2"]
    });
    drop(p.cloud);
}
