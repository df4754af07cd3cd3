//! Where the tests' mailboxes live: a SQLite file at the path a test names (the hub's store, the
//! default), or, with `OUTPOST_TEST_MAILBOX_STORE=postgres` (and the crate's `postgres` feature),
//! a schema of its own per path in one PostgreSQL database of the test cluster
//! (`OUTPOST_TEST_POSTGRES_URL`): the cloud's store when its tenant is in PostgreSQL. The same
//! tests then prove the same behaviour of both (`scripts/test` runs them both ways).

use outpost_mailbox::Mailbox;
use std::path::Path;

/// Whether this run's mailboxes are in PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("OUTPOST_TEST_MAILBOX_STORE").is_ok_and(|v| v == "postgres")
}

/// The mailbox a test names `path` (opened again by the same path: the same store).
pub fn open(path: &Path) -> Mailbox {
    if on_postgres() {
        return postgres_open(path);
    }
    Mailbox::open(path).unwrap()
}

#[cfg(feature = "postgres")]
fn postgres_open(path: &Path) -> Mailbox {
    use outpost_protocol::batch::codec::Limits;
    use outpost_testkit::pg::{self, TestDatabase};
    use std::sync::OnceLock;
    static DB: OnceLock<TestDatabase> = OnceLock::new();
    let db = DB.get_or_init(|| pg::database("mailbox").expect("a test cluster"));
    // A schema per path: the same path is the same mailbox, as a file would be.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.to_string_lossy().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let schema = format!("mb_{h:016x}");
    let client = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    Mailbox::open_postgres(
        client,
        &schema,
        &format!("postgres {schema}"),
        Limits::default(),
    )
    .unwrap()
}

#[cfg(not(feature = "postgres"))]
fn postgres_open(_: &Path) -> Mailbox {
    panic!("OUTPOST_TEST_MAILBOX_STORE=postgres needs the postgres feature: cargo test -p outpost-mailbox --features postgres")
}
