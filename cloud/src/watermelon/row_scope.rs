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
    /// The scope a row the table no longer holds had, from its change-log entry read under the
    /// alias `l` ([`gone`]; NULL when it cannot be told).
    pub gone: String,
    /// For a token of named scopes, the SQL condition that a row read under the alias `t` is in
    /// them, written so SQLite can drive it from indexes (`t.clinic IN (...)`, or
    /// `t.patient_id IN (SELECT id FROM patients WHERE clinic IN (...))` down `via` chains);
    /// `None` for a token of every scope.
    pub within: Option<String>,
}

/// The scoped REST tables, by name (unscoped tables are not listed).
#[derive(Debug, Default)]
pub struct ScopedTables(BTreeMap<String, RowScope>);

/// Where a store's scope rules and `via` keys come from: the SQLite tenant's tracked tables, or
/// the PostgreSQL tenant's captured definitions. The SQL written from them is the same on both.
pub trait ScopeSchema {
    /// The scope rule of `table` (`None`: unscoped).
    fn rule(&self, table: &str) -> Option<ScopeRule>;
    /// The parent table and its key column that `table`'s `via` column `column` refers to.
    fn via_parent(&self, table: &str, column: &str) -> Result<Option<(String, String)>, RestError>;
    /// `table` as SQL names it (quoted, qualified where the store needs it).
    fn relation(&self, table: &str) -> String;
    /// The change log's table, as SQL names it.
    fn log_relation(&self) -> &'static str;
    /// A value the log keeps (`scope_value`, SQL `logged`) as a value of `table`'s `column`, to
    /// compare with it (the PostgreSQL log keeps text).
    fn logged_as(&self, table: &str, column: &str, logged: &str) -> String;
}

/// The SQLite tenant's rules (`_outpost_tables`) and foreign keys.
struct SqliteSchema<'c> {
    conn: &'c Connection,
    rules: BTreeMap<String, Option<ScopeRule>>,
}

impl ScopeSchema for SqliteSchema<'_> {
    fn rule(&self, table: &str) -> Option<ScopeRule> {
        self.rules
            .get(&table.to_ascii_lowercase())
            .cloned()
            .flatten()
    }

    fn via_parent(&self, table: &str, column: &str) -> Result<Option<(String, String)>, RestError> {
        Ok(crate::scope_rules::via_parent(self.conn, table, column)?)
    }

    fn relation(&self, table: &str) -> String {
        quote(table)
    }

    fn log_relation(&self) -> &'static str {
        "_cloud_rest_log"
    }

    fn logged_as(&self, _table: &str, _column: &str, logged: &str) -> String {
        logged.to_string()
    }
}

impl ScopedTables {
    /// The scoped tables among `tables`, as the tenant database tracks them, for a token of
    /// `scopes`.
    pub fn load(
        conn: &Connection,
        tables: &[String],
        scopes: &Scopes,
    ) -> Result<ScopedTables, RestError> {
        let schema = SqliteSchema {
            conn,
            rules: crate::scope_rules::tracked_rules(conn)?,
        };
        ScopedTables::from_schema(&schema, tables, scopes)
    }

    /// The scoped tables among `tables` by `schema`'s rules, for a token of `scopes`.
    pub fn from_schema(
        schema: &impl ScopeSchema,
        tables: &[String],
        scopes: &Scopes,
    ) -> Result<ScopedTables, RestError> {
        let mut out = BTreeMap::new();
        for t in tables {
            if let Some(rule) = schema.rule(t) {
                let expr = expr(schema, t, "t", 0)?;
                let gone = gone(schema, t, "l", 0)?;
                let within = match list(scopes) {
                    Some(list) => Some(within(schema, t, "t", &list, 0)?),
                    None => None,
                };
                out.insert(
                    t.clone(),
                    RowScope {
                        rule,
                        expr,
                        gone,
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
    schema: &impl ScopeSchema,
    table: &str,
    alias: &str,
    depth: usize,
) -> Result<String, RestError> {
    match schema.rule(table) {
        None => Ok("NULL".into()),
        Some(ScopeRule::Column(c)) => Ok(format!("{alias}.{}", quote(&c))),
        Some(ScopeRule::Via(c)) => {
            let Some((parent, key)) = schema.via_parent(table, &c)? else {
                return Ok("NULL".into());
            };
            if depth >= MAX_VIA_DEPTH {
                return Ok("NULL".into());
            }
            let p = format!("_s{depth}");
            let inner = expr(schema, &parent, &p, depth + 1)?;
            Ok(format!(
                "(SELECT {inner} FROM {} {p} WHERE {p}.{} = {alias}.{})",
                schema.relation(&parent),
                quote(&key),
                quote(&c)
            ))
        }
    }
}

/// The scope a row of `table` had when it went, from its change-log entry read under `log`:
/// the log keeps the scope cell (or `via` key) each row had when last logged (`scope_value`;
/// on PostgreSQL set as rows are deleted). For a `via` row, its parent's scope: the parent's
/// row if the table still holds it, else, when the key is the parent's `id`, what the parent's
/// own entry says. So a pull can name a row deleted outright to the tokens whose scopes held
/// it, and to no other.
fn gone(
    schema: &impl ScopeSchema,
    table: &str,
    log: &str,
    depth: usize,
) -> Result<String, RestError> {
    match schema.rule(table) {
        None => Ok("NULL".into()),
        Some(ScopeRule::Column(_)) => Ok(format!("{log}.scope_value")),
        Some(ScopeRule::Via(c)) => {
            let Some((parent, key)) = schema.via_parent(table, &c)? else {
                return Ok("NULL".into());
            };
            if depth >= MAX_VIA_DEPTH {
                return Ok("NULL".into());
            }
            let p = format!("_g{depth}");
            let live = format!(
                "(SELECT {} FROM {} {p} WHERE {p}.{} = {})",
                expr(schema, &parent, &p, depth + 1)?,
                schema.relation(&parent),
                quote(&key),
                schema.logged_as(&parent, &key, &format!("{log}.scope_value"))
            );
            if key != "id" {
                return Ok(live);
            }
            let pl = format!("_gl{depth}");
            Ok(format!(
                "coalesce({live}, (SELECT {} FROM {} {pl} WHERE {pl}.tbl = '{}' \
                 AND {pl}.id = {log}.scope_value))",
                gone(schema, &parent, &pl, depth + 1)?,
                schema.log_relation(),
                parent.replace('\'', "''")
            ))
        }
    }
}

/// The condition that a row of `table` read under `alias` is in the scopes `list` (`'a', 'b'`),
/// as nested `IN` subqueries rather than [`expr`]'s correlated ones: the database evaluates each
/// subquery once and looks the outer rows up by an index on the `via` key (the change log makes
/// one on every scope column and `via` key: `changelog.rs`, `postgres/rest_log.rs`).
fn within(
    schema: &impl ScopeSchema,
    table: &str,
    alias: &str,
    list: &str,
    depth: usize,
) -> Result<String, RestError> {
    match schema.rule(table) {
        None => Ok("false".into()),
        Some(ScopeRule::Column(c)) => Ok(format!("{alias}.{} IN ({list})", quote(&c))),
        Some(ScopeRule::Via(c)) => {
            let Some((parent, key)) = schema.via_parent(table, &c)? else {
                return Ok("false".into());
            };
            if depth >= MAX_VIA_DEPTH {
                return Ok("false".into());
            }
            let p = format!("_w{depth}");
            let inner = within(schema, &parent, &p, list, depth + 1)?;
            Ok(format!(
                "{alias}.{} IN (SELECT {p}.{} FROM {} {p} WHERE {inner})",
                quote(&c),
                quote(&key),
                schema.relation(&parent)
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
