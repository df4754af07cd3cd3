//! `outpost_enroll` / `outpost_sync` without a hub: argument checks, the refusals a device gives
//! on its own, the key file, and peers that do not answer. (Sessions with the real hub binary
//! are in `tests/tests/hub_sessions.rs`.)

mod common;
use common::load;
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::Keypair;
use outpost_protocol::SiteId;
use rusqlite::Connection;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn open(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    load(&c);
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT);
         SELECT outpost_track('patients');",
    )
    .unwrap();
    c
}

fn err(c: &Connection, sql: &str) -> String {
    match c.query_row(sql, [], |r| r.get::<_, String>(0)) {
        Ok(v) => panic!("{sql} succeeded: {v}"),
        Err(e) => e.to_string(),
    }
}

/// A code for a hub that does not exist, pointing at `addresses`.
fn code(addresses: Vec<String>, expires_at: u64) -> String {
    let hub = Keypair::generate().unwrap();
    EnrollCode {
        hub_key: hub.public().as_bytes().to_vec(),
        hub_site: SiteId([0x42; 16]),
        addresses,
        token: [7; 32],
        expires_at,
        cloud: None,
    }
    .encode()
}

fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}

#[test]
fn sync_before_enrolling_says_not_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir.path().join("a.db"));
    let e = err(&c, "SELECT outpost_sync()");
    assert!(e.contains("not enrolled"), "{e}");
    assert!(e.contains("outpost_enroll"), "{e}");
    let e = err(&c, "SELECT outpost_sync('hub')");
    assert!(e.contains("not enrolled"), "{e}");
}

#[test]
fn sync_and_enroll_inside_a_transaction_are_refused_and_the_transaction_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir.path().join("a.db"));
    c.execute_batch("BEGIN; INSERT INTO patients VALUES ('p1', 'Asha');")
        .unwrap();
    let e = err(&c, "SELECT outpost_sync()");
    assert!(e.contains("outside a transaction"), "{e}");
    let e = err(
        &c,
        &format!(
            "SELECT outpost_enroll('{}')",
            code(vec![closed_port()], u64::MAX)
        ),
    );
    assert!(e.contains("outside a transaction"), "{e}");
    c.execute_batch("COMMIT").unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM patients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn damaged_codes_and_bad_arguments_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir.path().join("a.db"));
    assert!(err(&c, "SELECT outpost_enroll('hello')").contains("starts with \"outpost:\""));
    let good = code(vec![closed_port()], u64::MAX);
    let cut = &good[..good.len() - 6];
    let e = err(&c, &format!("SELECT outpost_enroll('{cut}')"));
    assert!(e.contains("enrollment code"), "{e}");
    assert!(err(&c, "SELECT outpost_enroll(42)").contains("enrollment code"));
    let e = err(&c, "SELECT outpost_sync(NULL, '{\"colour\": 1}')");
    assert!(e.contains("unknown option \"colour\""), "{e}");
    let e = err(&c, "SELECT outpost_sync(NULL, '{\"live_seconds\": 3601}')");
    assert!(
        e.contains("live_seconds must be an integer from 0 to 3600"),
        "{e}"
    );
    let e = err(&c, "SELECT outpost_sync(NULL, 'not json')");
    assert!(e.contains("not JSON"), "{e}");
    let e = err(&c, "SELECT outpost_sync('x!')");
    assert!(e.contains("\"hub\", \"cloud\""), "{e}");
    let e = err(&c, "SELECT outpost_sync(1, 2, 3)");
    assert!(e.contains("takes 0 to 2 argument(s)"), "{e}");
}

#[test]
fn an_unreachable_peer_is_reported_with_every_address_tried() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir.path().join("a.db"));
    let (a, b) = (closed_port(), closed_port());
    let e = err(
        &c,
        &format!(
            "SELECT outpost_enroll('{}')",
            code(vec![a.clone(), b.clone()], u64::MAX)
        ),
    );
    assert!(e.contains("peer unreachable"), "{e}");
    assert!(e.contains(&format!("{a} (connection refused)")), "{e}");
    assert!(e.contains(&format!("{b} (connection refused)")), "{e}");
    // nothing was pinned
    let e = err(&c, "SELECT outpost_sync()");
    assert!(e.contains("not enrolled"), "{e}");
}

#[test]
fn a_peer_that_hangs_up_on_the_handshake_is_not_trusted_and_nothing_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir.path().join("a.db"));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut first = [0u8; 64];
        let n = std::io::Read::read(&mut s, &mut first).unwrap();
        assert!(n > 0);
        // a rogue: cannot read message 1, hangs up
    });
    let e = err(
        &c,
        &format!("SELECT outpost_enroll('{}')", code(vec![addr], u64::MAX)),
    );
    server.join().unwrap();
    assert!(e.contains("key mismatch"), "{e}");
    let pinned: i64 = c
        .query_row("SELECT count(*) FROM _outpost_peers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pinned, 0);
}

#[test]
fn the_device_key_file_is_private_bound_to_its_database_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let key = dir.path().join("a.db-outpost.key");
    let c = open(&db);
    let unreachable = code(vec![closed_port()], u64::MAX);
    let _ = err(&c, &format!("SELECT outpost_enroll('{unreachable}')"));
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&key).unwrap();
    assert_eq!(bytes.len(), 52);
    let site: Vec<u8> = c
        .query_row("SELECT outpost_site_id()", [], |r| r.get(0))
        .unwrap();
    assert_eq!(&bytes[4..20], &site[..]);
    // the secret is nowhere in the database file
    drop(c);
    let file = std::fs::read(&db).unwrap();
    assert!(!file.windows(32).any(|w| w == &bytes[20..]));
    // a second use keeps the same key
    let c = open(&db);
    let _ = err(&c, &format!("SELECT outpost_enroll('{unreachable}')"));
    assert_eq!(std::fs::read(&key).unwrap(), bytes);
    // readable by others: refused, with what to do
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(&c, &format!("SELECT outpost_enroll('{unreachable}')"));
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // another database's key file is refused, not used
    drop(c);
    let other = dir.path().join("b.db");
    std::fs::copy(&key, dir.path().join("b.db-outpost.key")).unwrap();
    let c = open(&other);
    let e = err(&c, &format!("SELECT outpost_enroll('{unreachable}')"));
    assert!(e.contains("belongs to the database with site id"), "{e}");
}

#[test]
fn an_in_memory_database_gets_a_key_without_a_file() {
    let c = Connection::open_in_memory().unwrap();
    load(&c);
    let e = err(
        &c,
        &format!(
            "SELECT outpost_enroll('{}')",
            code(vec![closed_port()], u64::MAX)
        ),
    );
    assert!(e.contains("peer unreachable"), "{e}");
}

#[test]
fn the_handshake_counter_is_committed_and_increases_with_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir.path().join("a.db"));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accept = std::thread::spawn(move || {
        for _ in 0..2 {
            drop(l.accept().unwrap());
        }
    });
    let code = code(vec![addr], u64::MAX);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let _ = err(&c, &format!("SELECT outpost_enroll('{code}')"));
        let v: i64 = c
            .query_row(
                "SELECT v FROM _outpost_identity WHERE k = 'handshake_counter'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        seen.push(v);
    }
    accept.join().unwrap();
    assert!(seen[1] > seen[0], "{seen:?}");
    let autocommit = c.is_autocommit();
    assert!(autocommit);
}
