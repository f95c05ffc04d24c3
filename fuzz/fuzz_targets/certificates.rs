//! Key material from outside: PEM and DER certificates, public and private
//! keys, and UnionPay's PKCS#12 files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paymux_channels::keys::{Certificate, PrivateKey, PublicKey};
use paymux_channels::unionpay::certs::SigningIdentity;

fuzz_target!(|data: &[u8]| {
    let _ = Certificate::from_der(data);
    let _ = PublicKey::from_der(data);
    let _ = SigningIdentity::from_pkcs12(data, "000000");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Certificate::from_pem(text);
        let _ = PublicKey::from_key_or_certificate_pem(text);
        let _ = PrivateKey::from_pem(text);
    }
});
