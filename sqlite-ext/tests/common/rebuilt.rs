//! Batches re-encoded with another clear header, as a forger or a test needs them.

use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{signature, BatchMeta, BodyWriter, Compression};
use outpost_protocol::SiteId;
use outpost_testkit::keys::site_keypair;

/// `batch`'s rows under `meta`, every group credited to `credit` when given (a transfer's
/// body), signed by its origin's test key.
pub fn rebuilt(batch: &[u8], meta: &BatchMeta, credit: Option<SiteId>) -> Vec<u8> {
    let b = codec::decode(batch, &Limits::default()).unwrap();
    let mut w = match credit {
        Some(_) => BodyWriter::new_transfer(b.header.tables.clone()).unwrap(),
        None => BodyWriter::new(b.header.tables.clone()).unwrap(),
    };
    for g in &b.tables {
        match credit {
            Some(site) => w.begin_credited(g.table, site).unwrap(),
            None => w.begin_table(g.table).unwrap(),
        }
        for row in &g.rows {
            w.push_row(row).unwrap();
        }
    }
    let mut out =
        codec::finish_batch_with(w, b.header.origin, b.header.range, meta, Compression::None)
            .unwrap();
    signature::sign(&mut out, &site_keypair(b.header.origin)).unwrap();
    out
}
