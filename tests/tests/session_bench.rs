//! Secure-session figures over loopback, printed (not asserted): full Noise IK handshakes per
//! second against a running `outpost-hub --net std:`, and bulk throughput (MB/s) of a push of
//! ~64 MB of batches and of a second device pulling them back, each through the encrypted channel,
//! the framing layer and the hub's durable mailbox. Ignored by default; run with
//! `cargo test --release -p outpost-tests --test session_bench -- --ignored --nocapture`.
//! Results are recorded in docs/performance.md ("Sessions").

mod support;

use outpost_protocol::handshake::Purpose;
use outpost_protocol::{Hlc, SeqRange, SiteId};
use outpost_testkit::batch::text_rows;
use std::time::Instant;
use support::*;

const BATCHES: u64 = 64;
/// Batches pushed per session: 16 MiB, a device's push budget (the hub stages at most 32 MiB
/// for all its peers together).
const PUSH_BATCHES: u64 = 16;
const ROWS_PER_BATCH: u64 = 1000;
const NOTE_BYTES: usize = 1000;
const HANDSHAKES: u32 = 300;

/// A batch of `ROWS_PER_BATCH` rows with a ~1 KB note each (about 1 MB), seq `seq`.
fn bulk_batch(origin: SiteId, seq: u64) -> Vec<u8> {
    let rows = (0..ROWS_PER_BATCH).map(|i| {
        let key = seq * ROWS_PER_BATCH + i;
        let note = format!("{key:0>width$}", width = NOTE_BYTES);
        (key as i64, Hlc::new(1_800_000_000_000 + key, 0), note)
    });
    text_rows(origin, seq, seq, "visits", "notes", rows)
}

#[test]
#[ignore = "benchmark: prints figures"]
fn handshakes_per_second_and_bulk_throughput_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let (_hub, addr) = loopback_hub(&data, &[]);
    let code = code_for(&data, addr);
    let hub = HubInfo::from_code(&code);
    let mut a = Device::new(0xa1);
    let mut b = Device::new(0xb2);
    enroll(&code, &mut a);
    enroll(&code_for(&data, addr), &mut b);

    let t = Instant::now();
    for _ in 0..HANDSHAKES {
        connect(&hub, &mut a, Purpose::Session).expect("handshake");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "handshakes: {HANDSHAKES} full Noise_IK_P256_AESGCM_SHA256 handshakes over loopback in {secs:.2} s = {:.0}/s (each: TCP connect, 2 messages, the hub's counter check and commit)",
        f64::from(HANDSHAKES) / secs
    );

    let site = a.site;
    let mut batches: Vec<Vec<u8>> = (1..=BATCHES).map(|seq| bulk_batch(site, seq)).collect();
    let bytes: usize = batches.iter().map(Vec::len).sum();
    let mb = bytes as f64 / 1e6;

    let t = Instant::now();
    for session in 1..=BATCHES / PUSH_BATCHES {
        let hi = session * PUSH_BATCHES;
        a.own.extend(batches.drain(..PUSH_BATCHES as usize));
        a.written = hi;
        a.vector
            .advance(
                site.into(),
                SeqRange::new(hi - PUSH_BATCHES + 1, hi).unwrap(),
            )
            .unwrap();
        sync(&hub, &mut a, session).expect("push");
    }
    let push = t.elapsed().as_secs_f64();
    assert_eq!(a.acked_up_to(), BATCHES, "the hub acknowledged every batch");

    let t = Instant::now();
    sync(&hub, &mut b, 2).expect("pull");
    let pull = t.elapsed().as_secs_f64();
    assert_eq!(b.applied_seqs(a.site), (1..=BATCHES).collect::<Vec<_>>());

    println!(
        "bulk push: {mb:.1} MB in {BATCHES} batches in {push:.2} s = {:.1} MB/s ({PUSH_BATCHES} per session: encrypted, framed, staged, committed with fsync)",
        mb / push
    );
    println!(
        "bulk pull: {mb:.1} MB in {BATCHES} batches in {pull:.2} s = {:.1} MB/s (read from the mailbox, encrypted, framed)",
        mb / pull
    );
}

// ---------------------------------------------------------------------------------------------
// A new device's first sync through `outpost_sync`, from the release-built hub holding the
// W1-size workload (docs/workload.md: 100k patients + 200k visits, UUID keys), against plain SQLite
// inserting the same rows in the same run. The syncing device is a child process (this test
// binary again, `first_sync_child`) so its peak memory (VmHWM) is its own:
// `cargo test --release -p outpost-tests --test session_bench -- --ignored --nocapture first_sync`
// `OUTPOST_BENCH_BEFORE_EXT=/path/liboutpost.so` also runs that build of the extension,
// alternating with the current one. "apply alone" applies the same rows, exported as the 512 KiB
// chunks a pull brings, from files, 16 per `outpost_apply_many` call (W4's way, no network), in
// the same runs; `OUTPOST_BENCH_RUNS` (default 3), `OUTPOST_BENCH_SCALE`
// (default 1.0). Results are recorded in docs/performance.md (W4, "through outpost_sync").

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::hub::Hub;
use outpost_testkit::e2e::workload::{insert_w1, w1_db, w1_rows};
use outpost_testkit::env::number;
use std::path::Path;
use std::process::Command;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The syncing device (run by `first_sync_through_outpost_sync` as a child process; does nothing
/// when run on its own): a fresh W1 database, enrolled, one timed `outpost_sync()`. Prints
/// `FIRST_SYNC rows seconds vmhwm_kib json`.
#[test]
#[ignore = "benchmark helper: the child process of first_sync_through_outpost_sync"]
fn first_sync_child() {
    let Ok(spec) = std::env::var("OUTPOST_FIRST_SYNC_CHILD") else {
        return;
    };
    let mut parts = spec.splitn(3, '\n');
    let (ext, db, code) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let conn = w1_db(Path::new(db), Some(Path::new(ext)));
    let (secs, out) = match code.strip_prefix("apply:") {
        // The same chunks applied from files, 16 per outpost_apply_many call: no network.
        Some(dir) => {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let t = Instant::now();
            for group in files.chunks(16) {
                let marks: Vec<String> = (1..=group.len()).map(|i| format!("?{i}")).collect();
                let sql = format!("SELECT outpost_apply_many({})", marks.join(", "));
                let mut s = conn.prepare(&sql).unwrap();
                // Each chunk read, bound (SQLite copies it) and freed before the next: the
                // call's chunks are held once, as W4's child holds them.
                for (i, f) in group.iter().enumerate() {
                    s.raw_bind_parameter(i + 1, std::fs::read(f).unwrap())
                        .unwrap();
                }
                s.raw_query().next().unwrap().expect("a result row");
            }
            (t.elapsed().as_secs_f64(), format!("{} chunks", files.len()))
        }
        None => {
            conn.query_row(&format!("SELECT outpost_enroll('{code}')"), [], |_| Ok(()))
                .unwrap();
            let t = Instant::now();
            let out: String = conn
                .query_row("SELECT outpost_sync()", [], |r| r.get(0))
                .unwrap();
            (t.elapsed().as_secs_f64(), out)
        }
    };
    let rows: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM patients) + (SELECT count(*) FROM visits)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    println!("FIRST_SYNC {rows} {secs} {hwm} {out}");
}

#[test]
#[ignore = "benchmark: prints figures, takes minutes"]
fn first_sync_through_outpost_sync() {
    let scale: f64 = number("OUTPOST_BENCH_SCALE", 1.0);
    let runs: usize = number("OUTPOST_BENCH_RUNS", 3);
    // (label, extension, apply the exported chunks instead of syncing)
    let mut exts = vec![
        ("current", built().ext.clone(), false),
        ("apply alone", built().ext.clone(), true),
    ];
    if let Ok(before) = std::env::var("OUTPOST_BENCH_BEFORE_EXT") {
        exts.insert(0, ("before", before.into(), false));
    }
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(&dir.path().join("hub"), &["--no-mdns"]);

    // The source device writes W1 and pushes it to the hub.
    let rows = w1_rows(scale);
    let total = (rows.0.len() + rows.1.len()) as u64;
    let src = w1_db(&dir.path().join("source.db"), Some(&built().ext));
    let written = insert_w1(&src, &rows);
    src.query_row(
        &format!("SELECT outpost_enroll('{}')", hub.code()),
        [],
        |_| Ok(()),
    )
    .unwrap();
    let t = Instant::now();
    let pushed: String = src
        .query_row("SELECT outpost_sync()", [], |r| r.get(0))
        .unwrap();
    println!(
        "source: {total} rows written in {written:.2} s, pushed to the hub in {:.2} s: {pushed}",
        t.elapsed().as_secs_f64()
    );
    // The same rows as the chunks a pull brings (512 KiB, the sync client's export size), for
    // the apply alone.
    let chunks = dir.path().join("chunks");
    std::fs::create_dir_all(&chunks).unwrap();
    let mut since = 0i64;
    let mut n = 0;
    while let Some(b) = src
        .query_row("SELECT outpost_changes(?1, 524288)", [since], |r| {
            r.get::<_, Option<Vec<u8>>>(0)
        })
        .unwrap()
    {
        let h = outpost_protocol::batch::codec::decode_header(&b, &Default::default()).unwrap();
        since = h.range.hi as i64;
        std::fs::write(chunks.join(format!("{n:05}.batch")), &b).unwrap();
        n += 1;
    }
    println!("{n} chunks exported for the apply-alone reference");
    drop(src);

    let mut plain = Vec::new();
    let mut figures: Vec<(Vec<f64>, Vec<u64>)> = vec![(vec![], vec![]); exts.len()];
    for run in 0..runs {
        for (i, (label, ext, apply)) in exts.iter().enumerate() {
            let db = dir.path().join(format!("fresh-{label}-{run}.db"));
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "first_sync_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    "OUTPOST_FIRST_SYNC_CHILD",
                    format!(
                        "{}\n{}\n{}",
                        ext.display(),
                        db.display(),
                        if *apply {
                            format!("apply:{}", chunks.display())
                        } else {
                            hub.code()
                        }
                    ),
                )
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("FIRST_SYNC ").map(|(_, rest)| rest))
                .unwrap_or_else(|| {
                    panic!("child: {stdout} {}", String::from_utf8_lossy(&out.stderr))
                });
            let mut f = line.splitn(4, ' ');
            let got: u64 = f.next().unwrap().parse().unwrap();
            let secs: f64 = f.next().unwrap().parse().unwrap();
            let hwm: u64 = f.next().unwrap().parse().unwrap();
            let json = f.next().unwrap();
            assert_eq!(got, total, "{label}: every row arrived: {json}");
            println!(
                "run {run} {label}: {total} rows in {secs:.2} s = {:.0} rows/s, child process VmHWM {:.1} MiB: {json}",
                total as f64 / secs,
                hwm as f64 / 1024.0
            );
            figures[i].0.push(total as f64 / secs);
            figures[i].1.push(hwm);
            let _ = std::fs::remove_file(&db);
        }
        let path = dir.path().join(format!("plain-{run}.db"));
        let secs = insert_w1(&w1_db(&path, None), &rows);
        println!(
            "run {run} plain SQLite: the same {total} rows in one transaction in {secs:.2} s = {:.0} rows/s",
            total as f64 / secs
        );
        plain.push(total as f64 / secs);
    }
    let plain = median(plain);
    println!("plain SQLite, one transaction: median {plain:.0} rows/s");
    for ((label, _, apply), (rates, hwms)) in exts.iter().zip(figures) {
        let rate = median(rates);
        let what = if *apply {
            "the same chunks from files, 16 per outpost_apply_many call (no network)"
        } else {
            "first sync through outpost_sync"
        };
        println!(
            "{label}: {what}, median {rate:.0} rows/s = {:.2}x plain's rate; VmHWM {} MiB",
            rate / plain,
            hwms.iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    drop(hub);
}
