//! The enrollment code: what a device (or a hub) needs to enroll with a serving box, as one line
//! of text.
//!
//! The format is defined once, in `outpost_protocol::enroll_code` (the device extension and the
//! cloud read and write the same codes); this module re-exports it and adds what only a serving
//! box needs: drawing the code as a terminal QR code a tablet camera reads.

pub use outpost_protocol::enroll_code::{
    base64url_decode, base64url_encode, CodeError, EnrollCode, FORMAT_VERSION, PREFIX,
};

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
        }
        .encode();
        let qr = render_qr(&code).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        assert!(lines.len() > 10, "{} lines", lines.len());
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(qr.contains('▀') || qr.contains('▄') || qr.contains('█'));
    }
}
