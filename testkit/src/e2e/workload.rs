//! The benchmark workload's W1 (docs/workload.md: 100k patients + 200k visits with UUID keys,
//! from a fixed seed), as the end-to-end tests and benchmarks that sync it build it: its rows,
//! a database file with the tables (tracked when the extension is loaded), and the insert.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::types::Value;
use rusqlite::Connection;
use std::path::Path;
use std::time::Instant;

/// W1's rows: patients (9 columns) then visits (6 columns), in insert order.
pub type W1Rows = (Vec<[Value; 9]>, Vec<[Value; 6]>);

/// W1's tables.
pub const W1_SCHEMA: &str = "
CREATE TABLE patients(id TEXT PRIMARY KEY NOT NULL, given_name TEXT, family_name TEXT, sex TEXT, dob TEXT,
  village TEXT, phone TEXT, visit_count INTEGER, updated_at INTEGER);
CREATE TABLE visits(id TEXT PRIMARY KEY NOT NULL, patient_id TEXT REFERENCES patients(id), clinic TEXT,
  provider TEXT, notes TEXT, created_at INTEGER);
CREATE INDEX visits_patient ON visits(patient_id);";

/// W1's rows in insert order (patients, then visits), as SQL values, from docs/workload.md's
/// recipe; `scale` 1.0 is the full size.
pub fn w1_rows(scale: f64) -> W1Rows {
    w1_rows_seeded(scale, 20_261_123)
}

/// [`w1_rows`] from another seed: rows of the same shape with other keys and values (a tenant of
/// many clinics is many such sets).
pub fn w1_rows_seeded(scale: f64, seed: u64) -> W1Rows {
    use Value as V;
    const CLINICS: [&str; 6] = [
        "Mbeya Central",
        "Moshi Hillside",
        "Gulu Riverside",
        "Iringa Market",
        "Tanga Harbour",
        "Arusha Plains",
    ];
    const VOCAB: [&str; 24] = [
        "fever",
        "cough",
        "malaria",
        "rapid",
        "test",
        "negative",
        "positive",
        "prescribed",
        "paracetamol",
        "amoxicillin",
        "follow",
        "up",
        "weeks",
        "blood",
        "pressure",
        "normal",
        "elevated",
        "child",
        "weight",
        "gain",
        "referred",
        "district",
        "hospital",
        "counselled",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let uuid = |rng: &mut StdRng| {
        let mut b: [u8; 16] = rng.gen();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    let name = |rng: &mut StdRng| {
        const C: &[u8] = b"bdfghjklmnprstvwyz";
        const VW: &[u8] = b"aeiou";
        let n = rng.gen_range(3..=5);
        let mut s = String::new();
        for i in 0..n {
            let c = C[rng.gen_range(0..C.len())] as char;
            s.push(if i == 0 { c.to_ascii_uppercase() } else { c });
            s.push(VW[rng.gen_range(0..VW.len())] as char);
        }
        s
    };
    let n_patients = ((100_000.0 * scale) as usize).max(1);
    let n_visits = (200_000.0 * scale) as usize;
    let patients: Vec<[V; 9]> = (0..n_patients)
        .map(|i| {
            let mut village = name(&mut rng);
            match rng.gen_range(0..3) {
                0 => village.push_str("ni"),
                1 => village.push_str("wa"),
                _ => {}
            }
            [
                V::Text(uuid(&mut rng)),
                V::Text(name(&mut rng)),
                V::Text(name(&mut rng)),
                V::Text(if rng.gen() { "F" } else { "M" }.into()),
                V::Text(format!(
                    "{}-{:02}-{:02}",
                    rng.gen_range(1940..2020),
                    rng.gen_range(1..13),
                    rng.gen_range(1..29)
                )),
                V::Text(village),
                V::Text(format!("+2557{:08}", rng.gen_range(0..100_000_000u32))),
                V::Integer(rng.gen_range(0..20)),
                V::Integer(1_700_000_000_000 + i as i64 * 1000),
            ]
        })
        .collect();
    let visits = (0..n_visits)
        .map(|i| {
            let mut notes = String::new();
            while notes.len() < 55 {
                if !notes.is_empty() {
                    notes.push(' ');
                }
                notes.push_str(VOCAB[rng.gen_range(0..VOCAB.len())]);
            }
            let id = uuid(&mut rng);
            let patient = patients[rng.gen_range(0..n_patients)][0].clone();
            [
                V::Text(id),
                patient,
                V::Text(CLINICS[rng.gen_range(0..CLINICS.len())].into()),
                V::Text(name(&mut rng)),
                V::Text(notes),
                V::Integer(1_700_000_000_000 + i as i64 * 500),
            ]
        })
        .collect();
    (patients, visits)
}

/// A W1 database file (WAL, `synchronous=NORMAL`), with `ext` loaded and the tables tracked.
pub fn w1_db(path: &Path, ext: Option<&Path>) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .unwrap();
    conn.execute_batch(W1_SCHEMA).unwrap();
    if let Some(ext) = ext {
        // SAFETY: loading an Outpost extension built from this workspace.
        unsafe {
            conn.load_extension_enable().unwrap();
            conn.load_extension(ext, Some("sqlite3_outpost_init"))
                .unwrap();
            conn.load_extension_disable().unwrap();
        }
        conn.query_row(
            "SELECT outpost_track('patients'), outpost_track('visits')",
            [],
            |_| Ok(()),
        )
        .unwrap();
    }
    conn
}

/// Inserts the rows in one transaction; seconds.
pub fn insert_w1(conn: &Connection, rows: &W1Rows) -> f64 {
    let t = Instant::now();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut p = tx
            .prepare("INSERT INTO patients VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)")
            .unwrap();
        for r in &rows.0 {
            p.execute(rusqlite::params_from_iter(r.iter())).unwrap();
        }
        let mut v = tx
            .prepare("INSERT INTO visits VALUES (?1,?2,?3,?4,?5,?6)")
            .unwrap();
        for r in &rows.1 {
            v.execute(rusqlite::params_from_iter(r.iter())).unwrap();
        }
    }
    tx.commit().unwrap();
    t.elapsed().as_secs_f64()
}
