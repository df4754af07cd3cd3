//! `outpost status`: `outpost_status()` as JSON, or as lines for a person.

use anyhow::Result;
use rusqlite::Connection;
use serde_json::Value as Json;

/// The status JSON of the database.
pub fn read(conn: &Connection) -> Result<Json> {
    let text: String = conn.query_row("SELECT outpost_status()", [], |r| r.get(0))?;
    Ok(serde_json::from_str(&text)?)
}

fn ago(now: i64, at: Option<i64>) -> String {
    let Some(at) = at else {
        return "never".into();
    };
    let d = (now - at).max(0);
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86399 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

/// The lines a person reads.
pub fn describe(s: &Json) -> String {
    let now = s["now"].as_i64().unwrap_or(0);
    let mut out = format!("site {}\n", s["site"].as_str().unwrap_or("?"));
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        out.push_str("peers: none (not enrolled: run SELECT outpost_enroll('outpost:...') with a code from the hub)\n");
    } else {
        out.push_str("peers:\n");
    }
    for p in &peers {
        let site = p["site"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "  {} {} {}: last sync {}",
            p["role"].as_str().unwrap_or("?"),
            &site[..site.len().min(12)],
            p["addresses"],
            ago(now, p["last_sync_at"].as_i64()),
        ));
        if let (Some(e), at) = (p["last_error"].as_str(), p["last_error_at"].as_i64()) {
            out.push_str(&format!("; last error {}: {e}", ago(now, at)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "last sync: {}\npending local changes: {}\nconflicts waiting for a person: {}\nquarantined changes waiting for a person: {}\n",
        ago(now, s["last_sync_at"].as_i64()),
        s["pending_changes"],
        s["conflicts"],
        s["quarantined"],
    ));
    if let Some(ids) = s["ids"].as_object().filter(|m| !m.is_empty()) {
        out.push_str("ids (outpost_next_id):\n");
        for (sequence, i) in ids {
            let remaining = i["remaining"].as_u64().unwrap_or(0);
            let pending = i["pending"].as_u64().unwrap_or(0);
            out.push_str(&format!("  {sequence}: {remaining} left"));
            if pending > 0 {
                out.push_str(&format!(", {pending} reserved for the next sync"));
            }
            if remaining == 0 {
                out.push_str(" (NONE LEFT: outpost_next_id fails until a sync grants more)");
            }
            out.push('\n');
        }
    }
    match s["last_error"].as_object() {
        None => out.push_str("last error: none\n"),
        Some(e) => out.push_str(&format!(
            "last error ({}{}): {}\n",
            ago(now, e.get("at").and_then(Json::as_i64)),
            if e.get("since_last_sync").and_then(Json::as_bool) == Some(true) {
                ", not synced since"
            } else {
                ", synced since"
            },
            e.get("message").and_then(Json::as_str).unwrap_or("?")
        )),
    }
    out
}
