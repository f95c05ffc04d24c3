//! Alipay Open Platform (OpenAPI v2 gateway) rules, pure functions only.
//!
//! - requests: RSA2 (SHA256withRSA) over the `k=v&…` string of every
//!   non-empty parameter except `sign`, keys sorted by byte order, raw values;
//! - synchronous answers: the same key verifies the exact raw JSON text of the
//!   `<method>_response` node (re-serialised JSON does not verify);
//! - async notifies: sorted params minus `sign` and `sign_type`;
//! - public-key-certificate mode: `app_cert_sn` and `alipay_root_cert_sn`;
//! - amounts: yuan strings (`"12.34"`) converted exactly to fen and back.

use std::collections::BTreeMap;

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::iv::FixedLength;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use md5::{Digest, Md5};
use paymux_core::clock::china_standard_time;
use serde_json::value::RawValue;
use x509_parser::prelude::FromDer;

use crate::keys::{pem_blocks, PrivateKey, PublicKey};
use crate::ChannelError;

/// The only signature type paymux speaks: SHA256withRSA. (`RSA`, SHA1withRSA,
/// is a legacy Alipay option that new apps cannot choose any more.)
pub const SIGN_TYPE: &str = "RSA2";

/// Alipay's timestamp format, in China Standard Time.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The gateway's success code.
pub const CODE_SUCCESS: &str = "10000";
/// "Processing": for alipay.trade.pay, the payer has to confirm on the phone.
pub const CODE_IN_PROCESS: &str = "10003";

/// `encrypt_type` of AES content encryption, the only one Alipay offers for RSA2 apps.
pub const ENCRYPT_TYPE: &str = "AES";

/// Parameters in the order Alipay sorts them (byte order of the keys).
pub type Params = BTreeMap<String, String>;

/// The string Alipay signs: `k=v` for every key not in `exclude` with a
/// non-empty key and value, sorted by key, joined with `&`. Values are raw,
/// never URL-encoded.
pub fn sign_content(params: &Params, exclude: &[&str]) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if k.is_empty() || v.is_empty() || exclude.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Signs a request: RSA2 over every parameter but `sign` (`sign_type`,
/// `app_cert_sn` and `alipay_root_cert_sn` included).
pub fn sign_request(key: &PrivateKey, params: &Params) -> Result<String, ChannelError> {
    key.sign_sha256(sign_content(params, &["sign"]).as_bytes())
}

/// Verifies a request's `sign` (what the gateway does).
pub fn verify_request(key: &PublicKey, params: &Params) -> Result<(), ChannelError> {
    check_sign_type(params)?;
    let sig = params
        .get("sign")
        .ok_or_else(|| ChannelError::InvalidSignature("no sign parameter".into()))?;
    key.verify_sha256(sign_content(params, &["sign"]).as_bytes(), sig)
}

/// Verifies an async trade notify (or a return_url query): the content
/// leaves out both `sign` and `sign_type`.
pub fn verify_notify(key: &PublicKey, params: &Params) -> Result<(), ChannelError> {
    check_sign_type(params)?;
    let sig = params
        .get("sign")
        .ok_or_else(|| ChannelError::InvalidSignature("no sign parameter".into()))?;
    key.verify_sha256(sign_content(params, &["sign", "sign_type"]).as_bytes(), sig)
}

/// Signs an async notify (the platform's side).
pub fn sign_notify(key: &PrivateKey, params: &Params) -> Result<String, ChannelError> {
    key.sign_sha256(sign_content(params, &["sign", "sign_type"]).as_bytes())
}

fn check_sign_type(params: &Params) -> Result<(), ChannelError> {
    match params.get("sign_type").map(String::as_str) {
        None | Some(SIGN_TYPE) => Ok(()),
        Some(other) => Err(ChannelError::InvalidSignature(format!(
            "sign_type {other:?} is not accepted, only {SIGN_TYPE}"
        ))),
    }
}

/// The name of a method's answer node: `alipay.trade.query` →
/// `alipay_trade_query_response`.
pub fn response_node(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// The parts of a gateway answer: the raw text of the response node exactly
/// as it appeared, and the top-level `sign` if there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse<'a> {
    pub node: &'a str,
    pub sign: Option<String>,
}

/// Finds `<method>_response` (or `error_response`, which the gateway uses
/// when it cannot tell the method) in an answer, without re-serialising it.
pub fn split_response<'a>(body: &'a str, method: &str) -> Result<RawResponse<'a>, ChannelError> {
    let top: BTreeMap<String, &'a RawValue> = serde_json::from_str(body)
        .map_err(|e| ChannelError::Protocol(format!("gateway answer is not a JSON object: {e}")))?;
    let node = top
        .get(&response_node(method))
        .or_else(|| top.get("error_response"))
        .ok_or_else(|| {
            ChannelError::Protocol(format!("gateway answer has no {}", response_node(method)))
        })?;
    let sign = match top.get("sign") {
        Some(raw) => Some(
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| ChannelError::Protocol("sign is not a string".into()))?,
        ),
        None => None,
    };
    Ok(RawResponse {
        node: node.get(),
        sign,
    })
}

/// Builds an answer the way the gateway does: `{"<node>":<content>,"sign":"…"}`
/// with the signature over `content` exactly as written.
pub fn signed_response(
    key: &PrivateKey,
    method: &str,
    content: &str,
) -> Result<String, ChannelError> {
    let sig = key.sign_sha256(content.as_bytes())?;
    let sig = serde_json::to_string(&sig)
        .map_err(|e| ChannelError::Protocol(format!("encoding sign: {e}")))?;
    Ok(format!(
        "{{\"{}\":{content},\"sign\":{sig}}}",
        response_node(method)
    ))
}

fn aes_key(key_b64: &str) -> Result<UnboundCipherKey, ChannelError> {
    let raw = B64
        .decode(key_b64.trim())
        .map_err(|_| ChannelError::Config("the AES content key is not base64".into()))?;
    let algorithm = match raw.len() {
        16 => &AES_128,
        32 => &AES_256,
        n => {
            return Err(ChannelError::Config(format!(
                "the AES content key must be 16 or 32 bytes, not {n}"
            )))
        }
    };
    UnboundCipherKey::new(algorithm, &raw)
        .map_err(|_| ChannelError::Config("unusable AES content key".into()))
}

/// Alipay's content encryption (`encrypt_type=AES`): AES-CBC with PKCS#7
/// padding under the app's content key, base64. The IV is all zeros: that is
/// Alipay's protocol (every SDK does it), not a choice paymux could make.
pub fn aes_encrypt(key_b64: &str, plaintext: &str) -> Result<String, ChannelError> {
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(aes_key(key_b64)?)
        .map_err(|_| ChannelError::Config("AES-CBC key setup failed".into()))?;
    let mut data = plaintext.as_bytes().to_vec();
    key.less_safe_encrypt(
        &mut data,
        EncryptionContext::Iv128(FixedLength::from([0u8; 16])),
    )
    .map_err(|_| ChannelError::Config("AES encryption failed".into()))?;
    Ok(B64.encode(data))
}

/// Reverses [`aes_encrypt`]. A wrong key or altered ciphertext is
/// [`ChannelError::Decrypt`].
pub fn aes_decrypt(key_b64: &str, ciphertext_b64: &str) -> Result<String, ChannelError> {
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(aes_key(key_b64)?)
        .map_err(|_| ChannelError::Config("AES-CBC key setup failed".into()))?;
    let mut data = B64
        .decode(ciphertext_b64.trim())
        .map_err(|_| ChannelError::Decrypt)?;
    let plain = key
        .decrypt(
            &mut data,
            DecryptionContext::Iv128(FixedLength::from([0u8; 16])),
        )
        .map_err(|_| ChannelError::Decrypt)?;
    String::from_utf8(plain.to_vec()).map_err(|_| ChannelError::Decrypt)
}

/// Converts fen to Alipay's yuan string: 1999 → `"19.99"`, 5 → `"0.05"`.
pub fn minor_to_yuan(minor: i64) -> Result<String, ChannelError> {
    if minor < 0 {
        return Err(ChannelError::Protocol(format!(
            "negative amount {minor} cannot be sent to Alipay"
        )));
    }
    Ok(format!("{}.{:02}", minor / 100, minor % 100))
}

/// Converts a yuan string to fen exactly. Anything that is not plain digits
/// with at most two decimals (signs, exponents, blanks, a third decimal) is
/// an error, never a rounding.
pub fn yuan_to_minor(yuan: &str) -> Result<i64, ChannelError> {
    let bad = || ChannelError::Protocol(format!("amount {yuan:?} is not an exact yuan amount"));
    let (whole, frac) = match yuan.split_once('.') {
        Some((w, f)) => (w, f),
        None => (yuan, ""),
    };
    if whole.is_empty()
        || whole.len() > 15
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || (yuan.contains('.') && frac.is_empty())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().map_err(|_| bad())? * 10,
        _ => frac.parse().map_err(|_| bad())?,
    };
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// Alipay's `yyyy-MM-dd HH:mm:ss` in China Standard Time.
pub fn to_alipay_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&china_standard_time())
        .format(TIME_FORMAT)
        .to_string()
}

/// Parses Alipay's `yyyy-MM-dd HH:mm:ss` (China Standard Time).
pub fn parse_alipay_time(s: &str) -> Result<DateTime<Utc>, ChannelError> {
    let naive = NaiveDateTime::parse_from_str(s, TIME_FORMAT)
        .map_err(|e| ChannelError::Protocol(format!("time {s:?}: {e}")))?;
    china_standard_time()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ChannelError::Protocol(format!("time {s:?} is ambiguous")))
}

/// Parses an `application/x-www-form-urlencoded` body (notifies, gateway
/// requests). `+` is a space and `%2B` a plus, as in every form. A repeated
/// key is refused: it would make the signed content ambiguous.
pub fn parse_form(body: &[u8]) -> Result<Params, ChannelError> {
    let mut params = Params::new();
    for (k, v) in form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ChannelError::Protocol(format!("parameter {k} repeated")));
        }
    }
    Ok(params)
}

/// Encodes parameters as a form body or query string (after signing).
pub fn encode_form(params: &Params) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A certificate's Alipay serial: lowercase hex MD5 of the issuer DN (RDNs in
/// reverse order, `CN=…,OU=…,O=…,C=…`) followed by the decimal serial number.
pub fn cert_sn(cert_pem: &str) -> Result<String, ChannelError> {
    let sns = certs_in(cert_pem, false)?;
    sns.into_iter()
        .next()
        .ok_or_else(|| ChannelError::Config("no CERTIFICATE block in PEM".into()))
}

/// `alipay_root_cert_sn`: the serials of the RSA-signed certificates of the
/// root bundle joined with `_`. The bundle also holds SM2 and ECDSA roots;
/// they are parsed but do not count.
pub fn root_cert_sn(bundle_pem: &str) -> Result<String, ChannelError> {
    let sns = certs_in(bundle_pem, true)?;
    if sns.is_empty() {
        return Err(ChannelError::Config(
            "the Alipay root bundle holds no RSA certificate".into(),
        ));
    }
    Ok(sns.join("_"))
}

fn certs_in(pem: &str, rsa_only: bool) -> Result<Vec<String>, ChannelError> {
    let mut out = Vec::new();
    for block in pem_blocks(pem)? {
        if block.label != "CERTIFICATE" {
            continue;
        }
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&block.contents)
            .map_err(|e| ChannelError::Config(format!("unparsable certificate: {e}")))?;
        if rsa_only
            && !cert
                .signature_algorithm
                .algorithm
                .to_id_string()
                .starts_with("1.2.840.113549.1.1")
        {
            continue;
        }
        out.push(sn_of(&cert)?);
    }
    Ok(out)
}

/// The MD5 input of a certificate's serial: reversed issuer DN, then the decimal serial.
pub fn sn_input(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<String, ChannelError> {
    let mut parts = Vec::new();
    for rdn in cert.issuer().iter() {
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let name = match oid.as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                _ => oid,
            };
            let value = attr
                .as_str()
                .map_err(|e| ChannelError::Config(format!("issuer attribute: {e}")))?;
            parts.push(format!("{name}={value}"));
        }
    }
    parts.reverse();
    Ok(format!(
        "{}{}",
        parts.join(","),
        cert.tbs_certificate.serial
    ))
}

fn sn_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<String, ChannelError> {
    Ok(hex::encode(Md5::digest(sn_input(cert)?.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_conversion_is_exact() {
        assert_eq!(yuan_to_minor("12.34").unwrap(), 1234);
        assert_eq!(yuan_to_minor("0.01").unwrap(), 1);
        assert_eq!(yuan_to_minor("7").unwrap(), 700);
        assert_eq!(yuan_to_minor("7.5").unwrap(), 750);
        assert_eq!(yuan_to_minor("100000000.00").unwrap(), 10_000_000_000);
        for bad in [
            "",
            ".5",
            "1.",
            "1.234",
            "-1.00",
            "+1.00",
            "1e2",
            " 1.00",
            "1,00",
            "0x10",
            "1.2.3",
            "9999999999999999",
        ] {
            assert!(yuan_to_minor(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(minor_to_yuan(1999).unwrap(), "19.99");
        assert_eq!(minor_to_yuan(5).unwrap(), "0.05");
        assert_eq!(minor_to_yuan(100).unwrap(), "1.00");
        assert!(minor_to_yuan(-1).is_err());
        for m in [0, 1, 9, 10, 99, 100, 101, 123_456_789] {
            assert_eq!(yuan_to_minor(&minor_to_yuan(m).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn content_skips_empty_values_and_excluded_keys() {
        let mut p = Params::new();
        p.insert("b".into(), "2".into());
        p.insert("a".into(), "1".into());
        p.insert("empty".into(), String::new());
        p.insert("sign".into(), "xyz".into());
        p.insert("sign_type".into(), "RSA2".into());
        assert_eq!(sign_content(&p, &["sign"]), "a=1&b=2&sign_type=RSA2");
        assert_eq!(sign_content(&p, &["sign", "sign_type"]), "a=1&b=2");
    }

    #[test]
    fn alipay_time_is_china_standard_time() {
        let t = DateTime::parse_from_rfc3339("2023-12-21T06:54:37Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(to_alipay_time(t), "2023-12-21 14:54:37");
        assert_eq!(parse_alipay_time("2023-12-21 14:54:37").unwrap(), t);
        assert!(parse_alipay_time("2023-12-21T14:54:37").is_err());
    }

    #[test]
    fn response_node_is_found_raw() {
        let body =
            r#"{"alipay_trade_query_response":{"code":"10000", "msg":"Success"},"sign":"abc"}"#;
        let r = split_response(body, "alipay.trade.query").unwrap();
        assert_eq!(r.node, r#"{"code":"10000", "msg":"Success"}"#);
        assert_eq!(r.sign.as_deref(), Some("abc"));
        let e = r#"{"error_response":{"code":"40002"}}"#;
        let r = split_response(e, "alipay.trade.query").unwrap();
        assert_eq!(r.sign, None);
        assert!(split_response("[]", "alipay.trade.query").is_err());
        assert!(split_response("{}", "alipay.trade.query").is_err());
    }

    #[test]
    fn forms_decode_plus_and_refuse_repeats() {
        let p = parse_form(b"subject=a+b%2Bc&x=1").unwrap();
        assert_eq!(p["subject"], "a b+c");
        assert!(parse_form(b"x=1&x=2").is_err());
        let round = parse_form(encode_form(&p).as_bytes()).unwrap();
        assert_eq!(round, p);
    }
}
