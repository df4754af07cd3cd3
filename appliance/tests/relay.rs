//! Devices syncing through the hub over real TCP: the protocol's own initiator and client
//! session on the device side (with an in-memory device store), the real hub (allowlist, Noise
//! responder, server session, SQLite mailbox) on the other. Checks convergence through the hub,
//! exactly-once delivery, own batches never returned, and durability across a hub restart.

mod std_hub;

use outpost_protocol::handshake::Purpose;
use outpost_protocol::id_range::{IdRequest, RequestId, MAX_ID_BLOCK};
use outpost_protocol::message::ErrorCode;
use outpost_protocol::message::{Message, PeerRole, SessionId};
use outpost_protocol::SeqRange;
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use outpost_testkit::{batch, connect, live_until, refused_with, sync, sync_cut, Device, HubInfo};
use std::io::{Read, Write};
use std::time::Duration;
use std_hub::{enroll, info, start_hub};

#[test]
fn three_devices_converge_through_the_hub_and_get_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    let hub = info(addr, &h);
    let mut devs = [Device::new(0xa1), Device::new(0xb2), Device::new(0xc3)];
    for (i, d) in devs.iter_mut().enumerate() {
        enroll(&hub, &h, d);
        d.write_range(1, 2);
        d.write_range(3, 3 + i as u64);
    }
    for round in 1..=2u8 {
        for (i, d) in devs.iter_mut().enumerate() {
            sync(&hub, d, u64::from(round) * 10 + i as u64).unwrap();
        }
    }
    let sites: Vec<SiteId> = devs.iter().map(|d| d.site).collect();
    for d in &devs {
        // Everyone holds everyone's changes...
        for (i, s) in sites.iter().enumerate() {
            assert_eq!(
                d.vector.get(&s.into()),
                3 + i as u64,
                "{:?} lacks {s}",
                d.site
            );
        }
        // ...got each other batch exactly once, and never its own.
        assert_eq!(d.applied.len(), 4, "{:?}", d.applied);
        assert!(d.applied.iter().all(|(o, _)| *o != d.site));
        let mut seen = d.applied.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4);
        // The hub acknowledged exactly its own pushes.
        assert_eq!(d.acked.len(), 2);
        assert!(d.acked.iter().all(|c| c.origin == d.site));
    }
    let mb = h.dir().mailbox().unwrap();
    mb.check().unwrap();
    assert_eq!(mb.status().unwrap().batches, 6);
}

#[test]
fn a_pull_cut_midway_resumes_without_resending_and_the_hub_keeps_everything_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let (addr, h) = start_hub(&data);
    let hub = info(addr, &h);
    let mut a = Device::new(1);
    let mut b = Device::new(2);
    enroll(&hub, &h, &mut a);
    enroll(&hub, &h, &mut b);
    for lo in (1..=20).step_by(2) {
        a.write_range(lo, lo + 1);
    }
    sync(&hub, &mut a, 1).unwrap();
    // B's pull is cut after 3 of A's 10 batches, then resumes.
    sync_cut(&hub, &mut b, 2, 3).unwrap();
    assert_eq!(b.applied.len(), 3);
    sync(&hub, &mut b, 3).unwrap();
    assert_eq!(b.applied.len(), 10);
    assert_eq!(b.vector.get(&a.site.into()), 20);

    // A second hub process on the same data directory (the first one's threads still run, as
    // after a restart nothing is lost: every acknowledged batch is in the file).
    let (addr2, h2) = start_hub(&data);
    let hub2 = info(addr2, &h2);
    assert_eq!(hub2.key, hub.key);
    let mut c = Device::new(3);
    enroll(&hub2, &h2, &mut c);
    sync(&hub2, &mut c, 4).unwrap();
    assert_eq!(c.vector.get(&a.site.into()), 20);
    assert_eq!(c.applied.len(), 10);
}

/// Sends `msgs` on a fresh session connection and returns every message the hub answered
/// until it has answered the last one (or closed).
fn exchange(hub: &HubInfo, dev: &mut Device, msgs: &[Message], answers: usize) -> Vec<Message> {
    let mut all = vec![hello(dev, msgs_session(msgs))];
    all.extend_from_slice(msgs);
    let (mut ch, mut s) = connect(hub, dev, Purpose::Session).unwrap();
    for m in &all {
        ch.send(&m.encode()).unwrap();
    }
    s.write_all(&ch.take_outgoing()).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < answers {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut input = &buf[..n];
        while let Some(bytes) = ch.receive(&mut input, 2).unwrap() {
            match Message::decode(&bytes, usize::MAX).unwrap() {
                // The hub's control entries follow its hello: not an answer to count.
                Message::Control { .. } => {}
                m => got.push(m),
            }
        }
    }
    got
}

fn msgs_session(msgs: &[Message]) -> SessionId {
    msgs.iter()
        .find_map(|m| match m {
            Message::Push { session, .. } | Message::Commit { session } => Some(*session),
            _ => None,
        })
        .unwrap_or_default()
}

fn hello(dev: &Device, session: SessionId) -> Message {
    Message::Hello(outpost_protocol::message::Hello {
        protocol_version: PROTOCOL_VERSION,
        site: dev.site,
        role: PeerRole::Device,
        fingerprint: [9; 32],
        wall_clock_ms: 1_800_000_000_000,
        vector: dev.vector.clone(),
        session,
        control: outpost_protocol::ControlVector::new(),
        drains: Vec::new(),
        regain: Vec::new(),
        keys: Vec::new(),
    })
}

#[test]
fn a_retried_commit_gets_the_same_ack_and_different_content_must_push_again() {
    use outpost_protocol::message::{Bytes, PushAgainReason};
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    let hub = info(addr, &h);
    let mut a = Device::new(1);
    enroll(&hub, &h, &mut a);
    let sid = SessionId([7; 16]);
    let b1 = batch(a.site, 1, 3);
    let push = |b: &Vec<u8>| Message::Push {
        session: sid,
        batch: Bytes(b.clone()),
    };
    let commit = Message::Commit { session: sid };
    let first = exchange(&hub, &mut a, &[push(&b1), commit.clone()], 2);
    assert!(matches!(first[1], Message::Ack { .. }), "{first:?}");
    // The ack was lost; the device retries the same push under the same session id.
    let again = exchange(&hub, &mut a, &[push(&b1), commit.clone()], 2);
    assert_eq!(again[1], first[1]);
    assert_eq!(h.dir().mailbox().unwrap().status().unwrap().batches, 1);
    // Other content under that session id is never acknowledged.
    let other = batch(a.site, 1, 4);
    let diff = exchange(&hub, &mut a, &[push(&other), commit.clone()], 2);
    assert_eq!(
        diff[1],
        Message::PushAgain {
            session: sid,
            reason: PushAgainReason::DifferentContent
        }
    );
    // A commit with nothing pushed on this connection: unknown session.
    let unknown = exchange(&hub, &mut a, &[commit], 2);
    assert_eq!(
        unknown[1],
        Message::PushAgain {
            session: sid,
            reason: PushAgainReason::UnknownSession
        }
    );
    assert_eq!(h.dir().mailbox().unwrap().status().unwrap().batches, 1);
}

#[test]
fn a_corrupted_batch_is_refused_with_an_error_and_nothing_is_stored() {
    use outpost_protocol::message::Bytes;
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    let hub = info(addr, &h);
    let mut a = Device::new(1);
    enroll(&hub, &h, &mut a);
    let sid = SessionId([3; 16]);
    let mut bad = batch(a.site, 1, 1);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let got = exchange(
        &hub,
        &mut a,
        &[
            Message::Push {
                session: sid,
                batch: Bytes(bad),
            },
            Message::Commit { session: sid },
        ],
        2,
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        matches!(
            &got[1],
            Message::Error {
                code: ErrorCode::BadBatch,
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(h.dir().mailbox().unwrap().status().unwrap().batches, 0);
}

#[test]
fn a_device_in_live_mode_is_notified_of_another_devices_push_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    let hub = info(addr, &h);
    let mut a = Device::new(1);
    let mut b = Device::new(2);
    enroll(&hub, &h, &mut a);
    enroll(&hub, &h, &mut b);
    let b_site = b.site;
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            live_until(&hub, &mut a, 1, Duration::from_secs(10), |d| {
                d.vector.get(&b_site.into()) == 2
            })
        });
        // Let A finish its first (empty) pull and go idle, then B pushes.
        std::thread::sleep(Duration::from_millis(500));
        b.write_range(1, 2);
        let pushed = std::time::Instant::now();
        sync(&hub, &mut b, 2).unwrap();
        let (got, notifies) = watcher.join().unwrap();
        assert!(got, "A never received B's change");
        assert!(notifies >= 1);
        assert!(
            pushed.elapsed() < Duration::from_secs(2),
            "took {:?}",
            pushed.elapsed()
        );
    });
    assert_eq!(
        a.applied,
        vec![(b.site, outpost_protocol::SeqRange::new(1, 2).unwrap())]
    );
}

#[test]
fn a_device_cannot_push_under_another_devices_origin_nor_lock_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    let hub = info(addr, &h);
    let mut b = Device::new(0xb0);
    enroll(&hub, &h, &mut b);
    b.write_range(1, 1);
    sync(&hub, &mut b, 1).unwrap();
    // An enrolled tablet pushes an empty claim on B's next seq, and one on everything after.
    let forged = [batch(b.site, 2, 2), batch(b.site, 3, 1 << 40)];
    for (n, claim) in forged.into_iter().enumerate() {
        let mut attacker = Device::holding(SiteId([0xe0 + n as u8; 16]), vec![claim]);
        enroll(&hub, &h, &mut attacker);
        let message = refused_with(
            sync(&hub, &mut attacker, 10 + n as u64),
            ErrorCode::ForeignOrigin,
        );
        assert!(message.contains("only its own changes"), "{message}");
    }
    // Nothing of either push was stored...
    let mb = h.dir().mailbox().unwrap();
    mb.check().unwrap();
    assert_eq!(mb.status().unwrap().batches, 1);
    // ...so B's next real change is pushed, acknowledged and reaches another device.
    b.write_range(2, 2);
    sync(&hub, &mut b, 2).unwrap();
    assert_eq!(b.acked.last().unwrap().range, SeqRange::new(2, 2).unwrap());
    let mut c = Device::new(0xc0);
    enroll(&hub, &h, &mut c);
    sync(&hub, &mut c, 1).unwrap();
    assert_eq!(c.applied_seqs(b.site), vec![1, 2]);
}

#[test]
fn a_device_asking_for_a_million_ids_again_and_again_gets_one_million_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    let hub = info(addr, &h);
    let mut greedy = Device::new(0x91);
    enroll(&hub, &h, &mut greedy);
    greedy.pending = (1..=3u8)
        .map(|n| IdRequest {
            request: RequestId([n; 16]),
            sequence: "patients".into(),
            count: MAX_ID_BLOCK,
            above: 0,
        })
        .collect();
    sync(&hub, &mut greedy, 1).unwrap();
    sync(&hub, &mut greedy, 2).unwrap();
    assert_eq!(greedy.blocks.len(), 1, "{:?}", greedy.blocks);
    assert_eq!(greedy.pending.len(), 2, "the rest wait for the next period");
    let status = h.dir().mailbox().unwrap().id_status().unwrap();
    assert_eq!(
        status[0].over_quota, 4,
        "two refused requests, asked in two syncs"
    );
    // Another device is served as usual.
    let mut other = Device::new(0x92);
    enroll(&hub, &h, &mut other);
    other.pending = vec![IdRequest {
        request: RequestId([1; 16]),
        sequence: "patients".into(),
        count: 100,
        above: 0,
    }];
    sync(&hub, &mut other, 1).unwrap();
    assert_eq!(other.blocks.len(), 1);
}

/// Scopes at a real hub (docs/design.md section 10): a device granted `moshi` is served the
/// unscoped stream and moshi's, never tanga's; its push holding a tanga batch is refused whole
/// with `ScopeRefused` and nothing of it is stored; a device granted `*` gets every stream.
#[test]
fn a_hub_serves_and_takes_only_the_streams_of_a_devices_grant() {
    use outpost_protocol::scope::Scopes;
    use outpost_protocol::StreamId;
    use outpost_relay::allowlist::PeerGrant;
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    let hub = info(addr, &h);
    let moshi = PeerGrant {
        scopes: Scopes::parse(["moshi"]).unwrap(),
        enroll: false,
    };
    let mut all = Device::new(0xa1);
    let mut clinic = Device::new(0xb2);
    std_hub::enroll(&hub, &h, &mut all);
    std_hub::enroll_granted(&hub, &h, &mut clinic, &moshi);
    all.write_range(1, 1);
    all.write_scoped("moshi", 1, 2);
    all.write_scoped("tanga", 1, 3);
    sync(&hub, &mut all, 1).unwrap();
    sync(&hub, &mut clinic, 2).unwrap();
    let a = all.site;
    assert_eq!(clinic.vector.get(&a.into()), 1);
    assert_eq!(clinic.vector.get(&StreamId::new(a, "moshi")), 2);
    assert_eq!(
        clinic.vector.get(&StreamId::new(a, "tanga")),
        0,
        "a moshi tablet is never served tanga"
    );
    assert_eq!(clinic.applied.len(), 2);

    // Its own write in a scope it does not hold: the whole push is refused, nothing stored.
    clinic.write_scoped("moshi", 1, 1);
    clinic.write_scoped("tanga", 1, 1);
    let why = refused_with(sync(&hub, &mut clinic, 3), ErrorCode::ScopeRefused);
    assert!(why.contains("'tanga'"), "{why}");
    let mb = h.dir().mailbox().unwrap();
    assert!(
        mb.status()
            .unwrap()
            .origins
            .iter()
            .all(|o| o.origin != clinic.site),
        "nothing of the refused push is held"
    );
    mb.check().unwrap();

    // A device granted every scope is served every stream.
    let mut other = Device::new(0xc3);
    std_hub::enroll(&hub, &h, &mut other);
    sync(&hub, &mut other, 4).unwrap();
    assert_eq!(other.vector.get(&StreamId::new(a, "tanga")), 3);
}

/// A regrant reaches a live session (docs/design.md section 10, "Grants"): a connected device
/// whose grant widens is told to pull and is served the new scope's streams without
/// reconnecting.
#[test]
fn a_widened_grant_is_served_in_the_live_session() {
    use outpost_protocol::scope::Scopes;
    use outpost_protocol::StreamId;
    use outpost_relay::allowlist::PeerGrant;
    let dir = tempfile::tempdir().unwrap();
    let (addr, h) = start_hub(&dir.path().join("hub"));
    h.serving()
        .watch_control(Duration::from_millis(100))
        .unwrap();
    let hub = info(addr, &h);
    let mut all = Device::new(0xa1);
    let mut clinic = Device::new(0xb2);
    std_hub::enroll(&hub, &h, &mut all);
    let moshi = Scopes::parse(["moshi"]).unwrap();
    std_hub::enroll_granted(
        &hub,
        &h,
        &mut clinic,
        &PeerGrant {
            scopes: moshi,
            enroll: false,
        },
    );
    all.write_scoped("moshi", 1, 1);
    all.write_scoped("tanga", 1, 2);
    sync(&hub, &mut all, 1).unwrap();
    let tanga = StreamId::new(all.site, "tanga");
    let site = clinic.site;
    let regrant = std::thread::spawn({
        let serving = h.serving().clone();
        move || {
            std::thread::sleep(Duration::from_millis(500));
            let both = Scopes::parse(["moshi", "tanga"]).unwrap();
            serving
                .mailbox()
                .unwrap()
                .grant_scopes(site, &both, false)
                .unwrap()
                .expect("a new grant version");
        }
    });
    let (done, notifies) = live_until(&hub, &mut clinic, 2, Duration::from_secs(10), |d| {
        d.vector.get(&tanga) == 2
    });
    regrant.join().unwrap();
    assert!(done, "the live session served the new scope");
    assert!(notifies >= 1, "the device was told to pull");
    assert_eq!(clinic.vector.get(&StreamId::new(all.site, "moshi")), 1);
}
