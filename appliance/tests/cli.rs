//! The `outpost-hub` binary from the outside: the command names, outputs and errors are contracts.

use outpost_protocol::handshake::{Keypair, PublicKey};
use outpost_protocol::SiteId;
use outpost_relay::allowlist::{token_id, Allowlist};
use outpost_relay::enroll::EnrollCode;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// A device's public key (the allowlist admits only real P-256 points).
fn device_key(n: u8) -> PublicKey {
    *Keypair::from_secret(&[n; 32]).unwrap().public()
}

fn hub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost-hub"))
        .args(args)
        .output()
        .expect("run outpost-hub")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("valid JSON on stdout")
}

fn code_of(out: &Output) -> EnrollCode {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("outpost:"))
        .expect("an outpost: line");
    assert_eq!(line.split_whitespace().count(), 1);
    EnrollCode::decode(line).expect("the printed code decodes")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn enroll_code_prints_a_decodable_single_use_code_pinning_the_hubs_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    let out = hub(&["enroll-code", "--data", d, "--address", "10.1.2.3:7420"]);
    let code = code_of(&out);
    assert_eq!(code.addresses, vec!["10.1.2.3:7420".to_string()]);
    assert!(code.expires_at > now() + 800 && code.expires_at <= now() + 901);
    // The QR code follows the line by default.
    assert!(text(&out.stdout).lines().count() > 20);

    let status = json(&hub(&["status", "--data", d, "--json"]));
    assert_eq!(
        status["key"],
        PublicKey::from_sec1(&code.hub_key).unwrap().fingerprint()
    );
    assert_eq!(status["site"], code.hub_site.to_string());

    // Every call issues a fresh token; each is single use.
    let again = code_of(&hub(&[
        "enroll-code",
        "--data",
        d,
        "--address",
        "10.1.2.3:7420",
        "--no-qr",
    ]));
    assert_ne!(again.token, code.token);
    assert_eq!(again.hub_key, code.hub_key);
    let mut allow = Allowlist::open(data.join("allowlist.db")).unwrap();
    allow
        .admit(
            &token_id(&code.token),
            &device_key(4),
            SiteId([1; 16]),
            now(),
        )
        .unwrap();
    assert!(allow
        .admit(
            &token_id(&code.token),
            &device_key(5),
            SiteId([2; 16]),
            now()
        )
        .is_err());
}

#[test]
fn first_use_creates_a_private_key_only_the_owner_can_read_and_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let out = hub(&["status", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_file = data.join("identity.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let private: String = std::fs::read(&key_file)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for o in [
        &out,
        &hub(&["status", "--data", data.to_str().unwrap(), "--json"]),
    ] {
        let all = text(&o.stdout) + &text(&o.stderr);
        assert!(
            !all.contains(&private[..16]),
            "private key material printed"
        );
    }
    for f in ["site-id", "mailbox.db", "allowlist.db"] {
        assert!(Path::new(&data.join(f)).exists(), "{f} missing");
    }
}

#[test]
fn enroll_code_without_any_known_address_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = hub(&[
        "enroll-code",
        "--data",
        dir.path().join("hub").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--address") && err.contains("run"), "{err}");
    assert!(!text(&out.stdout).contains("outpost:"));
    let out = hub(&[
        "enroll-code",
        "--data",
        dir.path().join("hub").to_str().unwrap(),
        "--address",
        "no-port",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("HOST:PORT"));
}

#[test]
fn devices_and_revoke_show_and_change_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    assert_eq!(
        json(&hub(&["devices", "--data", d, "--json"])),
        serde_json::json!([])
    );
    let code = code_of(&hub(&[
        "enroll-code",
        "--data",
        d,
        "--address",
        "h:1",
        "--no-qr",
    ]));
    let site = SiteId([0x3c; 16]);
    Allowlist::open(data.join("allowlist.db"))
        .unwrap()
        .admit(&token_id(&code.token), &device_key(4), site, now())
        .unwrap();
    let list = json(&hub(&["devices", "--data", d, "--json"]));
    assert_eq!(list[0]["site"], site.to_string());
    assert_eq!(list[0]["revoked_at"], serde_json::Value::Null);

    let out = hub(&["revoke", "--data", d, "3c3c3c3c"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&site.to_string()));
    let list = json(&hub(&["devices", "--data", d, "--json"]));
    assert!(list[0]["revoked_at"].as_u64().is_some());
    let status = json(&hub(&["status", "--data", d, "--json"]));
    let devices = status["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0]["revoked_at"].as_u64().is_some());
    // The revocation is in the hub's control stream: its key stays, marked revoked.
    let identity = outpost_relay::identity::Identity::load_or_create(&data)
        .unwrap()
        .0;
    let mut mailbox = outpost_mailbox::Mailbox::open(data.join("mailbox.db")).unwrap();
    mailbox.set_control_owner(outpost_relay::certify::owner(
        &identity,
        outpost_protocol::message::PeerRole::Hub,
        None,
    ));
    let binding = *mailbox.directory().unwrap().binding(&site).unwrap();
    assert!(binding.revoked);
    assert_eq!(binding.key, device_key(4));

    let out = hub(&["revoke", "--data", d, "ffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no enrolled device"));
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("hub");
    let d = d.to_str().unwrap();
    for (args, expect) in [
        (vec!["frobnicate"], "unknown command"),
        (vec!["status"], "--data"),
        (vec!["run", "--data", d], "--net"),
        (
            vec!["run", "--data", d, "--net", "udp:eth0"],
            "packet:IFACE or tap:IFACE",
        ),
        (
            vec!["run", "--data", d, "--net", "std:nonsense"],
            "ADDR[:PORT]",
        ),
        (
            vec![
                "run",
                "--data",
                d,
                "--net",
                "std:127.0.0.1:0",
                "--ip",
                "10.0.0.2/24",
            ],
            "packet:/tap: only",
        ),
        (
            vec![
                "run",
                "--data",
                d,
                "--net",
                "packet:eth0",
                "--ip",
                "10.0.0.2",
            ],
            "ADDRESS/PREFIX",
        ),
        (
            vec![
                "run",
                "--data",
                d,
                "--net",
                "std:127.0.0.1:0",
                "--uplink-live-seconds",
                "-1",
            ],
            "seconds from 0 (off) to 86400",
        ),
        (vec!["status", "--data", d, "--bogus"], "unknown option"),
    ] {
        let out = hub(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(expect),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_hub_listening_on_all_interfaces_advertises_this_machines_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    assert!(hub(&["status", "--data", d]).status.success());
    Allowlist::open(data.join("allowlist.db"))
        .unwrap()
        .set_setting(outpost_hub::datadir::LAST_NET, "0.0.0.0:7420")
        .unwrap();
    let expected: Vec<String> = outpost_hub::interfaces::non_loopback_addresses()
        .into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, 7420).to_string())
        .collect();
    let out = hub(&["enroll-code", "--data", d, "--no-qr"]);
    if expected.is_empty() {
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("--address"));
    } else {
        let code = code_of(&out);
        assert_eq!(code.addresses, expected);
        assert!(code
            .addresses
            .iter()
            .all(|a| !a.starts_with("127.") && !a.starts_with("0.0.0.0")));
    }
    // An explicit --address always wins.
    let code = code_of(&hub(&[
        "enroll-code",
        "--data",
        d,
        "--no-qr",
        "--address",
        "hub.clinic.lan:7420",
    ]));
    assert_eq!(code.addresses, vec!["hub.clinic.lan:7420".to_string()]);
}

/// The time bound's figures (docs/design.md section 10, "Time"): the highest clock of any batch
/// the hub holds, as a date, and the device pushes it refused as stamped too far ahead.
#[test]
fn status_shows_the_highest_clock_admitted_and_the_clock_ahead_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    assert!(
        hub(&["enroll-code", "--data", d, "--address", "h:1", "--no-qr"])
            .status
            .success()
    );
    let status = json(&hub(&["status", "--data", d, "--json"]));
    assert_eq!(status["highest_admitted"], serde_json::Value::Null);
    assert_eq!(status["clock_ahead_refused"], 0);

    let mut mailbox = outpost_mailbox::Mailbox::open(data.join("mailbox.db")).unwrap();
    // 1_800_000_000_000 ms is 2027-01-15T08:00:00Z.
    let stamped = outpost_protocol::Hlc::new(1_800_000_000_000, 0);
    mailbox
        .store(vec![outpost_testkit::batch::text_rows(
            SiteId([5; 16]),
            1,
            1,
            "t",
            "v",
            [(1, stamped, "x".to_string())],
        )])
        .unwrap();
    mailbox.note_clock_ahead_refused().unwrap();
    let status = json(&hub(&["status", "--data", d, "--json"]));
    assert_eq!(status["highest_admitted"], "2027-01-15T08:00:00Z");
    assert_eq!(status["clock_ahead_refused"], 1);
    let out = text(&hub(&["status", "--data", d]).stdout);
    assert!(
        out.contains("clocks      highest admitted 2027-01-15T08:00:00Z  refused ahead 1"),
        "{out}"
    );
}

/// A stored batch found damaged when served (a bit flipped on the SD card) is counted in
/// `status`, JSON and text, once it was removed.
#[test]
fn status_counts_the_damaged_batches_removed_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    assert!(
        hub(&["enroll-code", "--data", d, "--address", "h:1", "--no-qr"])
            .status
            .success()
    );
    assert_eq!(json(&hub(&["status", "--data", d, "--json"]))["damaged"], 0);
    let origin = SiteId([5; 16]);
    let path = data.join("mailbox.db");
    let mut mailbox = outpost_mailbox::Mailbox::open(&path).unwrap();
    let row = |n: u64| (n as i64, outpost_protocol::Hlc::new(n, 0), format!("v{n}"));
    mailbox
        .store(vec![
            outpost_testkit::batch::text_rows(origin, 1, 1, "t", "v", [row(1)]),
            outpost_testkit::batch::text_rows(origin, 2, 2, "t", "v", [row(2)]),
        ])
        .unwrap();
    // One bit of the last body byte of batch 2, flipped through a connection of its own.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut bytes: Vec<u8> = conn
        .query_row("SELECT bytes FROM batches WHERE lo = 2", [], |r| r.get(0))
        .unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    conn.execute("UPDATE batches SET bytes = ?1 WHERE lo = 2", [bytes])
        .unwrap();
    // This process stored it (verified when staged): as a minute passing does, check again.
    outpost_mailbox::Mailbox::forget_checked();
    let served = mailbox
        .batches_for(
            &outpost_protocol::VersionVector::new(),
            None,
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap()
        .count();
    assert_eq!(served, 1, "the damaged batch is not served");
    let status = json(&hub(&["status", "--data", d, "--json"]));
    assert_eq!(status["damaged"], 1, "{status}");
    assert_eq!(status["origins"][0]["covered"], 1, "{status}");
    let out = text(&hub(&["status", "--data", d]).stdout);
    assert!(out.contains("1 damaged (removed, fetched again)"), "{out}");
}
