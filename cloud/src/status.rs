//! `outpost-cloud status`: the tenant's tables and row counts, the mailbox, enrolled hubs and
//! devices with last seen, API tokens. Read-only; works while `run` is running.

use crate::control::ControlError;
use crate::datadir::{DataDir, DataDirError};
use crate::postgres::PgTenant;
use crate::scope_rules;
use crate::tenant::{Tenant, TenantError, TenantStore};
use outpost_mailbox::{scope_counts, MailboxError, ScopeCount};
use outpost_protocol::hlc::UtcDate;
use outpost_protocol::scope::Scopes;
use outpost_protocol::Hlc;
use outpost_relay::allowlist::AllowlistError;
use serde_json::{json, Value};
use std::fmt;

/// Why `status` could not read one of the stores (it writes nothing).
#[derive(Debug)]
pub enum StatusError {
    /// The tenant database failed.
    Tenant(TenantError),
    /// A store could not be opened.
    DataDir(DataDirError),
    /// Reading the mailbox failed.
    Mailbox(MailboxError),
    /// Reading the allowlist failed.
    Allowlist(AllowlistError),
    /// Reading which enrollment token a peer used failed.
    /// Reading the control file failed.
    Control(ControlError),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Tenant(e) => e.fmt(f),
            StatusError::DataDir(e) => e.fmt(f),
            StatusError::Mailbox(e) => e.fmt(f),
            StatusError::Allowlist(e) => e.fmt(f),
            StatusError::Control(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StatusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: these say what failed themselves.
            StatusError::Tenant(e) => e.source(),
            StatusError::DataDir(e) => e.source(),
            StatusError::Mailbox(e) => e.source(),
            StatusError::Allowlist(e) => e.source(),
            StatusError::Control(e) => e.source(),
        }
    }
}

impl From<TenantError> for StatusError {
    fn from(e: TenantError) -> Self {
        StatusError::Tenant(e)
    }
}

impl From<DataDirError> for StatusError {
    fn from(e: DataDirError) -> Self {
        StatusError::DataDir(e)
    }
}

impl From<MailboxError> for StatusError {
    fn from(e: MailboxError) -> Self {
        StatusError::Mailbox(e)
    }
}

impl From<AllowlistError> for StatusError {
    fn from(e: AllowlistError) -> Self {
        StatusError::Allowlist(e)
    }
}

impl From<ControlError> for StatusError {
    fn from(e: ControlError) -> Self {
        StatusError::Control(e)
    }
}

/// What `status` reads of the tenant, from either store.
struct TenantView {
    db_version: u64,
    /// The store, for its scope rules once the mailbox's directory is read.
    store: Box<dyn TenantStore>,
    tables: Vec<(String, u64)>,
    quarantined: u64,
    refused: usize,
    /// The origin it writes under (the site id, until a restore made it take another).
    origin: String,
    /// The origins it retired, each with what was held of its streams then (JSON).
    retired: Vec<(String, String)>,
    /// Captured writes of retired origins kept aside, not exported.
    kept_aside: u64,
}

/// The SQLite tenant's view.
fn sqlite_view(dir: &DataDir) -> Result<TenantView, TenantError> {
    let tenant = Tenant::open(&dir.tenant_path(), dir.identity.site)?;
    Ok(TenantView {
        db_version: tenant.vector()?.get(&dir.identity.site.into()),
        tables: tenant.tables()?,
        quarantined: tenant.quarantined()?,
        refused: tenant.refused()?.len(),
        origin: dir.identity.site.to_string(),
        retired: Vec::new(),
        kept_aside: 0,
        store: Box::new(tenant),
    })
}

/// The PostgreSQL tenant's view (its own unscoped stream's top is its db version).
fn postgres_view(dir: &DataDir, url: &str) -> Result<TenantView, TenantError> {
    let mut tenant = PgTenant::open(url, dir.identity.site)?;
    let db_version = crate::postgres::outbox::top(tenant.client(), "")
        .map_err(|e| TenantError::Store(Box::new(e)))?;
    Ok(TenantView {
        db_version,
        tables: tenant.tables()?,
        quarantined: tenant.quarantined()?,
        refused: TenantStore::refused(&mut tenant)?.len(),
        origin: tenant.origin().to_string(),
        retired: crate::postgres::new_origin::retired(tenant.client())
            .map_err(|e| TenantError::Store(Box::new(e)))?,
        kept_aside: crate::postgres::new_origin::kept_aside(tenant.client())
            .map_err(|e| TenantError::Store(Box::new(e)))?,
        store: Box::new(tenant),
    })
}

/// Everything `status` shows, as JSON (the human form is rendered from it).
pub fn collect(dir: &DataDir) -> Result<Value, StatusError> {
    let postgres_url = dir.control()?.setting(crate::control::POSTGRES_URL)?;
    let mut tenant = match &postgres_url {
        Some(url) => postgres_view(dir, url)?,
        None => sqlite_view(dir)?,
    };
    let (mailbox, ids, clocks, directions, rules, sealing, behind) = {
        let mut mb = dir.mailbox()?;
        // The cloud's own streams a peer covers further: its store was restored behind them.
        let behind: Vec<Value> = mb
            .behind()?
            .into_iter()
            .map(|b| {
                json!({"stream": b.stream, "peer": b.peer.to_string(), "peer_has": b.peer_has,
                       "held": b.held, "seen_at": b.seen_at})
            })
            .collect();
        let directory = mb.directory()?;
        let directions: serde_json::Map<String, Value> = directory
            .tables()
            .map(|(n, d)| (n.to_string(), json!(d.as_str())))
            .collect();
        let rules = tenant.store.rules(directory)?;
        // A sealed tenant's key epochs per scope (`""`: the unscoped stream); `null` unsealed.
        let sealing = match mb.digest_key()? {
            Some(_) => {
                // By name where the cloud knows it, else by digest.
                let mut epochs = serde_json::Map::new();
                for (scope, epoch) in mb.scope_key_epochs()? {
                    epochs.insert(mb.scope_name(&scope)?, json!(epoch));
                }
                json!({"epochs": epochs, "envelopes": mb.envelopes_held()?})
            }
            None => Value::Null,
        };
        // A sealed tenant's streams are named by digest: shown by name where the cloud knows
        // it, so they meet the grants (by name) in the per-scope counts.
        let mut held = mb.status()?;
        for o in &mut held.origins {
            o.scope = mb.scope_name(&o.scope)?;
        }
        (
            held,
            mb.id_status()?,
            mb.clock_admission()?,
            directions,
            rules,
            sealing,
            behind,
        )
    };
    // Each table's scope rule: the tenant's (`null`: unscoped).
    let tables: Vec<Value> = tenant
        .tables
        .into_iter()
        .map(|(name, rows)| {
            let rule = rules.rule_of(&name).flatten();
            json!({"name": name, "rows": rows, "scope": scope_rules::to_json(rule)})
        })
        .collect();
    // The cloud is the root of every id sequence: its counters are the next numbers it grants.
    let ids: serde_json::Map<String, Value> = ids
        .into_iter()
        .map(|i| {
            (
                i.sequence,
                json!({"next": i.next, "over_quota": i.over_quota}),
            )
        })
        .collect();
    let origins: Vec<Value> = mailbox
        .origins
        .iter()
        .map(|o| {
            json!({
                "origin": o.origin.to_string(), "scope": o.scope, "batches": o.batches,
                "bytes": o.bytes, "covered": o.covered, "highest": o.highest,
                "own": o.origin == dir.identity.site,
            })
        })
        .collect();
    let control = dir.control()?;
    let enrolled = dir.allowlist()?.devices()?;
    // Per scope: the streams held, and the peers enrolled here (hubs and devices, not revoked)
    // that are granted it.
    let grants: Vec<Scopes> = enrolled
        .iter()
        .filter(|d| d.revoked_at.is_none())
        .map(|d| d.grant.scopes.clone())
        .collect();
    let scopes: Vec<ScopeCount> = scope_counts(&mailbox, &grants);
    let peers: Vec<Value> = enrolled
        .into_iter()
        .map(|d| {
            Ok(json!({
                "kind": d.role.as_str(),
                "site": d.site.to_string(),
                "key": d.key.fingerprint(),
                "enrolled_at": d.enrolled_at,
                "last_seen": d.last_seen,
                "revoked_at": d.revoked_at,
                "scopes": d.grant.scopes.names(),
                "enroll": d.grant.enroll,
            }))
        })
        .collect::<Result<_, StatusError>>()?;
    let tokens: Vec<Value> = control
        .api_tokens()?
        .into_iter()
        .map(|t| {
            json!({"name": t.name, "created_at": t.created_at, "last_used": t.last_used,
                   "revoked_at": t.revoked_at, "scopes": t.scopes.names(),
                   "tables": t.tables.map(|r| r.to_string())})
        })
        .collect();
    // Where the tenant lives; never the URL (it may hold the role's password).
    let store = match control.setting(crate::control::POSTGRES_URL)? {
        Some(url) => match crate::postgres::connect::target(&url) {
            Ok(t) => json!({"kind": "postgres", "host": t.host, "port": t.port,
                            "database": t.database, "user": t.user}),
            Err(_) => json!({"kind": "postgres", "error": "the stored URL does not parse"}),
        },
        None => json!({"kind": "sqlite", "path": dir.tenant_path().display().to_string()}),
    };
    Ok(json!({
        "site": dir.identity.site.to_string(),
        "store": store,
        "key": dir.identity.public().fingerprint(),
        "listen": control.setting(crate::control::LAST_LISTEN)?,
        "https": control.setting(crate::control::LAST_HTTPS)?,
        "tenant": {
            "path": dir.tenant_path().display().to_string(),
            "db_version": tenant.db_version,
            "tables": tables,
            "directions": directions,
            "quarantined": tenant.quarantined,
            "refused_batches": tenant.refused,
            "last_apply_error": control.setting(crate::control::LAST_APPLY_ERROR)?,
            "origin": tenant.origin,
            "kept_aside": tenant.kept_aside,
            "retired_origins": tenant.retired.iter().map(|(o, held)| {
                json!({"origin": o, "held": serde_json::from_str::<Value>(held)
                    .unwrap_or(Value::Null)})
            }).collect::<Vec<_>>(),
        },
        "mailbox": {"batches": mailbox.batches, "bytes": mailbox.bytes, "origins": origins,
                    "damaged": mailbox.damaged, "restored_behind": behind},
        "scopes": scopes,
        "sealed": sealing,
        // The time bound (docs/design.md section 10, "Time"): a device's push stamped up to a
        // second past the highest clock held passes whatever the cloud's time says.
        "clocks": {
            "highest_admitted": (clocks.highest_admitted != Hlc::ZERO)
                .then(|| UtcDate(clocks.highest_admitted.millis()).to_string()),
            "clock_ahead_refused": clocks.clock_ahead_refused,
        },
        "ids": ids,
        "peers": peers,
        "api_tokens": tokens,
    }))
}

/// The human form of [`collect`]'s answer.
pub fn render(v: &Value) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("cloud site {}", s(&v["site"])));
    line(format!("key        {}", s(&v["key"])));
    if v["tenant"]["origin"] != v["site"] {
        let retired: Vec<String> = v["tenant"]["retired_origins"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| s(&r["origin"]))
            .collect();
        line(format!(
            "origin     {} (taken after a restore; retired: {})",
            s(&v["tenant"]["origin"]),
            retired.join(", ")
        ));
    }
    if v["tenant"]["kept_aside"].as_u64().is_some_and(|n| n > 0) {
        line(format!(
            "KEPT ASIDE {} back-office writes an earlier build kept aside after a restore are \
             not sent yet (outpost.retired_outbox): the next start of `run` sends them",
            s(&v["tenant"]["kept_aside"])
        ));
    }
    line(format!(
        "listening  protocol {}  https {}",
        s(&v["listen"]),
        s(&v["https"])
    ));
    let st = &v["store"];
    line(if st["kind"] == json!("postgres") {
        format!(
            "store      postgres host {} port {}, database {} as role {}",
            s(&st["host"]),
            s(&st["port"]),
            s(&st["database"]),
            s(&st["user"])
        )
    } else {
        format!("store      sqlite {}", s(&st["path"]))
    });
    let t = &v["tenant"];
    line(format!(
        "tenant     {} (db version {}, {} quarantined)",
        s(&t["path"]),
        s(&t["db_version"]),
        s(&t["quarantined"])
    ));
    let tables = t["tables"].as_array().cloned().unwrap_or_default();
    if tables.is_empty() {
        line("  no tables yet".into());
    }
    for tb in &tables {
        let scope = match &tb["scope"] {
            Value::Null => "unscoped".to_string(),
            Value::String(c) => format!("scope {c}"),
            via => format!("scope via {}", s(&via["via"])),
        };
        line(format!(
            "  table {:<24} {:>8} rows  {scope}",
            s(&tb["name"]),
            s(&tb["rows"])
        ));
    }
    if let Some(d) = t["directions"].as_object().filter(|d| !d.is_empty()) {
        let list: Vec<String> = d.iter().map(|(n, v)| format!("{n} {}", s(v))).collect();
        line(format!("  directions declared: {}", list.join(", ")));
    }
    if t["refused_batches"].as_u64().is_some_and(|n| n > 0) {
        line(format!(
            "  {} batches refused whole (table _cloud_refused_batches has their reasons)",
            s(&t["refused_batches"])
        ));
    }
    for b in v["mailbox"]["restored_behind"]
        .as_array()
        .into_iter()
        .flatten()
    {
        line(format!(
            "  RESTORED BEHIND ITS PEERS: seqs up to {} of the cloud's stream {:?} were exported \
             (seen by {}), the store holds at most {} of them as exported; that stream is not exported \
             until recovered",
            s(&b["peer_has"]),
            s(&b["stream"]),
            s(&b["peer"]),
            s(&b["held"])
        ));
    }
    if !t["last_apply_error"].is_null() {
        line(format!("  LAST APPLY ERROR: {}", s(&t["last_apply_error"])));
    }
    let m = &v["mailbox"];
    line(format!(
        "mailbox    {} batches, {} bytes{}",
        s(&m["batches"]),
        s(&m["bytes"]),
        match m["damaged"].as_u64() {
            Some(n) if n > 0 => format!(", {n} damaged (removed, fetched again)"),
            _ => String::new(),
        }
    ));
    match v["sealed"]["epochs"].as_object() {
        Some(epochs) => {
            let list: Vec<String> = epochs
                .iter()
                .map(|(scope, e)| {
                    let name = if scope.is_empty() {
                        "(unscoped)"
                    } else {
                        scope
                    };
                    format!("{name} {}", s(e))
                })
                .collect();
            line(format!(
                "sealed     key epochs: {}",
                if list.is_empty() {
                    "none made yet".to_string()
                } else {
                    list.join(", ")
                }
            ));
        }
        None => line("sealed     no (batch bodies travel in the clear)".to_string()),
    }
    for c in v["scopes"].as_array().cloned().unwrap_or_default() {
        line(format!(
            "  scope {}  {} batches  {} bytes  {} peers",
            match c["scope"].as_str() {
                Some("") | None => "(unscoped)".to_string(),
                Some(name) => name.to_string(),
            },
            s(&c["batches"]),
            s(&c["bytes"]),
            s(&c["peers"])
        ));
    }
    for o in m["origins"].as_array().cloned().unwrap_or_default() {
        let beyond = o["highest"].as_u64() > o["covered"].as_u64();
        line(format!(
            "  origin {}{}{}  {} batches  {} bytes  covered 1..={}{}",
            s(&o["origin"]),
            match o["scope"].as_str() {
                Some("") | None => String::new(),
                Some(scope) => format!("/{scope}"),
            },
            if o["own"] == json!(true) {
                " (cloud)"
            } else {
                ""
            },
            s(&o["batches"]),
            s(&o["bytes"]),
            s(&o["covered"]),
            if beyond {
                format!("  (held up to {} beyond a gap)", s(&o["highest"]))
            } else {
                String::new()
            }
        ));
    }
    let c = &v["clocks"];
    line(format!(
        "clocks     highest admitted {}  refused ahead {}",
        s(&c["highest_admitted"]),
        s(&c["clock_ahead_refused"])
    ));
    if let Some(ids) = v["ids"].as_object().filter(|m| !m.is_empty()) {
        line("ids        (the root of every sequence)".into());
        for (sequence, i) in ids {
            let over = i["over_quota"].as_u64().unwrap_or(0);
            line(if over > 0 {
                format!("  {sequence}  next {}  over quota {over}", s(&i["next"]))
            } else {
                format!("  {sequence}  next {}", s(&i["next"]))
            });
        }
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    line(format!("peers      {} enrolled", peers.len()));
    for p in &peers {
        line(format!(
            "  {:<7} {}  key {}  enrolled {}  last seen {}{}",
            s(&p["kind"]),
            s(&p["site"]),
            s(&p["key"]),
            s(&p["enrolled_at"]),
            if p["last_seen"].is_null() {
                "never".into()
            } else {
                s(&p["last_seen"])
            },
            if p["revoked_at"].is_null() {
                String::new()
            } else {
                format!("  REVOKED at {}", s(&p["revoked_at"]))
            }
        ));
    }
    let tokens = v["api_tokens"].as_array().cloned().unwrap_or_default();
    line(format!("api tokens {}", tokens.len()));
    for t in &tokens {
        line(format!(
            "  {}  created {}  last used {}{}",
            s(&t["name"]),
            s(&t["created_at"]),
            if t["last_used"].is_null() {
                "never".into()
            } else {
                s(&t["last_used"])
            },
            if t["revoked_at"].is_null() {
                String::new()
            } else {
                format!("  REVOKED at {}", s(&t["revoked_at"]))
            }
        ));
    }
    out
}
