//! Bringing the stack up: the link (`packet:IFACE` or `tap:IFACE`), the IPv4 configuration
//! (DHCP or static), embassy's std executor on the calling thread, and the services once an
//! address is configured.

use super::packet::PacketDevice;
use super::tap;
use embassy_executor::Executor;
use embassy_net::{Config, Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_driver::Driver;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;

/// Sockets the stack can hold at once: DHCP, mDNS, the status page's, the relay's and the
/// uplink's TCP slots (checked at compile time in `net/mod.rs`).
pub const MAX_SOCKETS: usize = 80;

/// The interface the hub's own stack drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// An existing interface through an `AF_PACKET` socket (`packet:eth0`).
    Packet(String),
    /// A TAP device, created if missing (`tap:tap0`).
    Tap(String),
}

impl Link {
    /// Parses `packet:IFACE` or `tap:IFACE` (the `--net` values other than `std:`).
    pub fn parse(spec: &str) -> Result<Link, NetError> {
        let bad = || NetError::Spec(spec.to_owned());
        let (kind, iface) = spec.split_once(':').ok_or_else(bad)?;
        if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains(['/', ' ']) {
            return Err(bad());
        }
        match kind {
            "packet" => Ok(Link::Packet(iface.to_owned())),
            "tap" => Ok(Link::Tap(iface.to_owned())),
            _ => Err(bad()),
        }
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        match self {
            Link::Packet(i) | Link::Tap(i) => i,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Packet(i) => write!(f, "packet:{i}"),
            Link::Tap(i) => write!(f, "tap:{i}"),
        }
    }
}

/// How the hub gets its IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// DHCPv4 (the default): the address, and its renewal, come from the LAN's router.
    Dhcp,
    /// A fixed address (`--ip 192.168.1.20/24`, optional `--gateway 192.168.1.1`).
    Static {
        /// Address and prefix length.
        address: Ipv4Addr,
        /// Prefix length, 0 to 32.
        prefix: u8,
        /// Default gateway (for the uplink), if any.
        gateway: Option<Ipv4Addr>,
    },
}

impl IpConfig {
    /// From the `--ip CIDR` and `--gateway ADDR` options: DHCP when `ip` is absent.
    pub fn from_options(ip: Option<&str>, gateway: Option<&str>) -> Result<IpConfig, NetError> {
        let Some(ip) = ip else {
            return match gateway {
                Some(_) => Err(NetError::Ip("--gateway needs --ip".into())),
                None => Ok(IpConfig::Dhcp),
            };
        };
        let bad = || {
            NetError::Ip(format!(
                "--ip {ip:?}: ADDRESS/PREFIX expected, e.g. 192.168.1.20/24"
            ))
        };
        let (address, prefix) = ip.split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 || address.is_unspecified() || address.is_multicast() {
            return Err(bad());
        }
        let gateway = gateway
            .map(|g| {
                g.parse::<Ipv4Addr>()
                    .map_err(|_| NetError::Ip(format!("--gateway {g:?}: an IPv4 address expected")))
            })
            .transpose()?;
        Ok(IpConfig::Static {
            address,
            prefix,
            gateway,
        })
    }

    fn to_embassy(&self) -> Config {
        match self {
            IpConfig::Dhcp => Config::dhcpv4(Default::default()),
            IpConfig::Static {
                address,
                prefix,
                gateway,
            } => Config::ipv4_static(StaticConfigV4 {
                address: Ipv4Cidr::new(*address, *prefix),
                gateway: gateway.map(Ipv4Address::from),
                dns_servers: Default::default(),
            }),
        }
    }
}

/// The link and address configuration of the hub's stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The interface.
    pub link: Link,
    /// DHCP or static.
    pub ip: IpConfig,
}

/// The address the stack was configured with, handed to the services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// The hub's IPv4 address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)?;
        if let Some(g) = self.gateway {
            write!(f, " gateway {g}")?;
        }
        Ok(())
    }
}

/// Errors of the network front.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// A `--net` value that is not `packet:IFACE` or `tap:IFACE`.
    Spec(String),
    /// A bad `--ip` / `--gateway` value; the text says which.
    Ip(String),
    /// The interface could not be opened.
    Open {
        /// The link that failed.
        link: Link,
        /// Why.
        source: std::io::Error,
    },
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Spec(s) => write!(
                f,
                "--net {s:?}: packet:IFACE or tap:IFACE expected (IFACE at most 15 bytes)"
            ),
            NetError::Ip(s) => f.write_str(s),
            NetError::Open { link, source } => {
                write!(f, "cannot open {link}: {source}")?;
                if source.kind() == std::io::ErrorKind::PermissionDenied {
                    f.write_str(" (needs CAP_NET_RAW and CAP_NET_ADMIN, or root)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Open { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Opens the link, starts embassy-net on it and runs forever on the calling thread: once the
/// stack has an address (from DHCP or static) it is logged and `services(stack, address)` is
/// awaited. Returns only if the link cannot be opened.
///
/// The services future runs on the stack's single-threaded executor: it must never block (no
/// file or database I/O); blocking work goes to threads (see [`super::bridge`]).
pub fn run<F, Fut>(config: NetConfig, services: F) -> Result<Infallible, NetError>
where
    F: FnOnce(Stack<'static>, Address) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let open_error = |source| NetError::Open {
        link: config.link.clone(),
        source,
    };
    match &config.link {
        Link::Packet(iface) => {
            let device = PacketDevice::open(iface).map_err(open_error)?;
            run_on(device, config, services)
        }
        Link::Tap(iface) => {
            let device = tap::open(iface).map_err(open_error)?;
            run_on(device, config, services)
        }
    }
}

/// Runs one boxed future; the one task type of the hub, so tasks need not be generic.
#[embassy_executor::task(pool_size = 16)]
async fn boxed_task(future: Pin<Box<dyn Future<Output = ()>>>) {
    future.await
}

fn run_on<D, F, Fut>(device: D, config: NetConfig, services: F) -> !
where
    D: Driver + 'static,
    F: FnOnce(Stack<'static>, Address) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut seed = [0; 8];
    // Without randomness the only cost is predictable TCP sequence numbers and ports; the
    // clock is a usable fallback seed then.
    if getrandom::getrandom(&mut seed).is_err() {
        seed = crate::datadir::unix_now().to_le_bytes();
    }
    let resources: &'static mut StackResources<MAX_SOCKETS> =
        Box::leak(Box::new(StackResources::new()));
    let (stack, mut runner) = embassy_net::new(
        device,
        config.ip.to_embassy(),
        resources,
        u64::from_le_bytes(seed),
    );
    let link = config.link.clone();
    let dhcp = config.ip == IpConfig::Dhcp;
    let app = async move {
        if dhcp {
            log::info!("net={link} waiting for a DHCP lease");
        }
        stack.wait_config_up().await;
        let Some(v4) = stack.config_v4() else {
            log::error!("net={link} configured without an IPv4 address");
            return;
        };
        let address = Address {
            ip: v4.address.address(),
            prefix: v4.address.prefix_len(),
            gateway: v4.gateway,
        };
        log::info!(
            "net={link} address {address}{}",
            if dhcp { " (DHCP)" } else { " (static)" }
        );
        services(stack, address).await
    };
    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    executor.run(move |spawner| {
        let net = async move { runner.run().await };
        for future in [
            Box::pin(net) as Pin<Box<dyn Future<Output = ()>>>,
            Box::pin(app),
        ] {
            match boxed_task(future) {
                Ok(token) => spawner.spawn(token),
                Err(e) => log::error!("cannot start the network task: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_values_parse() {
        assert_eq!(
            Link::parse("packet:eth0").unwrap(),
            Link::Packet("eth0".into())
        );
        assert_eq!(Link::parse("tap:tap0").unwrap(), Link::Tap("tap0".into()));
        for bad in [
            "eth0",
            "packet:",
            "udp:eth0",
            "tap:a-very-long-interface-name",
        ] {
            assert!(Link::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Link::parse("tap:tap0").unwrap().to_string(), "tap:tap0");
    }

    #[test]
    fn ip_options_give_dhcp_or_static() {
        assert_eq!(IpConfig::from_options(None, None).unwrap(), IpConfig::Dhcp);
        assert_eq!(
            IpConfig::from_options(Some("192.168.1.20/24"), Some("192.168.1.1")).unwrap(),
            IpConfig::Static {
                address: Ipv4Addr::new(192, 168, 1, 20),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
            }
        );
        for (ip, gw) in [
            (Some("192.168.1.20"), None),
            (Some("192.168.1.20/33"), None),
            (Some("0.0.0.0/8"), None),
            (Some("192.168.1.20/24"), Some("router")),
            (None, Some("192.168.1.1")),
        ] {
            assert!(IpConfig::from_options(ip, gw).is_err(), "{ip:?} {gw:?}");
        }
    }
}
