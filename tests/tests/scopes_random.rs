//! Scopes under random work (issue 19's acceptance; docs/design.md section 10, invariants S1,
//! S3, S4): a real `outpost-cloud run` and tablets of different grants (one clinic, two clinics,
//! every clinic) on the built `liboutpost.so`, doing random inserts, edits, counter increments,
//! `review` edits, visits and referrals (concurrent and round-trip moves among them) with random
//! syncs, and random regrants (`outpost-cloud grant`: scopes removed drain, scopes added are
//! pulled, scopes granted back to a tablet that dropped them bring back its own past batches
//! too). When every tablet has synced until nothing changes, each holds exactly the cloud's rows
//! of its grant, cell for cell (S1: nothing else; S4: no cell lost, no delete written; S3: tablets
//! of one grant hold the same), and the cloud holds every patient ever written.
//!
//! `OUTPOST_SCOPES_SEEDS=a,b,c` runs other seeds (the failing seed is in the panic message).

use outpost_testkit::e2e::built::built;
use outpost_testkit::e2e::cloud::Cloud;
use outpost_testkit::e2e::device_db::DeviceDb;
use outpost_testkit::e2e::scratch::scratch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::process::Command;
use std::time::Duration;

const SCOPES: [&str; 3] = ["moshi", "tanga", "kilwa"];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT,
    visits_count INTEGER NOT NULL DEFAULT 0, allergies TEXT);
CREATE TABLE IF NOT EXISTS visits(id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT REFERENCES patients(id), note TEXT);
SELECT outpost_track('patients',
    '{\"scope\": \"clinic\", \"columns\": {\"visits_count\": \"counter\", \"allergies\": \"review\"}}');
SELECT outpost_track('visits', '{\"scope\": {\"via\": \"patient_id\"}}');";

/// A tablet and the scopes it is granted (`None`: every scope).
struct Tablet {
    name: &'static str,
    db: DeviceDb,
    grant: std::cell::RefCell<Option<Vec<&'static str>>>,
    /// Every scope it was ever granted.
    ever: std::cell::RefCell<Vec<&'static str>>,
}

impl Tablet {
    fn holds(&self, scope: &str) -> bool {
        self.grant
            .borrow()
            .as_ref()
            .is_none_or(|g| g.contains(&scope))
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("OUTPOST_SCOPES_SEEDS") {
        Ok(s) => s.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        Err(_) => vec![1, 2, 3],
    }
}

/// `sql`'s rows, each as its columns joined by `|`.
fn rows(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut st = conn.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        Ok((0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                rusqlite::types::ValueRef::Real(v) => v.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
            })
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

const PATIENTS: &str = "SELECT id, name, clinic, visits_count, allergies FROM patients ORDER BY id";
const VISITS: &str = "SELECT v.id, v.patient_id, v.note, p.clinic FROM visits AS v \
     JOIN patients AS p ON p.id = v.patient_id ORDER BY v.id";

/// Runs `sql` on `t`; a write the extension refuses for the grant (a row this tablet referred
/// out of its scopes is not its to write) is part of the game, any other error is not.
fn write(t: &Tablet, sql: &str) -> bool {
    let done = t.db.conn.execute_batch(sql);
    if let Err(e) = &done {
        let e = e.to_string();
        assert!(
            e.contains("not granted") || e.contains("removed from this device's grant"),
            "tablet {}: {sql}: {e}",
            t.name
        );
    }
    done.is_ok()
}

/// One random step of `t`.
fn step(rng: &mut StdRng, t: &Tablet, next_id: &mut u64, written: &mut Vec<String>) {
    let held = rows(&t.db.conn, "SELECT id FROM patients ORDER BY id");
    let pick = (!held.is_empty()).then(|| held[rng.gen_range(0..held.len())].clone());
    // Whether the write was taken is not needed past the insert's bookkeeping.
    let _ = match (rng.gen_range(0..8), pick) {
        (0 | 1, _) | (_, None) => {
            let granted: Vec<&str> = SCOPES.iter().copied().filter(|s| t.holds(s)).collect();
            let scope = granted[rng.gen_range(0..granted.len())];
            *next_id += 1;
            let id = format!("{}{}", t.name, next_id);
            // Refused when the tablet has not learnt a grant this test just gave it.
            let sql = format!(
                "INSERT INTO patients(id, name, clinic) VALUES ('{id}', 'name {id}', '{scope}')"
            );
            let done = write(t, &sql);
            if done {
                written.push(id);
            }
            done
        }
        (2, Some(id)) => write(
            t,
            &format!(
                "UPDATE patients SET name = 'name {} by {}' WHERE id = '{id}'",
                rng.gen_range(0..1000),
                t.name
            ),
        ),
        (3, Some(id)) => write(
            t,
            &format!(
                "UPDATE patients SET visits_count = visits_count + {} WHERE id = '{id}'",
                rng.gen_range(1..5)
            ),
        ),
        (4, Some(id)) => write(
            t,
            &format!(
                "UPDATE patients SET allergies = 'allergy {} by {}' WHERE id = '{id}'",
                rng.gen_range(0..1000),
                t.name
            ),
        ),
        (5, Some(id)) => {
            *next_id += 1;
            write(
                t,
                &format!(
                    "INSERT INTO visits VALUES ('v{}{}', '{id}', 'visit by {}')",
                    t.name, next_id, t.name
                ),
            )
        }
        (_, Some(id)) => {
            // A referral: to any clinic, this tablet's or not (a round trip when it comes back).
            let to = SCOPES[rng.gen_range(0..SCOPES.len())];
            write(
                t,
                &format!("UPDATE patients SET clinic = '{to}' WHERE id = '{id}'"),
            )
        }
    };
}

/// Regrants `t` (not the every-scope tablet): some of its scopes removed, some it does not
/// hold added (held before or not), never none. Returns how many of the added scopes it held
/// before, `None` when nothing changed.
fn regrant(rng: &mut StdRng, cloud: &Cloud, t: &Tablet) -> Option<usize> {
    let now = t.grant.borrow().clone()?;
    let mut next: Vec<&'static str> = now.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
    for s in SCOPES {
        if !now.contains(&s) && rng.gen_bool(0.5) {
            next.push(s);
        }
    }
    if next.is_empty() || next == now {
        return None;
    }
    let back = next
        .iter()
        .filter(|s| !now.contains(s) && t.ever.borrow().contains(s))
        .count();
    let site: String =
        t.db.call::<String>("SELECT lower(hex(outpost_site_id()))")
            .unwrap();
    let out = Command::new(&built().cloud)
        .args(["grant", "--data"])
        .arg(&cloud.data)
        .args(["--device", &site[..12], "--scopes", &next.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grant {}: {}",
        t.name,
        String::from_utf8_lossy(&out.stderr)
    );
    t.ever.borrow_mut().extend(next.iter().copied());
    *t.grant.borrow_mut() = Some(next);
    Some(back)
}

/// Whether every tablet holds exactly the cloud's rows of its grant.
fn converged(cloud: &rusqlite::Connection, tablets: &[Tablet]) -> Result<(), String> {
    let all_p = rows(cloud, PATIENTS);
    let all_v = rows(cloud, VISITS);
    for t in tablets {
        let scope_of = |r: &String, at: usize| r.split('|').nth(at).unwrap_or("").to_string();
        let want_p: Vec<String> = all_p
            .iter()
            .filter(|r| t.holds(&scope_of(r, 2)))
            .cloned()
            .collect();
        let want_v: Vec<String> = all_v
            .iter()
            .filter(|r| t.holds(&scope_of(r, 3)))
            .cloned()
            .collect();
        let got_p = rows(&t.db.conn, PATIENTS);
        let got_v = rows(&t.db.conn, VISITS);
        if got_p != want_p {
            return Err(format!(
                "tablet {}: patients\n got  {got_p:?}\n want {want_p:?}",
                t.name
            ));
        }
        if got_v != want_v {
            return Err(format!(
                "tablet {}: visits\n got  {got_v:?}\n want {want_v:?}",
                t.name
            ));
        }
    }
    Ok(())
}

fn run(seed: u64) {
    let dir = scratch();
    let cloud = Cloud::running(&dir.path().join("cloud"));
    let grants: [(&str, Option<Vec<&str>>); 5] = [
        ("m", Some(vec!["moshi"])),
        ("n", Some(vec!["moshi"])),
        ("t", Some(vec!["tanga"])),
        ("mt", Some(vec!["moshi", "tanga"])),
        ("all", None),
    ];
    let tablets: Vec<Tablet> = grants
        .into_iter()
        .map(|(name, grant)| {
            let db = DeviceDb::open(&dir.path().join(format!("{name}.db")), SCHEMA);
            let scopes = grant.as_ref().map_or("*".to_string(), |g| g.join(","));
            db.enroll(&cloud.scoped_code("--device", &scopes));
            let ever = std::cell::RefCell::new(grant.clone().unwrap_or_default());
            Tablet {
                name,
                db,
                grant: std::cell::RefCell::new(grant),
                ever,
            }
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_id = 0;
    let mut written = Vec::new();
    let (mut regrants, mut back) = (0, 0);
    for _ in 0..60 {
        let t = &tablets[rng.gen_range(0..tablets.len())];
        if rng.gen_bool(0.05) {
            if let Some(b) = regrant(&mut rng, &cloud, t) {
                regrants += 1;
                back += b;
            }
        }
        step(&mut rng, t, &mut next_id, &mut written);
        if rng.gen_bool(0.4) {
            let t = &tablets[rng.gen_range(0..tablets.len())];
            t.db.sync();
        }
    }
    let tenant = rusqlite::Connection::open(cloud.data.join("tenant.db")).unwrap();
    tenant.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut last = Err(String::new());
    for _ in 0..30 {
        for t in &tablets {
            t.db.sync();
        }
        std::thread::sleep(Duration::from_millis(300));
        last = converged(&tenant, &tablets);
        if last.is_ok() {
            break;
        }
    }
    if let Err(e) = last {
        let log = std::fs::read_to_string(cloud.data.with_extension("log")).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("warn") || l.contains("error") || l.contains("refused")
            })
            .take(20)
            .collect();
        let kept = dir.keep();
        panic!(
            "seed {seed} (files kept in {kept:?}): not converged after 30 rounds: {e}\nthe cloud's warnings:\n{}",
            warnings.join("\n")
        );
    }
    let held = rows(&tenant, "SELECT id FROM patients ORDER BY id");
    written.sort();
    if held != written {
        let kept = dir.keep();
        panic!(
            "seed {seed} (files kept in {kept:?}): the cloud lacks patients: held {held:?}, \
             written {written:?}"
        );
    }
    let moved: i64 = tenant
        .query_row("SELECT count(*) FROM _outpost_transfers", [], |r| r.get(0))
        .unwrap();
    println!(
        "seed {seed}: {} patients, {} visits, {moved} transfers, {regrants} regrants \
         ({back} scopes granted back); converged",
        held.len(),
        rows(&tenant, VISITS).len()
    );
}

#[test]
fn tablets_of_different_grants_hold_exactly_their_scopes_after_random_moves() {
    for seed in seeds() {
        run(seed);
    }
}
