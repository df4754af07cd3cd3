//! Names a batch may not give a table or a column: those of SQLite's, the engine's and the cloud's
//! own tables. A batch header names tables and columns that receivers create (the cloud) or match
//! against the tables they track (devices); a header naming, say, `outpost_quarantine` made the
//! cloud track and expose its own engine table (issue 16, finding 4). The same check runs in the
//! cloud's schema step and in the device's `outpost_track`, so no replica tracks what another
//! refuses.

/// The reserved prefixes, compared without ASCII case: a name starting with any of them is refused.
pub const RESERVED_PREFIXES: [&str; 4] = ["outpost_", "_outpost", "_cloud", "sqlite_"];

/// True when `name` starts with a reserved prefix (ASCII case ignored, as SQLite compares names).
pub fn is_reserved(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| {
        name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_cloud_and_sqlite_names_are_reserved_in_any_case() {
        for name in [
            "outpost_quarantine",
            "OUTPOST_QUARANTINE",
            "Outpost_conflicts",
            "_outpost_rows",
            "_OUTPOSTX",
            "_cloud_rest_log",
            "_Cloud",
            "sqlite_master",
            "SQLITE_sequence",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in [
            "patients",
            "outpost",
            "outposts",
            "cloud",
            "sqlite",
            "é_outpost",
            "",
        ] {
            assert!(!is_reserved(name), "{name}");
        }
    }
}
