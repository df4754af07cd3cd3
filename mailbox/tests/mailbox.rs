//! The mailbox on real SQLite files: durability, idempotence, gaps, routing.

mod support;

use outpost_mailbox::{Mailbox, MailboxError, StoredBatch};
use outpost_protocol::{SiteId, VersionVector};
use support::{batch, site};

fn served(mb: &Mailbox, v: &VersionVector, exclude: Option<SiteId>) -> Vec<(SiteId, u64, u64)> {
    mb.batches_for(v, exclude, &outpost_protocol::scope::Scopes::All)
        .unwrap()
        .map(|b| {
            let b: StoredBatch = b.unwrap();
            (b.origin, b.range.lo, b.range.hi)
        })
        .collect()
}

fn vector(entries: &[(SiteId, u64)]) -> VersionVector {
    let mut v = VersionVector::new();
    for &(o, c) in entries {
        v.set(o.into(), c);
    }
    v
}

#[test]
fn committed_batches_survive_reopen_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailbox.db");
    let (a, b) = (site(1), site(2));
    let sent = vec![
        batch(a, 1, 3, 100),
        batch(a, 4, 4, 10),
        batch(b, 1, 9, 5000),
    ];
    {
        let mut mb = support::store::open(&path);
        let receipts = mb.store(sent.clone()).unwrap();
        assert!(receipts.iter().all(|r| r.stored && r.covered));
    }
    let mb = support::store::open(&path);
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 4), (b, 9)]));
    let got: Vec<Vec<u8>> = mb
        .batches_for(
            &VersionVector::new(),
            None,
            &outpost_protocol::scope::Scopes::All,
        )
        .unwrap()
        .map(|b| b.unwrap().bytes)
        .collect();
    assert_eq!(got, sent);
    mb.check().unwrap();
    let status = mb.status().unwrap();
    assert_eq!(status.batches, 3);
    assert_eq!(
        status.bytes,
        sent.iter().map(|b| b.len() as u64).sum::<u64>()
    );
    assert_eq!(status.origins.len(), 2);
    assert_eq!(status.origins[1].covered, 9);
}

#[test]
fn restoring_a_held_batch_changes_nothing_and_reports_it_covered() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let a = site(1);
    let first = mb.store(vec![batch(a, 1, 5, 10)]).unwrap();
    assert!(first[0].stored && first[0].covered);
    let before = mb.status().unwrap();
    // The same batch again, a sub-range, and a range held across two batches.
    mb.store(vec![batch(a, 6, 8, 10)]).unwrap();
    let before2 = mb.status().unwrap();
    let again = mb
        .store(vec![
            batch(a, 1, 5, 10),
            batch(a, 2, 3, 10),
            batch(a, 4, 7, 10),
        ])
        .unwrap();
    assert!(again.iter().all(|r| !r.stored && r.covered), "{again:?}");
    assert_eq!(again[0].sha256, first[0].sha256);
    assert_eq!(mb.status().unwrap(), before2);
    assert_eq!(before.batches + 1, before2.batches);
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 8)]));
}

#[test]
fn the_same_batch_twice_in_one_commit_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let a = site(1);
    let r = mb
        .store(vec![batch(a, 1, 2, 10), batch(a, 1, 2, 10)])
        .unwrap();
    assert_eq!((r[0].stored, r[1].stored), (true, false));
    assert!(r[0].covered && r[1].covered);
    assert_eq!(mb.status().unwrap().batches, 1);
}

#[test]
fn a_gap_is_held_but_neither_covered_nor_served_until_filled() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let a = site(1);
    let r = mb
        .store(vec![batch(a, 1, 3, 10), batch(a, 7, 9, 10)])
        .unwrap();
    assert!(r[0].covered);
    assert!(
        r[1].stored && !r[1].covered,
        "a range beyond a gap is not covered"
    );
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 3)]));
    assert_eq!(served(&mb, &VersionVector::new(), None), vec![(a, 1, 3)]);
    assert_eq!(served(&mb, &vector(&[(a, 3)]), None), vec![]);
    let st = mb.status().unwrap();
    assert_eq!((st.origins[0].covered, st.origins[0].highest), (3, 9));

    // Filling the gap makes coverage jump over the held range beyond it.
    let r = mb.store(vec![batch(a, 4, 6, 10)]).unwrap();
    assert!(r[0].covered);
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 9)]));
    assert_eq!(
        served(&mb, &VersionVector::new(), None),
        vec![(a, 1, 3), (a, 4, 6), (a, 7, 9)]
    );
    mb.check().unwrap();
}

#[test]
fn an_origin_with_only_a_gapped_range_has_no_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let r = mb.store(vec![batch(site(1), 2, 3, 10)]).unwrap();
    assert!(r[0].stored && !r[0].covered);
    assert!(mb.vector().unwrap().is_empty());
    assert!(served(&mb, &VersionVector::new(), None).is_empty());
}

#[test]
fn partial_overlaps_are_stored_and_served_without_repeating_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let a = site(1);
    // Held beyond a gap: 7..=9. A push from coverage + 1 then brings 5..=12 (overlapping it).
    mb.store(vec![batch(a, 1, 4, 10), batch(a, 7, 9, 10)])
        .unwrap();
    let r = mb.store(vec![batch(a, 5, 12, 10)]).unwrap();
    assert!(r[0].stored && r[0].covered);
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 12)]));
    // 7..=9 is inside 5..=12: serving never sends it.
    assert_eq!(
        served(&mb, &VersionVector::new(), None),
        vec![(a, 1, 4), (a, 5, 12)]
    );
    assert_eq!(served(&mb, &vector(&[(a, 4)]), None), vec![(a, 5, 12)]);
    // A client at 8 can only get 9..=12 through 5..=12; it is the one batch sent.
    assert_eq!(served(&mb, &vector(&[(a, 8)]), None), vec![(a, 5, 12)]);
    assert!(served(&mb, &vector(&[(a, 12)]), None).is_empty());
}

#[test]
fn serving_never_sends_the_requesters_own_origin_and_follows_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let (me, other, third) = (site(1), site(2), site(3));
    mb.store(vec![
        batch(other, 4, 6, 10),
        batch(me, 1, 2, 10),
        batch(third, 1, 1, 10),
    ])
    .unwrap();
    mb.store(vec![batch(other, 1, 3, 10)]).unwrap();
    let got = served(&mb, &VersionVector::new(), Some(me));
    assert_eq!(got, vec![(other, 1, 3), (other, 4, 6), (third, 1, 1)]);
    assert!(got.iter().all(|(o, _, _)| *o != me));
    // What the requester has is not resent; the rest is.
    assert_eq!(
        served(&mb, &vector(&[(other, 3), (third, 1)]), Some(me)),
        vec![(other, 4, 6)]
    );
    // Without exclusion (an operator dump), everything.
    assert_eq!(served(&mb, &VersionVector::new(), None).len(), 4);
}

#[test]
fn invalid_bytes_are_refused_and_nothing_of_the_set_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let a = site(1);
    mb.store(vec![batch(a, 1, 1, 10)]).unwrap();
    let before = mb.status().unwrap();
    let good = batch(a, 2, 2, 10);
    let mut truncated = batch(a, 3, 3, 10);
    truncated.truncate(truncated.len() / 2);
    let mut altered = batch(a, 3, 3, 10);
    let last = altered.len() - 1;
    altered[last] ^= 1; // a body byte: the header's SHA-256 no longer matches
    for bad in [truncated, altered, vec![], b"not a batch at all".to_vec()] {
        match mb.store(vec![good.clone(), bad]) {
            Err(MailboxError::Decode { index: 1, .. }) => {}
            other => panic!("expected a decode error for batch #1, got {other:?}"),
        }
    }
    assert_eq!(mb.status().unwrap(), before);
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 1)]));
}

#[test]
fn a_newer_schema_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    drop(support::store::open(&path));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Mailbox::open(&path).unwrap_err();
    assert!(matches!(err, MailboxError::SchemaVersion { found: 99, .. }));
    assert!(err.to_string().contains("m.db"), "{err}");
}

#[test]
fn a_tampered_coverage_row_is_found_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut mb = Mailbox::open(&path).unwrap();
    mb.store(vec![batch(site(1), 1, 3, 10)]).unwrap();
    mb.check().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE coverage SET covered = 7", []).unwrap();
    assert!(matches!(mb.check(), Err(MailboxError::Corrupt { .. })));
}

#[test]
fn the_file_is_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut mb = Mailbox::open(&path).unwrap();
    mb.store(vec![batch(site(1), 1, 1, 10)]).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(path.with_file_name("m.db-wal").exists());
}

#[test]
fn concurrent_writers_on_separate_connections_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    support::store::open(&path);
    let threads: Vec<_> = (1..=4u8)
        .map(|n| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut mb = support::store::open(&path);
                let reader = support::store::open(&path);
                for seq in 1..=25 {
                    let r = mb.store(vec![batch(site(n), seq, seq, 200)]).unwrap();
                    assert!(r[0].stored && r[0].covered);
                    // A reader on another connection sees every acknowledged commit.
                    assert!(reader.vector().unwrap().get(&(site(n)).into()) >= seq);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mb = support::store::open(&path);
    mb.check().unwrap();
    let v = mb.vector().unwrap();
    assert!((1..=4u8).all(|n| v.get(&(site(n)).into()) == 25), "{v:?}");
    assert_eq!(served(&mb, &VersionVector::new(), Some(site(1))).len(), 75);
}

#[test]
fn a_push_record_is_committed_with_its_batches_or_not_at_all() {
    use outpost_mailbox::PushRecord;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut mb = support::store::open(&path);
    let a = site(1);
    let record = PushRecord {
        digest: [7; 32],
        record: b"the ack".to_vec(),
    };
    let staged = vec![mb.stage(0, batch(a, 1, 2, 10)).unwrap()];
    let r = mb.commit_push(&[1; 16], &record, &staged).unwrap();
    assert!(r[0].stored && r[0].covered);
    drop(mb);
    let mut mb = support::store::open(&path);
    assert_eq!(mb.push_record(&[1; 16]).unwrap(), Some(record.clone()));
    assert_eq!(mb.push_record(&[2; 16]).unwrap(), None);

    // A push leaving a batch beyond a gap stores nothing, record included.
    let before = mb.status().unwrap();
    let gapped = vec![
        mb.stage(0, batch(a, 3, 4, 10)).unwrap(),
        mb.stage(1, batch(a, 9, 9, 10)).unwrap(),
    ];
    let err = mb.commit_push(&[2; 16], &record, &gapped).unwrap_err();
    assert!(matches!(err, MailboxError::NotCovered { .. }), "{err}");
    assert_eq!(mb.status().unwrap(), before);
    assert_eq!(mb.push_record(&[2; 16]).unwrap(), None);
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 2)]));

    // The same session id twice is refused and stores nothing (the caller answers retries from
    // the record instead).
    let more = vec![mb.stage(0, batch(a, 3, 4, 10)).unwrap()];
    assert!(mb.commit_push(&[1; 16], &record, &more).is_err());
    assert_eq!(mb.vector().unwrap(), vector(&[(a, 2)]));
}

#[test]
fn a_first_wave_file_is_refused_as_made_by_an_older_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    {
        let mut mb = Mailbox::open(&path).unwrap();
        mb.store(vec![batch(site(1), 1, 1, 10)]).unwrap();
    }
    for old in 1..=4 {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", old).unwrap();
        drop(conn);
        let err = Mailbox::open(&path).unwrap_err();
        assert!(
            matches!(err, MailboxError::OlderVersion { found, .. } if found == old),
            "{err}"
        );
        assert!(err.to_string().contains("older version"), "{err}");
    }
    // Nothing in it was altered.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM batches", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn an_owned_plan_serves_the_same_batches_as_the_iterator() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    mb.store(vec![
        batch(site(1), 1, 2, 10),
        batch(site(2), 1, 1, 10),
        batch(site(1), 3, 3, 10),
    ])
    .unwrap();
    let v = vector(&[(site(1), 1)]);
    let mut plan = mb
        .pull_plan(&v, Some(site(3)), &outpost_protocol::scope::Scopes::All)
        .unwrap();
    let mut owned = Vec::new();
    while let Some(b) = mb.next_batch(&mut plan).unwrap() {
        owned.push((b.origin, b.range.lo, b.range.hi));
    }
    assert_eq!(owned, served(&mb, &v, Some(site(3))));
    assert_eq!(
        owned,
        vec![(site(1), 1, 2), (site(1), 3, 3), (site(2), 1, 1)]
    );
}

/// Issue 16, finding 3 at the relay: a batch whose header declares a DEFLATE body of 200 MiB in
/// 210 KB on the wire (DEFLATE can reach that ratio) is over its decoding budget (64 MiB for a
/// batch this size). The mailbox refuses it from the header and lengths alone, before inflating
/// anything, and stores nothing; before, it inflated 200 MiB to hash it, stored it and relayed it.
#[test]
fn a_batch_over_its_decoding_budget_is_refused_before_inflating() {
    use outpost_protocol::batch::codec::{self, DecodeError};
    use outpost_protocol::batch::{BatchHeader, Compression};
    use outpost_protocol::{Hlc, SeqRange};
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let header = BatchHeader::crafted(
        site(1),
        SeqRange::new(1, 1).unwrap(),
        Hlc::ZERO,
        vec![],
        Compression::Deflate,
        200 << 20,
    );
    // Not even valid DEFLATE: the check never looks at the body.
    let bytes = codec::assemble(&header, &vec![0; 210 << 10]);
    let limit = codec::decoded_budget(bytes.len());
    match mb.store(vec![bytes]) {
        Err(MailboxError::Decode {
            index: 0,
            source: DecodeError::DecodedTooLarge { limit: l },
        }) => assert_eq!(l, limit),
        other => panic!("expected DecodedTooLarge, got {other:?}"),
    }
    assert_eq!(mb.vector().unwrap(), vector(&[]));
}

/// The relay's time bound (docs/design.md section 10, "Time"): the highest clock of any batch
/// stored rises with each commit that stores one (not with one already held), survives a
/// reopen, is rebuilt from the held batches for a file made before it was kept, and the
/// clock-ahead refusals counted stay counted.
#[test]
fn the_highest_clock_admitted_follows_what_is_stored() {
    use outpost_protocol::Hlc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailbox.db");
    let (a, b) = (site(1), site(2));
    // `support::batch` stamps its cell at 1_700_000_000_000 + hi ms.
    let at = |hi: u64| Hlc::new(1_700_000_000_000 + hi, 0);
    {
        let mut mb = Mailbox::open(&path).unwrap();
        assert_eq!(mb.highest_admitted().unwrap(), Hlc::ZERO);
        mb.store(vec![batch(a, 1, 3, 10), batch(b, 1, 9, 10)])
            .unwrap();
        assert_eq!(mb.highest_admitted().unwrap(), at(9));
        mb.store(vec![batch(a, 4, 4, 10)]).unwrap();
        assert_eq!(mb.highest_admitted().unwrap(), at(9), "lower: unchanged");
        mb.note_clock_ahead_refused().unwrap();
        mb.note_clock_ahead_refused().unwrap();
    }
    let mb = Mailbox::open(&path).unwrap();
    let figures = mb.clock_admission().unwrap();
    assert_eq!(figures.highest_admitted, at(9));
    assert_eq!(figures.clock_ahead_refused, 2);
    drop(mb);
    // A file from before the table: rebuilt from the batches at the next open.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE clock_admission")
        .unwrap();
    let mut mb = Mailbox::open(&path).unwrap();
    assert_eq!(mb.highest_admitted().unwrap(), at(9));
    mb.store(vec![batch(b, 10, 12, 10)]).unwrap();
    assert_eq!(mb.highest_admitted().unwrap(), at(12));
    mb.check().unwrap();
    drop(mb);
    // Derived data: `check` recomputes it from the held batches' headers.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE clock_admission SET highest_admitted = 0")
        .unwrap();
    let e = Mailbox::open(&path).unwrap().check().unwrap_err();
    assert!(e.to_string().contains("highest clock admitted"), "{e}");
}

#[test]
fn streams_of_one_origin_are_stored_covered_and_served_apart() {
    use outpost_protocol::scope::Scopes;
    use outpost_protocol::StreamId;
    use outpost_testkit::batch::scoped;
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let o = SiteId([7; 16]);
    mb.store(vec![
        scoped(o, "", 1, 2),
        scoped(o, "moshi", 1, 1),
        scoped(o, "moshi", 2, 4),
        scoped(o, "tanga", 2, 2), // beyond a gap: held, not covered
    ])
    .unwrap();
    let v = mb.vector().unwrap();
    assert_eq!(v.get(&o.into()), 2);
    assert_eq!(v.get(&StreamId::new(o, "moshi")), 4);
    assert_eq!(v.get(&StreamId::new(o, "tanga")), 0);
    mb.check().unwrap();
    let streams = |grant: &Scopes, from: &VersionVector| -> Vec<(String, u64, u64)> {
        mb.batches_for(from, None, grant)
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                (b.scope, b.range.lo, b.range.hi)
            })
            .collect()
    };
    let tanga = Scopes::parse(["tanga"]).unwrap();
    assert_eq!(streams(&tanga, &VersionVector::new()), [("".into(), 1, 2)]);
    let mut seen = VersionVector::new();
    seen.set(StreamId::new(o, "moshi"), 1);
    assert_eq!(
        streams(&Scopes::All, &seen),
        [("".into(), 1, 2), ("moshi".into(), 2, 4)]
    );
    let status = mb.status().unwrap();
    let per_stream: Vec<(&str, u64, u64)> = status
        .origins
        .iter()
        .map(|s| (s.scope.as_str(), s.batches, s.covered))
        .collect();
    assert_eq!(per_stream, [("", 1, 2), ("moshi", 2, 4), ("tanga", 1, 0)]);
}

/// A version-5 file (before streams) is upgraded in place: its batches are the unscoped streams'
/// and its coverage carries over; nothing is lost.
#[test]
fn a_version_5_file_is_upgraded_to_streams_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let b = batch(site(1), 1, 3, 10);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE batches(id INTEGER PRIMARY KEY,
                origin BLOB NOT NULL CHECK (length(origin) = 16),
                lo INTEGER NOT NULL CHECK (lo >= 1), hi INTEGER NOT NULL CHECK (hi >= lo),
                sha256 BLOB NOT NULL CHECK (length(sha256) = 32), bytes BLOB NOT NULL);
             CREATE INDEX batches_by_lo ON batches(origin, lo, hi);
             CREATE INDEX batches_by_hi ON batches(origin, hi);
             CREATE TABLE coverage(origin BLOB PRIMARY KEY CHECK (length(origin) = 16),
                covered INTEGER NOT NULL CHECK (covered >= 1)) WITHOUT ROWID;
             PRAGMA user_version = 5;",
        )
        .unwrap();
        let h = outpost_protocol::batch::codec::decode_header(
            &b,
            &outpost_protocol::batch::codec::Limits::default(),
        )
        .unwrap();
        conn.execute(
            "INSERT INTO batches(origin, lo, hi, sha256, bytes) VALUES (?1, 1, 3, ?2, ?3)",
            rusqlite::params![site(1).as_bytes(), h.body_sha256, b],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO coverage(origin, covered) VALUES (?1, 3)",
            [site(1).as_bytes()],
        )
        .unwrap();
    }
    let mb = Mailbox::open(&path).unwrap();
    mb.check().unwrap();
    assert_eq!(mb.vector().unwrap(), vector(&[(site(1), 3)]));
    assert_eq!(served(&mb, &VersionVector::new(), None), [(site(1), 1, 3)]);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
}

/// The drains a device declared survive a reopen, a later declaration of the same scope
/// replaces the earlier one, and a file made before the table gains it empty.
#[test]
fn declared_drains_are_kept_per_device_and_scope() {
    use outpost_protocol::message::Drain;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailbox.db");
    let (a, b) = (site(1), site(2));
    let d = |scope: &str, last| Drain {
        scope: scope.into(),
        last,
    };
    {
        let mut mb = Mailbox::open(&path).unwrap();
        assert_eq!(mb.drain_of(&a, "moshi").unwrap(), None);
        mb.record_drains(&a, &[d("moshi", 3), d("arusha", 0)])
            .unwrap();
        mb.record_drains(&a, &[d("moshi", 5)]).unwrap();
        mb.record_drains(&b, &[d("moshi", 9)]).unwrap();
    }
    let mb = Mailbox::open(&path).unwrap();
    assert_eq!(mb.drain_of(&a, "moshi").unwrap(), Some(5));
    assert_eq!(mb.drain_of(&a, "arusha").unwrap(), Some(0));
    assert_eq!(mb.drain_of(&b, "moshi").unwrap(), Some(9));
    assert_eq!(mb.drain_of(&b, "tanga").unwrap(), None);
    drop(mb);
    // A file made before the table: it is created, empty, at the next open.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE drains")
        .unwrap();
    let mb = Mailbox::open(&path).unwrap();
    assert_eq!(mb.drain_of(&a, "moshi").unwrap(), None);
    mb.check().unwrap();
}

/// A device regaining moshi (docs/design.md section 10, "Regrants") is planned its own moshi
/// batches above the `since` it names, and still nothing else of its origin (its other streams,
/// a scope outside its grant), beside every other origin's streams as usual.
#[test]
fn a_regaining_device_is_planned_its_own_batches_of_exactly_those_streams() {
    use outpost_protocol::message::Regain;
    use outpost_protocol::scope::Scopes;
    use outpost_protocol::StreamId;
    use outpost_testkit::batch::scoped;
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    let (me, other) = (SiteId([7; 16]), SiteId([8; 16]));
    mb.store(vec![
        scoped(me, "", 1, 2),
        scoped(me, "moshi", 1, 1),
        scoped(me, "moshi", 2, 4),
        scoped(me, "tanga", 1, 3),
        scoped(other, "moshi", 1, 2),
    ])
    .unwrap();
    // The device's vector states its own tops (all it ever wrote).
    let mut v = VersionVector::new();
    v.set(me.into(), 2);
    v.set(StreamId::new(me, "moshi"), 4);
    v.set(StreamId::new(me, "tanga"), 3);
    let planned = |regain: &[Regain], grant: &Scopes| -> Vec<(SiteId, String, u64, u64)> {
        let mut plan = mb.pull_plan_regaining(&v, Some(me), regain, grant).unwrap();
        let mut out = Vec::new();
        while let Some(b) = mb.next_batch(&mut plan).unwrap() {
            out.push((b.origin, b.scope, b.range.lo, b.range.hi));
        }
        out
    };
    let regain = |since| {
        vec![Regain {
            scope: "moshi".into(),
            since,
        }]
    };
    let moshi = Scopes::parse(["moshi"]).unwrap();
    assert_eq!(
        planned(&[], &moshi),
        [(other, "moshi".to_string(), 1, 2)],
        "without a regain nothing of its own"
    );
    assert_eq!(
        planned(&regain(0), &moshi),
        [
            (me, "moshi".to_string(), 1, 1),
            (me, "moshi".to_string(), 2, 4),
            (other, "moshi".to_string(), 1, 2)
        ]
    );
    assert_eq!(
        planned(&regain(1), &Scopes::All),
        [
            (me, "moshi".to_string(), 2, 4),
            (other, "moshi".to_string(), 1, 2)
        ],
        "resumed from since; its tanga and unscoped streams stay excluded"
    );
    let tanga = Scopes::parse(["tanga"]).unwrap();
    assert!(
        planned(&regain(0), &tanga).is_empty(),
        "a regain outside the grant is not served"
    );
}

/// A peer names the scopes it wants keys for in its hello (its own streams): a sealed tenant
/// makes a first key for at most 16 new ones per key set, so a stolen tablet granted every scope
/// cannot make the cloud store thousands of keys in one session.
#[test]
fn a_key_set_makes_first_keys_for_at_most_16_scopes_a_peer_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = support::store::open(&dir.path().join("m.db"));
    assert!(mb.seal_tenant().unwrap());
    // Scopes by their wire ids, as hellos name them; names sent in clear get no key at all.
    let dk = mb.digest_key().unwrap().unwrap();
    let clear: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    mb.key_set(&outpost_protocol::scope::Scopes::All, &clear)
        .unwrap();
    assert_eq!(
        mb.scope_key_epochs().unwrap().len(),
        1,
        "the unscoped stream's only"
    );
    let named: Vec<String> = (0..100).map(|i| dk.wire_scope(&format!("s{i}"))).collect();
    let set = mb
        .key_set(&outpost_protocol::scope::Scopes::All, &named)
        .unwrap()
        .unwrap();
    // The unscoped stream's key and 16 of the named scopes'.
    assert_eq!(mb.scope_key_epochs().unwrap().len(), 17);
    assert_eq!(set.entries.len(), 17);
    // A scope that has a key is always in the set, however many others are named.
    let again = mb
        .key_set(&outpost_protocol::scope::Scopes::All, &named)
        .unwrap()
        .unwrap();
    assert_eq!(again.entries.len(), 33);
}

/// A hub's uplink session stops its push before the next batch could take the server's count
/// (what is staged, and the arriving message twice) past its push budget, as a device's does:
/// with batches of about 200 KiB and a 2 MiB budget, a session pushes at most
/// 2 MiB - 2 x 516 KiB, and says there is more to push.
#[test]
fn an_uplink_session_stops_its_push_before_the_next_batch_could_pass_the_budget() {
    use outpost_mailbox::MailboxClient;
    use outpost_protocol::session::ClientStore;
    use outpost_protocol::Hlc;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = support::store::open(&dir.path().join("hub.db"));
    let origin = site(0x61);
    // Text that does not compress, about 200 KiB per batch.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut text = || {
        (0..200 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect::<String>()
    };
    let batches: Vec<Vec<u8>> = (1..=20u64)
        .map(|s| {
            outpost_testkit::batch::text_rows(
                origin,
                s,
                s,
                "t",
                "v",
                [(s as i64, Hlc::ZERO, text())],
            )
        })
        .collect();
    hub.store(batches).unwrap();
    let budget = 2 << 20;
    let mut client = MailboxClient::new(&mut hub, site(0xc0));
    client.push_budget = budget;
    let mut plan = client.plan_export(&VersionVector::new()).unwrap();
    let mut pushed = Vec::new();
    while let Some(b) = client.next_export(&mut plan).unwrap() {
        pushed.push(b.len());
    }
    let total: usize = pushed.iter().sum();
    let next = 2 * (516 * 1024);
    let before_last = total - pushed[pushed.len() - 1];
    assert!(pushed.len() >= 2, "{pushed:?}");
    // Each batch was taken while the next could still fit, and the session stopped at the first
    // that left no room for another.
    assert!(before_last + next <= budget, "{pushed:?}");
    assert!(total + next > budget, "{pushed:?}");
    assert!(client.more_to_push, "the rest goes in the next session");
}
