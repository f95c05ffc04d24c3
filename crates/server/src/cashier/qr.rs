//! QR codes of the channels' payment links, drawn by paymux as SVG, so the
//! payer's browser needs nothing from elsewhere.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use crate::api::ApiError;

/// The QR code of `text` as an SVG document, with its quiet zone.
pub fn svg(text: &str) -> Result<String, ApiError> {
    // Level M: what the channels' own QR codes use; phones read it off a
    // screen easily.
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| {
        ApiError::invalid(format!("payment link cannot be drawn as a QR code: {e}"))
    })?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_link_becomes_an_svg_qr_code() {
        let s = svg("weixin://wxpay/bizpayurl?pr=abc123").unwrap();
        assert!(s.starts_with("<?xml"), "{s}");
        assert!(s.contains("<svg") && s.contains("<path"), "{s}");
        // Different links, different codes.
        assert_ne!(s, svg("weixin://wxpay/bizpayurl?pr=abc124").unwrap());
    }
}
