//! Finding hubs on the LAN: DNS-SD over mDNS, service `_outpost._tcp.local`. The wire codec and
//! the device-side querier live in `outpost_protocol::discovery` (so devices use them without
//! depending on the hub); they are re-exported here for the hub's responders ([`super::mdns`]).

pub use outpost_protocol::discovery::*;
