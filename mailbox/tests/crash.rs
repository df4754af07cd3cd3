//! Power-loss style test: a child process commits in a loop and is killed with SIGKILL at an
//! arbitrary moment; every batch it reported as committed must be there after reopening, and the
//! file must pass `integrity_check` and the mailbox's own coverage check.

mod support;

use outpost_mailbox::Mailbox;
use outpost_protocol::VersionVector;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{batch, site};

const CHILD_ENV: &str = "OUTPOST_MAILBOX_CRASH_CHILD";
const TEST_NAME: &str = "acked_batches_survive_sigkill_mid_commit";

/// Child mode: append three batches per commit from the current coverage, print `acked HI` after
/// each commit returns, forever.
fn child(path: &str) -> ! {
    let mut mb = Mailbox::open(path).unwrap();
    let a = site(7);
    let mut next = mb.vector().unwrap().get(&a.into()) + 1;
    let mut out = std::io::stdout().lock();
    loop {
        let set = (0..3)
            .map(|i| batch(a, next + i * 2, next + i * 2 + 1, 30_000))
            .collect();
        let receipts = mb.store(set).unwrap();
        assert!(receipts.iter().all(|r| r.stored && r.covered));
        next += 6;
        writeln!(out, "acked {}", next - 1).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acked_batches_survive_sigkill_mid_commit() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    println!("seed {seed}");
    let mut acked_total = 0;
    for round in 0..8u32 {
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Let it commit a varying number of times, then kill it at once (SIGKILL), most likely in
        // the middle of the next commit.
        let wanted = 3 + (seed.wrapping_mul(round + 1) % 29) as usize;
        let mut acked = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked < wanted {
            let line = lines.next().expect("child died early").unwrap();
            if let Some(hi) = line.strip_prefix("acked ") {
                acked_total = hi.parse::<u64>().unwrap();
                acked += 1;
            }
            assert!(Instant::now() < deadline, "child too slow");
        }
        child.kill().unwrap(); // SIGKILL on Unix
                               // Acks printed before the kill are still in the pipe: they count too.
        for line in lines {
            if let Some(hi) = line.unwrap().strip_prefix("acked ") {
                acked_total = hi.parse::<u64>().unwrap();
            }
        }
        child.wait().unwrap();

        let mb = Mailbox::open(&path).unwrap();
        mb.check().unwrap();
        let covered = mb.vector().unwrap().get(&(site(7)).into());
        assert!(
            covered >= acked_total,
            "round {round}: acked up to {acked_total} but only {covered} survived (seed {seed})"
        );
        // Nothing half-written: coverage is a whole number of 6-seq commits.
        assert_eq!(covered % 6, 0, "round {round}: a torn commit (seed {seed})");
        let served: u64 = mb
            .batches_for(
                &VersionVector::new(),
                None,
                &outpost_protocol::scope::Scopes::All,
            )
            .unwrap()
            .map(|b| b.unwrap().range.len())
            .sum();
        assert_eq!(served, covered);
    }
    assert!(acked_total > 0);
}
