//! W1's rows ([`super::workload`]) inserted by plain PostgreSQL: the floor the PostgreSQL
//! tenant's ingest is compared with, as plain SQLite is the SQLite tenant's.

use super::workload::W1Rows;
use postgres::types::ToSql;
use postgres::Client;
use rusqlite::types::Value;
use std::time::Instant;

/// Rows per `INSERT ... SELECT FROM unnest(...)`: PostgreSQL's fastest client-side insert short
/// of `COPY`, as a back end that loads in bulk writes.
const ROWS_PER_STATEMENT: usize = 10_000;

/// Makes `plain_patients` and `plain_visits` in `client`'s database (W1's columns with the
/// tenant's PostgreSQL types, keys and the visits' patient index; no foreign key, no trigger)
/// and inserts each set of `sets` in one transaction, 10,000 rows per
/// statement. Seconds.
pub fn plain_insert(client: &mut Client, sets: &[&W1Rows]) -> f64 {
    client
        .batch_execute(
            "CREATE TABLE plain_patients(id text PRIMARY KEY, given_name text, family_name text,
               sex text, dob text, village text, phone text, visit_count bigint, updated_at bigint);
             CREATE TABLE plain_visits(id text PRIMARY KEY, patient_id text, clinic text,
               provider text, notes text, created_at bigint);
             CREATE INDEX plain_visits_patient ON plain_visits(patient_id);",
        )
        .expect("making the plain tables");
    let t = Instant::now();
    for rows in sets {
        let mut tx = client.transaction().expect("a transaction");
        insert(&mut tx, "plain_patients", &rows.0, &[7, 8]);
        insert(&mut tx, "plain_visits", &rows.1, &[5]);
        tx.commit().expect("committing the plain rows");
    }
    t.elapsed().as_secs_f64()
}

/// Inserts `rows` into `table`; the columns at `integers` are bigint, the others text.
fn insert<const N: usize>(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    rows: &[[Value; N]],
    integers: &[usize],
) {
    let arrays: Vec<String> = (0..N)
        .map(|i| {
            let ty = if integers.contains(&i) {
                "bigint"
            } else {
                "text"
            };
            format!("${}::{ty}[]", i + 1)
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} SELECT * FROM unnest({})",
        arrays.join(", ")
    );
    let statement = tx.prepare(&sql).expect("preparing the plain insert");
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut texts: Vec<Vec<Option<&str>>> = vec![Vec::new(); N];
        let mut ints: Vec<Vec<Option<i64>>> = vec![Vec::new(); N];
        for row in chunk {
            for (i, v) in row.iter().enumerate() {
                match v {
                    Value::Text(s) => texts[i].push(Some(s)),
                    Value::Integer(n) => ints[i].push(Some(*n)),
                    Value::Null if integers.contains(&i) => ints[i].push(None),
                    Value::Null => texts[i].push(None),
                    other => panic!("W1 holds text and integers only, not {other:?}"),
                }
            }
        }
        let params: Vec<&(dyn ToSql + Sync)> = (0..N)
            .map(|i| {
                if integers.contains(&i) {
                    &ints[i] as &(dyn ToSql + Sync)
                } else {
                    &texts[i] as &(dyn ToSql + Sync)
                }
            })
            .collect();
        tx.execute(&statement, &params)
            .expect("inserting the plain rows");
    }
}
