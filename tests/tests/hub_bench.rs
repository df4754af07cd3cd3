//! Hub figures, printed (not asserted): boot to serving under QEMU, sessions per second, and the
//! hub process's memory (VmHWM/VmRSS) on `--net std:` with 50 devices connected and 1 million
//! changes held. Ignored by default (minutes of CPU); run with
//! `cargo test --release -p outpost-tests --test hub_bench -- --ignored --nocapture`.
//! Results are recorded in docs/performance.md ("Hub").

mod support;

use outpost_mailbox::Mailbox;
use outpost_protocol::handshake::Purpose;
use outpost_protocol::message::Message;
use outpost_protocol::session::ClientSession;
use outpost_protocol::{Hlc, SiteId};
use outpost_testkit::batch::text_rows;
use outpost_testkit::session::{client_config, session_id};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

const ORIGINS: u8 = 10;
const BATCHES_PER_ORIGIN: u64 = 100;
const CHANGES_PER_BATCH: u64 = 1000;

/// One batch of `CHANGES_PER_BATCH` row changes (one cell each), seqs `lo..`.
fn real_batch(origin: SiteId, lo: u64) -> Vec<u8> {
    let rows = (0..CHANGES_PER_BATCH).map(|i| {
        let name = format!("patient {lo}-{i} of the clinic");
        (
            (lo + i) as i64,
            Hlc::new(1_800_000_000_000 + lo + i, 0),
            name,
        )
    });
    let hi = lo + CHANGES_PER_BATCH - 1;
    text_rows(origin, lo, hi, "patients", "name", rows)
}

fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_default()
}

/// A session that stays open after its pull (live mode), as a tablet left on.
struct Live {
    _stream: TcpStream,
}

fn live_session(hub: &HubInfo, dev: &mut Device, n: u64) -> (Live, u64) {
    let (mut ch, mut s) = connect(hub, dev, Purpose::Session).unwrap();
    let mut client = ClientSession::new(client_config(dev.site, session_id(n, dev.site), true));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(m) = client.poll(dev).unwrap() {
            ch.send(&m.encode()).unwrap();
        }
        s.write_all(&ch.take_outgoing()).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "hub closed");
        let mut input = &buf[..n];
        while let Some(bytes) = ch.receive(&mut input, 2).unwrap() {
            let msg = Message::decode(&bytes, usize::MAX).unwrap();
            let done = matches!(msg, Message::PullDone { .. });
            client.handle(msg, dev).unwrap();
            if done {
                return (Live { _stream: s }, client.applied());
            }
        }
    }
}

#[test]
#[ignore = "benchmark: prints figures, takes minutes"]
fn hub_memory_with_50_devices_and_a_million_changes_held() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    // The hub's data directory, then 1 M changes stored straight into its mailbox.
    hub_cli(&["status", "--data", data.to_str().unwrap()]);
    let t = Instant::now();
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    let mut bytes = 0;
    for o in 0..ORIGINS {
        let origin = SiteId([0x40 + o; 16]);
        let batches: Vec<Vec<u8>> = (0..BATCHES_PER_ORIGIN)
            .map(|b| real_batch(origin, 1 + b * CHANGES_PER_BATCH))
            .collect();
        bytes += batches.iter().map(Vec::len).sum::<usize>();
        mailbox.store(batches).unwrap();
    }
    drop(mailbox);
    let changes = u64::from(ORIGINS) * BATCHES_PER_ORIGIN * CHANGES_PER_BATCH;
    println!(
        "held: {changes} changes in {} batches, {:.1} MiB of batches (stored in {:.1}s)",
        u64::from(ORIGINS) * BATCHES_PER_ORIGIN,
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let (hub, addr) = loopback_hub(&data, &["--no-mdns"]);
    let pid = hub.child.id();
    println!(
        "hub idle: VmRSS {}, VmHWM {}",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:")
    );

    // Sessions per second: one enrolled device, up to date, syncing again and again.
    let code = code_for(&data, addr);
    let info = HubInfo::from_code(&code);
    let mut probe = Device::new(0x01);
    enroll(&code, &mut probe);
    for (o, covered) in (0..ORIGINS).map(|o| (o, BATCHES_PER_ORIGIN * CHANGES_PER_BATCH)) {
        probe.vector.set(SiteId([0x40 + o; 16]), covered);
    }
    let t = Instant::now();
    let mut sessions = 0;
    while t.elapsed() < Duration::from_secs(5) {
        sessions += 1;
        sync(&info, &mut probe, sessions).unwrap();
    }
    println!(
        "sessions: {:.0}/s sequential (handshake + hello + push-nothing + pull-nothing + bye, std loopback)",
        sessions as f64 / t.elapsed().as_secs_f64()
    );

    // 50 devices: 49 up to date and left connected (live), one pulling all 1 M changes.
    let mut live = Vec::new();
    for n in 0..49u8 {
        let mut d = Device::new(0x80 + n);
        enroll(&code_for(&data, addr), &mut d);
        d.vector = probe.vector.clone();
        live.push(live_session(&info, &mut d, u64::from(n)).0);
    }
    println!(
        "49 live sessions: VmRSS {}, VmHWM {}",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:")
    );
    let mut fresh = Device::new(0xff);
    enroll(&code_for(&data, addr), &mut fresh);
    let t = Instant::now();
    let (_session, batches) = live_session(&info, &mut fresh, 99);
    let secs = t.elapsed().as_secs_f64();
    let pulled: u64 = fresh.applied.iter().map(|(_, r)| r.len()).sum();
    assert_eq!(pulled, changes, "the fresh device got every change");
    println!(
        "one device pulled {pulled} changes ({batches} batches) in {secs:.1}s ({:.0} changes/s) with 49 others connected",
        pulled as f64 / secs
    );
    println!(
        "50 devices connected, 1 M changes held: VmRSS {}, VmHWM {} (goal: under 32 MiB)",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:")
    );
    drop(live);
    drop(hub);
}

#[test]
#[ignore = "benchmark: prints figures, boots QEMU three times"]
fn qemu_boot_to_serving_and_sessions_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("data.img");
    let mut boots = Vec::new();
    let mut q = Qemu::boot(&disk, 1);
    boots.push(q.boot);
    let code = outpost_protocol::enroll_code::EnrollCode::decode(&q.codes[0]).unwrap();
    let mut d = Device::new(0x02);
    enroll(&code, &mut d);
    let info = HubInfo::from_code(&code);
    let t = Instant::now();
    let mut sessions = 0;
    while t.elapsed() < Duration::from_secs(10) {
        sessions += 1;
        d.write(1);
        sync(&info, &mut d, sessions).unwrap();
    }
    println!(
        "QEMU (TCG) hub: {:.1} sessions/s sequential, each pushing one batch (fsync'd on the virtual disk)",
        sessions as f64 / t.elapsed().as_secs_f64()
    );
    for _ in 0..2 {
        q.group.kill();
        q = Qemu::boot(&disk, 0);
        boots.push(q.boot);
    }
    println!(
        "QEMU (TCG) boot to serving (run started -> 'ready:'): {}",
        boots
            .iter()
            .map(|b| format!("{:.1}s", b.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
