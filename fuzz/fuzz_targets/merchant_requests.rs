//! Merchant request bodies: a create-payment or create-refund body, however
//! malformed, is refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paymux_server::api::refund_request::CreateRefund;
use paymux_server::api::validate::CreatePayment;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = CreatePayment::parse(data) {
        // What was accepted is within the documented bounds.
        assert!(p.amount.minor > 0);
        assert!(!p.merchant_order_no.is_empty() && p.merchant_order_no.len() <= 64);
        let _ = p.fingerprint();
    }
    let _ = CreateRefund::parse(data);
});
