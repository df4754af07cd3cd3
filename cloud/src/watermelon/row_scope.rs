//! Which scope a REST table's rows belong to, as SQL (docs/rest-api.md, "Scopes").
//!
//! The rules are the ones the tenant's tables are tracked with (`_outpost_tables.def`, the same
//! rules the cloud publishes as table settings: `scope_rules.rs`). A `Column` rule's scope is the
//! row's cell; a `via` rule's is its parent row's scope, reached through the foreign key (a
//! subquery on the parent's key, itself scoped by column or via its own parent). So a pull
//! filters and a push checks with the database's own indexes, never by loading rows.

use super::RestError;
use crate::schema::quote;
use outpost_protocol::scope::{ScopeRule, Scopes};
use rusqlite::Connection;
use std::collections::BTreeMap;

/// How deep `via` rules may chain (a cycle the engine would refuse stops here too).
const MAX_VIA_DEPTH: usize = 8;

/// The scope of one REST table's rows.
#[derive(Debug, Clone)]
pub struct RowScope {
    /// The rule.
    pub rule: ScopeRule,
    /// The SQL expression of a row's scope, reading the table under the alias `t` (NULL when
    /// the row, or its parent, holds none).
    pub expr: String,
    /// For a token of named scopes, the SQL condition that a row read under the alias `t` is in
    /// them, written so SQLite can drive it from indexes (`t.clinic IN (...)`, or
    /// `t.patient_id IN (SELECT id FROM patients WHERE clinic IN (...))` down `via` chains);
    /// `None` for a token of every scope.
    pub within: Option<String>,
}

/// The scoped REST tables, by name (unscoped tables are not listed).
#[derive(Debug, Default)]
pub struct ScopedTables(BTreeMap<String, RowScope>);

impl ScopedTables {
    /// The scoped tables among `tables`, as the tenant database tracks them, for a token of
    /// `scopes`.
    pub fn load(
        conn: &Connection,
        tables: &[String],
        scopes: &Scopes,
    ) -> Result<ScopedTables, RestError> {
        let rules = crate::scope_rules::tracked_rules(conn)?;
        let mut out = BTreeMap::new();
        for t in tables {
            if let Some(Some(rule)) = rules.get(&t.to_ascii_lowercase()) {
                let expr = expr(conn, &rules, t, "t", 0)?;
                let within = match list(scopes) {
                    Some(list) => Some(within(conn, &rules, t, "t", &list, 0)?),
                    None => None,
                };
                out.insert(
                    t.clone(),
                    RowScope {
                        rule: rule.clone(),
                        expr,
                        within,
                    },
                );
            }
        }
        Ok(ScopedTables(out))
    }

    /// How `table`'s rows get their scope; `None` for an unscoped table.
    pub fn get(&self, table: &str) -> Option<&RowScope> {
        self.0.get(table)
    }
}

/// The scope of a row of `table` read under `alias`, as SQL.
fn expr(
    conn: &Connection,
    rules: &BTreeMap<String, Option<ScopeRule>>,
    table: &str,
    alias: &str,
    depth: usize,
) -> Result<String, RestError> {
    let rule = rules.get(&table.to_ascii_lowercase()).cloned().flatten();
    match rule {
        None => Ok("NULL".into()),
        Some(ScopeRule::Column(c)) => Ok(format!("{alias}.{}", quote(&c))),
        Some(ScopeRule::Via(c)) => {
            let Some((parent, key)) = crate::scope_rules::via_parent(conn, table, &c)? else {
                return Ok("NULL".into());
            };
            if depth >= MAX_VIA_DEPTH {
                return Ok("NULL".into());
            }
            let p = format!("_s{depth}");
            let inner = expr(conn, rules, &parent, &p, depth + 1)?;
            Ok(format!(
                "(SELECT {inner} FROM {} {p} WHERE {p}.{} = {alias}.{})",
                quote(&parent),
                quote(&key),
                quote(&c)
            ))
        }
    }
}

/// The condition that a row of `table` read under `alias` is in the scopes `list` (`'a', 'b'`),
/// as nested `IN` subqueries rather than [`expr`]'s correlated ones: SQLite evaluates each
/// subquery once and looks the outer rows up by an index on the `via` key (the change log makes
/// one on every scope column and `via` key: `changelog.rs`).
fn within(
    conn: &Connection,
    rules: &BTreeMap<String, Option<ScopeRule>>,
    table: &str,
    alias: &str,
    list: &str,
    depth: usize,
) -> Result<String, RestError> {
    let rule = rules.get(&table.to_ascii_lowercase()).cloned().flatten();
    match rule {
        None => Ok("0".into()),
        Some(ScopeRule::Column(c)) => Ok(format!("{alias}.{} IN ({list})", quote(&c))),
        Some(ScopeRule::Via(c)) => {
            let Some((parent, key)) = crate::scope_rules::via_parent(conn, table, &c)? else {
                return Ok("0".into());
            };
            if depth >= MAX_VIA_DEPTH {
                return Ok("0".into());
            }
            let p = format!("_w{depth}");
            let inner = within(conn, rules, &parent, &p, list, depth + 1)?;
            Ok(format!(
                "{alias}.{} IN (SELECT {p}.{} FROM {} {p} WHERE {inner})",
                quote(&c),
                quote(&key),
                quote(&parent)
            ))
        }
    }
}

/// Whether `scopes` hold a row whose scope is `scope` (`None`: the row has none, which only a
/// token granted every scope holds).
pub fn holds(scopes: &Scopes, scope: Option<&str>) -> bool {
    match (scopes, scope) {
        (Scopes::All, _) => true,
        (Scopes::Only(set), Some(s)) => set.contains(s),
        (Scopes::Only(_), None) => false,
    }
}

/// `'a', 'b'` for a token's named scopes (names are of `[A-Za-z0-9_.-]`, quoted all the same);
/// `None` for every scope.
fn list(scopes: &Scopes) -> Option<String> {
    match scopes {
        Scopes::All => None,
        Scopes::Only(set) if set.is_empty() => Some("NULL".into()),
        Scopes::Only(set) => Some(
            set.iter()
                .map(|s| format!("'{}'", s.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}
