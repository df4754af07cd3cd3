//! Transfers on a PostgreSQL tenant against the engine's (issue 21, Deliver 6; DESIGN section
//! 10, "Moves"): the same device batches are applied (a) to a SQLite database the engine marks
//! the scope authority, as the cloud's SQLite tenant is, and (b) to a PostgreSQL tenant through
//! the apply core; the transfer batches each then writes into the new scopes' streams must hold
//! the same rows with the same credits, and a replica of the new scope must end with the row
//! whole from them alone.
//!
//! The moves: a referral made on one device (the patient and its `via` visit go to `tanga`),
//! a late write on a device that has not seen it (copied on into `tanga`), and a concurrent move
//! to `arusha` on that device (the row goes to `arusha` and, moved again, to `tanga` too). And the
//! cloud's own move: the same `UPDATE` of a scope column made on the engine's database (an
//! operator's write) and by the back office on PostgreSQL (captured), the two authorities sharing
//! one site and clocks shifted alike, transfers the same row the same way.

mod common;
use common::*;
use outpost_cloud::postgres::{app_tables, apply, meta, outbox};
use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::{SeqRange, SiteId};
use outpost_testkit::pg;
use postgres::Client;
use rusqlite::Connection;
use std::path::Path;

const SCHEMA: &str = "
  CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT,
    visits_count INTEGER, notes TEXT);
  CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id),
    note TEXT);
  SELECT outpost_track('patients', '{\"scope\": \"clinic\",
    \"columns\": {\"visits_count\": \"counter\", \"notes\": \"review\"}}');
  SELECT outpost_track('visits', '{\"scope\": {\"via\": \"patient_id\"}}');";

fn replica(path: &Path) -> Connection {
    let c = device(path);
    c.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    c.execute_batch(SCHEMA).unwrap();
    c
}

/// Every batch of `from`'s stream `scope` above `since` (the engine's export).
fn stream(from: &Connection, scope: &str, mut since: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(b) = from
        .query_row(
            "SELECT outpost_changes(?1, NULL, ?2)",
            rusqlite::params![since as i64, scope],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .unwrap()
    {
        since = codec::decode(&b, &Limits::default())
            .unwrap()
            .header
            .range
            .hi;
        out.push(b);
    }
    out
}

/// Every batch of the PostgreSQL tenant's stream `scope` above `since` (its outbox).
fn pg_stream(c: &mut Client, scope: &str, mut since: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(e) =
        outbox::batch(c, scope, SeqRange::new(since + 1, 1 << 40).unwrap(), None).unwrap()
    {
        since = e.range.hi;
        out.push(e.bytes);
    }
    out
}

fn apply_lite(c: &Connection, blob: &[u8]) -> serde_json::Value {
    let out: String = c
        .query_row("SELECT outpost_apply(?1)", [blob], |r| r.get(0))
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// What a batch says, one line per row change, sorted (the body's group order is each store's):
/// its stream, range and transfer flag first, then per row its table, the site credited, key,
/// causal length and cells.
fn described(blob: &[u8]) -> Vec<String> {
    let b = codec::decode(blob, &Limits::default()).unwrap();
    let h = &b.header;
    let mut rows = Vec::new();
    for g in &b.tables {
        for r in &g.rows {
            let mut cells = r.cells.clone();
            cells.sort_by_key(|c| c.column);
            rows.push(format!(
                "{} credit={:?} key={:?} exist={} cells={cells:?}",
                h.tables[g.table as usize].name, g.credit, r.key, r.existence
            ));
        }
    }
    rows.sort();
    rows.insert(
        0,
        format!(
            "stream={:?} seqs={}..={} transfer={}",
            h.stream, h.range.lo, h.range.hi, h.flags.transfer
        ),
    );
    rows
}

/// The two targets: the engine as the scope authority, and the PostgreSQL tenant.
struct Targets {
    lite: Connection,
    pg: Client,
    pg_site: SiteId,
    /// Per stream of the targets, the seq compared up to.
    seen: std::collections::BTreeMap<String, u64>,
}

impl Targets {
    fn apply(&mut self, blobs: &[Vec<u8>]) {
        for blob in blobs {
            let got = apply_lite(&self.lite, blob);
            assert_eq!(got["quarantined"], 0, "engine: {got}");
            let batch = codec::decode(blob, &Limits::default()).unwrap();
            app_tables::ensure(&mut self.pg, &batch.header.tables).unwrap();
            let stats = apply::apply(&mut self.pg, self.pg_site, &batch).unwrap();
            assert_eq!(stats.quarantined, 0, "core: {stats:?}");
        }
    }

    /// Both targets' stream `scope` above what was compared before, which must say the same;
    /// the PostgreSQL tenant's batches are returned.
    fn same_stream(&mut self, scope: &str) -> Vec<Vec<u8>> {
        let since = self.seen.get(scope).copied().unwrap_or(0);
        let lite = stream(&self.lite, scope, since);
        let pg = pg_stream(&mut self.pg, scope, since);
        let lite_rows: Vec<Vec<String>> = lite.iter().map(|b| described(b)).collect();
        let pg_rows: Vec<Vec<String>> = pg.iter().map(|b| described(b)).collect();
        assert_eq!(
            pg_rows, lite_rows,
            "stream {scope:?} above {since}: PostgreSQL's (left) and the engine's (right)"
        );
        if let Some(last) = pg.last() {
            let hi = codec::decode(last, &Limits::default())
                .unwrap()
                .header
                .range
                .hi;
            self.seen.insert(scope.to_string(), hi);
        }
        pg
    }
}

fn rows(c: &Connection, sql: &str) -> Vec<String> {
    let mut s = c.prepare(sql).unwrap();
    let n = s.column_count();
    s.query_map([], |r| {
        Ok((0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn moves_are_transferred_as_the_engine_transfers_them() {
    let Some(db) = pg::database("transfers") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = replica(&tmp.path().join("s.db"));
    let s2 = replica(&tmp.path().join("s2.db"));
    let lite = replica(&tmp.path().join("cloud.db"));
    lite.execute_batch("INSERT INTO _outpost_meta(k, v) VALUES ('scope_authority', 1)")
        .unwrap();
    let pg_site = SiteId([0x5c; 16]);
    let mut pg = db.superuser();
    meta::prepare(&mut pg, pg_site).unwrap();
    let mut t = Targets {
        lite,
        pg,
        pg_site,
        seen: Default::default(),
    };

    // Two sites write the patient in moshi: a counter each, a name, a review note.
    s.execute_batch(
        "INSERT INTO patients VALUES ('m1', 'Amina', 'moshi', 0, 'first');
         INSERT INTO visits VALUES ('v1', 'm1', 'first visit');",
    )
    .unwrap();
    let first = stream(&s, "moshi", 0);
    for b in &first {
        apply_lite(&s2, b);
    }
    s.execute_batch("UPDATE patients SET visits_count = visits_count + 2 WHERE id = 'm1'")
        .unwrap();
    s2.execute_batch(
        "UPDATE patients SET visits_count = visits_count + 3, name = 'Amina K',
           notes = 'second opinion' WHERE id = 'm1'",
    )
    .unwrap();
    // The targets skip what they hold: each device's whole stream is handed over every time.
    t.apply(&stream(&s, "moshi", 0));
    t.apply(&stream(&s2, "moshi", 0));
    assert!(t.same_stream("tanga").is_empty(), "nothing moved yet");

    // The referral, made on s, in the old scope's stream: the row and its visit go to tanga.
    s.execute_batch("UPDATE patients SET clinic = 'tanga' WHERE id = 'm1'")
        .unwrap();
    t.apply(&stream(&s, "moshi", 0));
    let tanga = t.same_stream("tanga");
    assert_eq!(tanga.len(), 1, "one transfer batch into tanga");
    let d = described(&tanga[0]);
    assert!(d[0].ends_with("transfer=true"), "{d:?}");
    assert!(
        d.iter().any(|r| r.starts_with("visits ")),
        "the via child goes with its parent: {d:?}"
    );
    assert!(
        t.same_stream("moshi").is_empty(),
        "nothing of the cloud's in moshi"
    );

    // A replica of tanga gets the row whole from PostgreSQL's transfer alone.
    let tr = replica(&tmp.path().join("t.db"));
    for b in &tanga {
        let got = apply_lite(&tr, b);
        assert_eq!(got["quarantined"], 0, "{got}");
    }
    assert_eq!(
        rows(
            &tr,
            "SELECT id, name, clinic, visits_count, notes FROM patients"
        ),
        ["m1|Amina K|tanga|5|second opinion"]
    );
    assert_eq!(
        rows(&tr, "SELECT id, patient_id, note FROM visits"),
        ["v1|m1|first visit"]
    );

    // A late write on s2, which has not seen the referral, is copied on into tanga.
    s2.execute_batch("UPDATE patients SET name = 'Amina Kh' WHERE id = 'm1'")
        .unwrap();
    t.apply(&stream(&s2, "moshi", 0));
    let late = t.same_stream("tanga");
    assert_eq!(late.len(), 1, "the late write's transfer");
    for b in &late {
        apply_lite(&tr, b);
    }
    assert_eq!(
        rows(&tr, "SELECT name FROM patients WHERE id = 'm1'"),
        ["Amina Kh"]
    );

    // A concurrent move on s2 (later, so it wins): the row goes to arusha, and to tanga, where
    // it was transferred before, so tanga's replicas learn where it went.
    s2.execute_batch("UPDATE patients SET clinic = 'arusha' WHERE id = 'm1'")
        .unwrap();
    t.apply(&stream(&s2, "moshi", 0));
    let arusha = t.same_stream("arusha");
    assert_eq!(arusha.len(), 1, "the row moved on into arusha");
    let again = t.same_stream("tanga");
    assert_eq!(again.len(), 1, "tanga learns where the row went");
    for b in &again {
        apply_lite(&tr, b);
    }
    // (This replica holds every scope: one granted only tanga would let the row leave.)
    assert_eq!(
        rows(&tr, "SELECT clinic FROM patients WHERE id = 'm1'"),
        ["arusha"]
    );
    let ar = replica(&tmp.path().join("a.db"));
    for b in &arusha {
        let got = apply_lite(&ar, b);
        assert_eq!(got["quarantined"], 0, "{got}");
    }
    assert_eq!(
        rows(&ar, "SELECT id, name, clinic, visits_count FROM patients"),
        ["m1|Amina Kh|arusha|5"]
    );
    assert_eq!(rows(&ar, "SELECT id FROM visits"), ["v1"]);
}

/// Both authorities' wall clocks are read this far back (the engine's `test_wall_shift_ms`,
/// PostgreSQL's `outpost.clock.wall_shift_ms`), so an own write's clock is the last clock either
/// observed plus one: the same on both, and the transfers compare whole.
const WALL_SHIFT_MS: i64 = -10 * 365 * 24 * 3600 * 1000;

#[test]
fn an_own_move_is_transferred_as_the_engine_transfers_it() {
    let Some(db) = pg::database("transfers_own") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = replica(&tmp.path().join("s.db"));
    let path = tmp.path().join("cloud.db");
    {
        let c = replica(&path);
        c.execute_batch("INSERT INTO _outpost_meta(k, v) VALUES ('scope_authority', 1)")
            .unwrap();
        c.execute(
            "INSERT INTO _outpost_meta(k, v) VALUES ('test_wall_shift_ms', ?1)",
            [WALL_SHIFT_MS],
        )
        .unwrap();
    }
    // Opened again: its clock reads the shift from its first tick.
    let lite = device(&path);
    lite.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    let site: Vec<u8> = lite
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .unwrap();
    // One origin for the cloud whichever store holds its tenant: the same site on both.
    let pg_site = SiteId::from_slice(&site).unwrap();
    let mut pg = db.superuser();
    meta::prepare(&mut pg, pg_site).unwrap();
    let mut t = Targets {
        lite,
        pg,
        pg_site,
        seen: Default::default(),
    };
    s.execute_batch(
        "INSERT INTO patients VALUES ('m2', 'Baraka', 'moshi', 1, 'first');
         INSERT INTO visits VALUES ('v2', 'm2', 'BCG');
         UPDATE patients SET visits_count = visits_count + 1 WHERE id = 'm2';",
    )
    .unwrap();
    t.apply(&stream(&s, "moshi", 0));
    t.pg.execute(
        "UPDATE outpost.clock SET wall_shift_ms = $1",
        &[&WALL_SHIFT_MS],
    )
    .unwrap();
    // The cloud's own referral: the operator's write on SQLite, the back office's on
    // PostgreSQL, one column of one row on both (one clock each).
    let referral = "UPDATE patients SET clinic = 'tanga' WHERE id = 'm2'";
    t.lite.execute_batch(referral).unwrap();
    t.pg.batch_execute(&format!("{referral};")).unwrap();
    let tanga = t.same_stream("tanga");
    assert_eq!(tanga.len(), 1, "one transfer batch into tanga");
    let d = described(&tanga[0]);
    assert!(d[0].ends_with("transfer=true"), "{d:?}");
    let own = format!("credit=Some({pg_site:?})");
    assert!(
        d.iter()
            .any(|r| r.starts_with("patients ") && r.contains(&own) && r.contains("tanga")),
        "the cloud's own scope cell, credited to it: {d:?}"
    );
    assert!(d.iter().any(|r| r.starts_with("visits ")), "{d:?}");
    // A replica of tanga gets it whole.
    let tr = replica(&tmp.path().join("t.db"));
    for b in &tanga {
        let got = apply_lite(&tr, b);
        assert_eq!(got["quarantined"], 0, "{got}");
    }
    assert_eq!(
        rows(
            &tr,
            "SELECT id, name, clinic, visits_count, notes FROM patients"
        ),
        ["m2|Baraka|tanga|2|first"]
    );
    assert_eq!(rows(&tr, "SELECT id, note FROM visits"), ["v2|BCG"]);
}

#[test]
fn a_late_delete_of_a_moved_child_is_transferred_as_the_engine_transfers_it() {
    let Some(db) = pg::database("transfers_late_delete") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = replica(&tmp.path().join("s.db"));
    let s2 = replica(&tmp.path().join("s2.db"));
    let lite = replica(&tmp.path().join("cloud.db"));
    lite.execute_batch("INSERT INTO _outpost_meta(k, v) VALUES ('scope_authority', 1)")
        .unwrap();
    // A delete goes credited to the authority itself: one site on both, so the batches compare.
    let site: Vec<u8> = lite
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .unwrap();
    let pg_site = SiteId::from_slice(&site).unwrap();
    let mut pg = db.superuser();
    meta::prepare(&mut pg, pg_site).unwrap();
    let mut t = Targets {
        lite,
        pg,
        pg_site,
        seen: Default::default(),
    };
    s.execute_batch(
        "INSERT INTO patients VALUES ('m3', 'Neema', 'moshi', 0, 'first');
         INSERT INTO visits VALUES ('v3', 'm3', 'first visit');",
    )
    .unwrap();
    for b in &stream(&s, "moshi", 0) {
        apply_lite(&s2, b);
    }
    // The referral on s: the patient and its visit go to tanga.
    s.execute_batch("UPDATE patients SET clinic = 'tanga' WHERE id = 'm3'")
        .unwrap();
    t.apply(&stream(&s, "moshi", 0));
    let tanga = t.same_stream("tanga");
    assert_eq!(tanga.len(), 1, "the referral's transfer");
    let tr = replica(&tmp.path().join("t.db"));
    for b in &tanga {
        apply_lite(&tr, b);
    }
    assert_eq!(rows(&tr, "SELECT id FROM visits"), ["v3"]);

    // s2, which has not seen the referral, deletes the visit in moshi. Its scope is read from
    // its tombstone (a `via` child no foreign key references): the delete goes on to tanga.
    s2.execute_batch("DELETE FROM visits WHERE id = 'v3'")
        .unwrap();
    t.apply(&stream(&s2, "moshi", 0));
    let late = t.same_stream("tanga");
    assert_eq!(late.len(), 1, "the late delete's transfer");
    for b in &late {
        apply_lite(&tr, b);
    }
    assert!(
        rows(&tr, "SELECT id FROM visits").is_empty(),
        "tanga's replica deletes the visit"
    );
}
