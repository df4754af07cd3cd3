//! Stored batches checked before they are served (docs/design.md section 10, "Sealed batches",
//! last bullet): a bit flipped on disk (an SD card going bad, someone editing the file) must
//! never reach a peer, who would refuse the batch and stall on it at every pull.
//!
//! **The check.** Every batch read to be served (a peer's pull, the hub's uplink export) goes
//! through [`check`], at most once a minute per batch ([`CHECK_TTL`]: a batch this process
//! stored was verified when it was staged, one it served was checked then; a bit flipped on disk
//! is found at the first serve a minute after the last check): `codec::verify` (the clear header parses, the body as sent has the length
//! the header states and the SHA-256 it states), then the header against its row (origin,
//! stream, range and body hash as stored when the batch was committed). Rows are never parsed;
//! a sealed body is checked as the bytes it is. What the check does not see: a flip in the
//! header fields the row does not repeat (flags, key epoch, grant version, max clock) or in the
//! signature; the receiver refuses those as badly signed.
//!
//! **A damaged batch** is removed from the file in one transaction with the recomputed
//! coverage of its stream (from the batches that remain and the voided ranges, so the mailbox's
//! vector drops to below the hole), the highest clock admitted (recomputed only when the removed
//! batch may have held it) and a row in `damaged(origin, stream, lo, hi, found_at)`, which
//! status pages count. The log names the stream and range, never content. Nothing else of the
//! stream is thrown away: the batches above the hole stay, held beyond a gap, until the hole
//! is filled again: the hub's uplink pulls the range from the cloud (its hello states the lower
//! vector), and a device that pushed it pushes it again (it plans its push from the relay's
//! hello vector).
//!
//! `damaged` is created at every open: a file made before it gains it empty.

use crate::clock_bound;
use crate::error::MailboxError;
use crate::mailbox::{advance_coverage, Mailbox};
use outpost_protocol::batch::codec::{verify, DecodeError, Limits};
use outpost_protocol::{SeqRange, SiteId, StreamId};
use outpost_sql::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Created at every open.
pub(crate) const DAMAGE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS damaged(
    id INTEGER PRIMARY KEY,
    origin BLOB NOT NULL CHECK (length(origin) = 16),
    stream TEXT NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    found_at INTEGER NOT NULL
);
";

/// Damage is about bits, not about policy: a batch stored under wider limits than the mailbox
/// was opened with is not damaged. `verify` reads the body only to hash it, so no limit guards
/// an allocation here.
const ANY_SIZE: Limits = Limits {
    max_batch_bytes: usize::MAX,
    max_body_bytes: usize::MAX,
};

/// A stored batch as its row names it, with its bytes.
pub(crate) struct Row<'a> {
    pub(crate) id: i64,
    pub(crate) origin: SiteId,
    pub(crate) stream: &'a str,
    pub(crate) range: SeqRange,
    pub(crate) sha256: &'a [u8; 32],
    pub(crate) bytes: &'a [u8],
}

/// What is wrong with a stored batch.
#[derive(Debug)]
pub(crate) enum Damage {
    /// The bytes do not verify: the header does not parse, or the body's length or hash is not
    /// the one the header states.
    Bytes(DecodeError),
    /// The header verifies but names another batch than its row: a flip in the header.
    Header(&'static str),
}

impl Damage {
    /// True when the header may be what was flipped, so the max clock it states may not be the
    /// one stored with it.
    fn header_suspect(&self) -> bool {
        !matches!(self, Damage::Bytes(DecodeError::HashMismatch))
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Bytes(e) => write!(f, "{e}"),
            Damage::Header(field) => write!(f, "its clear header names another {field}"),
        }
    }
}

/// Checks `row`'s bytes against themselves and against the row.
/// Rows this process checked, or stored having verified their bytes when they were staged, per
/// mailbox file, with when: (row id, the first 8 bytes of the body hash, so a reused row id is
/// not taken for the batch it held before). A row served again within [`CHECK_TTL`] costs no
/// hash pass: a first sync, or many devices pulling the same clinic's batches, hash each body
/// once a minute at most (issue 20's goal: the hub's relay throughput within 3%; see
/// docs/performance.md). A bit flipped on disk is found at the first serve after that: within a
/// minute of the flip. At most [`MAX_CHECKED`] rows per process; when full it starts over, so
/// memory stays bounded (a few MiB) and rows are just checked again.
static CHECKED: Mutex<BTreeMap<PathBuf, CheckedRows>> = Mutex::new(BTreeMap::new());

/// One file's checked rows: (row id, body hash prefix) → when.
type CheckedRows = HashMap<(i64, u64), Instant>;

/// How long a checked row is served without checking again.
pub const CHECK_TTL: Duration = Duration::from_secs(60);

/// The most rows [`CHECKED`] remembers, over every file.
const MAX_CHECKED: usize = 1 << 18;

fn checked_key(id: i64, sha256: &[u8; 32]) -> (i64, u64) {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&sha256[..8]);
    (id, u64::from_le_bytes(prefix))
}

/// Whether this process checked (or stored, verified) row `id` with this body hash within
/// [`CHECK_TTL`].
pub(crate) fn known_good(path: &Path, id: i64, sha256: &[u8; 32]) -> bool {
    let checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    checked
        .get(path)
        .and_then(|rows| rows.get(&checked_key(id, sha256)))
        .is_some_and(|at| at.elapsed() < CHECK_TTL)
}

/// Remembers that rows (id, body hash) are good now (checked, or verified when staged).
pub(crate) fn note_good(path: &Path, rows: impl IntoIterator<Item = (i64, [u8; 32])>) {
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if checked.values().map(HashMap::len).sum::<usize>() >= MAX_CHECKED {
        checked.clear();
    }
    let now = Instant::now();
    let set = checked.entry(path.to_path_buf()).or_default();
    for (id, sha) in rows {
        set.insert(checked_key(id, &sha), now);
    }
}

impl Mailbox {
    /// Forgets which batches this process checked, in every mailbox file, as a minute
    /// passing (or a restart) does: the next serve of each checks it again. For an operator's
    /// scrub, and for tests that damage a file this process wrote.
    pub fn forget_checked() {
        CHECKED.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

pub(crate) fn check(row: &Row<'_>) -> Result<(), Damage> {
    let header = verify(row.bytes, &ANY_SIZE).map_err(Damage::Bytes)?;
    if header.body_sha256 != *row.sha256 {
        return Err(Damage::Header("body hash"));
    }
    if header.origin != row.origin {
        return Err(Damage::Header("origin"));
    }
    if header.stream != row.stream {
        return Err(Damage::Header("stream"));
    }
    if header.range != row.range {
        return Err(Damage::Header("seq range"));
    }
    Ok(())
}

impl Mailbox {
    /// Removes the damaged batch `row` (see the module doc): in one transaction (a savepoint
    /// when the caller holds one), the row, its stream's coverage recomputed, the highest clock
    /// admitted lowered if it was this batch's, and the event recorded. Returns false when
    /// another connection removed it first (nothing changed, nothing counted).
    pub(crate) fn remove_damaged(
        &self,
        row: &Row<'_>,
        damage: &Damage,
    ) -> Result<bool, MailboxError> {
        let sql = |e| self.sql(e);
        // A plain `BEGIN IMMEDIATE` when no transaction is open, so the write lock is taken
        // up front (a deferred one could fail to upgrade against another writer).
        let outer = self.conn.is_autocommit();
        let (begin, commit, rollback) = match outer {
            true => ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"),
            false => (
                "SAVEPOINT damaged",
                "RELEASE damaged",
                "ROLLBACK TO damaged; RELEASE damaged",
            ),
        };
        self.conn.execute_batch(begin).map_err(sql)?;
        let r = remove_in(&self.conn, row, damage);
        let end = match r {
            Ok(_) => commit,
            Err(_) => rollback,
        };
        let ended = self.conn.execute_batch(end);
        let covered = r.map_err(sql)?;
        ended.map_err(sql)?;
        let stream = StreamId::new(row.origin, row.stream);
        match covered {
            Some(covered) => log::warn!(
                "mailbox={} damaged batch {}..={} of {stream} not served: {damage}; removed, \
                 the stream is covered up to {covered} now and the range is fetched again",
                self.path().display(),
                row.range.lo,
                row.range.hi,
            ),
            None => log::info!(
                "mailbox={} damaged batch {}..={} of {stream} not served: {damage}; another \
                 connection removed it already",
                self.path().display(),
                row.range.lo,
                row.range.hi,
            ),
        }
        Ok(covered.is_some())
    }

    /// Damaged batches removed so far (status pages).
    pub fn damaged_count(&self) -> Result<u64, MailboxError> {
        self.conn
            .query_row("SELECT count(*) FROM damaged", (), |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }
}

/// The removal's statements; returns the stream's coverage afterwards, or `None` when the row was
/// gone already.
fn remove_in(
    conn: &Connection,
    row: &Row<'_>,
    damage: &Damage,
) -> Result<Option<u64>, outpost_sql::Error> {
    // The bytes are compared so that a good copy stored since, under a reused row id, stays.
    let removed = conn.execute(
        "DELETE FROM batches WHERE id = ?1 AND bytes = ?2",
        params![row.id, row.bytes],
    )?;
    if removed == 0 {
        return Ok(None);
    }
    let origin = row.origin.as_bytes();
    conn.execute(
        "DELETE FROM coverage WHERE origin = ?1 AND stream = ?2",
        params![origin, row.stream],
    )?;
    advance_coverage(conn, &row.origin, row.stream)?;
    // The body's hash failed under a header that names this very batch: the header is the one
    // stored, so its max clock is too, and only if it reaches the highest admitted does that
    // figure need the held batches scanned again.
    let below_highest = match (damage.header_suspect(), header_clock(row.bytes)) {
        (false, Some(hlc)) => hlc < clock_bound::highest(conn)?,
        _ => false,
    };
    if !below_highest {
        clock_bound::recompute(conn)?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    conn.execute(
        "INSERT INTO damaged(origin, stream, lo, hi, found_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            origin,
            row.stream,
            row.range.lo as i64,
            row.range.hi as i64,
            now as i64
        ],
    )?;
    let covered: Option<i64> = conn
        .query_row(
            "SELECT covered FROM coverage WHERE origin = ?1 AND stream = ?2",
            params![origin, row.stream],
            |r| r.get(0),
        )
        .optional()?;
    Ok(Some(covered.unwrap_or(0) as u64))
}

/// The max clock the clear header of `bytes` states, when it parses.
fn header_clock(bytes: &[u8]) -> Option<outpost_protocol::Hlc> {
    outpost_protocol::batch::codec::decode_header(bytes, &ANY_SIZE)
        .ok()
        .map(|h| h.max_hlc)
}
