//! A sealed tenant's keys in the tenant database (docs/design.md section 10, "Sealed batches"):
//! the mailbox holds them (`outpost_mailbox`'s `scope_keys.rs`, where the cloud makes them); the
//! engine opens sealed batches with the keys its own database holds (`_outpost_keys`, by scope
//! digest, and `_outpost_digest_key`), so before each ingest the keys the tenant database lacks
//! are copied there. Every epoch of a scope is kept: history sealed under an old epoch still
//! opens.

use outpost_mailbox::{Mailbox, MailboxError};
use rusqlite::{params, Connection};

/// Why the keys could not be copied.
#[derive(Debug)]
pub enum KeysError {
    /// Reading them from the mailbox failed.
    Mailbox(MailboxError),
    /// Writing them into the tenant database failed.
    Tenant(rusqlite::Error),
}

impl std::fmt::Display for KeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysError::Mailbox(_) => f.write_str("reading the tenant's scope keys"),
            KeysError::Tenant(_) => f.write_str("copying the scope keys into the tenant database"),
        }
    }
}

impl std::error::Error for KeysError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeysError::Mailbox(e) => Some(e),
            KeysError::Tenant(e) => Some(e),
        }
    }
}

/// Copies the keys `conn` (the tenant database, its engine loaded) lacks from `mailbox`.
/// Returns how many scope keys were copied; nothing in an unsealed tenant.
pub(crate) fn install(conn: &Connection, mailbox: &Mailbox) -> Result<usize, KeysError> {
    let Some(digest_key) = mailbox.digest_key().map_err(KeysError::Mailbox)? else {
        return Ok(0);
    };
    let epochs = mailbox.scope_key_epochs().map_err(KeysError::Mailbox)?;
    let total: i64 = epochs.iter().map(|(_, e)| i64::from(*e)).sum();
    // The engine makes its tables with its bookkeeping.
    conn.query_row("SELECT outpost_site_id()", [], |r| r.get::<_, Vec<u8>>(0))
        .map_err(KeysError::Tenant)?;
    let held: i64 = conn
        .query_row("SELECT count(*) FROM _outpost_keys", [], |r| r.get(0))
        .map_err(KeysError::Tenant)?;
    if held == total {
        return Ok(0);
    }
    let tx = conn.unchecked_transaction().map_err(KeysError::Tenant)?;
    tx.execute(
        "INSERT OR IGNORE INTO _outpost_digest_key(id, key) VALUES (0, ?1)",
        [digest_key.as_bytes().as_slice()],
    )
    .map_err(KeysError::Tenant)?;
    let mut copied = 0;
    for (scope, last) in &epochs {
        // The mailbox files keys by wire id, the engine by digest (`_outpost_keys`).
        let Some(digest) = digest_key.key_digest(scope).map(|d| d.to_stream()) else {
            continue;
        };
        for epoch in 1..=*last {
            let Some(key) = mailbox
                .scope_key_at(scope, epoch)
                .map_err(KeysError::Mailbox)?
            else {
                continue;
            };
            copied += tx
                .execute(
                    "INSERT OR IGNORE INTO _outpost_keys(scope, epoch, key) VALUES (?1, ?2, ?3)",
                    params![digest, epoch, key.as_bytes().as_slice()],
                )
                .map_err(KeysError::Tenant)?;
        }
    }
    tx.commit().map_err(KeysError::Tenant)?;
    Ok(copied)
}
