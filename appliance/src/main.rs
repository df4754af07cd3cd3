//! `outpost-hub`: the clinic hub's command line. See `docs/hub.md`.

use anyhow::{bail, Context, Result};
use outpost_hub::datadir::{unix_now, DataDir, LAST_NET};
use outpost_hub::hub::Hub;
use outpost_hub::net::bridge::BridgedConn;
use outpost_hub::net::{self, HubServices, IpConfig, Link, NetConfig};
use outpost_hub::status::{Heartbeat, PageCache, Snapshot};
use outpost_hub::{interfaces, uplink};
use outpost_protocol::channel::Limits as ChannelLimits;
use outpost_protocol::control::Root;
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_relay::allowlist::{Allowlist, Device, PeerGrant, Role, DEFAULT_TOKEN_TTL_SECS};
use outpost_relay::command::{self, Asked};
use outpost_relay::listener::{serve, watch_allowlist, Conn, Limits as ServerLimits, LiveSessions};
use outpost_relay::serve_connection;
use outpost_relay::{certify, enroll};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The relay's port when `--port` is not given (and `std:ADDR` has none).
const DEFAULT_PORT: u16 = 7420;
/// The status page's port on the hub's own stack when `--status-port` is not given.
const DEFAULT_STATUS_PORT: u16 = 80;

const USAGE: &str = "\
usage:
  outpost-hub run         --data DIR --net std:ADDR[:PORT] [--status-port N | --status ADDR:PORT] [--no-mdns]
                          [--cloud CODE] [--uplink-min-ms N] [--uplink-max-ms N] [--id-block N]
                          [--uplink-live-seconds N]
                          (--cloud: the code of 'outpost-cloud enroll-code --hub', remembered;
                          uplink backoff 1000..300000 ms by default; --id-block: ids asked of the
                          cloud per refill, 10000 by default; --uplink-live-seconds: each uplink
                          session stays open this long pulling on the cloud's notify, 300 by
                          default, 0: plain sessions polled every 30 s)
  outpost-hub run         --data DIR --net packet:IFACE|tap:IFACE [--ip CIDR [--gateway ADDR]]
                          [--port N] [--status-port N]   (DHCP without --ip; port 7420, status 80;
                          --status-port 0: no page)
                          [--cloud CODE] [--uplink-min-ms N] [--uplink-max-ms N]
                          [--id-block N] [--uplink-live-seconds N]
                          (the uplink dials over the hub's own stack: the code's cloud address
                          must be IPv4:PORT, reachable from the hub's LAN; no name resolution)
  outpost-hub enroll-code --data DIR [--address HOST:PORT]... [--ttl SECONDS] [--no-qr]
                          [--scopes a,b]   (within the hub's own grant, which is the default)
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
    ip: Option<String>,
    gateway: Option<String>,
    port: Option<u16>,
    status_port: Option<u16>,
    status: Option<String>,
    no_mdns: bool,
    cloud: Option<String>,
    uplink_min_ms: Option<u64>,
    uplink_max_ms: Option<u64>,
    id_block: Option<u64>,
    uplink_live_seconds: Option<u64>,
    addresses: Vec<String>,
    ttl: Option<u64>,
    json: bool,
    no_qr: bool,
    scopes: Option<String>,
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
            "--net" => args.net = Some(value("--net")?),
            "--ip" => args.ip = Some(value("--ip")?),
            "--gateway" => args.gateway = Some(value("--gateway")?),
            "--port" => {
                let v = value("--port")?;
                args.port = Some(v.parse().with_context(|| format!("--port {v:?}: a port"))?)
            }
            "--status-port" => {
                let v = value("--status-port")?;
                args.status_port = Some(
                    v.parse()
                        .with_context(|| format!("--status-port {v:?}: a port"))?,
                )
            }
            "--status" => args.status = Some(value("--status")?),
            "--no-mdns" => args.no_mdns = true,
            "--cloud" => args.cloud = Some(value("--cloud")?),
            "--uplink-min-ms" | "--uplink-max-ms" => {
                let name = a.clone();
                let v = value(&name)?;
                let ms = Some(
                    v.parse()
                        .with_context(|| format!("{name} {v:?}: milliseconds"))?,
                );
                if name == "--uplink-min-ms" {
                    args.uplink_min_ms = ms;
                } else {
                    args.uplink_max_ms = ms;
                }
            }
            "--id-block" => {
                let v = value("--id-block")?;
                args.id_block = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .with_context(|| format!("--id-block {v:?}: a count from 1 to 1000000"))?,
                )
            }
            "--uplink-live-seconds" => {
                let v = value("--uplink-live-seconds")?;
                args.uplink_live_seconds =
                    Some(v.parse().ok().filter(|n| *n <= 86_400).with_context(|| {
                        format!("--uplink-live-seconds {v:?}: seconds from 0 (off) to 86400")
                    })?)
            }
            "--address" => args.addresses.push(value("--address")?),
            "--ttl" => {
                let v = value("--ttl")?;
                args.ttl = Some(v.parse().with_context(|| format!("--ttl {v:?}: seconds"))?)
            }
            "--json" => args.json = true,
            "--no-qr" => args.no_qr = true,
            "--scopes" => args.scopes = Some(value("--scopes")?),
            "-h" | "--help" => return Ok(Asked::Help),
            s if s.starts_with('-') => bail!("unknown option {s}"),
            _ => args.positional.push(a),
        }
    }
    Ok(Asked::Run(args))
}

fn data_dir(args: &Args) -> Result<DataDir> {
    let path = args.data.as_ref().context("--data DIR is required")?;
    Ok(DataDir::open(path)?)
}

fn main() {
    command::main("outpost-hub", USAGE, parse, |args| {
        match args.command.as_str() {
            "run" => run(&args),
            "enroll-code" => enroll_code(&args),
            "devices" => devices(&args),
            "revoke" => revoke(&args),
            "status" => status(&args),
            other => bail!("unknown command {other:?}"),
        }
    });
}

/// `std:ADDR:PORT` or `std:ADDR` (port from `--port`, else 7420) → a socket address.
fn parse_std(net: &str, port: Option<u16>) -> Result<SocketAddr> {
    let addr = net.strip_prefix("std:").context("not std:")?;
    if let Ok(a) = addr.parse::<SocketAddr>() {
        if port.is_some_and(|p| p != a.port()) {
            bail!("--net {net:?} names a port and --port another");
        }
        return Ok(a);
    }
    let ip: IpAddr = addr
        .parse()
        .with_context(|| format!("--net {net:?}: ADDR[:PORT] expected, e.g. std:0.0.0.0:7420"))?;
    Ok(SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT)))
}

fn run(args: &Args) -> Result<()> {
    let net = args
        .net
        .as_deref()
        .context("--net std:ADDR:PORT, packet:IFACE or tap:IFACE is required")?;
    let dir = data_dir(args)?;
    let mut uplink_config = uplink::Config::new(
        args.uplink_min_ms.map(Duration::from_millis),
        args.uplink_max_ms.map(Duration::from_millis),
    )?;
    if let Some(n) = args.id_block {
        uplink_config.id_block = n;
    }
    if let Some(s) = args.uplink_live_seconds {
        uplink_config.live = Duration::from_secs(s);
    }
    if let Some(code) = &args.cloud {
        if !net.starts_with("std:") {
            own_stack_can_dial(code)?;
        }
        uplink::configure(&dir.allowlist()?, code)?;
    }
    let with_uplink = uplink::configured(&dir.allowlist()?)?;
    if with_uplink {
        // Before serving anyone: a hub with a cloud never grants ids as their root; the cloud is
        // the root of every sequence, and the first refill asks above whatever the hub issued
        // as root (also a data directory whose uplink was configured before id blocks existed).
        dir.mailbox()?
            .set_id_mode(outpost_mailbox::IdMode::Delegated)?;
    }
    let heartbeat = Heartbeat::start(&dir.path, net)?;
    let page_dir = Arc::new(DataDir::open(&dir.path)?);
    let allowlist_path = dir.path.join("allowlist.db");
    let site = dir.identity.site;
    let key = dir.identity.public().fingerprint();
    let hub = Hub::new(dir, ChannelLimits::default());
    {
        // The pinned cloud is a root of the key directory; data directories made before
        // control streams get the hub's entries for the devices it admitted (the relay writes
        // each new device's as its handshake completes).
        let allowlist = hub.dir().allowlist()?;
        let cloud = uplink::cloud_root(&allowlist)?;
        hub.serving().set_cloud_root(cloud);
        let mut mailbox = hub.serving().mailbox()?;
        if let Some(c) = cloud {
            // Named in the hub's stream for devices whose code had no cloud anchor.
            mailbox.certify(c.site, &c.key, PeerRole::Cloud, false)?;
        }
        let written = certify::certify_admitted(&mut mailbox, &allowlist, PeerRole::Hub)?;
        if written > 0 {
            log::info!("control: certified {written} admitted devices");
        }
    }
    let live = Arc::new(LiveSessions::default());
    let watcher = Allowlist::open(&allowlist_path)?;
    watch_allowlist(live.clone(), Duration::from_secs(1), watcher)
        .context("starting the revocation watcher")?;
    hub.serving()
        .watch_control(Duration::from_secs(1))
        .context("starting the control watcher")?;
    log::info!("hub site={site} key={key} net={net}");
    if net.starts_with("std:") {
        if with_uplink {
            let (mailbox, allowlist) = (hub.dir().mailbox()?, hub.dir().allowlist()?);
            uplink::spawn(
                hub.clone(),
                mailbox,
                allowlist,
                uplink::StdDial,
                uplink_config,
            )?;
        }
        run_std(args, net, hub, live, heartbeat, page_dir)
    } else {
        // The uplink dials over the hub's own stack: no names there, IPv4:PORT addresses only.
        let dials = if with_uplink {
            let (dialer, requests) = net::dial::dialer();
            let (mailbox, allowlist) = (hub.dir().mailbox()?, hub.dir().allowlist()?);
            uplink::spawn(hub.clone(), mailbox, allowlist, dialer, uplink_config)?;
            Some(requests)
        } else {
            None
        };
        run_own_stack(args, net, hub, live, heartbeat, page_dir, dials)
    }
}

/// With `--net packet:/tap:` the uplink connects over the hub's own stack, which resolves no
/// names: the code must name at least one `IPv4:PORT` address (the others are tried and fail).
fn own_stack_can_dial(code: &str) -> Result<()> {
    let Ok(parsed) = outpost_protocol::enroll_code::EnrollCode::decode(code) else {
        return Ok(()); // uplink::configure reports what is wrong with it
    };
    let (usable, names): (Vec<&String>, Vec<&String>) = parsed
        .addresses
        .iter()
        .partition(|a| net::dial::parse_address(a).is_ok());
    if usable.is_empty() {
        bail!(
            "--cloud: the code's addresses {:?} are not IPv4:PORT; the hub's own stack (--net packet:/tap:) resolves no names (make the code with outpost-cloud enroll-code --hub --address IP:PORT)",
            parsed.addresses
        );
    }
    if !names.is_empty() {
        log::warn!("uplink: not IPv4:PORT, never reached over --net packet:/tap: {names:?}");
    }
    Ok(())
}

/// `--net std:`: the kernel's sockets.
fn run_std(
    args: &Args,
    net: &str,
    hub: Arc<Hub>,
    live: Arc<LiveSessions>,
    heartbeat: Heartbeat,
    page_dir: Arc<DataDir>,
) -> Result<()> {
    if args.ip.is_some() || args.gateway.is_some() {
        bail!("--ip/--gateway apply to packet:/tap: only (with std: the OS configures addresses)");
    }
    let addr = parse_std(net, args.port)?;
    // The address is recorded before the port answers: whoever sees the port open (a script, a
    // test) can make an enrollment code at once. Only port 0's real port waits for the bind.
    let allowlist = hub.dir().allowlist()?;
    let previous = allowlist.setting(LAST_NET)?;
    if addr.port() != 0 {
        allowlist.set_setting(LAST_NET, &addr.to_string())?;
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            if let Some(p) = previous {
                allowlist.set_setting(LAST_NET, &p)?;
            }
            return Err(e).with_context(|| format!("listening on {addr} (--net {net})"));
        }
    };
    let bound = listener.local_addr().context("reading the bound address")?;
    if bound != addr {
        allowlist.set_setting(LAST_NET, &bound.to_string())?;
    }
    let status_addr = match (&args.status, args.status_port) {
        (Some(_), Some(_)) => bail!("give --status ADDR:PORT or --status-port N, not both"),
        (Some(a), None) => Some(
            a.parse::<SocketAddr>()
                .with_context(|| format!("--status {a:?}: ADDR:PORT expected"))?,
        ),
        (None, Some(0)) | (None, None) => None,
        (None, Some(p)) => Some(SocketAddr::new(bound.ip(), p)),
    };
    let mut status_page = None;
    if let Some(a) = status_addr {
        let l = TcpListener::bind(a).with_context(|| format!("status page on {a}"))?;
        let at = l.local_addr()?;
        let cache = PageCache::start(page_dir)?;
        net::http::spawn_std_status(l, move || cache.page()).context("starting the status page")?;
        log::info!("status page on http://{at}/");
        status_page = Some(format!("http://{at}/"));
    }
    if !args.no_mdns {
        if let Err(e) = net::mdns::spawn_std_responder(hub.dir().identity.site.to_string(), bound) {
            log::warn!("mdns: not answering discovery: {e}");
        }
    }
    log::info!("serving on {bound}");
    heartbeat.serving(bound.to_string(), status_page);
    let serving = hub.serving().clone();
    let handler = move |conn: &mut Conn| serve_connection(&serving, conn);
    serve(listener, ServerLimits::default(), live, Arc::new(handler))
        .with_context(|| format!("serving on {bound}"))
}

/// `--net packet:IFACE` / `tap:IFACE`: the hub's own stack (embassy-net).
fn run_own_stack(
    args: &Args,
    net: &str,
    hub: Arc<Hub>,
    live: Arc<LiveSessions>,
    heartbeat: Heartbeat,
    page_dir: Arc<DataDir>,
    dials: Option<net::dial::DialRequests>,
) -> Result<()> {
    if args.status.is_some() {
        bail!("--status ADDR:PORT applies to std: only; use --status-port N");
    }
    let link = Link::parse(net)?;
    let ip = IpConfig::from_options(args.ip.as_deref(), args.gateway.as_deref())?;
    let port = args.port.unwrap_or(DEFAULT_PORT);
    let status_port = match args.status_port.unwrap_or(DEFAULT_STATUS_PORT) {
        0 => None,
        p => Some(p),
    };
    let cache = match status_port {
        Some(_) => Some(PageCache::start(page_dir)?),
        None => None,
    };
    let site = hub.dir().identity.site.to_string();
    let data = hub.dir().path.clone();
    let serving = hub.serving().clone();
    let relay = move |conn: &mut BridgedConn| {
        conn.serve_as_session(ServerLimits::default(), live.clone());
        serve_connection(&serving, conn)
    };
    let services = HubServices {
        site,
        relay_port: port,
        relay,
        status_port,
        render: move || cache.as_ref().map(PageCache::page).unwrap_or_default(),
    };
    let config = NetConfig { link, ip };
    let on_address = move |address: net::Address| {
        let serving = format!("{}:{port}", address.ip);
        let page = status_port.map(|p| format!("http://{}:{p}/", address.ip));
        log::info!("serving on {serving}");
        if let Some(page) = &page {
            log::info!("status page on {page}");
        }
        // Off the network thread: the allowlist write fsyncs.
        let spawned = std::thread::Builder::new()
            .name("record-address".into())
            .spawn(move || {
                heartbeat.serving(serving.clone(), page);
                let recorded = DataDir::open(&data)
                    .and_then(|d| Ok(d.allowlist()?.set_setting(LAST_NET, &serving)?));
                if let Err(e) = recorded {
                    log::warn!("recording the address {serving}: {e:#}");
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot record the address: {e}");
        }
    };
    match net::run_hub_with_dials(config, services, dials, on_address) {
        Ok(never) => match never {},
        Err(e) => Err(anyhow::Error::new(e).context(format!("--net {net}"))),
    }
}

/// The addresses to put in an enrollment code: `--address` values, else the last `run`'s
/// address (with this machine's non-loopback addresses when it listened on all interfaces).
fn enrollment_addresses(args: &Args, dir: &DataDir) -> Result<Vec<String>> {
    if !args.addresses.is_empty() {
        enroll::check_addresses(&args.addresses)?;
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
    let cloud = uplink::cloud_root(&dir.allowlist()?)?;
    // A hub holds no scope key: a code it printed could not give the device its clinic's keys.
    if dir.sealed_tenant(cloud)? {
        bail!(
            "this hub's tenant is sealed: its codes come from the cloud \
             (outpost-cloud enroll-code --device --scopes a --at-hub {} --address HOST:PORT) or \
             from a supervisor's tablet (SELECT outpost_enroll_code('{{\"scopes\": [\"a\"]}}'))",
            &dir.identity.site.to_string()[..8]
        );
    }
    let addresses = enrollment_addresses(args, &dir)?;
    let grant = PeerGrant {
        scopes: code_scopes(&dir, cloud, args.scopes.as_deref())?,
        enroll: false,
    };
    let issued = enroll::issue(
        &mut dir.allowlist()?,
        &dir.identity,
        addresses,
        unix_now(),
        args.ttl.unwrap_or(DEFAULT_TOKEN_TTL_SECS),
        &enroll::Admitting {
            // Only devices enroll with a hub: hubs enroll with the cloud.
            role: Role::Device,
            grant,
        },
        // The cloud's key, when the uplink is enrolled: the device verifies what it signs.
        cloud.map(|root| enroll::CloudAnchor {
            site: root.site,
            key: root.key.as_bytes().to_vec(),
        }),
    )?;
    log::info!(
        "data={} issued a one-time enrollment code, expires at unix {}",
        dir.path.display(),
        issued.token.expires_at
    );
    print!(
        "{}",
        enroll::printable(&issued.code, !args.no_qr).context("rendering the QR code")?
    );
    Ok(())
}

fn device_json(d: &Device) -> serde_json::Value {
    serde_json::json!({
        "site": d.site.to_string(),
        "key": d.key.fingerprint(),
        "enrolled_at": d.enrolled_at,
        "last_seen": d.last_seen,
        "revoked_at": d.revoked_at,
    })
}

/// The scopes a code the hub mints grants: `--scopes`, which must lie within the hub's own
/// grant, or that grant itself (every scope while the hub has none: a tenant without scopes, or
/// a hub whose uplink has not brought the cloud's word yet).
fn code_scopes(dir: &DataDir, cloud: Option<Root>, asked: Option<&str>) -> Result<Scopes> {
    let own = dir.own_grant(cloud)?.map(|g| g.scopes);
    let Some(asked) = asked else {
        return Ok(own.unwrap_or(Scopes::All));
    };
    let asked = Scopes::parse(asked.split(',')).context("--scopes")?;
    match own {
        Some(own) if own.covers(&asked) => Ok(asked),
        Some(own) => bail!(
            "--scopes {asked}: this hub is granted {own} only, and grants within its own grant"
        ),
        None if cloud.is_some() => bail!(
            "--scopes {asked}: this hub does not know its own grant yet; let its uplink reach \
             the cloud once (outpost-hub status shows \"scopes\" when it does)"
        ),
        None => bail!(
            "--scopes {asked}: scopes need a cloud (the scope authority); this hub has no uplink"
        ),
    }
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
            d.key.fingerprint(),
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
    // The revocation goes into the hub's control stream, which reaches the cloud and devices.
    let mut mailbox = dir.mailbox()?;
    mailbox.set_control_owner(certify::owner(&dir.identity, PeerRole::Hub, None));
    certify::certify_device(&mut mailbox, &d, PeerRole::Hub)?;
    log::info!("data={} revoked device site={}", dir.path.display(), d.site);
    println!("revoked {} (key {})", d.site, d.key.fingerprint());
    Ok(())
}

fn status(args: &Args) -> Result<()> {
    let dir = data_dir(args)?;
    let snapshot = Snapshot::collect(&dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", snapshot.render_text());
    }
    Ok(())
}
