//! `outpost-hub`: the clinic hub's command line. See `docs/hub.md`.

use anyhow::{bail, Context, Result};
use outpost_hub::allowlist::{Allowlist, AllowlistError, Device, DEFAULT_TOKEN_TTL_SECS};
use outpost_hub::datadir::{unix_now, DataDir, LAST_NET};
use outpost_hub::enroll::{render_qr, EnrollCode};
use outpost_hub::identity::fingerprint;
use outpost_hub::relay::{serve_stream, Hub, Relay};
use outpost_hub::server::{serve, watch_revocations, Conn, Limits as ServerLimits, LiveSessions};
use outpost_hub::{interfaces, logging};
use outpost_protocol::channel::Limits as ChannelLimits;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
usage:
  outpost-hub run         --data DIR --net std:ADDR:PORT
  outpost-hub enroll-code --data DIR [--address HOST:PORT]... [--ttl SECONDS] [--no-qr]
  outpost-hub devices     --data DIR [--json]
  outpost-hub revoke      --data DIR DEVICE     (DEVICE: 4 or more leading hex digits of its site id)
  outpost-hub status      --data DIR [--json]
Logs go to stderr; set OUTPOST_LOG=debug for more.";

/// Parsed command-line options (flags may come in any order after the command).
#[derive(Default, Debug)]
struct Args {
    command: String,
    data: Option<PathBuf>,
    net: Option<String>,
    addresses: Vec<String>,
    ttl: Option<u64>,
    json: bool,
    no_qr: bool,
    positional: Vec<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args> {
    let mut args = Args {
        command: argv.next().context("no command given")?,
        ..Args::default()
    };
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--data" => args.data = Some(PathBuf::from(value("--data")?)),
            "--net" => args.net = Some(value("--net")?),
            "--address" => args.addresses.push(value("--address")?),
            "--ttl" => {
                let v = value("--ttl")?;
                args.ttl = Some(v.parse().with_context(|| format!("--ttl {v:?}: seconds"))?)
            }
            "--json" => args.json = true,
            "--no-qr" => args.no_qr = true,
            "-h" | "--help" => bail!("help"),
            s if s.starts_with('-') => bail!("unknown option {s}"),
            _ => args.positional.push(a),
        }
    }
    Ok(args)
}

fn data_dir(args: &Args) -> Result<DataDir> {
    let path = args.data.as_ref().context("--data DIR is required")?;
    DataDir::open(path)
}

fn main() {
    logging::init();
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().is_none() || matches!(argv.peek().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return;
    }
    let result = parse(argv).and_then(|args| match args.command.as_str() {
        "run" => run(&args),
        "enroll-code" => enroll_code(&args),
        "devices" => devices(&args),
        "revoke" => revoke(&args),
        "status" => status(&args),
        other => bail!("unknown command {other:?}"),
    });
    if let Err(e) = result {
        if e.to_string() == "help" {
            println!("{USAGE}");
            return;
        }
        eprintln!("outpost-hub: {e:#}");
        if e.to_string().starts_with("unknown") || e.to_string().contains("required") {
            eprintln!("{USAGE}");
        }
        std::process::exit(1);
    }
}

/// `std:ADDR:PORT` → a socket address.
fn parse_net(net: &str) -> Result<SocketAddr> {
    let addr = net
        .strip_prefix("std:")
        .with_context(|| format!("--net {net:?}: only std:ADDR:PORT is supported by this build"))?;
    addr.parse()
        .with_context(|| format!("--net {net:?}: ADDR:PORT expected, e.g. std:0.0.0.0:7420"))
}

fn run(args: &Args) -> Result<()> {
    let net = args
        .net
        .as_deref()
        .context("--net std:ADDR:PORT is required")?;
    let addr = parse_net(net)?;
    let dir = data_dir(args)?;
    let allowlist_path = dir.path.join("allowlist.db");
    let site = dir.identity.site;
    let key = fingerprint(&dir.identity.public);
    let hub = Hub::new(dir, ChannelLimits::default())?;
    let listener =
        TcpListener::bind(addr).with_context(|| format!("listening on {addr} (--net {net})"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    hub.dir()
        .allowlist()?
        .set_setting(LAST_NET, &bound.to_string())?;
    let live = Arc::new(LiveSessions::default());
    let watcher = Allowlist::open(&allowlist_path)?;
    watch_revocations(
        live.clone(),
        Duration::from_secs(1),
        move |k| match watcher.authorize(k) {
            Ok(_) => true,
            Err(AllowlistError::Revoked | AllowlistError::NotEnrolled) => false,
            Err(e) => {
                log::warn!("revocation check: {e}");
                true
            }
        },
    )
    .context("starting the revocation watcher")?;
    log::info!("hub site={site} key={key} listening on {bound}");
    let handler = move |conn: &mut Conn| -> Result<()> {
        let mut relay = Relay::new(hub.clone())?;
        serve_stream(&mut relay, conn)
    };
    serve(listener, ServerLimits::default(), live, Arc::new(handler))
        .with_context(|| format!("serving on {bound}"))
}

/// The addresses to put in an enrollment code: `--address` values, else the last `run`'s
/// address (with this machine's non-loopback addresses when it listened on all interfaces).
fn enrollment_addresses(args: &Args, dir: &DataDir) -> Result<Vec<String>> {
    if !args.addresses.is_empty() {
        for a in &args.addresses {
            if a.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                bail!("--address {a:?}: HOST:PORT expected");
            }
        }
        return Ok(args.addresses.clone());
    }
    let last = dir.allowlist()?.setting(LAST_NET)?.with_context(|| {
        format!(
            "no address known for the hub in {}: run it once (outpost-hub run) or pass --address HOST:PORT",
            dir.path.display()
        )
    })?;
    let addr: SocketAddr = last
        .parse()
        .with_context(|| format!("stored address {last:?} is not ADDR:PORT"))?;
    if !addr.ip().is_unspecified() {
        return Ok(vec![addr.to_string()]);
    }
    let list: Vec<String> = interfaces::non_loopback_addresses()
        .into_iter()
        .map(|ip| SocketAddr::new(ip, addr.port()).to_string())
        .collect();
    if list.is_empty() {
        bail!(
            "the hub listens on {addr} but this machine has no non-loopback address; pass --address HOST:PORT"
        );
    }
    Ok(list)
}

fn enroll_code(args: &Args) -> Result<()> {
    let dir = data_dir(args)?;
    let addresses = enrollment_addresses(args, &dir)?;
    let token = dir
        .allowlist()?
        .issue_token(unix_now(), args.ttl.unwrap_or(DEFAULT_TOKEN_TTL_SECS))?;
    let code = EnrollCode {
        hub_key: dir.identity.public.to_vec(),
        hub_site: dir.identity.site,
        addresses,
        token: token.secret,
        expires_at: token.expires_at,
    }
    .encode();
    log::info!(
        "data={} issued a one-time enrollment code, expires at unix {}",
        dir.path.display(),
        token.expires_at
    );
    println!("{code}");
    if !args.no_qr {
        println!();
        print!("{}", render_qr(&code).context("rendering the QR code")?);
        println!();
    }
    Ok(())
}

fn device_json(d: &Device) -> serde_json::Value {
    serde_json::json!({
        "site": d.site.to_string(),
        "key": fingerprint(&d.key),
        "enrolled_at": d.enrolled_at,
        "last_seen": d.last_seen,
        "revoked_at": d.revoked_at,
    })
}

fn devices(args: &Args) -> Result<()> {
    let dir = data_dir(args)?;
    let list = dir.allowlist()?.devices()?;
    if args.json {
        let v: Vec<_> = list.iter().map(device_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no devices enrolled");
    }
    for d in &list {
        println!(
            "{}  key {}  enrolled {}  last seen {}  {}",
            d.site,
            fingerprint(&d.key),
            d.enrolled_at,
            d.last_seen.map_or("never".into(), |t| t.to_string()),
            d.revoked_at
                .map_or("active".into(), |t| format!("REVOKED at {t}")),
        );
    }
    Ok(())
}

fn revoke(args: &Args) -> Result<()> {
    let [selector] = args.positional.as_slice() else {
        bail!("revoke takes one DEVICE (leading hex digits of its site id)");
    };
    let dir = data_dir(args)?;
    let d = dir.allowlist()?.revoke(selector, unix_now())?;
    log::info!("data={} revoked device site={}", dir.path.display(), d.site);
    println!("revoked {} (key {})", d.site, fingerprint(&d.key));
    Ok(())
}

fn status(args: &Args) -> Result<()> {
    let dir = data_dir(args)?;
    let mailbox = dir.mailbox()?.status()?;
    let allowlist = dir.allowlist()?;
    let devices = allowlist.devices()?;
    let active = devices.iter().filter(|d| d.revoked_at.is_none()).count();
    let last_net = allowlist.setting(LAST_NET)?;
    if args.json {
        let origins: Vec<_> = mailbox
            .origins
            .iter()
            .map(|o| {
                serde_json::json!({
                    "origin": o.origin.to_string(), "batches": o.batches, "bytes": o.bytes,
                    "covered": o.covered, "highest": o.highest,
                })
            })
            .collect();
        let v = serde_json::json!({
            "site": dir.identity.site.to_string(),
            "key": fingerprint(&dir.identity.public),
            "last_net": last_net,
            "batches": mailbox.batches,
            "bytes": mailbox.bytes,
            "origins": origins,
            "devices": { "enrolled": devices.len(), "active": active },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("hub site {}", dir.identity.site);
    println!("key      {}", fingerprint(&dir.identity.public));
    println!("address  {}", last_net.as_deref().unwrap_or("(never run)"));
    println!("devices  {} enrolled, {} active", devices.len(), active);
    println!(
        "mailbox  {} batches, {} bytes",
        mailbox.batches, mailbox.bytes
    );
    for o in &mailbox.origins {
        println!(
            "  origin {}  {} batches  {} bytes  covered 1..={}{}",
            o.origin,
            o.batches,
            o.bytes,
            o.covered,
            if o.highest > o.covered {
                format!("  (held up to {} beyond a gap)", o.highest)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
