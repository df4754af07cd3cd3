//! What a batch's bytes and the tenant's settings alone decide, before anything is written: the
//! whole batch decodes within its memory budget (a sealed one opened with the tenant's keys), its
//! rows match the tenant's table directions, its header's schema is acceptable and states the
//! tenant's scope rules. The same decision on every replica and every retry, whichever store
//! holds the tenant.

use super::ingest::ApplyError;
use crate::schema;
use crate::scope_rules::TenantRules;
use outpost_mailbox::Mailbox;
use outpost_protocol::batch::{codec, Batch, Direction};
use outpost_protocol::control::Directory;
use std::collections::BTreeMap;

/// A batch judged.
pub(crate) enum Judged {
    /// Refused whole, for this reason (recorded and skipped: `refused.rs`).
    Refused(String),
    /// To apply: the batch decoded (opened when sealed). The rules its header declares for
    /// tables the tenant did not know are the tenant's now (published in the control stream).
    Accepted(Box<Batch>),
}

/// Judges the batch `bytes` (see the module doc).
pub(crate) fn judge(
    bytes: &[u8],
    declared: &BTreeMap<String, Direction>,
    rules: &TenantRules,
    mailbox: &mut Mailbox,
    directory: &Directory,
) -> Result<Judged, ApplyError> {
    let decoded = match codec::decode_header(bytes, &codec::Limits::default()) {
        Ok(h) if h.key_epoch != 0 => match mailbox.digest_key().ok().flatten() {
            Some(dk) => outpost_protocol::seal::decode_sealed(
                bytes,
                &codec::Limits::default(),
                &dk,
                |s, e| mailbox.scope_key_at(s, e).ok().flatten(),
            )
            .map(|opened| {
                // Status and commands show the scope by name from now on.
                if let Err(e) = mailbox.learn_scope_name(&opened.batch.header.stream, &opened.scope)
                {
                    log::warn!("tenant could not remember a scope's name: {e}");
                }
                opened.batch
            })
            .map_err(|e| e.to_string()),
            None => Err("a sealed batch in an unsealed tenant".to_string()),
        },
        _ => codec::decode(bytes, &codec::Limits::default()).map_err(|e| e.to_string()),
    };
    let batch = match decoded {
        Ok(batch) => {
            if let Some(reason) = crate::tables::mismatch(&batch, declared) {
                return Ok(Judged::Refused(reason));
            }
            batch
        }
        Err(e) => return Ok(Judged::Refused(format!("not a valid batch: {e}"))),
    };
    if let Err(e) = schema::validate_all(&batch.header.tables) {
        return Ok(Judged::Refused(e.to_string()));
    }
    let adopted = match rules.judge(&batch.header.tables) {
        Ok(adopted) => adopted,
        Err(reason) => return Ok(Judged::Refused(reason)),
    };
    // The entry first: if the cloud stops before the table is made, the next batch is judged
    // against the rule all the same.
    for (table, rule) in adopted {
        let item = mailbox
            .table_item(
                &table,
                directory.table_direction(&table),
                Some(rule.clone()),
            )
            .map_err(|source| ApplyError::Publish {
                table: table.clone(),
                source,
            })?;
        // Decided inside the write: another process serving the tenant may have judged a
        // batch declaring the same rule a moment ago.
        let seq = mailbox
            .append_control_unless(&item, |d| d.table_scope(&table) == Some(&rule))
            .map_err(|source| ApplyError::Publish {
                table: table.clone(),
                source,
            })?;
        let Some(seq) = seq else {
            continue;
        };
        log::info!(
            "tenant learnt the scope rule of table {table:?} from a batch header ({}): control entry {seq}",
            crate::scope_rules::describe(Some(&rule))
        );
    }
    Ok(Judged::Accepted(Box::new(batch)))
}
