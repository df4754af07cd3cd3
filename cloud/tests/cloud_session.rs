//! A real device database syncing with the running cloud over the session protocol (TCP, Noise
//! IK, the protocol's client session): enrollment with a `--device` code, push of the device's
//! changes into the cloud's real tables, pull of a REST client's change, status, revocation.

mod common;
use common::*;
use outpost_protocol::batch::codec::Limits as BatchLimits;
use outpost_protocol::batch::BatchHeader;
use outpost_protocol::handshake::Purpose;
use outpost_protocol::message::{Covered, ErrorCode, PeerRole};
use outpost_protocol::session::ClientStore;
use outpost_protocol::{SiteId, VersionVector};
use outpost_relay::enroll::EnrollCode;
use outpost_testkit::session::{run, run_as};
use outpost_testkit::Device as MemDevice;
use outpost_testkit::{batch, connect, enroll_token, refused_with, HubInfo, Keyed, SyncError};
use rusqlite::Connection;
use serde_json::json;
use std::collections::VecDeque;

/// An app database with the engine, as the protocol's client store.
struct Engine {
    db: Connection,
    site: SiteId,
}

/// A device: its key and its database.
type Device = Keyed<Engine>;

impl ClientStore for Engine {
    type Error = String;
    type ExportPlan = VecDeque<Vec<u8>>;

    fn vector(&mut self) -> Result<VersionVector, String> {
        let text: String = self
            .db
            .query_row("SELECT outpost_vector()", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let mut v = VersionVector::new();
        for (k, c) in json {
            v.set(k.parse().map_err(|_| "site")?, c.as_u64().ok_or("seq")?);
        }
        Ok(v)
    }
    fn plan_export(&mut self, server: &VersionVector) -> Result<VecDeque<Vec<u8>>, String> {
        let mut since = server.get(&self.site.into());
        let mut out = VecDeque::new();
        loop {
            let b: Option<Vec<u8>> = self
                .db
                .query_row("SELECT outpost_changes(?1, 100000)", [since as i64], |r| {
                    r.get(0)
                })
                .map_err(|e| e.to_string())?;
            // The database has no key file: the device's test key (its handshake key) signs.
            let Some(b) = b.map(outpost_testkit::keys::signed) else {
                break;
            };
            let h = outpost_protocol::batch::codec::decode_header(&b, &BatchLimits::default())
                .map_err(|e| e.to_string())?;
            since = h.range.hi;
            out.push_back(b);
        }
        Ok(out)
    }
    fn next_export(&mut self, plan: &mut VecDeque<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        Ok(plan.pop_front())
    }
    fn acknowledged(&mut self, _covered: &[Covered]) -> Result<(), String> {
        Ok(())
    }
    fn apply_chunk(&mut self, _h: &BatchHeader, b: &[u8]) -> Result<(), String> {
        self.db
            .query_row("SELECT outpost_apply(?1)", [b], |r| r.get::<_, String>(0))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// One sync session (push, then pull); the number of batches pulled.
fn sync(cloud: &HubInfo, dev: &mut Device, session: u64) -> Result<u64, SyncError> {
    let done = run(cloud, dev, session, None)?;
    assert_eq!(
        done.server_role,
        Some(PeerRole::Cloud),
        "the cloud says what it is"
    );
    Ok(done.applied)
}

#[test]
fn a_device_enrolls_pushes_into_real_tables_and_pulls_rest_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, rest) = serving(tmp.path());
    let d = data.to_str().unwrap();

    let code = cli_ok(&["enroll-code", "--data", d, "--device", "--no-qr"]);
    let code = EnrollCode::decode(code.trim()).unwrap();
    let cloud = HubInfo::from_code(&code);

    let db = device(&tmp.path().join("tablet.db"));
    db.execute_batch(
        "CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT NOT NULL, visits INTEGER NOT NULL DEFAULT 0);
         SELECT outpost_track('patients', '{\"columns\": {\"visits\": \"counter\"}}');
         INSERT INTO patients(id, name) VALUES ('p1', 'Asha'), ('p2', 'Bo');
         UPDATE patients SET visits = visits + 1 WHERE id = 'p1';",
    )
    .unwrap();
    let site: Vec<u8> = db
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .unwrap();
    let site = SiteId::from_slice(&site).unwrap();
    let mut dev = Device::with_store(site, Engine { db, site });

    // Not enrolled yet: refused.
    assert!(sync(&cloud, &mut dev, 1).is_err());
    // Waits for the admission, which the cloud commits after the handshake's last message.
    enroll_token(&cloud, &mut dev, code.token);
    // The code is single use.
    let other_site = SiteId([7; 16]);
    let other_db = device(&tmp.path().join("other.db"));
    let mut other = Device::with_store(
        other_site,
        Engine {
            db: other_db,
            site: other_site,
        },
    );
    assert!(connect(&cloud, &mut other, Purpose::Enroll { token: code.token }).is_err());
    assert!(
        connect(&cloud, &mut other, Purpose::Session).is_err(),
        "a device that tried a used code is not admitted"
    );

    // Push: the device's rows land in the cloud's real tables.
    sync(&cloud, &mut dev, 2).unwrap();
    let rows = wait_for("the pushed batch applied", || {
        let has = shell_json(
            &data.join("tenant.db"),
            "SELECT count(*) AS n FROM sqlite_master WHERE name = 'patients'",
        );
        (has == json!([{"n": 1}]))
            .then(|| {
                shell_json(
                    &data.join("tenant.db"),
                    "SELECT id, name, visits FROM patients ORDER BY id",
                )
            })
            .filter(|r| r.as_array().unwrap().len() == 2)
    });
    assert_eq!(
        rows,
        json!([{"id": "p1", "name": "Asha", "visits": 1}, {"id": "p2", "name": "Bo", "visits": 0}])
    );

    // A REST client's change reaches the device in its next session, exactly once.
    let (_, pull) = rest.pull(None);
    let t = pull["timestamp"].as_i64().unwrap();
    let (s, r) = rest.push(
        t,
        &json!({"patients": {"updated": [{"id": "p2", "name": "Bo Li", "visits": 0}], "created": [{"id": "p3", "name": "Chen", "visits": 0}]}}),
    );
    assert_eq!(s, 200, "{r}");
    assert!(sync(&cloud, &mut dev, 3).unwrap() >= 1);
    let names: Vec<String> = dev
        .db
        .prepare("SELECT name FROM patients ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, vec!["Asha", "Bo Li", "Chen"]);
    assert_eq!(
        sync(&cloud, &mut dev, 4).unwrap(),
        0,
        "nothing pulled twice"
    );

    // Status names the device with its kind and last seen.
    let status = wait_for("last seen recorded", || {
        let s: serde_json::Value =
            serde_json::from_str(&cli_ok(&["status", "--data", d, "--json"])).unwrap();
        (!s["peers"][0]["last_seen"].is_null()).then_some(s)
    });
    assert_eq!(status["peers"][0]["kind"], "device", "{status}");
    assert_eq!(status["peers"][0]["site"], dev.site.to_string());

    // The cloud certified the device when it was admitted.
    let identity = outpost_relay::identity::Identity::load_or_create(&data)
        .unwrap()
        .0;
    let mut mailbox = outpost_mailbox::Mailbox::open(data.join("mailbox.db")).unwrap();
    mailbox.set_control_owner(outpost_relay::certify::owner(
        &identity,
        PeerRole::Cloud,
        None,
    ));
    let binding = *mailbox.directory().unwrap().binding(&dev.site).unwrap();
    assert_eq!(
        (binding.key, binding.revoked, binding.certified_by),
        (*dev.keypair.public(), false, identity.site)
    );

    // Revoked: the next session is refused, and the tenant's control stream marks the key.
    cli_ok(&["revoke", "--data", d, &dev.site.to_string()[..8]]);
    assert!(sync(&cloud, &mut dev, 5).is_err());
    let binding = *mailbox.directory().unwrap().binding(&dev.site).unwrap();
    assert!(binding.revoked, "the revocation is an entry");
    assert_eq!(binding.key, *dev.keypair.public());
    drop(run);
}

/// Enrolls `dev` with a fresh `--device` or `--hub` code of the cloud at `data`.
fn enroll_as(data: &str, kind: &str, dev: &mut MemDevice) -> HubInfo {
    let code = cli_ok(&["enroll-code", "--data", data, kind, "--no-qr"]);
    let code = EnrollCode::decode(code.trim()).unwrap();
    let cloud = HubInfo::from_code(&code);
    enroll_token(&cloud, dev, code.token);
    cloud
}

#[test]
fn no_peer_pushes_under_the_clouds_origin_and_only_hubs_relay_others() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _running, _rest) = serving(tmp.path());
    let d = data.to_str().unwrap();
    let cloud_site: SiteId = {
        let s: serde_json::Value =
            serde_json::from_str(&cli_ok(&["status", "--data", d, "--json"])).unwrap();
        s["site"].as_str().unwrap().parse().unwrap()
    };
    let far = 1u64 << 40;

    // A device claims the cloud's own stream far ahead (so that REST and operator writes would
    // never be exported again): refused whole.
    let mut attacker = MemDevice::holding(SiteId([0x20; 16]), vec![batch(cloud_site, 1, far)]);
    let cloud = enroll_as(d, "--device", &mut attacker);
    let message = refused_with(
        run(&cloud, &mut attacker, 1, None).map(|o| o.applied),
        ErrorCode::ForeignOrigin,
    );
    assert!(message.contains("only its own changes"), "{message}");
    // A device relaying another device's batch: refused too.
    let other = SiteId([0x31; 16]);
    let mut relayer = MemDevice::holding(SiteId([0x30; 16]), vec![batch(other, 1, 1)]);
    enroll_as(d, "--device", &mut relayer);
    refused_with(
        run(&cloud, &mut relayer, 1, None).map(|o| o.applied),
        ErrorCode::ForeignOrigin,
    );

    // A hub relays its devices' batches (after its control entry names their key), but never
    // the cloud's own.
    let relayed = SiteId([0x41; 16]);
    let mut hub = MemDevice::holding(
        SiteId([0x40; 16]),
        vec![batch(relayed, 1, 2), batch(cloud_site, 1, far)],
    );
    enroll_as(d, "--hub", &mut hub);
    let hub_key = hub.keypair.clone();
    hub.store.bind_device(&hub_key, 1, relayed);
    let message = refused_with(
        run_as(&cloud, &mut hub, 1, None, PeerRole::Hub).map(|o| o.applied),
        ErrorCode::ForeignOrigin,
    );
    assert!(message.contains("this server's own"), "{message}");
    hub.own.pop();
    // A batch of an origin no control entry names is not taken on the hub's word: the whole
    // push is refused as "retry later", nothing of it stored.
    let unnamed = SiteId([0x42; 16]);
    hub.own.push(batch(unnamed, 1, 1));
    let message = refused_with(
        run_as(&cloud, &mut hub, 2, None, PeerRole::Hub).map(|o| o.applied),
        ErrorCode::KeyUnknown,
    );
    assert!(message.contains("retry later"), "{message}");
    assert!(hub.acked.is_empty(), "nothing of the push acknowledged");
    hub.own.pop();
    run_as(&cloud, &mut hub, 3, None, PeerRole::Hub).unwrap();
    assert_eq!(hub.acked.len(), 1, "the hub's relayed batch is stored");
    // The cloud answered the hub's entry with its own for that device (it beats the hub's).
    assert!(
        !hub.control_received.is_empty(),
        "the cloud's entries reached the hub"
    );

    // The cloud holds exactly the hub's relayed batch: no claim on its own stream or another's.
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(&["status", "--data", d, "--json"])).unwrap();
    let origins = status["mailbox"]["origins"]
        .as_array()
        .expect("origins")
        .clone();
    assert_eq!(origins.len(), 1, "{status}");
    assert_eq!(origins[0]["origin"], relayed.to_string());
    assert_eq!(origins[0]["covered"], 2);
}
