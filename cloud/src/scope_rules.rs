//! The tenant's scope rules (docs/design.md section 10, "Scopes"): which column gives each
//! table's rows their scope, learned from batch headers and published in the cloud's control
//! stream as part of the tenant's table settings.
//!
//! A table's rule is the tenant's once it is known: from a cloud control entry naming it scoped,
//! else from the table's definition in the tenant database (tracked unscoped or scoped). A batch
//! header naming a table the tenant knows must state the same rule (scoped by the same column,
//! or both unscoped); a batch that states another is refused alone ([`TenantRules::judge`]), the
//! same on every replica, because rows written under one rule cannot be routed by another. A
//! header naming a table the tenant does not know yet makes its rule the tenant's: the cloud
//! writes the control entry first, then creates or tracks the table with that scope option
//! (`schema.rs`), so an interruption between the two leaves the entry, which the next batch is
//! judged against.

use crate::schema::SchemaError;
use outpost_protocol::batch::TableSchema;
use outpost_protocol::control::Directory;
use outpost_protocol::scope::{ScopeColumn, ScopeRule};
use rusqlite::Connection;
use std::collections::BTreeMap;

/// How a rule reads in reasons and status: `unscoped`, `scoped by column "clinic"`, `scoped via
/// "patient_id"`.
pub fn describe(rule: Option<&ScopeRule>) -> String {
    match rule {
        None => "unscoped".into(),
        Some(ScopeRule::Column(c)) => format!("scoped by column {c:?}"),
        Some(ScopeRule::Via(c)) => format!("scoped via {c:?}"),
    }
}

/// The rule as `status --json` shows it (the form `outpost_track` takes): `"clinic"`,
/// `{"via": "patient_id"}`, or `null`.
pub fn to_json(rule: Option<&ScopeRule>) -> serde_json::Value {
    match rule {
        None => serde_json::Value::Null,
        Some(ScopeRule::Column(c)) => c.as_str().into(),
        Some(ScopeRule::Via(c)) => serde_json::json!({ "via": c }),
    }
}

/// Whether two rules are the same (column names ignore ASCII case, as SQLite's do).
pub fn same(a: Option<&ScopeRule>, b: Option<&ScopeRule>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(ScopeRule::Column(x)), Some(ScopeRule::Column(y)))
        | (Some(ScopeRule::Via(x)), Some(ScopeRule::Via(y))) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

/// The scope rule of every table tracked in the tenant database, by ASCII-lowercase name, as
/// its definition (`_outpost_tables.def`, the engine's JSON: `"scope": {"column": c}` or
/// `{"via": c}`) states it; `None` for a table tracked unscoped.
pub fn tracked_rules(
    conn: &Connection,
) -> Result<BTreeMap<String, Option<ScopeRule>>, SchemaError> {
    let read = || -> rusqlite::Result<BTreeMap<String, Option<ScopeRule>>> {
        let has: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = '_outpost_tables'",
            [],
            |r| r.get(0),
        )?;
        if has == 0 {
            return Ok(BTreeMap::new());
        }
        let mut stmt = conn.prepare_cached(
            "SELECT name, json_extract(def, '$.scope.column'), json_extract(def, '$.scope.via') \
             FROM _outpost_tables",
        )?;
        let rows = stmt.query_map([], |r| {
            let name: String = r.get(0)?;
            let rule = match (
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ) {
                (Some(c), _) => Some(ScopeRule::Column(c)),
                (None, Some(v)) => Some(ScopeRule::Via(v)),
                (None, None) => None,
            };
            Ok((name.to_ascii_lowercase(), rule))
        })?;
        rows.collect()
    };
    read().map_err(|source| SchemaError::ReadTracked { source })
}

/// The parent table and the parent's key column that `table`'s single-column foreign key
/// `column` names; `None` when there is no such key.
pub fn via_parent(
    conn: &Connection,
    table: &str,
    column: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    let mut stmt =
        conn.prepare("SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1)")?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let single = |id: i64| rows.iter().filter(|r| r.0 == id).count() == 1;
    let Some((_, parent, _, to)) = rows
        .iter()
        .find(|r| r.2.eq_ignore_ascii_case(column) && single(r.0))
    else {
        return Ok(None);
    };
    let key = match to {
        Some(to) => to.clone(),
        None => {
            let pk: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0")?
                .query_map([parent], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            match <[String; 1]>::try_from(pk) {
                Ok([k]) => k,
                Err(_) => return Ok(None),
            }
        }
    };
    Ok(Some((parent.clone(), key)))
}

/// What the tenant knows of each table's scope rule, by ASCII-lowercase name.
#[derive(Debug, Default, Clone)]
pub struct TenantRules {
    /// `Some(rule)`: scoped; `None`: unscoped. Tables not named are not known yet.
    known: BTreeMap<String, Option<ScopeRule>>,
}

impl TenantRules {
    /// The rules as the cloud's control entries and the tenant database state them (a control
    /// entry naming a scope wins; an entry naming none, such as a direction declared before the
    /// table had data, leaves the table unknown until the tenant tracks it).
    pub fn load(conn: &Connection, directory: &Directory) -> Result<TenantRules, SchemaError> {
        Ok(TenantRules::from_known(tracked_rules(conn)?, directory))
    }

    /// The rules of the tables a tenant holds (`known`, by ASCII-lowercase name), with the
    /// cloud's control entries' over them, as [`TenantRules::load`] reads them from SQLite.
    pub fn from_known(
        mut known: BTreeMap<String, Option<ScopeRule>>,
        directory: &Directory,
    ) -> TenantRules {
        for (name, entry) in directory.table_settings() {
            if let Some(rule) = &entry.scope {
                known.insert(name.to_ascii_lowercase(), Some(rule.clone()));
            }
        }
        TenantRules { known }
    }

    /// The rule of `table`: `None` when the tenant does not know the table yet, `Some(None)`
    /// when it is unscoped.
    pub fn rule_of(&self, table: &str) -> Option<Option<&ScopeRule>> {
        self.known
            .get(&table.to_ascii_lowercase())
            .map(Option::as_ref)
    }

    /// Judges a batch header's tables: `Err(reason)` when one states another rule than the
    /// tenant's; else the rules the header declares for tables the tenant does not know yet
    /// (by the header's table name), which become the tenant's.
    pub fn judge(&self, tables: &[TableSchema]) -> Result<Vec<(String, ScopeRule)>, String> {
        let mut new = Vec::new();
        for t in tables {
            let stated = t.scope_rule();
            match self.rule_of(&t.name) {
                Some(tenant) if !same(tenant, stated.as_ref()) => {
                    return Err(format!(
                        "table {:?} is {} in the tenant but {} in this batch's header: rows \
                         written under one scope rule cannot be routed by another",
                        t.name,
                        describe(tenant),
                        describe(stated.as_ref())
                    ));
                }
                Some(_) => {}
                None => {
                    if let Some(rule) = stated {
                        new.push((t.name.clone(), rule));
                    }
                }
            }
            if let Some(ScopeColumn::Via(c)) = t.scope {
                self.check_via_parent(t, c, tables)?;
            }
        }
        Ok(new)
    }

    /// A table scoped `via` a foreign key follows a parent that must be scoped: by this header
    /// or by the tenant (the engine tracks a `via` table only under a scoped parent).
    fn check_via_parent(
        &self,
        t: &TableSchema,
        via: u16,
        tables: &[TableSchema],
    ) -> Result<(), String> {
        let Some(parent) = t
            .foreign_keys
            .iter()
            .find(|fk| fk.columns == [via])
            .map(|fk| &fk.parent)
        else {
            return Ok(()); // decoders refuse a via column that is no foreign key
        };
        let scoped = match tables.iter().find(|o| o.name.eq_ignore_ascii_case(parent)) {
            Some(o) => o.scope.is_some(),
            None => matches!(self.rule_of(parent), Some(Some(_))),
        };
        if scoped {
            Ok(())
        } else {
            Err(format!(
                "table {:?} is scoped via a key to {parent:?}, which is not scoped in this batch's \
                 header nor in the tenant: a row can follow only a scoped parent",
                t.name
            ))
        }
    }

    /// Records the rules of a header whose batch was accepted (its tables now exist here).
    pub fn learn(&mut self, tables: &[TableSchema]) {
        for t in tables {
            self.known
                .entry(t.name.to_ascii_lowercase())
                .or_insert_with(|| t.scope_rule());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::batch::{ColumnSchema, ForeignKey};
    use outpost_protocol::Strategy;

    fn table(name: &str, scope: Option<ScopeColumn>) -> TableSchema {
        let col = |n: &str| ColumnSchema {
            name: n.into(),
            decl_type: "TEXT".into(),
            strategy: Strategy::Lww,
            not_null: false,
        };
        TableSchema {
            name: name.into(),
            columns: vec![col("id"), col("clinic"), col("patient_id")],
            primary_key: vec![0],
            foreign_keys: vec![ForeignKey {
                columns: vec![2],
                parent: "patients".into(),
                parent_columns: vec![],
            }],
            scope,
        }
    }

    #[test]
    fn a_header_adopts_unknown_rules_and_must_match_known_ones() {
        let mut rules = TenantRules::default();
        let scoped = table("patients", Some(ScopeColumn::Column(1)));
        assert_eq!(
            rules.judge(std::slice::from_ref(&scoped)),
            Ok(vec![(
                "patients".to_string(),
                ScopeRule::Column("clinic".into())
            )])
        );
        rules.learn(std::slice::from_ref(&scoped));
        assert_eq!(rules.judge(std::slice::from_ref(&scoped)), Ok(vec![]));
        let upper = TableSchema {
            name: "Patients".into(),
            ..scoped.clone()
        };
        assert_eq!(rules.judge(&[upper]), Ok(vec![]), "names ignore case");
        let unscoped = rules.judge(&[table("patients", None)]).unwrap_err();
        assert!(
            unscoped.contains("scoped by column \"clinic\" in the tenant but unscoped"),
            "{unscoped}"
        );
        let via = rules
            .judge(&[table("patients", Some(ScopeColumn::Via(2)))])
            .unwrap_err();
        assert!(via.contains("but scoped via \"patient_id\""), "{via}");

        let orphan = TableSchema {
            name: "visits".into(),
            ..table("visits", Some(ScopeColumn::Via(2)))
        };
        assert_eq!(
            rules.judge(std::slice::from_ref(&orphan)),
            Ok(vec![(
                "visits".to_string(),
                ScopeRule::Via("patient_id".into())
            )]),
            "its parent is scoped in the tenant"
        );
        let mut unscoped_parent = TenantRules::default();
        unscoped_parent.learn(&[table("patients", None)]);
        let why = unscoped_parent.judge(&[orphan]).unwrap_err();
        assert!(why.contains("which is not scoped"), "{why}");

        rules.learn(&[table("forms", None)]);
        let late = rules
            .judge(&[table("forms", Some(ScopeColumn::Column(1)))])
            .unwrap_err();
        assert!(
            late.contains("\"forms\" is unscoped in the tenant but scoped by column"),
            "{late}"
        );
    }
}
