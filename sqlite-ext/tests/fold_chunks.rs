//! Fold works through the log a chunk (20,000 entries) at a time and deletes each chunk once
//! folded, so the state rows reuse the log's pages. A log of several chunks, with rows written
//! more than once across chunk boundaries, must fold to the same state as one replica applying
//! it, and leave few free pages.

mod common;
use common::clinic;

#[test]
fn a_log_of_several_chunks_folds_like_one_and_reuses_its_pages() {
    let a = clinic("a");
    let n = 45_000;
    a.exec("BEGIN");
    {
        let mut s = a
            .conn
            .prepare("INSERT INTO visits(id, patient_id, note) VALUES (?1, NULL, ?2)")
            .unwrap();
        for i in 0..n {
            s.execute(rusqlite::params![format!("v{i:06}"), format!("note {i}")])
                .unwrap();
        }
    }
    a.exec("COMMIT");
    // Writes to the same rows in later chunks: updates, a delete, a re-insert.
    a.exec(
        "UPDATE visits SET note = 'second' WHERE id IN ('v000001', 'v019999', 'v030000');
         DELETE FROM visits WHERE id = 'v000002';
         INSERT INTO patients(id, name) VALUES ('p1', 'x');
         UPDATE visits SET note = 'third', patient_id = 'p1' WHERE id = 'v000001';",
    );
    let pages = |sql: &str| -> i64 { a.one(sql) };
    let before = pages("PRAGMA page_count");
    let b = clinic("b");
    a.sync_to(&b, Some(1_000_000));
    let tables = ["patients", "visits"];
    assert_eq!(b.state(&tables), a.state(&tables));
    assert_eq!(
        b.one::<String>("SELECT note || patient_id FROM visits WHERE id = 'v000001'"),
        "thirdp1"
    );
    assert_eq!(b.one::<i64>("SELECT count(*) FROM visits"), n - 1);
    // One log row stays (it keeps seqs increasing), marked folded.
    assert_eq!(a.one::<i64>("SELECT count(*) FROM _outpost_log"), 1);
    assert_eq!(
        a.one::<i64>("SELECT count(*) FROM _outpost_log WHERE op != 0"),
        0
    );
    // Folding again (nothing new) changes nothing; a new write is exported once.
    a.exec("UPDATE visits SET note = 'fourth' WHERE id = 'v044999'");
    let sent = a.sync_to(&b, None);
    assert_eq!(sent.len(), 1);
    assert_eq!(b.state(&tables), a.state(&tables));
    // The log's pages were reused by the state: what is free is at most the last chunk's share.
    let free = pages("PRAGMA freelist_count");
    let after = pages("PRAGMA page_count");
    assert!(
        free * 4 < after - before + free,
        "free pages {free}, file {before} -> {after} pages"
    );
}
