//! Batches the cloud refuses whole: a header its schema step refuses, a batch that does not decode
//! or would take more memory to decode than its size on the wire allows, one that does not match
//! the tenant's table settings (directions, scope rules), one written into a scope outside its
//! origin's grant.
//!
//! Each such decision depends on the batch's bytes and the tenant's settings alone
//! (`schema::validate_all`, `codec::decode`, the control stream), so it is the same on every
//! replica and every retry: the batch is recorded here with its reason, the tenant's vector is
//! advanced over its seqs (by applying an empty batch of the same stream and range, so only the
//! engine writes its bookkeeping), and the stream's later batches go on. The batch itself stays in the mailbox (nothing is removed from
//! it) and is never decoded again by the ingest, whose plan starts above the tenant's vector.
//! Before, such a batch stopped its origin's ingestion for good (issue 16, finding 7).

use outpost_protocol::batch::codec;
use outpost_protocol::batch::{BatchMeta, BodyWriter, Compression};
use outpost_protocol::{SeqRange, SiteId};
use rusqlite::{params, Connection};

/// The table of refused batches (reserved: no batch can name a `_cloud*` table).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _cloud_refused_batches (
    origin BLOB NOT NULL,
    stream TEXT NOT NULL DEFAULT '',
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    reason TEXT NOT NULL,
    refused_at INTEGER NOT NULL,
    PRIMARY KEY (origin, stream, lo)
) WITHOUT ROWID;
";

/// Creates the table, or brings one made before streams up to date (in one transaction).
fn ensure_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let has_stream: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('_cloud_refused_batches') WHERE name = 'stream'",
        [],
        |r| r.get(0),
    )?;
    if has_stream == 0 {
        // The table as made before streams (every batch was of the unscoped stream) is
        // rebuilt with the column, its records kept.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             ALTER TABLE _cloud_refused_batches RENAME TO _cloud_refused_batches_v1;
             {SCHEMA}
             INSERT INTO _cloud_refused_batches (origin, stream, lo, hi, reason, refused_at)
                 SELECT origin, '', lo, hi, reason, refused_at FROM _cloud_refused_batches_v1;
             DROP TABLE _cloud_refused_batches_v1;
             COMMIT;"
        ))?;
    }
    Ok(())
}

/// A batch refused whole, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedBatch {
    /// Its origin.
    pub origin: SiteId,
    /// Its stream (scope; `""` unscoped).
    pub stream: String,
    /// Its seqs, `lo..=hi`.
    pub range: (u64, u64),
    /// Why, the same on every replica.
    pub reason: String,
}

/// Records `batch` as refused (idempotent: a second record of the same batch keeps the first),
/// then advances the tenant's vector over its seqs. Must run outside a transaction
/// (`outpost_apply` owns its own); an interruption between the two steps is completed by the
/// next ingest, which refuses the batch again for the same reason.
pub(crate) fn refuse(
    conn: &Connection,
    origin: SiteId,
    stream: &str,
    range: SeqRange,
    reason: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    ensure_table(conn)?;
    conn.execute(
        "INSERT OR IGNORE INTO _cloud_refused_batches (origin, stream, lo, hi, reason, refused_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            origin.0.to_vec(),
            stream,
            range.lo as i64,
            range.hi as i64,
            reason,
            now_ms
        ],
    )?;
    let meta = BatchMeta {
        stream: stream.into(),
        ..BatchMeta::default()
    };
    // An empty body with no tables always encodes; a stream name from the mailbox fits.
    let empty = BodyWriter::new(Vec::new())
        .and_then(|w| codec::finish_batch_with(w, origin, range, &meta, Compression::None))
        .map_err(|e| {
            rusqlite::Error::ToSqlConversionFailure(
                format!("an empty batch of stream {stream:?}: {e}").into(),
            )
        })?;
    conn.query_row("SELECT outpost_apply(?1)", [empty], |r| {
        r.get::<_, String>(0)
    })?;
    Ok(())
}

/// Every refused batch, by origin and seq.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<RefusedBatch>> {
    let has: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name = '_cloud_refused_batches'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        return Ok(Vec::new());
    }
    let has_stream: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('_cloud_refused_batches') WHERE name = 'stream'",
        [],
        |r| r.get(0),
    )?;
    // `status` reads without writing: a table made before streams is read as it is.
    let stream = if has_stream == 0 { "''" } else { "stream" };
    let mut stmt = conn.prepare(&format!(
        "SELECT origin, {stream}, lo, hi, reason FROM _cloud_refused_batches ORDER BY 1, 2, 3"
    ))?;
    let rows = stmt.query_map([], |r| {
        let origin: Vec<u8> = r.get(0)?;
        let origin = SiteId::from_slice(&origin).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Blob,
                "a refused batch's origin is not a 16-byte site id".into(),
            )
        })?;
        Ok(RefusedBatch {
            origin,
            stream: r.get(1)?,
            range: (r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64),
            reason: r.get(4)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table made before streams keeps its records, read as the unscoped stream's, and takes
    /// a scoped stream's refusal of the same origin and seqs beside them.
    #[test]
    fn a_table_made_before_streams_is_upgraded_with_its_records() {
        outpost_embed::register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("tenant.db")).unwrap();
        let origin = SiteId([0x5a; 16]);
        conn.execute_batch(
            "CREATE TABLE _cloud_refused_batches (origin BLOB NOT NULL, lo INTEGER NOT NULL, \
             hi INTEGER NOT NULL, reason TEXT NOT NULL, refused_at INTEGER NOT NULL, \
             PRIMARY KEY (origin, lo)) WITHOUT ROWID;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO _cloud_refused_batches VALUES (?1, 1, 2, 'old reason', 7)",
            [origin.0.to_vec()],
        )
        .unwrap();
        let old = RefusedBatch {
            origin,
            stream: String::new(),
            range: (1, 2),
            reason: "old reason".into(),
        };
        assert_eq!(
            list(&conn).unwrap(),
            vec![old.clone()],
            "read before the upgrade"
        );
        refuse(
            &conn,
            origin,
            "moshi",
            SeqRange::new(1, 2).unwrap(),
            "outside its grant",
            8,
        )
        .unwrap();
        let new = RefusedBatch {
            stream: "moshi".into(),
            reason: "outside its grant".into(),
            ..old.clone()
        };
        assert_eq!(list(&conn).unwrap(), vec![old, new]);
    }
}
