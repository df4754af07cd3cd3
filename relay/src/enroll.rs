//! The enrollment code: what a device (or a hub) needs to enroll with a serving box, as one line
//! of text.
//!
//! The format is defined once, in `outpost_protocol::enroll_code` (the device extension and the
//! cloud read and write the same codes); this module re-exports it and adds what only a serving
//! box needs: issuing a code over a fresh one-time token ([`issue`]), checking the addresses an
//! operator gives for it ([`check_addresses`]), and drawing it as a terminal QR code a tablet
//! camera reads ([`render_qr`], [`printable`]).

use crate::allowlist::{Allowlist, AllowlistError, PeerGrant, Role, Token};
use crate::identity::Identity;
use std::fmt;

pub use outpost_protocol::enroll_code::{
    base64url_decode, base64url_encode, CloudAnchor, CodeError, EnrollCode, FORMAT_VERSION, PREFIX,
};

/// A code just issued, with the one-time token inside it.
#[derive(Debug)]
pub struct Issued {
    /// The code's text (`outpost:…`).
    pub code: String,
    /// Its token: secret and expiry.
    pub token: Token,
}

/// What a code admits: a peer of this role, granted this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitting {
    /// What the peer enrolls as.
    pub role: Role,
    /// What it is granted.
    pub grant: PeerGrant,
}

/// Issues a one-time token valid for `ttl_secs` from `now` (unix seconds) for the peer
/// `admitting` describes, and the code that carries it with this box's key and site and the `addresses` it
/// is reached at. `cloud`: the cloud this box uplinks to, when it has one (a hub with an
/// enrolled uplink), so a device enrolled here can verify what the cloud signs.
pub fn issue(
    allowlist: &mut Allowlist,
    identity: &Identity,
    addresses: Vec<String>,
    now: u64,
    ttl_secs: u64,
    admitting: &Admitting,
    cloud: Option<CloudAnchor>,
) -> Result<Issued, AllowlistError> {
    let token = allowlist.issue_granted_token(now, ttl_secs, admitting.role, &admitting.grant)?;
    let code = EnrollCode {
        hub_key: identity.public().as_bytes().to_vec(),
        hub_site: identity.site,
        addresses,
        token: token.secret,
        expires_at: token.expires_at,
        cloud,
    }
    .encode();
    Ok(Issued { code, token })
}

/// An address given for an enrollment code that is not `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAddress(pub String);

impl fmt::Display for BadAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--address {:?}: HOST:PORT expected", self.0)
    }
}

impl std::error::Error for BadAddress {}

/// Checks that every address an operator gave (`--address`) is `HOST:PORT`.
pub fn check_addresses(addresses: &[String]) -> Result<(), BadAddress> {
    match addresses.iter().find(|a| {
        a.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
    }) {
        Some(a) => Err(BadAddress(a.clone())),
        None => Ok(()),
    }
}

/// What `enroll-code` prints: the code's text, then (with `qr`) its QR drawing between blank
/// lines.
pub fn printable(code: &str, qr: bool) -> Result<String, qrcode::types::QrError> {
    if !qr {
        return Ok(format!("{code}\n"));
    }
    Ok(format!("{code}\n\n{}\n", render_qr(code)?))
}

/// The code as a QR code drawn with Unicode half blocks (two rows per line), for a terminal.
pub fn render_qr(code: &str) -> Result<String, qrcode::types::QrError> {
    let qr = qrcode::QrCode::with_error_correction_level(code.as_bytes(), qrcode::EcLevel::L)?;
    Ok(qr
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::SiteId;

    #[test]
    fn a_code_renders_as_a_scannable_block_of_half_blocks() {
        let code = EnrollCode {
            hub_key: vec![0x04; 65],
            hub_site: SiteId([0x5a; 16]),
            addresses: vec!["192.168.1.20:7420".into()],
            token: [0x77; 32],
            expires_at: 1_800_000_900,
            cloud: None,
        }
        .encode();
        let qr = render_qr(&code).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        assert!(lines.len() > 10, "{} lines", lines.len());
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(qr.contains('▀') || qr.contains('▄') || qr.contains('█'));
        let printed = printable(&code, true).unwrap();
        assert!(printed.starts_with(&format!("{code}\n\n")), "{printed}");
        assert_eq!(printable(&code, false).unwrap(), format!("{code}\n"));
    }

    #[test]
    fn addresses_must_name_a_port() {
        let ok = ["clinic-hub.local:7420".to_string(), "10.0.0.2:1".into()];
        assert_eq!(check_addresses(&ok), Ok(()));
        let bad = ["10.0.0.2:7420".to_string(), "10.0.0.3".into()];
        assert_eq!(
            check_addresses(&bad).unwrap_err().to_string(),
            "--address \"10.0.0.3\": HOST:PORT expected"
        );
    }
}
