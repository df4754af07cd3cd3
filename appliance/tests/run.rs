//! The `outpost-hub` binary end to end: `run` serves enrolled devices over TCP, `enroll-code`
//! codes are single use, `revoke` ends a live session within seconds, and a restarted hub still
//! holds every acknowledged batch.

use outpost_protocol::handshake::{HandshakeError, Purpose};
use outpost_protocol::message::{Hello, Message, PeerRole, SessionId};
use outpost_protocol::PROTOCOL_VERSION;
use outpost_relay::enroll::EnrollCode;
use outpost_testkit::{connect, sync, wait_until, Device, HubInfo, SyncError};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HUB: &str = env!("CARGO_BIN_EXE_outpost-hub");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_hub(data: &Path, port: u16, log: &Path) -> Running {
    let child = Command::new(HUB)
        .args(["run", "--data", data.to_str().unwrap(), "--net"])
        .arg(format!("std:127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        "the hub to listen",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    Running(child)
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(HUB).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn enroll_code(data: &str) -> (EnrollCode, HubInfo) {
    let out = cli(&["enroll-code", "--data", data, "--no-qr"]);
    let code = EnrollCode::decode(out.lines().next().unwrap()).unwrap();
    let info = HubInfo::from_code(&code);
    (code, info)
}

fn enrolled(data: &str) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&cli(&["devices", "--data", data, "--json"])).unwrap();
    v.as_array().unwrap().len()
}

fn wait_enrolled(data: &str, n: usize) {
    wait_until(
        &format!("{n} enrolled devices"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || enrolled(data) == n,
    );
}

#[test]
fn the_hub_binary_enrolls_syncs_revokes_and_keeps_data_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("hub.log");
    let hub = run_hub(&data, port, &log);

    // Enroll A and B with one code each; the address in the code is the one `run` listens on.
    let mut a = Device::new(0xa1);
    let mut b = Device::new(0xb2);
    let (code_a, info) = enroll_code(d);
    assert_eq!(code_a.addresses, vec![format!("127.0.0.1:{port}")]);
    connect(
        &info,
        &mut a,
        Purpose::Enroll {
            token: code_a.token,
        },
    )
    .unwrap();
    wait_enrolled(d, 1);
    let (code_b, _) = enroll_code(d);
    connect(
        &info,
        &mut b,
        Purpose::Enroll {
            token: code_b.token,
        },
    )
    .unwrap();
    wait_enrolled(d, 2);

    // A code is single use: a third device presenting A's code is refused.
    let mut c = Device::new(0xc3);
    let refused = connect(
        &info,
        &mut c,
        Purpose::Enroll {
            token: code_a.token,
        },
    )
    .err();
    assert!(
        matches!(
            refused,
            Some(SyncError::Handshake(HandshakeError::EnrollmentRefused))
        ),
        "{refused:?}"
    );
    assert_eq!(enrolled(d), 2);

    // A pushes, B pulls.
    a.write_range(1, 3);
    sync(&info, &mut a, 1).unwrap();
    sync(&info, &mut b, 2).unwrap();
    assert_eq!(b.vector.get(&a.site.into()), 3);

    // B keeps a session open; revoking B ends it.
    let (mut ch, mut stream) = connect(&info, &mut b, Purpose::Session).unwrap();
    ch.send(
        &Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            site: b.site,
            role: PeerRole::Device,
            fingerprint: [0; 32],
            wall_clock_ms: 0,
            vector: b.vector.clone(),
            session: SessionId([5; 16]),
            control: outpost_protocol::ControlVector::new(),
            drains: Vec::new(),
            regain: Vec::new(),
            keys: Vec::new(),
        })
        .encode(),
    )
    .unwrap();
    stream.write_all(&ch.take_outgoing()).unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    assert!(n > 0, "the hub answers the hello");
    // Its hello and control entries may take more than one read: take all before revoking.
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    let revoked_at = Instant::now();
    let out = cli(&["revoke", "--data", d, &b.site.to_string()[..8]]);
    assert!(out.contains(&b.site.to_string()));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // End of stream or a reset ends the session; a read timing out means it is still open.
    let ended = match stream.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(ended, "the revoked device's session is still open");
    assert!(revoked_at.elapsed() < Duration::from_secs(5));

    // Restart: everything acknowledged is still served, with the same identity.
    drop(hub);
    let _hub = run_hub(&data, port, &log);
    let mut e = Device::new(0xe5);
    let (code_e, info2) = enroll_code(d);
    assert_eq!(info2.key, info.key);
    connect(
        &info2,
        &mut e,
        Purpose::Enroll {
            token: code_e.token,
        },
    )
    .unwrap();
    wait_enrolled(d, 3);
    sync(&info2, &mut e, 3).unwrap();
    assert_eq!(e.vector.get(&a.site.into()), 3);

    // The log names peers and keys by fingerprint; no secret ever appears in it.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("enrolled device"), "{text}");
    let secret: String = std::fs::read(data.join("identity.key"))
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let token: String = code_a.token.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(&secret[..16]) && !text.contains(&token[..16]));
}

/// A data directory whose devices were admitted before control streams existed (here: written
/// into the allowlist directly, as no handshake ran) gets the hub's Key entry for each at start.
#[test]
fn a_started_hub_certifies_every_device_its_stream_lacks() {
    use outpost_protocol::handshake::Keypair;
    use outpost_relay::allowlist::{token_id, Allowlist};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let d = data.to_str().unwrap();
    let out = cli(&["enroll-code", "--data", d, "--address", "h:1", "--no-qr"]);
    let code = EnrollCode::decode(out.lines().next().unwrap()).unwrap();
    let site = outpost_protocol::SiteId([0x6d; 16]);
    let key = *Keypair::from_secret(&[6; 32]).unwrap().public();
    Allowlist::open(data.join("allowlist.db"))
        .unwrap()
        .admit(&token_id(&code.token), &key, site, code.expires_at - 60)
        .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _hub = run_hub(&data, port, &dir.path().join("hub.log"));
    let identity = outpost_relay::identity::Identity::load_or_create(&data)
        .unwrap()
        .0;
    let mut mailbox = outpost_mailbox::Mailbox::open(data.join("mailbox.db")).unwrap();
    mailbox.set_control_owner(outpost_relay::certify::owner(
        &identity,
        PeerRole::Hub,
        None,
    ));
    let binding = *mailbox.directory().unwrap().binding(&site).unwrap();
    assert_eq!(
        (binding.key, binding.role, binding.revoked),
        (key, PeerRole::Device, false)
    );
    assert_eq!(binding.certified_by, identity.site);
}
