//! The tenant's table settings (docs/design.md section 10): which way each table's changes
//! travel, declared by the operator (`outpost-cloud table`) and published in the cloud's control
//! stream, so every hub and device learns them before it syncs anything else.
//!
//! - `down`: written by the cloud only (operator reference data: forms, facility lists). Devices
//!   refuse writes at write time; no relay accepts a pushed `down` batch; receivers quarantine a
//!   device's batch holding one.
//! - `up`: written by devices, collected by the cloud, never served to devices (relays serve a
//!   device an `up` batch's signed clear header alone).
//! - `both` (every table no entry names): written anywhere, served everywhere.
//!
//! A direction is declared before the tenant holds the table's rows: a declaration after the
//! fact would judge batches already applied somewhere by a rule they were not written under
//! (the same reason a scope rule needs a table without history), and a device re-tracking a
//! table as `down` would drop its unsent writes to it.

use outpost_mailbox::{Mailbox, MailboxError};
use outpost_protocol::batch::Direction;
use outpost_protocol::batch::{names, Batch};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Why a table's direction could not be declared.
#[derive(Debug)]
pub enum TableError {
    /// The name cannot name an app table.
    BadName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The tenant already holds rows of the table.
    HasRows {
        /// The table.
        name: String,
        /// Its rows in the tenant database.
        rows: u64,
        /// Its current direction.
        current: Direction,
    },
    /// The tenant database could not be read.
    Tenant(rusqlite::Error),
    /// The mailbox (control stream) failed.
    Mailbox(MailboxError),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::BadName { name, reason } => {
                write!(f, "table name {name:?} refused: {reason}")
            }
            TableError::HasRows {
                name,
                rows,
                current,
            } => write!(
                f,
                "table {name:?} already holds {rows} rows in the tenant (direction {current}): a \
                 direction is declared before a table has data, so that no batch already applied \
                 somewhere is judged by a rule it was not written under"
            ),
            TableError::Tenant(e) => write!(f, "reading the tenant database: {e}"),
            TableError::Mailbox(e) => write!(f, "writing the control stream: {e}"),
        }
    }
}

impl std::error::Error for TableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TableError::Tenant(e) => Some(e),
            TableError::Mailbox(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MailboxError> for TableError {
    fn from(e: MailboxError) -> Self {
        TableError::Mailbox(e)
    }
}

/// What [`declare`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Declared {
    /// A control entry now says so (its seq in the cloud's stream).
    Entry(u64),
    /// The tenant already declared that direction: nothing written.
    Unchanged,
}

/// The directions the tenant declares, by table name (tables not listed travel both ways).
pub fn declared(mailbox: &mut Mailbox) -> Result<Vec<(String, Direction)>, TableError> {
    let directory = mailbox.directory()?;
    Ok(directory
        .tables()
        .map(|(n, d)| (n.to_string(), d))
        .collect())
}

/// The direction `declared` (keyed by ASCII-lowercase name, as `Directory::tables` gives it)
/// says for table `name`: SQLite's names ignore ASCII case, so do the settings.
pub fn declared_direction(declared: &BTreeMap<String, Direction>, name: &str) -> Direction {
    declared
        .get(&name.to_ascii_lowercase())
        .copied()
        .unwrap_or_default()
}

/// The direction flag of a batch the cloud writes: `down` when it holds a row of a `down` table
/// (every receiver accepts that from the cloud alone), `up` when all its rows are of `up` tables
/// (never served to devices), `both` otherwise. A batch mixing `up` and `both` rows (one
/// transaction writing both kinds) is `both`: its `up` rows reach devices, which apply nothing of
/// them (docs/design.md section 10 names the per-direction streams that would close this).
pub fn direction_of(batch: &Batch, declared: &BTreeMap<String, Direction>) -> Direction {
    let mut all_up = true;
    let mut any = false;
    for group in batch.tables.iter().filter(|g| !g.rows.is_empty()) {
        let Some(schema) = batch.header.tables.get(group.table as usize) else {
            continue;
        };
        any = true;
        match declared_direction(declared, &schema.name) {
            Direction::Down => return Direction::Down,
            Direction::Up => {}
            Direction::Both => all_up = false,
        }
    }
    if any && all_up {
        Direction::Up
    } else {
        Direction::Both
    }
}

/// Why a batch of a peer (not the cloud's own) does not match the tenant's table settings, the
/// same on every replica (docs/design.md section 10, "One decision everywhere"): flagged `down`
/// (only the cloud writes those), a row of a table the tenant declares `down`, or flagged `up`
/// with a row of a table that is not `up` (relays would keep from devices rows they must get).
/// `None` when it matches.
pub fn mismatch(batch: &Batch, declared: &BTreeMap<String, Direction>) -> Option<String> {
    let flag = batch.header.flags.direction;
    if flag == Direction::Down {
        return Some("flagged down: only the cloud writes down tables".into());
    }
    for group in batch.tables.iter().filter(|g| !g.rows.is_empty()) {
        let Some(schema) = batch.header.tables.get(group.table as usize) else {
            continue;
        };
        let declared = declared_direction(declared, &schema.name);
        if declared == Direction::Down {
            return Some(format!(
                "holds rows of table {:?}, which the tenant declares down (only the cloud \
                 writes it)",
                schema.name
            ));
        }
        if flag == Direction::Up && declared != Direction::Up {
            return Some(format!(
                "flagged up but holds rows of table {:?}, which the tenant declares {declared}",
                schema.name
            ));
        }
    }
    None
}

/// Declares `name`'s direction in the cloud's control stream (the mailbox's control owner must
/// be the cloud). Refused for a table the tenant database already holds rows of.
pub fn declare(
    mailbox: &mut Mailbox,
    tenant: &Path,
    name: &str,
    direction: Direction,
) -> Result<Declared, TableError> {
    names::check(name).map_err(|reason| TableError::BadName {
        name: name.into(),
        reason,
    })?;
    let current = mailbox.directory()?.table_direction(name);
    // The table's scope rule stays as the tenant stated it: a direction changes only itself.
    let scope = mailbox.directory()?.table_scope(name).cloned();
    if current == direction {
        return Ok(Declared::Unchanged);
    }
    let rows = rows_in(tenant, name).map_err(TableError::Tenant)?;
    if rows > 0 {
        return Err(TableError::HasRows {
            name: name.into(),
            rows,
            current,
        });
    }
    Ok(Declared::Entry(mailbox.append_control(
        &mailbox.table_item(name, direction, scope)?,
    )?))
}

/// Rows of table `name` in the tenant database (0 when it or the table does not exist yet).
/// Read-only, without the engine: a count needs none.
fn rows_in(tenant: &Path, name: &str) -> rusqlite::Result<u64> {
    if !tenant.exists() {
        return Ok(0);
    }
    let conn = Connection::open_with_flags(tenant, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let actual: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    let Some(actual) = actual else {
        return Ok(0);
    };
    let quoted = format!("\"{}\"", actual.replace('"', "\"\""));
    conn.query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::batch::codec::{self, Limits};
    use outpost_protocol::batch::BatchFlags;
    use outpost_protocol::{Hlc, SiteId};
    use outpost_testkit::batch::text_rows;

    const DEVICE: SiteId = SiteId([0x11; 16]);

    fn batch(table: &str, direction: Direction) -> Batch {
        let mut bytes = text_rows(
            DEVICE,
            1,
            1,
            table,
            "title",
            [(1, Hlc::new(5, 0), "x".into())],
        );
        let flags = BatchFlags {
            direction,
            transfer: false,
        };
        codec::set_flags(&mut bytes, flags).unwrap();
        codec::decode(&bytes, &Limits::default()).unwrap()
    }

    fn declared() -> BTreeMap<String, Direction> {
        BTreeMap::from([
            ("forms".to_string(), Direction::Down),
            ("submissions".to_string(), Direction::Up),
        ])
    }

    #[test]
    fn the_clouds_batches_are_flagged_by_the_tables_their_rows_touch() {
        let d = declared();
        assert_eq!(
            direction_of(&batch("forms", Direction::Both), &d),
            Direction::Down
        );
        assert_eq!(
            direction_of(&batch("submissions", Direction::Both), &d),
            Direction::Up
        );
        assert_eq!(
            direction_of(&batch("patients", Direction::Both), &d),
            Direction::Both
        );
        assert_eq!(
            direction_of(&batch("forms", Direction::Both), &BTreeMap::new()),
            Direction::Both
        );
    }

    #[test]
    fn a_peers_batch_must_match_the_tenants_settings() {
        let d = declared();
        for (table, flag, refused) in [
            ("patients", Direction::Down, Some("flagged down")),
            ("forms", Direction::Both, Some("declares down")),
            ("patients", Direction::Up, Some("flagged up")),
            ("submissions", Direction::Up, None),
            ("submissions", Direction::Both, None),
            ("patients", Direction::Both, None),
        ] {
            let why = mismatch(&batch(table, flag), &d);
            match refused {
                Some(part) => assert!(
                    why.as_deref().is_some_and(|w| w.contains(part)),
                    "{table} {flag}: {why:?}"
                ),
                None => assert_eq!(why, None, "{table} {flag}"),
            }
        }
    }
}
