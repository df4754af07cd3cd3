//! Dialing a hub or the cloud as a device does: TCP, then the Noise initiator handshake (a
//! session, or an enrollment with a one-time token) until the channel is open.

use crate::error::SyncError;
use crate::peer::Peer;
use outpost_protocol::channel::{Channel, Limits as ChannelLimits};
use outpost_protocol::enroll_code::EnrollCode;
use outpost_protocol::handshake::{
    Ephemeral, Initiator, InitiatorConfig, Keypair, PublicKey, Purpose,
};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a connect may take. Loopback answers at once; a hub under QEMU (TCG) takes longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read waits for the peer before the session fails with `Io` (a hub under QEMU
/// fsyncs on an emulated disk before it answers a commit).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a device reaches its hub (or the cloud), and the key and site it pins.
#[derive(Clone, Debug)]
pub struct HubInfo {
    /// The address dialed.
    pub addr: SocketAddr,
    /// The pinned static key.
    pub key: PublicKey,
    /// The pinned site id.
    pub site: SiteId,
}

impl HubInfo {
    /// From an enrollment code: its first address, its key, its site.
    pub fn from_code(code: &EnrollCode) -> HubInfo {
        HubInfo {
            addr: code.addresses[0]
                .parse()
                .expect("the code's first address is IP:PORT"),
            key: code.public_key().expect("the code's key"),
            site: code.hub_site,
        }
    }
}

/// One handshake offering `counter`, as `keypair` at `site`, to `hub` (dialed at its address,
/// with its key and site pinned): the open channel and its stream, or why not.
pub fn handshake(
    hub: &HubInfo,
    keypair: &Keypair,
    site: SiteId,
    counter: u64,
    purpose: Purpose,
) -> Result<(Channel, TcpStream), SyncError> {
    let mut s = TcpStream::connect_timeout(&hub.addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    let config = InitiatorConfig {
        identity: keypair.clone(),
        site,
        counter,
        responder_key: hub.key,
        responder_site: hub.site,
        purpose,
        version: PROTOCOL_VERSION,
    };
    let ephemeral = Ephemeral::from_os().expect("an ephemeral key from the OS's randomness");
    let mut init = Initiator::start(&config, ephemeral, ChannelLimits::default(), 0)?;
    s.write_all(&init.take_outgoing())?;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(SyncError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut input = &buf[..n];
        if let Some(mut ch) = init.receive(&mut input, 1)? {
            s.write_all(&ch.take_outgoing())?;
            return Ok((ch, s));
        }
    }
}

/// A handshake of `dev` with the next counter.
pub fn connect<P: Peer>(
    hub: &HubInfo,
    dev: &mut P,
    purpose: Purpose,
) -> Result<(Channel, TcpStream), SyncError> {
    let counter = dev.next_counter();
    handshake(hub, dev.keypair(), dev.site(), counter, purpose)
}

/// Enrolls `dev` with the one-time `token`, and returns once a session handshake is admitted
/// (the peer commits the admission after the handshake's last message, which it may not have
/// processed when the enrollment connection is closed). Panics when either fails.
pub fn enroll_token<P: Peer>(hub: &HubInfo, dev: &mut P, token: [u8; 32]) {
    let (_ch, s) = connect(hub, dev, Purpose::Enroll { token }).expect("enrollment");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(hub, dev, Purpose::Session) {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("enrolled device not admitted: {e}"),
        }
    }
}

/// Enrolls `dev` with the code's token, at the code's first address.
pub fn enroll<P: Peer>(code: &EnrollCode, dev: &mut P) {
    enroll_token(&HubInfo::from_code(code), dev, code.token);
}
