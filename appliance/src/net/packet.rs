//! An embassy-net driver over a Linux `AF_PACKET` socket: whole Ethernet frames in and out of one
//! interface (the Pi's `eth0`, QEMU's virtual NIC, a veth in tests), with smoltcp as the only IP
//! stack on it. The kernel must not have an address on that interface, or both stacks answer.
//!
//! Two kernel behaviours would otherwise break TCP, and both are handled here (docs/design.md §9):
//! - **Unfinished checksums.** A frame sent by a local kernel stack (a veth peer, a bridge) can
//!   carry `CHECKSUM_PARTIAL`: its TCP/UDP checksum field holds only the pseudo-header sum.
//!   smoltcp would drop it as corrupt. The socket asks for per-frame status (`PACKET_AUXDATA`)
//!   and completes the checksum when the kernel says it is not ready.
//! - **GRO.** Generic receive offload merges consecutive TCP segments into one frame larger
//!   than the MTU, which smoltcp cannot take in, and bulk transfers stall. [`PacketDevice::open`]
//!   switches GRO off on the interface (`SIOCETHTOOL`), and frames larger than the MTU are
//!   dropped with a warning naming the likely cause (TSO/GSO on a local peer).
//!
//! The socket also asks for all multicast frames (`PACKET_MR_ALLMULTI`), because the NIC's
//! multicast filter is programmed by the kernel, which does not know smoltcp joined mDNS's group.

use async_io::Async;
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};
use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::Context;

const ETHERNET_HEADER: usize = 14;
/// Receive buffer: large enough for any frame the kernel can hand over (a GRO/GSO frame is up
/// to 64 KiB), so an oversized frame is seen whole and dropped, never read truncated.
const RX_BUFFER: usize = 65_536 + ETHERNET_HEADER;
const ETHTOOL_SGRO: u32 = 0x2c;

/// An `AF_PACKET` socket bound to one interface, as an embassy-net [`Driver`].
#[derive(Debug)]
pub struct PacketDevice {
    fd: Async<OwnedFd>,
    iface: String,
    mac: [u8; 6],
    /// Largest frame, Ethernet header included (smoltcp's "MTU" for Ethernet).
    frame_mtu: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
    oversized_warned: bool,
}

impl PacketDevice {
    /// Opens `iface` (which must exist and be up): binds a raw socket to it, asks for frame
    /// status and all multicast, reads its MAC address and MTU, and switches GRO off. Needs
    /// `CAP_NET_RAW` (and `CAP_NET_ADMIN` for GRO; without it a warning is logged).
    pub fn open(iface: &str) -> io::Result<PacketDevice> {
        let name = CString::new(iface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        if iface.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {iface:?} is longer than 15 bytes"),
            ));
        }
        // SAFETY: `name` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a socket we just opened and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        set_int_option(&fd, libc::PACKET_AUXDATA, 1)?;
        // Our own transmissions would otherwise come back to us (ETH_P_ALL sees outgoing
        // frames too); older kernels lack the option, and `receive` filters them as well.
        let _ = set_int_option(&fd, libc::PACKET_IGNORE_OUTGOING, 1);
        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { zeroed() };
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_ALLMULTI as u16;
        // SAFETY: the option value is a packet_mreq of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }

        let mac = hardware_address(&fd, iface)?;
        let ip_mtu = mtu(&fd, iface)?;
        if let Err(e) = disable_gro(&fd, iface) {
            log::warn!(
                "iface={iface} could not switch GRO off ({e}); bulk TCP transfers may stall: run `ethtool -K {iface} gro off`"
            );
        }
        let frame_mtu = ip_mtu + ETHERNET_HEADER;
        log::info!(
            "iface={iface} AF_PACKET index {index} mac {} mtu {ip_mtu}",
            format_mac(&mac)
        );
        Ok(PacketDevice {
            fd: Async::new(fd)?,
            iface: iface.to_owned(),
            mac,
            frame_mtu,
            rx: vec![0; RX_BUFFER],
            tx: vec![0; frame_mtu],
            oversized_warned: false,
        })
    }

    /// The interface's MAC address, which smoltcp uses as its own.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Reads one frame into `self.rx`: `Some(len)` for a frame to deliver, `None` when the
    /// socket has nothing more right now (the waker is registered).
    fn read_frame(&mut self, cx: &mut Context<'_>) -> Option<usize> {
        loop {
            let (n, status, outgoing) = match recv_with_status(self.fd.get_ref(), &mut self.rx) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.fd.poll_readable(cx).is_ready() {
                        continue;
                    }
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ENETDOWN while the link is down, for instance: wait for the next frame.
                    log::warn!("iface={} receive failed: {e}", self.iface);
                    if self.fd.poll_readable(cx).is_ready() {
                        continue;
                    }
                    return None;
                }
            };
            if outgoing {
                continue;
            }
            if n > self.frame_mtu {
                if !self.oversized_warned {
                    self.oversized_warned = true;
                    log::warn!(
                        "iface={} dropped a {n}-byte frame (MTU {}): GRO on this interface or TSO/GSO on a local peer merges segments; switch them off (ethtool -K IFACE gro off / tso off gso off)",
                        self.iface,
                        self.frame_mtu - ETHERNET_HEADER
                    );
                }
                continue;
            }
            if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                complete_checksum(&mut self.rx[..n]);
            }
            return Some(n);
        }
    }
}

impl Driver for PacketDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let n = self.read_frame(cx)?;
        Some((
            RxToken {
                frame: &mut self.rx[..n],
            },
            TxToken {
                fd: &self.fd,
                buf: &mut self.tx,
                iface: &self.iface,
            },
        ))
    }

    fn transmit(&mut self, _cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        Some(TxToken {
            fd: &self.fd,
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
    fd: &'a Async<OwnedFd>,
    buf: &'a mut Vec<u8>,
    iface: &'a str,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let frame = &mut self.buf[..len];
        let result = f(frame);
        // SAFETY: `frame` is valid for `len` bytes; the socket is bound, so no address is needed.
        let sent =
            unsafe { libc::send(self.fd.get_ref().as_raw_fd(), frame.as_ptr().cast(), len, 0) };
        if sent < 0 {
            // A full socket buffer loses this frame; TCP retransmits, DHCP and mDNS retry.
            log::debug!(
                "iface={} send failed: {}",
                self.iface,
                io::Error::last_os_error()
            );
        }
        result
    }
}

fn set_int_option(fd: &OwnedFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `recvmsg`: (length, `tp_status` from the auxiliary data, sent-by-this-host flag).
fn recv_with_status(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, u32, bool)> {
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut from: libc::sockaddr_ll = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // MSG_TRUNC: return the frame's real length, so an oversized one is recognised.
    // SAFETY: every pointer in `msg` points to a live buffer of the length it states.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR walk its control buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and inside the control buffer.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_PACKET && header.cmsg_type == libc::PACKET_AUXDATA {
            // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata; it may be unaligned.
            let aux: libc::tpacket_auxdata =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            status = aux.tp_status;
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((
        n as usize,
        status,
        from.sll_pkttype == libc::PACKET_OUTGOING,
    ))
}

fn ifreq_for(iface: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn hardware_address(fd: &OwnedFd, iface: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq_for(iface);
    // SAFETY: SIOCGIFHWADDR reads and writes an ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(mac)
}

fn mtu(fd: &OwnedFd, iface: &str) -> io::Result<usize> {
    let mut req = ifreq_for(iface);
    // SAFETY: SIOCGIFMTU reads and writes an ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu }.max(68) as usize)
}

fn disable_gro(fd: &OwnedFd, iface: &str) -> io::Result<()> {
    /// `struct ethtool_value` of `<linux/ethtool.h>`.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 0,
    };
    let mut req = ifreq_for(iface);
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the ethtool_value that ifru_data points to, alive for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Computes and stores the TCP or UDP checksum of an unfragmented IPv4 frame whose checksum
/// the kernel left unfinished. Frames it does not understand are left as they are (smoltcp
/// then judges them).
fn complete_checksum(frame: &mut [u8]) {
    if frame.len() < ETHERNET_HEADER + 20 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = &frame[ETHERNET_HEADER..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ip[0] >> 4 != 4 || header_len < 20 || total < header_len || total > ip.len() || fragmented {
        return;
    }
    let protocol = ip[9];
    let field = match protocol {
        6 => 16,
        17 => 6,
        _ => return,
    };
    let l4_len = total - header_len;
    if l4_len < field + 2 {
        return;
    }
    let mut sum = 0u32;
    for pair in ip[12..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    sum += u32::from(protocol) + l4_len as u32;
    let start = ETHERNET_HEADER + header_len;
    let l4 = &mut frame[start..start + l4_len];
    l4[field] = 0;
    l4[field + 1] = 0;
    for pair in l4.chunks(2) {
        let word = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut checksum = !(sum as u16);
    if protocol == 17 && checksum == 0 {
        checksum = 0xffff;
    }
    l4[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::complete_checksum;

    /// Ethernet + IPv4 (10.0.0.1 → 10.0.0.2) + UDP 1234 → 5353, payload "hi!" (odd length),
    /// checksum 0x48b1 computed independently (RFC 1071 sum over pseudo-header and datagram).
    const UDP_FRAME: [u8; 45] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, // Ethernet
        0x45, 0, 0, 31, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
        0x04, 0xd2, 0x14, 0xe9, 0, 11, 0x48, 0xb1, // UDP header
        b'h', b'i', b'!',
    ];

    #[test]
    fn unfinished_udp_checksum_is_completed() {
        let mut frame = UDP_FRAME;
        // What CHECKSUM_PARTIAL leaves: some partial sum in the field.
        frame[40] = 0x12;
        frame[41] = 0x34;
        complete_checksum(&mut frame);
        assert_eq!(frame, UDP_FRAME);
    }

    #[test]
    fn frames_that_are_not_ipv4_tcp_or_udp_are_untouched() {
        let mut arp = UDP_FRAME;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let before = arp;
        complete_checksum(&mut arp);
        assert_eq!(arp, before);

        let mut fragment = UDP_FRAME;
        fragment[20] = 0x20; // more fragments
        fragment[40] = 0x12;
        let before = fragment;
        complete_checksum(&mut fragment);
        assert_eq!(fragment, before);
    }
}
