//! Seeded random operations on several replicas, random partial syncs, then a full exchange: every
//! replica must hold the same rows, quarantine and conflicts (DESIGN I1). `OUTPOST_SEED=<n>`
//! replays one seed; `OUTPOST_OPS` and `OUTPOST_REPLICAS` make the run longer or wider.

mod common;
use common::{clinic, mesh_sync, Replica};
use outpost_testkit::env::number;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TABLES: &[&str] = &["patients", "visits"];
const VILLAGES: [&str; 5] = ["Mbeya", "Moshi", "Gulu", "Iringa", "Tanga"];

fn step(rng: &mut StdRng, rs: &[Replica], next_id: &mut u32) {
    let r = &rs[rng.gen_range(0..rs.len())];
    let patient = |rng: &mut StdRng| format!("p{}", rng.gen_range(0..(*next_id).max(1)));
    match rng.gen_range(0..100) {
        0..=19 => {
            *next_id += 1;
            r.exec(&format!(
                "INSERT OR IGNORE INTO patients(id, name, village, visits) VALUES ('p{}', 'n{}', '{}', 0)",
                *next_id - 1,
                rng.gen_range(0..100),
                VILLAGES[rng.gen_range(0..5)]
            ));
        }
        20..=34 => r.exec(&format!(
            "UPDATE patients SET village = '{}' WHERE id = '{}'",
            VILLAGES[rng.gen_range(0..5)],
            patient(rng)
        )),
        35..=44 => r.exec(&format!(
            "UPDATE patients SET name = 'n{}' WHERE id = '{}'",
            rng.gen_range(0..100),
            patient(rng)
        )),
        45..=54 => r.exec(&format!(
            "UPDATE patients SET visits = visits + 1 WHERE id = '{}'",
            patient(rng)
        )),
        55..=59 => r.exec(&format!(
            "UPDATE patients SET allergies = 'a{}' WHERE id = '{}'",
            rng.gen_range(0..3),
            patient(rng)
        )),
        60..=66 => {
            let p = patient(rng);
            r.exec(&format!("DELETE FROM patients WHERE id = '{p}' AND NOT EXISTS (SELECT 1 FROM visits WHERE patient_id = '{p}')"));
        }
        67..=76 => {
            let p = patient(rng);
            let v = rng.gen_range(0..1_000_000);
            r.exec(&format!(
                "INSERT OR IGNORE INTO visits SELECT 'v{v}', id, 'note {v}' FROM patients WHERE id = '{p}'"
            ));
        }
        77..=79 => r.exec(&format!(
            "DELETE FROM visits WHERE id IN (SELECT id FROM visits ORDER BY id LIMIT 1 OFFSET {})",
            rng.gen_range(0..5)
        )),
        _ => {
            let a = rng.gen_range(0..rs.len());
            let b = (a + rng.gen_range(1..rs.len())) % rs.len();
            let chunk = if rng.gen_bool(0.3) {
                Some(rng.gen_range(200..2000))
            } else {
                None
            };
            rs[a].sync_to(&rs[b], chunk);
        }
    }
}

/// `OUTPOST_SEED=<n>` alone, else seeds 1 to `n`.
fn seeds(n: u64) -> Vec<u64> {
    match std::env::var("OUTPOST_SEED") {
        Ok(s) => vec![s.parse().expect("OUTPOST_SEED is a number")],
        Err(_) => (1..=n).collect(),
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = number("OUTPOST_REPLICAS", 3);
    let ops: usize = number("OUTPOST_OPS", 250);
    let rs: Vec<Replica> = (0..n).map(|i| clinic(&format!("r{i}"))).collect();
    let mut next_id = 0;
    for _ in 0..ops {
        step(&mut rng, &rs, &mut next_id);
    }
    let refs: Vec<&Replica> = rs.iter().collect();
    mesh_sync(&refs);
    mesh_sync(&refs);
    let first = rs[0].state(TABLES);
    for r in &rs[1..] {
        let other = r.state(TABLES);
        let only_here: Vec<&String> = other.iter().filter(|l| !first.contains(l)).collect();
        let only_r0: Vec<&String> = first.iter().filter(|l| !other.contains(l)).collect();
        assert!(
            only_here.is_empty() && only_r0.is_empty(),
            "seed {seed}: {} differs from r0 (replay with OUTPOST_SEED={seed})\n only in {}: {only_here:?}\n only in r0: {only_r0:?}",
            r.name,
            r.name
        );
    }
    for r in &rs {
        assert_eq!(
            r.maybe::<String>("PRAGMA foreign_key_check"),
            None,
            "seed {seed}: {} has orphans",
            r.name
        );
    }
}

#[test]
fn random_operations_on_three_replicas_converge() {
    for seed in seeds(6) {
        println!("seed {seed}");
        run(seed);
    }
}

/// A staff table whose `badge` is UNIQUE; `names` values for `name`.
const STAFF: &str = "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT UNIQUE, name TEXT);";

/// The same with `name` UNIQUE too: a row can collide with two others at once.
const STAFF_TWO_UNIQUE: &str =
    "CREATE TABLE staff(id TEXT PRIMARY KEY, badge TEXT UNIQUE, name TEXT UNIQUE);";

/// Visits referencing staff rows: a row held aside must take its visits with it.
const VISITS: &str =
    "CREATE TABLE visits(id TEXT PRIMARY KEY, staff_id TEXT REFERENCES staff(id), note TEXT);";

/// One random write or sync on a `staff` table, with badges from a small set (and names from
/// `names` values), so that REPLACE, OR IGNORE and upserts collide often and replicas assign
/// the same badge concurrently (the later row is quarantined on every replica). Appends what it
/// did to `log`.
fn staff_step(rng: &mut StdRng, rs: &[Replica], names: u32, visits: bool, log: &mut Vec<String>) {
    let i = rng.gen_range(0..rs.len());
    let r = &rs[i];
    let (id, badge, name) = (
        rng.gen_range(0..12),
        rng.gen_range(0..6),
        rng.gen_range(0..names),
    );
    let sql = match rng.gen_range(0..100) {
        0..=24 => format!("INSERT OR REPLACE INTO staff VALUES ('s{id}', 'B-{badge}', 'n{name}')"),
        25..=39 => format!("UPDATE OR REPLACE staff SET badge = 'B-{badge}' WHERE id = 's{id}'"),
        40..=49 => format!("INSERT OR IGNORE INTO staff VALUES ('s{id}', 'B-{badge}', 'n{name}')"),
        // An upsert on the badge still fails when the id (or the name) is taken by another row.
        50..=59 => format!(
            "INSERT INTO staff VALUES ('s{id}', 'B-{badge}', 'n{name}') \
             ON CONFLICT(badge) DO UPDATE SET name = excluded.name"
        ),
        60..=64 => format!("DELETE FROM staff WHERE id = 's{id}'"),
        65..=69 => "SELECT outpost_retry_quarantine()".to_string(),
        70..=74 => format!("UPDATE OR REPLACE staff SET name = 'n{name}' WHERE id = 's{id}'"),
        75..=79 if visits => format!(
            "INSERT OR IGNORE INTO visits SELECT 'v{}', id, 'seen' FROM staff WHERE id = 's{id}'",
            rng.gen_range(0..40)
        ),
        _ => {
            let b = (i + rng.gen_range(1..rs.len())) % rs.len();
            log.push(format!("sync r{i} -> r{b}"));
            r.sync_to(&rs[b], None);
            return;
        }
    };
    log.push(format!("r{i}: {sql}"));
    if let Err(e) = r.conn.execute_batch(&sql) {
        // A REPLACE or delete of a staff row with visits fails on the foreign key.
        let e = e.to_string();
        assert!(
            e.contains("UNIQUE constraint failed: staff.")
                || (visits && e.contains("FOREIGN KEY constraint failed")),
            "{sql}: {e}"
        );
    }
}

/// Random writes on three replicas of `schema`, then a full exchange and a retry everywhere:
/// all must hold the same rows and quarantine.
fn staff_run(schema: &str, names: u32, visits: bool, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let tables: &[&str] = if visits {
        &["staff", "visits"]
    } else {
        &["staff"]
    };
    let rs: Vec<Replica> = (0..3)
        .map(|i| {
            let r = Replica::new(&format!("r{i}"), schema);
            if visits {
                r.exec(VISITS);
            }
            for t in tables {
                r.track(t, None);
            }
            r
        })
        .collect();
    let ops: usize = number("OUTPOST_OPS", 200);
    let mut log = Vec::new();
    for _ in 0..ops {
        staff_step(&mut rng, &rs, names, visits, &mut log);
    }
    // Quarantined rows whose collision is gone come back where each replica retries.
    let refs: Vec<&Replica> = rs.iter().collect();
    for _ in 0..2 {
        mesh_sync(&refs);
        for r in &rs {
            r.one::<i64>("SELECT outpost_retry_quarantine()");
        }
    }
    let first = rs[0].state(tables);
    for r in &rs[1..] {
        assert_eq!(
            r.state(tables),
            first,
            "seed {seed}: {} differs from r0 (replay with OUTPOST_SEED={seed}) after\n{}",
            r.name,
            log.join("\n")
        );
    }
}

#[test]
fn random_replaces_on_a_unique_column_converge() {
    // Before the evictions were made order-independent, about 3 seeds in 10 diverged.
    for seed in seeds(20) {
        staff_run(STAFF, 100, false, seed);
    }
}

#[test]
fn random_replaces_on_two_unique_columns_converge() {
    // A row colliding on both columns at once: decided one collision at a time, 3 seeds in 10
    // diverged.
    for seed in seeds(20) {
        staff_run(STAFF_TWO_UNIQUE, 6, false, seed);
    }
}

#[test]
fn random_replaces_of_rows_with_children_converge() {
    // A row held aside while a replica had given it visits failed every later sync on the
    // foreign key.
    for seed in seeds(20) {
        staff_run(STAFF_TWO_UNIQUE, 6, true, seed);
    }
}
