//! Table directions on the device (docs/design.md section 10, issue 16 item 5): the batches a
//! device exports are flagged `up` or `both` and cut where the direction changes; the tenant's
//! table settings (cloud-signed control entries, served here by the scripted hub) win over the
//! device's own `outpost_track` options; an `up` batch served as its clear header alone covers
//! its range; a batch claiming to write what only the cloud writes is quarantined whole. The
//! tenant's scope rule for a table wins the same way (`sync/table_settings.rs`).

mod common;
use common::scripted_hub::Hub;
use common::Replica;
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{signature, BatchFlags, BatchMeta, Direction};
use outpost_protocol::control;
use outpost_protocol::enroll_code::CloudAnchor;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::PeerRole;
use outpost_protocol::SiteId;
use outpost_testkit::keys::site_keypair;

const SCHEMA: &str = "
CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
CREATE TABLE readings(id TEXT PRIMARY KEY NOT NULL, value REAL);
CREATE TABLE forms(id TEXT PRIMARY KEY NOT NULL, body TEXT);
";

/// A device tracking patients `both`, readings `up` and forms `down`.
fn device(name: &str) -> Replica {
    let r = Replica::new(name, SCHEMA);
    r.track("patients", None);
    r.track("readings", Some(r#"{"direction":"up"}"#));
    r.track("forms", Some(r#"{"direction":"down"}"#));
    r
}

/// A replica tracking all three tables `both` (the cloud's tenant database does so: it writes
/// every table).
fn writer(name: &str) -> Replica {
    let r = Replica::new(name, SCHEMA);
    for t in ["patients", "readings", "forms"] {
        r.track(t, None);
    }
    r
}

fn site_of(r: &Replica) -> SiteId {
    SiteId::from_slice(&hex::decode(r.site_hex()).unwrap()).unwrap()
}

/// `(lo, hi, direction, tables with rows)` of each batch `r` exports from `since` with `budget`.
fn exported(r: &Replica, budget: Option<i64>) -> Vec<(u64, u64, String, Vec<String>)> {
    let mut out = Vec::new();
    let mut since = 0;
    while let Some(b) = r.changes(since, budget) {
        let json: String = r
            .conn
            .query_row("SELECT outpost_batch_json(?1)", [&b], |row| row.get(0))
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        let h = &json["header"];
        let (lo, hi) = (
            h["range"]["lo"].as_u64().unwrap(),
            h["range"]["hi"].as_u64().unwrap(),
        );
        let tables = json["body"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["table"].as_str().unwrap().to_string())
            .collect();
        out.push((lo, hi, h["direction"].as_str().unwrap().to_string(), tables));
        since = hi as i64;
    }
    out
}

#[test]
fn exported_batches_are_flagged_up_only_when_every_row_is_of_an_up_table_and_cut_where_it_turns() {
    let d = device("d");
    d.exec(
        "INSERT INTO patients VALUES ('p1', 'Asha');
         INSERT INTO readings VALUES ('r1', 36.6);
         INSERT INTO readings VALUES ('r2', 37.1);
         INSERT INTO patients VALUES ('p2', 'Baraka');
         INSERT INTO readings VALUES ('r3', 38.0);",
    );
    let want = vec![
        (1, 1, "both".to_string(), vec!["patients".to_string()]),
        (2, 3, "up".into(), vec!["readings".into()]),
        (4, 4, "both".into(), vec!["patients".into()]),
        (5, 5, "up".into(), vec!["readings".into()]),
    ];
    assert_eq!(exported(&d, None), want, "without a budget");
    assert_eq!(exported(&d, Some(512 * 1024)), want, "with one");
    // A budget still cuts inside a run of one direction.
    let small = exported(&d, Some(1));
    assert_eq!(small.len(), 5, "{small:?}");
    assert!(small.iter().all(|(lo, hi, ..)| lo == hi), "{small:?}");
    assert_eq!(
        small.iter().map(|b| b.2.as_str()).collect::<Vec<_>>(),
        ["both", "up", "up", "both", "up"]
    );

    // A device with `both` tables only exports `both` batches, one per call as before.
    let w = writer("w");
    w.exec("INSERT INTO patients VALUES ('p1', 'Asha'); INSERT INTO readings VALUES ('r1', 1);");
    assert_eq!(
        exported(&w, None),
        vec![(
            1,
            2,
            "both".to_string(),
            vec!["patients".to_string(), "readings".to_string()]
        )]
    );
    // An up batch is served whole to a peer that applies it (the cloud): nothing is lost.
    let cloud = writer("cloud");
    d.sync_to(&cloud, None);
    assert_eq!(
        cloud.rows("SELECT id FROM readings ORDER BY id"),
        ["Text(\"r1\")", "Text(\"r2\")", "Text(\"r3\")"]
    );
    assert_eq!(cloud.covered(&d.site_hex()), 5);
}

/// The tenant: a cloud with its own database (tracking every table `both`, as the cloud's
/// tenant database does), its site and its key, and a hub whose enrolment codes carry it as the
/// cloud anchor.
struct Tenant {
    db: Replica,
    site: SiteId,
    key: Keypair,
    hub: Hub,
    /// The cloud's control entries written so far.
    seq: u64,
}

impl Tenant {
    fn new() -> Tenant {
        let db = writer("cloud");
        let site = site_of(&db);
        let key = site_keypair(site);
        let hub = Hub::start_with_cloud(Some(CloudAnchor {
            site,
            key: key.public().as_bytes().to_vec(),
        }));
        Tenant {
            db,
            site,
            key,
            hub,
            seq: 0,
        }
    }

    /// The cloud declares `table`'s direction (what `outpost-cloud table` writes); the hub serves
    /// the entry from its next session.
    fn declare(&mut self, table: &str, direction: Direction) {
        self.seq += 1;
        let item = control::table_item(table, direction, None);
        self.hub
            .relay_control(control::encode_entry(self.site, self.seq, &item, &self.key));
    }

    /// The cloud declares what [`device`] tracks: readings `up`, forms `down`.
    fn declare_device_tables(&mut self) {
        self.declare("readings", Direction::Up);
        self.declare("forms", Direction::Down);
    }

    /// The cloud certifies `site` as a device with its test key (`site_keypair`).
    fn certify(&mut self, site: SiteId) {
        self.seq += 1;
        let key = site_keypair(site);
        let item = control::key_item(site, key.public(), PeerRole::Device, false);
        self.hub
            .relay_control(control::encode_entry(self.site, self.seq, &item, &self.key));
    }
}

/// `r`'s own changes above `since` as one batch signed with its site's test key.
fn signed_batch(r: &Replica, since: i64) -> Vec<u8> {
    let mut b = r.changes(since, None).expect("changes to export");
    signature::sign(&mut b, &site_keypair(site_of(r))).unwrap();
    b
}

/// `batch` rewritten with `direction`, and as a transfer with every group credited to `credit`
/// when given, signed by its origin's test key (a device's own forgery: it holds its key; or the
/// cloud's transfer).
fn rewritten(batch: &[u8], direction: Direction, credit: Option<SiteId>) -> Vec<u8> {
    let meta = BatchMeta {
        flags: BatchFlags {
            direction,
            transfer: credit.is_some(),
        },
        ..BatchMeta::default()
    };
    common::rebuilt::rebuilt(batch, &meta, credit)
}

/// `batch` with its clear header's direction set to `direction`.
fn reflagged(batch: &[u8], direction: Direction) -> Vec<u8> {
    rewritten(batch, direction, None)
}

fn status(r: &Replica) -> serde_json::Value {
    serde_json::from_str(&r.one::<String>("SELECT outpost_status()")).unwrap()
}

#[test]
fn a_device_tracking_a_table_otherwise_than_the_tenant_declares_gets_a_typed_error_and_pushes_nothing(
) {
    let mut tenant = Tenant::new();
    tenant.declare("forms", Direction::Down);
    // This device tracks forms `both`: it would write rows no one accepts.
    let d = Replica::new("d", SCHEMA);
    d.track("patients", None);
    d.track("readings", None);
    d.track("forms", None);
    tenant.hub.enroll(&d);
    d.exec("INSERT INTO patients VALUES ('p1', 'Asha'); INSERT INTO readings VALUES ('r1', 1);");
    let e = tenant.hub.sync_failing(&d);
    assert!(
        e.contains(
            r#"table "forms" is "down" in this tenant but tracked here as "both": track it with '{"direction": "down"}'"#
        ),
        "{e}"
    );
    assert!(tenant.hub.pushed().is_empty(), "nothing was pushed");
    assert_eq!(
        d.one::<i64>("SELECT count(*) FROM _outpost_control"),
        2,
        "the hub's key entry for the device and the cloud's table entry are stored"
    );

    // Tracked `down` as the tenant says, but readings now `up`, which the tenant does not
    // declare (`both`): a device cannot narrow a direction either. The entries are stored: a
    // new connection (its directory loaded from them, no new entry coming) finds the mismatch
    // before pushing.
    d.exec("SELECT outpost_track('forms', '{\"direction\": \"down\"}')");
    d.exec("SELECT outpost_track('readings', '{\"direction\": \"up\"}')");
    let again = rusqlite::Connection::open(d.conn.path().unwrap()).unwrap();
    common::load(&again);
    tenant.hub.serve_sync();
    let e = again
        .query_row(
            "SELECT outpost_sync('hub', '{\"timeout_ms\": 5000}')",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err()
        .to_string();
    tenant.hub.served();
    assert!(
        e.contains(r#"table "readings" is "both" in this tenant but tracked here as "up""#),
        "{e}"
    );
    assert!(tenant.hub.pushed().is_empty(), "still nothing pushed");

    // Tracked as the tenant says, the device syncs.
    d.exec("SELECT outpost_track('readings')");
    let out = tenant.hub.sync(&d);
    assert_eq!(out["batches_pushed"], 1, "{out}");
    assert_eq!(tenant.hub.pushed().len(), 1);
}

#[test]
fn without_a_cloud_the_devices_own_directions_stand() {
    let hub = Hub::start();
    let d = device("d");
    hub.enroll(&d);
    d.exec("INSERT INTO patients VALUES ('p1', 'Asha'); INSERT INTO readings VALUES ('r1', 1);");
    let out = hub.sync(&d);
    assert_eq!(
        out["batches_pushed"], 2,
        "a both batch, then an up one: {out}"
    );
    let flags: Vec<Direction> = hub
        .pushed()
        .iter()
        .map(|b| outpost_testkit::batch::header(b).flags.direction)
        .collect();
    assert_eq!(flags, [Direction::Both, Direction::Up]);
}

#[test]
fn an_up_batch_served_as_its_clear_header_alone_covers_its_range_and_applies_nothing() {
    let mut tenant = Tenant::new();
    tenant.declare_device_tables();
    let d = device("d");
    tenant.hub.enroll(&d);
    // Another device of the tenant: a patient, two readings (an up batch), another patient.
    let o = device("o");
    let o_site = site_of(&o);
    tenant.certify(o_site);
    o.exec(
        "INSERT INTO patients VALUES ('p1', 'Asha');
         INSERT INTO readings VALUES ('r1', 36.6);
         INSERT INTO readings VALUES ('r2', 37.1);
         INSERT INTO patients VALUES ('p2', 'Baraka');",
    );
    let mut since = 0;
    while let Some(mut b) = o.changes(since, None) {
        since = codec::decode_header(&b, &Limits::default())
            .unwrap()
            .range
            .hi as i64;
        signature::sign(&mut b, &site_keypair(o_site)).unwrap();
        tenant.hub.inject(b);
    }
    assert_eq!(since, 4);
    let out = tenant.hub.sync(&d);
    assert_eq!(out["batches_pulled"], 3, "{out}");
    assert_eq!(out["held"], 0, "{out}");
    assert_eq!(
        d.covered(&o_site.to_string()),
        4,
        "the withheld range is covered"
    );
    assert_eq!(
        d.rows("SELECT id FROM patients ORDER BY id"),
        ["Text(\"p1\")", "Text(\"p2\")"]
    );
    assert_eq!(d.one::<i64>("SELECT count(*) FROM readings"), 0);
    assert_eq!(status(&d)["quarantined_batches"], 0);
    // Nothing comes again.
    let out = tenant.hub.sync(&d);
    assert_eq!(out["batches_pulled"], 0, "{out}");
}

#[test]
fn a_withheld_batch_of_an_unknown_origin_is_held_like_any() {
    let mut tenant = Tenant::new();
    tenant.declare_device_tables();
    let d = device("d");
    tenant.hub.enroll(&d);
    let o = device("o");
    let o_site = site_of(&o);
    o.exec("INSERT INTO readings VALUES ('r1', 36.6);");
    tenant.hub.inject(signed_batch(&o, 0));
    let out = tenant.hub.sync(&d);
    assert_eq!(out["held"], 1, "{out}");
    assert_eq!(d.covered(&o_site.to_string()), 0);
}

#[test]
fn a_forged_down_batch_of_a_device_is_quarantined_whole_and_does_not_block_its_origin() {
    let mut tenant = Tenant::new();
    tenant.declare_device_tables();
    let d = device("d");
    tenant.hub.enroll(&d);
    // A device (its key certified) that tracks forms `both` and signs a batch writing one, then
    // flags it `down` as if it were the cloud's; a relay that failed to check passes it on.
    let o = writer("o");
    let o_site = site_of(&o);
    tenant.certify(o_site);
    o.exec("INSERT INTO forms VALUES ('f1', 'forged');");
    tenant
        .hub
        .inject(reflagged(&o.changes(0, None).unwrap(), Direction::Down));
    // Then a batch flagged `both` that writes forms, and an honest one.
    o.exec("INSERT INTO forms VALUES ('f2', 'forged too');");
    tenant.hub.inject(signed_batch(&o, 1));
    o.exec("INSERT INTO patients VALUES ('p1', 'Asha');");
    tenant.hub.inject(signed_batch(&o, 2));
    let out = tenant.hub.sync(&d);
    assert_eq!(out["batches_pulled"], 3, "{out}");
    assert_eq!(out["quarantined"], 2, "the two forged rows: {out}");
    assert_eq!(d.one::<i64>("SELECT count(*) FROM forms"), 0);
    assert_eq!(
        d.rows("SELECT id FROM patients"),
        ["Text(\"p1\")"],
        "the origin's next batch applies"
    );
    assert_eq!(d.covered(&o_site.to_string()), 3);
    let o_hex = o_site.to_string();
    assert_eq!(
        d.rows("SELECT origin, lo, hi, reason FROM outpost_quarantined_batches ORDER BY lo"),
        [
            format!(
                "Text(\"{o_hex}\")|Integer(1)|Integer(1)|Text(\"batch flagged \\\"down\\\" by origin {o_hex}, which is not the tenant's cloud: only the cloud writes down tables\")"
            ),
            format!(
                "Text(\"{o_hex}\")|Integer(2)|Integer(2)|Text(\"origin {o_hex} is not the tenant's cloud but its batch writes table \\\"forms\\\", which the tenant declares \\\"down\\\" (only the cloud writes it)\")"
            ),
        ]
    );
    assert_eq!(d.one::<i64>("SELECT count(*) FROM outpost_quarantine"), 0);
    assert_eq!(status(&d)["quarantined_batches"], 2);

    // The cloud's own batch writing forms applies (a down table is the cloud's to write).
    tenant
        .db
        .exec("INSERT INTO forms VALUES ('intake', 'Intake v2');");
    tenant.hub.inject(signed_batch(&tenant.db, 0));
    let out = tenant.hub.sync(&d);
    assert_eq!(out["quarantined"], 0, "{out}");
    assert_eq!(d.rows("SELECT id FROM forms"), ["Text(\"intake\")"]);
}

#[test]
fn outpost_apply_in_an_enrolled_database_quarantines_the_same_batches_whole() {
    let mut tenant = Tenant::new();
    tenant.declare_device_tables();
    let o = writer("o");
    let o_site = site_of(&o);
    tenant.certify(o_site);
    let d = device("d");
    tenant.hub.enroll(&d);
    tenant.hub.sync(&d); // the directory: o's key, the tenant's table settings
    o.exec("INSERT INTO forms VALUES ('f1', 'forged');");
    let forged = reflagged(&o.changes(0, None).unwrap(), Direction::Down);
    let out = d.apply(&forged).unwrap();
    assert_eq!(out["quarantined"], 1, "{out}");
    assert_eq!(d.one::<i64>("SELECT count(*) FROM forms"), 0);
    assert_eq!(d.covered(&o_site.to_string()), 1);
    assert_eq!(
        d.one::<i64>("SELECT count(*) FROM outpost_quarantined_batches"),
        1
    );
    // Again: covered already, nothing changes.
    let out = d.apply(&forged).unwrap();
    assert_eq!(out["quarantined"], 0, "{out}");
    assert_eq!(
        d.one::<i64>("SELECT count(*) FROM outpost_quarantined_batches"),
        1
    );
    // A database enrolled with no relay has no directory to judge with: it trusts the batch,
    // as it trusts unsigned ones.
    let standalone = device("standalone");
    standalone.apply(&forged).unwrap();
    assert_eq!(standalone.one::<i64>("SELECT count(*) FROM forms"), 1);
}

#[test]
fn the_tenants_settings_are_checked_after_every_announced_control_message() {
    let mut tenant = Tenant::new();
    // More entries than one `Control` message carries: the table entry that matters comes in
    // the second message, and the device still reads it before its push.
    for i in 0..outpost_protocol::control::MAX_ENTRIES_PER_MESSAGE {
        tenant.declare(&format!("other_{i}"), Direction::Both);
    }
    tenant.declare("forms", Direction::Down);
    let d = writer("d");
    tenant.hub.enroll(&d);
    d.exec("INSERT INTO patients VALUES ('p1', 'Asha');");
    let e = tenant.hub.sync_failing(&d);
    assert!(
        e.contains(r#"table "forms" is "down" in this tenant but tracked here as "both""#),
        "{e}"
    );
    assert!(tenant.hub.pushed().is_empty(), "nothing was pushed");
}

#[test]
fn tracking_a_down_table_again_adds_the_refusal_a_database_made_before_it_lacks() {
    let d = device("d");
    // What a database tracked before writes to `down` tables were refused looks like.
    for op in ["insert", "update", "delete"] {
        d.exec(&format!("DROP TRIGGER \"_outpost_forms_down_{op}\""));
    }
    d.exec("INSERT INTO forms VALUES ('f0', 'old draft')");
    d.exec("SELECT outpost_track('forms', '{\"direction\": \"down\"}')");
    let e = d
        .conn
        .execute_batch("INSERT INTO forms VALUES ('f1', 'draft')")
        .unwrap_err()
        .to_string();
    assert!(e.contains(r#"table "forms" is down"#), "{e}");
}

#[test]
fn a_device_tracking_a_table_with_another_scope_rule_than_the_tenant_gets_a_typed_error() {
    let mut tenant = Tenant::new();
    tenant.seq += 1;
    let item = control::table_item(
        "patients",
        Direction::Both,
        Some(outpost_protocol::scope::ScopeRule::Column("village".into())),
    );
    tenant.hub.relay_control(control::encode_entry(
        tenant.site,
        tenant.seq,
        &item,
        &tenant.key,
    ));
    // Tracked unscoped: the tenant says its rows live in scopes.
    let d = Replica::new("d", SCHEMA_WITH_VILLAGE);
    d.track("patients", None);
    tenant.hub.enroll(&d);
    d.exec("INSERT INTO patients VALUES ('p1', 'Asha', 'moshi')");
    let e = tenant.hub.sync_failing(&d);
    assert!(
        e.contains(
            r#"table "patients" has scope column "village" in this tenant but is tracked here with no scope: track it with '{"scope": "village"}' (nothing was pushed)"#
        ),
        "{e}"
    );
    assert!(tenant.hub.pushed().is_empty(), "nothing was pushed");
    // Tracked with the tenant's rule: the sync goes through.
    let ok = Replica::new("ok", SCHEMA_WITH_VILLAGE);
    ok.track("patients", Some(r#"{"scope": "village"}"#));
    tenant.hub.enroll(&ok);
    ok.exec("INSERT INTO patients VALUES ('p2', 'Baraka', 'moshi')");
    tenant.hub.sync(&ok);
    assert_eq!(tenant.hub.pushed().len(), 1);
}

const SCHEMA_WITH_VILLAGE: &str =
    "CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, village TEXT);";

/// `batch` rewritten as a transfer (docs/design.md section 10, "Moves"), its groups credited to
/// `credit`.
fn as_transfer(batch: &[u8], credit: SiteId) -> Vec<u8> {
    rewritten(batch, Direction::Both, Some(credit))
}

#[test]
fn only_the_clouds_transfers_are_applied_as_other_sites_writes() {
    let mut tenant = Tenant::new();
    tenant.declare_device_tables();
    let o = writer("o");
    let o_site = site_of(&o);
    tenant.certify(o_site);
    let d = device("d");
    tenant.hub.enroll(&d);
    tenant.hub.sync(&d); // the directory: o's key, the cloud's
                         // A device forging a transfer: its rows credited to the cloud, as if the cloud wrote them.
    o.exec("INSERT INTO patients VALUES ('p1', 'forged');");
    let forged = as_transfer(&o.changes(0, None).unwrap(), tenant.site);
    let out = d.apply(&forged).unwrap();
    assert_eq!(out["quarantined"], 1, "{out}");
    assert_eq!(d.one::<i64>("SELECT count(*) FROM patients"), 0);
    let reason: String = d.one("SELECT reason FROM outpost_quarantined_batches");
    assert!(
        reason.contains("transfer") && reason.contains("not the tenant's cloud"),
        "{reason}"
    );
    // The cloud's transfer of a row o wrote (credited to o) applies, as o's write.
    tenant
        .db
        .exec("INSERT INTO patients VALUES ('p2', 'moved here');");
    let transfer = as_transfer(&tenant.db.changes(0, None).unwrap(), o_site);
    let out = d.apply(&transfer).unwrap();
    assert_eq!(out["quarantined"], 0, "{out}");
    assert_eq!(d.rows("SELECT id FROM patients"), ["Text(\"p2\")"]);
    let sites = d.rows("SELECT lower(hex(site)) FROM _outpost_sites WHERE idx > 0");
    assert!(
        sites.contains(&format!("Text(\"{o_site}\")")),
        "its cells are o's: {sites:?}"
    );
}
