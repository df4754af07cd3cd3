//! Connecting to the tenant's PostgreSQL database from a URL as libpq takes it
//! (`postgresql://user:password@host:port/database?options`, or `key=value` pairs). The password
//! never appears in an error, a log line or `status`: what they show is the [`Target`].
//!
//! TLS is not wired yet: the connection is made without it, so `sslmode=require` fails (with
//! PostgreSQL's reason); reach a remote server through a tunnel or a local socket until it is.

use ::postgres::config::Host;
use ::postgres::{Client, Config, NoTls};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long a connection attempt may take when the URL does not say (`connect_timeout`): an
/// unreachable host fails the command instead of hanging it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a URL points, without its password: what errors and `status` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name, address or socket directory (the first, when the URL names several).
    pub host: String,
    /// The port (PostgreSQL's 5432 when the URL gives none).
    pub port: u16,
    /// The database (the user's name when the URL gives none, as libpq does).
    pub database: String,
    /// The role it logs in as.
    pub user: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {} port {}, database {:?} as role {:?}",
            self.host, self.port, self.database, self.user
        )
    }
}

/// Why the tenant's database could not be reached.
#[derive(Debug)]
pub enum ConnectError {
    /// The URL does not parse (it is not repeated: it may hold a password).
    Url {
        /// The client library's reason.
        source: ::postgres::Error,
    },
    /// The URL names no user (libpq would take the system user's name: say it instead).
    NoUser,
    /// The server could not be reached, or refused the login.
    Connect {
        /// Where.
        target: Target,
        /// The client library's (or the server's) reason.
        source: ::postgres::Error,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Url { .. } => f.write_str(
                "the PostgreSQL URL does not parse (expected \
                 postgresql://USER:PASSWORD@HOST:PORT/DATABASE)",
            ),
            ConnectError::NoUser => f.write_str(
                "the PostgreSQL URL names no user: give postgresql://USER@HOST/DATABASE",
            ),
            ConnectError::Connect { target, .. } => {
                write!(f, "connecting to PostgreSQL at {target}")
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Url { source } | ConnectError::Connect { source, .. } => Some(source),
            ConnectError::NoUser => None,
        }
    }
}

/// The URL parsed, with the connect timeout defaulted.
fn config(url: &str) -> Result<Config, ConnectError> {
    let mut config = Config::from_str(url).map_err(|source| ConnectError::Url { source })?;
    if config.get_user().is_none() {
        return Err(ConnectError::NoUser);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    Ok(config)
}

fn target_of(config: &Config) -> Target {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map_or_else(|| "localhost".to_string(), |a| a.to_string()),
    };
    let user = config.get_user().unwrap_or_default().to_string();
    Target {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config
            .get_dbname()
            .map_or_else(|| user.clone(), str::to_string),
        user,
    }
}

/// Where `url` points, without connecting.
pub fn target(url: &str) -> Result<Target, ConnectError> {
    config(url).map(|c| target_of(&c))
}

/// A connection to `url`'s database, and where it is.
pub fn connect(url: &str) -> Result<(Client, Target), ConnectError> {
    let config = config(url)?;
    let target = target_of(&config);
    match config.connect(NoTls) {
        Ok(client) => Ok((client, target)),
        Err(source) => Err(ConnectError::Connect { target, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_names_host_port_database_and_user_never_the_password() {
        let t = target("postgresql://app:hunter2@db.example.org:6543/clinic").unwrap();
        assert_eq!(
            t,
            Target {
                host: "db.example.org".into(),
                port: 6543,
                database: "clinic".into(),
                user: "app".into()
            }
        );
        assert!(!t.to_string().contains("hunter2"));
        let t = target("host=/run/postgresql user=app").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("/run/postgresql", 5432));
        assert_eq!(t.database, "app");
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let e = target("postgresql://app:hunter2@host:notaport/db").unwrap_err();
        assert!(!format!("{e} {:?}", e.to_string()).contains("hunter2"));
        assert!(matches!(
            target("postgresql://host/db"),
            Err(ConnectError::NoUser)
        ));
    }

    #[test]
    fn an_unreachable_server_is_named_with_the_reason() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let Err(e) = connect(&format!("postgresql://app:pw@127.0.0.1:{port}/clinic")) else {
            panic!("connected to a port nothing listens on");
        };
        let text = crate::error_chain::Chain(&e).to_string();
        assert!(
            text.contains(&format!("host 127.0.0.1 port {port}")) && text.contains("refused"),
            "{text}"
        );
        assert!(!text.contains("pw@"), "{text}");
    }
}
