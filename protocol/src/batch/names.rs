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

/// The longest table or column name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Whether `name` may name a table: 1 to [`MAX_NAME_BYTES`] bytes, no NUL, not reserved. The
/// error says which rule it breaks.
pub fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
        return Err("names must be 1-128 bytes without NUL");
    }
    if is_reserved(name) {
        return Err("outpost_*, _outpost*, _cloud* and sqlite_* names are reserved");
    }
    Ok(())
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
