//! Scopes and grants (docs/design.md section 10, "Scopes"): a tenant is divided into scopes (a
//! clinic, a health worker's catchment), and each device, hub and REST token is granted a set
//! of them.
//!
//! A **scope name** is 1-64 bytes of `[A-Za-z0-9_.-]`: it appears in scope cells, stream ids,
//! commands and status, and that alphabet keeps it safe in all of them. `*` means every scope
//! (the default grant); the empty stream is the one of unscoped tables, which belong to every
//! grant.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// The longest scope name, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;
/// The grant of every scope.
pub const ALL: &str = "*";
/// The most scopes one grant names.
pub const MAX_SCOPES_PER_GRANT: usize = 64;
/// The most bytes of scope names one grant holds (so a grant fits one control entry).
pub const MAX_GRANT_NAME_BYTES: usize = 1024;

/// Where a table's rows get their scope, as a batch's table schema carries it: an index into the
/// table's columns (docs/design.md section 10, "Scopes"). Decoders check it names a non-key
/// column, or for `Via` the one column of a foreign key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ScopeColumn {
    /// Tag 0: the row's scope is this column's text value.
    Column(u16),
    /// Tag 1: the row follows the scope of the parent row that this foreign-key column names.
    Via(u16),
}

/// A table's scope rule by column name, as the tenant's table settings state it and
/// `outpost_track` declares it (`{"scope": "clinic"}`, `{"scope": {"via": "patient_id"}}`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ScopeRule {
    /// Tag 0: the row's scope is this column's text value.
    Column(String),
    /// Tag 1: the row follows its parent through this foreign-key column.
    Via(String),
}

impl ScopeRule {
    /// The rule's column name.
    pub fn column(&self) -> &str {
        match self {
            ScopeRule::Column(c) | ScopeRule::Via(c) => c,
        }
    }
}

impl fmt::Display for ScopeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeRule::Column(c) => write!(f, "scope column \"{c}\""),
            ScopeRule::Via(c) => write!(f, "scope via \"{c}\""),
        }
    }
}

/// Why a scope name or a grant's scope list was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeError {
    /// The name is empty, longer than [`MAX_SCOPE_LEN`] bytes, or holds a byte outside
    /// `[A-Za-z0-9_.-]`.
    BadName {
        /// The name (cut to 80 characters).
        name: String,
    },
    /// More than [`MAX_SCOPES_PER_GRANT`] scopes, or more than [`MAX_GRANT_NAME_BYTES`] bytes
    /// of names.
    TooMany {
        /// How many.
        count: usize,
    },
    /// `*` given with other scopes.
    AllWithOthers,
    /// No scope at all (a grant of nothing is a revocation: say so with `revoke`).
    Empty,
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::BadName { name } => write!(
                f,
                "scope {name:?}: a scope is 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'"
            ),
            ScopeError::TooMany { count } => write!(
                f,
                "{count} scopes in one grant; at most {MAX_SCOPES_PER_GRANT}, of at most \
                 {MAX_GRANT_NAME_BYTES} bytes of names in all"
            ),
            ScopeError::AllWithOthers => f.write_str("'*' (every scope) stands alone in a grant"),
            ScopeError::Empty => f.write_str("a grant names at least one scope ('*' for all)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ScopeError {}

/// Checks a scope name (not `*`).
pub fn check_name(name: &str) -> Result<(), ScopeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCOPE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ScopeError::BadName {
            name: name.chars().take(80).collect(),
        })
    }
}

/// What a grant covers: every scope, or the named ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scopes {
    /// `*`: every scope, present and future.
    All,
    /// These scopes (sorted, distinct, each a valid name).
    Only(BTreeSet<String>),
}

impl Scopes {
    /// Reads a grant's scope list as given on a command line or in JSON (`a,b` split by the
    /// caller): `["*"]` is every scope; otherwise distinct valid names.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, ScopeError> {
        let names: Vec<&str> = names.into_iter().map(str::trim).collect();
        if names.is_empty() || names.iter().all(|n| n.is_empty()) {
            return Err(ScopeError::Empty);
        }
        if names.contains(&ALL) {
            return if names.len() == 1 {
                Ok(Scopes::All)
            } else {
                Err(ScopeError::AllWithOthers)
            };
        }
        let mut set = BTreeSet::new();
        for n in names {
            check_name(n)?;
            set.insert(String::from(n));
        }
        let scopes = Scopes::Only(set);
        scopes.check()?;
        Ok(scopes)
    }

    /// Whether `scope` is granted (the unscoped stream `""` always is).
    pub fn contains(&self, scope: &str) -> bool {
        scope.is_empty()
            || match self {
                Scopes::All => true,
                Scopes::Only(s) => s.contains(scope),
            }
    }

    /// Whether every scope of `other` is in this grant (a hub grants within its own).
    pub fn covers(&self, other: &Scopes) -> bool {
        match (self, other) {
            (Scopes::All, _) => true,
            (Scopes::Only(_), Scopes::All) => false,
            (Scopes::Only(mine), Scopes::Only(theirs)) => theirs.is_subset(mine),
        }
    }

    /// The scopes in both grants; `None` when they share none.
    pub fn intersect(&self, other: &Scopes) -> Option<Scopes> {
        let both = match (self, other) {
            (Scopes::All, x) | (x, Scopes::All) => x.clone(),
            (Scopes::Only(a), Scopes::Only(b)) => {
                Scopes::Only(a.intersection(b).cloned().collect())
            }
        };
        match &both {
            Scopes::Only(s) if s.is_empty() => None,
            _ => Some(both),
        }
    }

    /// Whether every scope of this grant is in `other` (`*` only within `*`).
    pub fn within(&self, other: &Scopes) -> bool {
        match (self, other) {
            (_, Scopes::All) => true,
            (Scopes::All, Scopes::Only(_)) => false,
            (Scopes::Only(a), Scopes::Only(b)) => a.is_subset(b),
        }
    }

    /// The scopes in either grant.
    pub fn union(&self, other: &Scopes) -> Scopes {
        match (self, other) {
            (Scopes::All, _) | (_, Scopes::All) => Scopes::All,
            (Scopes::Only(a), Scopes::Only(b)) => Scopes::Only(a.union(b).cloned().collect()),
        }
    }

    /// The names, `["*"]` for every scope: how commands, status and JSON show a grant.
    pub fn names(&self) -> Vec<String> {
        match self {
            Scopes::All => alloc::vec![String::from(ALL)],
            Scopes::Only(s) => s.iter().cloned().collect(),
        }
    }

    /// Checks a decoded value: the names of an `Only` set valid, at most
    /// [`MAX_SCOPES_PER_GRANT`], at least one.
    pub fn check(&self) -> Result<(), ScopeError> {
        match self {
            Scopes::All => Ok(()),
            Scopes::Only(s) if s.is_empty() => Err(ScopeError::Empty),
            Scopes::Only(s)
                if s.len() > MAX_SCOPES_PER_GRANT
                    || s.iter().map(String::len).sum::<usize>() > MAX_GRANT_NAME_BYTES =>
            {
                Err(ScopeError::TooMany { count: s.len() })
            }
            Scopes::Only(s) => s.iter().try_for_each(|n| check_name(n)),
        }
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn names_lists_and_coverage() {
        assert!(check_name("moshi").is_ok());
        assert!(check_name("tanga-2.north_A").is_ok());
        for bad in ["", "*", "a b", "é", "x/y", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Scopes::parse(["*"]), Ok(Scopes::All));
        assert_eq!(Scopes::parse(["*", "a"]), Err(ScopeError::AllWithOthers));
        assert_eq!(Scopes::parse([""]), Err(ScopeError::Empty));
        let ab = Scopes::parse(["b", "a", "a"]).unwrap();
        assert_eq!(ab.names(), ["a", "b"]);
        assert_eq!(ab.to_string(), "a,b");
        assert!(ab.contains("a") && ab.contains("") && !ab.contains("c"));
        let a = Scopes::parse(["a"]).unwrap();
        assert!(ab.covers(&a) && !a.covers(&ab));
        assert!(Scopes::All.covers(&ab) && !ab.covers(&Scopes::All));
        assert_eq!(Scopes::All.intersect(&a), Some(a.clone()));
        assert_eq!(ab.intersect(&Scopes::All), Some(ab.clone()));
        assert_eq!(ab.intersect(&a), Some(a.clone()));
        let c = Scopes::parse(["c"]).unwrap();
        assert_eq!(ab.intersect(&c), None);
        let many: Vec<String> = (0..65).map(|i| alloc::format!("s{i}")).collect();
        assert_eq!(
            Scopes::parse(many.iter().map(String::as_str)),
            Err(ScopeError::TooMany { count: 65 })
        );
    }
}
