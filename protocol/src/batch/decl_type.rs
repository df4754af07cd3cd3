//! Declared column types as data: a closed set, never text from a peer.
//!
//! A batch header carries each column's declared type as its origin's `CREATE TABLE` spelled it;
//! the cloud creates its tables from it. Copying that text into DDL let a header declare
//! `TEXT AS (abs(-9223372036854775807 - 1))`, `CHECK (...)`, `DEFAULT (...)` or
//! `REFERENCES ... ON DELETE CASCADE` (issue 16, finding 5). [`reduce`] maps the accepted type
//! names to one of seven fixed spellings ([`DeclType::sql`]) and refuses everything else, so only
//! those spellings ever reach SQL.
//!
//! **Accepted** (ASCII case ignored, words separated by blanks, at most 64 bytes), each optionally
//! followed by `(n)` or `(n, m)` with `n`, `m` signed integers of at most 10 digits (ignored, as
//! SQLite ignores them), reduced by SQLite's affinity rules (datatype3.html, section 3.1):
//!
//! | declared | reduced to |
//! |---|---|
//! | `INTEGER` | `INTEGER` |
//! | `INT`, `TINYINT`, `SMALLINT`, `MEDIUMINT`, `BIGINT`, `UNSIGNED BIG INT`, `INT2`, `INT4`, `INT8` | `INT` |
//! | `TEXT`, `CHARACTER`, `VARCHAR`, `VARYING CHARACTER`, `NCHAR`, `NATIVE CHARACTER`, `NVARCHAR`, `CHAR`, `CLOB` | `TEXT` |
//! | `BLOB` | `BLOB` |
//! | (empty) | (empty: no declared type) |
//! | `REAL`, `DOUBLE`, `DOUBLE PRECISION`, `FLOAT` | `REAL` |
//! | `NUMERIC`, `DECIMAL`, `BOOLEAN`, `BOOL`, `DATE`, `DATETIME`, `TIMESTAMP`, `TIME` | `NUMERIC` |
//!
//! `INTEGER` and `INT` have the same affinity but are kept apart: only `INTEGER PRIMARY KEY`
//! makes the key the rowid, and a reduction must not change which tables have that.

/// A declared type the cloud will write into DDL: one of seven fixed spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclType {
    /// No declared type (BLOB affinity).
    None,
    /// `INTEGER` (integer affinity; the rowid when it is the whole primary key).
    Integer,
    /// `INT` (integer affinity, never the rowid).
    Int,
    /// `TEXT` (text affinity).
    Text,
    /// `BLOB` (BLOB affinity).
    Blob,
    /// `REAL` (real affinity).
    Real,
    /// `NUMERIC` (numeric affinity).
    Numeric,
}

impl DeclType {
    /// The spelling written into DDL (empty for [`DeclType::None`]).
    pub fn sql(self) -> &'static str {
        match self {
            DeclType::None => "",
            DeclType::Integer => "INTEGER",
            DeclType::Int => "INT",
            DeclType::Text => "TEXT",
            DeclType::Blob => "BLOB",
            DeclType::Real => "REAL",
            DeclType::Numeric => "NUMERIC",
        }
    }
}

/// The longest declared type accepted, in bytes.
pub const MAX_DECL_TYPE_BYTES: usize = 64;

/// The accepted type names (blank-separated words, upper case) and what each reduces to.
const NAMES: [(&str, DeclType); 32] = [
    ("INTEGER", DeclType::Integer),
    ("INT", DeclType::Int),
    ("TINYINT", DeclType::Int),
    ("SMALLINT", DeclType::Int),
    ("MEDIUMINT", DeclType::Int),
    ("BIGINT", DeclType::Int),
    ("UNSIGNED BIG INT", DeclType::Int),
    ("INT2", DeclType::Int),
    ("INT4", DeclType::Int),
    ("INT8", DeclType::Int),
    ("TEXT", DeclType::Text),
    ("CHARACTER", DeclType::Text),
    ("VARCHAR", DeclType::Text),
    ("VARYING CHARACTER", DeclType::Text),
    ("NCHAR", DeclType::Text),
    ("NATIVE CHARACTER", DeclType::Text),
    ("NVARCHAR", DeclType::Text),
    ("CHAR", DeclType::Text),
    ("CLOB", DeclType::Text),
    ("BLOB", DeclType::Blob),
    ("REAL", DeclType::Real),
    ("DOUBLE", DeclType::Real),
    ("DOUBLE PRECISION", DeclType::Real),
    ("FLOAT", DeclType::Real),
    ("NUMERIC", DeclType::Numeric),
    ("DECIMAL", DeclType::Numeric),
    ("BOOLEAN", DeclType::Numeric),
    ("BOOL", DeclType::Numeric),
    ("DATE", DeclType::Numeric),
    ("DATETIME", DeclType::Numeric),
    ("TIMESTAMP", DeclType::Numeric),
    ("TIME", DeclType::Numeric),
];

/// Reduces a declared type to the closed set, or `None` when it is not an accepted type name.
pub fn reduce(decl: &str) -> Option<DeclType> {
    if decl.len() > MAX_DECL_TYPE_BYTES {
        return None;
    }
    let (name, args) = match decl.find('(') {
        Some(at) => (&decl[..at], Some(&decl[at..])),
        None => (decl, None),
    };
    if let Some(args) = args {
        if !size_arguments(args) {
            return None;
        }
    }
    let mut words = name.split_ascii_whitespace();
    let Some(first) = words.next() else {
        // No words: the empty type, but not `(10)` alone.
        return args.is_none().then_some(DeclType::None);
    };
    let rest: [Option<&str>; 3] = [words.next(), words.next(), words.next()];
    if rest[2].is_some() {
        return None;
    }
    NAMES.iter().find_map(|&(known, reduced)| {
        let mut k = known.split(' ');
        let same = |w: Option<&str>, k: Option<&str>| match (w, k) {
            (Some(w), Some(k)) => w.eq_ignore_ascii_case(k),
            (None, None) => true,
            _ => false,
        };
        (same(Some(first), k.next()) && same(rest[0], k.next()) && same(rest[1], k.next()))
            .then_some(reduced)
    })
}

/// `(n)` or `(n, m)`: signed integers of at most 10 digits, blanks around them allowed.
fn size_arguments(args: &str) -> bool {
    let Some(inner) = args
        .strip_prefix('(')
        .and_then(|a| a.trim_end().strip_suffix(')'))
    else {
        return false;
    };
    let number = |s: &str| {
        let s = s.trim_ascii();
        let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
        !digits.is_empty() && digits.len() <= 10 && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let mut parts = inner.split(',');
    let ok = parts.next().is_some_and(number);
    match (parts.next(), parts.next()) {
        (None, _) => ok,
        (Some(m), None) => ok && number(m),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_reduce_to_their_affinity() {
        for (decl, want) in [
            ("", DeclType::None),
            ("  ", DeclType::None),
            ("integer", DeclType::Integer),
            ("INTEGER", DeclType::Integer),
            ("BIGINT", DeclType::Int),
            ("unsigned  big int", DeclType::Int),
            ("VARCHAR(255)", DeclType::Text),
            ("varchar ( 255 )", DeclType::Text),
            ("NATIVE CHARACTER(70)", DeclType::Text),
            ("TEXT", DeclType::Text),
            ("BLOB", DeclType::Blob),
            ("DOUBLE PRECISION", DeclType::Real),
            ("FLOAT", DeclType::Real),
            ("DECIMAL(10,5)", DeclType::Numeric),
            ("DECIMAL(10, -5)", DeclType::Numeric),
            ("BOOLEAN", DeclType::Numeric),
            ("date", DeclType::Numeric),
            ("DATETIME", DeclType::Numeric),
            ("TIME", DeclType::Numeric),
        ] {
            assert_eq!(reduce(decl), Some(want), "{decl:?}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for decl in [
            "TEXT AS (abs(-9223372036854775807 - 1))",
            "TEXT GENERATED ALWAYS AS (1)",
            "TEXT CHECK (length(x) > 0)",
            "INTEGER DEFAULT (0)",
            "TEXT DEFAULT 5",
            "TEXT REFERENCES patients ON DELETE CASCADE",
            "TEXT COLLATE NOCASE",
            "TEXT NOT NULL",
            "TEXT); DROP TABLE patients; --",
            "TEXT'",
            "VARCHAR(",
            "VARCHAR(1,2,3)",
            "VARCHAR(abc)",
            "VARCHAR(12345678901)",
            "(10)",
            "UUID",
            "STRING",
            "INT INT",
            "TEXT\u{0}",
            &"TEXT ".repeat(20),
        ] {
            assert_eq!(reduce(decl), None, "{decl:?}");
        }
    }
}
