//! The hub's uplink over its own network stack: the real static hub under QEMU
//! (`hardware/qemu/run --cloud CODE`: TCG, `--net packet:eth0`, address from QEMU's DHCP)
//! relays to a real `outpost-cloud` on the host. The hub dials the cloud on embassy-net (a TCP
//! connection opened on the executor and bridged to the uplink thread); inside the guest the
//! host's loopback is 10.0.2.2 (QEMU user networking), so the cloud's code names
//! `10.0.2.2:PORT`.
//!
//! A device database (`liboutpost.so`) syncs with the QEMU hub, another with the cloud
//! directly; the hub enrolls with the cloud and relays; both devices and the cloud's tenant
//! tables converge, each change applied once, and the hub's disk (read after QEMU is killed)
//! covers exactly what the cloud holds. Needs qemu-system-x86_64 and the image's packages
//! (SKIPPED without them, FAILED under CI=true).
//!
//! The same over `--net tap:` in a network namespace (root): the hub dials the cloud listening
//! on the kernel's side of its TAP, and a device's rows synced through the hub reach the
//! cloud's tables.
//!
//! And a cloud whose tenant is in PostgreSQL (issue 21): a back-office write made with `psql`
//! reaches a tablet through the QEMU hub's uplink (needs the test cluster too).

mod support;

use outpost_protocol::enroll_code::EnrollCode;
use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::mailbox_check::check_mailbox;
use outpost_testkit::e2e::patients;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const TEST: &str = "a_qemu_hub_relays_to_a_cloud_on_the_host_over_its_own_stack";

fn console(group: &Group) -> String {
    group.log.lock().unwrap().join("\n")
}

#[test]
fn a_qemu_hub_relays_to_a_cloud_on_the_host_over_its_own_stack() {
    if !can_boot(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::running(&dir.path().join("cloud"));

    // A device of another clinic, straight to the cloud.
    let far = DeviceDb::patients(&dir.path().join("far.db"));
    assert_eq!(far.enroll(&cloud.code("--device"))["role"], "cloud");
    patients::write(&far.conn, "f", 2);
    far.sync_counted();

    // The hub under QEMU, with the cloud's hub code for the host as the guest sees it.
    let hub_code = cloud.code_naming("--hub", &format!("10.0.2.2:{}", cloud.port));
    assert_eq!(
        EnrollCode::decode(&hub_code).unwrap().addresses,
        vec![format!("10.0.2.2:{}", cloud.port)]
    );
    let disk = dir.path().join("data.img");
    let (port, status_port) = (free_port(), free_port());
    let mut cmd = Command::new(root().join("hardware/qemu/run"));
    cmd.env("IMG", image())
        .args(["--disk", disk.to_str().unwrap()])
        .args(["--port", &port.to_string()])
        .args(["--status-port", &status_port.to_string()])
        .args(["--codes", "1"])
        .args(["--cloud", &hub_code])
        .args(["--uplink-max-ms", "2000"]);
    let t = Instant::now();
    let mut qemu = Group::spawn(cmd);
    let mut codes = Vec::new();
    qemu.wait_for(Duration::from_secs(180), |line| {
        if line.starts_with("outpost:") {
            codes.push(line.to_string());
        }
        line.starts_with("ready: sync").then_some(())
    });
    eprintln!("boot to serving: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(codes.len(), 1, "one device code printed");

    // The hub enrolls with the cloud over its own stack.
    qemu.wait_for(Duration::from_secs(120), |line| {
        line.contains("uplink: enrolled with the cloud")
            .then_some(())
    });
    eprintln!("enrolled with the cloud: {:.1}s", t.elapsed().as_secs_f64());

    // A device of the clinic syncs through the QEMU hub.
    let local = DeviceDb::patients(&dir.path().join("local.db"));
    assert_eq!(local.enroll(&codes[0])["role"], "hub");
    patients::write(&local.conn, "l", 2);
    local.sync_counted();

    // The hub relays (a device's commit wakes the uplink; it polls every 2 s here): keep
    // syncing both devices until they and the cloud's tables hold all four rows.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        local.sync_counted();
        far.sync_counted();
        let rows = local.patient_rows();
        if rows.len() == 4 && far.patient_rows() == rows && cloud.patients() == rows {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: local {rows:?}, far {:?}, cloud {:?}\nconsole:\n{}",
            far.patient_rows(),
            cloud.patients(),
            console(&qemu)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("converged: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(local.vector(), far.vector());
    // 4 rows x 4 changes, each applied once on the device that did not write it.
    assert_eq!(local.applied() + far.applied(), 4 * 4);
    for d in [&local, &far] {
        let r = d.sync_counted();
        assert_eq!(
            (r["pushed"].as_u64(), r["pulled"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
    }
    let log = console(&qemu);
    assert!(
        log.contains("uplink: synced with the cloud: pushed"),
        "the uplink's sessions are logged:\n{log}"
    );

    // The hub's disk holds what the cloud holds (QEMU killed: the mailbox read off the image).
    qemu.kill();
    let hub_v = check_mailbox(&dump_mailbox(&disk, dir.path()));
    let cloud_v = check_mailbox(&cloud.data.join("mailbox.db"));
    assert_eq!(hub_v, cloud_v, "hub and cloud hold the same coverage");
}

#[test]
fn a_tap_hub_in_a_netns_relays_to_a_cloud_over_its_own_stack() {
    let test = "a_tap_hub_in_a_netns_relays_to_a_cloud_over_its_own_stack";
    let Some((ns, tap)) = tap_netns(test, "uplink", "otu") else {
        return;
    };
    let host_ip = Ipv4Addr::new(10, 213, 62, 1);
    let dir = tempfile::tempdir().unwrap();
    // The cloud's data first: its port and code are known before it runs (it can only bind
    // the TAP's address once the hub has created the TAP).
    let port = free_port();
    let mut cloud = Cloud::init_at(&dir.path().join("cloud"), Some(&ns.0), host_ip, port);
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    let net = format!("tap:{tap}");
    // A hub code naming a name is refused on the hub's own stack (it resolves none).
    let named = cloud.code_naming("--hub", "cloud.example:7421");
    let refused = Command::new(hub_bin())
        .args(["run", "--data", d, "--net", &net, "--cloud", &named])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("resolves no names"), "{why}");

    // The cloud listens on the kernel's side of the TAP, which exists once the hub created
    // it; until the cloud runs, the hub's uplink backs off.
    let code = cloud.code("--hub");
    let uplink = [
        "--cloud",
        &code,
        "--uplink-min-ms",
        "100",
        "--uplink-max-ms",
        "1000",
    ];
    let mut extra = vec!["--status-port", "0"];
    extra.extend_from_slice(&uplink);
    let host = format!("{host_ip}/24");
    let (hub, addr) = tap_hub(&ns, &tap, &data, "10.213.62.2/24", &host, &extra);
    cloud.start();
    hub.wait_for(Duration::from_secs(60), |line| {
        line.contains("uplink: enrolled with the cloud")
            .then_some(())
    });

    // A device of the clinic (inside the namespace) syncs through the hub; its rows reach the
    // cloud's tables through the uplink.
    let code = code_for(&data, addr).encode();
    built();
    let db = dir.path().join("local.db");
    let rows = in_netns(&ns.0, move || {
        let local = DeviceDb::patients(&db);
        assert_eq!(local.enroll(&code)["role"], "hub");
        patients::write(&local.conn, "t", 3);
        local.sync_counted();
        local.patient_rows()
    });
    assert_eq!(rows.len(), 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cloud.patients() != rows {
        assert!(
            Instant::now() < deadline,
            "cloud tables {:?}, device {rows:?}\nhub log:\n{}",
            cloud.patients(),
            console(&hub)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 21's acceptance: a back-office write made with `psql` in a cloud's PostgreSQL tenant
/// reaches a device of a clinic through the QEMU hub's uplink (and a device's row reaches the
/// PostgreSQL table the other way).
#[test]
fn a_back_office_write_in_postgres_reaches_a_device_through_a_qemu_hub() {
    const TEST: &str = "a_back_office_write_in_postgres_reaches_a_device_through_a_qemu_hub";
    if !can_boot(TEST) {
        return;
    }
    let Some(db) = outpost_testkit::pg::database("qemu_back_office") else {
        return;
    };
    let psql = |sql: &str| outpost_testkit::pg::psql(&db.url, sql);
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::init_postgres(&dir.path().join("cloud"), &db.url, true);
    cloud.start();

    let hub_code = cloud.code_naming("--hub", &format!("10.0.2.2:{}", cloud.port));
    let disk = dir.path().join("data.img");
    let (port, status_port) = (free_port(), free_port());
    let mut cmd = Command::new(root().join("hardware/qemu/run"));
    cmd.env("IMG", image())
        .args(["--disk", disk.to_str().unwrap()])
        .args(["--port", &port.to_string()])
        .args(["--status-port", &status_port.to_string()])
        .args(["--codes", "1"])
        .args(["--cloud", &hub_code])
        .args(["--uplink-max-ms", "1000"]);
    let mut qemu = Group::spawn(cmd);
    let mut codes = Vec::new();
    qemu.wait_for(Duration::from_secs(180), |line| {
        if line.starts_with("outpost:") {
            codes.push(line.to_string());
        }
        line.starts_with("ready: sync").then_some(())
    });
    qemu.wait_for(Duration::from_secs(120), |line| {
        line.contains("uplink: enrolled with the cloud")
            .then_some(())
    });

    // A tablet of the clinic writes through the hub: its row reaches the PostgreSQL table.
    let tablet = DeviceDb::patients(&dir.path().join("tablet.db"));
    assert_eq!(tablet.enroll(&codes[0])["role"], "hub");
    patients::write(&tablet.conn, "t", 1);
    let reached = |what: &str, mut ok: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within 120 s\nconsole:\n{}",
                console(&qemu)
            );
            tablet.sync_counted();
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    reached(
        "the tablet's row in PostgreSQL",
        Box::new(|| {
            psql("SELECT to_regclass('public.patients') IS NOT NULL") == ["t"]
                && psql("SELECT name FROM public.patients WHERE id = 't0'") == ["nt0"]
        }),
    );

    // The back office writes with psql: a new row and an update of the tablet's.
    psql(
        "BEGIN; \
         INSERT INTO public.patients(id, name, village, visits) VALUES ('office1', 'Neema', 'hq', 0); \
         UPDATE public.patients SET village = 'referred' WHERE id = 't0'; \
         COMMIT;",
    );
    let t = Instant::now();
    reached(
        "the back office's writes on the tablet",
        Box::new(|| {
            tablet.has("patients", "office1")
                && tablet.patient_rows().iter().any(|r| r.contains("referred"))
        }),
    );
    eprintln!(
        "the back office's writes reached the tablet through the QEMU hub in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let tenant = psql(
        "SELECT id || '|' || coalesce(name, '') || '|' || coalesce(village, '') || '|' || visits \
         FROM public.patients ORDER BY id COLLATE \"C\"",
    );
    assert_eq!(patients::rows(&tablet.conn), tenant);
    qemu.kill();
}
