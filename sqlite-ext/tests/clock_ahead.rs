//! The first relay's time bound, from the device's side (issue 16 item 6; docs/design.md
//! section 10, "Time"): a hub with trusted time refuses a push stamped more than a day ahead of
//! it (`ClockAhead`), and the device answers by re-stamping what the push was the first to carry
//! and pushing again, once. An edit of a far-future version stays above it (the re-stamp floor),
//! so it passes only where that version was already admitted: the hub's allowance.
//!
//! Against the scripted hub of `common/scripted_hub.rs` (the real protocol on loopback; its
//! `ServerSession` applies the bound when its hello states trusted time, with the highest clock
//! it holds as its allowance), with device clocks set through the test hook
//! (`test_wall_shift_ms` in `_outpost_meta`).

mod common;
use common::clinic;
use common::scripted_hub::{now_ms, Hub};
use common::Replica;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// How far from the expected time a clock may be (the test's own run time, with room).
const SLACK_MS: i64 = 60_000;

/// Sets `r`'s wall clock to the true time shifted by `ms` (the test hook), and waits until every
/// connection has read it (they read it within a second, as they read the skew offset).
fn shift_clock(r: &Replica, ms: i64) {
    r.exec(&format!(
        "INSERT INTO _outpost_meta(k, v) VALUES ('test_wall_shift_ms', {ms}) \
         ON CONFLICT(k) DO UPDATE SET v = excluded.v"
    ));
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

fn status(r: &Replica) -> serde_json::Value {
    serde_json::from_str(&r.one::<String>("SELECT outpost_status()")).unwrap()
}

/// The largest clock's milliseconds of the batches the hub was pushed from `index` on.
fn pushed_max_ms(hub: &Hub, index: usize) -> i64 {
    hub.pushed()[index..]
        .iter()
        .map(|b| outpost_testkit::batch::header(b).max_hlc.millis() as i64)
        .max()
        .expect("a batch pushed")
}

/// The oldest unacknowledged change of a patient row (`outpost_pending.since_ms`), on `conn`.
fn pending_since(conn: &rusqlite::Connection, id: &str) -> i64 {
    conn.query_row(
        "SELECT since_ms FROM outpost_pending WHERE tbl = 'patients' AND pk = ?1",
        [format!("[\"{id}\"]")],
        |r| r.get(0),
    )
    .unwrap()
}

/// A write made by a connection that had not read the corrected clock yet (the hello's check
/// moved the device to the hub's time a moment before) is refused by the hub as three days
/// ahead; the device re-stamps it to the hub's time and the push goes through, in one sync.
#[test]
fn a_write_stamped_three_days_ahead_is_re_stamped_after_the_refusal_and_pushed_again() {
    let hub = Hub::start();
    let d = clinic("d");
    hub.enroll(&d);
    shift_clock(&d, 3 * DAY_MS);
    // A second connection of the same database (another thread of the app), whose clock is
    // read at its first write and then kept for a second.
    let app = rusqlite::Connection::open(d.conn.path().unwrap()).unwrap();
    common::load(&app);
    app.execute_batch("INSERT INTO patients(id, name, village) VALUES ('p1', 'Neema', 'Mbeya')")
        .unwrap();

    // The device never met trusted time: the hello's check moves it three days back and
    // re-stamps p1 before the push.
    let out = hub.sync(&d);
    assert_eq!(out["pushed"], 1, "{out}");
    let now = now_ms() as i64;
    assert!((pushed_max_ms(&hub, 0) - now).abs() < SLACK_MS);

    // The app's connection writes within the second it still trusts its old clock.
    app.execute_batch("INSERT INTO patients(id, name, village) VALUES ('p2', 'Juma', 'Iringa')")
        .unwrap();
    let stamped = pending_since(&app, "p2");
    assert!(
        (stamped - (now + 3 * DAY_MS)).abs() < SLACK_MS,
        "precondition: the second connection wrote with its old clock (the sync took over a \
         second?): {stamped} vs {now}"
    );

    // First push refused (nothing stored), the change re-stamped, the second push accepted:
    // two sessions in one sync.
    let before = hub.pushed().len();
    hub.serve_sync();
    let out = hub.sync(&d);
    hub.served();
    assert_eq!(out["pushed"], 1, "{out}");
    assert_eq!(hub.pushed().len(), before + 1, "one push stored, not two");
    let now = now_ms() as i64;
    let p2 = pushed_max_ms(&hub, before);
    assert!(
        (p2 - now).abs() < SLACK_MS,
        "re-stamped near the hub's time: {p2} vs {now}"
    );
    let refusal = status(&d)["clock"]["last_clock_ahead"].clone();
    assert_eq!(refusal["restamped"], 1, "{refusal}");
    assert_eq!(refusal["refusals"], 1, "{refusal}");
    let day_ahead = outpost_protocol::hlc::UtcDate((now + 3 * DAY_MS) as u64).to_string();
    assert_eq!(
        refusal["stamped"].as_str().unwrap()[..10],
        day_ahead[..10],
        "{refusal}"
    );

    // Nothing is left to push, and the two rows reach another device.
    assert_eq!(hub.sync(&d)["pushed"], 0);
    let b = clinic("b");
    hub.enroll(&b);
    hub.sync(&b);
    assert_eq!(b.one::<i64>("SELECT count(*) FROM patients"), 2);
}

/// The re-stamp floor and the allowance: a device that received a version F stamped ten days
/// ahead (from a peer no trusted relay judged) edits it; its edit E is kept above F. A trusted
/// hub that does not hold F refuses E even after the device re-stamped (a typed error naming
/// the clock); once F reached the hub (through it, while it had no trusted time), E passes, and
/// every replica shows the edit.
#[test]
fn an_edit_above_a_far_future_version_passes_where_that_version_was_admitted() {
    let hub = Hub::start();
    let (c, d) = (clinic("c"), clinic("d"));
    hub.enroll(&c);
    hub.enroll(&d);
    // d learns c's key (the hub's key directory), and meets trusted time.
    hub.sync(&d);
    shift_clock(&c, 10 * DAY_MS);
    c.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Eliya', 'Dodoma')");
    // F reaches d by hand (`outpost_changes`, `outpost_apply`), no relay on the way.
    let f = c.changes(0, None).expect("a batch");
    let f_ms = outpost_testkit::batch::header(&f).max_hlc.millis() as i64;
    d.apply(&f).unwrap();
    d.exec("UPDATE patients SET name = 'Eliya M.' WHERE id = 'p1'");

    // The hub has trusted time and does not hold F: E is refused, re-stamped (it cannot go
    // below F), refused again: two sessions in one sync.
    hub.serve_sync();
    let e = hub.sync_failing(&d);
    hub.served();
    assert!(e.contains("refused changes stamped"), "{e}");
    assert!(
        e.contains("more than a day ahead of its trusted time"),
        "{e}"
    );
    assert!(hub.pushed().is_empty(), "nothing stored");
    let refusal = status(&d)["clock"]["last_clock_ahead"].clone();
    assert_eq!(refusal["refusals"], 2, "{refusal}");
    assert!(refusal["restamped"].is_null(), "{refusal}");

    // F enters through the hub while it has no trusted time (rebooted without its uplink).
    hub.set_clock_shift(None);
    hub.sync(&c);
    assert_eq!(pushed_max_ms(&hub, 0), f_ms);

    // Trusted again: E, just above F, passes.
    hub.set_clock_shift(Some(0));
    let out = hub.sync(&d);
    assert_eq!(out["pushed"], 1, "{out}");
    let edit = pushed_max_ms(&hub, 1);
    assert!(edit >= f_ms && edit <= f_ms + 1000, "{edit} vs {f_ms}");
    hub.sync(&c);
    let name = "SELECT name FROM patients WHERE id = 'p1'";
    assert_eq!(c.one::<String>(name), "Eliya M.");
    assert_eq!(d.one::<String>(name), "Eliya M.");
}
