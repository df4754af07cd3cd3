//! The cloud's own small records (`control.db`, WAL, `synchronous=FULL`, mode 0600): REST API
//! tokens (stored as SHA-256 digests only: the token itself is printed once and never kept) and
//! settings such as the last listening addresses. (What each enrolled peer is, hub or device,
//! lives with its enrolment in `allowlist.db`: the relay enforces it.)

use outpost_protocol::batch::names;
use outpost_protocol::scope::Scopes;
use outpost_relay::private_file::{create_private_file, FileError};
use outpost_sql::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKENS: &str = "
CREATE TABLE IF NOT EXISTS api_tokens(
    name TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used INTEGER,
    scopes TEXT NOT NULL DEFAULT '*',
    tables TEXT
)";
const SETTINGS: &str =
    "CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value TEXT NOT NULL)";

/// The PostgreSQL schema of a cloud's API tokens when its tenant is in PostgreSQL: every process
/// serving it checks the same tokens.
pub const TOKENS_SCHEMA: &str = "outpost_control";

/// The version of the tokens' tables in PostgreSQL.
const TOKENS_VERSION: i64 = 1;

/// Settings names.
pub const LAST_LISTEN: &str = "last_listen";
/// The HTTPS address of the last `run`.
pub const LAST_HTTPS: &str = "last_https";
/// The URL of the tenant's PostgreSQL database (`init --postgres`; absent: the SQLite tenant).
/// It may hold the role's password: this file is mode 0600, and nothing prints the URL.
pub const POSTGRES_URL: &str = "postgres_url";
/// The last error applying a batch to the tenant database, if any (cleared on success).
pub const LAST_APPLY_ERROR: &str = "last_apply_error";

/// One REST API token's record (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    /// Its name.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<u64>,
    /// Unix seconds of its last successful use.
    pub last_used: Option<u64>,
    /// The scopes it serves and accepts (`*`: all).
    pub scopes: Scopes,
    /// Its per-table rights (`None`: the default, every table readable and writable except
    /// `down` tables, read only).
    pub tables: Option<TableRights>,
}

/// What a REST token may do with a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Pull only (`r`).
    Read,
    /// Pull and push (`rw`).
    ReadWrite,
}

/// A REST token's per-table rights, as `--tables t1:rw,t2:r` gives them. Tables it does not
/// name are neither served nor accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRights(pub BTreeMap<String, Right>);

impl TableRights {
    /// Reads `t1:rw,t2:r`.
    pub fn parse(text: &str) -> Result<TableRights, ControlError> {
        let bad = || ControlError::TableRights {
            text: text.to_string(),
        };
        let mut out = BTreeMap::new();
        for part in text.split(',') {
            let (table, right) = part.trim().rsplit_once(':').ok_or_else(bad)?;
            names::check(table).map_err(|_| bad())?;
            let right = match right {
                "r" => Right::Read,
                "rw" => Right::ReadWrite,
                _ => return Err(bad()),
            };
            if out.insert(table.to_string(), right).is_some() {
                return Err(bad());
            }
        }
        Ok(TableRights(out))
    }
}

impl fmt::Display for TableRights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(t, r)| {
                let r = match r {
                    Right::Read => "r",
                    Right::ReadWrite => "rw",
                };
                format!("{t}:{r}")
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Why an operation on the control file failed or was refused. Refusals change nothing stored.
#[derive(Debug)]
pub enum ControlError {
    /// The file could not be created.
    File(FileError),
    /// SQLite failed on the control file.
    Sqlite {
        /// The control file.
        path: PathBuf,
        /// SQLite's (or, for the tokens of a tenant in PostgreSQL, PostgreSQL's) error.
        source: outpost_sql::Error,
    },
    /// An API token name is empty, longer than 64 bytes or holds other characters than
    /// letters, digits, `-`, `_` and `.`.
    TokenName {
        /// The name asked for.
        name: String,
    },
    /// An API token of that name exists (revoked or not).
    TokenExists {
        /// The name.
        name: String,
    },
    /// The system's random source failed (no token was issued).
    Random(getrandom::Error),
    /// No API token has that name.
    NoToken {
        /// The name asked for.
        name: String,
    },
    /// `--tables` is not `table:r|rw` pairs separated by commas, each table once.
    TableRights {
        /// What was given.
        text: String,
    },
    /// A stored token's scopes or table rights are not what this build writes.
    Damaged {
        /// The token.
        name: String,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::File(e) => e.fmt(f),
            ControlError::Sqlite { path, .. } => {
                write!(f, "control database {}", path.display())
            }
            ControlError::TokenName { name } => write!(
                f,
                "api token name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
            ),
            ControlError::TokenExists { name } => write!(
                f,
                "an api token named {name:?} already exists; pick another name (or revoke it \
                 with `revoke --api-token {name}`)"
            ),
            ControlError::Random(_) => f.write_str("reading the system's random source"),
            ControlError::NoToken { name } => write!(f, "no api token named {name:?}"),
            ControlError::TableRights { text } => write!(
                f,
                "--tables {text:?}: give table:r or table:rw pairs separated by commas, each \
                 table once"
            ),
            ControlError::Damaged { name } => {
                write!(f, "api token {name:?}: its stored grant is damaged")
            }
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the file error says what failed itself.
            ControlError::File(e) => e.source(),
            ControlError::Sqlite { source, .. } => Some(source),
            ControlError::Random(e) => Some(e),
            ControlError::TokenName { .. }
            | ControlError::TokenExists { .. }
            | ControlError::NoToken { .. }
            | ControlError::TableRights { .. }
            | ControlError::Damaged { .. } => None,
        }
    }
}

/// The control file.
#[derive(Debug)]
pub struct Control {
    /// The file: settings, and the API tokens of a SQLite tenant.
    conn: Connection,
    /// The API tokens of a tenant in PostgreSQL, in its database ([`Control::keep_tokens_in`]),
    /// and how errors name it.
    tokens: Option<(Connection, PathBuf)>,
    path: PathBuf,
}

/// The prefix of every API token, so a leaked one is recognisable in a scanner.
pub const TOKEN_PREFIX: &str = "outpost_api_";

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Control {
    /// Opens (creating, mode 0600) `path`.
    pub fn open(path: &Path) -> Result<Control, ControlError> {
        create_private_file(path).map_err(ControlError::File)?;
        let open = || -> rusqlite::Result<rusqlite::Connection> {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(&format!("{TOKENS}; {SETTINGS};"))?;
            // Files made before token grants: every token granted everything.
            let has_scopes: i64 = conn.query_row(
                "SELECT count(*) FROM pragma_table_info('api_tokens') WHERE name = 'scopes'",
                [],
                |r| r.get(0),
            )?;
            if has_scopes == 0 {
                conn.execute_batch(
                    "ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '*';
                     ALTER TABLE api_tokens ADD COLUMN tables TEXT;",
                )?;
            }
            Ok(conn)
        };
        let conn = open().map_err(|source| ControlError::Sqlite {
            path: path.to_path_buf(),
            source: source.into(),
        })?;
        Ok(Control {
            conn: conn.into(),
            tokens: None,
            path: path.to_path_buf(),
        })
    }

    /// Keeps the API tokens in `client`'s database (schema [`TOKENS_SCHEMA`], made if missing)
    /// instead of the file: a tenant in PostgreSQL, served by several processes. `location`
    /// names it in errors.
    pub fn keep_tokens_in(
        mut self,
        client: postgres::Client,
        location: &str,
    ) -> Result<Control, ControlError> {
        let failed = |source| ControlError::Sqlite {
            path: PathBuf::from(location),
            source,
        };
        let conn = Connection::postgres(client, TOKENS_SCHEMA).map_err(failed)?;
        conn.make_postgres_tables(TOKENS, TOKENS_VERSION)
            .map_err(failed)?;
        self.tokens = Some((conn, PathBuf::from(location)));
        Ok(self)
    }

    /// Where the API tokens are.
    fn tokens(&self) -> &Connection {
        self.tokens.as_ref().map_or(&self.conn, |(c, _)| c)
    }

    /// `source` as an error naming the tokens' store.
    fn token_error(&self, source: outpost_sql::Error) -> ControlError {
        ControlError::Sqlite {
            path: self.tokens.as_ref().map_or(&self.path, |(_, p)| p).clone(),
            source,
        }
    }

    /// `source` as an error naming this store.
    fn sqlite(&self, source: outpost_sql::Error) -> ControlError {
        ControlError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Issues a token named `name` and returns it: the only time it exists outside the caller.
    pub fn issue_api_token(&mut self, name: &str, now: u64) -> Result<String, ControlError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ControlError::TokenName {
                name: name.to_string(),
            });
        }
        let exists: Option<i64> = self
            .tokens()
            .query_row("SELECT 1 FROM api_tokens WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.token_error(e))?;
        if exists.is_some() {
            return Err(ControlError::TokenExists {
                name: name.to_string(),
            });
        }
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(ControlError::Random)?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            outpost_relay::enroll::base64url_encode(&secret)
        );
        self.tokens()
            .execute(
                "INSERT INTO api_tokens(name, digest, created_at) VALUES (?1, ?2, ?3)",
                params![name, digest(&token).as_slice(), now as i64],
            )
            .map_err(|e| self.token_error(e))?;
        Ok(token)
    }

    /// The name of the unrevoked token `token`, recording its use at `now`; `None` if unknown
    /// or revoked.
    pub fn check_api_token(&self, token: &str, now: u64) -> Result<Option<String>, ControlError> {
        let name: Option<String> = self
            .tokens()
            .query_row(
                "SELECT name FROM api_tokens WHERE digest = ?1 AND revoked_at IS NULL",
                [digest(token).as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.token_error(e))?;
        if let Some(n) = &name {
            self.tokens()
                .execute(
                    "UPDATE api_tokens SET last_used = ?2 WHERE name = ?1",
                    params![n, now as i64],
                )
                .map_err(|e| self.token_error(e))?;
        }
        Ok(name)
    }

    /// Replaces the grant of the token named `name`: its scopes and, when given, its table
    /// rights (`None` keeps the rights it has).
    pub fn set_token_grant(
        &mut self,
        name: &str,
        scopes: &Scopes,
        tables: Option<&TableRights>,
    ) -> Result<(), ControlError> {
        let n = self
            .tokens()
            .execute(
                "UPDATE api_tokens SET scopes = ?2, tables = coalesce(?3, tables) WHERE name = ?1",
                params![name, scopes.to_string(), tables.map(|t| t.to_string())],
            )
            .map_err(|e| self.token_error(e))?;
        if n == 0 {
            return Err(ControlError::NoToken {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Revokes the token named `name`.
    pub fn revoke_api_token(&mut self, name: &str, now: u64) -> Result<(), ControlError> {
        let n = self
            .tokens()
            .execute(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE name = ?1",
                params![name, now as i64],
            )
            .map_err(|e| self.token_error(e))?;
        if n == 0 {
            return Err(ControlError::NoToken {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// The record of the token named `name`, if any.
    pub fn api_token(&self, name: &str) -> Result<Option<ApiToken>, ControlError> {
        Ok(self.api_tokens()?.into_iter().find(|t| t.name == name))
    }

    /// Every API token record, by name.
    pub fn api_tokens(&self) -> Result<Vec<ApiToken>, ControlError> {
        let mut stmt = self
            .tokens()
            .prepare(
                "SELECT name, created_at, revoked_at, last_used, scopes, tables FROM api_tokens \
                 ORDER BY name",
            )
            .map_err(|e| self.token_error(e))?;
        let rows = stmt
            .query_map((), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(|e| self.token_error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, created_at, revoked_at, last_used, scopes, tables) =
                row.map_err(|e| self.token_error(e))?;
            let damaged = || ControlError::Damaged { name: name.clone() };
            let scopes = Scopes::parse(scopes.split(',')).map_err(|_| damaged())?;
            let tables = match tables {
                Some(t) => Some(TableRights::parse(&t).map_err(|_| damaged())?),
                None => None,
            };
            out.push(ApiToken {
                name,
                created_at,
                revoked_at,
                last_used,
                scopes,
                tables,
            });
        }
        Ok(out)
    }

    /// A stored setting.
    pub fn setting(&self, name: &str) -> Result<Option<String>, ControlError> {
        self.conn
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Every setting whose name starts with `prefix`, by name.
    pub fn settings_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        let rows = self
            .conn
            .query_map(
                "SELECT name, value FROM settings WHERE substr(name, 1, length(?1)) = ?1 \
                 ORDER BY name",
                [prefix],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// Stores (or, with `None`, clears) a setting.
    pub fn set_setting(&self, name: &str, value: Option<&str>) -> Result<(), ControlError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO settings(name, value) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, v],
            ),
            None => self
                .conn
                .execute("DELETE FROM settings WHERE name = ?1", [name]),
        }
        .map_err(|e| self.sqlite(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tokens_are_kept_as_digests_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.db");
        let mut c = Control::open(&path).unwrap();
        let token = c.issue_api_token("field-app", 100).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() > 40);
        assert_eq!(
            c.check_api_token(&token, 101).unwrap().as_deref(),
            Some("field-app")
        );
        assert_eq!(c.check_api_token("outpost_api_nope", 101).unwrap(), None);
        assert!(c.issue_api_token("field-app", 102).is_err());
        assert!(c.issue_api_token("bad name", 102).is_err());
        let bytes = std::fs::read(&path).unwrap();
        let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
        for file in [&bytes, &wal] {
            assert!(!file.windows(token.len()).any(|w| w == token.as_bytes()));
        }
        c.revoke_api_token("field-app", 103).unwrap();
        assert_eq!(c.check_api_token(&token, 104).unwrap(), None);
        assert!(c.revoke_api_token("other", 104).is_err());
        assert_eq!(c.api_tokens().unwrap()[0].last_used, Some(101));
    }
}
