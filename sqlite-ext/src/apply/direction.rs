//! The receiver's direction checks (docs/design.md section 10, "One decision everywhere"): only
//! the tenant's cloud writes `down` tables, so a batch that says or shows otherwise is refused
//! whole, the same way on every replica.
//!
//! A batch is refused when it is a transfer (cells credited to other sites, `transfer.rs`) or
//! flagged `down` and its origin is not bound as a cloud in the key
//! directory, or when its origin is not a cloud and its body holds rows of a table the tenant
//! declares `down`. Both depend only on the batch and the directory (the cloud's entries), never on
//! how this database tracks its tables. The caller records the refusal with its reason
//! (`batch_quarantine.rs`) and covers the range, so the origin's later batches still apply.
//!
//! A database enrolled with no relay has no directory to judge with, and trusts what it is given,
//! as it does unsigned batches (`signatures.rs`); so does the cloud's tenant database, whose
//! ingest judges batches itself.

use outpost_protocol::batch::{Batch, Direction};
use outpost_protocol::control::Directory;

/// Why `batch` must be refused whole, or `None` when it may be applied.
pub(super) fn refusal(batch: &Batch, directory: &Directory) -> Option<String> {
    let h = &batch.header;
    if directory.is_cloud(&h.origin) {
        return None;
    }
    if h.flags.transfer {
        return Some(format!(
            "transfer batch by origin {}, which is not the tenant's cloud: only the cloud writes \
             cells credited to other sites",
            h.origin
        ));
    }
    if h.flags.direction == Direction::Down {
        return Some(format!(
            "batch flagged \"down\" by origin {}, which is not the tenant's cloud: only the cloud \
             writes down tables",
            h.origin
        ));
    }
    let down = batch
        .tables
        .iter()
        .filter(|g| !g.rows.is_empty())
        .filter_map(|g| h.tables.get(g.table as usize))
        .find(|t| directory.table_direction(&t.name) == Direction::Down)?;
    Some(format!(
        "origin {} is not the tenant's cloud but its batch writes table \"{}\", which the tenant \
         declares \"down\" (only the cloud writes it)",
        h.origin, down.name
    ))
}
