//! A PostgreSQL database of a test's own, on the throwaway cluster `OUTPOST_TEST_POSTGRES_URL`
//! names (`scripts/pg-cluster start DIR` prints it; `scripts/test` starts one and exports it for
//! the test stage). Each [`TestDatabase`] is a `CREATE DATABASE` with a unique name, dropped with
//! the roles the test made when it goes out of scope, so tests run in parallel without seeing
//! each other's tables.
//!
//! Without the variable a test is skipped (`SKIPPED <test>: ...`), except under `CI=true`, where
//! it fails: a suite that silently skipped every PostgreSQL test would pass on a broken setup.
//!
//! The URL must be the URL form (`postgresql://user:password@host:port/db`), the cluster's
//! superuser's: the helper rewrites its user and database part.

use crate::require::require;
use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable naming the test cluster's superuser URL.
pub const URL_VAR: &str = "OUTPOST_TEST_POSTGRES_URL";

/// A database made for one test, dropped (with the roles made through [`TestDatabase::role`])
/// on drop.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's name.
    pub name: String,
    /// The superuser's URL for this database.
    pub url: String,
    /// The superuser's URL for the cluster's `postgres` database (makes and drops databases).
    cluster: String,
    roles: Mutex<Vec<String>>,
}

/// A fresh database for `test` (its name, for the skip notice and the database name), or `None`
/// (printed as skipped) when `OUTPOST_TEST_POSTGRES_URL` is unset outside CI. Panics under
/// `CI=true` without it, and when the cluster cannot be reached.
pub fn database(test: &str) -> Option<TestDatabase> {
    let cluster = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty());
    if !require(
        test,
        &format!("{URL_VAR} is unset (scripts/pg-cluster start DIR prints a URL to set it to)"),
        cluster.is_some(),
    ) {
        return None;
    }
    let cluster = cluster.unwrap_or_default();
    let name = unique_name("t", test);
    let mut admin = connect(&cluster);
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote(&name)))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on the test cluster: {e}"));
    Some(TestDatabase {
        url: with_database(&cluster, &name),
        name,
        cluster,
        roles: Mutex::new(Vec::new()),
    })
}

impl TestDatabase {
    /// A new connection to this database as the cluster's superuser.
    pub fn superuser(&self) -> Client {
        connect(&self.url)
    }

    /// Makes a login role (named from `hint`, unique on the cluster, with a password and no
    /// other right than PostgreSQL gives every role) and returns its name and its URL for this
    /// database. Dropped with the database.
    pub fn role(&self, hint: &str) -> (String, String) {
        let name = unique_name("r", hint);
        let password = format!("pw{:x}", nanos());
        self.superuser()
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN PASSWORD '{password}'",
                quote(&name)
            ))
            .unwrap_or_else(|e| panic!("CREATE ROLE {name}: {e}"));
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.clone());
        let url = with_user(&self.url, &name, &password);
        (name, url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: a panic here would abort a test that is already failing.
        let roles = std::mem::take(self.roles.get_mut().unwrap_or_else(|p| p.into_inner()));
        let result = Client::connect(&self.cluster, NoTls).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote(&self.name)
            ))?;
            for r in &roles {
                c.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote(r)))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("dropping test database {}: {e}", self.name);
        }
    }
}

/// `psql` (the client program, as a back office or an operator runs it) on `url`: the rows of
/// `sql`, one line each, fields `|`-separated. Panics with psql's error when it fails.
pub fn psql(url: &str, sql: &str) -> Vec<String> {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The `patients` rows (`id|name|village|visits`, by id, as `e2e::patients::rows` shows a
/// device's) of the tenant in the database `url` names, read with `psql`; none while the cloud
/// has not made the table yet (it applies a push after acknowledging it).
pub fn patient_rows(url: &str) -> Vec<String> {
    if psql(url, "SELECT to_regclass('public.patients') IS NOT NULL") != ["t"] {
        return Vec::new();
    }
    psql(
        url,
        "SELECT id || '|' || coalesce(name, '') || '|' || coalesce(village, '') || '|' || visits \
         FROM public.patients ORDER BY id COLLATE \"C\"",
    )
}

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"))
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `<prefix>_<hint, lowercase ASCII, 30 at most>_<pid>_<n>`: unique among parallel test
/// processes, within PostgreSQL's 63 bytes.
fn unique_name(prefix: &str, hint: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!(
        "{prefix}_{hint}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `url`'s parts: (scheme and `://`, user info, host and port, the rest after the database).
fn split(url: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = url
        .find("://")
        .map(|i| url.split_at(i + 3))
        .unwrap_or_else(|| panic!("{URL_VAR} must be a postgresql:// URL"));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (user, host) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let query = path.find('?').map_or("", |i| &path[i..]);
    (scheme, user, host, query)
}

/// `url` naming database `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (scheme, user, host, query) = split(url);
    format!("{scheme}{user}{host}/{db}{query}")
}

/// `url` logging in as `user` with `password` (both URL-safe: letters, digits, `_`).
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, _, host, query) = split(url);
    let db = url[..url.len() - query.len()]
        .rsplit_once('/')
        .map_or("", |(_, d)| d);
    format!("{scheme}{user}:{password}@{host}/{db}{query}")
}

/// Rows in `tables` of `client`'s database together (`public` schema); a table that does not
/// exist yet counts 0.
pub fn rows_in(client: &mut Client, tables: &[&str]) -> i64 {
    tables
        .iter()
        .map(|t| {
            client
                .query_one(&format!("SELECT count(*) FROM public.{}", quote(t)), &[])
                .map_or(0, |r| r.get::<_, i64>(0))
        })
        .sum()
}

/// The process ids of the backends connected to `client`'s database but its own (none when
/// the statement fails).
pub fn backends(client: &mut Client) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// The changes a PostgreSQL tenant in `client`'s database holds from every origin (the sum of
/// its vector, `outpost.vector`: one seq per change); 0 before its first apply made the vector.
pub fn covered(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT coalesce(sum(covered), 0)::bigint FROM outpost.vector",
            &[],
        )
        .map_or(0, |r| r.get::<_, i64>(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_in_their_database_and_user_only() {
        let u = "postgresql://outpost:s3cret@127.0.0.1:5433/postgres?connect_timeout=5";
        assert_eq!(
            with_database(u, "t_x"),
            "postgresql://outpost:s3cret@127.0.0.1:5433/t_x?connect_timeout=5"
        );
        assert_eq!(
            with_user(&with_database(u, "t_x"), "r_a", "pw1"),
            "postgresql://r_a:pw1@127.0.0.1:5433/t_x?connect_timeout=5"
        );
        assert_eq!(with_database("postgres://h", "d"), "postgres://h/d");
        let n = unique_name("t", "cloud::Postgres Tables");
        assert!(
            n.starts_with("t_cloud__postgres_tables_") && n.len() <= 63,
            "{n}"
        );
    }
}
