//! WeChat Pay v3 signing, verification and decryption against real vectors
//! from WeChat's official SDKs and yansongda/pay (see `tests/vectors/*.json`,
//! each file names its source repository, commit and path).

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use paymux_channels::keys::{Certificate, PrivateKey, PublicKey};
use paymux_channels::wechat::sign::{self, Authorization};
use paymux_channels::wechat::types::Transaction;
use paymux_channels::wechat::{to_channel_trade, WechatConfig, WechatPay};
use paymux_channels::{Callback, Channel, ChannelError, TradeState};
use serde_json::Value;

fn vector(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file");
    serde_json::from_str(&text).expect("vector JSON")
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut cur = v;
    for p in path.split('.') {
        cur = match p.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[p],
        };
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// A number that some vector files store as a string and others as a number.
fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .expect("integer")
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap()
}

fn headers(pairs: &Value) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs.as_object().unwrap() {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    h
}

/// A channel whose only verifying key is `key_pem` under id `key_id`, so
/// callbacks verify without a certificate download.
fn channel_with_platform_key(key_id: &str, key_pem: &str, apiv3_key: &str) -> WechatPay {
    let config = WechatConfig {
        base_url: "http://127.0.0.1:9".into(),
        appid: "wx0000000000000000".into(),
        mchid: "1234567890".into(),
        serial_no: "ABC".into(),
        private_key_pem: PrivateKey::generate_pkcs8_pem().unwrap(),
        apiv3_key: apiv3_key.into(),
        platform_public_key_id: Some(key_id.into()),
        platform_public_key_pem: Some(key_pem.into()),
        oauth_app_secret: None,
    };
    WechatPay::new(config, reqwest::Client::new()).unwrap()
}

#[test]
fn sha256rsa_sign_go() {
    let v = vector("wechat_v3_sha256rsa_sign_go");
    let key = PrivateKey::from_pem(s(&v, "key_material.merchant_private_key_pkcs8_pem")).unwrap();
    let sig = key.sign_sha256(s(&v, "input.message").as_bytes()).unwrap();
    assert_eq!(sig, s(&v, "expected.signature_base64"));

    let cert = Certificate::from_pem(s(
        &v,
        "key_material.platform_certificate_pem_serial_F5765756002FDD77",
    ))
    .unwrap();
    assert_eq!(cert.serial_no, s(&v, "key_material.merchant_cert_serial"));
    cert.public_key.verify_sha256(b"source", &sig).unwrap();
    let public = PublicKey::from_pem(s(&v, "key_material.wechatpay_public_key_pem")).unwrap();
    public.verify_sha256(b"source", &sig).unwrap();
    let wrong = s(&v, "expected.verify_negative.message");
    assert!(matches!(
        public.verify_sha256(wrong.as_bytes(), &sig),
        Err(ChannelError::InvalidSignature(_))
    ));
}

#[test]
fn request_sign_yansongda() {
    let v = vector("wechat_v3_request_sign_yansongda");
    let key = PrivateKey::from_pem(s(&v, "key_material.merchant_private_key_pkcs8_pem")).unwrap();
    let ts: i64 = int(&v["input"]["timestamp"]);
    let body = s(&v, "input.body").as_bytes();
    let msg = sign::request_message(
        "POST",
        s(&v, "input.canonical_url"),
        ts,
        s(&v, "input.nonce_str"),
        body,
    );
    assert_eq!(msg, s(&v, "expected.message").as_bytes());
    let auth = Authorization::sign(
        &key,
        s(&v, "key_material.mchid"),
        s(&v, "key_material.merchant_cert_serial"),
        "POST",
        s(&v, "input.canonical_url"),
        ts,
        s(&v, "input.nonce_str"),
        body,
    )
    .unwrap();
    assert_eq!(auth.header_value(), s(&v, "expected.authorization"));

    // The parser reads it back, and the signature verifies with the merchant certificate.
    let parsed = Authorization::parse(s(&v, "expected.authorization")).unwrap();
    assert_eq!(parsed, auth);
    let cert = Certificate::from_pem(s(&v, "key_material.merchant_certificate_pem")).unwrap();
    assert_eq!(cert.serial_no, s(&v, "key_material.merchant_cert_serial"));
    cert.public_key
        .verify_sha256(&msg, &parsed.signature)
        .unwrap();
}

#[test]
fn authorization_parser_accepts_any_field_order_and_rejects_junk() {
    let a = Authorization::parse(
        r#"WECHATPAY2-SHA256-RSA2048 serial_no="S",signature="c2ln",mchid="1",timestamp="2",nonce_str="n""#,
    )
    .unwrap();
    assert_eq!(
        (a.mchid.as_str(), a.serial_no.as_str(), a.signature.as_str()),
        ("1", "S", "c2ln")
    );
    for bad in [
        "",
        r#"WECHATPAY2-SHA256-RSA2048 mchid="1""#,
        r#"OTHER mchid="1",nonce_str="n",timestamp="2",serial_no="S",signature="x""#,
        r#"WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str="n",timestamp="2",serial_no="S",signature="x""#,
        r#"WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="2",nonce_str="n",timestamp="2",serial_no="S",signature="x""#,
    ] {
        assert!(Authorization::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn authorization_format_go() {
    let v = vector("wechat_v3_authorization_format_go");
    let km = &v["key_material"];
    let ts: i64 = int(&km["timestamp"]);
    for case in v["cases"].as_array().unwrap() {
        let msg = sign::request_message(
            s(case, "method"),
            s(case, "canonical_url"),
            ts,
            s(km, "nonce"),
            s(case, "body").as_bytes(),
        );
        assert_eq!(
            String::from_utf8(msg.clone()).unwrap(),
            s(case, "expected_message")
        );
        // The Go test uses a mock signer whose signature is "Sign:" + message
        // and a mock schema; only the header layout is under test here.
        let auth = Authorization {
            mchid: s(km, "mchid").into(),
            nonce_str: s(km, "nonce").into(),
            timestamp: ts.to_string(),
            serial_no: s(km, "serial_no").into(),
            signature: format!("Sign:{}", String::from_utf8(msg).unwrap()),
        };
        let header = auth
            .header_value()
            .replacen(sign::SCHEMA, "WECHATPAY2-Mock", 1);
        assert_eq!(header, s(case, "expected_authorization"));
    }
}

#[test]
fn aead_aes_gcm() {
    let v = vector("wechat_v3_aead_aes_gcm");
    for case in v["cases"].as_array().unwrap() {
        let key = s(case, "key_utf8").as_bytes();
        let (nonce, aad, ct) = (
            s(case, "nonce"),
            s(case, "associated_data"),
            s(case, "ciphertext_b64"),
        );
        let name = s(case, "name");
        if key.len() != 32 || nonce.len() != 12 {
            // 16-byte keys (AES-128) and 16-byte nonces are not WeChat's
            // AEAD_AES_256_GCM; paymux refuses them rather than guessing.
            assert!(
                sign::decrypt_resource(key, nonce, aad, ct).is_err(),
                "{name}"
            );
            continue;
        }
        let plain = sign::decrypt_resource(key, nonce, aad, ct).unwrap();
        assert_eq!(
            String::from_utf8(plain.clone()).unwrap(),
            s(case, "plaintext"),
            "{name}"
        );
        assert_eq!(
            sign::encrypt_resource(key, nonce, aad, &plain).unwrap(),
            ct,
            "{name}"
        );
        if let Some(serial) = case["plaintext_cert_serial_hex"].as_str() {
            let cert = Certificate::from_pem(s(case, "plaintext")).unwrap();
            assert_eq!(cert.serial_no, serial);
            assert_eq!(serial, s(case, "certificates_response_fields.serial_no"));
        }
        for neg in case["negative"].as_array().into_iter().flatten() {
            let aad = neg["associated_data"].as_str().unwrap_or(aad);
            let nonce = neg["nonce"].as_str().unwrap_or(nonce);
            assert!(matches!(
                sign::decrypt_resource(key, nonce, aad, ct),
                Err(ChannelError::Decrypt)
            ));
        }
    }
}

#[test]
fn notify_yansongda_certificate_verify_and_decrypt() {
    let v = vector("wechat_v3_notify_yansongda_certificate");
    let h = &v["input"]["headers"];
    let body = s(&v, "input.body").as_bytes();
    let cert = Certificate::from_pem(s(&v, "key_material.signature_verification_certificate_pem"))
        .unwrap();
    let (ts, nonce, sig) = (
        s(h, "Wechatpay-Timestamp"),
        s(h, "Wechatpay-Nonce"),
        s(h, "Wechatpay-Signature"),
    );
    assert_eq!(
        sign::response_message(ts, nonce, body),
        s(&v, "expected.verify_message").as_bytes()
    );
    sign::verify_response(&cert.public_key, ts, nonce, body, sig).unwrap();
    // Re-serialised JSON (without PHP's "\/" escapes) must not verify.
    let reserialised = s(&v, "input.body").replace("\\/", "/");
    assert!(
        sign::verify_response(&cert.public_key, ts, nonce, reserialised.as_bytes(), sig).is_err()
    );
    // WeChat's signature probes never verify.
    assert!(
        sign::verify_response(&cert.public_key, ts, nonce, body, "WECHATPAY/SIGNTEST/abc").is_err()
    );

    let parsed: Value = serde_json::from_slice(body).unwrap();
    let res = &parsed["resource"];
    let plain = sign::decrypt_resource(
        s(&v, "key_material.apiv3_key_utf8").as_bytes(),
        s(res, "nonce"),
        s(res, "associated_data"),
        s(res, "ciphertext"),
    )
    .unwrap();
    let plain = String::from_utf8(plain).unwrap();
    assert_eq!(plain, s(&v, "expected.resource_plaintext"));
    assert_eq!(
        Certificate::from_pem(&plain).unwrap().serial_no,
        s(&v, "expected.decrypted_cert_serial_hex")
    );
}

#[tokio::test]
async fn notify_yansongda_through_parse_callback() {
    let v = vector("wechat_v3_notify_yansongda_certificate");
    let h = headers(&v["input"]["headers"]);
    let body = s(&v, "input.body").as_bytes();
    let now = at(int(&v["input"]["now_unix"]));
    let ch = channel_with_platform_key(
        s(&v, "input.headers.Wechatpay-Serial"),
        s(&v, "key_material.signature_verification_certificate_pem"),
        s(&v, "key_material.apiv3_key_utf8"),
    );
    let cb = || Callback { headers: &h, body };
    // Signature and decryption pass; the resource is a certificate, not a
    // transaction, so it is refused as a protocol error, nothing else.
    let err = ch.parse_callback(cb(), now).await.unwrap_err();
    assert!(matches!(err, ChannelError::Protocol(_)), "{err:?}");
    // Outside the five-minute window.
    let err = ch
        .parse_callback(cb(), at(now.timestamp() + 301))
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::StaleTimestamp(_)), "{err:?}");
    let err = ch
        .parse_callback(cb(), at(now.timestamp() - 301))
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::StaleTimestamp(_)), "{err:?}");
    // A tampered body.
    let tampered = s(&v, "input.body").replace("\\/", "/");
    let err = ch
        .parse_callback(
            Callback {
                headers: &h,
                body: tampered.as_bytes(),
            },
            now,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::InvalidSignature(_)), "{err:?}");
}

#[tokio::test]
async fn notify_go_payscore_signature() {
    let v = vector("wechat_v3_notify_go_payscore");
    let h = &v["input"]["headers"];
    let body = s(&v, "input.body").as_bytes();
    let cert = Certificate::from_pem(s(&v, "key_material.platform_certificate_pem")).unwrap();
    assert_eq!(cert.serial_no, s(&v, "key_material.platform_serial"));
    let (ts, nonce, sig) = (
        s(h, "Wechatpay-Timestamp"),
        s(h, "Wechatpay-Nonce"),
        s(h, "Wechatpay-Signature"),
    );
    assert_eq!(
        sign::response_message(ts, nonce, body),
        s(&v, "expected.verify_message").as_bytes()
    );
    sign::verify_response(&cert.public_key, ts, nonce, body, sig).unwrap();

    // Its APIv3 key is 16 bytes (see the vector's caveat), so only the
    // signature part applies: with a 32-byte key the signature verifies and
    // decryption then fails, proving verification runs first.
    let ch = channel_with_platform_key(
        s(&v, "key_material.platform_serial"),
        s(&v, "key_material.platform_certificate_pem"),
        "0123456789abcdef0123456789abcdef",
    );
    let hm = headers(h);
    let now = at(int(&v["input"]["now_unix"]));
    let err = ch
        .parse_callback(Callback { headers: &hm, body }, now)
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::Decrypt), "{err:?}");
}

#[test]
fn transaction_example_maps_to_channel_trade() {
    let v = vector("wechat_v3_notify_transaction_success_example");
    let t: Transaction = serde_json::from_str(s(&v, "decrypted_transaction_example_raw")).unwrap();
    let trade = to_channel_trade(&t).unwrap();
    assert_eq!(trade.state, TradeState::Paid);
    assert_eq!(trade.out_trade_no, "1217752501201407033233368018");
    assert_eq!(
        trade.transaction_id.as_deref(),
        Some("1217752501201407033233368018")
    );
    let amount = trade.amount.unwrap();
    assert_eq!((amount.minor, amount.currency.as_str()), (100, "CNY"));
    assert_eq!(
        trade.paid_at,
        Some(
            DateTime::parse_from_rfc3339("2018-06-08T02:34:56Z")
                .unwrap()
                .with_timezone(&Utc)
        )
    );
    assert_eq!(trade.merchant_account.as_deref(), Some("1230000109"));
    assert_eq!(trade.app_id.as_deref(), Some("wxd678efh567hg6787"));
}

#[test]
fn client_side_pay_signs() {
    // No upstream vector carries a fixed paySign; check the line format and
    // that the signature verifies with the key that made it.
    let v = vector("wechat_v3_request_sign_yansongda");
    let key = PrivateKey::from_pem(s(&v, "key_material.merchant_private_key_pkcs8_pem")).unwrap();
    let cert = Certificate::from_pem(s(&v, "key_material.merchant_certificate_pem")).unwrap();
    let m = sign::jsapi_pay_message(
        "wx8888888888888888",
        "1414561699",
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "prepay_id=wx201410272009395522657a690389285100",
    );
    assert_eq!(m, "wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n");
    let sig = key.sign_sha256(m.as_bytes()).unwrap();
    cert.public_key.verify_sha256(m.as_bytes(), &sig).unwrap();
    let a = sign::app_pay_message("wx8888888888888888", "1414561699", "nonce", "wx2014");
    assert_eq!(a, "wx8888888888888888\n1414561699\nnonce\nwx2014\n");
}

#[test]
fn callback_replies() {
    let ch = channel_with_platform_key(
        "K",
        &PrivateKey::from_pem(&PrivateKey::generate_pkcs8_pem().unwrap())
            .unwrap()
            .public_key()
            .unwrap()
            .to_pem(),
        "0123456789abcdef0123456789abcdef",
    );
    let ok = ch.callback_reply(true);
    assert_eq!(ok.status, 200);
    let fail = ch.callback_reply(false);
    assert_eq!(fail.status, 500);
    let body: Value = serde_json::from_slice(&fail.body).unwrap();
    assert_eq!(body["code"], "FAIL");
}

#[test]
fn config_is_checked() {
    let good = WechatConfig {
        base_url: "https://api.mch.weixin.qq.com".into(),
        appid: "wx1".into(),
        mchid: "1".into(),
        serial_no: "A".into(),
        private_key_pem: PrivateKey::generate_pkcs8_pem().unwrap(),
        apiv3_key: "0123456789abcdef0123456789abcdef".into(),
        platform_public_key_id: None,
        platform_public_key_pem: None,
        oauth_app_secret: None,
    };
    assert!(WechatPay::new(good.clone(), reqwest::Client::new()).is_ok());
    let json = serde_json::to_string(&good).unwrap();
    let back: WechatConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.apiv3_key, good.apiv3_key);
    for bad in [
        WechatConfig {
            apiv3_key: "short".into(),
            ..good.clone()
        },
        WechatConfig {
            private_key_pem: "x".into(),
            ..good.clone()
        },
        WechatConfig {
            base_url: "not a url".into(),
            ..good.clone()
        },
        WechatConfig {
            platform_public_key_id: Some("PUB_KEY_ID_1".into()),
            ..good.clone()
        },
    ] {
        assert!(matches!(
            WechatPay::new(bad, reqwest::Client::new()),
            Err(ChannelError::Config(_))
        ));
    }
}
