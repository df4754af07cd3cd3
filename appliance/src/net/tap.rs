//! The TAP link (`--net tap:IFACE`): a TAP interface (created if it does not exist) as an
//! embassy-net driver. The host side of a TAP is the kernel: give the interface an address on
//! the hub's subnet, or bridge it with the LAN, to reach the hub.
//!
//! The TAP file itself comes from embassy-net-tuntap; the driver is ours because that crate's
//! panics on any write error, and writing to a TAP whose interface is down fails with EIO (the
//! stack sends IGMP and DHCP before anyone brings the interface up). Here such frames are
//! dropped, as a NIC with no carrier would.

use async_io::Async;
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};
use embassy_net_tuntap::TunTap;
use std::io::{self, Read, Write};
use std::task::Context;

/// Ethernet header, not counted in the interface's MTU.
const ETHERNET_HEADER: usize = 14;

/// A TAP interface as an embassy-net [`Driver`].
#[derive(Debug)]
pub struct TapDevice {
    device: Async<TunTap>,
    iface: String,
    mac: [u8; 6],
    frame_mtu: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

/// Opens (creating if needed) the TAP interface `iface`, with a random locally administered
/// unicast MAC address for smoltcp's side (the kernel's side keeps its own).
pub fn open(iface: &str) -> io::Result<TapDevice> {
    let tap = TunTap::new(iface)?;
    let mut mac = [0u8; 6];
    // A fixed MAC would collide when two hubs share a bridge; without randomness, use the
    // process id so that at least two hubs on one machine differ.
    if getrandom::getrandom(&mut mac).is_err() {
        mac[2..6].copy_from_slice(&std::process::id().to_be_bytes());
    }
    mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
                                     // embassy-net-tuntap reads the IP MTU at open; a TAP's default is 1500.
    let frame_mtu = 1500 + ETHERNET_HEADER;
    log::info!("iface={iface} TAP opened");
    Ok(TapDevice {
        device: Async::new(tap)?,
        iface: iface.to_owned(),
        mac,
        frame_mtu,
        rx: vec![0; 65_536],
        tx: vec![0; frame_mtu],
    })
}

impl Driver for TapDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken<'_>, TxToken<'_>)> {
        loop {
            // SAFETY: get_mut is unsafe only because the source could be replaced; reading does not replace or close the registered descriptor.
            match unsafe { self.device.get_mut() }.read(&mut self.rx) {
                Ok(n) => {
                    return Some((
                        RxToken {
                            frame: &mut self.rx[..n],
                        },
                        TxToken {
                            device: &mut self.device,
                            buf: &mut self.tx,
                            iface: &self.iface,
                        },
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.device.poll_readable(cx).is_ready() {
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("iface={} TAP read failed: {e}", self.iface);
                    if !self.device.poll_readable(cx).is_ready() {
                        return None;
                    }
                }
            }
        }
    }

    fn transmit(&mut self, _cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        Some(TxToken {
            device: &mut self.device,
            buf: &mut self.tx,
            iface: &self.iface,
        })
    }

    fn link_state(&mut self, _cx: &mut Context<'_>) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = self.frame_mtu;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

/// A received frame.
#[doc(hidden)]
#[derive(Debug)]
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame to send.
#[doc(hidden)]
#[derive(Debug)]
pub struct TxToken<'a> {
    device: &'a mut Async<TunTap>,
    buf: &'a mut Vec<u8>,
    iface: &'a str,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let result = f(&mut self.buf[..len]);
        // SAFETY: writing does not replace or close the registered descriptor.
        if let Err(e) = unsafe { self.device.get_mut() }.write(&self.buf[..len]) {
            // EIO while the interface is down, EAGAIN when its queue is full: the frame is
            // lost, as on a wire; TCP retransmits, DHCP and mDNS retry.
            log::debug!("iface={} TAP write dropped a frame: {e}", self.iface);
        }
        result
    }
}
