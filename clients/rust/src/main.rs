//! Two devices through a hub from Rust with rusqlite: device A tracks a table, enrolls, writes
//! and syncs; device B enrolls and syncs, and must see A's rows.
//!
//! usage: outpost-client-rust EXTENSION DB_A DB_B CODE_A CODE_B

use rusqlite::Connection;
use std::process::ExitCode;

fn open_device(ext: &str, path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // SAFETY: loading a trusted extension (the one this program was given) by its entry point.
    unsafe {
        conn.load_extension_enable()?;
        conn.load_extension(ext, Some("sqlite3_outpost_init"))?;
        conn.load_extension_disable()?;
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS visits(
           id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), patient TEXT NOT NULL, note TEXT);",
    )?;
    conn.query_row("SELECT outpost_track('visits')", [], |_| Ok(()))?;
    Ok(conn)
}

fn one(conn: &Connection, sql: &str, arg: Option<&str>) -> rusqlite::Result<String> {
    match arg {
        Some(a) => conn.query_row(sql, [a], |r| r.get(0)),
        None => conn.query_row(sql, [], |r| r.get(0)),
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ext, db_a, db_b, code_a, code_b] = args.as_slice() else {
        return Err("usage: outpost-client-rust EXTENSION DB_A DB_B CODE_A CODE_B".into());
    };
    let mut a = open_device(ext, db_a)?;
    println!(
        "A enrolled: {}",
        one(&a, "SELECT outpost_enroll(?1)", Some(code_a))?
    );
    let tx = a.transaction()?;
    for (p, n) in [
        ("amina", "fever"),
        ("bruno", "follow-up"),
        ("chen", "vaccination"),
    ] {
        tx.execute("INSERT INTO visits(patient, note) VALUES (?1, ?2)", [p, n])?;
    }
    tx.commit()?;
    // outpost_sync must run outside a transaction.
    println!("A synced: {}", one(&a, "SELECT outpost_sync()", None)?);
    let status: serde_json::Value =
        serde_json::from_str(&one(&a, "SELECT outpost_status()", None)?)?;
    if status["pending_changes"] != 0 {
        return Err(format!("A still has pending changes: {status}").into());
    }
    let b = open_device(ext, db_b)?;
    one(&b, "SELECT outpost_enroll(?1)", Some(code_b))?;
    println!("B synced: {}", one(&b, "SELECT outpost_sync()", None)?);
    let rows: Vec<String> = b
        .prepare("SELECT patient FROM visits ORDER BY patient")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if rows != ["amina", "bruno", "chen"] {
        return Err(format!("device B sees {rows:?}").into());
    }
    println!("ok: device B sees {}", rows.join(","));
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
