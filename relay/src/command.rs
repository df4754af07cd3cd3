//! The front of a serving box's command line (`outpost-hub`, `outpost-cloud`), so that both
//! answer help, mistakes and failures alike: no arguments, or `-h`/`--help` anywhere, print the
//! usage and exit 0; a failure prints `PROGRAM: error: its causes` on stderr, then the usage when
//! the mistake was in the command line itself (an unknown command or option, a required flag
//! missing), and exits 1. Logging is switched on first ([`crate::logging::init`]).

use std::fmt;

/// What a command line asked for.
#[derive(Debug)]
pub enum Asked<A> {
    /// `-h` or `--help` among the options: the usage, nothing else.
    Help,
    /// A command to run, with its parsed options.
    Run(A),
}

/// Runs a box's command line from the process arguments: `parse` reads them (the program name
/// left out), `run` carries the command out. Returns only on success; exits 1 on failure.
pub fn main<A, E: fmt::Display>(
    program: &str,
    usage: &str,
    parse: impl FnOnce(std::iter::Peekable<std::env::Args>) -> Result<Asked<A>, E>,
    run: impl FnOnce(A) -> Result<(), E>,
) {
    crate::logging::init();
    let mut argv = std::env::args();
    argv.next();
    let mut argv = argv.peekable();
    if matches!(
        argv.peek().map(String::as_str),
        None | Some("-h" | "--help")
    ) {
        println!("{usage}");
        return;
    }
    let result = parse(argv).and_then(|asked| match asked {
        Asked::Help => {
            println!("{usage}");
            Ok(())
        }
        Asked::Run(args) => run(args),
    });
    if let Err(e) = result {
        // `{:#}` prints a context-chaining error with its causes.
        eprintln!("{program}: {e:#}");
        if is_usage_mistake(&e.to_string()) {
            eprintln!("{usage}");
        }
        std::process::exit(1);
    }
}

/// A mistake in the command line rather than a failure of the command: the parsers' messages
/// for these start with "unknown" (command, option) or say what is "required".
fn is_usage_mistake(message: &str) -> bool {
    message.starts_with("unknown") || message.contains("required")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_follows_only_command_line_mistakes() {
        assert!(is_usage_mistake("unknown option --frobnicate"));
        assert!(is_usage_mistake("--data DIR is required"));
        assert!(!is_usage_mistake(
            "opening /data/allowlist.db: disk I/O error"
        ));
    }
}
