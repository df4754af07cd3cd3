//! `outpost`: sync a device's SQLite database from the command line, or keep it synced in the
//! background, on Linux devices, kiosks and laptops. See `docs/cli.md`.
//!
//! The engine is linked in (`engine.rs`), so the database needs no `.load`; everything else is
//! the extension's SQL surface (`outpost_sync`, `outpost_status`) called through rusqlite.

mod engine;
mod progress;
mod session;
mod status;
mod stop;
mod wake;
mod watch;

use anyhow::{anyhow, bail, Context, Result};
use session::Outcome;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage:
  outpost sync   --db FILE [--peer hub|cloud|SITE] [--timeout-ms N] [--json]
  outpost watch  --db FILE [--peer P] [--interval-s 300] [--debounce-ms 500]
                 [--backoff-min-ms 1000] [--backoff-max-ms 300000] [--timeout-ms N] [--json]
  outpost status --db FILE [--json]
  outpost version

sync    runs one sync and prints what happened (exit 1 if it failed)
watch   the background worker: syncs after local commits, when the network changes and on a
        timer; backs off with jitter after failures; stops on SIGTERM/SIGINT
status  enrolled peers, last sync, pending local changes, conflicts, quarantine, last error
";

/// Parsed `--name value` flags and `--switch`es.
struct Args {
    rest: Vec<String>,
}

impl Args {
    fn value(&mut self, name: &str) -> Result<Option<String>> {
        let Some(i) = self.rest.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.rest.len() {
            bail!("{name} needs a value\n\n{USAGE}");
        }
        let v = self.rest.remove(i + 1);
        self.rest.remove(i);
        Ok(Some(v))
    }

    fn number(&mut self, name: &str, default: u64) -> Result<u64> {
        match self.value(name)? {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("{name} must be a non-negative integer, got {v:?}")),
        }
    }

    fn switch(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    fn db(&mut self) -> Result<PathBuf> {
        self.value("--db")?
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("--db FILE is required\n\n{USAGE}"))
    }

    fn done(self) -> Result<()> {
        if let Some(a) = self.rest.first() {
            bail!("unknown argument {a:?}\n\n{USAGE}");
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    stop::install();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("outpost: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let mut args = Args {
        rest: argv.collect(),
    };
    match command.as_str() {
        "sync" => {
            let db = args.db()?;
            let peer = args.value("--peer")?;
            let timeout = args
                .value("--timeout-ms")?
                .map(|v| v.parse::<u64>())
                .transpose()
                .context("--timeout-ms must be an integer")?;
            let json = args.switch("--json");
            args.done()?;
            let conn = engine::open(&db)?;
            let progress = if json {
                progress::Progress::JsonLines
            } else {
                progress::auto()
            };
            match session::run(&conn, &db, peer.as_deref(), timeout, Some(progress))? {
                Outcome::Synced(out) => {
                    if json {
                        println!("{out}");
                    } else {
                        println!("{}", session::describe(&out));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Outcome::Failed(e) => {
                    if json {
                        println!("{}", serde_json::json!({ "error": e }));
                    }
                    eprintln!("sync failed: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        "watch" => {
            let o = watch::Options {
                db: args.db()?,
                peer: args.value("--peer")?,
                interval: Duration::from_secs(args.number("--interval-s", 300)?.max(1)),
                debounce: Duration::from_millis(args.number("--debounce-ms", 500)?),
                backoff_min: Duration::from_millis(args.number("--backoff-min-ms", 1000)?.max(1)),
                backoff_max: Duration::from_millis(args.number("--backoff-max-ms", 300_000)?),
                timeout_ms: args
                    .value("--timeout-ms")?
                    .map(|v| v.parse())
                    .transpose()
                    .context("--timeout-ms must be an integer")?,
                json: args.switch("--json"),
            };
            args.done()?;
            watch::run(o)?;
            Ok(ExitCode::SUCCESS)
        }
        "status" => {
            let db = args.db()?;
            let json = args.switch("--json");
            args.done()?;
            let conn = engine::open(&db)?;
            let s = status::read(&conn)?;
            if json {
                println!("{s}");
            } else {
                print!("{}", status::describe(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
        "version" | "--version" => {
            engine::register()?;
            let conn = rusqlite::Connection::open_in_memory()?;
            let v: String = conn.query_row("SELECT outpost_version()", [], |r| r.get(0))?;
            println!("outpost {v}");
            Ok(ExitCode::SUCCESS)
        }
        "" | "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
