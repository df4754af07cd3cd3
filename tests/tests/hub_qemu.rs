//! The real static hub booted under QEMU (`hardware/qemu/run`: TCG, the hub's own stack on the
//! virtual NIC through `--net packet:eth0`, address from QEMU's DHCP, ports forwarded to
//! 127.0.0.1), reached from the host over real TCP.
//!
//! - Devices converge through it: three real device databases (`liboutpost.so` loaded into
//!   rusqlite, `outpost_enroll` / `outpost_sync`) until identical, plus two protocol-level
//!   devices whose pushes and pulls are counted exactly (each batch once); the status page lists
//!   every device.
//! - Power cut: QEMU is SIGKILLed while a device pushes, at seeded moments, and rebooted from the
//!   same disk: every batch the hub acknowledged is on the disk (`Mailbox::check`, each
//!   (origin, seq) once), and the devices resume and converge.
//!
//! What a SIGKILL of QEMU cannot show: the data disk is a host file opened with
//! `cache=writeback`, so writes QEMU already handed to the host kernel survive the kill (they
//! sit in the host's page cache). The cut loses what the guest had not yet submitted to its
//! virtual disk (its own page cache, an unfinished fsync), which is where the hub's ordering
//! (fsync before ack) matters; it does not model a host power loss or a drive that reorders or
//! tears writes. Needs root? No; needs `qemu-system-x86_64` and the packages
//! `hardware/qemu/build` uses (SKIPPED without them, FAILED under CI=true).

mod support;

use outpost_mailbox::Mailbox;
use outpost_protocol::enroll_code::EnrollCode;
use outpost_testkit::e2e::device_db::DeviceDb;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use support::*;

/// A real device's table: a counter column, so each increment must arrive once.
const SCHEMA: &str = "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, visits INTEGER NOT NULL DEFAULT 0);
SELECT outpost_track('patients', '{\"columns\": {\"visits\": \"counter\"}}');";

#[test]
fn devices_converge_through_the_hub_under_qemu_and_the_page_lists_them() {
    if !can_boot("devices_converge_through_the_hub_under_qemu_and_the_page_lists_them") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let q = Qemu::boot(&dir.path().join("data.img"), 5);
    eprintln!("boot to serving: {:.1}s", q.boot.as_secs_f64());
    let codes: Vec<EnrollCode> = q
        .codes
        .iter()
        .map(|c| EnrollCode::decode(c).unwrap())
        .collect();
    for c in &codes {
        assert_eq!(c.addresses, vec![format!("127.0.0.1:{}", q.port)]);
    }

    // Protocol-level devices: exact counts.
    let (mut a, mut b) = (Device::new(0xa3), Device::new(0xb3));
    enroll(&codes[0], &mut a);
    enroll(&codes[1], &mut b);
    exchange(&HubInfo::from_code(&codes[0]), &mut a, &mut b);

    // Real device databases through the extension.
    let real: Vec<DeviceDb> = (0..3)
        .map(|i| DeviceDb::open(&dir.path().join(format!("dev{i}.db")), SCHEMA))
        .collect();
    for (d, code) in real.iter().zip(&q.codes[2..]) {
        d.enroll(code);
    }
    for (i, d) in real.iter().enumerate() {
        d.exec(&format!(
            "INSERT INTO patients(id, name) VALUES ('p{i}', 'n{i}'), ('q{i}', 'm{i}');
             UPDATE patients SET visits = visits + 1 WHERE id = 'p{i}';"
        ));
    }
    for _round in 0..2 {
        for d in &real {
            d.sync();
        }
    }
    let first = rows(&real[0]);
    assert_eq!(first.len(), 6);
    for d in &real {
        assert_eq!(rows(d), first, "device databases identical");
    }

    let mut sites = vec![a.site.to_string(), b.site.to_string()];
    sites.extend(real.iter().map(site));
    let page = page_lists(
        std::net::SocketAddr::from(([127, 0, 0, 1], q.status_port)),
        &sites,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert!(page.contains("never"), "last uplink: never\n{page}");
}

#[test]
fn acknowledged_batches_survive_power_cuts_of_the_qemu_hub() {
    if !can_boot("acknowledged_batches_survive_power_cuts_of_the_qemu_hub") {
        return;
    }
    let seed = outpost_testkit::env::seed();
    let cuts: usize = outpost_testkit::env::number("OUTPOST_POWER_CUTS", 2);
    eprintln!("{cuts} power cuts");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("data.img");
    let mut q = Qemu::boot(&disk, 2);
    let codes: Vec<EnrollCode> = q
        .codes
        .iter()
        .map(|c| EnrollCode::decode(c).unwrap())
        .collect();
    let (mut a, mut b) = (Device::new(0xa4), Device::new(0xb4));
    enroll(&codes[0], &mut a);
    enroll(&codes[1], &mut b);
    let mut session = 0u64;
    for cut in 0..cuts {
        let hub = HubInfo {
            addr: q.addr(),
            ..HubInfo::from_code(&codes[0])
        };
        let after = Duration::from_millis(rng.gen_range(300..4000));
        let per_session = rng.gen_range(1..6u64);
        // Push in a loop on a thread; cut the power at the seeded moment.
        let pusher = std::thread::spawn(move || loop {
            a.write(per_session);
            session += 1;
            if let Err(e) = sync(&hub, &mut a, session) {
                return (a, session, format!("{e:?}"));
            }
        });
        std::thread::sleep(after);
        q.group.kill();
        let (back, s, error) = pusher.join().unwrap();
        (a, session) = (back, s);
        let acked = a.acked_up_to();
        eprintln!(
            "cut {cut}: after {after:?}, {} written, {acked} acknowledged; the push saw {error}",
            a.written
        );

        // On the disk: everything acknowledged, each seq once, a consistent file.
        let mailbox = Mailbox::open(dump_mailbox(&disk, dir.path())).unwrap();
        mailbox.check().unwrap();
        let held = mailbox.vector().unwrap().get(&a.site.into());
        assert!(
            held >= acked && held <= a.written,
            "cut {cut} (seed {seed}): the disk holds 1..={held} of a, the hub acknowledged 1..={acked}"
        );
        let status = mailbox.status().unwrap();
        for o in &status.origins {
            assert_eq!(
                (o.batches, o.highest),
                (o.covered, o.covered),
                "cut {cut} (seed {seed}): each (origin, seq) once, no gap"
            );
        }
        drop(mailbox);

        let t = Instant::now();
        q = Qemu::boot(&disk, 0);
        eprintln!(
            "reboot {cut}: serving after {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }

    // Resume: a pushes what the hub lacks, b pulls everything, each seq once.
    let hub = HubInfo {
        addr: q.addr(),
        ..HubInfo::from_code(&codes[0])
    };
    session += 1;
    sync(&hub, &mut a, session).expect("a resumes");
    // Held: acknowledged by this push, or already covered in the hub's hello (a push the hub
    // made durable just before a cut, whose ack never reached the device).
    assert_eq!(
        a.acked_up_to().max(a.peer_had),
        a.written,
        "the hub holds all of a after resuming"
    );
    sync(&hub, &mut b, 1).expect("b pulls");
    assert_eq!(
        b.applied_seqs(a.site),
        (1..=a.written).collect::<Vec<_>>(),
        "b applied each of a's seqs once (seed {seed})"
    );
}
