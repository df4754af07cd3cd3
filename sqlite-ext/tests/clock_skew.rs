//! Clock skew against a trusted peer (issue 18 item 1, first part): at each session's hello a
//! device compares its wall clock with the time the peer states; beyond five minutes it writes
//! with the peer's time from then on, and `outpost_status()` shows the skew and the offset. A
//! peer stating 0 (a hub with no trusted time) changes nothing. Against the scripted hub of
//! `common/scripted_hub.rs` (the real protocol on loopback), which states the true time shifted:
//! stating "a year later" is what a device whose clock runs a year behind sees.

mod common;
use common::clinic;
use common::scripted_hub::{now_ms, Hub};
use common::Replica;

const YEAR_MS: i64 = 365 * 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn status(r: &Replica) -> serde_json::Value {
    serde_json::from_str(&r.one::<String>("SELECT outpost_status()")).unwrap()
}

/// The clock (ms) of the newest own write to `id`, from the batch the device would push. The
/// export counts as sending (`restamp.rs`): what it includes is never re-stamped afterwards.
fn written_at(r: &Replica, id: &str) -> i64 {
    let json: String = r.one("SELECT outpost_batch_json(outpost_changes(0))");
    let batch: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut newest = 0;
    for table in batch["body"].as_array().unwrap() {
        for row in table["rows"].as_array().unwrap() {
            if row["key"].to_string().contains(id) {
                for cell in row["cells"].as_array().unwrap() {
                    let hlc = cell["hlc"].as_str().unwrap_or_default();
                    let ms: i64 = hlc.split('.').next().unwrap().parse().unwrap();
                    newest = newest.max(ms);
                }
            }
        }
    }
    assert!(newest > 0, "no cell of {id} in {json}");
    newest
}

#[test]
fn a_device_a_year_behind_its_trusted_hub_writes_with_the_hubs_time() {
    let hub = Hub::start();
    let a = clinic("a");
    hub.enroll(&a);
    assert_eq!(status(&a)["clock"], serde_json::Value::Null, "no check yet");

    // The hub's time is a year ahead of this device's clock.
    hub.set_clock_shift(Some(YEAR_MS));
    hub.sync(&a);
    let clock = status(&a)["clock"].clone();
    let offset = clock["offset_ms"].as_i64().unwrap();
    assert!((offset - YEAR_MS).abs() < 60_000, "{clock}");
    assert!(
        (clock["skew_ms"].as_i64().unwrap() + YEAR_MS).abs() < 60_000,
        "{clock}"
    );

    // A write now carries the hub's time, not the device's.
    a.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Asha', 'Mbeya')");
    let at = written_at(&a, "p1");
    let expected = now_ms() as i64 + YEAR_MS;
    assert!(
        (at - expected).abs() < 60_000,
        "written at {at}, expected about {expected}"
    );

    // Back within five minutes of trusted time: the offset is cleared. p1 was exported by hand
    // (`written_at`), so it has left with a clock now a year ahead of trusted time: it keeps it,
    // and this hub, which holds no clock that far ahead, refuses it, before and after the
    // device's re-stamp (docs/design.md section 10, "Time").
    hub.set_clock_shift(Some(60_000));
    hub.serve_sync();
    let e = hub.try_sync(&a).expect_err("p1 is refused");
    hub.served();
    assert!(e.contains("more than a day ahead"), "{e}");
    assert_eq!(status(&a)["clock"]["offset_ms"], 0);
    assert!((status(&a)["clock"]["skew_ms"].as_i64().unwrap() + 60_000).abs() < 10_000);
}

#[test]
fn a_device_a_day_ahead_moves_back_and_a_hub_without_trusted_time_changes_nothing() {
    let hub = Hub::start();
    let b = clinic("b");
    hub.enroll(&b);
    // A hub stating 0 has no trusted time: no check is recorded.
    hub.set_clock_shift(None);
    hub.sync(&b);
    assert_eq!(status(&b)["clock"], serde_json::Value::Null);
    b.exec("INSERT INTO patients(id, name, village) VALUES ('p1', 'Baraka', 'Moshi')");
    let raw = written_at(&b, "p1");
    assert!((raw - now_ms() as i64).abs() < 60_000);

    // The hub's time is a day behind this device's clock: later writes take the hub's time...
    hub.set_clock_shift(Some(-DAY_MS));
    hub.sync(&b);
    assert!((status(&b)["clock"]["offset_ms"].as_i64().unwrap() + DAY_MS).abs() < 60_000);
    b.exec("UPDATE patients SET name = 'Baraka M.' WHERE id = 'p1'");
    // ...but never below a clock of a change that left (`written_at` exported p1, so it is not
    // re-stamped, and the edit must still win over it): the hybrid clock continues from there
    // (same millisecond, next counter).
    let at = written_at(&b, "p1");
    assert!(at >= raw, "written at {at}, the first write at {raw}");
    assert!(at < raw + 60_000, "not a day ahead: {at} vs {raw}");
}
