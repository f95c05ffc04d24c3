//! Alipay async notifies (form bodies) and gateway answers: parsing, the
//! content that is signed, money and time fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paymux_channels::alipay::sign::{
    parse_alipay_time, parse_form, sign_content, split_response, yuan_to_minor,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = parse_form(data) {
        let _ = sign_content(&params, &["sign", "sign_type"]);
        for value in params.values() {
            if let Ok(minor) = yuan_to_minor(value) {
                assert!(minor >= 0);
            }
            let _ = parse_alipay_time(value);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = split_response(text, "alipay.trade.query");
        let _ = yuan_to_minor(text);
    }
});
