//! Hub figures, printed (not asserted): boot to serving under QEMU, sessions per second, and the
//! hub process's memory (VmHWM/VmRSS) on `--net std:` with 200 devices connected and 1 million
//! changes held (`OUTPOST_BENCH_LIVE` devices, default 200), and where a live session's memory
//! goes (`hub_memory_per_live_session`). Ignored by default (minutes of CPU); run with
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

/// The hub's resident memory by kind of mapping, from `/proc/PID/smaps`: the heap, thread
/// stacks (anonymous mappings of the 2 MiB default stack size, guard excluded), other anonymous
/// memory (malloc arenas of threads, large buffers), file mappings (SQLite's `-shm`, the binary).
fn memory_breakdown(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut heap, mut stacks, mut stack_count, mut anon, mut file) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut current: Option<(u64, String)> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                let path = words.nth(4).unwrap_or("").to_string();
                current = Some(((hi - lo) / 1024, path));
                continue;
            }
        }
        if first == "Rss:" {
            let kb: u64 = words.next().unwrap().parse().unwrap();
            let (size, path) = current.as_ref().unwrap();
            match path.as_str() {
                "[heap]" => heap += kb,
                "" if (2040..=2052).contains(size) => {
                    stacks += kb;
                    stack_count += 1;
                }
                "" => anon += kb,
                _ => file += kb,
            }
        }
    }
    format!(
        "heap {heap} kB, {stack_count} thread stacks {stacks} kB, other anonymous {anon} kB, files {file} kB, threads {}",
        proc_status(pid, "Threads:")
    )
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
fn hub_memory_with_200_devices_and_a_million_changes_held() {
    let devices: usize = outpost_testkit::env::number("OUTPOST_BENCH_LIVE", 200);
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
        probe.vector.set((SiteId([0x40 + o; 16])).into(), covered);
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

    // The devices: all but one up to date and left connected (live), one pulling all 1 M
    // changes.
    let mut live = Vec::new();
    for n in 0..devices - 1 {
        let mut d = Device::holding(live_site(n), Vec::new());
        enroll(&code_for(&data, addr), &mut d);
        d.vector = probe.vector.clone();
        live.push(live_session(&info, &mut d, n as u64).0);
    }
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "{} live sessions: VmRSS {}, VmHWM {}; {}",
        devices - 1,
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:"),
        memory_breakdown(pid)
    );
    let mut fresh = Device::new(0xff);
    enroll(&code_for(&data, addr), &mut fresh);
    let t = Instant::now();
    let (_session, batches) = live_session(&info, &mut fresh, 99);
    let secs = t.elapsed().as_secs_f64();
    let pulled: u64 = fresh.applied.iter().map(|(_, r)| r.len()).sum();
    assert_eq!(pulled, changes, "the fresh device got every change");
    println!(
        "one device pulled {pulled} changes ({batches} batches) in {secs:.1}s ({:.0} changes/s) with {} others connected",
        pulled as f64 / secs,
        devices - 1
    );
    println!(
        "{devices} devices connected, 1 M changes held: VmRSS {}, VmHWM {} (goal: under 32 MiB); {}",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:"),
        memory_breakdown(pid)
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

/// Where a live session's memory goes: the hub with nothing held, then `OUTPOST_BENCH_LIVE`
/// (default 60) devices connected in live mode, the hub's memory by kind before and after.
#[test]
#[ignore = "benchmark: prints figures"]
fn hub_memory_per_live_session() {
    let live_count: usize = outpost_testkit::env::number("OUTPOST_BENCH_LIVE", 60);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    hub_cli(&["status", "--data", data.to_str().unwrap()]);
    let (hub, addr) = loopback_hub(&data, &["--no-mdns"]);
    let pid = hub.child.id();
    let code = code_for(&data, addr);
    let info = HubInfo::from_code(&code);
    let idle = kib(&proc_status(pid, "VmRSS:"));
    println!("hub idle: VmRSS {idle} kB; {}", memory_breakdown(pid));
    let mut devices: Vec<Device> = (0..live_count)
        .map(|n| {
            let mut d = Device::holding(live_site(n), Vec::new());
            enroll(&code_for(&data, addr), &mut d);
            d
        })
        .collect();
    let mut live = Vec::new();
    for (n, d) in devices.iter_mut().enumerate() {
        live.push(live_session(&info, d, n as u64).0);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = kib(&proc_status(pid, "VmRSS:"));
    println!(
        "{live_count} live sessions: VmRSS {rss} kB, {} kB per live session; {}",
        (rss - idle) / live_count as u64,
        memory_breakdown(pid)
    );
    drop(live);
    drop(hub);
}

fn kib(status: &str) -> u64 {
    status.trim_end_matches("kB").trim().parse().unwrap()
}

/// The site id of the `n`th live device (distinct for any count a bench uses).
fn live_site(n: usize) -> SiteId {
    let mut site = [0x5e; 16];
    site[..8].copy_from_slice(&(n as u64).to_le_bytes());
    SiteId(site)
}

/// Issue 19's goal: a hub holding all of a tenant's 100 clinic scopes serves a device granted
/// one clinic with no more memory than a hub holding that clinic alone. Each clinic's stream is
/// 3,000 changes in 3 batches (one origin per clinic, as one tablet per clinic writes them); the
/// device pulls its clinic from scratch; the hub's VmHWM (its peak) is compared.
#[test]
#[ignore = "benchmark: prints figures"]
fn hub_memory_serving_one_scope_of_100() {
    let scopes: u8 = outpost_testkit::env::number("OUTPOST_BENCH_SCOPES", 100);
    let clinic = |c: u8| format!("c{c:03}");
    let peak = |held: &[u8]| -> (String, u64) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("hub");
        hub_cli(&["status", "--data", data.to_str().unwrap()]);
        let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
        for &c in held {
            let origin = SiteId([c; 16]);
            let batches: Vec<Vec<u8>> = (0..3u64)
                .map(|b| {
                    let lo = 1 + b * CHANGES_PER_BATCH;
                    let rows = (0..CHANGES_PER_BATCH).map(|i| {
                        (
                            (lo + i) as i64,
                            Hlc::new(1_800_000_000_000 + lo + i, 0),
                            format!("patient {lo}-{i} of clinic {c}"),
                        )
                    });
                    outpost_testkit::batch::text_rows_in(
                        origin,
                        &clinic(c),
                        lo,
                        lo + CHANGES_PER_BATCH - 1,
                        "patients",
                        "name",
                        rows,
                    )
                })
                .collect();
            mailbox.store(batches).unwrap();
        }
        drop(mailbox);
        let (hub, addr) = loopback_hub(&data, &["--no-mdns"]);
        let pid = hub.child.id();
        // A code granting clinic 42 only: the token's grant set before the device uses it.
        let code = code_for(&data, addr);
        let allowlist = rusqlite::Connection::open(data.join("allowlist.db")).unwrap();
        allowlist
            .execute("UPDATE tokens SET scopes = ?1", [clinic(42)])
            .unwrap();
        drop(allowlist);
        let info = HubInfo::from_code(&code);
        let mut device = Device::new(0xfe);
        enroll(&code, &mut device);
        sync(&info, &mut device, 1).unwrap();
        let pulled: u64 = device.applied.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(
            pulled,
            3 * CHANGES_PER_BATCH,
            "clinic 42's changes, nothing else"
        );
        let hwm = kib(&proc_status(pid, "VmHWM:"));
        drop(hub);
        (format!("{} scopes held", held.len()), hwm)
    };
    let all: Vec<u8> = (0..scopes).collect();
    let (many, many_kib) = peak(&all);
    let (one, one_kib) = peak(&[42]);
    println!(
        "hub serving one clinic's first pull: {many}: VmHWM {many_kib} kB; {one}: VmHWM {one_kib} kB; ratio {:.2}x",
        many_kib as f64 / one_kib as f64
    );
}

/// Issue 20's goal for the relay: checking each stored batch before serving it (`codec::verify`
/// and the header against its row, `mailbox/src/damage.rs`) costs at most 3% of the hub's relay
/// throughput. A fresh device pulls 1 M changes (1,000 batches, as above) from a `--net std:`
/// hub, `OUTPOST_BENCH_RUNS` times (default 5, median printed); the same run times
/// `codec::verify` over the same stored batches in this process, which is what the check adds
/// to a pull, and prints it as a share of the pull's time.
#[test]
#[ignore = "benchmark: prints figures"]
fn hub_relay_throughput_and_the_stored_body_check() {
    let runs: usize = outpost_testkit::env::number("OUTPOST_BENCH_RUNS", 5);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    hub_cli(&["status", "--data", data.to_str().unwrap()]);
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    let mut stored = Vec::new();
    for o in 0..ORIGINS {
        let origin = SiteId([0x40 + o; 16]);
        let batches: Vec<Vec<u8>> = (0..BATCHES_PER_ORIGIN)
            .map(|b| real_batch(origin, 1 + b * CHANGES_PER_BATCH))
            .collect();
        stored.extend(batches.iter().cloned());
        mailbox.store(batches).unwrap();
    }
    drop(mailbox);
    let changes = u64::from(ORIGINS) * BATCHES_PER_ORIGIN * CHANGES_PER_BATCH;
    let bytes: usize = stored.iter().map(Vec::len).sum();
    let (hub, addr) = loopback_hub(&data, &["--no-mdns"]);
    let info = HubInfo::from_code(&code_for(&data, addr));
    let mut pulls = Vec::new();
    for n in 0..runs {
        let mut fresh = Device::new(0xf0 + n as u8);
        enroll(&code_for(&data, addr), &mut fresh);
        let t = Instant::now();
        let (_session, _) = live_session(&info, &mut fresh, 1000 + n as u64);
        pulls.push(t.elapsed().as_secs_f64());
        let pulled: u64 = fresh.applied.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(pulled, changes, "the fresh device got every change");
    }
    drop(hub);
    let mut checks = Vec::new();
    let limits = outpost_protocol::batch::codec::Limits::default();
    for _ in 0..runs {
        let t = Instant::now();
        for b in &stored {
            std::hint::black_box(outpost_protocol::batch::codec::verify(b, &limits).unwrap());
        }
        checks.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // The hub checks each stored batch at its first serve, then serves it without a hash pass
    // for a minute (`mailbox/src/damage.rs`): the first pull pays the check, the later ones not.
    let first = pulls[0];
    let mut later = pulls[1..].to_vec();
    if !later.is_empty() {
        println!(
            "relay: first pull (every batch checked) {first:.3}s; later pulls (checked within \
             the minute) {:.3}s median",
            median(&mut later)
        );
    }
    let (pull, check) = (median(&mut pulls), median(&mut checks));
    println!(
        "relay: a fresh device pulled {changes} changes ({:.1} MiB in 1,000 batches) in {:.3}s \
         median of {runs} ({:.0} changes/s, {:.0} MiB/s; runs {:?})",
        bytes as f64 / 1048576.0,
        pull,
        changes as f64 / pull,
        bytes as f64 / 1048576.0 / pull,
        pulls.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>()
    );
    println!(
        "stored body check (codec::verify over the same batches, in process): {:.1} ms median \
         ({:.0} MiB/s), {:.2}% of the pull",
        check * 1000.0,
        bytes as f64 / 1048576.0 / check,
        100.0 * check / pull
    );
}
