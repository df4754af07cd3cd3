//! Control streams between real boxes (issue 16 item 2): real `outpost-hub` and `outpost-cloud`
//! processes on loopback, device databases with the built `liboutpost.so`, the boxes' mailboxes
//! opened beside them to read their key directories.
//!
//! - a device admitted at one hub gets the hub's entry, which reaches the cloud before the
//!   hub's push; the cloud certifies the device itself, and another hub gets both entries;
//! - the hub's enrolment codes carry the cloud's key;
//! - **the acceptance**: a hub whose `mailbox.db` was given a batch under its device's origin
//!   signed with the hub's own key cannot make the cloud nor another device take it
//!   (`BadSignature`; the device refuses it when it pulls it; the hub then
//!   withholds that origin and its other devices' batches still flow), and a batch of an origin
//!   no entry names is refused as `KeyUnknown` (and then withheld by that hub too).

use outpost_mailbox::Mailbox;
use outpost_protocol::batch::codec;
use outpost_protocol::batch::signature;
use outpost_protocol::batch::Compression;
use outpost_protocol::control::Root;
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::{Keypair, PublicKey};
use outpost_protocol::message::PeerRole;
use outpost_protocol::{SeqRange, SiteId};
use outpost_relay::allowlist::Allowlist;
use outpost_relay::certify;
use outpost_relay::identity::Identity;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::hub::{unix_now, Hub};
use outpost_testkit::e2e::patients;
use outpost_testkit::e2e::scratch::scratch;
use outpost_testkit::wait_for;
use std::path::Path;
use std::time::Duration;

fn uplinked_hub(data: &Path, cloud_code: &str) -> Hub {
    Hub::uplinked(data, cloud_code, 500, &[])
}

/// Waits until an uplink round that started after `since` succeeded with nothing left to push.
fn wait_relayed(hub: &Hub, since: u64) {
    hub.wait_uplink("the uplink to relay", Duration::from_secs(30), |u| {
        u["last_success"].as_u64().is_some_and(|t| t >= since)
            && u["backlog_seqs"].as_u64() == Some(0)
    });
}

fn identity(data: &Path) -> Identity {
    Identity::load_or_create(data).unwrap().0
}

/// A box's mailbox with the key directory it serves from (`cloud`: a hub's pinned cloud).
fn directory_of(data: &Path, role: PeerRole, cloud: Option<&Identity>) -> Mailbox {
    let mut mb = Mailbox::open(data.join("mailbox.db")).unwrap();
    let cloud = cloud.map(|c| Root {
        site: c.site,
        key: *c.public(),
        role: PeerRole::Cloud,
    });
    mb.set_control_owner(certify::owner(&identity(data), role, cloud));
    mb
}

fn site_of(dev: &DeviceDb) -> SiteId {
    SiteId::from_slice(&dev.call::<Vec<u8>>("SELECT outpost_site_id()").unwrap()).unwrap()
}

/// An empty-bodied batch of `origin` covering `lo..=hi`, signed with `key`.
fn signed_batch(origin: SiteId, lo: u64, hi: u64, key: &Keypair) -> Vec<u8> {
    let mut b = codec::encode(
        origin,
        SeqRange::new(lo, hi).unwrap(),
        vec![],
        &[],
        Compression::None,
    );
    signature::sign(&mut b, key).unwrap();
    b
}

#[test]
fn entries_flow_through_hubs_and_cloud_and_a_hub_cannot_forge_its_devices_batches() {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let cloud_id = identity(&cloud.data);
    let hub = uplinked_hub(&dir.path().join("hub"), &cloud.code("--hub"));
    wait_relayed(&hub, 0);
    let hub_id = identity(&hub.data);

    // The hub's codes carry the cloud's key now that its uplink is enrolled.
    let code = EnrollCode::decode(hub.code().trim()).unwrap();
    let anchor = code.cloud.expect("the cloud anchor");
    assert_eq!(anchor.site, cloud_id.site);
    assert_eq!(anchor.key, cloud_id.public().as_bytes().to_vec());

    // A device admitted at the hub: the hub binds it, the cloud certifies it too.
    let a = DeviceDb::patients(&dir.path().join("a.db"));
    a.enroll(&hub.code());
    let a_site = site_of(&a);
    patients::write(&a.conn, "a", 2);
    a.sync_counted();
    let since = unix_now();
    wait_relayed(&hub, since);
    let mut hub_dir = directory_of(&hub.data, PeerRole::Hub, Some(&cloud_id));
    assert_eq!(
        hub_dir.directory().unwrap().binding(&a_site).unwrap().key,
        admitted_key(&hub.data, a_site)
    );
    let mut cloud_dir = directory_of(&cloud.data, PeerRole::Cloud, None);
    let b = wait("the cloud certifies the hub's device", || {
        cloud_dir
            .directory()
            .unwrap()
            .binding(&a_site)
            .copied()
            .filter(|b| b.certified_by == cloud_id.site)
    });
    assert_eq!(b.role, PeerRole::Device);
    assert!(
        cloud_dir.control_vector().unwrap().get(&hub_id.site) >= 1,
        "the hub's own stream reached the cloud"
    );
    wait("A's rows in the cloud", || {
        (cloud.count("patients") == 2).then_some(())
    });

    // Another hub gets the first hub's entries and the cloud's from the cloud.
    let other = uplinked_hub(&dir.path().join("other"), &cloud.code("--hub"));
    wait_relayed(&other, 0);
    let mut other_dir = directory_of(&other.data, PeerRole::Hub, Some(&cloud_id));
    let d = other_dir.directory().unwrap();
    assert!(d.vector().get(&hub_id.site) >= 1, "{:?}", d.vector());
    assert_eq!(d.binding(&a_site).unwrap().certified_by, cloud_id.site);

    // The acceptance. The hub's data directory is given a batch under A's origin, signed with
    // the hub's own key: the cloud refuses it as badly signed, the hub withholds A's origin,
    // and another device's batches still flow.
    let covered = Mailbox::open(hub.data.join("mailbox.db"))
        .unwrap()
        .vector()
        .unwrap()
        .get(&a_site.into());
    let forged = signed_batch(a_site, covered + 1, covered + 1, hub_id.keypair());
    Mailbox::open(hub.data.join("mailbox.db"))
        .unwrap()
        .store(vec![forged])
        .unwrap();
    // Device C, admitted at that hub, pushes its rows (acknowledged), then pulls A's batches from
    // the hub and meets the forged one: it knows A's key from the hub's and the cloud's entries,
    // so it refuses it and applies nothing of it. No device accepts what the hub forged either.
    let c = DeviceDb::patients(&dir.path().join("c.db"));
    c.enroll(&hub.code());
    patients::write(&c.conn, "c", 3);
    let refused = c
        .try_sync()
        .expect_err("C must refuse the forged batch")
        .to_string();
    assert!(
        refused.contains(&a_site.to_string()) && refused.contains("does not verify"),
        "{refused}"
    );
    let c_vector: serde_json::Value = serde_json::from_str(&c.vector()).unwrap();
    assert!(
        c_vector[a_site.to_string()].as_u64().unwrap_or(0) <= covered,
        "C covers none of the forged seqs: {c_vector}"
    );
    c.assert_intact();
    wait("C's rows in the cloud despite the forgery", || {
        (cloud.count("patients") == 5).then_some(())
    });
    let log = hub.log();
    assert!(log.contains("(BadSignature)"), "{log}");
    let status = hub.status();
    let withheld = status["uplink"]["withheld"].as_array().unwrap().clone();
    assert!(
        withheld
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(&a_site.to_string())),
        "{status}"
    );
    let cloud_mb = Mailbox::open(cloud.data.join("mailbox.db")).unwrap();
    assert_eq!(
        cloud_mb.vector().unwrap().get(&a_site.into()),
        covered,
        "the forged batch is not in the cloud"
    );

    // The other hub relays a batch of an origin no entry names: refused as KeyUnknown.
    let unnamed = SiteId([0x5e; 16]);
    let stray = signed_batch(unnamed, 1, 1, &Keypair::from_secret(&[5; 32]).unwrap());
    Mailbox::open(other.data.join("mailbox.db"))
        .unwrap()
        .store(vec![stray])
        .unwrap();
    // (A device's commit wakes the other hub's uplink from its live wait.)
    let e = DeviceDb::patients(&dir.path().join("e.db"));
    e.enroll(&other.code());
    patients::write(&e.conn, "e", 1);
    e.sync_counted();
    wait("the cloud to refuse the unnamed origin", || {
        other.log().contains("(KeyUnknown)").then_some(())
    });
    wait("E's row in the cloud despite the stray batch", || {
        (cloud.count("patients") == 6).then_some(())
    });
    assert_eq!(cloud_mb.vector().unwrap().get(&unnamed.into()), 0);
}

/// The key the hub at `hub` admitted `site` with.
fn admitted_key(hub: &Path, site: SiteId) -> PublicKey {
    Allowlist::open(hub.join("allowlist.db"))
        .unwrap()
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.site == site)
        .expect("the device is admitted")
        .key
}

/// Waits up to 30 s, every 100 ms.
fn wait<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for(what, Duration::from_secs(30), Duration::from_millis(100), f)
}
