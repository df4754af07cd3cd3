//! What the cloud's role must be allowed in the tenant's database, checked before anything is
//! written so a missing right is named with the `GRANT` that gives it (instead of PostgreSQL's
//! "permission denied" halfway through a schema change):
//! - `CREATE` on the database, to make the `outpost` schema (once it exists, `CREATE` and
//!   `USAGE` on it instead);
//! - `CREATE` and `USAGE` on the schema the app's tables live in ([`super::app_tables::SCHEMA`]);
//! - on an app table that exists already (made by a back office, or by another role):
//!   `SELECT`, `INSERT`, `UPDATE`, `DELETE` and `TRIGGER` (capturing back-office writes puts
//!   triggers on it), and being its owner to add a column or install capture (no `GRANT` gives
//!   `ALTER TABLE`, which `ENABLE ALWAYS TRIGGER` is).
//!
//! A superuser has every right.

use crate::schema::quote;
use ::postgres::GenericClient;
use std::fmt;

/// A right the role lacks, or why the check itself failed.
#[derive(Debug)]
pub enum RightsError {
    /// The role lacks `right` on `object`.
    Missing {
        /// The role (`current_user`).
        role: String,
        /// The right, as `GRANT` spells it (`CREATE`, `TRIGGER`, ...).
        right: &'static str,
        /// What it is needed on (`database "x"`, `schema public`, `table public."t"`).
        object: String,
        /// The statement that gives it.
        grant: String,
    },
    /// Adding a column needs the table's owner (or a member of its owning role).
    NotOwner {
        /// The role.
        role: String,
        /// The table (quoted, with its schema).
        table: String,
        /// Its owner.
        owner: String,
    },
    /// A catalogue query failed.
    Sql {
        /// PostgreSQL's error.
        source: ::postgres::Error,
    },
}

impl fmt::Display for RightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RightsError::Missing {
                role,
                right,
                object,
                grant,
            } => write!(
                f,
                "role {role:?} lacks the {right} right on {object}, which the cloud needs: \
                 run `{grant}` as its owner or a superuser (docs/cloud.md, \"PostgreSQL\")"
            ),
            RightsError::NotOwner { role, table, owner } => write!(
                f,
                "role {role:?} does not own table {table} (owner {owner:?}) and so cannot add \
                 the columns a batch brings or install the triggers capturing its writes: run \
                 `ALTER TABLE {table} OWNER TO {}` or `GRANT {} TO {}`",
                quote(role),
                quote(owner),
                quote(role)
            ),
            RightsError::Sql { .. } => f.write_str("reading the role's rights"),
        }
    }
}

impl std::error::Error for RightsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RightsError::Sql { source } => Some(source),
            _ => None,
        }
    }
}

fn sql(source: ::postgres::Error) -> RightsError {
    RightsError::Sql { source }
}

/// `current_user`.
fn role(client: &mut impl GenericClient) -> Result<String, RightsError> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .map_err(sql)?
        .get(0))
}

/// The rights `init` needs: to make (or use) the `outpost` schema and to make tables in the app
/// schema `app_schema`.
pub fn check_init(client: &mut impl GenericClient, app_schema: &str) -> Result<(), RightsError> {
    let role = role(client)?;
    let row = client
        .query_one(
            "SELECT current_database()::text, to_regnamespace($1) IS NOT NULL",
            &[&super::meta::SCHEMA],
        )
        .map_err(sql)?;
    let (database, outpost_exists): (String, bool) = (row.get(0), row.get(1));
    if outpost_exists {
        schema_rights(client, &role, super::meta::SCHEMA)?;
    } else {
        let ok: bool = client
            .query_one(
                "SELECT has_database_privilege(current_database(), 'CREATE')",
                &[],
            )
            .map_err(sql)?
            .get(0);
        if !ok {
            return Err(RightsError::Missing {
                grant: format!(
                    "GRANT CREATE ON DATABASE {} TO {}",
                    quote(&database),
                    quote(&role)
                ),
                role,
                right: "CREATE",
                object: format!("database {}", quote(&database)),
            });
        }
    }
    schema_rights(client, &role, app_schema)
}

/// `USAGE` and `CREATE` on `schema`, where tables are about to be made.
pub fn check_schema(client: &mut impl GenericClient, schema: &str) -> Result<(), RightsError> {
    let role = role(client)?;
    schema_rights(client, &role, schema)
}

/// `USAGE` and `CREATE` on `schema` (which must exist: the app schema is `public`, there in
/// every database unless dropped).
fn schema_rights(
    client: &mut impl GenericClient,
    role: &str,
    schema: &str,
) -> Result<(), RightsError> {
    for right in ["USAGE", "CREATE"] {
        let ok: bool = client
            .query_one(
                "SELECT to_regnamespace($1) IS NOT NULL AND has_schema_privilege($1, $2)",
                &[&schema, &right],
            )
            .map_err(sql)?
            .get(0);
        if !ok {
            return Err(RightsError::Missing {
                role: role.to_string(),
                right,
                object: format!("schema {}", quote(schema)),
                grant: format!(
                    "GRANT {right} ON SCHEMA {} TO {}",
                    quote(schema),
                    quote(role)
                ),
            });
        }
    }
    Ok(())
}

/// The rights on an existing app table `schema.table`; `altering`: columns will be added.
pub fn check_table(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
    altering: bool,
) -> Result<(), RightsError> {
    let role = role(client)?;
    let qualified = format!("{}.{}", quote(schema), quote(table));
    // One round trip: this runs for every existing table a batch header names.
    const RIGHTS: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRIGGER"];
    let row = client
        .query_one(
            "SELECT array_agg(has_table_privilege($1, r) ORDER BY i) \
             FROM unnest($2::text[]) WITH ORDINALITY AS p(r, i)",
            &[&qualified, &RIGHTS.as_slice()],
        )
        .map_err(sql)?;
    let granted: Vec<bool> = row.get(0);
    if let Some((right, _)) = RIGHTS.iter().zip(&granted).find(|(_, ok)| !**ok) {
        return Err(RightsError::Missing {
            grant: format!("GRANT {right} ON TABLE {qualified} TO {}", quote(&role)),
            role,
            right,
            object: format!("table {qualified}"),
        });
    }
    if altering {
        let row = client
            .query_one(
                "SELECT pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)::text \
                 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&qualified],
            )
            .map_err(sql)?;
        let (owns, owner): (bool, String) = (row.get(0), row.get(1));
        if !owns {
            return Err(RightsError::NotOwner {
                role,
                table: qualified,
                owner,
            });
        }
    }
    Ok(())
}
