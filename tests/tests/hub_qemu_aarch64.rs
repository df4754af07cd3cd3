//! The hub built for the Raspberry Pi's CPU (aarch64, static) syncs real devices: the arm64 image
//! (`hardware/pi/build-aarch64`: Debian's arm64 kernel, busybox, the same `/init` as the x86_64
//! image) booted by `hardware/pi/qemu-boot` under `qemu-system-aarch64 -M virt -cpu cortex-a53`
//! (TCG), the hub's own stack on the virtual NIC (`--net packet:eth0`, DHCP), its sync and
//! status ports forwarded to 127.0.0.1 by QEMU's user-mode networking.
//!
//! Two device databases on the host (`liboutpost.so` loaded into rusqlite, `outpost_enroll` with
//! codes the aarch64 hub printed, `outpost_sync`) each write rows and a counter increment; after
//! pushes and pulls through the hub each holds the other's rows and both increments, and the
//! status page served by the aarch64 hub lists both devices.
//!
//! The test builds the image itself (`hardware/pi/build-aarch64` under `flock
//! target/pi-qemu.lock`, once per test process, so it matches the sources); the `aarch64` stage of
//! `scripts/test` runs after `tests` and finds the build done. Needs the tools
//! `hardware/pi/install-deps` installs: SKIPPED without them, FAILED under CI=true.

mod support;

use outpost_protocol::enroll_code::EnrollCode;
use outpost_testkit::e2e::device_db::DeviceDb;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::*;

/// A real device's table: a counter column, so each device's increment must arrive once.
const SCHEMA: &str = "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, visits INTEGER NOT NULL DEFAULT 0);
SELECT outpost_track('patients', '{\"columns\": {\"visits\": \"counter\"}}');";

/// How long the guest may take from QEMU's start to the hub serving (measured: see docs/hub.md).
const BOOT_WITHIN: Duration = Duration::from_secs(300);

/// ELF `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;

/// True when `test` can build and boot the arm64 image here (what `hardware/pi/stage-aarch64`
/// checks for); otherwise see [`require`].
fn can_boot_aarch64(test: &str) -> bool {
    require(
        test,
        "needs qemu-system-aarch64 (hardware/pi/install-deps)",
        has("qemu-system-aarch64"),
    ) && require(
        test,
        "needs the aarch64 cross toolchain: /usr/bin/cargo (rustc-web), libstd-rust-web-dev:arm64, \
         gcc-aarch64-linux-gnu (hardware/pi/install-deps)",
        Path::new("/usr/bin/cargo").exists()
            && Path::new("/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib").is_dir()
            && has("aarch64-linux-gnu-gcc"),
    ) && require(
        test,
        "needs cpio, file, depmod, e2fsprogs (mkfs.ext4) and dpkg's arm64 architecture \
         (hardware/pi/install-deps)",
        has("cpio")
            && has("file")
            && has("depmod")
            && has("mkfs.ext4")
            && Command::new("dpkg")
                .arg("--print-foreign-architectures")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "arm64")),
    )
}

/// The aarch64 hub and its image (`hardware/pi/build-aarch64`, under a file lock since tests run
/// in parallel processes), built once per test process; the image's directory.
fn image_aarch64() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let root = root();
        std::fs::create_dir_all(root.join("target")).unwrap();
        let t = Instant::now();
        let out = Command::new("flock")
            .arg(root.join("target/pi-qemu.lock"))
            .arg(root.join("hardware/pi/build-aarch64"))
            .env("OUT", root.join("target/pi-qemu"))
            .env_remove("HUB_BIN") // the image must pack the hub built from these sources
            .current_dir(root)
            .output()
            .expect("flock + hardware/pi/build-aarch64");
        assert!(
            out.status.success(),
            "hardware/pi/build-aarch64 failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "hardware/pi/build-aarch64: {:.1}s",
            t.elapsed().as_secs_f64()
        );
        root.join("target/pi-qemu")
    })
}

/// The ELF machine of the file at `path` (`e_machine`, little-endian, at offset 18).
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_eq!(bytes.get(..4), Some(&b"\x7fELF"[..]), "{path:?} is not ELF");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// `outpost_sync()` on `d`, timed; the extension's JSON answer.
fn timed_sync(name: &str, d: &DeviceDb) -> serde_json::Value {
    let t = Instant::now();
    let r = d.sync();
    eprintln!("{name}: sync {:.2}s {r}", t.elapsed().as_secs_f64());
    assert_eq!(r["quarantined"], 0, "{name}: {r}");
    r
}

#[test]
fn two_devices_sync_both_ways_through_the_aarch64_hub_under_qemu() {
    let test = "two_devices_sync_both_ways_through_the_aarch64_hub_under_qemu";
    if !can_boot_aarch64(test) {
        return;
    }
    let t0 = Instant::now();
    let image = image_aarch64();
    // Where build-aarch64 puts the hub it packs (hardware/pi/cross-env.sh).
    let hub = std::env::var_os("CARGO_TARGET_DIR_AARCH64")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/aarch64"))
        .join("aarch64-unknown-linux-gnu/release/outpost-hub");
    assert_eq!(
        elf_machine(&hub),
        EM_AARCH64,
        "{hub:?}: the image must pack the aarch64 hub"
    );
    assert!(image.join("initramfs.cpio.gz").exists());

    let dir = tempfile::tempdir().unwrap();
    let guest = Qemu::boot_with(
        &root().join("hardware/pi/qemu-boot"),
        image_aarch64(),
        &dir.path().join("data.img"),
        2,
        BOOT_WITHIN,
    );
    eprintln!(
        "aarch64 guest: serving after {:.1}s",
        guest.boot.as_secs_f64()
    );
    for c in &guest.codes {
        let code = EnrollCode::decode(c).unwrap();
        assert_eq!(code.addresses, vec![format!("127.0.0.1:{}", guest.port)]);
    }

    let a = DeviceDb::open(&dir.path().join("a.db"), SCHEMA);
    let b = DeviceDb::open(&dir.path().join("b.db"), SCHEMA);
    a.enroll(&guest.codes[0]);
    b.enroll(&guest.codes[1]);
    assert_ne!(site(&a), site(&b));

    // Round 1: new rows on each side.
    a.exec("INSERT INTO patients(id, name) VALUES ('a1', 'Amina'), ('a2', 'Baraka');");
    b.exec("INSERT INTO patients(id, name) VALUES ('b1', 'Chausiku');");
    timed_sync("a push", &a);
    let r = timed_sync("b push+pull", &b);
    assert!(r["applied"].as_u64().unwrap() > 0, "b pulled a's rows: {r}");
    let r = timed_sync("a pull", &a);
    assert!(r["applied"].as_u64().unwrap() > 0, "a pulled b's row: {r}");
    let expected = vec![
        ("a1".to_string(), "Amina".to_string(), 0),
        ("a2".to_string(), "Baraka".to_string(), 0),
        ("b1".to_string(), "Chausiku".to_string(), 0),
    ];
    assert_eq!(rows(&a), expected, "a holds its rows and b's");
    assert_eq!(rows(&b), expected, "b holds its rows and a's");

    // Round 2: both devices count a visit to the same patient; each increment arrives once.
    a.exec("UPDATE patients SET visits = visits + 1 WHERE id = 'b1';");
    b.exec("UPDATE patients SET visits = visits + 1 WHERE id = 'b1';");
    timed_sync("a push", &a);
    timed_sync("b push+pull", &b);
    timed_sync("a pull", &a);
    let after = rows(&a);
    assert_eq!(after, rows(&b), "the devices converged");
    assert_eq!(after[2], ("b1".to_string(), "Chausiku".to_string(), 2));

    let page = page_lists(
        std::net::SocketAddr::from(([127, 0, 0, 1], guest.status_port)),
        &[site(&a), site(&b)],
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert!(page.contains("never"), "last uplink: never\n{page}");
    drop(guest.group);
    eprintln!("total (build included): {:.1}s", t0.elapsed().as_secs_f64());
}
