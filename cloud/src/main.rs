//! `outpost-cloud`: the cloud master's command line. See `docs/cloud.md`.

use anyhow::{bail, Context, Result};
use outpost_cloud::control::TableRights;
use outpost_cloud::control::{LAST_HTTPS, LAST_LISTEN};
use outpost_cloud::datadir::{unix_now, DataDir};
use outpost_cloud::https::{self, TlsFiles};
use outpost_cloud::postgres;
use outpost_cloud::revocation::revoke_relayed;
use outpost_cloud::rotation;
use outpost_cloud::service::Cloud;
use outpost_cloud::status;
use outpost_cloud::tables::{self, Declared};
use outpost_protocol::batch::Direction;
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_relay::allowlist::{AllowlistError, PeerGrant, Role, DEFAULT_TOKEN_TTL_SECS};
use outpost_relay::command::{self, Asked};
use outpost_relay::{certify, enroll};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

/// Applies decode and merge many small values and free them together; glibc's malloc spent a
/// third of the cloud's own CPU ingesting into PostgreSQL on them (docs/performance.md, "The
/// cloud's own CPU ingesting into PostgreSQL").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage:
  outpost-cloud init        --data DIR [--unsealed | --sealed] [--postgres URL]
                            (sealed, the default: batch bodies encrypted per scope, hubs read
                            nothing; --unsealed: hubs print their own codes and hold readable
                            batches; --postgres: the tenant's tables in that PostgreSQL database,
                            postgresql://USER:PASSWORD@HOST:PORT/DATABASE, which `run` then serves)
  outpost-cloud run         --data DIR [--listen ADDR:PORT] [--https ADDR:PORT]
                            [--tls-cert FILE --tls-key FILE] [--postgres URL]
                            [--staging-mib N]   (memory all peers' pushes in progress may
                            hold together, 16 to 4096; 32 by default: two devices' full
                            sessions at once)
  outpost-cloud enroll-code --data DIR --hub|--device [--address HOST:PORT]... [--ttl SECONDS] [--no-qr]
                            [--scopes a,b] [--enroll]
                            [--at-hub ID]   (a sealed tenant's two-part code: the device joins hub
                            ID, reached at --address, even while that hub is offline; a week's
                            --ttl by default)
  outpost-cloud api-token   --data DIR NAME [--scopes a,b] [--tables t1:rw,t2:r]
  outpost-cloud grant       --data DIR (--device ID|--hub ID|--token NAME) --scopes a,b [--enroll]
                            [--tables t1:rw,t2:r]   (replaces the grant; '*' = every scope;
                            ID: 4+ leading hex digits of the site id)
  outpost-cloud revoke      --data DIR DEVICE          (4+ leading hex digits of its site id)
  outpost-cloud revoke      --data DIR --api-token NAME
  outpost-cloud table       --data DIR [TABLE --direction both|up|down]
                            (no TABLE: list the declared directions)
  outpost-cloud status      --data DIR [--json]
Defaults: --listen 0.0.0.0:7430, --https 0.0.0.0:8443. Logs go to stderr (OUTPOST_LOG=debug).";

/// The smallest staging budget `run --staging-mib` takes: one device's full session (a smaller
/// budget would refuse every such push as too large).
const MIN_STAGING_MIB: usize = 16;
/// The largest staging budget `run --staging-mib` takes.
const MAX_STAGING_MIB: usize = 4096;

/// Parsed command-line options (flags may come in any order after the command).
#[derive(Default, Debug)]
struct Args {
    command: String,
    data: Option<PathBuf>,
    listen: Option<String>,
    https: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    addresses: Vec<String>,
    ttl: Option<u64>,
    kind: Option<Role>,
    api_token: Option<String>,
    direction: Option<Direction>,
    scopes: Option<String>,
    enroll: bool,
    tables: Option<String>,
    /// `grant --device ID` / `--hub ID`: whom.
    grantee: Option<String>,
    /// `grant --token NAME`.
    token: Option<String>,
    json: bool,
    no_qr: bool,
    /// `init --sealed` / `--unsealed`.
    sealed: Option<bool>,
    /// `enroll-code --at-hub ID`: a two-part code for that hub.
    at_hub: Option<String>,
    /// `init --postgres URL` / `run --postgres URL`.
    postgres: Option<String>,
    /// `run --staging-mib N`: the staging budget, in MiB.
    staging_mib: Option<usize>,
    positional: Vec<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Asked<Args>> {
    let mut args = Args {
        command: argv.next().context("no command given")?,
        ..Args::default()
    };
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--data" => args.data = Some(PathBuf::from(value("--data")?)),
            "--listen" => args.listen = Some(value("--listen")?),
            "--https" => args.https = Some(value("--https")?),
            "--tls-cert" => args.tls_cert = Some(PathBuf::from(value("--tls-cert")?)),
            "--tls-key" => args.tls_key = Some(PathBuf::from(value("--tls-key")?)),
            "--address" => args.addresses.push(value("--address")?),
            "--ttl" => {
                let v = value("--ttl")?;
                args.ttl = Some(v.parse().with_context(|| format!("--ttl {v:?}: seconds"))?)
            }
            // `grant` names whom: `--device ID`, `--hub ID`.
            "--hub" | "--device" if args.command == "grant" => {
                if args.grantee.is_some() {
                    bail!("grant names one peer: --device ID or --hub ID");
                }
                args.grantee = Some(value(&a)?);
            }
            "--token" => args.token = Some(value("--token")?),
            "--scopes" => args.scopes = Some(value("--scopes")?),
            "--tables" => args.tables = Some(value("--tables")?),
            "--enroll" => args.enroll = true,
            "--hub" | "--device" => {
                let k = if a == "--hub" {
                    Role::Hub
                } else {
                    Role::Device
                };
                if args.kind.is_some_and(|old| old != k) {
                    bail!("give one of --hub or --device");
                }
                args.kind = Some(k);
            }
            "--api-token" => args.api_token = Some(value("--api-token")?),
            "--direction" => {
                let v = value("--direction")?;
                args.direction = Some(
                    Direction::parse(&v)
                        .with_context(|| format!("--direction {v:?}: both, up or down"))?,
                );
            }
            "--json" => args.json = true,
            "--sealed" | "--unsealed" if args.command == "init" => {
                let sealed = a == "--sealed";
                if args.sealed.is_some_and(|old| old != sealed) {
                    bail!("give one of --sealed or --unsealed");
                }
                args.sealed = Some(sealed);
            }
            "--postgres" if matches!(args.command.as_str(), "init" | "run") => {
                args.postgres = Some(value("--postgres")?)
            }
            "--staging-mib" if args.command == "run" => {
                let v = value("--staging-mib")?;
                args.staging_mib = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (MIN_STAGING_MIB..=MAX_STAGING_MIB).contains(n))
                        .with_context(|| {
                            format!(
                                "--staging-mib {v:?}: a number of MiB from {MIN_STAGING_MIB} \
                                 (a device's session pushes up to 16 MiB) to {MAX_STAGING_MIB}"
                            )
                        })?,
                );
            }
            "--no-qr" => args.no_qr = true,
            "--at-hub" if args.command == "enroll-code" => args.at_hub = Some(value("--at-hub")?),
            "-h" | "--help" => return Ok(Asked::Help),
            s if s.starts_with('-') => bail!("unknown option {s}"),
            _ => args.positional.push(a),
        }
    }
    Ok(Asked::Run(args))
}

fn data_path(args: &Args) -> Result<&PathBuf> {
    args.data.as_ref().context("--data DIR is required")
}

fn main() {
    command::main("outpost-cloud", USAGE, parse, |args| {
        match args.command.as_str() {
            "init" => init(&args),
            "run" => run(&args),
            "enroll-code" => enroll_code(&args),
            "api-token" => api_token(&args),
            "revoke" => revoke(&args),
            "table" => table(&args),
            "grant" => grant(&args),
            "status" => status(&args),
            other => bail!("unknown command {other:?}"),
        }
    });
}

fn init(args: &Args) -> Result<()> {
    let path = data_path(args)?;
    // A new tenant in PostgreSQL keeps its mailbox and allowlist there: no files for them.
    let (dir, created) = match (&args.postgres, path.join("mailbox.db").exists()) {
        (Some(_), false) => DataDir::init_identity(path)?,
        _ => DataDir::init(path)?,
    };
    println!(
        "{} cloud data directory {}",
        if created {
            "initialized"
        } else {
            "already initialized:"
        },
        dir.path.display()
    );
    println!("site {}", dir.identity.site);
    println!("key  {}", dir.identity.public().fingerprint());
    let on_postgres = match &args.postgres {
        Some(url) => {
            let done = postgres::setup::init(&dir, url)?;
            println!(
                "tenant database postgres {} ({})",
                done.target,
                match done.prepared {
                    postgres::Prepared::Created => "schema outpost prepared",
                    postgres::Prepared::Existing => "already this tenant's",
                }
            );
            true
        }
        None => match postgres::setup::store(&dir)? {
            postgres::Store::Postgres { target } => {
                if let Some(target) = target {
                    println!("tenant database postgres {target}");
                }
                true
            }
            postgres::Store::Sqlite { .. } => {
                println!("tenant database {}", dir.tenant_path().display());
                false
            }
        },
    };
    let mut mailbox = dir.mailbox()?;
    if on_postgres && !mailbox.directory()?.is_strict() {
        // PostgreSQL's columns take only values of their type (docs/design.md section 11):
        // devices refuse at write time what the cloud could not store, from their enrolment on.
        mailbox.append_control(&outpost_protocol::control::ControlItem::Strict)?;
    }
    let held = mailbox.digest_key()?.is_some();
    // A new tenant is sealed unless `--unsealed`; an existing one stays what it is.
    let sealed = match args.sealed.unwrap_or(created || held) {
        true => {
            if !created && !held {
                bail!(
                    "{} holds an unsealed tenant: a tenant is sealed when it is made, not later",
                    dir.path.display()
                );
            }
            if mailbox.seal_tenant()? {
                // Every peer learns it from the control stream, a device from its enrolment on,
                // before it ever pushes.
                mailbox.append_control(&outpost_protocol::control::ControlItem::Sealed)?;
            }
            true
        }
        false if !created && held => bail!(
            "{} holds a sealed tenant: it stays sealed",
            dir.path.display()
        ),
        false => false,
    };
    println!(
        "tenant {}",
        if sealed {
            "sealed (batch bodies encrypted per scope)"
        } else {
            "unsealed"
        }
    );
    Ok(())
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("{flag} {value:?}: ADDR:PORT expected, e.g. 0.0.0.0:8443"))
}

fn run(args: &Args) -> Result<()> {
    let dir = DataDir::open(data_path(args)?)?;
    let url = args
        .postgres
        .clone()
        .or_else(|| std::env::var("OUTPOST_POSTGRES_URL").ok())
        .filter(|u| !u.is_empty());
    let postgres = postgres::setup::serving_url(&dir, url.as_deref())?;
    let https_addr = parse_addr("--https", args.https.as_deref().unwrap_or("0.0.0.0:8443"))?;
    let listen_addr = parse_addr("--listen", args.listen.as_deref().unwrap_or("0.0.0.0:7430"))?;
    let files = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None) => {
            let files = TlsFiles::in_data_dir(&dir.path);
            if https::ensure_self_signed(&files)? {
                log::info!(
                    "made a self-signed certificate {} (replace it, or pass --tls-cert/--tls-key, for public use)",
                    files.cert.display()
                );
            }
            files
        }
        _ => bail!("give both --tls-cert and --tls-key, or neither"),
    };
    let tls = https::server_config(&files)?;
    let cert_fp = https::fingerprint(&files.cert)?;
    let https_listener =
        TcpListener::bind(https_addr).with_context(|| format!("listening on {https_addr}"))?;
    let session_listener =
        TcpListener::bind(listen_addr).with_context(|| format!("listening on {listen_addr}"))?;
    let https_bound = https_listener.local_addr()?;
    let session_bound = session_listener.local_addr()?;
    {
        // Data directories made before control streams: the cloud's entries for every peer it
        // admitted (the relay writes each new peer's as its handshake completes).
        let mut mailbox = dir.mailbox()?;
        let written = certify::certify_admitted(&mut mailbox, &dir.allowlist()?, PeerRole::Cloud)?;
        if written > 0 {
            log::info!("control: certified {written} admitted peers");
        }
    }
    let cloud = Cloud::open(dir, postgres.as_deref())?;
    {
        let control = cloud.dir.control()?;
        control.set_setting(LAST_HTTPS, Some(&https_bound.to_string()))?;
        control.set_setting(LAST_LISTEN, Some(&session_bound.to_string()))?;
    }
    cloud.sync().context("first sync round")?;
    cloud.spawn_sync_loop(Duration::from_millis(500))?;
    let staging = args
        .staging_mib
        .map_or(outpost_relay::staging::DEFAULT_STAGING_BUDGET, |mib| {
            mib << 20
        });
    outpost_cloud::sessions::spawn(session_listener, cloud.clone(), staging)?;
    log::info!(
        "cloud site={} https={https_bound} protocol={session_bound} cert-sha256={cert_fp}",
        cloud.dir.identity.site
    );
    // Machine-readable lines for scripts and tests: the bound addresses (ports may be 0 = any).
    // Best effort: a closed stdout must not stop a running server.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "https {https_bound}")
        .and_then(|()| writeln!(out, "protocol {session_bound}"))
        .and_then(|()| writeln!(out, "cert-sha256 {cert_fp}"))
        .and_then(|()| out.flush());
    drop(out);
    let cloud_in = cloud.clone();
    std::thread::Builder::new()
        .name("https".into())
        .spawn(move || https::serve(https_listener, tls, cloud_in))?
        .join()
        .map_err(|_| anyhow::anyhow!("the HTTPS server panicked"))?
        .context("the HTTPS server stopped")?;
    Ok(())
}

fn enrollment_addresses(args: &Args, dir: &DataDir) -> Result<Vec<String>> {
    if !args.addresses.is_empty() {
        enroll::check_addresses(&args.addresses)?;
        return Ok(args.addresses.clone());
    }
    let last = dir.control()?.setting(LAST_LISTEN)?.with_context(|| {
        format!(
            "no address known for the cloud in {}: pass --address HOST:PORT (the name hubs and devices reach it by)",
            dir.path.display()
        )
    })?;
    let addr: SocketAddr = last
        .parse()
        .with_context(|| format!("stored address {last:?} is not ADDR:PORT"))?;
    if addr.ip().is_unspecified() {
        bail!("the cloud listens on {addr} (every interface); pass --address HOST:PORT with the name hubs and devices reach it by");
    }
    Ok(vec![addr.to_string()])
}

fn enroll_code(args: &Args) -> Result<()> {
    let kind = args
        .kind
        .context("say what enrolls: --hub or --device is required")?;
    let dir = DataDir::open(data_path(args)?)?;
    if let Some(hub) = &args.at_hub {
        return offline_code(args, &dir, kind, hub);
    }
    let addresses = enrollment_addresses(args, &dir)?;
    let issued = enroll::issue(
        &mut dir.allowlist()?,
        &dir.identity,
        addresses,
        unix_now(),
        args.ttl.unwrap_or(DEFAULT_TOKEN_TTL_SECS),
        &enroll::Admitting {
            role: kind,
            grant: peer_grant(args)?,
        },
        None,
    )?;
    log::info!(
        "data={} issued a one-time {} enrollment code, expires at unix {}",
        dir.path.display(),
        kind.as_str(),
        issued.token.expires_at
    );
    print!(
        "{}",
        enroll::printable(&issued.code, !args.no_qr).context("rendering the QR code")?
    );
    Ok(())
}

/// `enroll-code --device --at-hub ID`: a sealed tenant's two-part code (`offline_code.rs`).
fn offline_code(args: &Args, dir: &DataDir, kind: Role, hub: &str) -> Result<()> {
    if kind != Role::Device {
        bail!("--at-hub makes a device's code: a hub enrolls with the cloud itself (--hub, no --at-hub)");
    }
    if args.enroll {
        // The hub states the device's first grant, within its own, which has no `enroll`.
        bail!(
            "--enroll with --at-hub: a hub passes on only what its own grant holds; once the \
             device joined, make it a supervisor with: outpost-cloud grant --device ID --scopes \
             a,b --enroll"
        );
    }
    enroll::check_addresses(&args.addresses)?;
    let hub = dir.allowlist()?.find(hub).context("--at-hub")?;
    let grant = peer_grant(args)?;
    let mut mailbox = dir.mailbox()?;
    let code = outpost_cloud::offline_code::mint(
        &mut mailbox,
        dir.identity.site,
        dir.identity.keypair(),
        &outpost_cloud::offline_code::Offline {
            hub: &hub,
            addresses: args.addresses.clone(),
            scopes: &grant.scopes,
            enroll: grant.enroll,
            expires_at: unix_now()
                + args
                    .ttl
                    .unwrap_or(outpost_cloud::offline_code::DEFAULT_TTL_SECS),
        },
    )?;
    log::info!(
        "data={} minted a two-part device code for hub {}, expires at unix {}",
        dir.path.display(),
        hub.site,
        code.admission().expires_at
    );
    print!(
        "{}",
        enroll::printable(&code.encode(), !args.no_qr).context("rendering the QR code")?
    );
    Ok(())
}

fn api_token(args: &Args) -> Result<()> {
    let [name] = args.positional.as_slice() else {
        bail!("api-token takes one NAME (e.g. the app or client it is for)");
    };
    let dir = DataDir::open(data_path(args)?)?;
    let mut control = dir.control()?;
    let (scopes, tables) = token_grant(args)?;
    let token = control.issue_api_token(name, unix_now())?;
    if args.scopes.is_some() || tables.is_some() {
        control.set_token_grant(name, &scopes, tables.as_ref())?;
    }
    log::info!(
        "data={} issued api token {name:?} scopes={scopes}",
        dir.path.display()
    );
    println!("{token}");
    Ok(())
}

/// `--scopes` (every scope when absent) and `--enroll`, for a code or a peer.
fn peer_grant(args: &Args) -> Result<PeerGrant> {
    let scopes = match &args.scopes {
        Some(s) => Scopes::parse(s.split(',')).context("--scopes")?,
        None => Scopes::All,
    };
    Ok(PeerGrant {
        scopes,
        enroll: args.enroll,
    })
}

/// `--scopes` and `--tables`, for a REST token.
fn token_grant(args: &Args) -> Result<(Scopes, Option<TableRights>)> {
    if args.enroll {
        bail!("--enroll is for devices and hubs: a REST token mints no codes");
    }
    let tables = args.tables.as_deref().map(TableRights::parse).transpose()?;
    Ok((peer_grant(args)?.scopes, tables))
}

fn grant(args: &Args) -> Result<()> {
    let dir = DataDir::open(data_path(args)?)?;
    if args.scopes.is_none() {
        bail!("grant needs --scopes a,b ('*' for every scope): the grant it replaces");
    }
    match (&args.grantee, &args.token) {
        (Some(_), Some(_)) | (None, None) => {
            bail!("grant names one grantee: --device ID, --hub ID or --token NAME")
        }
        (None, Some(name)) => {
            let (scopes, tables) = token_grant(args)?;
            dir.control()?
                .set_token_grant(name, &scopes, tables.as_ref())?;
            log::info!(
                "data={} granted api token {name:?} scopes={scopes}",
                dir.path.display()
            );
            println!("granted api token {name}: {scopes}");
            Ok(())
        }
        (Some(selector), None) => {
            if args.tables.is_some() {
                bail!("--tables is for REST tokens (--token NAME)");
            }
            let grant = peer_grant(args)?;
            // The grant goes into the tenant's control stream, with a version above the
            // peer's last: hubs and devices learn it at their next sync.
            let mut mailbox = dir.mailbox()?;
            let site = match dir.allowlist()?.set_grant(selector, &grant) {
                Ok(d) => d.site,
                // Not enrolled here: a device enrolled at a hub, known from the key directory.
                Err(AllowlistError::NoSuchDevice { .. }) => {
                    outpost_cloud::revocation::find_relayed(&mut mailbox, selector)?.0
                }
                Err(e) => return Err(e.into()),
            };
            let before = mailbox
                .directory()?
                .grant_of(&site)
                .map_or(Scopes::All, |g| g.scopes.clone());
            let seq = mailbox.grant_scopes(site, &grant.scopes, grant.enroll)?;
            // A sealed tenant's removed scopes start new key epochs: the grantee keeps what
            // it could read, and reads nothing written from now on there.
            if seq.is_some() {
                // `before` is as the control stream states it: by digest in a sealed tenant.
                let after = mailbox.wire_scopes(&grant.scopes)?;
                if let Some(gone) = rotation::removed(&mailbox, &before, &after)? {
                    for (scope, epoch) in rotation::rotate(&mut mailbox, &gone, false)? {
                        println!("scope {}: key epoch {epoch}", mailbox.scope_name(&scope)?);
                    }
                }
            }
            let version = mailbox
                .directory()?
                .grant_of(&site)
                .map_or(0, |g| g.version);
            log::info!(
                "data={} granted {site} scopes={} enroll={} (version {version})",
                dir.path.display(),
                grant.scopes,
                grant.enroll
            );
            println!(
                "granted {site}: {}{} (version {version}{})",
                grant.scopes,
                if grant.enroll { ", may enroll" } else { "" },
                if seq.is_none() { ", unchanged" } else { "" }
            );
            Ok(())
        }
    }
}

fn revoke(args: &Args) -> Result<()> {
    let dir = DataDir::open(data_path(args)?)?;
    if let Some(name) = &args.api_token {
        if !args.positional.is_empty() {
            bail!("revoke takes either DEVICE or --api-token NAME");
        }
        dir.control()?.revoke_api_token(name, unix_now())?;
        log::info!("data={} revoked api token {name:?}", dir.path.display());
        println!("revoked api token {name}");
        return Ok(());
    }
    let [selector] = args.positional.as_slice() else {
        bail!("revoke takes one DEVICE (leading hex digits of its site id) or --api-token NAME");
    };
    // The revocation goes into the tenant's control stream: every replica marks the key, and
    // every hub revokes the device in its own allowlist.
    let mut mailbox = dir.mailbox()?;
    let (site, key) = match dir.allowlist()?.revoke(selector, unix_now()) {
        Ok(d) => {
            certify::certify_device(&mut mailbox, &d, PeerRole::Cloud)?;
            (d.site, d.key)
        }
        // Not enrolled here: a device enrolled at a hub, known from the key directory.
        Err(AllowlistError::NoSuchDevice { .. }) => revoke_relayed(&mut mailbox, selector)?,
        Err(e) => return Err(e.into()),
    };
    log::info!("data={} revoked peer site={site}", dir.path.display());
    println!("revoked {site} (key {})", key.fingerprint());
    // A sealed tenant's scopes the device could read start new key epochs, which it never
    // receives (a hub holds no key: nothing to rotate for one).
    let directory = mailbox.directory()?;
    let is_device = directory
        .binding(&site)
        .is_some_and(|b| b.role == PeerRole::Device);
    let readable = directory
        .grant_of(&site)
        .map_or(Scopes::All, |g| g.scopes.clone());
    if is_device {
        for (scope, epoch) in rotation::rotate(&mut mailbox, &readable, true)? {
            println!("scope {:?}: key epoch {epoch}", mailbox.scope_name(&scope)?);
        }
    }
    Ok(())
}

fn table(args: &Args) -> Result<()> {
    let dir = DataDir::open(data_path(args)?)?;
    let mut mailbox = dir.mailbox()?;
    match (args.positional.as_slice(), args.direction) {
        ([], None) => {
            let declared = tables::declared(&mut mailbox)?;
            if declared.is_empty() {
                println!("no table directions declared: every table travels both ways");
            }
            for (name, direction) in declared {
                println!("{name} {direction}");
            }
            Ok(())
        }
        ([name], Some(direction)) => {
            // The declaration goes into the tenant's control stream: hubs and devices learn it
            // before anything else at their next sync.
            match tables::declare(&mut mailbox, &dir.tenant_path(), name, direction)? {
                Declared::Entry(seq) => {
                    log::info!(
                        "data={} table {name:?} declared {direction} (control entry {seq})",
                        dir.path.display()
                    );
                    println!("table {name} {direction} (control entry {seq})");
                }
                Declared::Unchanged => println!("table {name} {direction} (unchanged)"),
            }
            Ok(())
        }
        ([_], None) => bail!("table TABLE needs --direction both|up|down"),
        _ => bail!("table takes one TABLE and --direction, or nothing to list"),
    }
}

fn status(args: &Args) -> Result<()> {
    let dir = DataDir::open(data_path(args)?)?;
    let v = status::collect(&dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", status::render(&v));
    }
    Ok(())
}
