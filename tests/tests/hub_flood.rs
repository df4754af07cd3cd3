//! The release hub (`--net std:` on loopback) under a 1,000-connection flood from one address
//! (`127.0.0.2`: idle connections and ones trickling a first handshake frame, each re-opened as
//! soon as the hub closes it), while an enrolled device (`127.0.0.1`) syncs. Prints the loaded
//! to unloaded sync time ratio (issue 17's goal: at most 2) and the hub's VmRSS / VmHWM (goal:
//! under 32 MiB). Figures, not assertions beyond "the syncs complete". Ignored by default; run
//! `cargo test --release -p outpost-tests --test hub_flood -- --ignored --nocapture`.

mod support;

use outpost_protocol::handshake::HandshakeError;
use outpost_testkit::flood::Flood;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use support::*;

const FLOOD: usize = 1000;
const SYNCS: u64 = 20;

fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_default()
}

/// `SYNCS` syncs of `dev` (5 changes each), each retried on a busy answer: the median time of
/// one, retries included, and the number of retries.
fn median_sync(info: &HubInfo, dev: &mut Device, first: u64) -> (Duration, u32) {
    let mut times = Vec::new();
    let mut retries = 0;
    for n in first..first + SYNCS {
        dev.write(5);
        let t = Instant::now();
        loop {
            match sync(info, dev, n) {
                Ok(_) => break,
                Err(SyncError::Handshake(HandshakeError::Busy) | SyncError::Io(_))
                    if retries < 100 =>
                {
                    retries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("sync {n}: {e}"),
            }
        }
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], retries)
}

#[test]
#[ignore = "benchmark: prints figures"]
fn a_device_syncs_while_1000_connections_flood_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let (hub, addr) = loopback_hub(&data, &["--no-mdns"]);
    let pid = hub.child.id();
    let code = code_for(&data, addr);
    let info = HubInfo::from_code(&code);
    let mut dev = Device::new(0x01);
    enroll(&code, &mut dev);
    let (unloaded, _) = median_sync(&info, &mut dev, 1);
    println!(
        "unloaded: median sync {unloaded:?}; hub VmRSS {}",
        proc_status(pid, "VmRSS:")
    );

    let flood = Flood::start(Ipv4Addr::new(127, 0, 0, 2), addr, FLOOD, 3, 4);
    let t = Instant::now();
    while flood.opened() < FLOOD as u64 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (loaded, retries) = median_sync(&info, &mut dev, 1 + SYNCS);
    let opened = flood.opened();
    let rss = proc_status(pid, "VmRSS:");
    let hwm = proc_status(pid, "VmHWM:");
    drop(flood);
    println!(
        "flood of {FLOOD} connections from 127.0.0.2 ({opened} opened): median sync {loaded:?} ({retries} busy retries), ratio {:.2} (goal <= 2); hub VmRSS {rss}, VmHWM {hwm} (goal < 32 MiB)",
        loaded.as_secs_f64() / unloaded.as_secs_f64()
    );
}
