//! The clinic table most end-to-end scenarios sync: `patients(id, name, village, visits)`, the
//! visit count a counter column, so that increments from several devices must add up once; and
//! the scoped pair of patients and their visits that scope scenarios move between clinics.

use rusqlite::Connection;

/// Creates and tracks the table (idempotent).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, village TEXT, visits INTEGER NOT NULL DEFAULT 0);
SELECT outpost_track('patients', '{\"columns\": {\"visits\": \"counter\"}}');";

/// The scoped pair (DESIGN section 10): `patients` scoped by its `clinic` column, `visits`
/// following their patient (`via` `patient_id`), so a patient moved to another clinic takes
/// its visits along (idempotent).
pub const SCOPED_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY NOT NULL, name TEXT, clinic TEXT);
CREATE TABLE IF NOT EXISTS visits(id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT REFERENCES patients(id), note TEXT);
SELECT outpost_track('patients', '{\"scope\": \"clinic\"}');
SELECT outpost_track('visits', '{\"scope\": {\"via\": \"patient_id\"}}');";

/// Every row as `id|name|village|visits`, by id: what must be identical on converged replicas.
pub fn rows(c: &Connection) -> Vec<String> {
    let mut s = c
        .prepare("SELECT id, name, village, visits FROM patients ORDER BY id")
        .expect("a patients table");
    s.query_map([], |r| {
        Ok(format!(
            "{}|{}|{}|{}",
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            r.get::<_, i64>(3)?
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// Writes `n` rows `{tag}0..` (name `n{tag}{i}`, village `v{tag}`) and one visit to `{tag}0`, in
/// one transaction.
pub fn write(c: &Connection, tag: &str, n: usize) {
    let mut sql = String::from("BEGIN;");
    for i in 0..n {
        sql.push_str(&format!(
            "INSERT INTO patients(id, name, village) VALUES ('{tag}{i}', 'n{tag}{i}', 'v{tag}');"
        ));
    }
    sql.push_str(&format!(
        "UPDATE patients SET visits = visits + 1 WHERE id = '{tag}0'; COMMIT;"
    ));
    c.execute_batch(&sql).expect("writing patients");
}
