//! Issue 16, finding 6 against a running cloud: table directions are the tenant's to declare
//! (`outpost-cloud table`). A peer's batch that writes a `down` table, or is flagged `up` while
//! writing another, is refused alone with a reason (the origin's later batches go on); `up`
//! tables are collected but never served over REST; a REST push to a `down` table is refused.

mod common;
use common::*;
use outpost_mailbox::Mailbox;
use outpost_protocol::batch::codec::{encode, set_flags};
use outpost_protocol::batch::{
    BatchFlags, CellChange, CellPayload, ColumnSchema, Compression, Direction, RowChange,
    TableChanges, TableSchema,
};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, Value};
use serde_json::json;

const ORIGIN: SiteId = SiteId([0xa6; 16]);

/// A batch of ORIGIN at `seq` writing row `id` of table `name` (`id`, `title`), flagged
/// `direction`.
fn batch(seq: u64, name: &str, id: &str, direction: Direction) -> Vec<u8> {
    let column = |n: &str| ColumnSchema {
        name: n.into(),
        decl_type: "TEXT".into(),
        strategy: Strategy::Lww,
        not_null: false,
    };
    let table = TableSchema {
        scope: None,
        name: name.into(),
        columns: vec![column("id"), column("title")],
        primary_key: vec![0],
        foreign_keys: vec![],
    };
    let row = RowChange {
        key: vec![Value::Text(id.into())],
        existence: 1,
        cells: vec![CellChange {
            column: 0,
            hlc: Hlc::new(1_790_000_000_000 + seq, 0),
            payload: CellPayload::Value(Value::Text(format!("{name} {seq}"))),
        }],
    };
    let mut bytes = encode(
        ORIGIN,
        SeqRange::new(seq, seq).unwrap(),
        vec![table],
        &[TableChanges {
            credit: None,
            table: 0,
            rows: vec![row],
        }],
        Compression::None,
    );
    let flags = BatchFlags {
        direction,
        transfer: false,
    };
    set_flags(&mut bytes, flags).unwrap();
    bytes
}

#[test]
fn a_peers_writes_to_down_tables_are_refused_and_up_tables_are_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _run, rest) = serving(tmp.path());
    let data_arg = data.to_str().unwrap();
    let tenant = data.join("tenant.db");
    for (table, direction) in [("forms", "down"), ("submissions", "up")] {
        let out = cli_ok(&["table", "--data", data_arg, table, "--direction", direction]);
        assert!(out.contains(&format!("table {table} {direction}")), "{out}");
    }
    let listed = cli_ok(&["table", "--data", data_arg]);
    assert_eq!(listed, "forms down\nsubmissions up\n");

    let batches = [
        batch(1, "patients", "p1", Direction::Both),
        // Finding 6: a tablet rewriting the operator's reference data.
        batch(2, "forms", "intake", Direction::Both),
        batch(3, "forms", "intake", Direction::Down),
        // Flagged up (relays keep it from devices) while it writes a table devices must get.
        batch(4, "patients", "p2", Direction::Up),
        batch(5, "submissions", "s1", Direction::Up),
        batch(6, "patients", "p3", Direction::Both),
    ];
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    for b in &batches {
        assert!(mailbox.store(vec![b.clone()]).unwrap()[0].stored);
    }
    wait_for("the origin's last batch to be applied", || {
        let rows = shell_json(
            &tenant,
            "SELECT count(*) AS n FROM sqlite_master WHERE name = 'patients'",
        );
        (rows == json!([{"n": 1}])
            && shell_json(&tenant, "SELECT id FROM patients WHERE id = 'p3'")
                == json!([{"id": "p3"}]))
        .then_some(())
    });
    assert_eq!(
        shell_json(&tenant, "SELECT id FROM patients ORDER BY id"),
        json!([{"id": "p1"}, {"id": "p3"}])
    );
    assert_eq!(
        shell_json(&tenant, "SELECT id FROM submissions"),
        json!([{"id": "s1"}]),
        "an up table is collected"
    );
    assert_eq!(
        shell_json(
            &tenant,
            "SELECT count(*) AS n FROM sqlite_master WHERE name = 'forms'"
        ),
        json!([{"n": 0}]),
        "no peer's batch reached the down table"
    );
    let recorded = shell_json(
        &tenant,
        "SELECT lo, reason FROM _cloud_refused_batches ORDER BY lo",
    );
    let recorded = recorded.as_array().unwrap();
    let los: Vec<u64> = recorded.iter().map(|r| r["lo"].as_u64().unwrap()).collect();
    assert_eq!(los, vec![2, 3, 4], "{recorded:?}");
    let reason = |i: usize| recorded[i]["reason"].as_str().unwrap().to_string();
    assert!(
        reason(0).contains("\"forms\", which the tenant declares down"),
        "{recorded:?}"
    );
    assert!(reason(1).contains("flagged down"), "{recorded:?}");
    assert!(reason(2).contains("flagged up"), "{recorded:?}");

    // REST: the up table is not pulled; a push to the down table is refused whole.
    let (status, pull) = rest.pull(None);
    assert_eq!(status, 200, "{pull}");
    assert!(pull["changes"].get("submissions").is_none(), "{pull}");
    assert_eq!(records(&pull, "patients", "created").len(), 2, "{pull}");
    let (status, answer) = rest.push(
        0,
        &json!({"patients": {"created": [{"id": "p9", "title": "x"}]},
                "submissions": {"created": [{"id": "s9", "title": "y"}]}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        shell_json(&tenant, "SELECT id FROM submissions ORDER BY id"),
        json!([{"id": "s1"}, {"id": "s9"}])
    );

    // The operator writes the reference data; the cloud's batch holding it is flagged `down`
    // (every receiver takes that from the cloud alone), and apps may not push to it.
    {
        let op = device(&tenant);
        op.execute_batch(
            "CREATE TABLE forms(id TEXT PRIMARY KEY, title TEXT);
             SELECT outpost_track('forms');
             INSERT INTO forms VALUES ('intake', 'Intake form');",
        )
        .unwrap();
    }
    let cloud_site =
        SiteId::from_slice(&hex_of(&cli_ok(&["status", "--data", data_arg, "--json"]))).unwrap();
    let flags = wait_for("the operator's form to be exported", || {
        let mut plan = mailbox
            .pull_plan(
                &outpost_protocol::VersionVector::new(),
                None,
                &outpost_protocol::scope::Scopes::All,
            )
            .unwrap();
        let mut flags = Vec::new();
        while let Some(b) = mailbox.next_batch(&mut plan).unwrap() {
            if b.origin == cloud_site {
                let h = outpost_protocol::batch::codec::decode_header(
                    &b.bytes,
                    &outpost_protocol::batch::codec::Limits::default(),
                )
                .unwrap();
                flags.push(h.flags.direction);
            }
        }
        (flags.len() == 2).then_some(flags)
    });
    assert_eq!(flags, vec![Direction::Both, Direction::Down]);
    let (status, answer) = rest.push(
        0,
        &json!({"forms": {"updated": [{"id": "intake", "title": "Hacked"}]}}),
    );
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        shell_json(&tenant, "SELECT title FROM forms"),
        json!([{"title": "Intake form"}])
    );

    let own = cli_ok(&["status", "--data", data_arg, "--json"]);
    let own: serde_json::Value = serde_json::from_str(&own).unwrap();
    assert_eq!(
        own["tenant"]["directions"],
        json!({"forms": "down", "submissions": "up"})
    );

    // Declaring a direction for a table that has rows is refused.
    let (ok, _, err) = cli(&[
        "table",
        "--data",
        data_arg,
        "patients",
        "--direction",
        "down",
    ]);
    assert!(!ok);
    assert!(err.contains("already holds 3 rows"), "{err}");
}

/// The site id `status --json` reports, as bytes.
fn hex_of(status: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(status).unwrap();
    let site = v["site"].as_str().unwrap();
    (0..site.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&site[i..i + 2], 16).unwrap())
        .collect()
}
