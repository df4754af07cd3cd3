//! Child processes the end-to-end tests start: each in its own process group (killed whole, with
//! SIGKILL, on drop: a QEMU guest and the script around it go together), its output lines
//! collected so a test can wait for one; commands run to completion, and the enrollment code
//! one prints.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process in its own process group, killed (the whole group, SIGKILL) on drop.
pub struct Group {
    /// The child.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line it printed so far (stdout and stderr).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Group {
    /// Spawns `cmd` in a new process group; its stdout and stderr lines are collected.
    pub fn spawn(cmd: Command) -> Group {
        Group::spawn_echoing(cmd, None)
    }

    /// Like [`Group::spawn`], also printing each line to stderr after `prefix` (so a test's
    /// output shows what the child said, in order).
    pub fn spawn_echoing(mut cmd: Command, prefix: Option<&'static str>) -> Group {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
        for pipe in [out, err] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(prefix) = prefix {
                        eprintln!("{prefix}{line}");
                    }
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Group { child, lines, log }
    }

    /// Waits for a line for which `f` returns something, up to `wait`.
    pub fn wait_for<T>(&self, wait: Duration, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no expected line within {wait:?}; output so far:\n{}",
                    self.output()
                ),
            }
        }
    }

    /// Everything it printed so far, one line each.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends `signal` to the child itself (not its group).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGKILL to the whole group (QEMU and the script around it: a power cut), and reaps it.
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to completion and returns its output; panics naming it, with its stderr, when it
/// cannot start or fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What `cmd` prints on stdout, as JSON (a `--json` command); panics when it fails.
pub fn json_of(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_slice(&run_ok(cmd).stdout).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The `outpost:` enrollment code that `cmd` prints on stdout; panics when it fails or prints
/// none.
pub fn code_of(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout)
        .split_whitespace()
        .find(|w| w.starts_with("outpost:"))
        .expect("an outpost: code on stdout")
        .to_string()
}
