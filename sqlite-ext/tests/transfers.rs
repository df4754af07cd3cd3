//! Transfers (docs/design.md section 10, "Moves"; docs/sql-api.md, "Rows that arrive"): the
//! scope authority (the cloud's tenant database; here a database with `scope_authority` set, as
//! the cloud sets it) writes a moved row into its new scope's stream with its whole merge state
//! and original credits; a replica of the new scope applies it as the credited sites' writes.
//! Real SQLite files; batches handed over as the relays would.

mod common;
use common::Replica;

const SCHEMA: &str = "
CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT, visits_count INTEGER);
CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id), note TEXT);
";

fn replica(name: &str) -> Replica {
    let r = Replica::new(name, SCHEMA);
    r.track(
        "patients",
        Some(r#"{"scope": "clinic", "columns": {"visits_count": "counter"}}"#),
    );
    r.track("visits", Some(r#"{"scope": {"via": "patient_id"}}"#));
    r
}

/// The cloud's tenant database stand-in: the same engine, marked the scope authority.
fn authority() -> Replica {
    let r = replica("cloud");
    r.exec("INSERT INTO _outpost_meta(k, v) VALUES ('scope_authority', 1)");
    r
}

/// Every batch of `from`'s stream `scope` above `since`.
fn stream(from: &Replica, scope: &str, mut since: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(b) = from
        .conn
        .query_row(
            "SELECT outpost_changes(?1, NULL, ?2)",
            rusqlite::params![since, scope],
            |row| row.get::<_, Option<Vec<u8>>>(0),
        )
        .unwrap()
    {
        let json = json(from, &b);
        since = json["header"]["range"]["hi"].as_i64().unwrap();
        out.push(b);
    }
    out
}

fn json(r: &Replica, batch: &[u8]) -> serde_json::Value {
    serde_json::from_str(
        &r.conn
            .query_row("SELECT outpost_batch_json(?1)", [batch], |row| {
                row.get::<_, String>(0)
            })
            .unwrap(),
    )
    .unwrap()
}

/// One text per row, its columns joined by `|` (each query selects text-able columns).
fn text(r: &Replica, columns: &str, table: &str) -> String {
    r.one::<String>(&format!(
        "SELECT coalesce(group_concat({}, ','), '') FROM (SELECT * FROM {table} ORDER BY id)",
        columns.split(", ").collect::<Vec<_>>().join(" || '|' || ")
    ))
}

fn apply_all(to: &Replica, batches: &[Vec<u8>]) -> Vec<serde_json::Value> {
    batches.iter().map(|b| to.apply(b).unwrap()).collect()
}

#[test]
fn a_referral_is_transferred_whole_with_its_credits() {
    let s = replica("s");
    let s2 = replica("s2");
    let cloud = authority();
    let t = replica("t");
    s.exec(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0);
         INSERT INTO visits VALUES ('v1', 'm1', 'first visit');",
    );
    let first = stream(&s, "moshi", 0);
    apply_all(&s2, &first);
    // Two sites count visits: the counter's contributions must keep their sites.
    s.exec("UPDATE patients SET visits_count = visits_count + 2 WHERE id = 'm1'");
    s2.exec(
        "UPDATE patients SET visits_count = visits_count + 3, name = 'Amina K' WHERE id = 'm1'",
    );
    let s_more = stream(&s, "moshi", 2);
    let s2_all = stream(&s2, "moshi", 0);
    apply_all(&cloud, &first);
    apply_all(&cloud, &s_more);
    apply_all(&cloud, &s2_all);
    assert_eq!(
        cloud.one::<i64>("SELECT count(*) FROM _outpost_transfers"),
        0,
        "nothing moved yet"
    );
    // The referral, made on s, in the old scope's stream.
    s.exec("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'");
    let referral = stream(&s, "moshi", 3);
    apply_all(&cloud, &referral);
    let moved = stream(&cloud, "tanga", 0);
    assert_eq!(moved.len(), 1, "one transfer batch into tanga");
    let j = json(&cloud, &moved[0]);
    assert_eq!(j["header"]["transfer"], true);
    assert_eq!(j["header"]["stream"], "tanga");
    let credits: Vec<String> = j["body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{}:{}",
                g["table"].as_str().unwrap(),
                g["credit"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        format!("patients:{}", s.site_hex().to_lowercase()),
        format!("patients:{}", s2.site_hex().to_lowercase()),
        format!("visits:{}", s.site_hex().to_lowercase()),
    ] {
        assert!(credits.contains(&want), "{want} in {credits:?}");
    }
    // The tanga replica gets the row, its child and the summed counter from the transfer alone.
    let got = apply_all(&t, &moved);
    assert_eq!(got[0]["quarantined"], 0, "{got:?}");
    assert_eq!(
        text(&t, "id, name, clinic, visits_count", "patients"),
        "m1|Amina K|tanga|5"
    );
    assert_eq!(text(&t, "id, note", "visits"), "v1|first visit");
    // Credited, not re-written: the original batches change nothing more there.
    let again = apply_all(&t, &[first, s_more, s2_all, referral].concat());
    assert!(
        again.iter().all(|c| c["applied"] == 0),
        "the originals merge as already held: {again:?}"
    );
    assert_eq!(
        text(&t, "id, name, clinic, visits_count", "patients"),
        "m1|Amina K|tanga|5"
    );
}

#[test]
fn late_writes_in_the_old_stream_are_copied_on_and_the_scope_change_reaches_every_stream() {
    let s = replica("s");
    let cloud = authority();
    s.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0)");
    s.exec("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'");
    apply_all(&cloud, &stream(&s, "moshi", 0));
    assert_eq!(stream(&cloud, "tanga", 0).len(), 1);
    // A moshi device that had not seen the referral writes the name: its write arrives in the
    // old stream, the row is in tanga now: copied on as a second transfer.
    let late = replica("late");
    let insert_only = replica("s0");
    insert_only.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0)");
    apply_all(&late, &stream(&insert_only, "moshi", 0));
    late.exec("UPDATE patients SET name = 'Amina Late' WHERE id = 'm1'");
    apply_all(&cloud, &stream(&late, "moshi", 0));
    assert_eq!(
        cloud.one::<i64>("SELECT outpost_db_version('tanga')"),
        2,
        "the late write is copied into tanga"
    );
    let copied = stream(&cloud, "tanga", 1);
    assert_eq!(copied.len(), 1);
    assert!(json(&cloud, &copied[0]).to_string().contains("Amina Late"));
    let tanga = stream(&cloud, "tanga", 0);
    let t = replica("t");
    apply_all(&t, &tanga);
    assert_eq!(text(&t, "name, clinic", "patients"), "Amina Late|tanga");
    // Moved on again, from tanga to kilwa: kilwa gets the row, and tanga learns it left.
    t.exec("UPDATE patients SET clinic = 'kilwa' WHERE id = 'm1'");
    apply_all(&cloud, &stream(&t, "tanga", 0));
    let kilwa = stream(&cloud, "kilwa", 0);
    assert_eq!(kilwa.len(), 1);
    let k = replica("k");
    apply_all(&k, &kilwa);
    assert_eq!(text(&k, "name, clinic", "patients"), "Amina Late|kilwa");
    assert_eq!(
        cloud.one::<i64>("SELECT outpost_db_version('tanga')"),
        2,
        "t's referral came in tanga itself: nothing to copy there"
    );
}

/// A change quarantined on the authority (a visit whose patient it did not have yet) that the
/// retry lets in once its parent arrives, moved meanwhile, reaches the parent's new scope: the
/// retry queues no transfer of its own, but the patient's transfer, queued by the same apply
/// and read only when its batch is made, carries the visits that follow the patient.
#[test]
fn a_change_the_retry_lets_in_is_transferred_to_its_rows_scope() {
    let a = replica("a");
    let b = replica("b");
    let cloud = authority();
    a.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0)");
    apply_all(&b, &stream(&a, "moshi", 0));
    b.exec("INSERT INTO visits VALUES ('v1', 'm1', 'seen at moshi')");
    // The cloud gets b's visit first: its patient is missing there, so it waits.
    let got = apply_all(&cloud, &stream(&b, "moshi", 0));
    assert_eq!(got[0]["quarantined"], 1, "{got:?}");
    // a refers the patient to tanga; the cloud gets a's stream, patient and referral, and the
    // retry lets the visit in.
    a.exec("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'");
    apply_all(&cloud, &stream(&a, "moshi", 0));
    assert_eq!(
        cloud.one::<i64>("SELECT count(*) FROM outpost_quarantine"),
        0
    );
    assert_eq!(text(&cloud, "id, patient_id", "visits"), "v1|m1");
    let t = replica("t");
    let got = apply_all(&t, &stream(&cloud, "tanga", 0));
    assert!(got.iter().all(|c| c["quarantined"] == 0), "{got:?}");
    assert_eq!(text(&t, "id, clinic", "patients"), "m1|tanga");
    assert_eq!(
        text(&t, "id, note", "visits"),
        "v1|seen at moshi",
        "the visit reaches the patient's new scope"
    );
}

#[test]
fn only_the_authority_queues_transfers_and_unscoped_stays_as_it_was() {
    let s = replica("s");
    let d = replica("d");
    s.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0)");
    s.exec("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'");
    apply_all(&d, &stream(&s, "moshi", 0));
    assert_eq!(d.one::<i64>("SELECT count(*) FROM _outpost_transfers"), 0);
    assert_eq!(d.one::<i64>("SELECT outpost_db_version('tanga')"), 0);
    let status: serde_json::Value =
        serde_json::from_str(&d.one::<String>("SELECT outpost_status()")).unwrap();
    assert_eq!(status["transfers"], 0);
}

#[test]
fn concurrent_moves_end_with_one_owner_in_every_stream_the_row_reached() {
    let s1 = replica("s1");
    let s2 = replica("s2");
    let cloud = authority();
    s1.exec("INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0)");
    let insert = stream(&s1, "moshi", 0);
    apply_all(&s2, &insert);
    s1.exec("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'");
    // s2's referral is the later write: arusha wins.
    std::thread::sleep(std::time::Duration::from_millis(5));
    s2.exec("UPDATE patients SET clinic = 'arusha' WHERE id = 'm1'");
    apply_all(&cloud, &stream(&s1, "moshi", 0));
    let t = replica("t");
    apply_all(&t, &stream(&cloud, "tanga", 0));
    assert_eq!(text(&t, "clinic", "patients"), "tanga");
    apply_all(&cloud, &stream(&s2, "moshi", 0));
    let a = replica("a");
    apply_all(&a, &stream(&cloud, "arusha", 0));
    assert_eq!(text(&a, "clinic", "patients"), "arusha");
    // Tanga is told too: its copy now says arusha (a device granted tanga would let it go).
    let told = stream(&cloud, "tanga", 1);
    assert_eq!(told.len(), 1, "the scope change is written into tanga");
    apply_all(&t, &told);
    assert_eq!(text(&t, "clinic", "patients"), "arusha");
}

#[test]
fn the_authoritys_own_referral_is_transferred_too() {
    let s = replica("s");
    let cloud = authority();
    s.exec(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0);
         INSERT INTO visits VALUES ('v1', 'm1', 'first visit');",
    );
    apply_all(&cloud, &stream(&s, "moshi", 0));
    // An operator's (or a REST client's) write on the cloud: it travels in moshi's stream, and
    // the row with its visit is transferred into tanga's.
    cloud.exec("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'");
    assert_eq!(stream(&cloud, "moshi", 0).len(), 1, "the referral itself");
    let moved = stream(&cloud, "tanga", 0);
    assert_eq!(moved.len(), 1);
    let t = replica("t");
    apply_all(&t, &moved);
    assert_eq!(text(&t, "name, clinic", "patients"), "Amina|tanga");
    assert_eq!(text(&t, "note", "visits"), "first visit");
}

/// What being the authority costs the apply of a scoped first batch (nothing moves, so every
/// row is only looked at): `cargo test --release -p outpost --test transfers
/// authority_apply_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn authority_apply_cost() {
    let s = replica("s");
    s.exec("BEGIN");
    for p in 0..10_000 {
        s.exec(&format!(
            "INSERT INTO patients VALUES ('p{p}', 'Patient {p}', 'c{}', 0);
             INSERT INTO visits VALUES ('v{p}a', 'p{p}', 'visit a'), ('v{p}b', 'p{p}', 'visit b');",
            p % 100
        ));
    }
    s.exec("COMMIT");
    let mut batches = Vec::new();
    for c in 0..100 {
        batches.extend(stream(&s, &format!("c{c}"), 0));
    }
    let time = |as_authority: bool| {
        let r = if as_authority {
            authority()
        } else {
            replica("plain")
        };
        let start = std::time::Instant::now();
        apply_all(&r, &batches);
        let took = start.elapsed();
        assert_eq!(r.one::<i64>("SELECT count(*) FROM visits"), 20_000);
        assert_eq!(r.one::<i64>("SELECT count(*) FROM _outpost_transfers"), 0);
        took
    };
    let plain = time(false);
    let auth = time(true);
    println!(
        "apply of 10k patients + 20k visits in 100 scopes: {:.0} ms as a device, {:.0} ms as the \
         authority ({:.2}x)",
        plain.as_secs_f64() * 1e3,
        auth.as_secs_f64() * 1e3,
        auth.as_secs_f64() / plain.as_secs_f64()
    );
}
