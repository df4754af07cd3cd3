//! Finding hubs on the LAN without typing an address: DNS-SD over multicast DNS (RFC 6762/6763),
//! service type `_outpost._tcp.local`.
//!
//! A hub answers for four records:
//!
//! | name | type | data |
//! |---|---|---|
//! | `_outpost._tcp.local` | PTR | `outpost-<site[..12]>._outpost._tcp.local` (the instance) |
//! | instance | SRV | priority 0, weight 0, the relay port, target `outpost-<site[..12]>.local` |
//! | instance | TXT | `site=<the hub's 32-hex-digit site id>`, `v=1` |
//! | target | A | the hub's IPv4 address |
//!
//! A device matches `site=` against the hub site id of its enrollment code, then connects to the
//! A address and SRV port; the Noise handshake (pinned key) is what proves the hub genuine.
//!
//! This module is the wire codec (pure: bytes in, bytes out, no I/O, `no_std`), shared by the
//! hub's responders (`outpost-hub`'s `net::mdns`, over embassy-net and over std sockets) and by
//! devices. With the `std` feature it also has [`find_hubs`], the device-side querier: one call
//! that asks the LAN and returns the hubs that answered within a wait (a legacy one-shot mDNS
//! query from an ephemeral port, answered by unicast, so it needs no port 5353 of its own).
//!
//! The codec validates every length and offset against the packet: malformed input is a
//! [`DnsError`], never a panic. Names are compared ASCII-case-insensitively.
//!
//! **Device use** (`outpost_sync` before it falls back to the addresses of its enrollment code):
//! ```no_run
//! # #[cfg(feature = "std")] {
//! use outpost_protocol::discovery::find_hubs;
//! use std::net::Ipv4Addr;
//! use std::time::Duration;
//! let enrolled_site = "0123456789abcdef0123456789abcdef"; // the code's hub site, as hex
//! let hubs = find_hubs(Ipv4Addr::UNSPECIFIED, Duration::from_millis(500)).unwrap_or_default();
//! if let Some(hub) = hubs.iter().find(|h| h.site == enrolled_site) {
//!     // connect to hub.addr; the handshake against the pinned key proves it is the hub
//! }
//! # }
//! ```

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

/// The DNS-SD service type of the hub's relay.
pub const SERVICE: &str = "_outpost._tcp.local";
/// The mDNS IPv4 multicast group.
pub const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type PTR.
pub const TYPE_PTR: u16 = 12;
/// Record type TXT.
pub const TYPE_TXT: u16 = 16;
/// Record type SRV.
pub const TYPE_SRV: u16 = 33;
/// Query type ANY.
pub const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
/// mDNS: the top bit of a question's class asks for a unicast reply, of a record's class says
/// "flush your cache of this name/type".
const CLASS_TOP_BIT: u16 = 0x8000;
const FLAG_RESPONSE: u16 = 0x8000;
const FLAG_AUTHORITATIVE: u16 = 0x0400;
/// Record TTL in multicast answers (RFC 6762 recommends 120 s for host and SRV records).
const TTL: u32 = 120;
/// Record TTL in legacy unicast answers (RFC 6762 §6.7: at most 10 s).
const LEGACY_TTL: u32 = 10;

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// The packet ends inside the header, a name or a record.
    Truncated,
    /// A name is longer than 255 bytes, uses a reserved label type, or its compression
    /// pointers loop.
    BadName,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::Truncated => f.write_str("DNS packet truncated"),
            DnsError::BadName => {
                f.write_str("DNS name malformed (too long, bad label or pointer loop)")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DnsError {}

/// A question of a DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked about, dotted, without the final dot.
    pub name: String,
    /// The type asked for.
    pub qtype: u16,
    /// mDNS "QU": the asker wants a unicast reply.
    pub unicast_response: bool,
}

/// The data of a resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// A pointer to a name.
    Ptr(String),
    /// A service location.
    Srv {
        /// The port.
        port: u16,
        /// The host name.
        target: String,
    },
    /// Text strings (`key=value`).
    Txt(Vec<String>),
    /// Any other type, its data skipped.
    Other,
}

/// A resource record (answer, authority or additional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name.
    pub name: String,
    /// The record type.
    pub rtype: u16,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The data.
    pub data: RData,
}

/// A decoded DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The query id (0 in multicast mDNS).
    pub id: u16,
    /// The header flags.
    pub flags: u16,
    /// The questions.
    pub questions: Vec<Question>,
    /// Answer, authority and additional records, in order.
    pub records: Vec<Record>,
}

impl Message {
    /// Whether this is a response (QR bit).
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
}

/// What a hub announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRecord {
    /// The hub's site id, 32 hex digits.
    pub site: String,
    /// The relay's TCP port.
    pub port: u16,
    /// The hub's IPv4 address.
    pub ip: Ipv4Addr,
}

impl HubRecord {
    fn short(&self) -> &str {
        self.site.get(..12).unwrap_or(&self.site)
    }

    /// `outpost-<site[..12]>._outpost._tcp.local`.
    pub fn instance(&self) -> String {
        format!("outpost-{}.{SERVICE}", self.short())
    }

    /// `outpost-<site[..12]>.local`.
    pub fn host(&self) -> String {
        format!("outpost-{}.local", self.short())
    }
}

/// A hub found by a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundHub {
    /// Its site id (the TXT `site=` value).
    pub site: String,
    /// Where its relay listens.
    pub addr: SocketAddrV4,
}

fn eq_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `name` uncompressed. Labels longer than 63 bytes are cut (ours never are).
fn put_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

fn put_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    put_u16(out, id);
    put_u16(out, flags);
    for c in counts {
        put_u16(out, c);
    }
}

/// A one-question query: PTR `_outpost._tcp.local`, with id `id` (a querier from a port other
/// than 5353 gets a "legacy unicast" reply echoing it).
pub fn encode_query(id: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(37);
    put_header(&mut out, id, 0, [1, 0, 0, 0]);
    put_name(&mut out, SERVICE);
    put_u16(&mut out, TYPE_PTR);
    put_u16(&mut out, CLASS_IN);
    out
}

fn put_record(out: &mut Vec<u8>, name: &str, rtype: u16, flush: bool, ttl: u32, data: &[u8]) {
    put_name(out, name);
    put_u16(out, rtype);
    put_u16(out, CLASS_IN | if flush { CLASS_TOP_BIT } else { 0 });
    out.extend_from_slice(&ttl.to_be_bytes());
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

/// The hub's answer to `query`, or `None` when no question concerns it. `legacy_unicast`: the
/// query came from a port other than 5353, so the reply goes back to that port, echoes the id
/// and the questions, and uses short TTLs without cache-flush bits (RFC 6762 §6.7).
pub fn answer(query: &Message, hub: &HubRecord, legacy_unicast: bool) -> Option<Vec<u8>> {
    if query.is_response() {
        return None;
    }
    let (instance, host) = (hub.instance(), hub.host());
    let wants = |q: &Question, name: &str, t: u16| {
        eq_name(&q.name, name) && (q.qtype == t || q.qtype == TYPE_ANY)
    };
    // [PTR, SRV, TXT, A]: which are answers (asked for) and which are additional.
    let mut asked = [false; 4];
    for q in &query.questions {
        asked[0] |= wants(q, SERVICE, TYPE_PTR);
        asked[1] |= wants(q, &instance, TYPE_SRV);
        asked[2] |= wants(q, &instance, TYPE_TXT);
        asked[3] |= wants(q, &host, TYPE_A);
    }
    if !asked.contains(&true) {
        return None;
    }
    let (ttl, flush) = if legacy_unicast {
        (LEGACY_TTL, false)
    } else {
        (TTL, true)
    };
    let mut srv = vec![0, 0, 0, 0];
    srv.extend_from_slice(&hub.port.to_be_bytes());
    put_name(&mut srv, &host);
    let mut txt = Vec::new();
    for entry in [format!("site={}", hub.site), "v=1".to_owned()] {
        txt.push(entry.len() as u8);
        txt.extend_from_slice(entry.as_bytes());
    }
    let mut ptr = Vec::new();
    put_name(&mut ptr, &instance);
    let records: [(&str, u16, bool, Vec<u8>); 4] = [
        (SERVICE, TYPE_PTR, false, ptr), // shared record: never cache-flush
        (&instance, TYPE_SRV, flush, srv),
        (&instance, TYPE_TXT, flush, txt),
        (&host, TYPE_A, flush, hub.ip.octets().to_vec()),
    ];
    let answers = asked.iter().filter(|a| **a).count() as u16;
    let questions: &[Question] = if legacy_unicast {
        &query.questions
    } else {
        &[]
    };
    let mut out = Vec::with_capacity(256);
    put_header(
        &mut out,
        if legacy_unicast { query.id } else { 0 },
        FLAG_RESPONSE | FLAG_AUTHORITATIVE,
        [questions.len() as u16, answers, 0, 4 - answers],
    );
    for q in questions {
        put_name(&mut out, &q.name);
        put_u16(&mut out, q.qtype);
        put_u16(&mut out, CLASS_IN);
    }
    for pass in [true, false] {
        for (i, (name, rtype, flush, data)) in records.iter().enumerate() {
            if asked[i] == pass {
                put_record(&mut out, name, *rtype, *flush, ttl, data);
            }
        }
    }
    Some(out)
}

/// Reads 16-bit big-endian at `pos`.
fn u16_at(packet: &[u8], pos: usize) -> Result<u16, DnsError> {
    let b = packet.get(pos..pos + 2).ok_or(DnsError::Truncated)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads the (possibly compressed) name at `pos`: the name and the position after it.
fn read_name(packet: &[u8], mut pos: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *packet.get(pos).ok_or(DnsError::Truncated)?;
        match len {
            0 => {
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            1..=63 => {
                let label = packet
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated)?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                if name.len() > 255 {
                    return Err(DnsError::BadName);
                }
                pos += 1 + usize::from(len);
            }
            0xc0..=0xff => {
                let target = usize::from(u16_at(packet, pos)? & 0x3fff);
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > 32 {
                    return Err(DnsError::BadName);
                }
                pos = target;
            }
            _ => return Err(DnsError::BadName),
        }
    }
}

/// Decodes a DNS message (questions and all record sections).
pub fn parse(packet: &[u8]) -> Result<Message, DnsError> {
    let id = u16_at(packet, 0)?;
    let flags = u16_at(packet, 2)?;
    let qd = u16_at(packet, 4)?;
    let rr = u32::from(u16_at(packet, 6)?)
        + u32::from(u16_at(packet, 8)?)
        + u32::from(u16_at(packet, 10)?);
    let mut pos = 12;
    let mut questions = Vec::new();
    for _ in 0..qd {
        let (name, next) = read_name(packet, pos)?;
        let qtype = u16_at(packet, next)?;
        let class = u16_at(packet, next + 2)?;
        questions.push(Question {
            name,
            qtype,
            unicast_response: class & CLASS_TOP_BIT != 0,
        });
        pos = next + 4;
    }
    let mut records = Vec::new();
    for _ in 0..rr {
        let (name, next) = read_name(packet, pos)?;
        let rtype = u16_at(packet, next)?;
        let ttl_bytes = packet.get(next + 4..next + 8).ok_or(DnsError::Truncated)?;
        let ttl = u32::from_be_bytes([ttl_bytes[0], ttl_bytes[1], ttl_bytes[2], ttl_bytes[3]]);
        let len = usize::from(u16_at(packet, next + 8)?);
        let start = next + 10;
        let data = packet.get(start..start + len).ok_or(DnsError::Truncated)?;
        let data = match rtype {
            TYPE_A if len == 4 => RData::A(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            TYPE_PTR => RData::Ptr(read_name(packet, start)?.0),
            TYPE_SRV if len >= 7 => RData::Srv {
                port: u16_at(packet, start + 4)?,
                target: read_name(packet, start + 6)?.0,
            },
            TYPE_TXT => {
                let mut strings = Vec::new();
                let mut i = 0;
                while i < data.len() {
                    let n = usize::from(data[i]);
                    let s = data.get(i + 1..i + 1 + n).ok_or(DnsError::Truncated)?;
                    strings.push(String::from_utf8_lossy(s).into_owned());
                    i += 1 + n;
                }
                RData::Txt(strings)
            }
            _ => RData::Other,
        };
        records.push(Record {
            name,
            rtype,
            ttl,
            data,
        });
        pos = start + len;
    }
    Ok(Message {
        id,
        flags,
        questions,
        records,
    })
}

/// The hubs a response describes: each `_outpost._tcp.local` PTR whose instance has an SRV, a
/// TXT with `site=` and an A record for the SRV target in the same message.
pub fn hubs_in(message: &Message) -> Vec<FoundHub> {
    let mut found = Vec::new();
    for r in &message.records {
        let RData::Ptr(instance) = &r.data else {
            continue;
        };
        if !eq_name(&r.name, SERVICE) {
            continue;
        }
        fn of<'a>(message: &'a Message, name: &'a str) -> impl Iterator<Item = &'a Record> {
            message
                .records
                .iter()
                .filter(move |r| eq_name(&r.name, name))
        }
        let srv = of(message, instance).find_map(|r| match &r.data {
            RData::Srv { port, target } => Some((*port, target.clone())),
            _ => None,
        });
        let site = of(message, instance).find_map(|r| match &r.data {
            RData::Txt(strings) => strings
                .iter()
                .find_map(|s| s.strip_prefix("site=").map(str::to_owned)),
            _ => None,
        });
        let (Some((port, target)), Some(site)) = (srv, site) else {
            continue;
        };
        let ip = of(message, &target).find_map(|r| match r.data {
            RData::A(ip) => Some(ip),
            _ => None,
        });
        if let Some(ip) = ip {
            found.push(FoundHub {
                site,
                addr: SocketAddrV4::new(ip, port),
            });
        }
    }
    found
}

/// Asks the LAN for hubs and collects answers for `wait`. `local` is the address of the
/// interface to ask on (`0.0.0.0`: the one the routing table picks for 224.0.0.251; a
/// specific address sends through the interface holding it, `127.0.0.1` included). The query
/// is sent twice (at the start and at half of `wait`) in case the first is lost. Each hub is
/// listed once.
#[cfg(feature = "std")]
pub fn find_hubs(local: Ipv4Addr, wait: std::time::Duration) -> std::io::Result<Vec<FoundHub>> {
    use std::io;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    let socket = UdpSocket::bind((local, 0))?;
    let id = (std::process::id() as u16) | 1;
    let query = encode_query(id);
    socket.send_to(&query, (MDNS_GROUP, MDNS_PORT))?;
    let start = Instant::now();
    let mut resent = false;
    let mut hubs: Vec<FoundHub> = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        let elapsed = start.elapsed();
        if elapsed >= wait {
            return Ok(hubs);
        }
        if !resent && elapsed >= wait / 2 {
            resent = true;
            socket.send_to(&query, (MDNS_GROUP, MDNS_PORT))?;
        }
        let slice = if resent {
            wait - elapsed
        } else {
            wait / 2 - elapsed
        };
        socket.set_read_timeout(Some(slice.max(Duration::from_millis(1))))?;
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let Ok(message) = parse(&buf[..n]) else {
            continue;
        };
        if !message.is_response() || message.id != id {
            continue;
        }
        for hub in hubs_in(&message) {
            if !hubs.iter().any(|h| h.site == hub.site) {
                hubs.push(hub);
            }
        }
    }
}

#[cfg(test)]
mod tests;
