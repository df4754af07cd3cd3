//! The TAP link (`--net tap:IFACE`): embassy-net-tuntap's device, which creates the TAP
//! interface if it does not exist. The host side of a TAP is the kernel: give the interface an
//! address on the hub's subnet (or bridge it with the LAN) to reach the hub.

use embassy_net_tuntap::TunTapDevice;
use std::io;

/// Opens (creating if needed) the TAP interface `iface`, with a random locally administered
/// unicast MAC address for smoltcp's side (the kernel's side keeps its own).
pub fn open(iface: &str) -> io::Result<TunTapDevice> {
    let mut device = TunTapDevice::new(iface)?;
    let mut mac = [0u8; 6];
    // A fixed MAC would collide when two hubs share a bridge; without randomness, use the
    // process id so that at least two hubs on one machine differ.
    if getrandom::getrandom(&mut mac).is_err() {
        mac[2..6].copy_from_slice(&std::process::id().to_be_bytes());
    }
    mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
    device.set_hardware_address(mac);
    log::info!("iface={iface} TAP opened");
    Ok(device)
}
