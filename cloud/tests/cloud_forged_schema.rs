//! Issue 16, findings 3, 4, 5 and 7a against a running cloud: an origin's batches whose header
//! names the engine's own tables, smuggles SQL in a declared type, names a reserved table, or
//! decodes into more memory than its size allows, stored in the cloud's mailbox as a relay would
//! store them. The cloud refuses each whole with a reason, keeps applying the origin's later
//! batches, and keeps serving WatermelonDB pulls.

mod common;
use common::*;
use outpost_mailbox::Mailbox;
use outpost_protocol::batch::codec::{encode, finish_batch};
use outpost_protocol::batch::{
    BodyWriter, CellChange, CellPayload, ColumnSchema, Compression, RowChange, TableChanges,
    TableSchema,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, Value};
use serde_json::json;

const ORIGIN: SiteId = SiteId([0xa5; 16]);

fn column(name: &str, decl: &str) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: decl.into(),
        strategy: Strategy::Lww,
        not_null: false,
    }
}

/// A table `name` keyed by `id`, with `extra` columns after `name`.
fn table(name: &str, extra: &[ColumnSchema]) -> TableSchema {
    let mut columns = vec![column("id", "TEXT"), column("name", "TEXT")];
    columns.extend_from_slice(extra);
    TableSchema {
        scope: None,
        name: name.into(),
        columns,
        primary_key: vec![0],
        foreign_keys: vec![],
    }
}

/// A batch of ORIGIN at `seq` writing row `id` (`name` set) of `t`.
fn batch(seq: u64, t: TableSchema, id: &str) -> Vec<u8> {
    let row = RowChange {
        key: vec![Value::Text(id.into())],
        existence: 1,
        cells: vec![CellChange {
            column: 0,
            hlc: Hlc::new(1_790_000_000_000 + seq, 0),
            payload: CellPayload::Value(Value::Text(format!("name {seq}"))),
        }],
    };
    encode(
        ORIGIN,
        SeqRange::new(seq, seq).unwrap(),
        vec![t],
        &[TableChanges {
            credit: None,
            table: 0,
            rows: vec![row],
        }],
        Compression::None,
    )
}

#[test]
fn forged_schemas_are_refused_and_the_origin_keeps_syncing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _run, rest) = serving(tmp.path());
    let tenant = data.join("tenant.db");
    let patients = || table("patients", &[]);

    let mut forged = vec![
        // Finding 4: the engine's own table, tracked from a header.
        table("outpost_quarantine", &[]),
        table("OUTPOST_conflicts", &[]),
        // Finding 7a: a header even the old schema step refused stopped the origin for good.
        table("_cloud_rest_log", &[]),
        table("patients", &[column("_outpost_x", "TEXT")]),
    ];
    // Finding 5: SQL in a declared type, added to an existing table.
    for decl in [
        "TEXT AS (abs(-9223372036854775807 - 1))",
        "TEXT CHECK (name <> 'x')",
        "INTEGER DEFAULT (0)",
        "TEXT REFERENCES patients ON DELETE CASCADE",
        "TEXT'",
    ] {
        forged.push(table("patients", &[column("evil", decl)]));
    }
    let mut batches = vec![batch(1, patients(), "p1")];
    let mut seq = 1;
    for t in forged {
        seq += 1;
        batches.push(batch(seq, t, &format!("x{seq}")));
    }
    // Finding 3 at a receiver: 2 million empty table groups, a few KB compressed. Small enough
    // for a relay's checks (header and lengths), over the decoding budget once parsed.
    seq += 1;
    let mut w = BodyWriter::new(vec![patients()]).unwrap();
    for _ in 0..(2 << 20) {
        w.begin_table(0).unwrap();
    }
    let bomb = finish_batch(
        w,
        ORIGIN,
        SeqRange::new(seq, seq).unwrap(),
        Compression::Deflate,
    )
    .unwrap();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    batches.push(bomb);
    let refused = seq - 1;
    seq += 1;
    batches.push(batch(seq, patients(), "p2"));
    let last = seq;

    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    for b in &batches {
        let r = mailbox.store(vec![b.clone()]).unwrap();
        assert!(r[0].stored, "the mailbox stores what a relay accepts");
    }

    // The origin's last batch is applied: nothing before it stopped the origin.
    let rows = wait_for("the origin's last batch to be applied", || {
        let made = shell_json(
            &tenant,
            "SELECT count(*) AS n FROM sqlite_master WHERE name = 'patients'",
        );
        if made != json!([{"n": 1}]) {
            return None;
        }
        let rows = shell_json(&tenant, "SELECT id, name FROM patients ORDER BY id");
        (rows.as_array().map(Vec::len) == Some(2)).then_some(rows)
    });
    assert_eq!(
        rows,
        json!([{"id": "p1", "name": "name 1"}, {"id": "p2", "name": format!("name {last}")}])
    );
    // The tenant covers every seq of the origin: the refused ones were skipped, not left as gaps.
    assert_eq!(
        shell_json(
            &tenant,
            "SELECT covered FROM _outpost_vector WHERE site = x'a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5'"
        ),
        json!([{ "covered": last }])
    );

    // Each forged batch is recorded with its reason and none of its schema reached the tenant.
    let recorded = shell_json(
        &tenant,
        "SELECT lo, reason FROM _cloud_refused_batches ORDER BY lo",
    );
    let recorded = recorded.as_array().unwrap();
    assert_eq!(recorded.len() as u64, refused, "{recorded:?}");
    let reasons: Vec<&str> = recorded
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons[0].contains("\"outpost_quarantine\" is reserved"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("\"_outpost_x\" is reserved"),
        "{reasons:?}"
    );
    assert!(
        reasons[4].contains("is not an accepted type name"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .last()
            .unwrap()
            .contains("more than 67108864 bytes of memory"),
        "{reasons:?}"
    );
    assert_eq!(
        shell_json(&tenant, "SELECT name FROM _outpost_tables ORDER BY name"),
        json!([{"name": "patients"}])
    );
    assert_eq!(
        shell_json(
            &tenant,
            "SELECT name, type FROM pragma_table_info('patients') ORDER BY cid"
        ),
        json!([{"name": "id", "type": "TEXT"}, {"name": "name", "type": "TEXT"}])
    );

    // WatermelonDB pulls are served, with the origin's records.
    let (status, pull) = rest.pull(None);
    assert_eq!(status, 200, "{pull}");
    let ids: Vec<_> = records(&pull, "patients", "created")
        .into_iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("p1"), json!("p2")]);
    assert!(
        pull["changes"].get("outpost_quarantine").is_none(),
        "{pull}"
    );
}
