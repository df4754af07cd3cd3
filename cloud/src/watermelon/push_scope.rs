//! A push's records of scoped tables checked against the token's scopes (docs/rest-api.md,
//! "Scopes"), inside the push's transaction, so a refusal writes nothing.

use super::plan::Scalar;
use super::row_scope::{holds, RowScope};
use super::{InvalidPush, PushError};
use crate::schema::quote;
use outpost_protocol::scope::{ScopeRule, Scopes};
use rusqlite::{Connection, OptionalExtension};

/// Checks a created or updated record of a scoped table against the token's scopes, before it
/// is written (docs/rest-api.md, "Scopes"): a row that exists must be in the token's scopes
/// (`current`: its scope); a scope cell written must hold a scope name; a row created by column
/// must name one of the token's scopes. (A row created `via` a parent is checked once the push
/// is written: its parent may come later in it.) An update that changes the scope cell of a row
/// the token holds is a referral: any scope name passes.
pub fn check_write(
    table: &str,
    id: &str,
    scope: &RowScope,
    scope_column: Option<(usize, &str)>,
    current: Option<Option<&str>>,
    written: &[(usize, Scalar<'_>)],
    scopes: &Scopes,
) -> Result<(), PushError> {
    let refused = |scope: Option<&str>| {
        PushError::Invalid(InvalidPush::ScopeNotGranted {
            table: table.to_string(),
            id: id.to_string(),
            scope: scope.map(str::to_string),
        })
    };
    if let Some(current) = current {
        if !holds(scopes, current) {
            return Err(refused(current));
        }
    }
    let ScopeRule::Column(column) = &scope.rule else {
        return Ok(());
    };
    let cell = scope_column.and_then(|(i, _)| written.iter().find(|(c, _)| *c == i));
    let bad = || {
        PushError::Invalid(InvalidPush::BadScope {
            table: table.to_string(),
            id: id.to_string(),
            column: scope_column.map_or(column.as_str(), |(_, c)| c).to_string(),
        })
    };
    match (cell, current) {
        // An update leaving the scope cell as it is.
        (None, Some(_)) => Ok(()),
        (None, None) => Err(bad()),
        (Some((_, Scalar::Text(name))), _) => {
            outpost_protocol::scope::check_name(name).map_err(|_| bad())?;
            if current.is_none() && !holds(scopes, Some(name)) {
                return Err(refused(Some(name)));
            }
            Ok(())
        }
        (Some(_), _) => Err(bad()),
    }
}

/// Checks the records created in tables scoped `via` a parent, `(table, id, via column, scope
/// expression)`, once the whole push is written (a parent may come after its child in the
/// body): each must follow a parent row with a scope the token holds. `scope_of(table, id,
/// expression)` reads a written row's scope in the push's transaction.
pub fn check_followers(
    follow_parent: &[(&str, &str, &str, &str)],
    scopes: &Scopes,
    mut scope_of: impl FnMut(&str, &str, &str) -> Result<Option<String>, PushError>,
) -> Result<(), PushError> {
    for &(table, id, column, expr) in follow_parent {
        match scope_of(table, id, expr)? {
            None => {
                return Err(PushError::Invalid(InvalidPush::NoParentScope {
                    table: table.to_string(),
                    id: id.to_string(),
                    column: column.to_string(),
                }))
            }
            Some(s) if !holds(scopes, Some(&s)) => {
                return Err(PushError::Invalid(InvalidPush::ScopeNotGranted {
                    table: table.to_string(),
                    id: id.to_string(),
                    scope: Some(s),
                }))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// [`check_followers`]'s reading of a row's scope on the SQLite tenant.
pub fn sqlite_scope_of(
    tx: &Connection,
    table: &str,
    id: &str,
    expr: &str,
) -> Result<Option<String>, PushError> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT CAST({expr} AS TEXT) FROM {} t WHERE t.\"id\" = ?1",
            quote(table)
        ))?
        .query_row([id], |row| row.get(0))
        .optional()?
        .flatten())
}
