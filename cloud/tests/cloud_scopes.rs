//! Issue 19 (cloud side) against a running cloud: the tenant learns each table's scope rule from
//! the first batch header that declares it (tracked with that scope option, published in the
//! control stream, listed by `status`); a later batch stating another rule for the table is
//! refused alone; a relayed batch written into a scope outside its origin's grant is refused
//! alone, with a reason naming origin and scope, and the origin's other batches go on.

mod common;
use common::*;
use outpost_cloud::datadir::DataDir;
use outpost_mailbox::Mailbox;
use outpost_protocol::batch::codec::finish_batch_with;
use outpost_protocol::batch::{
    BatchMeta, BodyWriter, CellChange, CellPayload, ColumnSchema, Compression, ForeignKey,
    RowChange, TableSchema,
};
use outpost_protocol::control::VoidReason;
use outpost_protocol::scope::{ScopeColumn, ScopeRule, Scopes};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, StreamId, Value, VersionVector};
use outpost_testkit::keys::signed;
use serde_json::json;

/// A device granted `moshi` only.
const MOSHI_TABLET: SiteId = SiteId([0xb1; 16]);
/// Devices with no grant entry (every scope). One origin per stream: the engine numbers an
/// origin's seqs per stream only with the extension's per-stream work.
const OTHER: SiteId = SiteId([0xb2; 16]);
const OTHER_B: SiteId = SiteId([0xb3; 16]);
const OTHER_C: SiteId = SiteId([0xb4; 16]);

fn text(name: &str) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        decl_type: "TEXT".into(),
        strategy: Strategy::Lww,
        not_null: false,
    }
}

/// `patients(id, name, clinic)`, its scope as given.
fn patients(scope: Option<ScopeColumn>) -> TableSchema {
    TableSchema {
        name: "patients".into(),
        columns: vec![text("id"), text("name"), text("clinic")],
        primary_key: vec![0],
        foreign_keys: vec![],
        scope,
    }
}

/// `visits(id, patient_id REFERENCES patients)`, scoped via its patient.
fn visits() -> TableSchema {
    TableSchema {
        name: "visits".into(),
        columns: vec![text("id"), text("patient_id")],
        primary_key: vec![0],
        foreign_keys: vec![ForeignKey {
            columns: vec![1],
            parent: "patients".into(),
            parent_columns: vec![],
        }],
        scope: Some(ScopeColumn::Via(1)),
    }
}

/// A row of text cells (the key first, then every value column in order).
fn row(cells: &[&str], at: u64) -> RowChange {
    RowChange {
        key: vec![Value::Text(cells[0].into())],
        existence: 1,
        cells: cells[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| CellChange {
                column: i as u16,
                hlc: Hlc::new(1_790_000_000_000 + at, 0),
                payload: CellPayload::Value(Value::Text((*c).into())),
            })
            .collect(),
    }
}

/// A signed batch of `origin` in `stream` at `seq`, writing `rows` of `tables` (by index).
fn batch(
    origin: SiteId,
    stream: &str,
    seq: u64,
    tables: Vec<TableSchema>,
    rows: &[(u16, RowChange)],
) -> Vec<u8> {
    batch_under(origin, stream, seq, 0, tables, rows)
}

/// [`batch`], written under version `version` of its origin's grant.
fn batch_under(
    origin: SiteId,
    stream: &str,
    seq: u64,
    version: u64,
    tables: Vec<TableSchema>,
    rows: &[(u16, RowChange)],
) -> Vec<u8> {
    let mut w = BodyWriter::new(tables).unwrap();
    for (table, r) in rows {
        w.begin_table(*table).unwrap();
        w.push_row(r).unwrap();
    }
    let meta = BatchMeta {
        stream: stream.into(),
        grant_version: version,
        ..BatchMeta::default()
    };
    let range = SeqRange::new(seq, seq).unwrap();
    signed(finish_batch_with(w, origin, range, &meta, Compression::None).unwrap())
}

#[test]
fn scope_rules_are_learnt_from_headers_and_batches_outside_a_grant_are_refused_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _run, _rest) = serving(tmp.path());
    let tenant = data.join("tenant.db");
    DataDir::open(&data)
        .unwrap()
        .mailbox()
        .unwrap()
        .grant_scopes(MOSHI_TABLET, &Scopes::parse(["moshi"]).unwrap(), false)
        .unwrap();

    let scoped = || patients(Some(ScopeColumn::Column(2)));
    let batches = [
        // The first header declaring the rules: the child before its parent, as a header may.
        batch(
            MOSHI_TABLET,
            "moshi",
            1,
            vec![visits(), scoped()],
            &[
                (1, row(&["p1", "Amina", "moshi"], 1)),
                (0, row(&["v1", "p1"], 2)),
            ],
        ),
        // Relayed from a hub with a stale grant: the tablet holds moshi only.
        batch(
            MOSHI_TABLET,
            "tanga",
            1,
            vec![scoped()],
            &[(0, row(&["p2", "Baraka", "tanga"], 3))],
        ),
        // The same table, unscoped: refused.
        batch(
            OTHER,
            "",
            1,
            vec![patients(None)],
            &[(0, row(&["p3", "Chausiku", "x"], 4))],
        ),
        // Scoped by another column: refused.
        batch(
            OTHER_B,
            "moshi",
            1,
            vec![patients(Some(ScopeColumn::Column(1)))],
            &[(0, row(&["p4", "moshi", "moshi"], 5))],
        ),
        // The same rule, from a site granted everything: applied.
        batch(
            OTHER_C,
            "tanga",
            1,
            vec![scoped()],
            &[(0, row(&["p5", "Dalila", "tanga"], 6))],
        ),
    ];
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    for b in &batches {
        assert!(mailbox.store(vec![b.clone()]).unwrap()[0].stored);
    }
    wait_for("the accepted batches to be applied", || {
        (shell_json(
            &tenant,
            "SELECT count(*) AS n FROM sqlite_master WHERE name = '_cloud_refused_batches'",
        ) == json!([{"n": 1}])
            && shell_json(&tenant, "SELECT count(*) AS n FROM _cloud_refused_batches")
                == json!([{"n": 3}])
            && shell_json(&tenant, "SELECT id FROM patients ORDER BY id")
                == json!([{"id": "p1"}, {"id": "p5"}]))
        .then_some(())
    });
    assert_eq!(
        shell_json(&tenant, "SELECT id, patient_id FROM visits"),
        json!([{"id": "v1", "patient_id": "p1"}])
    );

    // Tracked with the header's scope options, as a device would track them.
    assert_eq!(
        shell_json(
            &tenant,
            "SELECT name, json_extract(def, '$.scope') AS scope FROM _outpost_tables ORDER BY name"
        ),
        json!([
            {"name": "patients", "scope": "{\"column\":\"clinic\"}"},
            {"name": "visits", "scope": "{\"via\":\"patient_id\"}"}
        ])
    );

    let refused = shell_json(
        &tenant,
        "SELECT hex(origin) AS origin, stream, reason FROM _cloud_refused_batches \
         ORDER BY origin, stream",
    );
    let reason = |origin: SiteId, stream: &str| {
        refused
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["origin"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&origin.to_string())
                    && r["stream"] == stream
            })
            .unwrap_or_else(|| panic!("no refusal of {origin} {stream:?}: {refused}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let outside = reason(MOSHI_TABLET, "tanga");
    assert!(
        outside.contains(&format!("origin {MOSHI_TABLET} wrote into scope \"tanga\""))
            && outside.contains("(moshi)"),
        "{outside}"
    );
    assert!(
        reason(OTHER, "").contains(
            "table \"patients\" is scoped by column \"clinic\" in the tenant but unscoped in \
             this batch's header"
        ),
        "{refused}"
    );
    assert!(
        reason(OTHER_B, "moshi").contains("but scoped by column \"name\" in this batch's header"),
        "{refused}"
    );

    // The rules are the tenant's table settings, in the control stream every peer applies.
    let mut mailbox = DataDir::open(&data).unwrap().mailbox().unwrap();
    let directory = mailbox.directory().unwrap();
    assert_eq!(
        directory.table_scope("patients"),
        Some(&ScopeRule::Column("clinic".into()))
    );
    assert_eq!(
        directory.table_scope("visits"),
        Some(&ScopeRule::Via("patient_id".into()))
    );
    // Each refused batch is a voided range in the same stream (issue 19 item 4): every mailbox
    // counts it as covered and serves it to no one.
    let voided: Vec<(SiteId, String, u64, VoidReason)> = directory
        .voids()
        .map(|(s, r, why)| (s.origin, s.scope.clone(), r.lo, why))
        .collect();
    assert_eq!(
        voided,
        [
            (MOSHI_TABLET, "tanga".into(), 1, VoidReason::OutsideGrant),
            (OTHER, "".into(), 1, VoidReason::Invalid),
            (OTHER_B, "moshi".into(), 1, VoidReason::Invalid),
        ]
    );
    let served: Vec<(SiteId, String)> = mailbox
        .batches_for(&VersionVector::new(), None, &Scopes::All)
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            (b.origin, b.scope)
        })
        .collect();
    assert_eq!(
        served,
        [(MOSHI_TABLET, "moshi".into()), (OTHER_C, "tanga".into())]
    );
    let covered = mailbox.vector().unwrap();
    for (origin, scope) in [(MOSHI_TABLET, "tanga"), (OTHER, ""), (OTHER_B, "moshi")] {
        assert_eq!(covered.get(&StreamId::new(origin, scope)), 1);
    }

    let status = cli_ok(&["status", "--data", data.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let tables = &status["tenant"]["tables"];
    assert!(
        tables
            .as_array()
            .unwrap()
            .contains(&json!({"name": "patients", "rows": 2, "scope": "clinic"})),
        "{tables}"
    );
    assert!(
        tables
            .as_array()
            .unwrap()
            .contains(&json!({"name": "visits", "rows": 1, "scope": {"via": "patient_id"}})),
        "{tables}"
    );
    // Per scope: the streams held (refused batches stay held), by the peers enrolled here.
    let per_scope: Vec<(String, u64)> = status["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["scope"].as_str().unwrap().to_string(),
                c["batches"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per_scope,
        [("".into(), 1), ("moshi".into(), 2), ("tanga".into(), 2)],
        "{status}"
    );
    let human = cli_ok(&["status", "--data", data.to_str().unwrap()]);
    assert!(human.contains("scope via patient_id"), "{human}");
    assert!(human.contains("scope moshi  2 batches"), "{human}");
}

/// A relayed batch is judged by the grant version it names: changes written before a regrant
/// still come up (the removed scope drains); a batch naming the new version in the scope it
/// lost, or a version no entry states, is refused alone.
#[test]
fn relayed_batches_are_judged_by_the_grant_version_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _run, _rest) = serving(tmp.path());
    let tenant = data.join("tenant.db");
    {
        let mut mailbox = DataDir::open(&data).unwrap().mailbox().unwrap();
        for scopes in [["moshi"], ["tanga"]] {
            mailbox
                .grant_scopes(MOSHI_TABLET, &Scopes::parse(scopes).unwrap(), false)
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            mailbox
                .directory()
                .unwrap()
                .grant_of(&MOSHI_TABLET)
                .unwrap()
                .version,
            2
        );
    }
    let scoped = || vec![patients(Some(ScopeColumn::Column(2)))];
    let batches = [
        // Written under version 1 (moshi), pushed after the regrant: drains.
        batch_under(
            MOSHI_TABLET,
            "moshi",
            1,
            1,
            scoped(),
            &[(0, row(&["p1", "Amina", "moshi"], 1))],
        ),
        // Naming version 2 in moshi: refused.
        batch_under(
            MOSHI_TABLET,
            "moshi",
            2,
            2,
            scoped(),
            &[(0, row(&["p2", "Baraka", "moshi"], 2))],
        ),
        // Version 2 in tanga: applied.
        batch_under(
            MOSHI_TABLET,
            "tanga",
            1,
            2,
            scoped(),
            &[(0, row(&["t1", "Chausiku", "tanga"], 3))],
        ),
        // A version no entry states: refused.
        batch_under(
            MOSHI_TABLET,
            "tanga",
            2,
            7,
            scoped(),
            &[(0, row(&["t2", "Dalila", "tanga"], 4))],
        ),
    ];
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    for b in &batches {
        assert!(mailbox.store(vec![b.clone()]).unwrap()[0].stored);
    }
    wait_for("the drained and granted batches to be applied", || {
        (shell_json(
            &tenant,
            "SELECT count(*) AS n FROM sqlite_master \
             WHERE name IN ('patients', '_cloud_refused_batches')",
        ) == json!([{"n": 2}])
            && shell_json(&tenant, "SELECT id FROM patients ORDER BY id")
                == json!([{"id": "p1"}, {"id": "t1"}])
            && shell_json(&tenant, "SELECT count(*) AS n FROM _cloud_refused_batches")
                == json!([{"n": 2}]))
        .then_some(())
    });
    let reasons = shell_json(
        &tenant,
        "SELECT stream, lo, reason FROM _cloud_refused_batches ORDER BY stream",
    );

    let text = reasons.to_string();
    assert!(text.contains("does not hold"), "{text}");
    assert!(text.contains("version 7 of its grant"), "{text}");
}

/// REST tokens are scoped by their grant, over HTTPS against a running cloud whose tables were
/// made from a device's scoped batch: `api-token --scopes moshi` pulls moshi's patients and
/// their visits only, and a push outside its scopes is refused with 403 naming the scope.
#[test]
fn a_scoped_api_token_pulls_and_pushes_only_its_scopes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let d = data.to_str().unwrap();
    let moshi = cli_ok(&["api-token", "--data", d, "moshi-app", "--scopes", "moshi"])
        .trim()
        .to_string();
    let run = start(&data);
    let rest = Rest::new(&data, &run.https, &moshi);
    let scoped = || patients(Some(ScopeColumn::Column(2)));
    let mut mailbox = Mailbox::open(data.join("mailbox.db")).unwrap();
    let b = batch(
        OTHER,
        "",
        1,
        vec![scoped(), visits()],
        &[
            (0, row(&["m1", "Amina", "moshi"], 1)),
            (0, row(&["t1", "Baraka", "tanga"], 2)),
            (1, row(&["v1", "m1"], 3)),
            (1, row(&["v2", "t1"], 4)),
        ],
    );
    assert!(mailbox.store(vec![b]).unwrap()[0].stored);
    let tenant = data.join("tenant.db");
    wait_for("the device's batch to be applied", || {
        (shell_json(
            &tenant,
            "SELECT count(*) AS n FROM sqlite_master WHERE name = 'visits'",
        ) == json!([{"n": 1}])
            && shell_json(&tenant, "SELECT count(*) AS n FROM visits") == json!([{"n": 2}]))
        .then_some(())
    });

    let (status, pull) = rest.pull(None);
    assert_eq!(status, 200, "{pull}");
    let ids = |table: &str| -> Vec<String> {
        records(&pull, table, "created")
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("patients"), ["m1"]);
    assert_eq!(ids("visits"), ["v1"]);

    let t = pull["timestamp"].as_i64().unwrap();
    let (status, answer) = rest.push(
        t,
        &json!({"patients": {"created": [{"id": "r1", "name": "Faraji", "clinic": "tanga"}]}}),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("scope 'tanga' is not granted to this token"),
        "{answer}"
    );
    let (status, answer) = rest.push(
        t,
        &json!({"patients": {"created": [{"id": "r2", "name": "Faraji", "clinic": "moshi"}]}}),
    );
    assert_eq!(status, 200, "{answer}");

    // `grant --token` widens it: the next first pull holds both clinics.
    cli_ok(&[
        "grant",
        "--data",
        d,
        "--token",
        "moshi-app",
        "--scopes",
        "moshi,tanga",
    ]);
    let (_, pull) = rest.pull(None);
    assert_eq!(records(&pull, "patients", "created").len(), 3, "{pull}");
    drop(run);
}
